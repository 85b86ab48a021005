//! Streams over the mesh: QUIC (quinn) over [`PacketConn`] datagrams, compatible with Go
//! receptor's netceptor streams (spec/wire.md §10).
//!
//! - Every QUIC packet is one data message between `(node, service)` pairs, at most
//!   [`MAX_PACKET_SIZE`] bytes (quic-go truncates anything longer). Initial packets are 1200
//!   bytes; path MTU discovery probes up to 1452.
//! - One connection per dial, from a fresh ephemeral service with its own endpoint; one
//!   endpoint per listening service. Each connection carries exactly one bidirectional stream,
//!   opened by the dialer, whose first byte is the `00` preamble.
//! - ALPN `netceptor`, idle timeout 30 s, keep-alive 15 s on the dialer, handshake timeout
//!   15 s, no datagrams, no migration.
//! - TLS: [`ServerTls::Insecure`] / [`ClientTls::Insecure`] is Go's mode A (ConnType 1): a
//!   throwaway certificate with CN [`INSECURE_COMMON_NAME`] that dialers accept by CN alone.
//!   [`ServerTls::Custom`] / [`ClientTls::Custom`] take ready rustls configurations for mode B
//!   (ConnType 2, user certificates and receptor node-ID names).
//!
//! # Known limitation: SNI from Go dialers
//! A Go dialer sends its own node ID as TLS SNI. rustls (0.23) aborts the handshake with an
//! `illegal_parameter` alert when the SNI is not a syntactically valid DNS name: a last label
//! that is all digits or a hex number (`1234`, `host.01`, `0x1f`), labels that start or end
//! with `-` or exceed 63 bytes, and bytes outside `[A-Za-z0-9_.-]` (space, `@`, `:`,
//! non-ASCII). This check runs while the ClientHello is parsed, before any configurable hook,
//! and the ClientHello cannot be rewritten (it is covered by the handshake transcript). So a
//! Rust listener cannot accept streams from Go nodes with such IDs; IDs like `node_1`,
//! `node-a` or `host.example` work. An IP-literal SNI is ignored by rustls (Go sends none for
//! such IDs anyway). Rust dialers are not affected: they send a valid name (see [`dial`]).
//!
//! # Layout
//! - `socket`: [`quinn::AsyncUdpSocket`] over a packet conn, the synthetic address table, and
//!   quinn's runtime on the node's task tracker.
//! - `insecure`: mode-A certificates and verifier.
//! - `stream`: [`Stream`] and the per-connection supervisor that closes it carefully.

mod insecure;
mod socket;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use quinn;

pub use self::insecure::InsecureTlsError;
use self::socket::{MeshRuntime, MeshSocket, REPORT_QUEUE, Remote, Report};
pub use self::stream::Stream;
use self::stream::{Watch, report_about};
use crate::node::{Advertise, Node, SendError};
use crate::packet_conn::PacketConn;
use crate::{ServiceName, id::ServiceNameError};

/// The ALPN protocol of mesh streams.
pub const ALPN: &[u8] = b"netceptor";
/// Subject CN of mode-A listener certificates.
pub const INSECURE_COMMON_NAME: &str = "netceptor-insecure-common-name";
/// Largest QUIC datagram we send or accept (quic-go's receive buffer).
pub const MAX_PACKET_SIZE: u16 = 1452;
/// Size of Initial packets and the starting MTU.
pub const INITIAL_MTU: u16 = 1200;
/// Connections with no traffic for this long are closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Dialers send a PING after this much quiet.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Most time a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a listener waits for the dialer's stream and preamble byte.
pub const ACCEPT_STREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Dial timeout of [`Node::connect`].
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a dropped stream keeps its connection open to finish delivering (the peer is
/// expected to read and send its FIN well before).
pub const MAX_LINGER: Duration = Duration::from_secs(600);
/// Application error code of a normal close.
pub const ERROR_NORMAL_CLOSE: u32 = 0;
/// Application error code for `STOP_SENDING` on a cancelled read.
pub const ERROR_CANCEL_READ: u32 = 499;
/// Application error code of listener-side failures.
pub const ERROR_LISTENER: u32 = 500;
/// The byte a dialer writes first.
const PREAMBLE: u8 = 0;
/// Connections a listener handshakes at once, or that wait for [`Listener::accept`].
const MAX_PENDING: usize = 256;
/// Accepted streams queued for [`Listener::accept`].
const ACCEPT_QUEUE: usize = 64;

/// Checks the dialing node after a mode-B handshake: called with the dialer's node ID (from
/// the mesh, not from TLS) and its certificate chain, if it sent one. An `Err` closes the
/// connection with error 500 and the given reason.
pub type ClientCheck =
    Arc<dyn Fn(&str, Option<&[CertificateDer<'static>]>) -> Result<(), String> + Send + Sync>;

/// Builds the listener's TLS configuration for one incoming connection from the given dialing
/// node (Go's per-connection config, e.g. `tls::receptor_server_config(settings, node)`).
/// An `Err` refuses the connection (error 500 with the given reason).
pub type ServerConfigFactory =
    Arc<dyn Fn(&str) -> Result<Arc<rustls::ServerConfig>, String> + Send + Sync>;

/// Listener TLS.
#[derive(Clone)]
#[non_exhaustive]
pub enum ServerTls {
    /// Mode A (ConnType 1): a generated certificate with CN [`INSECURE_COMMON_NAME`].
    Insecure,
    /// Mode B (ConnType 2): a user configuration. Its ALPN list is replaced by `netceptor`;
    /// it must allow TLS 1.3 with `TLS13_AES_128_GCM_SHA256`.
    ///
    /// Go binds the client certificate to the dialing node (the receptor otherName must name
    /// the packets' `FromNode`). rustls client verifiers cannot see the mesh address, so that
    /// check plugs in as `check_client`, which runs right after each handshake.
    Custom {
        /// The rustls configuration (client verification included).
        config: Arc<rustls::ServerConfig>,
        /// The node-ID check, if any.
        check_client: Option<ClientCheck>,
    },
    /// Mode B with a configuration made per dialing node, whose ID comes from the mesh
    /// address of its packets, so the client verifier itself can require that node's
    /// receptor name. ALPN is forced to `netceptor`.
    PerClient(ServerConfigFactory),
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Insecure => f.write_str("Insecure"),
            Self::PerClient(_) => f.write_str("PerClient"),
            Self::Custom { check_client, .. } => f
                .debug_struct("Custom")
                .field("check_client", &check_client.is_some())
                .finish_non_exhaustive(),
        }
    }
}

/// Dialer TLS.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientTls {
    /// Mode A: accept the listener's certificate by its CN alone.
    Insecure,
    /// Mode B: a user configuration; its ALPN list is replaced by `netceptor`. Build it per
    /// dial with a verifier that checks the target node's receptor name. Set `enable_sni =
    /// false` for parity with Go, which sends no SNI in this mode.
    Custom(Arc<rustls::ClientConfig>),
}

/// Why a listener could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The service could not be registered.
    #[error("listening on the service failed")]
    Listen(#[from] crate::node::ListenError),
    /// Mode-A certificate or configuration.
    #[error(transparent)]
    InsecureTls(#[from] InsecureTlsError),
    /// The TLS configuration cannot be used for QUIC.
    #[error("TLS configuration unusable for QUIC")]
    Tls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// quinn refused the endpoint.
    #[error("creating the QUIC endpoint failed")]
    Endpoint(#[source] std::io::Error),
}

/// Why [`Listener::accept`] returned no stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The listener's endpoint stopped (the node is shutting down).
    #[error("listener closed")]
    Closed,
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The target node has the node but nothing listens on the service.
    #[error("service unknown: {node}:{service}")]
    ServiceUnknown {
        /// The dialed node.
        node: String,
        /// The dialed service.
        service: String,
    },
    /// Our node has no route to the target node.
    #[error("no route to node {0}")]
    NoRoute(String),
    /// Another unreachable report (`message expired`, `blocked by firewall`).
    #[error("unreachable: {problem}")]
    Unreachable {
        /// The report's problem text.
        problem: String,
    },
    /// No connection within the dial timeout.
    #[error("dial timed out after {0:?}")]
    Timeout(Duration),
    /// The service name is longer than 8 bytes.
    #[error(transparent)]
    ServiceName(#[from] ServiceNameError),
    /// Mode-A configuration.
    #[error(transparent)]
    InsecureTls(#[from] InsecureTlsError),
    /// The TLS configuration cannot be used for QUIC.
    #[error("TLS configuration unusable for QUIC")]
    Tls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// quinn could not start the connection.
    #[error("starting the QUIC connection failed")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake or stream setup failed.
    #[error("QUIC connection failed")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing the preamble failed.
    #[error("writing the stream preamble failed")]
    Preamble(#[from] quinn::WriteError),
    /// quinn refused the endpoint.
    #[error("creating the QUIC endpoint failed")]
    Endpoint(#[source] std::io::Error),
    /// The node stopped.
    #[error("netceptor shutdown")]
    Shutdown,
}

// === configuration ===

fn endpoint_config() -> EndpointConfig {
    let mut config = EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_PACKET_SIZE)
        .expect("1452 is within quinn's allowed range");
    config
}

fn transport_config(dialer: bool) -> TransportConfig {
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_PACKET_SIZE);
    let mut transport = TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            IdleTimeout::try_from(IDLE_TIMEOUT).expect("30 s fits a QUIC varint"),
        ))
        .keep_alive_interval(dialer.then_some(KEEP_ALIVE_INTERVAL))
        // The dialer opens the only stream; the listener accepts exactly one.
        .max_concurrent_bidi_streams(VarInt::from_u32(u32::from(!dialer)))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None)
        .initial_mtu(INITIAL_MTU)
        .min_mtu(INITIAL_MTU)
        .mtu_discovery_config(Some(mtu))
        .enable_segmentation_offload(false);
    transport
}

fn quic_server_config(
    tls: rustls::ServerConfig,
) -> Result<quinn::ServerConfig, quinn::crypto::rustls::NoInitialCipherSuite> {
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server
        .transport_config(Arc::new(transport_config(false)))
        .migration(false);
    Ok(server)
}

fn with_alpn_server(config: &rustls::ServerConfig) -> rustls::ServerConfig {
    let mut config = config.clone();
    config.alpn_protocols = vec![ALPN.to_vec()];
    config
}

fn with_alpn_client(config: &rustls::ClientConfig) -> rustls::ClientConfig {
    let mut config = config.clone();
    config.alpn_protocols = vec![ALPN.to_vec()];
    config
}

/// The TLS server name a Rust dialer sends: `preferred` if it is a valid DNS name, else
/// `netceptor`. (Go sends its own node ID, whatever it is; Go listeners ignore it.)
pub fn sni_name(preferred: &str) -> String {
    match rustls::pki_types::ServerName::try_from(preferred) {
        Ok(rustls::pki_types::ServerName::DnsName(_)) => preferred.to_owned(),
        _ => "netceptor".to_owned(),
    }
}

// === listener ===

/// A stream service: accepts QUIC connections on a named service (Go's netceptor
/// `Listener`).
///
/// Dropping the listener stops accepting new connections; streams already accepted keep
/// working, and the service name is released when the last of them has closed.
#[derive(Debug)]
pub struct Listener {
    service: ServiceName,
    endpoint: Endpoint,
    streams: tokio::sync::Mutex<mpsc::Receiver<Stream>>,
    _tasks: JoinSet<()>,
}

impl Listener {
    /// Registers `service` on `node` and starts accepting. With `advertise`, the service is
    /// announced with ConnType 1 (insecure) or 2 (custom TLS) to match `tls`.
    ///
    /// # Errors
    /// The service name is taken, reserved or too long, the TLS setup failed, or the node
    /// stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped, the service is released again.
    pub async fn bind(
        node: &Node,
        service: &str,
        advertise: Option<Advertise>,
        tls: ServerTls,
    ) -> Result<Self, BindError> {
        let (rustls_config, check_client, per_client, conn_type) = match tls {
            ServerTls::Insecure => (insecure::server_config()?, None, None, 1),
            ServerTls::Custom {
                config,
                check_client,
            } => (with_alpn_server(&config), check_client, None, 2),
            // Every connection gets its own configuration; the endpoint's default one (which
            // can never complete a handshake) is not used.
            ServerTls::PerClient(factory) => {
                (insecure::refusing_server_config()?, None, Some(factory), 2)
            }
        };
        let mut server = quic_server_config(rustls_config)?;
        server.max_incoming(MAX_PENDING);
        let advertise = advertise.map(|mut ad| {
            ad.conn_type = conn_type;
            ad
        });
        let conn = node.listen(Some(service), advertise).await?;
        let service = conn.local_service();
        let (reports_tx, reports) = mpsc::channel(REPORT_QUEUE);
        let socket = Arc::new(MeshSocket::new(conn, reports_tx));
        let endpoint = Endpoint::new_with_abstract_socket(
            endpoint_config(),
            Some(server),
            Arc::clone(&socket) as Arc<dyn quinn::AsyncUdpSocket>,
            Arc::new(MeshRuntime { node: node.clone() }),
        )
        .map_err(BindError::Endpoint)?;
        let (ready, streams) = mpsc::channel(ACCEPT_QUEUE);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            node.clone(),
            endpoint.clone(),
            socket,
            Checks {
                check_client,
                per_client,
            },
            ready,
            reports,
        ));
        Ok(Self {
            service,
            endpoint,
            streams: tokio::sync::Mutex::new(streams),
            _tasks: tasks,
        })
    }

    /// The service name.
    pub fn service(&self) -> ServiceName {
        self.service
    }

    /// The next stream whose dialer completed the handshake and sent the preamble.
    ///
    /// # Errors
    /// The listener can no longer accept (the node stopped).
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is never lost when the future is dropped.
    pub async fn accept(&self) -> Result<Stream, AcceptError> {
        self.streams
            .lock()
            .await
            .recv()
            .await
            .ok_or(AcceptError::Closed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Refuse new connections; the existing ones finish on their own.
        self.endpoint.set_server_config(None);
    }
}

/// Per-connection report queues of a listener, by the dialer's (node, service).
type WatcherMap = HashMap<(Arc<str>, ServiceName), mpsc::Sender<Report>>;
type Watchers = Arc<std::sync::Mutex<WatcherMap>>;

fn lock_watchers(watchers: &Watchers) -> std::sync::MutexGuard<'_, WatcherMap> {
    watchers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hands a report about traffic to a dialer to that connection's supervisor, which closes the
/// connection if the dialer's service is gone (Go does the same).
fn route_report(watchers: &Watchers, report: Report) {
    let (node, service) = match &report {
        Report::Unreachable(u) => match ServiceName::try_from(u.to_service.as_str()) {
            Ok(service) => (u.to_node.as_str(), service),
            Err(_) => return,
        },
        Report::SendFailed {
            to_node,
            to_service,
            ..
        } => (to_node.as_str(), *to_service),
    };
    let key: (Arc<str>, ServiceName) = (Arc::from(node), service);
    if let Some(watcher) = lock_watchers(watchers).get(&key) {
        let _ = watcher.try_send(report);
    }
}

/// How a listener authenticates dialers (mode B).
#[derive(Clone)]
struct Checks {
    check_client: Option<ClientCheck>,
    per_client: Option<ServerConfigFactory>,
}

async fn accept_loop(
    node: Node,
    endpoint: Endpoint,
    socket: Arc<MeshSocket>,
    checks: Checks,
    ready: mpsc::Sender<Stream>,
    mut reports: mpsc::Receiver<Report>,
) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING));
    let watchers: Watchers = Arc::default();
    let mut handshakes = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            Some(report) = reports.recv() => {
                route_report(&watchers, report);
                continue;
            }
        };
        let Some(incoming) = incoming else {
            return; // the endpoint closed
        };
        let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
            tracing::warn!(service = %socket.service(), "too many pending stream connections, refusing one");
            incoming.refuse();
            continue;
        };
        let node = node.clone();
        let socket = Arc::clone(&socket);
        let checks = checks.clone();
        let ready = ready.clone();
        let watchers = Arc::clone(&watchers);
        // A root: nothing tells which trace (if any) the dialer's stream belongs to.
        let span = tracing::info_span!(
            parent: None,
            "mesh.stream.accept",
            node.id = %node.id(),
            peer.id = tracing::field::Empty,
            mesh.service = %socket.service(),
        );
        let accept = tracing::Instrument::instrument(
            async move { accept_one(&node, incoming, &socket, checks, &watchers).await },
            span,
        );
        handshakes.spawn(async move {
            if let Some(stream) = accept.await {
                // Waits for `accept` (bounded by the queue); a dropped listener drops it.
                let _ = ready.send(stream).await;
            }
            drop(permit);
        });
    }
}

/// Handshake, the one stream, and its preamble; failures close with error 500 (spec §10.5).
async fn accept_one(
    node: &Node,
    incoming: quinn::Incoming,
    socket: &MeshSocket,
    checks: Checks,
    watchers: &Watchers,
) -> Option<Stream> {
    let remote_addr = incoming.remote_address();
    let Some(remote) = socket.remote_of(&remote_addr) else {
        incoming.ignore();
        return None;
    };
    tracing::Span::current().record("peer.id", &*remote.node);
    let accepted = match &checks.per_client {
        None => incoming.accept(),
        Some(factory) => {
            let config = factory(&remote.node).and_then(|tls| {
                quic_server_config(with_alpn_server(&tls)).map_err(|e| e.to_string())
            });
            match config {
                Ok(config) => incoming.accept_with(Arc::new(config)),
                Err(reason) => {
                    tracing::warn!(peer.id = %remote.node, %reason, "no TLS configuration for a stream dialer");
                    incoming.refuse();
                    return None;
                }
            }
        }
    };
    let connecting = match accepted {
        Ok(connecting) => connecting,
        Err(error) => {
            tracing::debug!(peer.id = %remote.node, %error, "refused a stream connection");
            return None;
        }
    };
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(peer.id = %remote.node, %error, "stream handshake failed");
            return None;
        }
        Err(_elapsed) => {
            tracing::debug!(peer.id = %remote.node, "stream handshake timed out");
            return None;
        }
    };
    let fail = |reason: &str| {
        tracing::debug!(peer.id = %remote.node, reason, "closing stream connection");
        connection.close(VarInt::from_u32(ERROR_LISTENER), reason.as_bytes());
    };
    if let Some(check) = checks.check_client {
        let chain = connection
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok());
        if let Err(reason) = check(&remote.node, chain.as_deref().map(Vec::as_slice)) {
            fail(&reason);
            return None;
        }
    }
    let opened = tokio::time::timeout(ACCEPT_STREAM_TIMEOUT, async {
        let (send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(|e| format!("AcceptStream Error: {e}"))?;
        let byte = recv
            .read_u8()
            .await
            .map_err(|e| format!("Read Error: {e}"))?;
        if byte != PREAMBLE {
            return Err("Read Data Error".to_owned());
        }
        Ok((send, recv))
    })
    .await;
    let (send, recv) = match opened {
        Ok(Ok(halves)) => halves,
        Ok(Err(reason)) => {
            fail(&reason);
            return None;
        }
        Err(_elapsed) => {
            fail("Accept Timeout");
            return None;
        }
    };
    let (watch_tx, watch_rx) = mpsc::channel(1);
    {
        let mut watchers = lock_watchers(watchers);
        if watchers.len() >= socket::MAX_REMOTES {
            watchers.retain(|_, watcher| !watcher.is_closed());
        }
        watchers.insert((Arc::clone(&remote.node), remote.service), watch_tx);
    }
    Some(Stream::start(
        node,
        connection,
        send,
        recv,
        remote.clone(),
        socket.service(),
        Watch {
            reports: Some((watch_rx, remote)),
            endpoint: None,
        },
    ))
}

// === dialer ===

/// Opens a stream to `target_node:service` (Go's netceptor `DialContext`): a new ephemeral
/// service and QUIC endpoint, the handshake, the one bidirectional stream and its preamble.
///
/// Fails at once when our node has no route to `target_node` or when the target reports
/// `service unknown`; otherwise after `timeout` (the handshake alone is also limited to
/// [`HANDSHAKE_TIMEOUT`]). `localhost` means this node.
///
/// In mode A the TLS server name is our own node ID when it is a valid DNS name (as Go sends
/// its node ID), else `netceptor`; in mode B it is the target node ID or `netceptor`.
///
/// # Errors
/// See [`DialError`].
///
/// # Cancel safety
/// Cancel safe: dropping the future abandons the dial and frees its ephemeral service.
pub async fn dial(
    node: &Node,
    target_node: &str,
    service: &str,
    tls: ClientTls,
    timeout: Duration,
) -> Result<Stream, DialError> {
    // A child of the caller's span: a remote work unit's trace shows its dials.
    let span = tracing::info_span!(
        "mesh.stream.dial",
        node.id = %node.id(),
        peer.id = %target_node,
        mesh.service = %service,
    );
    tracing::Instrument::instrument(dial_in_span(node, target_node, service, tls, timeout), span)
        .await
}

async fn dial_in_span(
    node: &Node,
    target_node: &str,
    service: &str,
    tls: ClientTls,
    timeout: Duration,
) -> Result<Stream, DialError> {
    let target_service = ServiceName::try_from(service)?;
    let target_node = if target_node.eq_ignore_ascii_case("localhost") {
        node.id()
    } else {
        target_node
    };
    let target = Remote {
        node: Arc::from(target_node),
        service: target_service,
    };
    let (client_config, server_name) = match tls {
        ClientTls::Insecure => (insecure::client_config()?, sni_name(node.id())),
        ClientTls::Custom(config) => (with_alpn_client(&config), sni_name(target_node)),
    };
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_config)?));
    client.transport_config(Arc::new(transport_config(true)));

    let conn: PacketConn = node
        .listen(None, None)
        .await
        .map_err(|_| DialError::Shutdown)?;
    let local_service = conn.local_service();
    let (reports_tx, mut reports) = mpsc::channel(REPORT_QUEUE);
    let socket = Arc::new(MeshSocket::new(conn, reports_tx));
    let addr = socket
        .addr_of(target_node, target_service)
        .ok_or(DialError::Shutdown)?;
    let endpoint = Endpoint::new_with_abstract_socket(
        endpoint_config(),
        None,
        Arc::clone(&socket) as Arc<dyn quinn::AsyncUdpSocket>,
        Arc::new(MeshRuntime { node: node.clone() }),
    )
    .map_err(DialError::Endpoint)?;

    let setup = async {
        let connecting = endpoint.connect_with(client, addr, &server_name)?;
        let connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| DialError::Timeout(HANDSHAKE_TIMEOUT))??;
        let (mut send, recv) = connection.open_bi().await?;
        send.write_all(&[PREAMBLE]).await?;
        Ok::<_, DialError>((connection, send, recv))
    };
    let watch = async {
        while let Some(report) = reports.recv().await {
            // While dialing, any report about the target ends the dial at once.
            if report_about(&report, &target).is_some() {
                return dial_error(report, &target);
            }
        }
        DialError::Shutdown
    };
    let outcome = tokio::select! {
        biased;
        error = watch => Err(error),
        setup = tokio::time::timeout(timeout, setup) => {
            setup.unwrap_or(Err(DialError::Timeout(timeout)))
        }
    };
    let (connection, send, recv) = match outcome {
        Ok(parts) => parts,
        Err(error) => {
            // Nothing useful can be said to a peer that never answered; drop quietly.
            endpoint.close(VarInt::from_u32(ERROR_NORMAL_CLOSE), b"dial failed");
            return Err(error);
        }
    };
    Ok(Stream::start(
        node,
        connection,
        send,
        recv,
        target.clone(),
        local_service,
        Watch {
            reports: Some((reports, target)),
            endpoint: Some(endpoint),
        },
    ))
}

fn dial_error(report: Report, target: &Remote) -> DialError {
    let service_unknown = || DialError::ServiceUnknown {
        node: target.node.to_string(),
        service: target.service.to_string_lossy(),
    };
    match report {
        Report::Unreachable(u) if u.problem == crate::wire::PROBLEM_SERVICE_UNKNOWN => {
            service_unknown()
        }
        Report::Unreachable(u) => DialError::Unreachable { problem: u.problem },
        Report::SendFailed {
            error: SendError::NoRoute,
            ..
        } => DialError::NoRoute(target.node.to_string()),
        Report::SendFailed {
            error: SendError::ServiceUnknown,
            ..
        } => service_unknown(),
        Report::SendFailed { error, .. } => DialError::Unreachable {
            problem: error.to_string(),
        },
    }
}
