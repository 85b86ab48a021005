//! Mesh throughput and memory benchmark: `cargo bench -p receptor-mesh --bench mesh`.
//!
//! Reports, from one run on one machine:
//! - raw loopback TCP throughput of the same bytes (the physical limit);
//! - stream (QUIC over the mesh) throughput across 1 and 2 hops of TCP loopback links between
//!   nodes in this process;
//! - the idle RSS of the real daemon (`receptor`, release build), and its RSS after
//!   `--through-mb` megabytes were routed through it.
//!
//! Options (after `--`): `--mb N` (default 512), `--repeats R` (median of R, default 3),
//! `--only tcp,1hop,2hop,rss`, `--receptor PATH` (else `$RECEPTOR_BIN`, else
//! `$CARGO_TARGET_DIR/release/receptor`, else `target/release/receptor`),
//! `--through-mb N` (default 1000; 0 skips the loaded-daemon measurement),
//! `--settle-secs S` (default 3).
//!
//! Megabytes are decimal: 1 MB = 1,000,000 bytes, rates in MB/s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use receptor_mesh::backend::{LinkConfig, tcp};
use receptor_mesh::quic::{self, ClientTls, ServerTls};
use receptor_mesh::{Node, NodeConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(30);
const CHUNK: usize = 1 << 20;
const READ_BUF: usize = 256 * 1024;

struct Options {
    megabytes: usize,
    repeats: usize,
    only: Option<Vec<String>>,
    receptor: Option<PathBuf>,
    through_mb: usize,
    settle: Duration,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Self {
            megabytes: 512,
            repeats: 3,
            only: None,
            receptor: std::env::var_os("RECEPTOR_BIN").map(PathBuf::from),
            through_mb: 1000,
            settle: Duration::from_secs(3),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                // cargo bench passes --bench to every bench target.
                "--bench" => {}
                "--mb" => options.megabytes = value("--mb")?.parse()?,
                "--repeats" => options.repeats = value("--repeats")?.parse::<usize>()?.max(1),
                "--only" => {
                    options.only = Some(value("--only")?.split(',').map(str::to_owned).collect());
                }
                "--receptor" => options.receptor = Some(value("--receptor")?.into()),
                "--through-mb" => options.through_mb = value("--through-mb")?.parse()?,
                "--settle-secs" => {
                    options.settle = Duration::from_secs_f64(value("--settle-secs")?.parse()?);
                }
                "-h" | "--help" => {
                    println!(
                        "usage: cargo bench -p receptor-mesh --bench mesh -- [--mb N] [--repeats R] \
                         [--only tcp,1hop,2hop,rss] [--receptor PATH] [--through-mb N] \
                         [--settle-secs S]"
                    );
                    std::process::exit(0);
                }
                // Filters criterion-style harnesses would accept; ignore them.
                other if !other.starts_with('-') => {}
                other => bail!("unknown option {other}"),
            }
        }
        Ok(options)
    }

    fn wants(&self, what: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == what))
    }
}

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes `total` bytes of `chunk` and shuts the writer down.
async fn send_all<W: AsyncWrite + Unpin>(writer: &mut W, chunk: &[u8], total: usize) -> Result<()> {
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        writer.write_all(&chunk[..n]).await?;
        sent += n;
    }
    writer.shutdown().await?;
    Ok(())
}

/// Reads to EOF, returning the byte count.
async fn drain<R: AsyncRead + Unpin>(reader: &mut R) -> Result<usize> {
    let mut buf = vec![0u8; READ_BUF];
    let mut received = 0;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(received);
        }
        received += n;
    }
}

fn rate(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    }
}

async fn raw_tcp(chunk: &[u8], total: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let server = async {
        let (mut stream, _) = listener.accept().await?;
        drain(&mut stream).await
    };
    let client = async {
        let mut stream = TcpStream::connect(addr).await?;
        send_all(&mut stream, chunk, total).await
    };
    let (received, ()) = tokio::try_join!(server, client)?;
    let elapsed = started.elapsed();
    anyhow::ensure!(received == total, "raw TCP: received {received} of {total}");
    Ok(rate(total, elapsed))
}

/// Polls until `node` routes to `expected` other nodes.
async fn converge(node: &Node, expected: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if node
            .status()
            .await
            .is_ok_and(|s| s.routes.len() >= expected)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {} to route to {expected} nodes",
                node.id()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `ids` linked in a line over TCP loopback, each node dialing its predecessor.
async fn tcp_line(ids: &[&str]) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    let mut previous: Option<SocketAddr> = None;
    for id in ids {
        let node = Node::spawn(NodeConfig::new(*id))?;
        let listener = tcp::Listener::bind("127.0.0.1:0", LinkConfig::default()).await?;
        let addr = listener.local_addr();
        node.add_backend(listener);
        if let Some(previous) = previous {
            node.add_backend(tcp::Dialer::new(
                previous.to_string(),
                true,
                LinkConfig::default(),
            ));
        }
        previous = Some(addr);
        nodes.push(node);
    }
    for node in &nodes {
        converge(node, nodes.len() - 1).await?;
    }
    Ok(nodes)
}

/// One stream from `from` to `to`'s `bench` listener carrying `total` bytes; MB/s measured from
/// the dial to the receiver's EOF.
async fn stream_once(
    listener: &quic::Listener,
    from: &Node,
    to: &str,
    chunk: &[u8],
    total: usize,
) -> Result<f64> {
    let started = Instant::now();
    let server = async {
        let mut stream = listener.accept().await?;
        let received = drain(&mut stream).await?;
        stream.shutdown().await?;
        Ok::<_, anyhow::Error>(received)
    };
    let client = async {
        let mut stream = quic::dial(from, to, "bench", ClientTls::Insecure, WAIT).await?;
        send_all(&mut stream, chunk, total).await?;
        // Wait for the receiver's FIN so every byte is accounted for.
        drain(&mut stream).await?;
        Ok::<_, anyhow::Error>(())
    };
    let limit = Duration::from_secs(600);
    let (received, ()) = timeout(limit, async { tokio::try_join!(server, client) })
        .await
        .context("stream transfer timed out")??;
    let elapsed = started.elapsed();
    anyhow::ensure!(received == total, "stream: received {received} of {total}");
    Ok(rate(total, elapsed))
}

async fn hops(hop_count: usize, chunk: &[u8], total: usize, repeats: usize) -> Result<Vec<f64>> {
    let ids: Vec<String> = (0..=hop_count).map(|i| format!("bench{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let nodes = tcp_line(&ids).await?;
    let first = &nodes[0];
    let last = &nodes[nodes.len() - 1];
    let listener = quic::Listener::bind(last, "bench", None, ServerTls::Insecure).await?;
    let mut rates = Vec::new();
    for _ in 0..repeats {
        rates.push(stream_once(&listener, first, last.id(), chunk, total).await?);
    }
    drop(listener);
    for node in nodes {
        let _ = node.shutdown(Duration::from_secs(2)).await;
    }
    Ok(rates)
}

fn locate_receptor(explicit: Option<&Path>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path.to_owned()],
        None => {
            let mut candidates = Vec::new();
            if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
                candidates.push(PathBuf::from(dir).join("release/receptor"));
            }
            // The workspace root, from mesh/.
            candidates
                .push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/receptor"));
            candidates
        }
    };
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no release daemon at {candidates:?}: build it with \
                 `cargo build --release -p receptor-server --bin receptor`, or point \
                 RECEPTOR_BIN (or --receptor) at it"
            )
        })
}

/// VmRSS / VmHWM / RssAnon of a process, in kB.
fn memory_kb(pid: u32) -> Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?, field("RssAnon:")?))
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct RssFigures {
    idle_kb: u64,
    /// The anonymous (heap, stacks) part of the idle RSS; the rest is mapped binary and libc.
    idle_anon_kb: u64,
    /// (MB/s through the daemon as the middle hop, RSS kB after, peak RSS kB).
    loaded: Option<(f64, u64, u64)>,
}

/// Starts the daemon with one TCP listener, reads its idle RSS after `settle`, then optionally
/// routes `through_mb` through it (an in-process node on each side, the daemon in the middle).
async fn daemon_rss(binary: &Path, options: &Options, chunk: &[u8]) -> Result<RssFigures> {
    let port = free_port()?;
    let child = Command::new(binary)
        .args(["--node", "id=rss", "--tcp-listener"])
        .arg(format!("port={port}"))
        .arg("bindaddr=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let daemon = Daemon(child);
    let pid = daemon.0.id();
    tokio::time::sleep(options.settle).await;
    let (idle_kb, _, idle_anon_kb) = memory_kb(pid)?;
    if options.through_mb == 0 {
        return Ok(RssFigures {
            idle_kb,
            idle_anon_kb,
            loaded: None,
        });
    }
    let address = format!("127.0.0.1:{port}");
    let sender = Node::spawn(NodeConfig::new("rss-in"))?;
    let receiver = Node::spawn(NodeConfig::new("rss-out"))?;
    for node in [&sender, &receiver] {
        node.add_backend(tcp::Dialer::new(
            address.clone(),
            true,
            LinkConfig::default(),
        ));
    }
    converge(&sender, 2).await?;
    converge(&receiver, 2).await?;
    let listener = quic::Listener::bind(&receiver, "bench", None, ServerTls::Insecure).await?;
    let mb_s = stream_once(
        &listener,
        &sender,
        receiver.id(),
        chunk,
        options.through_mb * 1_000_000,
    )
    .await?;
    drop(listener);
    let _ = sender.shutdown(Duration::from_secs(2)).await;
    let _ = receiver.shutdown(Duration::from_secs(2)).await;
    tokio::time::sleep(options.settle).await;
    let (after_kb, peak_kb, _) = memory_kb(pid)?;
    drop(daemon);
    Ok(RssFigures {
        idle_kb,
        idle_anon_kb,
        loaded: Some((mb_s, after_kb, peak_kb)),
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn fmt_rates(rates: &[f64]) -> String {
    rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> Result<()> {
    let options = Options::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&options))
}

async fn run(options: &Options) -> Result<()> {
    let chunk = pattern(CHUNK);
    let total = options.megabytes * 1_000_000;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "mesh benchmark: {} MB per transfer, median of {}, {workers} CPUs, load {}",
        options.megabytes,
        options.repeats,
        load_average()
    );
    let mut rows: Vec<(String, String, String)> = Vec::new();
    if options.wants("tcp") {
        let mut rates = Vec::new();
        for _ in 0..options.repeats {
            rates.push(raw_tcp(&chunk, total).await?);
        }
        rows.push((
            "raw loopback TCP".to_owned(),
            format!("{:.0} MB/s", median(rates.clone())),
            format!("runs {}; load {}", fmt_rates(&rates), load_average()),
        ));
    }
    for (name, hop_count) in [("1hop", 1), ("2hop", 2)] {
        if options.wants(name) {
            let rates = hops(hop_count, &chunk, total, options.repeats).await?;
            rows.push((
                format!(
                    "stream, {hop_count} hop{}",
                    if hop_count > 1 { "s" } else { "" }
                ),
                format!("{:.0} MB/s", median(rates.clone())),
                format!("runs {}; load {}", fmt_rates(&rates), load_average()),
            ));
        }
    }
    if options.wants("rss") {
        match locate_receptor(options.receptor.as_deref()) {
            Ok(binary) => {
                let figures = daemon_rss(&binary, options, &chunk).await?;
                rows.push((
                    "daemon idle RSS".to_owned(),
                    format!("{:.1} MiB", figures.idle_kb as f64 / 1024.0),
                    format!(
                        "{} kB VmRSS, of which {} kB anonymous; load {}",
                        figures.idle_kb,
                        figures.idle_anon_kb,
                        load_average()
                    ),
                ));
                if let Some((mb_s, after_kb, peak_kb)) = figures.loaded {
                    rows.push((
                        format!("daemon RSS after {} MB through it", options.through_mb),
                        format!("{:.1} MiB", after_kb as f64 / 1024.0),
                        format!(
                            "peak {:.1} MiB; relayed at {mb_s:.0} MB/s; load {}",
                            peak_kb as f64 / 1024.0,
                            load_average()
                        ),
                    ));
                }
            }
            Err(error) => {
                eprintln!("rss: skipped: {error:#}");
                rows.push((
                    "daemon idle RSS".to_owned(),
                    "skipped".to_owned(),
                    "release daemon not found (see stderr)".to_owned(),
                ));
            }
        }
    }
    println!();
    println!("| measurement | figure | notes |");
    println!("|---|---|---|");
    for (what, figure, notes) in rows {
        println!("| {what} | {figure} | {notes} |");
    }
    Ok(())
}
