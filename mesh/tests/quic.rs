//! Streams (QUIC over the mesh) between real nodes, over in-memory links and TCP loopback,
//! in real time with every network wait under a timeout.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::BytesMut;
use receptor_mesh::backend::memory::MemoryNetwork;
use receptor_mesh::backend::{LinkConfig, framing_codec, tcp};
use receptor_mesh::quic::{self, ClientTls, DialError, Listener, ServerTls, Stream};
use receptor_mesh::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_util::codec::Decoder;

const WAIT: Duration = Duration::from_secs(30);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it holds, failing after [`WAIT`].
async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A line of nodes `n0 - n1 - ... - n{len-1}`, every node routing to every other.
struct Line {
    nodes: Vec<Node>,
    _net: MemoryNetwork,
}

impl Line {
    fn first(&self) -> &Node {
        &self.nodes[0]
    }

    fn last(&self) -> &Node {
        &self.nodes[self.nodes.len() - 1]
    }

    async fn converge(nodes: Vec<Node>, net: MemoryNetwork) -> Result<Self> {
        for node in &nodes {
            let expected = nodes.len() - 1;
            wait_until(&format!("{} to route to every node", node.id()), || async {
                node.status()
                    .await
                    .is_ok_and(|s| s.routes.len() == expected)
            })
            .await?;
        }
        Ok(Self { nodes, _net: net })
    }

    /// `ids` linked in a line over the in-memory backend.
    async fn memory(ids: &[&str]) -> Result<Self> {
        let net = MemoryNetwork::new();
        let mut nodes = Vec::new();
        for id in ids {
            let node = Node::spawn(NodeConfig::new(*id))?;
            node.add_backend(net.listener(id, LinkConfig::default()));
            nodes.push(node);
        }
        for pair in ids.windows(2) {
            nodes[ids.iter().position(|i| *i == pair[1]).context("id")?].add_backend(net.dialer(
                pair[1],
                pair[0],
                true,
                LinkConfig::default(),
            ));
        }
        Self::converge(nodes, net).await
    }

    /// `ids` linked in a line over TCP loopback (each node dials its predecessor).
    async fn tcp(ids: &[&str]) -> Result<Self> {
        let mut nodes = Vec::new();
        let mut previous: Option<std::net::SocketAddr> = None;
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
        Self::converge(nodes, MemoryNetwork::new()).await
    }
}

/// Deterministic test bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Serves one stream: reads the request to EOF, then writes it back and finishes.
async fn echo_once(stream: &mut Stream) -> Result<usize> {
    let mut request = Vec::new();
    stream.read_to_end(&mut request).await?;
    stream.write_all(&request).await?;
    stream.shutdown().await?;
    Ok(request.len())
}

/// Client side of the half-close echo: send, FIN, then read the whole answer to EOF.
async fn echo_roundtrip(stream: &mut Stream, request: &[u8]) -> Result<Vec<u8>> {
    stream.write_all(request).await?;
    stream.shutdown().await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

async fn echo_across(line: &Line) -> Result<()> {
    let listener = Listener::bind(line.last(), "echo", None, ServerTls::Insecure).await?;
    let server = async {
        let mut stream = timeout(WAIT, listener.accept()).await??;
        ensure!(stream.remote_node() == line.first().id());
        echo_once(&mut stream).await
    };
    let client = async {
        let mut stream = timeout(WAIT, line.first().connect(line.last().id(), "echo")).await??;
        ensure!(stream.remote_node() == line.last().id());
        ensure!(stream.remote_service().as_bytes() == b"echo");
        let request = pattern(300_000, 1);
        let answer = echo_roundtrip(&mut stream, &request).await?;
        ensure!(answer == request, "echo differs");
        Ok(request.len())
    };
    let (served, sent) = timeout(WAIT, async { tokio::try_join!(server, client) }).await??;
    assert_eq!(served, sent);
    Ok(())
}

#[tokio::test]
async fn echo_one_hop_memory() -> Result<()> {
    init_tracing();
    echo_across(&Line::memory(&["a", "b"]).await?).await
}

#[tokio::test]
async fn echo_three_hops_memory() -> Result<()> {
    init_tracing();
    echo_across(&Line::memory(&["a", "b", "c", "d"]).await?).await
}

#[tokio::test]
async fn echo_one_hop_tcp() -> Result<()> {
    init_tracing();
    echo_across(&Line::tcp(&["a", "b"]).await?).await
}

#[tokio::test]
async fn echo_three_hops_tcp() -> Result<()> {
    init_tracing();
    echo_across(&Line::tcp(&["a", "b", "c", "d"]).await?).await
}

/// A streaming digest (HighwayHash-256: fast, and catches any loss, duplication or
/// reordering).
struct Digest {
    hasher: highway::HighwayHasher,
    len: u64,
}

impl Digest {
    fn new() -> Self {
        Self {
            hasher: highway::HighwayHasher::new(highway::Key([1, 2, 3, 4])),
            len: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        use highway::HighwayHash;
        self.hasher.append(bytes);
        self.len += bytes.len() as u64;
    }

    fn finish(self) -> (u64, [u64; 4]) {
        use highway::HighwayHash;
        (self.len, self.hasher.finalize256())
    }
}

async fn bulk_transfer(line: &Line, total: usize, limit: Duration) -> Result<()> {
    let listener = Listener::bind(line.last(), "bulk", None, ServerTls::Insecure).await?;
    let chunk = pattern(1 << 20, 7);
    let started = Instant::now();
    let server = async {
        let mut stream = listener.accept().await?;
        let mut digest = Digest::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            digest.update(&buf[..n]);
        }
        stream.shutdown().await?;
        Ok::<_, anyhow::Error>(digest.finish())
    };
    let client = async {
        let mut stream = line.first().connect(line.last().id(), "bulk").await?;
        let mut digest = Digest::new();
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            stream.write_all(&chunk[..n]).await?;
            digest.update(&chunk[..n]);
            sent += n;
        }
        stream.shutdown().await?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await?;
        Ok::<_, anyhow::Error>(digest.finish())
    };
    let (received, sent) = timeout(limit, async { tokio::try_join!(server, client) })
        .await
        .context("bulk transfer timed out")??;
    let elapsed = started.elapsed();
    assert_eq!(received.0, total as u64);
    assert_eq!(received, sent, "payload differs");
    let rate = total as f64 / elapsed.as_secs_f64() / 1e6;
    eprintln!(
        "bulk: {} MB across {} hops in {elapsed:?}: {rate:.1} MB/s",
        total / 1_000_000,
        line.nodes.len() - 1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_megabytes_three_hops_tcp() -> Result<()> {
    init_tracing();
    let line = Line::tcp(&["a", "b", "c", "d"]).await?;
    bulk_transfer(&line, 100_000_000, Duration::from_secs(600)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_one_hop_tcp() -> Result<()> {
    init_tracing();
    let line = Line::tcp(&["a", "b"]).await?;
    // QUIC_BULK_MB makes this a longer benchmark run.
    let megabytes = std::env::var("QUIC_BULK_MB")
        .ok()
        .and_then(|mb| mb.parse::<usize>().ok())
        .unwrap_or(50);
    bulk_transfer(&line, megabytes * 1_000_000, Duration::from_secs(300)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_concurrent_streams() -> Result<()> {
    init_tracing();
    let line = Line::memory(&["a", "b"]).await?;
    let listener = Arc::new(Listener::bind(line.last(), "echo", None, ServerTls::Insecure).await?);
    let mut tasks = JoinSet::new();
    let server = Arc::clone(&listener);
    tasks.spawn(async move {
        let mut serving = JoinSet::new();
        for _ in 0..100 {
            let mut stream = server.accept().await?;
            serving.spawn(async move { echo_once(&mut stream).await });
        }
        while let Some(served) = serving.join_next().await {
            served??;
        }
        Ok::<_, anyhow::Error>(())
    });
    for i in 0..100u64 {
        let node = line.first().clone();
        tasks.spawn(async move {
            let mut stream = node.connect("b", "echo").await?;
            let request = pattern(4096 + i as usize, i);
            let answer = echo_roundtrip(&mut stream, &request).await?;
            ensure!(answer == request, "stream {i}: echo differs");
            Ok(())
        });
    }
    timeout(Duration::from_secs(120), async {
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    Ok(())
}

#[tokio::test]
async fn dial_to_unknown_node_fails_fast() -> Result<()> {
    init_tracing();
    let line = Line::memory(&["a", "b"]).await?;
    let started = Instant::now();
    let error = timeout(WAIT, line.first().connect("nosuch", "echo"))
        .await?
        .expect_err("no such node");
    assert!(
        matches!(error, DialError::NoRoute(ref node) if node == "nosuch"),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn dial_to_missing_service_fails_fast_with_service_unknown() -> Result<()> {
    init_tracing();
    let line = Line::memory(&["a", "b", "c"]).await?;
    for target in ["c", "localhost"] {
        let started = Instant::now();
        let error = timeout(WAIT, line.first().connect(target, "nosuch"))
            .await?
            .expect_err("no such service");
        assert!(
            matches!(error, DialError::ServiceUnknown { ref service, .. } if service == "nosuch"),
            "{target}: {error:?}"
        );
        assert_eq!(error.to_string().split(':').next(), Some("service unknown"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{target}: took {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

#[tokio::test]
async fn dial_timeout_is_bounded() -> Result<()> {
    init_tracing();
    let line = Line::memory(&["a", "b"]).await?;
    // Something listens on the service but never speaks QUIC.
    let _mute = line.last().listen(Some("mute"), None).await?;
    let started = Instant::now();
    let error = quic::dial(
        line.first(),
        "b",
        "mute",
        ClientTls::Insecure,
        Duration::from_millis(500),
    )
    .await
    .expect_err("nobody answers");
    assert!(matches!(error, DialError::Timeout(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    Ok(())
}

/// Reads everything slowly, in small pieces with pauses (simulating a slow consumer).
async fn slow_read_all(stream: &mut Stream) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() % (256 * 1024) < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn writer_that_drops_right_after_writing_loses_nothing() -> Result<()> {
    init_tracing();
    let line = Line::memory(&["a", "b", "c"]).await?;
    let listener = Listener::bind(line.last(), "sink", None, ServerTls::Insecure).await?;
    let data = pattern(3_000_000, 3);

    /// Writes everything, then drops the stream at once: no shutdown, no waiting.
    async fn write_and_drop(mut stream: Stream, data: &[u8]) -> Result<()> {
        stream.write_all(data).await?;
        drop(stream);
        Ok(())
    }

    // The dialer writes and drops; the listener side reads slowly.
    let stream = timeout(WAIT, line.first().connect("c", "sink")).await??;
    let mut accepted = timeout(WAIT, listener.accept()).await??;
    let (_, got) = timeout(Duration::from_secs(60), async {
        tokio::try_join!(write_and_drop(stream, &data), slow_read_all(&mut accepted))
    })
    .await??;
    assert!(
        got == data,
        "listener got {} of {} bytes",
        got.len(),
        data.len()
    );
    // Both sides done: the connection ends with a normal close (code 0) from one side.
    let connection = accepted.connection().clone();
    drop(accepted);
    let closed = timeout(WAIT, connection.closed()).await?;
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), 0);
            assert_eq!(&close.reason[..], b"normal close");
        }
        quinn::ConnectionError::LocallyClosed => {}
        other => bail!("connection ended with {other:?}"),
    }

    // And the other way: the listener side writes and drops, the dialer reads slowly.
    let mut stream = timeout(WAIT, line.first().connect("c", "sink")).await??;
    let accepted = timeout(WAIT, listener.accept()).await??;
    let (_, got) = timeout(Duration::from_secs(60), async {
        tokio::try_join!(write_and_drop(accepted, &data), slow_read_all(&mut stream))
    })
    .await??;
    assert!(
        got == data,
        "dialer got {} of {} bytes",
        got.len(),
        data.len()
    );
    Ok(())
}

#[tokio::test]
async fn node_ids_that_are_not_dns_names_work_between_rust_nodes() -> Result<()> {
    init_tracing();
    // `node_1` is a valid rustls SNI; `1234` is not, so the dialer falls back to `netceptor`.
    let line = Line::memory(&["node_1", "1234"]).await?;
    for (from, to) in [(0, 1), (1, 0)] {
        let (dialer, target) = (&line.nodes[from], &line.nodes[to]);
        let listener = Listener::bind(target, "echo", None, ServerTls::Insecure).await?;
        let serve = async {
            let mut s = timeout(WAIT, listener.accept()).await??;
            echo_once(&mut s).await
        };
        let call = async {
            let mut s = timeout(WAIT, dialer.connect(target.id(), "echo")).await??;
            echo_roundtrip(&mut s, b"hello").await
        };
        let (_, answer) = tokio::try_join!(serve, call)?;
        assert_eq!(answer, b"hello");
    }
    Ok(())
}

/// Sizes of the QUIC payloads of the data messages a relay saw, in order, per direction.
#[derive(Default)]
struct Seen {
    /// (from dialer side, payload)
    quic: Vec<(bool, Vec<u8>)>,
}

/// Copies framed messages from `from` to `to`, recording QUIC payloads (data messages that
/// are not ping/unreach traffic).
async fn relay_half(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    outbound: bool,
    seen: Arc<Mutex<Seen>>,
) -> Result<()> {
    let mut codec = framing_codec();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(frame) = codec.decode(&mut buf)? {
            if frame.first() == Some(&0) && frame.len() > 36 {
                let services = &frame[20..36];
                if !services.starts_with(b"unreach") && !services[8..].starts_with(b"ping") {
                    let payload = frame[36..].to_vec();
                    seen.lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .quic
                        .push((outbound, payload));
                }
            }
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        // Forward the raw bytes unchanged, and parse a copy.
        to.write_all(&chunk[..n]).await?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn quic_packets_fit_go_limits_on_the_wire() -> Result<()> {
    init_tracing();
    let a = Node::spawn(NodeConfig::new("a"))?;
    let b = Node::spawn(NodeConfig::new("b"))?;
    let b_listener = tcp::Listener::bind("127.0.0.1:0", LinkConfig::default()).await?;
    let b_addr = b_listener.local_addr();
    b.add_backend(b_listener);
    let relay = TcpListener::bind("127.0.0.1:0").await?;
    let relay_addr = relay.local_addr()?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut relays = JoinSet::new();
    {
        let seen = Arc::clone(&seen);
        relays.spawn(async move {
            let (client, _) = relay.accept().await?;
            let upstream = TcpStream::connect(b_addr).await?;
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            let mut halves = JoinSet::new();
            halves.spawn(relay_half(cr, uw, true, Arc::clone(&seen)));
            halves.spawn(relay_half(ur, cw, false, seen));
            while let Some(done) = halves.join_next().await {
                done??;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    a.add_backend(tcp::Dialer::new(
        relay_addr.to_string(),
        false,
        LinkConfig::default(),
    ));
    let line = Line::converge(vec![a, b], MemoryNetwork::new()).await?;

    // Enough traffic both ways for path MTU discovery to reach its ceiling.
    let listener = Listener::bind(line.last(), "echo", None, ServerTls::Insecure).await?;
    let serve = async {
        let mut s = timeout(WAIT, listener.accept()).await??;
        echo_once(&mut s).await
    };
    let call = async {
        let mut s = timeout(WAIT, line.first().connect("b", "echo")).await??;
        echo_roundtrip(&mut s, &pattern(2_000_000, 9)).await
    };
    let (_, answer) = timeout(WAIT, async { tokio::try_join!(serve, call) }).await??;
    assert_eq!(answer.len(), 2_000_000);

    let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    ensure!(
        seen.quic.len() > 100,
        "only {} QUIC packets seen",
        seen.quic.len()
    );
    let (outbound, first) = &seen.quic[0];
    assert!(*outbound, "the dialer speaks first");
    assert_eq!(
        first[0] & 0xf0,
        0xc0,
        "the first packet is a long-header Initial"
    );
    assert_eq!(&first[1..5], &[0, 0, 0, 1], "QUIC v1");
    assert!(
        first.len() >= 1200,
        "first Initial is {} bytes",
        first.len()
    );
    let largest = seen.quic.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
    assert!(largest <= 1452, "a {largest}-byte QUIC packet was sent");
    let full = seen.quic.iter().filter(|(_, p)| p.len() == 1452).count();
    assert!(
        full > 0,
        "path MTU discovery never reached 1452 (largest {largest})"
    );
    eprintln!(
        "wire: {} QUIC packets, largest {largest}, {full} of 1452 bytes, first Initial {}",
        seen.quic.len(),
        first.len()
    );
    Ok(())
}

#[tokio::test]
async fn accepted_stream_closes_when_the_dialer_service_disappears() -> Result<()> {
    init_tracing();
    let net = MemoryNetwork::new();
    let start = |epoch: u64| -> Result<Node> {
        let mut config = NodeConfig::new("a");
        config.epoch = Some(epoch);
        let a = Node::spawn(config)?;
        a.add_backend(net.dialer("a", "b", true, LinkConfig::default()));
        Ok(a)
    };
    let b = Node::spawn(NodeConfig::new("b"))?;
    b.add_backend(net.listener("b", LinkConfig::default()));
    let a = start(1 << 40)?;
    let line = Line::converge(vec![a, b.clone()], net.clone()).await?;
    let listener = Listener::bind(&b, "echo", None, ServerTls::Insecure).await?;
    let dialed = timeout(WAIT, line.first().connect("b", "echo")).await??;
    let mut accepted = timeout(WAIT, listener.accept()).await??;

    // The dialing node restarts: its ephemeral service is gone, so b's next packets are
    // answered with `service unknown`.
    std::mem::forget(dialed); // as if the process died: no close reaches b
    line.first().shutdown(Duration::from_secs(5)).await?;
    let _a = start((1 << 40) + (1 << 24))?;
    wait_until("b to route to the new a", || async {
        b.status().await.is_ok_and(|s| s.routes.contains_key("a"))
    })
    .await?;
    let started = Instant::now();
    accepted.write_all(b"anyone there?").await?;
    let closed = timeout(WAIT, accepted.connection().closed()).await?;
    assert!(
        matches!(closed, quinn::ConnectionError::LocallyClosed),
        "{closed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?} (the idle timeout is 30 s)",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn node_shutdown_ends_accept() -> Result<()> {
    init_tracing();
    let line = Line::memory(&["a", "b"]).await?;
    let listener = Listener::bind(line.last(), "echo", None, ServerTls::Insecure).await?;
    let _dialed = timeout(WAIT, line.first().connect("b", "echo")).await??;
    let _accepted = timeout(WAIT, listener.accept()).await??;
    timeout(WAIT, line.last().shutdown(Duration::from_secs(5))).await??;
    let error = timeout(WAIT, listener.accept())
        .await?
        .expect_err("the node stopped");
    assert_eq!(error, quic::AcceptError::Closed);
    Ok(())
}

/// A server configuration like mode A's, built outside the crate (as a mode-B caller would).
fn test_server_config() -> Result<Arc<rustls::ServerConfig>> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, quic::INSECURE_COMMON_NAME);
    let cert = params.self_signed(&key)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)?;
    Ok(Arc::new(config))
}

#[tokio::test]
async fn per_client_tls_sees_the_dialing_node() -> Result<()> {
    init_tracing();
    let line = Line::memory(&["a", "b", "c"]).await?;
    let config = test_server_config()?;
    let asked = Arc::new(Mutex::new(Vec::<String>::new()));
    let factory: quic::ServerConfigFactory = {
        let asked = Arc::clone(&asked);
        Arc::new(move |node: &str| {
            asked
                .lock()
                .map_err(|e| e.to_string())?
                .push(node.to_owned());
            if node == "a" {
                Ok(Arc::clone(&config))
            } else {
                Err(format!("{node} is not allowed"))
            }
        })
    };
    let listener =
        Listener::bind(&line.nodes[1], "svc", None, ServerTls::PerClient(factory)).await?;
    let serve = async {
        let mut s = timeout(WAIT, listener.accept()).await??;
        echo_once(&mut s).await
    };
    let call = async {
        let mut s = timeout(WAIT, line.nodes[0].connect("b", "svc")).await??;
        echo_roundtrip(&mut s, b"mode b").await
    };
    let (_, answer) = tokio::try_join!(serve, call)?;
    assert_eq!(answer, b"mode b");

    let started = Instant::now();
    let refused = timeout(WAIT, line.nodes[2].connect("b", "svc"))
        .await?
        .expect_err("c is refused");
    assert!(matches!(refused, DialError::Connection(_)), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let asked = asked.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    assert_eq!(asked, ["a", "c"]);
    Ok(())
}
