//! The UDP and WebSocket backends over real sockets on 127.0.0.1: nodes linking through them,
//! replays of captured Go traffic (vectors/go-udp-session.jsonl, go-ws-session.jsonl), and
//! hostile peers. Every network await is under a timeout; waits poll a condition, never sleep.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use receptor_mesh::backend::{
    Backend, LinkConfig, MAX_SESSIONS_PER_LISTENER, Session, udp, websocket,
};
use receptor_mesh::packet_conn::Incoming;
use receptor_mesh::wire::{self, Message, RoutingUpdate};
use receptor_mesh::{Node, NodeConfig};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_secs(5);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// Polls `check` until it yields `Some`, failing after `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn is_connected(node: &Node, peer: &str) -> bool {
    node.status()
        .await
        .is_ok_and(|s| s.connections.iter().any(|c| c.node_id == peer))
}

/// Waits until `a` and `b` are connected and route to each other.
async fn wait_linked(a: &Node, b: &Node) -> Result<()> {
    wait_route(a, b.id(), b.id()).await?;
    wait_route(b, a.id(), a.id()).await
}

async fn wait_route(at: &Node, dest: &str, via: &str) -> Result<()> {
    let at = at.clone();
    wait_for(
        &format!("{} to route {dest} via {via}", at.id()),
        WAIT,
        || {
            let at = at.clone();
            async move {
                (at.status().await.ok()?.routes.get(dest).map(String::as_str) == Some(via))
                    .then_some(())
            }
        },
    )
    .await
}

fn spawn_node(id: &str) -> Result<Node> {
    Ok(Node::spawn(NodeConfig::new(id))?)
}

async fn udp_listener(node: &Node) -> Result<SocketAddr> {
    let listener = udp::Listener::bind("127.0.0.1:0", LinkConfig::default()).await?;
    let addr = listener.local_addr();
    node.add_backend(listener);
    Ok(addr)
}

async fn ws_listener(node: &Node, path: &str) -> Result<SocketAddr> {
    let listener =
        websocket::Listener::bind("127.0.0.1:0", path, LinkConfig::default(), None).await?;
    let addr = listener.local_addr();
    node.add_backend(listener);
    Ok(addr)
}

fn ws_dialer(url: &str) -> Result<websocket::Dialer> {
    Ok(websocket::Dialer::new(
        url,
        None,
        true,
        LinkConfig::default(),
        None,
    )?)
}

/// Runs a backend with a bare session sink instead of a node.
struct Harness {
    sessions: mpsc::Receiver<Session>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Harness {
    fn run(backend: impl Backend) -> Self {
        let (tx, sessions) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let run = Box::new(backend).run(tx, cancel.clone());
        tasks.spawn(async move {
            let _ = run.await;
        });
        Self {
            sessions,
            cancel,
            tasks,
        }
    }

    async fn next_session(&mut self) -> Result<Session> {
        timeout(WAIT, self.sessions.recv())
            .await
            .context("no session")?
            .context("backend stopped")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn recv_message(session: &mut Session) -> Result<Bytes> {
    timeout(WAIT, session.inbound.recv())
        .await
        .context("no message")?
        .context("session ended")
}

fn hello(id: &str, seq: u64, links: &[(&str, f64)]) -> Bytes {
    RoutingUpdate {
        node_id: id.into(),
        update_id: format!("h{seq:07}"),
        update_epoch: 77 << 24,
        update_sequence: seq,
        connections: Some(links.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()),
        forwarding_node: id.into(),
        suspected_duplicate: 0,
    }
    .encode()
}

// === captures ===

fn capture(file: &str) -> Result<Vec<Value>> {
    let path = format!("{}/../../shared/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

fn unhex(record: &Value, key: &str) -> Result<Vec<u8>> {
    Ok(hex::decode(record[key].as_str().context("no hex")?)?)
}

/// Captured messages of one scenario and direction, in order.
fn captured_messages<'a>(
    records: &'a [Value],
    scenario: &'a str,
    dir: &'a str,
) -> impl Iterator<Item = &'a Value> + 'a {
    records
        .iter()
        .filter(move |r| r["scenario"] == scenario && r["dir"] == dir && r["hex"].is_string())
}

// === a raw WebSocket client, for scripted Go-like peers ===

/// Reads an HTTP head; returns it and the bytes after it.
async fn read_http_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = timeout(WAIT, io.read(&mut chunk))
            .await
            .context("no http head")??;
        ensure!(
            n > 0,
            "connection closed before the http head ended: {buf:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            return Ok((String::from_utf8(buf)?, rest));
        }
        ensure!(buf.len() < 64 * 1024, "http head too long");
    }
}

/// A client frame, masked with `mask`.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

struct RawWs<S> {
    io: S,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawWs<S> {
    async fn fill(&mut self, want: usize) -> Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        while self.buf.len() < want {
            let n = timeout(WAIT, self.io.read(&mut chunk))
                .await
                .context("no frame")??;
            ensure!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    async fn read_frame(&mut self) -> Result<Frame> {
        self.fill(2).await?;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let mut header = 2;
        let mut len = u64::from(b1 & 0x7f);
        if len == 126 {
            self.fill(4).await?;
            len = u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
            header = 4;
        } else if len == 127 {
            self.fill(10).await?;
            len = u64::from_be_bytes(self.buf[2..10].try_into()?);
            header = 10;
        }
        let masked = b1 & 0x80 != 0;
        let mask_len = if masked { 4 } else { 0 };
        let total = header + mask_len + usize::try_from(len)?;
        self.fill(total).await?;
        let mut frame: Vec<u8> = self.buf.drain(..total).collect();
        let mut payload = frame.split_off(header + mask_len);
        if masked {
            let mask = &frame[header..header + 4];
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        Ok(Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            masked,
            payload,
        })
    }

    /// The next data message from the node (server frames are never fragmented by us).
    async fn next_message(&mut self) -> Result<Message> {
        loop {
            let frame = self.read_frame().await?;
            match frame.opcode {
                1 | 2 => {
                    ensure!(frame.fin, "unexpected fragment");
                    return Ok(wire::decode(&frame.payload)?);
                }
                8 => bail!("peer sent a close frame"),
                _ => {}
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        timeout(WAIT, self.io.write_all(bytes))
            .await
            .context("write stalled")??;
        Ok(())
    }
}

/// Upgrades a raw TCP connection with a gorilla-style request; returns the response head.
async fn raw_ws_connect(addr: SocketAddr, path: &str) -> Result<(String, RawWs<TcpStream>)> {
    let mut tcp = timeout(WAIT, TcpStream::connect(addr)).await??;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\nOrigin: http://{addr}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let (head, buf) = read_http_head(&mut tcp).await?;
    Ok((head, RawWs { io: tcp, buf }))
}

/// Sends raw bytes as an HTTP request and returns the status line of the answer.
async fn http_status(addr: SocketAddr, request: &[u8]) -> Result<String> {
    let mut tcp = timeout(WAIT, TcpStream::connect(addr)).await??;
    tcp.write_all(request).await?;
    let (head, _) = read_http_head(&mut tcp).await?;
    // The listener closes after an error answer.
    let mut rest = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .context("connection left open after an error answer")??;
    Ok(head.lines().next().unwrap_or_default().to_owned())
}

async fn next_routing<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut RawWs<S>,
) -> Result<RoutingUpdate> {
    loop {
        if let Message::Routing(update) = ws.next_message().await? {
            return Ok(update);
        }
    }
}

// === nodes over the real backends ===

#[tokio::test]
async fn two_nodes_link_over_udp() -> Result<()> {
    init_tracing();
    let (a, b) = (spawn_node("a")?, spawn_node("b")?);
    let addr = udp_listener(&b).await?;
    a.add_backend(udp::Dialer::new(
        addr.to_string(),
        true,
        LinkConfig::default(),
    ));
    wait_linked(&a, &b).await?;
    assert_eq!(a.ping("b", 30).await?.from, "b");
    assert_eq!(b.ping("a", 30).await?.from, "a");
    a.shutdown(GRACE).await?;
    b.shutdown(GRACE).await?;
    Ok(())
}

#[tokio::test]
async fn two_nodes_link_over_websocket() -> Result<()> {
    init_tracing();
    let (a, b) = (spawn_node("a")?, spawn_node("b")?);
    let addr = ws_listener(&b, "/netc").await?;
    a.add_backend(ws_dialer(&format!("ws://{addr}/netc"))?);
    wait_linked(&a, &b).await?;
    assert_eq!(a.ping("b", 30).await?.from, "b");
    assert_eq!(b.ping("a", 30).await?.from, "a");
    a.shutdown(GRACE).await?;
    b.shutdown(GRACE).await?;
    Ok(())
}

/// a --udp--> b <--ws-- c: routes converge, pings cross two hops, and datagrams up to 60 KB
/// cross both links intact in both directions.
#[tokio::test]
async fn three_nodes_udp_and_ws_line_converges_and_carries_60k() -> Result<()> {
    init_tracing();
    let (a, b, c) = (spawn_node("a")?, spawn_node("b")?, spawn_node("c")?);
    let udp_addr = udp_listener(&b).await?;
    let ws_addr = ws_listener(&b, "/").await?;
    a.add_backend(udp::Dialer::new(
        udp_addr.to_string(),
        true,
        LinkConfig::default(),
    ));
    c.add_backend(ws_dialer(&format!("ws://{ws_addr}/mesh"))?);
    wait_route(&a, "c", "b").await?;
    wait_route(&c, "a", "b").await?;

    assert_eq!(a.ping("c", 30).await?.from, "c");
    assert_eq!(c.ping("a", 30).await?.from, "a");
    let hop = a.ping("c", 1).await.expect_err("expires at b");
    assert!(
        matches!(hop, receptor_mesh::node::PingError::Unreachable { ref from, ref problem, .. } if from == "b" && problem == "message expired"),
        "{hop:?}"
    );

    let mut at_a = a.listen(Some("big"), None).await?;
    let mut at_c = c.listen(Some("big"), None).await?;
    for size in [1usize, 1400, 1500, 9000, 32 * 1024, 60 * 1024] {
        let payload: Bytes = (0..size).map(|i| (i * 7 + size) as u8).collect();
        at_a.send_to("c", "big", payload.clone()).await?;
        let Some(Incoming::Datagram {
            from_node,
            payload: got,
            ..
        }) = timeout(WAIT, at_c.recv()).await?
        else {
            bail!("c got no {size}-byte datagram");
        };
        assert_eq!(from_node, "a");
        assert!(got == payload, "{size}-byte datagram a->c corrupted");
        at_c.send_to("a", "big", payload.clone()).await?;
        let Some(Incoming::Datagram { payload: got, .. }) = timeout(WAIT, at_a.recv()).await?
        else {
            bail!("a got no {size}-byte datagram");
        };
        assert!(got == payload, "{size}-byte datagram c->a corrupted");
    }
    for node in [a, b, c] {
        node.shutdown(GRACE).await?;
    }
    Ok(())
}

// === UDP specifics ===

/// vectors/go-udp-session.jsonl: the Go dialer's datagrams complete a handshake with our
/// listener, which then answers pings like a Go node.
#[tokio::test]
async fn go_udp_dialer_replay_completes_handshake() -> Result<()> {
    init_tracing();
    let records = capture("go-udp-session.jsonl")?;
    let node = spawn_node("node-b")?;
    let addr = udp_listener(&node).await?;
    let go = UdpSocket::bind("127.0.0.1:0").await?;
    go.connect(addr).await?;
    let mut buf = vec![0u8; 65536];
    let mut recv = async || -> Result<Message> {
        let n = timeout(WAIT, go.recv(&mut buf))
            .await
            .context("no datagram")??;
        Ok(wire::decode(&buf[..n])?)
    };

    let startup: Vec<Vec<u8>> = captured_messages(&records, "5u-udp-startup", "A->B")
        .map(|r| unhex(r, "hex"))
        .collect::<Result<_>>()?;
    ensure!(startup.len() >= 4, "capture has node-a's startup datagrams");
    // node-a speaks first (the listener cannot know its address), then node-b answers.
    go.send(&startup[0]).await?;
    let Message::Routing(initial) = recv().await? else {
        bail!("first answer is not a routing update");
    };
    assert_eq!(initial.node_id, "node-b");
    assert_eq!(initial.connections, Some(Default::default()));
    for datagram in &startup[1..] {
        go.send(datagram).await?;
    }
    loop {
        if let Message::Routing(update) = recv().await?
            && update.connections.as_ref().and_then(|c| c.get("node-a")) == Some(&1.0)
        {
            break;
        }
    }
    let status = node.status().await?;
    assert_eq!(status.connections.len(), 1);
    assert_eq!(status.connections[0].node_id, "node-a");
    assert!(
        status
            .advertisements
            .iter()
            .any(|ad| ad.node_id == "node-a" && ad.service == "control"),
        "node-a's captured advertisement is stored"
    );

    // The captured ping and the traceroute probe (wire TTL 0) are both answered with TTL 29.
    for record in captured_messages(&records, "5u-udp-ping-traceroute", "A->B") {
        let probe = unhex(record, "hex")?;
        let Message::Data(sent) = wire::decode(&probe)? else {
            bail!("captured probe is not data");
        };
        go.send(&probe).await?;
        loop {
            if let Message::Data(reply) = recv().await? {
                assert_eq!(reply.ttl, 0x1d);
                assert_eq!(reply.to_node, wire::node_hash("node-a"));
                assert_eq!(reply.from_service.as_bytes(), b"ping");
                assert_eq!(reply.to_service, sent.from_service);
                break;
            }
        }
    }
    node.shutdown(GRACE).await?;
    Ok(())
}

#[tokio::test]
async fn udp_listener_forgets_a_session_the_node_dropped() -> Result<()> {
    init_tracing();
    let listener = udp::Listener::bind("127.0.0.1:0", LinkConfig::default()).await?;
    let addr = listener.local_addr();
    let mut harness = Harness::run(listener);
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    client.connect(addr).await?;

    // Zero-length datagrams never create or reach a session.
    client.send(b"").await?;
    client.send(b"one").await?;
    let mut first = harness.next_session().await?;
    assert_eq!(first.info.kind, "udp");
    assert_eq!(first.info.remote_addr, client.local_addr()?.to_string());
    assert_eq!(recv_message(&mut first).await?, "one");
    client.send(b"").await?;
    client.send(b"two").await?;
    assert_eq!(recv_message(&mut first).await?, "two");
    first.outbound.send(Bytes::from_static(b"back")).await?;
    let mut buf = [0u8; 64];
    let n = timeout(WAIT, client.recv(&mut buf)).await??;
    assert_eq!(&buf[..n], b"back");

    // The node drops the session (reject, idle timeout...): the next datagram from the same
    // address opens a fresh one at once.
    drop(first);
    client.send(b"three").await?;
    let mut second = harness.next_session().await?;
    assert_eq!(recv_message(&mut second).await?, "three");
    assert!(
        harness.sessions.try_recv().is_err(),
        "exactly one new session"
    );
    Ok(())
}

#[tokio::test]
async fn udp_flood_from_2000_ports_is_bounded_by_the_session_limit() -> Result<()> {
    init_tracing();
    let listener = udp::Listener::bind("127.0.0.1:0", LinkConfig::default()).await?;
    let addr = listener.local_addr();
    let mut harness = Harness::run(listener);
    let first = UdpSocket::bind("127.0.0.1:0").await?;
    first.connect(addr).await?;
    first.send(b"\x01first").await?;
    let mut sessions = vec![harness.next_session().await?];
    assert_eq!(recv_message(&mut sessions[0]).await?, "\x01first");
    // Fill the listener one source at a time, so no datagram is lost to a full socket buffer.
    // Every source socket stays open so that no port is reused.
    let mut sources = Vec::with_capacity(2000);
    while sessions.len() < MAX_SESSIONS_PER_LISTENER {
        let source = UdpSocket::bind("127.0.0.1:0").await?;
        source.send_to(b"\x01hello", addr).await?;
        sessions.push(harness.next_session().await?);
        sources.push(source);
    }
    // The rest of the 2000 sources find the listener full.
    while sources.len() < 2000 {
        let source = UdpSocket::bind("127.0.0.1:0").await?;
        source.send_to(b"\x01flood", addr).await?;
        sources.push(source);
    }
    // The listener handles datagrams in order: once this arrives, the flood has been seen.
    first.send(b"\x01marker").await?;
    assert_eq!(recv_message(&mut sessions[0]).await?, "\x01marker");
    assert!(
        harness.sessions.try_recv().is_err(),
        "the listener made more than {MAX_SESSIONS_PER_LISTENER} sessions"
    );
    // Existing sessions keep working, both ways.
    sessions[0]
        .outbound
        .send(Bytes::from_static(b"\x01still here"))
        .await?;
    let mut buf = [0u8; 64];
    let n = timeout(WAIT, first.recv(&mut buf)).await??;
    assert_eq!(&buf[..n], b"\x01still here");
    // A session the node drops frees a slot for a new source at once.
    sessions.truncate(MAX_SESSIONS_PER_LISTENER - 1);
    let late = UdpSocket::bind("127.0.0.1:0").await?;
    late.send_to(b"\x01late", addr).await?;
    let mut fresh = harness.next_session().await?;
    assert_eq!(recv_message(&mut fresh).await?, "\x01late");
    Ok(())
}

#[tokio::test]
async fn udp_flood_does_not_disturb_a_node_link() -> Result<()> {
    init_tracing();
    let (a, b) = (spawn_node("a")?, spawn_node("b")?);
    let addr = udp_listener(&b).await?;
    a.add_backend(udp::Dialer::new(
        addr.to_string(),
        true,
        LinkConfig::default(),
    ));
    wait_linked(&a, &b).await?;
    // Junk from 2000 ports: malformed updates, data before a handshake, empty datagrams.
    for i in 0..2000 {
        let source = UdpSocket::bind("127.0.0.1:0").await?;
        let junk: &[u8] = match i % 3 {
            0 => b"\x01{not json",
            1 => b"\x00\x1d",
            _ => b"",
        };
        source.send_to(junk, addr).await?;
    }
    assert_eq!(a.ping("b", 30).await?.from, "b");
    assert!(is_connected(&a, "b").await && is_connected(&b, "a").await);
    a.shutdown(GRACE).await?;
    b.shutdown(GRACE).await?;
    Ok(())
}

#[tokio::test]
async fn udp_dialer_ends_session_on_port_unreachable() -> Result<()> {
    init_tracing();
    let closed = UdpSocket::bind("127.0.0.1:0").await?.local_addr()?;
    let mut harness = Harness::run(udp::Dialer::new(
        closed.to_string(),
        false,
        LinkConfig::default(),
    ));
    let mut session = harness.next_session().await?;
    session
        .outbound
        .send(Bytes::from_static(b"\x01anyone?"))
        .await?;
    // The ICMP port-unreachable ends the session; without redial the backend then stops.
    let ended = timeout(WAIT, session.inbound.recv()).await?;
    assert!(ended.is_none(), "session survived an unreachable port");
    let stopped = timeout(WAIT, harness.tasks.join_next()).await?;
    assert!(stopped.is_some_and(|r| r.is_ok()));
    Ok(())
}

#[tokio::test]
async fn udp_dialer_redials_with_backoff_after_port_unreachable() -> Result<()> {
    init_tracing();
    let closed = UdpSocket::bind("127.0.0.1:0").await?.local_addr()?;
    let mut harness = Harness::run(udp::Dialer::new(
        closed.to_string(),
        true,
        LinkConfig::default(),
    ));
    let mut session = harness.next_session().await?;
    session
        .outbound
        .send(Bytes::from_static(b"\x01anyone?"))
        .await?;
    assert!(timeout(WAIT, session.inbound.recv()).await?.is_none());
    let ended = Instant::now();
    // The first redial waits 5 s (spec §1.6) and uses a fresh socket.
    let again = harness.next_session().await?;
    let waited = ended.elapsed();
    assert!(
        waited >= receptor_mesh::backend::REDIAL_INITIAL - Duration::from_millis(50),
        "redialed after {waited:?}"
    );
    assert_eq!(again.info.remote_addr, closed.to_string());
    Ok(())
}

#[tokio::test]
async fn udp_dialer_refuses_oversized_datagrams() -> Result<()> {
    init_tracing();
    let peer = UdpSocket::bind("127.0.0.1:0").await?;
    let mut harness = Harness::run(udp::Dialer::new(
        peer.local_addr()?.to_string(),
        false,
        LinkConfig::default(),
    ));
    let session = harness.next_session().await?;
    let too_big = Bytes::from(vec![1u8; udp::MAX_DATAGRAM + 1]);
    let largest = Bytes::from(vec![2u8; udp::MAX_DATAGRAM]);
    session.outbound.send(too_big).await?;
    session.outbound.send(largest.clone()).await?;
    let mut buf = vec![0u8; udp::RECV_BUFFER];
    let (n, _) = timeout(WAIT, peer.recv_from(&mut buf)).await??;
    assert_eq!(
        n,
        udp::MAX_DATAGRAM,
        "the oversized message was dropped, not truncated"
    );
    assert!(buf[..n] == largest[..]);
    Ok(())
}

/// Go's listener keeps a stale session after a restart and rejects the peer for ~25 s
/// (vectors/README.md observations 5–7). Ours forgets the session as soon as the node drops it,
/// so the dialer's next datagrams lead to a fresh handshake.
#[tokio::test]
async fn udp_listener_restart_relinks_without_a_reject_storm() -> Result<()> {
    init_tracing();
    let epoch = 1_700_000_000u64 << 24;
    let a = spawn_node("a")?;
    let mut config = NodeConfig::new("b");
    config.epoch = Some(epoch);
    let b = Node::spawn(config)?;
    let addr = udp_listener(&b).await?;
    a.add_backend(udp::Dialer::new(
        addr.to_string(),
        true,
        LinkConfig::default(),
    ));
    wait_linked(&a, &b).await?;

    b.shutdown(GRACE).await?;
    let mut config = NodeConfig::new("b");
    config.epoch = Some(epoch + (1 << 24));
    let b = Node::spawn(config)?;
    let listener = udp::Listener::bind(&addr.to_string(), LinkConfig::default()).await?;
    b.add_backend(listener);
    let restarted = Instant::now();

    // a still believes in the old link; its next datagram (here a data message rather than
    // the 10 s routing update) reaches the new b on the old 4-tuple. (If a sent something
    // while b was down, the port-unreachable already ended its session and it redials anyway.)
    let probe = a.listen(None, None).await?;
    let stale = probe
        .send_to("b", "nobody", Bytes::from_static(b"are you there"))
        .await
        .is_ok();
    tracing::info!(stale, "probe sent over the old link");
    // The new b answers with its initial update, a rejects it ("no longer lists us") and
    // redials after 5 s from a new port, which the new b accepts.
    let (a2, b2) = (a.clone(), b.clone());
    wait_for("the link to come back", Duration::from_secs(15), || {
        let (a, b) = (a2.clone(), b2.clone());
        async move {
            let (at_a, at_b) = (a.status().await.ok()?, b.status().await.ok()?);
            let linked = at_a.connections.iter().any(|c| c.node_id == "b")
                && at_b.connections.iter().any(|c| c.node_id == "a")
                && at_a.routes.get("b").map(String::as_str) == Some("b")
                && at_b.routes.get("a").map(String::as_str) == Some("a");
            linked.then_some(())
        }
    })
    .await?;
    tracing::info!(elapsed = ?restarted.elapsed(), "relinked");
    assert_eq!(a.ping("b", 30).await?.from, "b");
    a.shutdown(GRACE).await?;
    b.shutdown(GRACE).await?;
    Ok(())
}

// === WebSocket specifics ===

/// vectors/go-ws-session.jsonl: the Go dialer's exact upgrade request is accepted with
/// gorilla's exact answer, and its captured frames (re-sent byte for byte, masks included)
/// complete a handshake with our node.
#[tokio::test]
async fn go_ws_dialer_replay_completes_handshake() -> Result<()> {
    init_tracing();
    let records = capture("go-ws-session.jsonl")?;
    let node = spawn_node("node-b")?;
    let addr = ws_listener(&node, "/netc").await?;
    let event = |name: &str| -> Result<String> {
        let record = records
            .iter()
            .find(|r| r["event"] == name)
            .with_context(|| format!("no {name} event"))?;
        Ok(record["text"].as_str().context("no text")?.to_owned())
    };
    // The relay's address was both the Host and the Origin host; a Go dialer pointed at us
    // would name our address in both.
    let request = event("http_request")?.replace("127.0.0.1:27432", &addr.to_string());
    let expected_response = event("http_response")?;

    let mut tcp = timeout(WAIT, TcpStream::connect(addr)).await??;
    tcp.write_all(request.as_bytes()).await?;
    let (response, rest) = read_http_head(&mut tcp).await?;
    assert_eq!(
        response, expected_response,
        "gorilla's 101 answer, byte for byte"
    );
    let mut ws = RawWs { io: tcp, buf: rest };

    // The listener speaks first, with one unmasked, unfragmented binary frame.
    let frame = ws.read_frame().await?;
    assert!(frame.fin && frame.opcode == 2 && !frame.masked, "{frame:?}");
    let Message::Routing(initial) = wire::decode(&frame.payload)? else {
        bail!("first frame is not a routing update");
    };
    assert_eq!(initial.node_id, "node-b");

    for record in captured_messages(&records, "5w-ws-startup", "A->B") {
        let payload = unhex(record, "hex")?;
        let header = hex::decode(
            record["ws"]["frame_header_hex"]
                .as_str()
                .context("header")?,
        )?;
        let mask: [u8; 4] = header[header.len() - 4..].try_into()?;
        let frame = client_frame(true, 2, &payload, mask);
        assert_eq!(
            frame[..header.len()],
            header[..],
            "same frame header as captured"
        );
        ws.send(&frame).await?;
    }
    loop {
        let update = next_routing(&mut ws).await?;
        if update.connections.as_ref().and_then(|c| c.get("node-a")) == Some(&1.0) {
            break;
        }
    }
    let status = node.status().await?;
    assert_eq!(status.connections.len(), 1);
    assert_eq!(status.connections[0].node_id, "node-a");
    assert!(
        status
            .advertisements
            .iter()
            .any(|ad| ad.node_id == "node-a" && ad.service == "control")
    );

    let ping = captured_messages(&records, "5w-ws-ping-work", "A->B")
        .next()
        .context("no captured ping")?;
    let probe = unhex(ping, "hex")?;
    let Message::Data(sent) = wire::decode(&probe)? else {
        bail!("captured ping is not data");
    };
    ws.send(&client_frame(true, 2, &probe, [1, 2, 3, 4]))
        .await?;
    loop {
        if let Message::Data(reply) = ws.next_message().await? {
            assert_eq!(reply.ttl, 0x1d);
            assert_eq!(reply.to_service, sent.from_service);
            assert_eq!(reply.from_service.as_bytes(), b"ping");
            break;
        }
    }
    node.shutdown(GRACE).await?;
    Ok(())
}

/// Our dialer's upgrade request carries Go's header set, in Go's order, with Go's Origin; it
/// handles the listener speaking first in the same segment as the 101.
#[tokio::test]
async fn ws_dialer_sends_go_header_set() -> Result<()> {
    init_tracing();
    let records = capture("go-ws-session.jsonl")?;
    let go_request = records
        .iter()
        .find(|r| r["event"] == "http_request")
        .and_then(|r| r["text"].as_str())
        .context("no captured request")?;
    let header_names = |head: &str| -> Vec<String> {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(name, _)| name.to_owned())
            .collect()
    };
    let header = |head: &str, name: &str| -> Option<String> {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };

    let server = TcpListener::bind("127.0.0.1:0").await?;
    let addr = server.local_addr()?;
    let node = spawn_node("node-a")?;
    node.add_backend(websocket::Dialer::new(
        &format!("ws://{addr}/netc"),
        Some(("X-Receptor-Test".to_owned(), "yes".to_owned())),
        false,
        LinkConfig::default(),
        None,
    )?);
    let (mut tcp, _) = timeout(WAIT, server.accept()).await??;
    let (request, _) = read_http_head(&mut tcp).await?;
    assert_eq!(request.lines().next(), Some("GET /netc HTTP/1.1"));
    let mut expected = header_names(go_request);
    expected.push("X-Receptor-Test".to_owned());
    assert_eq!(
        header_names(&request),
        expected,
        "Go's header names, in Go's order"
    );
    assert_eq!(header(&request, "Host"), Some(addr.to_string()));
    assert_eq!(header(&request, "Origin"), Some(format!("http://{addr}")));
    for name in [
        "Connection",
        "Sec-WebSocket-Version",
        "Upgrade",
        "X-Receptor-Test",
    ] {
        assert_eq!(
            header(&request, name),
            header(go_request, name).or(Some("yes".into()))
        );
    }
    let key = header(&request, "Sec-WebSocket-Key").context("no key")?;

    // Answer like gorilla, with node-b's captured initial update in the same write.
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    let from_b: Vec<&Value> = captured_messages(&records, "5w-ws-startup", "B->A").collect();
    let b_initial = unhex(from_b[0], "hex")?;
    answer.extend(hex::decode(
        from_b[0]["ws"]["frame_header_hex"]
            .as_str()
            .context("header")?,
    )?);
    answer.extend(&b_initial);
    tcp.write_all(&answer).await?;
    let mut ws = RawWs {
        io: tcp,
        buf: Vec::new(),
    };
    let frame = ws.read_frame().await?;
    assert!(frame.fin && frame.opcode == 2 && frame.masked, "{frame:?}");
    let Message::Routing(initial) = wire::decode(&frame.payload)? else {
        bail!("dialer's first message is not a routing update");
    };
    assert_eq!(initial.node_id, "node-a");
    // node-b's flood listing node-a completes the handshake.
    let b_flood = unhex(from_b[1], "hex")?;
    ws.io
        .write_all(&hex::decode(
            from_b[1]["ws"]["frame_header_hex"]
                .as_str()
                .context("header")?,
        )?)
        .await?;
    ws.io.write_all(&b_flood).await?;
    let n = node.clone();
    wait_for("node-a to list node-b", WAIT, || {
        let n = n.clone();
        async move { is_connected(&n, "node-b").await.then_some(()) }
    })
    .await?;
    node.shutdown(GRACE).await?;
    Ok(())
}

/// Text messages, fragments with an interleaved ping, and empty messages are all handled.
#[tokio::test]
async fn ws_listener_reassembles_fragments_answers_pings_and_takes_text() -> Result<()> {
    init_tracing();
    let node = spawn_node("b")?;
    let addr = ws_listener(&node, "/").await?;
    let (head, mut ws) = raw_ws_connect(addr, "/any/path").await?;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let _initial = next_routing(&mut ws).await?;

    let update = hello("raw", 1, &[]);
    let (p1, rest) = update.split_at(10);
    let (p2, p3) = rest.split_at(20);
    let mask = [9, 8, 7, 6];
    ws.send(&client_frame(false, 1, p1, mask)).await?;
    ws.send(&client_frame(false, 0, p2, mask)).await?;
    ws.send(&client_frame(true, 9, b"are you alive", mask))
        .await?;
    ws.send(&client_frame(true, 0, p3, mask)).await?;
    let pong = loop {
        let frame = ws.read_frame().await?;
        if frame.opcode == 0xA {
            break frame;
        }
    };
    assert_eq!(pong.payload, b"are you alive");
    // An empty message is dropped, not treated as an error.
    ws.send(&client_frame(true, 2, b"", mask)).await?;
    ws.send(&client_frame(
        true,
        2,
        &hello("raw", 2, &[("b", 1.0)]),
        mask,
    ))
    .await?;
    let n = node.clone();
    wait_for("b to list raw", WAIT, || {
        let n = n.clone();
        async move { is_connected(&n, "raw").await.then_some(()) }
    })
    .await?;
    node.shutdown(GRACE).await?;
    Ok(())
}

/// Junk, oversized and misdirected clients are turned away; linked peers keep working.
#[tokio::test]
async fn ws_hostile_clients_do_not_hurt_the_listener() -> Result<()> {
    init_tracing();
    let (a, b) = (spawn_node("a")?, spawn_node("b")?);
    let addr = ws_listener(&b, "/netc").await?;
    a.add_backend(ws_dialer(&format!("ws://{addr}/netc"))?);
    wait_linked(&a, &b).await?;

    // A client that never sends its request is dropped after the header timeout.
    let mut silent = TcpStream::connect(addr).await?;
    let silent_since = Instant::now();

    // A 10 MB text frame ends that session, not the listener.
    let (head, mut big) = raw_ws_connect(addr, "/netc").await?;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut frame = client_frame(true, 1, &[], [1, 2, 3, 4]);
    frame.truncate(1);
    frame.push(0x80 | 127);
    frame.extend_from_slice(&(10u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    big.send(&frame).await?;
    let chunk = vec![b'a'; 64 * 1024];
    let closed = timeout(WAIT, async {
        // Keep writing until the listener hangs up on us.
        for _ in 0..160 {
            if big.io.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let mut sink = Vec::new();
        let _ = big.io.read_to_end(&mut sink).await;
    })
    .await;
    assert!(closed.is_ok(), "the 10 MB frame was not refused");

    let garbage = http_status(addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await?;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let wrong_path = http_status(
        addr,
        format!("GET /other HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").as_bytes(),
    )
    .await?;
    assert!(wrong_path.starts_with("HTTP/1.1 404"), "{wrong_path}");
    let huge_header = format!(
        "GET /netc HTTP/1.1\r\nHost: {addr}\r\nX-Junk: {}\r\n\r\n",
        "j".repeat(64 * 1024)
    );
    let oversized = http_status(addr, huge_header.as_bytes()).await?;
    assert!(oversized.starts_with("HTTP/1.1 431"), "{oversized}");
    let cross_site = http_status(
        addr,
        format!("GET /netc HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").as_bytes(),
    )
    .await?;
    assert!(cross_site.starts_with("HTTP/1.1 403"), "{cross_site}");

    let mut sink = Vec::new();
    timeout(
        websocket::HEADER_TIMEOUT + WAIT,
        silent.read_to_end(&mut sink),
    )
    .await
    .context("silent client kept open")??;
    assert!(silent_since.elapsed() >= websocket::HEADER_TIMEOUT - Duration::from_millis(100));

    // The linked peer never noticed, and new clients still get in.
    assert!(is_connected(&a, "b").await && is_connected(&b, "a").await);
    assert_eq!(a.ping("b", 30).await?.from, "b");
    let (head, _ws) = raw_ws_connect(addr, "/netc").await?;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    a.shutdown(GRACE).await?;
    b.shutdown(GRACE).await?;
    Ok(())
}

// === wss ===

struct Pki {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

/// A throw-away self-signed certificate for 127.0.0.1, with Go-like ALPN on both sides
/// (`h2` and `http/1.1`, as `http.Server.ServeTLS` offers).
fn throwaway_pki() -> Result<Pki> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    server.alpn_protocols.clone_from(&alpn);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn;
    Ok(Pki {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

fn server_name() -> Result<rustls::pki_types::ServerName<'static>> {
    Ok(rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned())
}

#[tokio::test]
async fn two_nodes_link_over_wss() -> Result<()> {
    init_tracing();
    let pki = throwaway_pki()?;
    let (a, b) = (spawn_node("a")?, spawn_node("b")?);
    let listener = websocket::Listener::bind(
        "127.0.0.1:0",
        "/netc",
        LinkConfig::default(),
        Some(tokio_rustls::TlsAcceptor::from(pki.server)),
    )
    .await?;
    let addr = listener.local_addr();
    b.add_backend(listener);
    a.add_backend(websocket::Dialer::new(
        &format!("wss://{addr}/netc"),
        None,
        true,
        LinkConfig::default(),
        Some((tokio_rustls::TlsConnector::from(pki.client), server_name()?)),
    )?);
    wait_linked(&a, &b).await?;
    let mut at_b = b.listen(Some("big"), None).await?;
    let payload = Bytes::from(vec![0x5a; 60 * 1024]);
    a.listen(None, None)
        .await?
        .send_to("b", "big", payload.clone())
        .await?;
    let Some(Incoming::Datagram { payload: got, .. }) = timeout(WAIT, at_b.recv()).await? else {
        bail!("no datagram over wss");
    };
    assert!(got == payload);
    a.shutdown(GRACE).await?;
    b.shutdown(GRACE).await?;
    Ok(())
}

/// A Go wss listener offers `h2`; if our dialer offered it too, Go would pick it and the
/// upgrade would fail. Our dialer must end up on `http/1.1` (or no ALPN) even when its TLS
/// config lists `h2`.
#[tokio::test]
async fn wss_dialer_never_negotiates_h2() -> Result<()> {
    init_tracing();
    let pki = throwaway_pki()?;
    let server = TcpListener::bind("127.0.0.1:0").await?;
    let addr = server.local_addr()?;
    let mut harness = Harness::run(websocket::Dialer::new(
        &format!("wss://{addr}/"),
        None,
        false,
        LinkConfig::default(),
        Some((tokio_rustls::TlsConnector::from(pki.client), server_name()?)),
    )?);
    let (tcp, _) = timeout(WAIT, server.accept()).await??;
    let mut tls = timeout(
        WAIT,
        tokio_rustls::TlsAcceptor::from(pki.server).accept(tcp),
    )
    .await??;
    assert_ne!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (request, _) = read_http_head(&mut tls).await?;
    assert!(
        request.contains(&format!("Origin: https://{addr}\r\n")),
        "{request}"
    );
    drop(tls);
    assert!(timeout(WAIT, harness.sessions.recv()).await?.is_none());
    Ok(())
}
