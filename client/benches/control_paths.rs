//! Small-job rate and result streaming through the daemon's two control front-ends, with
//! Rust clients on both so that the figures compare the daemon's paths, not client languages:
//!
//! - `classic`: the line protocol on the control socket (one connection per step, as
//!   receptorctl's library does);
//! - `grpc`: `receptor_client::Client` on the `grpc-service` socket (one channel);
//! - `grpc-upgrade`: the same client through the classic socket's `grpc` upgrade line.
//!
//! A job is submit (`cat`, 15 bytes) -> results following to the end -> status -> release,
//! run one at a time, so jobs/s = 1 / mean latency. Then the 100 MiB output of a finished
//! unit is streamed once per path.
//!
//! Run: `cargo bench -p receptor-client --bench control_paths` (builds nothing else: set
//! `RECEPTOR` to a release `receptor`, default: the one beside this benchmark in
//! `target/release/`, built by `cargo build --release --bin receptor`). `JOBS` sets the
//! job count (default 500).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use receptor_client::{Client, SubmitOptions, Target, UnitState};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PAYLOAD: &[u8] = b"hello receptor\n";
const BIG: u64 = 100 * 1024 * 1024;

/// One classic control connection, past its greeting.
struct Classic {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Classic {
    async fn open(path: &Path) -> Result<Self> {
        let (read, writer) = UnixStream::connect(path).await?.into_split();
        let mut reader = BufReader::new(read);
        let mut greeting = String::new();
        reader.read_line(&mut greeting).await?;
        if !greeting.starts_with("Receptor Control") {
            return Err(format!("bad greeting {greeting:?}").into());
        }
        Ok(Self { reader, writer })
    }

    async fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        if line.starts_with("ERROR") || line.is_empty() {
            return Err(format!("daemon said {line:?}").into());
        }
        Ok(line)
    }

    async fn command(&mut self, command: &str) -> Result<serde_json::Value> {
        self.writer.write_all(command.as_bytes()).await?;
        self.writer.write_all(b"\n").await?;
        Ok(serde_json::from_str(&self.line().await?)?)
    }

    async fn submit(path: &Path, work_type: &str, payload: &[u8]) -> Result<String> {
        let mut c = Self::open(path).await?;
        let request = format!(
            "{{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"localhost\",\"worktype\":\"{work_type}\"}}\n"
        );
        c.writer.write_all(request.as_bytes()).await?;
        c.line().await?; // Work unit created with ID ...
        c.writer.write_all(payload).await?;
        c.writer.shutdown().await?;
        let reply: serde_json::Value = serde_json::from_str(&c.line().await?)?;
        Ok(reply["unitid"].as_str().ok_or("no unitid")?.to_owned())
    }

    /// Streams the results to the end; returns their size.
    async fn results(path: &Path, unit: &str) -> Result<u64> {
        let mut c = Self::open(path).await?;
        c.writer
            .write_all(format!("work results {unit} 0\n").as_bytes())
            .await?;
        c.line().await?; // Streaming results for work unit ...
        c.writer.shutdown().await?;
        let mut sink = tokio::io::sink();
        Ok(tokio::io::copy(&mut c.reader, &mut sink).await?)
    }
}

async fn classic_job(path: &Path) -> Result<()> {
    let unit = Classic::submit(path, "cat", PAYLOAD).await?;
    let size = Classic::results(path, &unit).await?;
    if size != PAYLOAD.len() as u64 {
        return Err(format!("{unit}: {size} bytes of output").into());
    }
    let mut c = Classic::open(path).await?;
    let status = c.command(&format!("work status {unit}")).await?;
    if status["StateName"] != "Succeeded" {
        return Err(format!("{unit}: {status}").into());
    }
    c.command(&format!("work release {unit}")).await?;
    Ok(())
}

async fn grpc_job(client: &Client) -> Result<()> {
    let submitted = client
        .submit(SubmitOptions::new("cat"), PAYLOAD, None)
        .await?;
    let unit = submitted.unit.id;
    let (output, _end) = client.results(&unit, 0, true).await?.read_all().await?;
    if output != PAYLOAD {
        return Err(format!("{unit}: output {output:?}").into());
    }
    if client.get(&unit).await?.state != Some(UnitState::Succeeded) {
        return Err(format!("{unit} did not succeed").into());
    }
    client.release(&unit, false).await?;
    Ok(())
}

fn report(name: &str, mut latencies: Vec<Duration>, wall: Duration) {
    latencies.sort();
    let at = |p: f64| {
        let i = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[i.clamp(1, latencies.len()) - 1].as_secs_f64() * 1000.0
    };
    println!(
        "small jobs [{name}]: {} jobs in {:.2} s = {:.1} jobs/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        wall.as_secs_f64(),
        latencies.len() as f64 / wall.as_secs_f64(),
        at(50.0),
        at(99.0),
        at(100.0),
    );
}

async fn run_jobs<F, Fut>(name: &str, jobs: usize, mut job: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    for _ in 0..10 {
        job().await?;
    }
    let mut latencies = Vec::with_capacity(jobs);
    let start = Instant::now();
    for _ in 0..jobs {
        let t = Instant::now();
        job().await?;
        latencies.push(t.elapsed());
    }
    report(name, latencies, start.elapsed());
    Ok(())
}

async fn run_requests<F, Fut>(name: &str, requests: usize, mut request: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let started = Instant::now();
    for _ in 0..requests {
        request().await?;
    }
    rate(name, requests, started.elapsed());
    Ok(())
}

fn rate(name: &str, requests: usize, took: Duration) {
    println!(
        "{name}: {requests} requests in {:.2} s = {:.0}/s ({:.1} µs each)",
        took.as_secs_f64(),
        requests as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / requests as f64
    );
}

/// Waits until `unit` is final, through gRPC.
async fn wait_final(client: &Client, unit: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !client.get(unit).await?.is_final() {
        if Instant::now() > deadline {
            return Err(format!("{unit} never finished").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn throughput(name: &str, bytes: u64, took: Duration) {
    println!(
        "{} MiB results of a finished unit [{name}]: {:.3} s ({:.0} MB/s)",
        bytes / (1024 * 1024),
        took.as_secs_f64(),
        bytes as f64 / took.as_secs_f64() / 1e6
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    // target/release/deps/control_paths-<hash> -> target/release/receptor
    let beside = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("receptor"))
        .ok_or("cannot locate the target directory")?;
    let receptor = std::env::var_os("RECEPTOR").map_or(beside, PathBuf::from);
    let jobs: usize = std::env::var("JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir()?;
    let control = dir.path().join("control.sock");
    let grpc = dir.path().join("grpc.sock");
    let mut daemon = tokio::process::Command::new(&receptor)
        .args(["--node", "id=bench"])
        .arg(format!("datadir={}", dir.path().join("data").display()))
        .args(["--local-only", "--log-level", "warning"])
        .arg("--control-service")
        .arg(format!("filename={}", control.display()))
        .arg("--grpc-service")
        .arg(format!("filename={}", grpc.display()))
        .args(["--work-command", "worktype=cat", "command=cat"])
        .args(["--work-command", "worktype=big", "command=sh"])
        .arg(format!("params=-c 'head -c {BIG} /dev/zero'"))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", receptor.display()))?;
    let started = Instant::now();
    while !(control.exists() && grpc.exists()) {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the daemon did not open its sockets".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("receptor: {}", receptor.display());

    let direct = Client::connect(Target::grpc_unix(&grpc)).await?;
    let upgraded = Client::connect(Target::control_unix(&control)).await?;
    run_jobs("classic", jobs, || classic_job(&control)).await?;
    run_jobs("grpc", jobs, || grpc_job(&direct)).await?;
    run_jobs("grpc-upgrade", jobs, || grpc_job(&upgraded)).await?;

    // Control overhead alone: `work status` of one finished unit, no process started.
    let probe = direct
        .submit(SubmitOptions::new("cat"), PAYLOAD, None)
        .await?
        .unit
        .id;
    wait_final(&direct, &probe).await?;
    let requests = jobs * 10;
    run_requests(
        "status, classic, a connection per request",
        requests,
        || async {
            Classic::open(&control)
                .await?
                .command(&format!("work status {probe}"))
                .await?;
            Ok(())
        },
    )
    .await?;
    let mut kept = Classic::open(&control).await?;
    let started = Instant::now();
    for _ in 0..requests {
        kept.command(&format!("work status {probe}")).await?;
    }
    rate(
        "status, classic, one connection",
        requests,
        started.elapsed(),
    );
    run_requests("status, grpc", requests, || async {
        direct.get(&probe).await?;
        Ok(())
    })
    .await?;
    direct.release(&probe, false).await?;

    let unit = direct
        .submit(SubmitOptions::new("big"), &b""[..], None)
        .await?
        .unit
        .id;
    wait_final(&direct, &unit).await?;
    let t = Instant::now();
    let size = Classic::results(&control, &unit).await?;
    throughput("classic", size, t.elapsed());
    for (name, client) in [("grpc", &direct), ("grpc-upgrade", &upgraded)] {
        let t = Instant::now();
        let mut results = client.results(&unit, 0, false).await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = results.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            size += n as u64;
        }
        throughput(name, size, t.elapsed());
        if size != BIG {
            return Err(format!("{name}: {size} bytes").into());
        }
    }
    direct.release(&unit, false).await?;
    daemon.kill().await?;
    Ok(())
}
