//! Service proxies: ordinary TCP, UDP and Unix-socket services reached through the mesh
//! (`tcp-server`, `tcp-client`, `udp-server`, `udp-client`, `unix-socket-server`,
//! `unix-socket-client`), interoperable with a Go node's proxies at the other end.
//!
//! The `*-server` entities listen locally and carry each connection (or each UDP client's
//! datagrams) to `remotenode:remoteservice`; the `*-client` entities offer a mesh service and
//! carry what arrives to a local address. Streams use the same mesh dial as `connect`
//! ([`Ops::connect`]); a connection whose far end cannot be reached is closed and the reason
//! logged, and the next connection dials again, so a proxy recovers on its own when the
//! service comes up.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections per stream proxy, [`MAX_UDP_SESSIONS`]
//! UDP peers per datagram proxy, [`UDP_QUEUE`] datagrams queued per UDP peer (more are
//! dropped, as UDP may), and an idle UDP peer is forgotten after [`UDP_IDLE`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use receptor_mesh::node::Advertise;
use receptor_mesh::packet_conn::{Incoming, PacketConn};
use receptor_mesh::{Node, ServiceName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::SpawnError;
use crate::ops::Ops;
use crate::tls::TlsConfigs;

/// Connections one stream proxy carries at once; more are refused (closed at once).
pub const MAX_CONNECTIONS: usize = 1024;
/// UDP peers one datagram proxy tracks at once; datagrams from more are dropped.
pub const MAX_UDP_SESSIONS: usize = 4096;
/// Datagrams queued towards one UDP peer or mesh sender before new ones are dropped.
pub const UDP_QUEUE: usize = 256;
/// A UDP peer that sent and received nothing for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// Largest datagram carried (the mesh's practical maximum, spec/wire.md §3.6).
const MAX_DATAGRAM: usize = 65_535;
/// Time a local TLS client has to finish its handshake, and a TCP dial to finish.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered per direction of a spliced connection.
const SPLICE_BUFFER: usize = 64 * 1024;

/// Binds every proxy of `config` (so errors surface before anything runs), then spawns them
/// into `tasks`; they stop when `cancel` fires.
pub(crate) async fn start(
    config: &Config,
    ops: &Ops,
    tls: &TlsConfigs,
    tasks: &mut JoinSet<()>,
    cancel: &CancellationToken,
) -> Result<(), SpawnError> {
    let node = ops.node();
    for proxy in &config.tcp_servers {
        let addr = join_host_port(&proxy.bind_addr, proxy.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| SpawnError::Listen {
                addr: addr.clone(),
                source,
            })?;
        let acceptor = proxy
            .tls_server
            .as_deref()
            .map(|name| tls.acceptor(name))
            .transpose()?;
        let target = MeshTarget::new(
            ops,
            &proxy.remote_node,
            &proxy.remote_service,
            proxy.tls_client.as_deref(),
        );
        tracing::info!(addr = %listener.local_addr().map_or(addr, |a| a.to_string()), to = %target, "tcp-server proxy listening");
        tasks.spawn(serve_tcp(listener, acceptor, target, cancel.child_token()));
    }
    for proxy in &config.unix_socket_servers {
        let socket = crate::control::UnixSocket::bind(&proxy.filename, proxy.permissions)?;
        let target = MeshTarget::new(
            ops,
            &proxy.remote_node,
            &proxy.remote_service,
            proxy.tls.as_deref(),
        );
        tracing::info!(path = %proxy.filename.display(), to = %target, "unix-socket-server proxy listening");
        tasks.spawn(serve_unix(socket, target, cancel.child_token()));
    }
    for proxy in &config.tcp_clients {
        let connector = match &proxy.tls_client {
            Some(name) => {
                let server_name = receptor_mesh::tls::server_name_for_address(&proxy.address)
                    .map_err(|source| SpawnError::TlsPeerAddress {
                        address: proxy.address.clone(),
                        source,
                    })?;
                Some((tls.connector(name)?, server_name))
            }
            None => None,
        };
        let listener = bind_mesh(
            node,
            tls,
            &proxy.service,
            "TCP Proxy",
            Some(("address", &proxy.address)),
            proxy.tls_server.as_deref(),
        )
        .await?;
        let dest = LocalDest::Tcp {
            address: proxy.address.clone(),
            tls: connector,
        };
        tracing::info!(service = %proxy.service, address = %proxy.address, "tcp-client proxy listening on the mesh");
        tasks.spawn(serve_mesh(listener, dest, cancel.child_token()));
    }
    for proxy in &config.unix_socket_clients {
        let listener = bind_mesh(
            node,
            tls,
            &proxy.service,
            "Unix Proxy",
            Some(("filename", &proxy.filename.display().to_string())),
            proxy.tls.as_deref(),
        )
        .await?;
        tracing::info!(service = %proxy.service, path = %proxy.filename.display(), "unix-socket-client proxy listening on the mesh");
        let dest = LocalDest::Unix(proxy.filename.clone());
        tasks.spawn(serve_mesh(listener, dest, cancel.child_token()));
    }
    for service in &config.command_services {
        let listener = bind_mesh(
            node,
            tls,
            &service.service,
            "Command Service",
            None,
            service.tls.as_deref(),
        )
        .await?;
        tracing::info!(service = %service.service, command = %service.command, "command service listening on the mesh");
        let dest = LocalDest::Command(service.argv.clone().into());
        tasks.spawn(serve_mesh(listener, dest, cancel.child_token()));
    }
    for proxy in &config.udp_servers {
        let addr = join_host_port(&proxy.bind_addr, proxy.port);
        let socket = UdpSocket::bind(&addr)
            .await
            .map_err(|source| SpawnError::Listen {
                addr: addr.clone(),
                source,
            })?;
        tracing::info!(addr = %socket.local_addr().map_or(addr, |a| a.to_string()), node = %proxy.remote_node, service = %proxy.remote_service, "udp-server proxy listening");
        tasks.spawn(serve_udp(
            Arc::new(socket),
            node.clone(),
            proxy.remote_node.clone(),
            proxy.remote_service.clone(),
            cancel.child_token(),
        ));
    }
    for proxy in &config.udp_clients {
        let advertise = Advertise {
            conn_type: 0,
            tags: [
                ("type".to_owned(), "UDP Proxy".to_owned()),
                ("address".to_owned(), proxy.address.clone()),
            ]
            .into(),
            work_commands: None,
        };
        let conn = node
            .listen(Some(&proxy.service), Some(advertise))
            .await
            .map_err(|source| SpawnError::Service {
                service: proxy.service.clone(),
                reason: source.to_string(),
            })?;
        tracing::info!(service = %proxy.service, address = %proxy.address, "udp-client proxy listening on the mesh");
        tasks.spawn(serve_udp_mesh(
            conn,
            proxy.address.clone(),
            cancel.child_token(),
        ));
    }
    Ok(())
}

/// `host:port`, bracketing IPv6 literals.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Copies both ways until both directions have ended; each side is half-closed when the
/// other stops sending, so request/response protocols that half-close work through the proxy.
async fn splice<A, B>(mut a: A, mut b: B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, SPLICE_BUFFER, SPLICE_BUFFER).await
}

/// Where a `*-server` proxy sends its connections.
#[derive(Debug, Clone)]
struct MeshTarget {
    ops: Ops,
    node: String,
    service: String,
    tls: String,
}

impl std::fmt::Display for MeshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.node, self.service)
    }
}

impl MeshTarget {
    fn new(ops: &Ops, node: &str, service: &str, tls: Option<&str>) -> Self {
        Self {
            ops: ops.clone(),
            node: node.to_owned(),
            service: service.to_owned(),
            tls: tls.unwrap_or_default().to_owned(),
        }
    }

    /// Dials the mesh service and carries `local` to it; a failed dial closes `local`.
    async fn forward<S>(&self, local: S, peer: &str)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.ops.connect(&self.node, &self.service, &self.tls).await {
            Ok(stream) => {
                if let Err(error) = splice(local, stream).await {
                    tracing::debug!(%peer, to = %self, %error, "proxied connection ended with an error");
                }
            }
            Err(error) => {
                tracing::warn!(%peer, to = %self, error = %crate::error_chain(&error), "cannot reach the mesh service; closing the connection");
            }
        }
    }
}

/// The accept loop of every stream proxy: takes connections from `accept` until `cancel`
/// fires or `accept` gives up (`None`), and runs `handle` for each as a task of this loop (so
/// they end with it), at most [`MAX_CONNECTIONS`] at once; extra connections are dropped,
/// which closes them. A failed accept (fd exhaustion, an aborted handshake) pauses briefly
/// instead of ending the proxy.
async fn serve_each<C, A, AF, H, HF>(
    what: &'static str,
    mut accept: A,
    handle: H,
    cancel: CancellationToken,
) where
    A: FnMut() -> AF,
    AF: Future<Output = Option<std::io::Result<C>>>,
    H: Fn(C) -> HF,
    HF: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let connection = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept() => match accepted {
                Some(Ok(connection)) => connection,
                Some(Err(error)) => {
                    tracing::warn!(proxy = what, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                None => break,
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!(
                proxy = what,
                limit = MAX_CONNECTIONS,
                "too many proxied connections; refusing one"
            );
            continue;
        };
        let served = handle(connection);
        connections.spawn(async move {
            served.await;
            drop(permit);
        });
    }
    connections.shutdown().await;
}

/// `tcp-server`: each local TCP (or TLS) connection goes to the mesh service.
async fn serve_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    target: MeshTarget,
    cancel: CancellationToken,
) {
    let accept = || async { Some(listener.accept().await) };
    let handle = |(stream, peer): (TcpStream, SocketAddr)| {
        let _ = stream.set_nodelay(true);
        let target = target.clone();
        let tls = tls.clone();
        async move {
            let peer = peer.to_string();
            let Some(acceptor) = tls else {
                return target.forward(stream, &peer).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => target.forward(stream, &peer).await,
                Ok(Err(error)) => {
                    tracing::warn!(%peer, reason = %receptor_mesh::tls::describe_io(&error), "tcp-server tls handshake failed");
                }
                Err(_) => tracing::warn!(%peer, "tcp-server tls handshake timed out"),
            }
        }
    };
    serve_each("tcp-server", accept, handle, cancel).await;
}

/// `unix-socket-server`: each local Unix-socket connection goes to the mesh service.
async fn serve_unix(
    socket: crate::control::UnixSocket,
    target: MeshTarget,
    cancel: CancellationToken,
) {
    let accept = || async { Some(socket.listener().accept().await.map(|(stream, _)| stream)) };
    let handle = |stream: UnixStream| {
        let target = target.clone();
        async move { target.forward(stream, "unix socket").await }
    };
    serve_each("unix-socket-server", accept, handle, cancel).await;
    socket.remove();
}

/// Binds a stream service on the mesh for a `*-client` proxy, advertised with Go's tags.
async fn bind_mesh(
    node: &Node,
    tls: &TlsConfigs,
    service: &str,
    kind: &str,
    tag: Option<(&str, &str)>,
    tls_server: Option<&str>,
) -> Result<receptor_mesh::quic::Listener, SpawnError> {
    let advertise = Advertise {
        conn_type: 1,
        tags: std::iter::once(("type", kind))
            .chain(tag)
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
        work_commands: None,
    };
    let server_tls = match tls_server {
        None => receptor_mesh::quic::ServerTls::Insecure,
        Some(name) => crate::daemon::mesh_server_tls(tls, name)?,
    };
    receptor_mesh::quic::Listener::bind(node, service, Some(advertise), server_tls)
        .await
        .map_err(|source| SpawnError::Service {
            service: service.to_owned(),
            reason: crate::error_chain(&source),
        })
}

/// Where a `*-client` proxy sends the streams it accepts.
#[derive(Clone)]
enum LocalDest {
    Tcp {
        address: String,
        tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    },
    Unix(PathBuf),
    /// `command-service`: a new run of the command, on a pty, per stream.
    Command(Arc<[String]>),
}

impl std::fmt::Display for LocalDest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp { address, .. } => f.write_str(address),
            Self::Unix(path) => write!(f, "{}", path.display()),
            Self::Command(argv) => f.write_str(&argv.join(" ")),
        }
    }
}

impl LocalDest {
    /// Connects to the local service and carries `stream` to it; a failed connect closes
    /// `stream`.
    async fn forward(&self, stream: receptor_mesh::quic::Stream) {
        let peer = stream.remote_node().to_owned();
        let result = match self {
            Self::Tcp { address, tls } => {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(address)).await {
                    Ok(Ok(tcp)) => {
                        let _ = tcp.set_nodelay(true);
                        match tls {
                            None => Ok(splice(stream, tcp).await),
                            Some((connector, name)) => {
                                match connector.connect(name.clone(), tcp).await {
                                    Ok(tls) => Ok(splice(stream, tls).await),
                                    Err(error) => Err(format!(
                                        "tls handshake failed: {}",
                                        receptor_mesh::tls::describe_io(&error)
                                    )),
                                }
                            }
                        }
                    }
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err("connect timed out".to_owned()),
                }
            }
            Self::Unix(path) => match UnixStream::connect(path).await {
                Ok(unix) => Ok(splice(stream, unix).await),
                Err(error) => Err(error.to_string()),
            },
            Self::Command(argv) => run_on_pty(argv, stream).await.map(|r| r.map(|()| (0, 0))),
        };
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::debug!(%peer, to = %self, %error, "proxied connection ended with an error");
            }
            Err(error) => {
                tracing::warn!(%peer, to = %self, %error, "cannot reach the local service; closing the mesh stream");
            }
        }
    }
}

/// Runs `argv` on a new pty, as the leader of a new session with the pty as its controlling
/// terminal (Go's command-service does the same, so terminal programs behave), and carries
/// `stream` to and from the pty. The stream ends when the command's output does (it exited
/// and whatever shared its terminal closed it); the command is then killed if still running
/// and always reaped.
///
/// Unlike Go, the end of the caller's input does not kill the command: it reaches the
/// command as a terminal end-of-file (^D), so `echo x | receptorctl connect ...` gets the
/// command's whole answer.
///
/// # Errors
/// The outer error (the pty or the process could not be started) closes the stream at once.
async fn run_on_pty(
    argv: &[String],
    stream: receptor_mesh::quic::Stream,
) -> Result<std::io::Result<()>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // ^D: at the start of a line, end-of-file for a program reading the terminal.
    const EOF: u8 = 0x04;
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let (pty, pts) = pty_process::open().map_err(|e| format!("cannot open a pty: {e}"))?;
    // Best effort: a pty starts at 0x0, which some programs take as "no terminal width".
    let _ = pty.resize(pty_process::Size::new(24, 80));
    let mut child = pty_process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .spawn(pts)
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let (mut pty_out, mut pty_in) = pty.into_split();
    let (mut mesh_in, mut mesh_out) = tokio::io::split(stream);
    let output = async {
        let mut buf = vec![0u8; SPLICE_BUFFER];
        loop {
            let n = match pty_out.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                // Linux's answer once the last holder of the terminal closed it.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => break,
                Err(e) => return Err(e),
            };
            mesh_out.write_all(&buf[..n]).await?;
        }
        mesh_out.shutdown().await
    };
    let input = async {
        let mut buf = vec![0u8; SPLICE_BUFFER];
        let mut last = b'\n';
        loop {
            let n = mesh_in.read(&mut buf).await?;
            if n == 0 {
                // A pending partial line needs one ^D to be delivered, then one for EOF.
                let eof: &[u8] = if last == b'\n' { &[EOF] } else { &[EOF, EOF] };
                return pty_in.write_all(eof).await;
            }
            pty_in.write_all(&buf[..n]).await?;
            last = buf[n - 1];
        }
    };
    tokio::pin!(output);
    let result = tokio::select! {
        result = &mut output => result,
        result = input => match result {
            Ok(()) => output.await,
            Err(error) => Err(error),
        },
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok(result)
}

/// `tcp-client` / `unix-socket-client`: each mesh stream goes to the local service.
async fn serve_mesh(
    listener: receptor_mesh::quic::Listener,
    dest: LocalDest,
    cancel: CancellationToken,
) {
    // The mesh listener only fails for good (the node stopped): that ends the proxy.
    let accept = || async {
        match listener.accept().await {
            Ok(stream) => Some(Ok(stream)),
            Err(error) => {
                tracing::debug!(%error, "proxy mesh listener closed");
                None
            }
        }
    };
    let handle = |stream| {
        let dest = dest.clone();
        async move { dest.forward(stream).await }
    };
    serve_each("mesh proxy", accept, handle, cancel).await;
}

/// `udp-server`: each local UDP peer gets its own ephemeral mesh service, so replies from
/// the mesh service find their way back to the right peer.
async fn serve_udp(
    socket: Arc<UdpSocket>,
    node: Node,
    remote_node: String,
    remote_service: String,
    cancel: CancellationToken,
) {
    let mut peers: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut sessions = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, peer) = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(%error, "udp-server receive failed");
                    continue;
                }
            },
        };
        let payload = Bytes::copy_from_slice(&buf[..len]);
        let inbox = match peers.get(&peer) {
            Some(inbox) if !inbox.is_closed() => inbox.clone(),
            _ => {
                if !has_room(&mut peers) {
                    tracing::warn!(%peer, limit = MAX_UDP_SESSIONS, "too many udp-server peers; dropping a datagram");
                    continue;
                }
                let conn = match node.listen(None, None).await {
                    Ok(conn) => conn,
                    Err(error) => {
                        tracing::warn!(%peer, %error, "udp-server cannot open a mesh service");
                        continue;
                    }
                };
                let (inbox, datagrams) = mpsc::channel(UDP_QUEUE);
                sessions.spawn(udp_server_peer(
                    conn,
                    datagrams,
                    Arc::clone(&socket),
                    peer,
                    (remote_node.clone(), remote_service.clone()),
                    cancel.child_token(),
                ));
                peers.insert(peer, inbox.clone());
                inbox
            }
        };
        if inbox.try_send(payload).is_err() {
            tracing::debug!(%peer, "udp-server queue full; dropping a datagram");
        }
    }
    sessions.shutdown().await;
}

/// Whether a datagram proxy may track one more peer: at [`MAX_UDP_SESSIONS`], the peers whose
/// task ended (idle, or gone) are forgotten first.
fn has_room<K>(peers: &mut HashMap<K, mpsc::Sender<Bytes>>) -> bool {
    if peers.len() >= MAX_UDP_SESSIONS {
        peers.retain(|_, inbox| !inbox.is_closed());
    }
    peers.len() < MAX_UDP_SESSIONS
}

/// One UDP peer of a `udp-server`: its datagrams to the mesh service, the replies back.
async fn udp_server_peer(
    mut conn: PacketConn,
    mut datagrams: mpsc::Receiver<Bytes>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    (remote_node, remote_service): (String, String),
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(UDP_IDLE) => return,
            datagram = datagrams.recv() => {
                let Some(payload) = datagram else { return };
                if let Err(error) = conn.send_to(&remote_node, &remote_service, payload).await {
                    tracing::debug!(%peer, node = %remote_node, service = %remote_service, %error, "udp-server cannot send to the mesh");
                }
            }
            incoming = conn.recv() => match incoming {
                Some(Incoming::Datagram { payload, .. }) => {
                    if let Err(error) = socket.send_to(&payload, peer).await {
                        tracing::debug!(%peer, %error, "udp-server cannot reply to its peer");
                    }
                }
                Some(Incoming::Unreachable(report)) => {
                    tracing::debug!(%peer, problem = %report.problem, by = %report.reported_by, "udp-server datagram undeliverable");
                }
                Some(Incoming::SendFailed { .. }) => {}
                None => return,
            },
        }
    }
}

/// Replies from the local UDP service, on their way back to a mesh sender.
type Reply = (String, ServiceName, Bytes);

/// `udp-client`: each mesh sender gets its own local UDP socket towards `address`, so the
/// service's replies go back to the right sender.
async fn serve_udp_mesh(mut conn: PacketConn, address: String, cancel: CancellationToken) {
    let mut peers: HashMap<(String, ServiceName), mpsc::Sender<Bytes>> = HashMap::new();
    let mut sessions = JoinSet::new();
    let (replies_tx, mut replies) = mpsc::channel::<Reply>(UDP_QUEUE);
    loop {
        let (from_node, from_service, payload) = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            Some((node, service, payload)) = replies.recv() => {
                if let Err(error) = conn.send_to(&node, &service.to_string(), payload).await {
                    tracing::debug!(%node, %service, %error, "udp-client cannot reply over the mesh");
                }
                continue;
            }
            incoming = conn.recv() => match incoming {
                Some(Incoming::Datagram { from_node, from_service, payload }) => (from_node, from_service, payload),
                Some(_) => continue,
                None => break,
            },
        };
        let key = (from_node, from_service);
        let inbox = match peers.get(&key) {
            Some(inbox) if !inbox.is_closed() => inbox.clone(),
            _ => {
                if !has_room(&mut peers) {
                    tracing::warn!(node = %key.0, limit = MAX_UDP_SESSIONS, "too many udp-client senders; dropping a datagram");
                    continue;
                }
                let socket = match connect_udp(&address).await {
                    Ok(socket) => socket,
                    Err(error) => {
                        tracing::warn!(%address, %error, "udp-client cannot reach the local service; dropping a datagram");
                        continue;
                    }
                };
                let (inbox, datagrams) = mpsc::channel(UDP_QUEUE);
                sessions.spawn(udp_client_peer(
                    socket,
                    datagrams,
                    replies_tx.clone(),
                    key.clone(),
                    cancel.child_token(),
                ));
                peers.insert(key, inbox.clone());
                inbox
            }
        };
        if inbox.try_send(payload).is_err() {
            tracing::debug!("udp-client queue full; dropping a datagram");
        }
    }
    sessions.shutdown().await;
}

/// A UDP socket connected to `address`, bound to the matching wildcard address.
async fn connect_udp(address: &str) -> std::io::Result<UdpSocket> {
    let target = tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{address} resolves to nothing")))?;
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// One mesh sender of a `udp-client`: its datagrams to the local service, the replies back.
async fn udp_client_peer(
    socket: UdpSocket,
    mut datagrams: mpsc::Receiver<Bytes>,
    replies: mpsc::Sender<Reply>,
    (node, service): (String, ServiceName),
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(UDP_IDLE) => return,
            datagram = datagrams.recv() => {
                let Some(payload) = datagram else { return };
                if let Err(error) = socket.send(&payload).await {
                    tracing::debug!(%node, %error, "udp-client cannot send to the local service");
                }
            }
            received = socket.recv(&mut buf) => match received {
                Ok(len) => {
                    let reply = (node.clone(), service, Bytes::copy_from_slice(&buf[..len]));
                    if replies.try_send(reply).is_err() {
                        tracing::debug!(%node, "udp-client reply queue full; dropping a datagram");
                    }
                }
                // e.g. ICMP port unreachable while the local service is down: keep going.
                Err(error) => tracing::debug!(%node, %error, "udp-client receive failed"),
            },
        }
    }
}
