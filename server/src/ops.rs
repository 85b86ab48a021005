//! The single implementation of every operation the control front-ends offer.
//!
//! The classic text protocol (`control`) and, later, gRPC are thin adapters over [`Ops`]:
//! neither contains logic the other lacks. Work operations delegate to the
//! [`WorkEngine`], which holds their logic.

use std::collections::BTreeMap;
use std::time::Duration;

use receptor_mesh::Node;
use receptor_mesh::node::{MAX_FORWARDING_HOPS, PingError, Status};

use crate::work::{
    Caller, Outcome, ResultStream, Submission, SubmitRequest, UnitStatus, UnitWatch, WorkEngine,
    WorkError,
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
    work: Option<WorkEngine>,
    tls: std::sync::Arc<crate::tls::TlsConfigs>,
    reloader: Option<std::sync::Arc<crate::daemon::Reloader>>,
}

impl Ops {
    /// Operations over `node`, reporting `version`.
    pub fn new(node: Node, version: impl Into<String>) -> Self {
        Self {
            node,
            version: version.into(),
            work: None,
            tls: std::sync::Arc::default(),
            reloader: None,
        }
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
            let probe = self.probe_raw(target, ttl).await;
            let expired = matches!(&probe, Err(PingError::Unreachable { problem, .. }) if problem == "message expired");
            let done = !expired;
            hops.insert(ttl, to_probe(probe, expired));
            if done {
                break;
            }
        }
        hops
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

/// Formats a duration like Go's `time.Duration.String()`: `850ns`, `329.589µs`, `1.16216ms`,
/// `2.5s`, `1m30s`, `1h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    fn frac(value: u128, unit: u128, suffix: &str) -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return format!("{whole}{suffix}");
        }
        let digits = unit.ilog10() as usize;
        let text = format!("{rest:0digits$}");
        format!("{whole}.{}{suffix}", text.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return frac(nanos, 1_000, "µs");
    }
    if nanos < 1_000_000_000 {
        return frac(nanos, 1_000_000, "ms");
    }
    let secs_total = nanos / 1_000_000_000;
    let sub = nanos % 1_000_000_000;
    let hours = secs_total / 3600;
    let minutes = (secs_total % 3600) / 60;
    let secs = frac((secs_total % 60) * 1_000_000_000 + sub, 1_000_000_000, "s");
    match (hours, minutes) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_go() {
        let cases = [
            (Duration::from_nanos(0), "0s"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(329_589), "329.589µs"),
            (Duration::from_nanos(218_550), "218.55µs"),
            (Duration::from_nanos(1_162_160), "1.16216ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_nanos(1_000), "1µs"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }
}
