//! The single implementation of every operation the control front-ends offer.
//!
//! The classic text protocol (`control`) and gRPC (`grpc`) are thin adapters over [`Ops`]:
//! neither contains logic the other lacks. Work operations delegate to the
//! [`WorkEngine`], which holds their logic.

use std::collections::BTreeMap;
use std::time::Duration;

use receptor_mesh::Node;
use receptor_mesh::node::{MAX_FORWARDING_HOPS, PingError, Status};

use crate::work::{
    Caller, Outcome, ResultStream, Submission, SubmitRequest, UnitStatus, UnitWatch, WorkEngine,
    WorkError, WorkEvent,
};

/// What `status` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// The mesh view.
    pub mesh: Status,
    /// Build version.
    pub version: String,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// Physical memory in MiB.
    pub memory_mib: u64,
}

/// One ping or traceroute probe result.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Who answered (or reported the problem); `None` when nobody did.
    pub from: Option<String>,
    /// Round-trip time, when there was an answer.
    pub rtt: Option<Duration>,
    /// The failure, if any (Go's texts: `timeout`, `no route to node`, ...).
    pub error: Option<String>,
}

/// A failed operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The mesh node has stopped.
    #[error("netceptor shutdown")]
    Shutdown,
    /// A `tls-client` name that is not configured.
    #[error("unknown TLS config {0}")]
    UnknownTls(String),
    /// A `tls-client` that cannot be used for this destination.
    #[error("cannot use TLS config {name}")]
    Tls {
        /// The tls-client name.
        name: String,
        /// Why.
        #[source]
        source: receptor_mesh::tls::TlsConfigError,
    },
    /// Dialing a mesh service failed.
    #[error(transparent)]
    Dial(#[from] receptor_mesh::quic::DialError),
}

/// Dials `service` on `node` over the mesh (what `connect` and remote work use).
async fn dial_service(
    local: &Node,
    tls_configs: &crate::tls::TlsConfigs,
    node: &str,
    service: &str,
    tls: &str,
) -> Result<receptor_mesh::quic::Stream, OpsError> {
    use receptor_mesh::quic::{self, ClientTls};
    let client = if tls.is_empty() {
        ClientTls::Insecure
    } else {
        let settings = tls_configs
            .client(tls)
            .ok_or_else(|| OpsError::UnknownTls(tls.to_owned()))?;
        let target = if node.eq_ignore_ascii_case("localhost") {
            local.id()
        } else {
            node
        };
        let config =
            receptor_mesh::tls::receptor_client_config(settings, target).map_err(|source| {
                OpsError::Tls {
                    name: tls.to_owned(),
                    source,
                }
            })?;
        ClientTls::Custom(std::sync::Arc::new(config))
    };
    Ok(quic::dial(local, node, service, client, quic::DEFAULT_DIAL_TIMEOUT).await?)
}

/// The mesh dialer remote work uses: the same dial path as `connect`.
#[derive(Debug, Clone)]
pub struct MeshDial {
    node: Node,
    tls: std::sync::Arc<crate::tls::TlsConfigs>,
}

impl MeshDial {
    /// Dials from `node` with the `tls-client`s in `tls`.
    pub fn new(node: Node, tls: std::sync::Arc<crate::tls::TlsConfigs>) -> Self {
        Self { node, tls }
    }
}

impl crate::work::MeshDialer for MeshDial {
    fn dial<'a>(
        &'a self,
        node: &'a str,
        service: &'a str,
        tls: &'a str,
    ) -> crate::work::DialFuture<'a> {
        Box::pin(async move {
            match dial_service(&self.node, &self.tls, node, service, tls).await {
                Ok(stream) => Ok(Box::new(stream) as Box<dyn crate::work::MeshConn>),
                Err(error) => {
                    let message = crate::work::chain(&error);
                    let tls = message.contains("cryptographic handshake failed")
                        || message.contains("CRYPTO_ERROR")
                        || matches!(error, OpsError::Tls { .. });
                    Err(crate::work::DialFailure { message, tls })
                }
            }
        })
    }

    fn has_tls_client(&self, name: &str) -> bool {
        self.tls.client(name).is_some()
    }
}

/// The operations of one daemon.
#[derive(Debug, Clone)]
pub struct Ops {
    node: Node,
    version: String,
    started: std::time::SystemTime,
    work: Option<WorkEngine>,
    tls: std::sync::Arc<crate::tls::TlsConfigs>,
    reloader: Option<std::sync::Arc<crate::daemon::Reloader>>,
    grpc: Option<crate::grpc::GrpcHandoff>,
    control_metrics: crate::metrics::ControlMetrics,
}

impl Ops {
    /// Operations over `node`, reporting `version`.
    pub fn new(node: Node, version: impl Into<String>) -> Self {
        Self {
            node,
            version: version.into(),
            started: std::time::SystemTime::now(),
            work: None,
            tls: std::sync::Arc::default(),
            reloader: None,
            grpc: None,
            control_metrics: crate::metrics::ControlMetrics::default(),
        }
    }

    /// Counts control requests in `registry` (`receptor_control_requests_total`).
    pub fn with_metrics(mut self, registry: &crate::metrics::Registry) -> Self {
        self.control_metrics = crate::metrics::ControlMetrics::new(registry);
        self
    }

    /// Counts one control request; front-ends call this once per request they parsed.
    pub fn count_request(&self, frontend: crate::metrics::Frontend, command: &'static str) {
        self.control_metrics.request(frontend, command);
    }

    /// Adds the gRPC server that classic control sessions hand over to after a `grpc` line.
    pub fn with_grpc(mut self, handoff: crate::grpc::GrpcHandoff) -> Self {
        self.grpc = Some(handoff);
        self
    }

    /// The way into the gRPC server, if this daemon runs one.
    pub fn grpc(&self) -> Option<&crate::grpc::GrpcHandoff> {
        self.grpc.as_ref()
    }

    /// Adds what `reload` needs.
    pub fn with_reloader(mut self, reloader: std::sync::Arc<crate::daemon::Reloader>) -> Self {
        self.reloader = Some(reloader);
        self
    }

    /// Re-reads the configuration file and restarts the backends (spec §3.6).
    ///
    /// # Errors
    /// Go's reload errors with their codes.
    pub async fn reload(&self) -> Result<(), crate::daemon::ReloadError> {
        match &self.reloader {
            Some(reloader) => reloader.reload().await,
            None => Err(crate::daemon::ReloadError {
                code: 4,
                message: "no configuration file was provided, reload function not set".to_owned(),
            }),
        }
    }

    /// Adds the loaded `tls-client`s that `connect` (and remote work) may name.
    pub fn with_tls(mut self, tls: std::sync::Arc<crate::tls::TlsConfigs>) -> Self {
        self.tls = tls;
        self
    }

    /// Opens a stream to `service` on `node` (`localhost` is this node). An empty `tls` uses
    /// the insecure mode; a `tls-client` name verifies that the server certificate names
    /// `node` (receptor mode).
    ///
    /// # Errors
    /// An unknown TLS name, or the dial failed.
    pub async fn connect(
        &self,
        node: &str,
        service: &str,
        tls: &str,
    ) -> Result<receptor_mesh::quic::Stream, OpsError> {
        dial_service(&self.node, &self.tls, node, service, tls).await
    }

    /// Adds the work engine behind the `work` operations.
    pub fn with_work(mut self, engine: WorkEngine) -> Self {
        self.work = Some(engine);
        self
    }

    /// The work engine, if this node has one.
    pub fn work(&self) -> Option<&WorkEngine> {
        self.work.as_ref()
    }

    fn engine(&self) -> Result<&WorkEngine, WorkError> {
        self.work.as_ref().ok_or(WorkError::Unavailable)
    }

    /// `work list`: every unit, or just `unit`.
    ///
    /// # Errors
    /// Unknown unit.
    pub async fn work_list(
        &self,
        unit: Option<&str>,
    ) -> Result<BTreeMap<String, UnitStatus>, WorkError> {
        self.engine()?.list(unit).await
    }

    /// Every unit change from now on (see [`WorkEngine::watch`]).
    ///
    /// # Errors
    /// This node runs no work engine.
    pub fn work_changes(&self) -> Result<tokio::sync::broadcast::Receiver<WorkEvent>, WorkError> {
        Ok(self.engine()?.watch())
    }

    /// `work status`.
    ///
    /// # Errors
    /// Unknown unit.
    pub async fn work_status(&self, unit: &str) -> Result<UnitStatus, WorkError> {
        self.engine()?.status(unit).await
    }

    /// `work watch` (a Rust extension; Go answers `ERROR: bad command`): the unit's status
    /// now and after every change, until it is released.
    ///
    /// # Errors
    /// Unknown unit.
    pub async fn work_watch(&self, unit: &str) -> Result<UnitWatch, WorkError> {
        self.engine()?.watch_unit(unit).await
    }

    /// `work submit`: allocates the unit; the caller streams the payload into the
    /// [`Submission`] and starts it.
    ///
    /// # Errors
    /// See [`WorkEngine::submit`].
    pub async fn work_submit(
        &self,
        request: SubmitRequest,
        caller: Caller,
    ) -> Result<Submission, WorkError> {
        self.engine()?.submit(request, caller).await
    }

    /// `work results`.
    ///
    /// # Errors
    /// Unknown unit or signature.
    pub async fn work_results(
        &self,
        unit: &str,
        start_pos: i64,
        signature: &str,
        caller: Caller,
    ) -> Result<ResultStream, WorkError> {
        self.engine()?
            .results(unit, start_pos, signature, caller)
            .await
    }

    /// `work cancel`.
    ///
    /// # Errors
    /// Unknown unit, signature, or the cancel failed.
    pub async fn work_cancel(
        &self,
        unit: &str,
        signature: &str,
        caller: Caller,
    ) -> Result<Outcome, WorkError> {
        self.engine()?.cancel(unit, signature, caller).await
    }

    /// `work release` / `work force-release`.
    ///
    /// # Errors
    /// Unknown unit, signature, or the release failed.
    pub async fn work_release(
        &self,
        unit: &str,
        force: bool,
        signature: &str,
        caller: Caller,
    ) -> Result<Outcome, WorkError> {
        self.engine()?.release(unit, force, signature, caller).await
    }

    /// The node these operations act on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The daemon's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// When these operations were set up (the daemon's start).
    pub fn started(&self) -> std::time::SystemTime {
        self.started
    }

    /// A change signal for [`Ops::status`]: see [`Node::topology_changes`]. Pair it with
    /// [`topology_diff`] to turn successive snapshots into changes.
    pub fn topology_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.node.topology_changes()
    }

    /// Pings `target` `count` times, `interval` apart (the first at once): `(sequence,
    /// probe)` with sequences from 1. The stream does nothing until polled, so a slow
    /// reader delays the probes instead of queueing replies.
    pub fn ping_series(
        &self,
        target: String,
        count: u32,
        interval: Duration,
    ) -> impl futures_util::Stream<Item = (u32, Probe)> + Send + 'static {
        let ops = self.clone();
        futures_util::stream::unfold(1u32, move |sequence| {
            let ops = ops.clone();
            let target = target.clone();
            async move {
                if sequence > count {
                    return None;
                }
                if sequence > 1 {
                    tokio::time::sleep(interval).await;
                }
                let probe = ops.ping(&target).await;
                Some(((sequence, probe), sequence + 1))
            }
        })
    }

    /// Node, mesh and host facts.
    ///
    /// # Errors
    /// The node stopped.
    pub async fn status(&self) -> Result<StatusReport, OpsError> {
        let mesh = self.node.status().await.map_err(|_| OpsError::Shutdown)?;
        Ok(StatusReport {
            mesh,
            version: self.version.clone(),
            cpu_count: std::thread::available_parallelism().map_or(1, usize::from),
            memory_mib: total_memory_mib(),
        })
    }

    /// Pings `target` once with the default hops-to-live.
    pub async fn ping(&self, target: &str) -> Probe {
        self.probe(target, MAX_FORWARDING_HOPS).await
    }

    /// Finds each hop to `target` by pinging with hops-to-live 0, 1, ... 30; stops at the
    /// first answer from the target or any error other than expiry.
    pub async fn traceroute(&self, target: &str) -> BTreeMap<u8, Probe> {
        let mut hops = BTreeMap::new();
        for ttl in 0..=MAX_FORWARDING_HOPS {
            let (probe, done) = self.trace_hop(target, ttl).await;
            hops.insert(ttl, probe);
            if done {
                break;
            }
        }
        hops
    }

    /// One traceroute step: the probe with hops-to-live `ttl`, and whether the trace ends
    /// there (the target answered, or an error other than expiry). Traces go from `ttl` 0
    /// up to [`MAX_FORWARDING_HOPS`].
    pub async fn trace_hop(&self, target: &str, ttl: u8) -> (Probe, bool) {
        let probe = self.probe_raw(target, ttl).await;
        let expired = matches!(&probe, Err(PingError::Unreachable { problem, .. }) if problem == "message expired");
        (
            to_probe(probe, expired),
            !expired || ttl >= MAX_FORWARDING_HOPS,
        )
    }

    async fn probe(&self, target: &str, ttl: u8) -> Probe {
        to_probe(self.probe_raw(target, ttl).await, false)
    }

    async fn probe_raw(
        &self,
        target: &str,
        ttl: u8,
    ) -> Result<receptor_mesh::node::PingReply, PingError> {
        self.node.ping(target, ttl).await
    }
}

/// One difference between two [`Status`] snapshots (see [`topology_diff`]).
#[derive(Debug, Clone, PartialEq)]
pub enum TopologyChange {
    /// A direct peer appeared, changed cost (`Some`) or went away (`None`).
    Connection {
        /// The peer.
        node_id: String,
        /// The new cost; `None` when removed.
        cost: Option<f64>,
    },
    /// A node's entry in the link-state graph appeared or changed (`Some`), or vanished.
    Node {
        /// The node.
        node_id: String,
        /// Its neighbours and costs now; `None` when removed.
        neighbours: Option<BTreeMap<String, f64>>,
    },
    /// The next hop to `destination` is now `next_hop` (`None`: unreachable).
    Route {
        /// The destination.
        destination: String,
        /// The next hop now.
        next_hop: Option<String>,
    },
    /// A service advertisement appeared or changed content, or went away (`removed`).
    Service {
        /// The advertisement now (or last seen, when removed).
        advertisement: receptor_mesh::wire::ServiceAdvertisement,
        /// It went away.
        removed: bool,
    },
}

/// The changes from `old` to `new`, in a stable order (connections, nodes, routes,
/// services). Advertisement times are ignored: they are re-stamped on every round of
/// advertising, which is not a change anyone watches for.
pub fn topology_diff(old: &Status, new: &Status) -> Vec<TopologyChange> {
    use std::collections::BTreeSet;
    let mut changes = Vec::new();
    let old_conns: BTreeMap<&str, f64> = old
        .connections
        .iter()
        .map(|c| (c.node_id.as_str(), c.cost))
        .collect();
    let new_conns: BTreeMap<&str, f64> = new
        .connections
        .iter()
        .map(|c| (c.node_id.as_str(), c.cost))
        .collect();
    let ids: BTreeSet<&str> = old_conns.keys().chain(new_conns.keys()).copied().collect();
    for id in ids {
        let (before, after) = (old_conns.get(id), new_conns.get(id));
        if before != after {
            changes.push(TopologyChange::Connection {
                node_id: id.to_owned(),
                cost: after.copied(),
            });
        }
    }
    let nodes: BTreeSet<&String> = old
        .known_connection_costs
        .keys()
        .chain(new.known_connection_costs.keys())
        .collect();
    for node in nodes {
        let (before, after) = (
            old.known_connection_costs.get(node),
            new.known_connection_costs.get(node),
        );
        if before != after {
            changes.push(TopologyChange::Node {
                node_id: node.clone(),
                neighbours: after.cloned(),
            });
        }
    }
    let destinations: BTreeSet<&String> = old.routes.keys().chain(new.routes.keys()).collect();
    for destination in destinations {
        let (before, after) = (old.routes.get(destination), new.routes.get(destination));
        if before != after {
            changes.push(TopologyChange::Route {
                destination: destination.clone(),
                next_hop: after.cloned(),
            });
        }
    }
    type AdKey<'a> = (&'a str, &'a str);
    let index = |status: &'_ Status| -> BTreeMap<(String, String), receptor_mesh::wire::ServiceAdvertisement> {
        status
            .advertisements
            .iter()
            .map(|ad| ((ad.node_id.clone(), ad.service.clone()), ad.clone()))
            .collect()
    };
    let (old_ads, new_ads) = (index(old), index(new));
    let keys: BTreeSet<AdKey<'_>> = old_ads
        .keys()
        .chain(new_ads.keys())
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    for (node, service) in keys {
        let key = (node.to_owned(), service.to_owned());
        match (old_ads.get(&key), new_ads.get(&key)) {
            (Some(before), None) => changes.push(TopologyChange::Service {
                advertisement: before.clone(),
                removed: true,
            }),
            (before, Some(after)) if before.is_none_or(|b| !same_ad_content(b, after)) => {
                changes.push(TopologyChange::Service {
                    advertisement: after.clone(),
                    removed: false,
                });
            }
            _ => {}
        }
    }
    changes
}

fn same_ad_content(
    a: &receptor_mesh::wire::ServiceAdvertisement,
    b: &receptor_mesh::wire::ServiceAdvertisement,
) -> bool {
    a.conn_type == b.conn_type && a.tags == b.tags && a.work_commands == b.work_commands
}

/// Converts a ping result; `expiry_is_success` makes "message expired" a normal traceroute hop.
fn to_probe(
    result: Result<receptor_mesh::node::PingReply, PingError>,
    expiry_is_success: bool,
) -> Probe {
    match result {
        Ok(reply) => Probe {
            from: Some(reply.from),
            rtt: Some(reply.rtt),
            error: None,
        },
        Err(PingError::Unreachable { problem, from, rtt }) => Probe {
            from: Some(from),
            rtt: Some(rtt),
            error: (!expiry_is_success).then_some(problem),
        },
        Err(other) => Probe {
            from: None,
            rtt: None,
            error: Some(other.to_string()),
        },
    }
}

/// Total physical memory from /proc/meminfo (0 where it cannot be read).
fn total_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024)
        })
        .unwrap_or(0)
}

pub use receptor_proto::go_duration::format as go_duration;
