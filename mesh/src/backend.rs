//! Backends: the transports that carry netceptor messages between directly connected nodes.
//!
//! A backend's only job is to produce [`Session`]s: message-oriented, bidirectional channels to
//! one peer. It never sees routing; the node runs the netceptor protocol over every session
//! (libp2p's `Transport` vs `NetworkBehaviour` split). One file per transport:
//! - [`tcp`]: `tcp-listener` / `tcp-peer`, u16-LE length framing (spec/wire.md §1.2).
//! - [`udp`]: `udp-listener` / `udp-peer`, one message per datagram (spec/wire.md §1.3).
//! - [`websocket`]: `ws-listener` / `ws-peer`, one message per WebSocket message, optionally
//!   over TLS (spec/wire.md §1.4).
//! - [`memory`]: in-process links for tests and embedding, with the same framing.
//!
//! Length-framed stream transports share [`spawn_framed`], which pumps a byte stream into a
//! session.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

pub mod memory;
pub mod tcp;
pub mod udp;
pub mod websocket;

/// Messages queued towards one peer before the node starts dropping (datagram semantics).
pub const SESSION_QUEUE: usize = 256;
/// Most messages written before a flush.
const WRITE_BATCH: usize = 64;
/// Bytes buffered for writing before the codec flushes on its own.
const WRITE_BUFFER: usize = 64 * 1024;
/// Largest write buffer a session keeps while it has nothing to send. A burst grows the buffer
/// to [`WRITE_BUFFER`] and more; keeping that for the life of every link cost a mesh node
/// ~64 KiB per peer at rest (measured in `benches/scale.rs`).
const IDLE_WRITE_BUFFER: usize = 4 * 1024;
/// Most sessions one listener serves at once.
pub const MAX_SESSIONS_PER_LISTENER: usize = 1024;
/// First redial delay after a failed dial or a lost session (spec §1.6).
pub const REDIAL_INITIAL: Duration = Duration::from_secs(5);
/// Longest redial delay.
pub const REDIAL_MAX: Duration = Duration::from_secs(20);

/// Per-link settings every backend carries (spec §1.7).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Cost of links made through this backend; both ends must agree exactly.
    pub cost: f64,
    /// Listener only: per-remote-node cost overrides.
    pub node_cost: BTreeMap<String, f64>,
    /// Remote node IDs allowed to connect; `None` allows everyone.
    pub allowed_peers: Option<Vec<String>>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            cost: 1.0,
            node_cost: BTreeMap::new(),
            allowed_peers: None,
        }
    }
}

impl LinkConfig {
    /// The cost of a link to `node`.
    pub fn cost_for(&self, node: &str) -> f64 {
        self.node_cost.get(node).copied().unwrap_or(self.cost)
    }

    /// Whether `node` may connect through this backend.
    pub fn allows(&self, node: &str) -> bool {
        self.allowed_peers
            .as_ref()
            .is_none_or(|peers| peers.iter().any(|p| p == node))
    }
}

/// What the node knows about a session besides its messages.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Transport name for logs: `tcp`, `udp`, `ws`, `memory`.
    pub kind: &'static str,
    /// Peer address for logs.
    pub remote_addr: String,
    /// Link settings of the backend that made the session.
    pub link: LinkConfig,
}

/// One message-oriented channel to a directly connected peer.
///
/// Dropping the session closes the transport after the messages already queued on
/// `outbound` are written (so a reject is flushed before the close).
#[derive(Debug)]
pub struct Session {
    /// Messages to send, one netceptor message each. Never send an empty message.
    pub outbound: mpsc::Sender<Bytes>,
    /// Messages received. `None` means the transport is closed.
    pub inbound: mpsc::Receiver<Bytes>,
    /// Facts about the session.
    pub info: SessionInfo,
}

/// Where backends deliver new sessions: the node's session inbox.
pub type SessionSink = mpsc::Sender<Session>;

/// A boxed backend future.
pub type BackendFuture = Pin<Box<dyn Future<Output = Result<(), BackendError>> + Send>>;

/// A transport that produces sessions until cancelled.
pub trait Backend: Send + 'static {
    /// Runs the backend: accept or dial, hand every session to `sessions`, redial as configured.
    /// Returns when `cancel` fires (or a dialer without redial lost its only session); every
    /// task it started ends with it.
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture;
}

/// A backend that stopped for a reason other than cancellation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Accepting connections failed.
    #[error("{kind} listener on {addr} failed")]
    Accept {
        /// Transport name.
        kind: &'static str,
        /// Listening address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The node is gone, so there is nobody to hand sessions to.
    #[error("node shut down")]
    NodeGone,
}

/// Redial delays: 5 s, then ×1.5 up to 20 s; reset when a transport dial succeeds.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: REDIAL_INITIAL,
        }
    }
}

impl Backoff {
    /// The delay to wait now; grows the next one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.mul_f64(1.5).min(REDIAL_MAX);
        delay
    }

    /// A dial succeeded: start again from the first delay.
    pub fn reset(&mut self) {
        self.next = REDIAL_INITIAL;
    }
}

/// A dial that worked: the session for the node, and the pump that carries it (it ends when
/// the session does).
pub type Dialed = (Session, Pin<Box<dyn Future<Output = ()> + Send>>);

/// The loop every dialer runs: dial, hand the session to the node, wait for it to end, then,
/// while `redial` is set, dial again after the backoff delay (reset whenever a dial succeeds,
/// spec §1.6). `dial` gets a token that ends the session's pump and returns a reason on
/// failure.
pub(crate) async fn redial_loop<F, Fut>(
    kind: &'static str,
    address: &str,
    redial: bool,
    sessions: SessionSink,
    cancel: CancellationToken,
    mut dial: F,
) -> Result<(), BackendError>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<Dialed, String>>,
{
    let mut backoff = Backoff::default();
    loop {
        let dialed = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            dialed = dial(cancel.child_token()) => dialed,
        };
        match dialed {
            Ok((session, pump)) => {
                backoff.reset();
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok(()),
                    sent = sessions.send(session) => {
                        if sent.is_err() {
                            return Err(BackendError::NodeGone);
                        }
                    }
                }
                pump.await;
                tracing::info!(%kind, %address, "session ended");
            }
            Err(error) => tracing::warn!(%kind, %address, %error, "dial failed"),
        }
        if !redial || cancel.is_cancelled() {
            return Ok(());
        }
        let delay = backoff.next_delay();
        tracing::debug!(%kind, %address, ?delay, "redialing later");
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The loop every stream listener runs: accept connections until `cancel` fires or the node
/// goes away, and run `serve_connection` for each as a task the loop owns (aborted when the
/// loop ends). At most [`MAX_SESSIONS_PER_LISTENER`] connections are served at once; extra
/// ones are refused. Accept errors (aborted handshakes, fd exhaustion) back off briefly
/// instead of ending the listener.
pub(crate) async fn accept_loop<F, Fut>(
    kind: &'static str,
    listener: &tokio::net::TcpListener,
    sessions: &SessionSink,
    cancel: &CancellationToken,
    mut serve_connection: F,
) -> Result<(), BackendError>
where
    F: FnMut(tokio::net::TcpStream, std::net::SocketAddr, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS_PER_LISTENER));
    let mut connections = tokio::task::JoinSet::new();
    let addr = listener.local_addr().ok();
    let result = loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(()),
            () = sessions.closed() => break Err(BackendError::NodeGone),
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%kind, ?addr, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(permit) = std::sync::Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!(%kind, ?addr, %peer, "too many sessions, refusing connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(stream, peer, cancel.child_token());
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
    };
    connections.shutdown().await;
    result
}

/// The u16 little-endian length framing of TCP links (spec §1.2).
pub fn framing_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .little_endian()
        .max_frame_length(crate::wire::MAX_FRAMED_LEN)
        .new_codec()
}

/// Turns a byte stream into a [`Session`] with length-prefixed framing.
///
/// Returns the session (for the node) and the pump future that moves bytes; the caller owns
/// the pump (spawns it in its task set) and learns from its completion that the session ended.
/// The pump ends when the peer closes or errs, when `cancel` fires, or when the node dropped the
/// session and everything it queued has been written.
pub fn spawn_framed<S>(
    stream: S,
    info: SessionInfo,
    cancel: CancellationToken,
) -> (Session, impl Future<Output = ()> + Send + 'static)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(SESSION_QUEUE);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(SESSION_QUEUE);
    let kind = info.kind;
    let remote = info.remote_addr.clone();
    let session = Session {
        outbound: out_tx,
        inbound: in_rx,
        info,
    };
    let pump = async move {
        let (read_half, write_half) = tokio::io::split(stream);
        let mut stream = FramedRead::new(read_half, framing_codec());
        let mut sink = FramedWrite::new(write_half, framing_codec());
        // Let a batch of QUIC-sized packets build up before the codec forces a write.
        sink.set_backpressure_boundary(WRITE_BUFFER);
        let reader = async {
            loop {
                match stream.next().await {
                    Some(Ok(frame)) => {
                        // Go crashes on empty messages; we just drop them (spec §1.1).
                        if frame.is_empty() {
                            continue;
                        }
                        if in_tx.send(frame.freeze()).await.is_err() {
                            // The node dropped the session: let the writer flush and finish.
                            std::future::pending::<()>().await;
                        }
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%kind, %remote, %error, "session read failed");
                        return;
                    }
                    None => {
                        tracing::debug!(%kind, %remote, "peer closed the session");
                        return;
                    }
                }
            }
        };
        let writer = async {
            // Batch: queue everything already waiting, then flush once, so a burst of small
            // messages costs one write call instead of one per message.
            while let Some(first) = out_rx.recv().await {
                let mut next = Some(first);
                let mut batched = 0usize;
                while let Some(message) = next.take() {
                    if message.is_empty() || message.len() > crate::wire::MAX_FRAMED_LEN {
                        tracing::warn!(%kind, %remote, len = message.len(), "refusing to send a message that cannot be framed");
                    } else if let Err(error) = sink.feed(message).await {
                        tracing::debug!(%kind, %remote, %error, "session write failed");
                        return;
                    }
                    batched += 1;
                    if batched < WRITE_BATCH {
                        next = out_rx.try_recv().ok();
                    }
                }
                if let Err(error) = SinkExt::<Bytes>::flush(&mut sink).await {
                    tracing::debug!(%kind, %remote, %error, "session write failed");
                    return;
                }
                if out_rx.is_empty() && sink.write_buffer().capacity() > IDLE_WRITE_BUFFER {
                    *sink.write_buffer_mut() = BytesMut::new();
                }
            }
            let _ = SinkExt::<Bytes>::close(&mut sink).await;
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {}
            () = reader => {}
            () = writer => {}
        }
    };
    (session, pump)
}
