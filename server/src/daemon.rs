//! [`Daemon`]: a node with its backends and control services, built from a [`Config`].
//!
//! Lifecycle (linkerd's shape): `Daemon::spawn` binds every listener first (so errors surface
//! before anything runs and bound addresses can be logged), then spawns the tasks;
//! `shutdown(grace)` cancels them and waits at most `grace`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use receptor_mesh::backend::{LinkConfig, tcp, udp, websocket};
use receptor_mesh::firewall::Firewall;
use receptor_mesh::node::Advertise;
use receptor_mesh::tls::server_name_for_address;
use receptor_mesh::{Node, NodeConfig};
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, DropGuard};

mod reload;

pub use reload::{ReloadError, Reloader};

use crate::config::Config;
use crate::control::{BindError, TcpControl, UnixControl};
use crate::ops::Ops;
use crate::tls::{TlsConfigs, TlsPrepareError};
use crate::work::{EngineConfig, WorkEngine};

/// The version this build reports (`status`, `--version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The mesh node could not start.
    #[error("cannot start node")]
    Node(#[from] receptor_mesh::node::SpawnError),
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A ws-peer's address or header is unusable.
    #[error("invalid ws-peer {address}")]
    WsPeer {
        /// The configured URL.
        address: String,
        /// Why.
        #[source]
        source: websocket::ConfigError,
    },
    /// A `tls-server` or `tls-client` could not be prepared (unreadable files, the startup
    /// node-ID check, a key that does not match its certificate...).
    #[error(transparent)]
    Tls(#[from] TlsPrepareError),
    /// A `tcp-peer` or `ws-peer` with TLS has an address whose host is no DNS name or IP address.
    #[error("peer {address}: cannot verify TLS for this host")]
    TlsPeerAddress {
        /// The peer address.
        address: String,
        /// Why.
        #[source]
        source: receptor_mesh::tls::InvalidServerName,
    },
    /// A control socket could not be opened.
    #[error("cannot open control service")]
    Control(#[from] BindError),
    /// The work engine could not be set up.
    #[error("cannot start the work engine")]
    Work(#[from] crate::work::BuildError),
    /// A proxy's mesh service name is taken or invalid.
    #[error("cannot register service {service:?} on the mesh: {reason}")]
    Service {
        /// The service name.
        service: String,
        /// Why.
        reason: String,
    },
    /// The control service's mesh name is taken or invalid.
    #[error("cannot register control service {service:?} on the mesh")]
    ControlService {
        /// The service name.
        service: String,
        /// Why.
        #[source]
        source: receptor_mesh::quic::BindError,
    },
}

/// Shutdown did not finish within its grace period.
#[derive(Debug, thiserror::Error)]
#[error("daemon tasks did not stop within {0:?}")]
pub struct ShutdownError(pub Duration);

/// A running receptor daemon.
#[derive(Debug)]
#[must_use = "dropping a Daemon aborts it; call Daemon::shutdown"]
pub struct Daemon {
    node: Node,
    ops: Ops,
    tls: TlsConfigs,
    work: WorkEngine,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    tcp_listeners: Vec<SocketAddr>,
    control_sockets: Vec<PathBuf>,
    metrics: crate::metrics::Registry,
    _cancel_on_drop: DropGuard,
}

fn link_config(
    cost: f64,
    node_cost: &std::collections::BTreeMap<String, f64>,
    allowed_peers: &Option<Vec<String>>,
) -> LinkConfig {
    LinkConfig {
        cost,
        node_cost: node_cost.clone(),
        allowed_peers: allowed_peers.clone(),
    }
}

/// Binds and starts every backend of `config` on `node` (at start-up, and again on `reload`).
/// Returns the addresses the `tcp-listener`s bound to.
async fn start_backends(
    node: &Node,
    config: &Config,
    tls: &TlsConfigs,
) -> Result<Vec<SocketAddr>, SpawnError> {
    let mut tcp_listeners = Vec::new();
    for listener in &config.tcp_listeners {
        let addr = join_host_port(&listener.bind_addr, listener.port);
        let link = link_config(listener.cost, &listener.node_cost, &listener.allowed_peers);
        let acceptor = match &listener.tls {
            Some(name) => Some(tls.acceptor(name)?),
            None => None,
        };
        let mut bound =
            tcp::Listener::bind(&addr, link)
                .await
                .map_err(|source| SpawnError::Listen {
                    addr: addr.clone(),
                    source,
                })?;
        if let Some(acceptor) = acceptor {
            bound = bound.with_tls(acceptor);
        }
        tracing::info!(addr = %bound.local_addr(), tls = listener.tls.as_deref(), "tcp listener bound");
        tcp_listeners.push(bound.local_addr());
        node.add_backend(bound);
    }
    for listener in &config.udp_listeners {
        let addr = join_host_port(&listener.bind_addr, listener.port);
        let link = link_config(listener.cost, &listener.node_cost, &listener.allowed_peers);
        let bound =
            udp::Listener::bind(&addr, link)
                .await
                .map_err(|source| SpawnError::Listen {
                    addr: addr.clone(),
                    source,
                })?;
        tracing::info!(addr = %bound.local_addr(), "udp listener bound");
        node.add_backend(bound);
    }
    for listener in &config.ws_listeners {
        let addr = join_host_port(&listener.bind_addr, listener.port);
        let link = link_config(listener.cost, &listener.node_cost, &listener.allowed_peers);
        let acceptor = listener
            .tls
            .as_deref()
            .map(|name| tls.acceptor(name))
            .transpose()?;
        let bound = websocket::Listener::bind(&addr, &listener.path, link, acceptor)
            .await
            .map_err(|source| SpawnError::Listen {
                addr: addr.clone(),
                source,
            })?;
        tracing::info!(addr = %bound.local_addr(), path = %listener.path, "ws listener bound");
        node.add_backend(bound);
    }
    for peer in &config.udp_peers {
        let link = link_config(peer.cost, &Default::default(), &peer.allowed_peers);
        tracing::info!(address = %peer.address, "udp peer configured");
        node.add_backend(udp::Dialer::new(peer.address.clone(), peer.redial, link));
    }
    for peer in &config.ws_peers {
        let link = link_config(peer.cost, &Default::default(), &peer.allowed_peers);
        let connector = match &peer.tls {
            Some(name) => {
                let authority = url_authority(&peer.address);
                let server_name = server_name_for_address(authority).map_err(|source| {
                    SpawnError::TlsPeerAddress {
                        address: peer.address.clone(),
                        source,
                    }
                })?;
                Some((tls.connector(name)?, server_name))
            }
            None => None,
        };
        let dialer = websocket::Dialer::new(
            &peer.address,
            peer.extra_header.clone(),
            peer.redial,
            link,
            connector,
        )
        .map_err(|source| SpawnError::WsPeer {
            address: peer.address.clone(),
            source,
        })?;
        tracing::info!(address = %peer.address, "ws peer configured");
        node.add_backend(dialer);
    }
    for peer in &config.tcp_peers {
        let link = link_config(peer.cost, &Default::default(), &peer.allowed_peers);
        let mut dialer = tcp::Dialer::new(peer.address.clone(), peer.redial, link);
        if let Some(name) = &peer.tls {
            let connector = tls.connector(name)?;
            let server_name = server_name_for_address(&peer.address).map_err(|source| {
                SpawnError::TlsPeerAddress {
                    address: peer.address.clone(),
                    source,
                }
            })?;
            dialer = dialer.with_tls(connector, server_name);
        }
        tracing::info!(address = %peer.address, tls = peer.tls.as_deref(), "tcp peer configured");
        node.add_backend(dialer);
    }
    Ok(tcp_listeners)
}

/// Mode-B TLS for a mesh stream listener: the named `tls-server`, with a configuration built
/// per dialing node so that a required client certificate must name that node (as Go checks).
pub(crate) fn mesh_server_tls(
    tls: &TlsConfigs,
    name: &str,
) -> Result<receptor_mesh::quic::ServerTls, TlsPrepareError> {
    let settings = tls.server_settings(name)?.clone();
    Ok(receptor_mesh::quic::ServerTls::PerClient(
        std::sync::Arc::new(move |client: &str| {
            receptor_mesh::tls::receptor_server_config(&settings, client)
                .map(std::sync::Arc::new)
                .map_err(|error| error.to_string())
        }),
    ))
}

/// The `host[:port]` part of a `ws://` or `wss://` URL.
fn url_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// `host:port`, bracketing IPv6 literals.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Daemon {
    /// Binds every listener in `config` and starts the node, backends and control services.
    ///
    /// # Errors
    /// See [`SpawnError`]; nothing keeps running when this fails.
    pub async fn spawn(config: &Config) -> Result<Self, SpawnError> {
        // Files and the startup node-ID check first: a bad TLS entity starts nothing.
        let tls = TlsConfigs::load(config)?;
        let mut node_config = NodeConfig::new(config.node.id.clone());
        node_config.firewall = Firewall::new(config.node.firewall_rules.clone());
        node_config.max_idle = config.node.max_idle_connection_timeout;
        // One registry for node, work engine and front-ends, read by the `metrics` endpoint.
        let metrics = crate::metrics::Registry::new();
        node_config.metrics = metrics.clone();
        // Certificates only change with a restart, so the expiry gauges are set once.
        let expiry = metrics.gauge_family(
            "receptor_tls_certificate_expiry_timestamp_seconds",
            "When the certificate of a tls-server or tls-client expires (Unix time)",
            &["kind", "name"],
        );
        for (kind, name, not_after) in tls.certificate_expiries() {
            expiry.get(&[kind, name]).set(not_after);
        }
        let node = Node::spawn(node_config)?;
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let mut tasks = JoinSet::new();

        let tcp_listeners = start_backends(&node, config, &tls).await?;

        // Work: units are recovered before any control client is served.
        let mut engine_config = EngineConfig::from_config(config)?;
        engine_config.metrics = metrics.clone();
        engine_config.dialer = Some(std::sync::Arc::new(crate::ops::MeshDial::new(
            node.clone(),
            std::sync::Arc::new(tls.clone()),
        )));
        let work = WorkEngine::new(engine_config)?;
        work.recover().await;
        work.start_retention_sweeper();
        let work_commands = Some(work.work_commands()).filter(|c| !c.is_empty());
        // One gRPC server for the `grpc-service` listeners and every classic control
        // session that switches to gRPC with the `grpc` line.
        let (grpc, grpc_incoming) = crate::grpc::handoff();
        let ops = Ops::new(node.clone(), VERSION)
            .with_metrics(&metrics)
            .with_grpc(grpc.clone())
            .with_work(work.clone())
            .with_tls(std::sync::Arc::new(tls.clone()))
            .with_reloader(std::sync::Arc::new(Reloader::new(
                node.clone(),
                tls.clone(),
                config,
            )));
        let mut control_sockets = Vec::new();
        for control in &config.control_services {
            if let Some(service) = &control.service {
                let advertise = Advertise {
                    conn_type: 1,
                    tags: [("type".to_owned(), "Control Service".to_owned())].into(),
                    work_commands: work_commands.clone(),
                };
                let server_tls = match &control.tls {
                    None => receptor_mesh::quic::ServerTls::Insecure,
                    Some(name) => mesh_server_tls(&tls, name)?,
                };
                let listener = receptor_mesh::quic::Listener::bind(
                    &node,
                    service,
                    Some(advertise),
                    server_tls,
                )
                .await
                .map_err(|source| SpawnError::ControlService {
                    service: service.clone(),
                    source,
                })?;
                tracing::info!(%service, "control service listening on the mesh");
                tasks.spawn(crate::control::serve_mesh(
                    listener,
                    ops.clone(),
                    cancel.child_token(),
                ));
            }
            if let Some(addr) = &control.tcp_listen {
                if control.tls.is_some() && control.tcp_tls.is_none() {
                    tracing::warn!(%addr, "control-service tls applies to the mesh only; tcplisten runs without TLS (set tcptls)");
                }
                let acceptor = control
                    .tcp_tls
                    .as_deref()
                    .map(|name| tls.acceptor(name))
                    .transpose()?;
                let listener = TcpControl::bind(addr, acceptor).await.map_err(|source| {
                    SpawnError::Listen {
                        addr: addr.clone(),
                        source,
                    }
                })?;
                let bound = listener.local_addr().map_err(|source| SpawnError::Listen {
                    addr: addr.clone(),
                    source,
                })?;
                tracing::info!(addr = %bound, tls = control.tcp_tls.as_deref(), "control tcp listener bound");
                tasks.spawn(listener.serve(ops.clone(), cancel.child_token()));
            }
            if let Some(path) = &control.filename {
                let socket = UnixControl::bind(path, control.permissions)?;
                tracing::info!(path = %path.display(), "control socket listening");
                control_sockets.push(path.clone());
                tasks.spawn(socket.serve(ops.clone(), cancel.child_token()));
            }
        }
        {
            let (ops, cancel) = (ops.clone(), cancel.child_token());
            tasks.spawn(async move {
                if let Err(error) = crate::grpc::serve(ops, grpc_incoming, cancel).await {
                    tracing::error!(error = %crate::error_chain(&error), "gRPC server failed");
                }
            });
        }
        for service in &config.grpc_services {
            if let Some(addr) = &service.tcp_listen {
                let acceptor = match service.tcp_tls.as_deref() {
                    None => None,
                    Some(name) => Some(
                        crate::grpc::tls_acceptor(tls.server_settings(name)?).map_err(|e| {
                            TlsPrepareError {
                                kind: "server",
                                name: name.to_owned(),
                                reason: Box::new(crate::tls::TlsLoadError::Build(e)),
                            }
                        })?,
                    ),
                };
                let listener =
                    crate::grpc::TcpGrpc::bind(addr, acceptor)
                        .await
                        .map_err(|source| SpawnError::Listen {
                            addr: addr.clone(),
                            source,
                        })?;
                let bound = listener.local_addr().map_err(|source| SpawnError::Listen {
                    addr: addr.clone(),
                    source,
                })?;
                tracing::info!(addr = %bound, tls = service.tcp_tls.as_deref(), "grpc tcp listener bound");
                tasks.spawn(listener.serve(grpc.clone(), cancel.child_token()));
            }
            if let Some(path) = &service.filename {
                let socket = crate::control::UnixSocket::bind(path, service.permissions)?;
                tracing::info!(path = %path.display(), "grpc socket listening");
                tasks.spawn(crate::grpc::serve_unix(
                    socket,
                    grpc.clone(),
                    cancel.child_token(),
                ));
            }
        }
        crate::services::start(config, &ops, &tls, &mut tasks, &cancel).await?;
        if let Some(endpoint) = &config.metrics {
            let listener = crate::metrics::MetricsListener::bind(&endpoint.listen, &endpoint.path)
                .await
                .map_err(|source| SpawnError::Listen {
                    addr: endpoint.listen.clone(),
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| SpawnError::Listen {
                addr: endpoint.listen.clone(),
                source,
            })?;
            tracing::info!(addr = %bound, path = %endpoint.path, "metrics listener bound");
            tasks.spawn(listener.serve(metrics.clone(), cancel.child_token()));
        }
        tracing::info!("Initialization complete");
        Ok(Self {
            node,
            ops,
            tls,
            work,
            cancel,
            tasks,
            tcp_listeners,
            control_sockets,
            metrics,
            _cancel_on_drop: guard,
        })
    }

    /// The mesh node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The operations layer (what control front-ends call).
    pub fn ops(&self) -> &Ops {
        &self.ops
    }

    /// The loaded `tls-server` / `tls-client` configurations.
    pub fn tls(&self) -> &TlsConfigs {
        &self.tls
    }

    /// Addresses the `tcp-listener`s bound to.
    pub fn tcp_listeners(&self) -> &[SocketAddr] {
        &self.tcp_listeners
    }

    /// The metrics registry of this daemon (what the `metrics` endpoint serves; exporters
    /// read it through [`crate::metrics::Registry::snapshot`]).
    pub fn metrics(&self) -> &crate::metrics::Registry {
        &self.metrics
    }

    /// Paths of the Unix control sockets.
    pub fn control_sockets(&self) -> &[PathBuf] {
        &self.control_sockets
    }

    /// Resolves when the node stopped on its own (e.g. a duplicate node ID was detected).
    pub async fn node_stopped(&self) {
        self.node.stopped().await;
    }

    /// Stops accepting control sessions, stops the node, and waits up to `grace` in all.
    ///
    /// # Errors
    /// Something was still running when `grace` ran out (it has been aborted).
    pub async fn shutdown(mut self, grace: Duration) -> Result<(), ShutdownError> {
        let deadline = tokio::time::Instant::now() + grace;
        self.cancel.cancel();
        let drained = tokio::time::timeout_at(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.work.shutdown(remaining).await;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let node = self.node.shutdown(remaining).await;
        match (drained, node) {
            (Ok(()), Ok(())) => Ok(()),
            _ => Err(ShutdownError(grace)),
        }
    }
}
