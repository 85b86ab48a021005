//! The TCP backend (`tcp-listener`, `tcp-peer`): one netceptor message per u16-LE length-prefixed
//! frame (spec/wire.md §1.2).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    Backend, BackendError, BackendFuture, Backoff, LinkConfig, MAX_SESSIONS_PER_LISTENER,
    SessionInfo, SessionSink, spawn_framed,
};

/// How long a dial may take before it counts as failed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// A bound `tcp-listener`.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    local_addr: SocketAddr,
    link: LinkConfig,
}

impl Listener {
    /// Binds `addr` (`host:port`; port 0 picks a free port).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: &str, link: LinkConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
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
        let limit = Arc::new(Semaphore::new(MAX_SESSIONS_PER_LISTENER));
        let mut pumps = JoinSet::new();
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                Some(_) = pumps.join_next(), if !pumps.is_empty() => continue,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Per-connection errors (e.g. aborted handshakes, fd exhaustion) must not
                        // kill the listener; back off briefly and keep serving.
                        tracing::warn!(addr = %self.local_addr, %error, "tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                tracing::warn!(addr = %self.local_addr, %peer, "too many sessions, refusing connection");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let info = SessionInfo {
                kind: "tcp",
                remote_addr: peer.to_string(),
                link: self.link.clone(),
            };
            let (session, pump) = spawn_framed(stream, info, cancel.child_token());
            if sessions.send(session).await.is_err() {
                return Err(BackendError::NodeGone);
            }
            pumps.spawn(async move {
                pump.await;
                drop(permit);
            });
        }
    }
}

impl Backend for Listener {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(self.serve(sessions, cancel))
    }
}

/// A `tcp-peer`: dials `address` and redials with backoff while `redial` is set.
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

    async fn dial_loop(
        self,
        sessions: SessionSink,
        cancel: CancellationToken,
    ) -> Result<(), BackendError> {
        let mut backoff = Backoff::default();
        loop {
            let dialed = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                dialed = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&self.address)) => dialed,
            };
            match dialed {
                Ok(Ok(stream)) => {
                    backoff.reset();
                    let _ = stream.set_nodelay(true);
                    let info = SessionInfo {
                        kind: "tcp",
                        remote_addr: self.address.clone(),
                        link: self.link.clone(),
                    };
                    let (session, pump) = spawn_framed(stream, info, cancel.child_token());
                    if sessions.send(session).await.is_err() {
                        return Err(BackendError::NodeGone);
                    }
                    pump.await;
                    tracing::info!(address = %self.address, "tcp session ended");
                }
                Ok(Err(error)) => {
                    tracing::warn!(address = %self.address, %error, "tcp dial failed");
                }
                Err(_elapsed) => {
                    tracing::warn!(address = %self.address, "tcp dial timed out");
                }
            }
            if !self.redial || cancel.is_cancelled() {
                return Ok(());
            }
            let delay = backoff.next_delay();
            tracing::debug!(address = %self.address, ?delay, "redialing later");
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

impl Backend for Dialer {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(self.dial_loop(sessions, cancel))
    }
}
