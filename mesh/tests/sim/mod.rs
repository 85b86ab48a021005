//! In-process mesh simulation shared by `tests/scale.rs` (small meshes, convergence asserted)
//! and `benches/scale.rs` (100 to 5,000 nodes, figures printed). Each uses a part of it.
//!
//! Every node is a real [`Node`] actor. Links are in-memory byte pipes with the TCP framing and
//! the real session pump ([`spawn_framed`], as `backend::memory` uses), wrapped so that every
//! frame written is counted by message type. Run it on a current-thread runtime with paused
//! time: virtual time then advances only when every task is idle, so protocol delays (the
//! 100 ms coalescing, the 10 s periodic update) are measured without CPU starvation on a small
//! machine stretching them, and wall time is the CPU cost of the work.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::{Result, bail};
use bytes::{Buf, Bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use receptor_mesh::backend::{
    Backend, BackendFuture, LinkConfig, Session, SessionInfo, SessionSink, spawn_framed,
};
use receptor_mesh::{Node, NodeConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Bytes buffered in each direction of a link (as `backend::memory`).
const PIPE_CAPACITY: usize = 256 * 1024;
/// How often convergence is checked, in virtual time. The routing table is recomputed at most
/// every 100 ms, so finer polling would not resolve more.
const POLL: Duration = Duration::from_millis(100);

// === traffic counting ===

/// Wire message types (spec/wire.md §0): data, routing, service advertisement, reject.
pub(crate) const KINDS: [&str; 4] = ["data", "routing", "service ad", "reject"];

/// Frames and bytes (length prefix included) written on every link of a simulation, by type.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    messages: [AtomicU64; 4],
    bytes: [AtomicU64; 4],
}

/// A copy of [`Traffic`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) messages: [u64; 4],
    pub(crate) bytes: [u64; 4],
}

impl Counts {
    pub(crate) fn routing_messages(&self) -> u64 {
        self.messages[1]
    }

    pub(crate) fn routing_bytes(&self) -> u64 {
        self.bytes[1]
    }

    pub(crate) fn since(&self, earlier: &Self) -> Self {
        let mut out = *self;
        for i in 0..4 {
            out.messages[i] -= earlier.messages[i];
            out.bytes[i] -= earlier.bytes[i];
        }
        out
    }
}

impl Traffic {
    pub(crate) fn snapshot(&self) -> Counts {
        let mut counts = Counts::default();
        for i in 0..4 {
            counts.messages[i] = self.messages[i].load(Ordering::Relaxed);
            counts.bytes[i] = self.bytes[i].load(Ordering::Relaxed);
        }
        counts
    }

    fn record(&self, kind: u8, frame_len: usize) {
        let i = usize::from(kind).min(3);
        self.messages[i].fetch_add(1, Ordering::Relaxed);
        self.bytes[i].fetch_add(2 + frame_len as u64, Ordering::Relaxed);
    }
}

/// Follows the u16-LE length framing (spec/wire.md §1.2) through arbitrarily split writes.
#[derive(Debug, Default)]
struct FrameCounter {
    header: [u8; 2],
    header_len: usize,
    /// Body bytes of the current frame not yet seen.
    remaining: usize,
    /// Body length of the current frame, until its type byte is seen.
    pending: Option<usize>,
}

impl FrameCounter {
    fn feed(&mut self, mut bytes: &[u8], traffic: &Traffic) {
        while !bytes.is_empty() {
            if self.remaining == 0 {
                self.header[self.header_len] = bytes[0];
                self.header_len += 1;
                bytes = &bytes[1..];
                if self.header_len == 2 {
                    self.header_len = 0;
                    self.remaining = usize::from(u16::from_le_bytes(self.header));
                    self.pending = Some(self.remaining);
                }
                continue;
            }
            if let Some(len) = self.pending.take() {
                traffic.record(bytes[0], len);
            }
            let take = self.remaining.min(bytes.len());
            self.remaining -= take;
            bytes = &bytes[take..];
        }
    }
}

// === links ===

/// One direction of a link: at most [`PIPE_CAPACITY`] bytes in flight, freed as soon as they
/// are read, as a kernel socket buffer frees them. (tokio's `duplex` keeps the allocation of
/// its fullest moment for the life of the pipe: at thousands of links flooded with routing
/// updates, that high-water mark was most of what "memory per node" measured.)
#[derive(Debug, Default)]
struct Pipe {
    chunks: VecDeque<Bytes>,
    len: usize,
    /// The writer shut down or either end was dropped.
    closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn close(&mut self) {
        self.closed = true;
        wake(&mut self.reader);
        wake(&mut self.writer);
    }
}

fn wake(waiting: &mut Option<Waker>) {
    if let Some(waker) = waiting.take() {
        waker.wake();
    }
}

fn lock(pipe: &Mutex<Pipe>) -> MutexGuard<'_, Pipe> {
    // A panic while holding the lock leaves consistent state (no invariant spans a panic point).
    pipe.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One end of a link: reads one pipe, writes the other, and counts the frames it writes.
struct CountingStream {
    incoming: Arc<Mutex<Pipe>>,
    outgoing: Arc<Mutex<Pipe>>,
    counter: FrameCounter,
    traffic: Arc<Traffic>,
}

fn stream_pair(traffic: &Arc<Traffic>) -> (CountingStream, CountingStream) {
    let a_to_b = Arc::new(Mutex::new(Pipe::default()));
    let b_to_a = Arc::new(Mutex::new(Pipe::default()));
    let end = |incoming: &Arc<Mutex<Pipe>>, outgoing: &Arc<Mutex<Pipe>>| CountingStream {
        incoming: Arc::clone(incoming),
        outgoing: Arc::clone(outgoing),
        counter: FrameCounter::default(),
        traffic: Arc::clone(traffic),
    };
    (end(&b_to_a, &a_to_b), end(&a_to_b, &b_to_a))
}

impl Drop for CountingStream {
    fn drop(&mut self) {
        lock(&self.incoming).close();
        lock(&self.outgoing).close();
    }
}

impl AsyncRead for CountingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut pipe = lock(&self.incoming);
        if pipe.chunks.is_empty() {
            if pipe.closed {
                return Poll::Ready(Ok(()));
            }
            pipe.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        while buf.remaining() > 0 {
            let Some(chunk) = pipe.chunks.front_mut() else {
                break;
            };
            let take = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..take]);
            chunk.advance(take);
            if chunk.is_empty() {
                pipe.chunks.pop_front();
            }
            pipe.len -= take;
        }
        wake(&mut pipe.writer);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let mut pipe = lock(&this.outgoing);
        if pipe.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if pipe.len >= PIPE_CAPACITY {
            pipe.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(PIPE_CAPACITY - pipe.len);
        pipe.chunks.push_back(Bytes::copy_from_slice(&buf[..n]));
        pipe.len += n;
        wake(&mut pipe.reader);
        drop(pipe);
        this.counter.feed(&buf[..n], &this.traffic);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.outgoing).close();
        Poll::Ready(Ok(()))
    }
}

/// One end of a counted link, handed to a node as a backend: it delivers its one session and
/// runs the session's pump until the session ends or the node stops.
struct LinkEnd {
    stream: CountingStream,
    remote: String,
}

impl LinkEnd {
    fn session(self, cancel: CancellationToken) -> (Session, impl Future<Output = ()> + Send) {
        let info = SessionInfo {
            kind: "memory",
            remote_addr: self.remote,
            link: LinkConfig::default(),
        };
        spawn_framed(self.stream, info, cancel)
    }
}

impl Backend for LinkEnd {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(async move {
            let (session, pump) = self.session(cancel.child_token());
            if sessions.send(session).await.is_ok() {
                pump.await;
            }
            Ok(())
        })
    }
}

fn link_ends(a: &str, b: &str, traffic: &Arc<Traffic>) -> (LinkEnd, LinkEnd) {
    let (a_end, b_end) = stream_pair(traffic);
    let end = |stream, remote: &str| LinkEnd {
        stream,
        remote: remote.to_owned(),
    };
    (end(a_end, b), end(b_end, a))
}

/// Links `a` and `b` (cost 1) through a counted in-memory pipe.
pub(crate) fn link(a: &Node, b: &Node, traffic: &Arc<Traffic>) {
    let (a_end, b_end) = link_ends(a.id(), b.id(), traffic);
    a.add_backend(a_end);
    b.add_backend(b_end);
}

/// Links `node` to a scripted peer called `name`: returns the peer's end of the link as a raw
/// session (its pump runs on a task until `cancel` fires or either side closes).
pub(crate) fn link_raw(
    node: &Node,
    name: &str,
    traffic: &Arc<Traffic>,
    cancel: &CancellationToken,
) -> Session {
    let (node_end, raw_end) = link_ends(node.id(), name, traffic);
    node.add_backend(node_end);
    let (session, pump) = raw_end.session(cancel.child_token());
    tokio::spawn(pump);
    session
}

// === shapes ===

/// A mesh topology: node names and undirected links between their indices.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) kind: &'static str,
    pub(crate) names: Vec<String>,
    pub(crate) links: Vec<(usize, usize)>,
}

/// Shape names accepted by [`Shape::build`].
pub(crate) const SHAPES: [&str; 4] = ["line", "star", "random", "awx"];

impl Shape {
    /// Builds shape `kind` of `n` nodes; `random` uses `seed`.
    pub(crate) fn build(kind: &str, n: usize, seed: u64) -> Result<Self> {
        if n < 2 {
            bail!("a mesh needs at least 2 nodes");
        }
        match kind {
            "line" => Ok(Self::line(n)),
            "star" => Ok(Self::star(n)),
            "random" => Ok(Self::random(n, seed)),
            "awx" => Ok(Self::awx(n)),
            other => bail!("unknown shape {other} (one of {SHAPES:?})"),
        }
    }

    fn numbered(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node{i}")).collect()
    }

    /// node0 - node1 - ... - node(n-1).
    pub(crate) fn line(n: usize) -> Self {
        Self {
            kind: "line",
            names: Self::numbered(n),
            links: (1..n).map(|i| (i - 1, i)).collect(),
        }
    }

    /// node0 in the middle, every other node linked to it only.
    pub(crate) fn star(n: usize) -> Self {
        Self {
            kind: "star",
            names: Self::numbered(n),
            links: (1..n).map(|i| (0, i)).collect(),
        }
    }

    /// A connected random graph with an average degree of 3.5: a random spanning tree (each
    /// node links to a random earlier one), then random extra links up to 1.75 n in all.
    pub(crate) fn random(n: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut links = BTreeSet::new();
        for i in 1..n {
            links.insert((rng.random_range(0..i), i));
        }
        let target = (n * 7 / 4).min(n * (n - 1) / 2);
        while links.len() < target {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            if a != b {
                links.insert((a.min(b), a.max(b)));
            }
        }
        Self {
            kind: "random",
            names: Self::numbered(n),
            links: links.into_iter().collect(),
        }
    }

    /// Hub and spoke as an AWX deployment: 3 control nodes linked to each other, one hop node
    /// per 100 nodes (at least one) linked to every control node, and execution nodes spread
    /// round-robin over the hop nodes, each with one link.
    pub(crate) fn awx(n: usize) -> Self {
        let controls = 3.min(n - 1);
        let hops = (n / 100).max(1).min(n - controls);
        let mut names = Vec::with_capacity(n);
        names.extend((0..controls).map(|i| format!("control{i}")));
        names.extend((0..hops).map(|i| format!("hop{i}")));
        names.extend((controls + hops..n).map(|i| format!("exec{}", i - controls - hops)));
        let mut links = Vec::new();
        for a in 0..controls {
            for b in a + 1..controls {
                links.push((a, b));
            }
        }
        for h in controls..controls + hops {
            for c in 0..controls {
                links.push((c, h));
            }
        }
        for (k, e) in (controls + hops..n).enumerate() {
            links.push((controls + k % hops, e));
        }
        Self {
            kind: "awx",
            names,
            links,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

// === running a mesh ===

/// A running simulated mesh.
#[derive(Debug)]
pub(crate) struct Mesh {
    pub(crate) nodes: Vec<Node>,
    pub(crate) traffic: Arc<Traffic>,
}

impl Mesh {
    /// Starts one node per name of `shape` and links them all at once.
    pub(crate) fn start(shape: &Shape) -> Result<Self> {
        let traffic = Arc::new(Traffic::default());
        let nodes = shape
            .names
            .iter()
            .map(|name| Node::spawn(NodeConfig::new(name.as_str())))
            .collect::<Result<Vec<_>, _>>()?;
        for &(a, b) in &shape.links {
            link(&nodes[a], &nodes[b], &traffic);
        }
        Ok(Self { nodes, traffic })
    }

    /// Waits until every node has a route to every other node, polling each node's status
    /// every [`POLL`] of virtual time; fails after `limit` of virtual time. Routes only grow
    /// in a mesh whose links stay up, so each node is checked until it has converged and then
    /// left alone, which keeps the polling (a status is a copy of the whole link-state
    /// database) from dominating large runs.
    pub(crate) async fn converge(&self, limit: Duration) -> Result<Duration> {
        let started = tokio::time::Instant::now();
        let expected = self.nodes.len() - 1;
        let mut pending: Vec<&Node> = self.nodes.iter().collect();
        loop {
            let mut still = Vec::new();
            for node in pending {
                if node.status().await?.routes.len() < expected {
                    still.push(node);
                }
            }
            if still.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                let ids: Vec<&str> = still.iter().take(5).map(|n| n.id()).collect();
                bail!(
                    "{} of {} nodes had not converged after {limit:?} (e.g. {ids:?})",
                    still.len(),
                    self.nodes.len()
                );
            }
            pending = still;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no message crossed any link for `window` of virtual time; returns the
    /// counts at that point. Fails after `limit`.
    pub(crate) async fn quiet(&self, window: Duration, limit: Duration) -> Result<Counts> {
        let started = tokio::time::Instant::now();
        let mut last = self.traffic.snapshot();
        loop {
            tokio::time::sleep(window).await;
            let now = self.traffic.snapshot();
            if now == last {
                return Ok(now);
            }
            if started.elapsed() > limit {
                bail!("links still busy after {limit:?}");
            }
            last = now;
        }
    }

    /// Stops every node.
    pub(crate) async fn shutdown(self) {
        for node in &self.nodes {
            let _ = node.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// Counts nodes per number of links, for reports.
pub(crate) fn degree_summary(shape: &Shape) -> (usize, usize) {
    let mut degree: HashMap<usize, usize> = HashMap::new();
    for &(a, b) in &shape.links {
        *degree.entry(a).or_default() += 1;
        *degree.entry(b).or_default() += 1;
    }
    let max = degree.values().copied().max().unwrap_or(0);
    (shape.links.len(), max)
}

/// `VmRSS` and `RssAnon` of this process, in kB.
pub(crate) fn rss_kb() -> Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/self/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("bad {name} line"))?
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}
