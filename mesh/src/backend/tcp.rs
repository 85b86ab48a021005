//! The TCP backend (`tcp-listener`, `tcp-peer`): one netceptor message per u16-LE length-prefixed
//! frame (spec/wire.md §1.2), optionally inside TLS (the dialer is the TLS client).
//!
//! With TLS the dialer runs the handshake right after connecting (a Go listener gives it about
//! 1 s), within the same 15 s as the connect. A listener runs each handshake in the session's
//! own task, so a slow or failing client never holds up the others; a failed handshake is
//! logged with its reason and the listener keeps serving.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use super::{
    Backend, BackendError, BackendFuture, Dialed, LinkConfig, SessionInfo, SessionSink,
    accept_loop, redial_loop, spawn_framed,
};
use crate::tls::{SessionStream, describe_io};

/// How long a dial (TCP connect plus TLS handshake) may take before it counts as failed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a listener waits for a client to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// A bound `tcp-listener`.
pub struct Listener {
    listener: TcpListener,
    local_addr: SocketAddr,
    link: LinkConfig,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("link", &self.link)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
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
            tls: None,
        })
    }

    /// Serves TLS (`tcp-listener tls=`): every accepted connection is a TLS server session.
    #[must_use]
    pub fn with_tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
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
        let addr = self.local_addr;
        accept_loop("tcp", &self.listener, &sessions, &cancel, |stream, peer, cancel| {
            let info = SessionInfo {
                kind: "tcp",
                remote_addr: peer.to_string(),
                link: self.link.clone(),
            };
            let tls = self.tls.clone();
            let sessions = sessions.clone();
            async move {
                let Some(acceptor) = tls else {
                    // A closed session inbox means the node is gone, and the accept loop
                    // notices that itself.
                    let _ = deliver(stream, info, &sessions, cancel).await;
                    return;
                };
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                let accepted = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    accepted = handshake => accepted,
                };
                match accepted {
                    Ok(Ok(tls)) => {
                        tracing::debug!(%addr, %peer, "tls handshake complete");
                        let stream = SessionStream::new(tls, peer.to_string());
                        let _ = deliver(stream, info, &sessions, cancel).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%addr, %peer, reason = %describe_io(&error), "tls handshake with client failed");
                    }
                    Err(_elapsed) => {
                        tracing::warn!(%addr, %peer, timeout = ?HANDSHAKE_TIMEOUT, "tls handshake with client timed out");
                    }
                }
            }
        })
        .await
    }
}

/// Hands a connected stream to the node as a session and runs it until it ends.
async fn deliver<S>(
    stream: S,
    info: SessionInfo,
    sessions: &SessionSink,
    cancel: CancellationToken,
) -> Result<(), BackendError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (session, pump) = spawn_framed(stream, info, cancel);
    if sessions.send(session).await.is_err() {
        return Err(BackendError::NodeGone);
    }
    pump.await;
    Ok(())
}

impl Backend for Listener {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(self.serve(sessions, cancel))
    }
}

/// A connected dial, before it becomes a session.
enum Connected {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Why one dial attempt failed.
enum DialFailure {
    Connect(std::io::Error),
    Handshake(std::io::Error),
}

/// A `tcp-peer`: dials `address` and redials with backoff while `redial` is set.
#[derive(Clone)]
pub struct Dialer {
    address: String,
    redial: bool,
    link: LinkConfig,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("address", &self.address)
            .field("redial", &self.redial)
            .field("link", &self.link)
            .field("tls_server_name", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl Dialer {
    /// A dialer for `address` (`host:port`).
    pub fn new(address: impl Into<String>, redial: bool, link: LinkConfig) -> Self {
        Self {
            address: address.into(),
            redial,
            link,
            tls: None,
        }
    }

    /// Dials TLS (`tcp-peer tls=`): the handshake starts right after the TCP connect, and the
    /// server certificate is checked against `server_name` (normally
    /// [`crate::tls::server_name_for_address`] of the address).
    #[must_use]
    pub fn with_tls(mut self, connector: TlsConnector, server_name: ServerName<'static>) -> Self {
        self.tls = Some((connector, server_name));
        self
    }

    /// TCP connect, then the TLS handshake if configured.
    async fn connect(&self) -> Result<Connected, DialFailure> {
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(DialFailure::Connect)?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => Ok(Connected::Plain(stream)),
            Some((connector, name)) => connector
                .connect(name.clone(), stream)
                .await
                .map(|tls| Connected::Tls(Box::new(tls)))
                .map_err(DialFailure::Handshake),
        }
    }

    async fn dial_loop(
        self,
        sessions: SessionSink,
        cancel: CancellationToken,
    ) -> Result<(), BackendError> {
        let this = &self;
        let dial = |token: CancellationToken| async move {
            let connected = match tokio::time::timeout(DIAL_TIMEOUT, this.connect()).await {
                Ok(Ok(connected)) => connected,
                Ok(Err(DialFailure::Connect(error))) => return Err(error.to_string()),
                Ok(Err(DialFailure::Handshake(error))) => {
                    return Err(format!(
                        "tls handshake with server failed: {}",
                        describe_io(&error)
                    ));
                }
                Err(_elapsed) => return Err("timed out".to_owned()),
            };
            let info = SessionInfo {
                kind: "tcp",
                remote_addr: this.address.clone(),
                link: this.link.clone(),
            };
            let dialed: Dialed = match connected {
                Connected::Plain(stream) => {
                    let (session, pump) = spawn_framed(stream, info, token);
                    (session, Box::pin(pump))
                }
                Connected::Tls(tls) => {
                    let stream = SessionStream::new(*tls, this.address.clone());
                    let (session, pump) = spawn_framed(stream, info, token);
                    (session, Box::pin(pump))
                }
            };
            Ok(dialed)
        };
        redial_loop("tcp", &self.address, self.redial, sessions, cancel, dial).await
    }
}

impl Backend for Dialer {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(self.dial_loop(sessions, cancel))
    }
}
