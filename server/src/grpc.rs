//! The gRPC control API (`proto/receptor/v1`): a thin tonic front-end over [`Ops`], next to
//! the classic line protocol ([`crate::control`]).
//!
//! One tonic server per daemon is fed connections through a bounded channel
//! ([`GrpcHandoff`]) from every place a gRPC client can arrive:
//!
//! ```text
//!  grpc-service filename (unix) ──┐
//!  grpc-service tcplisten (+TLS) ─┼─▶ GrpcHandoff ─▶ tonic server ─▶ MeshService / WorkService ─▶ Ops
//!  classic control line `grpc` ───┘   (≤ MAX_CONNECTIONS live connections)
//! ```
//!
//! Streaming handlers are plain `Stream`s polled by tonic as the client reads (no task and no
//! queue per stream), so a slow reader slows the producer down; each one ends when the
//! client goes away (tonic drops it) or the daemon shuts down (it yields `UNAVAILABLE`).
//!
//! # Layout
//! - this file: the server, the connection hand-off, listeners, error-code mapping.
//! - `mesh`: the `Mesh` service.
//! - `work`: the `Work` service.

pub(crate) mod mesh;
pub(crate) mod work;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::Status;
use tonic::transport::server::Connected;

pub use self::mesh::MeshService;
pub use self::work::WorkService;
use crate::control::UnixSocket;
use crate::idle::{Idle, IdleConnections, Slot};
use crate::ops::{Ops, OpsError};
use crate::work::{Caller, WorkError};

/// Largest gRPC message accepted or sent (the `.proto` files promise 4 MiB per message).
pub const MAX_MESSAGE: usize = 4 << 20;
/// Most gRPC connections served at once, across every listener and upgraded classic socket.
pub const MAX_CONNECTIONS: usize = 256;
/// Most concurrent RPCs (HTTP/2 streams) per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Connections handed to the server but not yet picked up by its accept loop.
const HANDOFF_QUEUE: usize = 16;
/// HTTP/2 pings on idle connections find dead peers (a client that vanished without FIN).
/// HTTP/2 flow-control windows the server grants per stream and per connection: what one
/// upload may have in flight (and so what the server may buffer for it) before the client
/// must wait. Larger than the 64 KiB default so bulk uploads are not window-bound.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// Largest HTTP/2 frame the server accepts (fewer frames per large message).
const MAX_FRAME: u32 = 256 << 10;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a TLS client has to finish its handshake (as the classic TCP listener).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once per TCP listener.
const MAX_HANDSHAKES: usize = 64;

/// What a handler knows about its connection (a request extension, through
/// [`Connected`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Unix socket (work signatures not checked) or network.
    pub caller: Caller,
}

/// The caller kind of a request; network (signatures checked) when unknown.
fn caller_of<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<ConnInfo>()
        .map_or(Caller::Network, |info| info.caller)
}

// === connections ===

/// A byte stream a gRPC connection can run on.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// One client connection on its way to (and inside) the tonic server. It holds a slot of
/// [`MAX_CONNECTIONS`] until it is closed. When every slot is taken, the connection that has
/// sent nothing for the longest time is closed to make room (see [`crate::idle`]): it then
/// reads as EOF and fails writes, and the server drops it. A real client reconnects.
pub struct GrpcConn {
    io: Box<dyn Io>,
    info: ConnInfo,
    idle: Idle,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for GrpcConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcConn")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut *self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.idle.touch();
        }
        read
    }
}

impl GrpcConn {
    /// Writes fail once the connection was closed to make room.
    fn check_open(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        Ok(())
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check_open(cx)?;
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.check_open(cx)?;
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// Bytes already read from a connection (a classic session's buffer), replayed before the
/// rest of it.
struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a connection was not handed to the gRPC server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// [`MAX_CONNECTIONS`] connections are open.
    #[error("too many gRPC connections")]
    Busy,
    /// The server has stopped (the daemon is shutting down).
    #[error("the gRPC server has stopped")]
    Stopped,
}

/// The way into the daemon's one gRPC server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GrpcHandoff {
    tx: mpsc::Sender<GrpcConn>,
    limit: Arc<Semaphore>,
    idle: IdleConnections,
}

/// Creates the hand-off and the connection stream that [`serve`] consumes.
pub fn handoff() -> (GrpcHandoff, mpsc::Receiver<GrpcConn>) {
    let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
    (
        GrpcHandoff {
            tx,
            limit: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            idle: IdleConnections::default(),
        },
        rx,
    )
}

impl GrpcHandoff {
    /// Reserves a connection slot: a free one, else the one of the connection that has been
    /// silent the longest, which is closed (its slot is taken over in [`Self::hand_over`]).
    ///
    /// # Errors
    /// [`HandoffError::Busy`] when every slot is taken.
    pub fn reserve(&self) -> Result<ConnSlot, HandoffError> {
        let slot = self.idle.reserve(&self.limit).ok_or(HandoffError::Busy)?;
        Ok(self.conn_slot(slot))
    }

    /// [`Self::reserve`], or else waits for the first slot to come free (an accept loop that
    /// waits here lets the kernel queue new clients).
    async fn reserve_or_wait(&self) -> Option<ConnSlot> {
        let slot = self.idle.reserve_or_wait(&self.limit).await?;
        Some(self.conn_slot(slot))
    }

    fn conn_slot(&self, slot: Slot) -> ConnSlot {
        let close = CancellationToken::new();
        // Closable from the moment it holds a slot, before its hand-over task first runs.
        let idle = slot.is_free().then(|| self.idle.enter(close.clone()));
        ConnSlot { slot, idle, close }
    }

    /// Hands a connection to the server in a reserved slot (once a closed connection has
    /// given it back).
    ///
    /// # Errors
    /// The server has stopped, or the slot did not come free in time.
    pub async fn hand_over<S>(
        &self,
        io: S,
        caller: Caller,
        slot: ConnSlot,
    ) -> Result<(), HandoffError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ConnSlot { slot, idle, close } = slot;
        let permit = slot.ready().await.ok_or(HandoffError::Busy)?;
        let conn = GrpcConn {
            io: Box::new(io),
            info: ConnInfo { caller },
            idle: idle.unwrap_or_else(|| self.idle.enter(close.clone())),
            closed: Box::pin(close.cancelled_owned()),
            _permit: permit,
        };
        self.tx.send(conn).await.map_err(|_| HandoffError::Stopped)
    }

    /// Hands over the rest of a classic control session after its `grpc` line: `buffered`
    /// holds what the session had read past that line.
    ///
    /// # Errors
    /// The server has stopped.
    pub(crate) async fn upgrade<S>(
        &self,
        stream: S,
        buffered: Vec<u8>,
        caller: Caller,
        slot: ConnSlot,
    ) -> Result<(), HandoffError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = Prefixed {
            prefix: buffered,
            pos: 0,
            inner: stream,
        };
        self.hand_over(io, caller, slot).await
    }
}

/// A reserved connection slot (see [`GrpcHandoff::reserve`]).
#[derive(Debug)]
pub struct ConnSlot {
    slot: Slot,
    idle: Option<Idle>,
    close: CancellationToken,
}

// === server ===

/// A span per gRPC request; a caller's W3C `traceparent` metadata makes it a child of the
/// caller's span, so the caller's trace continues here.
fn request_span(request: &tonic::codegen::http::Request<()>, node_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.request",
        node.id = %node_id,
        rpc.system = "grpc",
        rpc.method = %request.uri().path(),
    );
    if let Some(parent) = request
        .headers()
        .get(crate::telemetry::TRACEPARENT)
        .and_then(|value| value.to_str().ok())
    {
        crate::telemetry::TraceParent::parse(parent).adopt(&span);
    }
    span
}

/// Serves the `Mesh` and `Work` services on every connection from `incoming` until `cancel`
/// fires; then tells clients to go away (HTTP/2 GOAWAY), ends every streaming handler and
/// returns once the connections are closed. The daemon bounds that wait with its shutdown
/// deadline.
///
/// # Errors
/// The server failed.
pub async fn serve(
    ops: Ops,
    incoming: mpsc::Receiver<GrpcConn>,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    use receptor_proto::v1::mesh_server::MeshServer;
    use receptor_proto::v1::work_server::WorkServer;
    let node_id = ops.node().id().to_string();
    let mesh = MeshServer::new(MeshService::new(ops.clone(), cancel.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let work = WorkServer::new(WorkService::new(ops, cancel.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming)
        .map(Ok::<_, std::convert::Infallible>);
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .trace_fn(move |request| request_span(request, &node_id))
        .add_service(mesh)
        .add_service(work)
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
}

/// Accepts gRPC clients on a `grpc-service` Unix socket until `cancel` fires, then removes
/// the socket file.
pub async fn serve_unix(socket: UnixSocket, handoff: GrpcHandoff, cancel: CancellationToken) {
    // Hand-overs run as tasks: one may wait for a closed connection's slot.
    let mut handoffs = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(_) = handoffs.join_next(), if !handoffs.is_empty() => continue,
            accepted = socket.listener().accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let slot = tokio::select! {
                    () = cancel.cancelled() => break,
                    slot = handoff.reserve_or_wait() => slot,
                };
                let Some(slot) = slot else { break };
                let handoff = handoff.clone();
                handoffs.spawn(async move { handoff.hand_over(stream, Caller::Unix, slot).await });
            }
            Err(error) => {
                tracing::warn!(%error, "gRPC socket accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    handoffs.shutdown().await;
    remove_socket(socket.path());
}

fn remove_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// A `grpc-service` `tcplisten` listener, optionally with TLS (`tcptls`).
pub struct TcpGrpc {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for TcpGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpGrpc")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The `tls-server` configuration `settings` for gRPC: as the classic TCP control listener
/// (client certificates verified against `clientcas` when configured, pins checked), plus
/// ALPN `h2`, which gRPC clients require over TLS.
///
/// # Errors
/// The configuration cannot be built.
pub fn tls_acceptor(
    settings: &receptor_mesh::tls::ServerSettings,
) -> Result<tokio_rustls::TlsAcceptor, receptor_mesh::tls::TlsConfigError> {
    let mut config = receptor_mesh::tls::server_config(settings)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl TcpGrpc {
    /// Binds `addr` (`host:port`).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<Self> {
        Ok(Self {
            listener: tokio::net::TcpListener::bind(addr).await?,
            tls,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts clients until `cancel` fires. TLS handshakes run in their own tasks (at most
    /// [`MAX_HANDSHAKES`] at once, each under a deadline), so a slow client cannot hold up
    /// the others.
    pub async fn serve(self, handoff: GrpcHandoff, cancel: CancellationToken) {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let mut tasks = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "gRPC TCP accept failed");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let slot = tokio::select! {
                () = cancel.cancelled() => break,
                slot = handoff.reserve_or_wait() => slot,
            };
            let Some(slot) = slot else { break };
            let Some(acceptor) = self.tls.clone() else {
                let handoff = handoff.clone();
                tasks.spawn(async move {
                    let _ = handoff.hand_over(stream, Caller::Network, slot).await;
                });
                continue;
            };
            let Ok(busy) = Arc::clone(&handshakes).try_acquire_owned() else {
                tracing::warn!(%peer, "too many gRPC TLS handshakes in progress, refusing one");
                continue;
            };
            let handoff = handoff.clone();
            tasks.spawn(async move {
                let handshake =
                    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                drop(busy);
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = handoff.hand_over(tls, Caller::Network, slot).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%peer, reason = %receptor_mesh::tls::describe_io(&error), "gRPC TLS handshake failed");
                    }
                    Err(_) => tracing::warn!(%peer, "gRPC TLS handshake timed out"),
                }
            });
        }
        tasks.shutdown().await;
    }
}

// === streams ===

/// A response stream as handlers return it.
pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `stream`, ended by the daemon's shutdown with `UNAVAILABLE` (so a client can tell a cut
/// stream from a finished one).
pub(crate) fn until_shutdown<T, S>(stream: S, cancel: CancellationToken) -> BoxStream<T>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    enum State<S> {
        Running(Pin<Box<S>>, CancellationToken),
        Done,
    }
    Box::pin(futures_util::stream::unfold(
        State::Running(Box::pin(stream), cancel),
        |state| async move {
            let State::Running(mut stream, cancel) = state else {
                return None;
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => Some((Err(shutting_down()), State::Done)),
                item = stream.next() => item.map(|item| (item, State::Running(stream, cancel))),
            }
        },
    ))
}

fn shutting_down() -> Status {
    Status::unavailable("the node is shutting down")
}

// === errors ===

/// A request field is missing or wrong.
pub(crate) fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// The one mapping of [`OpsError`] to gRPC codes.
pub(crate) fn ops_status(error: &OpsError) -> Status {
    let message = crate::error_chain(error);
    match error {
        OpsError::Shutdown | OpsError::Dial(_) => Status::unavailable(message),
        OpsError::UnknownTls(_) => Status::not_found(message),
        OpsError::Tls { .. } => Status::failed_precondition(message),
    }
}

/// The one mapping of [`WorkError`] to gRPC codes.
pub(crate) fn work_status(error: &WorkError) -> Status {
    let message = crate::error_chain(error);
    match error {
        WorkError::UnknownUnit(_) => Status::not_found(message),
        WorkError::InvalidUnitId(_)
        | WorkError::UnknownWorkType(_)
        | WorkError::TtlForLocalWork
        | WorkError::Params(_) => Status::invalid_argument(message),
        WorkError::Signature(_) => Status::permission_denied(message),
        WorkError::Worker(_) | WorkError::Aborted(_) | WorkError::Unavailable => {
            Status::failed_precondition(message)
        }
        WorkError::Input(_) | WorkError::Io { .. } => Status::internal(message),
    }
}

/// The one mapping of a failed reload to gRPC codes: the configuration cannot be applied.
pub(crate) fn reload_status(error: &crate::daemon::ReloadError) -> Status {
    Status::failed_precondition(error.to_string())
}

/// gRPC reports a message beyond the size limit as `OUT_OF_RANGE`; the contract promises
/// `INVALID_ARGUMENT` for bad requests, so streamed requests are mapped.
pub(crate) fn request_stream_status(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange {
        invalid(status.message().to_owned())
    } else {
        status
    }
}
