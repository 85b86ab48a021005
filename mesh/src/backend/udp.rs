//! The UDP backend (`udp-listener`, `udp-peer`): one netceptor message per datagram, with no
//! framing, sequencing or retransmission (spec/wire.md §1.3).
//!
//! * The dialer uses a *connected* socket, so it only hears its peer, and an ICMP
//!   port-unreachable shows up as a receive error that ends the session (then it redials).
//! * The listener demultiplexes sessions by source `IP:port`. The first datagram from an unknown
//!   source creates a session. Unlike Go, the listener forgets a source as soon as the node drops
//!   its [`Session`] (reject, idle timeout, failed handshake), so the next datagram from that
//!   address starts a fresh session at once. That is what lets a restarted peer re-handshake on
//!   the same 4-tuple instead of being rejected for ~25 s (vectors/README.md observations 5–7).
//! * Zero-length datagrams are dropped (a Go node would crash on one, §1.1). A full inbound
//!   queue drops the datagram, as the network would.
//! * Sockets keep the kernel's default path-MTU setting: DF is never forced, so datagrams larger
//!   than the path MTU (routing updates, service ads) are fragmented by IP.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    Backend, BackendError, BackendFuture, Dialed, LinkConfig, MAX_SESSIONS_PER_LISTENER,
    SESSION_QUEUE, Session, SessionInfo, SessionSink, redial_loop,
};

/// Largest datagram payload we send: the IPv4 UDP maximum, which Go's dialer enforces too.
pub const MAX_DATAGRAM: usize = 65_507;
/// Receive buffer size (a datagram never exceeds it).
pub const RECV_BUFFER: usize = 65_536;
/// Consecutive unexplained receive errors after which a dialer gives up on its socket.
const MAX_RECV_ERRORS: u32 = 16;

const KIND: &str = "udp";

/// Whether a receive error on a connected socket means the peer is gone.
fn peer_gone(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NotConnected
    )
}

// === impl Listener ===

/// A bound `udp-listener`.
#[derive(Debug)]
pub struct Listener {
    socket: UdpSocket,
    local_addr: SocketAddr,
    link: LinkConfig,
}

/// The listener's record of one source address.
struct Source {
    /// Distinguishes successive sessions of the same address.
    generation: u64,
    /// Datagrams for the node; closed once the node dropped the session.
    inbound: mpsc::Sender<Bytes>,
}

impl Listener {
    /// Binds `addr` (`host:port`; port 0 picks a free port).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: &str, link: LinkConfig) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let local_addr = socket.local_addr()?;
        Ok(Self {
            socket,
            local_addr,
            link,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn serve(
        self,
        sessions: SessionSink,
        cancel: CancellationToken,
    ) -> Result<(), BackendError> {
        let socket = Arc::new(self.socket);
        let mut sources: HashMap<SocketAddr, Source> = HashMap::new();
        // One writer per session; each returns its address and generation when it ends.
        let mut writers: JoinSet<(SocketAddr, u64)> = JoinSet::new();
        let mut generation = 0u64;
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut refused_logged = false;
        let result = 'serve: loop {
            let (len, from) = tokio::select! {
                biased;
                () = cancel.cancelled() => break 'serve Ok(()),
                () = sessions.closed() => break 'serve Err(BackendError::NodeGone),
                Some(ended) = writers.join_next(), if !writers.is_empty() => {
                    if let Ok((addr, ended)) = ended
                        && sources.get(&addr).is_some_and(|s| s.generation == ended)
                    {
                        // Dropping the inbound sender tells the node the session is over.
                        sources.remove(&addr);
                    }
                    continue;
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok(received) => received,
                    Err(error) if peer_gone(&error) => {
                        // Some platforms report an earlier send's ICMP error here; harmless.
                        tracing::trace!(addr = %self.local_addr, %error, "udp listener receive error");
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(addr = %self.local_addr, %error, "udp receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if len == 0 {
                continue;
            }
            let mut datagram = Bytes::copy_from_slice(&buf[..len]);
            if let Some(source) = sources.get(&from) {
                match source.inbound.try_send(datagram) {
                    Ok(()) => continue,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!(%from, "udp session queue full, datagram dropped");
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Closed(back)) => {
                        // The node dropped this session; the datagram starts a new one.
                        sources.remove(&from);
                        datagram = back;
                    }
                }
            }
            if sources.len() >= MAX_SESSIONS_PER_LISTENER {
                sources.retain(|_, source| !source.inbound.is_closed());
                if sources.len() >= MAX_SESSIONS_PER_LISTENER {
                    if !refused_logged {
                        tracing::warn!(addr = %self.local_addr, %from, "too many udp sessions, dropping datagrams from new sources");
                        refused_logged = true;
                    }
                    continue;
                }
            }
            refused_logged = false;
            let (out_tx, out_rx) = mpsc::channel::<Bytes>(SESSION_QUEUE);
            let (in_tx, in_rx) = mpsc::channel::<Bytes>(SESSION_QUEUE);
            // A fresh channel has room for the first datagram.
            let _ = in_tx.try_send(datagram);
            let session = Session {
                outbound: out_tx,
                inbound: in_rx,
                info: SessionInfo {
                    kind: KIND,
                    remote_addr: from.to_string(),
                    link: self.link.clone(),
                },
            };
            tracing::debug!(addr = %self.local_addr, %from, "new udp session");
            tokio::select! {
                biased;
                () = cancel.cancelled() => break 'serve Ok(()),
                sent = sessions.send(session) => {
                    if sent.is_err() {
                        break 'serve Err(BackendError::NodeGone);
                    }
                }
            }
            generation += 1;
            sources.insert(
                from,
                Source {
                    generation,
                    inbound: in_tx,
                },
            );
            writers.spawn(listener_writer(
                Arc::clone(&socket),
                from,
                generation,
                out_rx,
                cancel.child_token(),
            ));
        };
        // Wait for the writers to go, so the socket is closed when we return.
        writers.shutdown().await;
        result
    }
}

/// Sends one session's messages to its source address until the node drops the session.
async fn listener_writer(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    generation: u64,
    mut outbound: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
) -> (SocketAddr, u64) {
    loop {
        let message = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            message = outbound.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        if message.is_empty() || message.len() > MAX_DATAGRAM {
            tracing::warn!(%peer, len = message.len(), "refusing to send a message that does not fit a udp datagram");
            continue;
        }
        if let Err(error) = socket.send_to(&message, peer).await {
            // As in Go, a send error ends the session; the node sees it end.
            tracing::debug!(%peer, %error, "udp send failed, ending session");
            break;
        }
    }
    (peer, generation)
}

impl Backend for Listener {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(self.serve(sessions, cancel))
    }
}

// === impl Dialer ===

/// A `udp-peer`: "dials" `address` with a connected socket and redials with backoff while
/// `redial` is set.
#[derive(Debug, Clone)]
pub struct Dialer {
    address: String,
    redial: bool,
    link: LinkConfig,
}

impl Dialer {
    /// A dialer for `address` (`host:port`).
    pub fn new(address: impl Into<String>, redial: bool, link: LinkConfig) -> Self {
        Self {
            address: address.into(),
            redial,
            link,
        }
    }

    /// Resolves the address and connects a fresh socket to it.
    async fn connect(&self) -> io::Result<UdpSocket> {
        let peer = tokio::net::lookup_host(&self.address)
            .await?
            .next()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing")
            })?;
        let local: SocketAddr = if peer.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(peer).await?;
        Ok(socket)
    }

    async fn dial_loop(
        self,
        sessions: SessionSink,
        cancel: CancellationToken,
    ) -> Result<(), BackendError> {
        let this = &self;
        // A UDP "dial" always succeeds once the name resolves (spec §1.6).
        let dial = |token: CancellationToken| async move {
            let socket = this.connect().await.map_err(|error| error.to_string())?;
            let info = SessionInfo {
                kind: KIND,
                remote_addr: this.address.clone(),
                link: this.link.clone(),
            };
            let (session, pump) = dialer_session(socket, info, token);
            Ok::<Dialed, String>((session, Box::pin(pump)))
        };
        redial_loop(KIND, &self.address, self.redial, sessions, cancel, dial).await
    }
}

/// Wraps a connected socket in a session. The pump ends when the peer turns out to be
/// unreachable, when `cancel` fires, or when the node dropped the session and its queued
/// messages were sent.
fn dialer_session(
    socket: UdpSocket,
    info: SessionInfo,
    cancel: CancellationToken,
) -> (Session, impl Future<Output = ()> + Send + 'static) {
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(SESSION_QUEUE);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(SESSION_QUEUE);
    let remote = info.remote_addr.clone();
    let session = Session {
        outbound: out_tx,
        inbound: in_rx,
        info,
    };
    let pump = async move {
        let reader = async {
            let mut buf = vec![0u8; RECV_BUFFER];
            let mut errors = 0u32;
            loop {
                match socket.recv(&mut buf).await {
                    Ok(0) => {}
                    Ok(len) => {
                        errors = 0;
                        match in_tx.try_send(Bytes::copy_from_slice(&buf[..len])) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                tracing::debug!(%remote, "udp session queue full, datagram dropped");
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                // The node dropped the session: let the writer flush and finish.
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                    Err(error) if peer_gone(&error) => {
                        tracing::debug!(%remote, %error, "udp peer unreachable");
                        return;
                    }
                    Err(error) => {
                        // E.g. EMSGSIZE from a path-MTU report: the socket is still usable.
                        errors += 1;
                        tracing::debug!(%remote, %error, "udp receive error");
                        if errors >= MAX_RECV_ERRORS {
                            return;
                        }
                    }
                }
            }
        };
        let writer = async {
            while let Some(message) = out_rx.recv().await {
                if message.is_empty() || message.len() > MAX_DATAGRAM {
                    tracing::warn!(%remote, len = message.len(), "refusing to send a message that does not fit a udp datagram");
                    continue;
                }
                if let Err(error) = socket.send(&message).await {
                    tracing::debug!(%remote, %error, "udp send failed");
                    return;
                }
            }
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

impl Backend for Dialer {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(self.dial_loop(sessions, cancel))
    }
}
