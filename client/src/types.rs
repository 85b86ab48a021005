//! Rust types for what the daemon reports, converted from the generated `receptor.v1`
//! messages.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use receptor_proto::{prost_types, v1};

/// A unit's state. The numbers are the classic protocol's `State` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnitState {
    /// Created, not started yet.
    Pending,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled.
    Canceled,
}

impl UnitState {
    /// From the wire value; unknown values read as `Failed` would be a lie, so they are
    /// `None`.
    pub fn from_number(n: i32) -> Option<Self> {
        Some(match n {
            0 => Self::Pending,
            1 => Self::Running,
            2 => Self::Succeeded,
            3 => Self::Failed,
            4 => Self::Canceled,
            _ => return None,
        })
    }

    /// The classic protocol's `State` number.
    pub fn number(self) -> i32 {
        match self {
            Self::Pending => 0,
            Self::Running => 1,
            Self::Succeeded => 2,
            Self::Failed => 3,
            Self::Canceled => 4,
        }
    }

    /// The classic protocol's `StateName`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Canceled => "Canceled",
        }
    }

    /// Succeeded, Failed or Canceled: nothing will change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A unit of work's status.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkUnit {
    /// The unit ID on the node asked.
    pub id: String,
    /// Its state; `None` for a state number this client does not know.
    pub state: Option<UnitState>,
    /// The raw state number.
    pub state_number: i32,
    /// Human-readable detail (`exit status 0`, an error, ...).
    pub detail: String,
    /// Bytes of output so far.
    pub stdout_size: u64,
    /// The work type (`remote` for a unit running on another node).
    pub work_type: String,
    /// Type-specific data as compact JSON; `None` when there is none (`null`).
    pub extra_data_json: Option<String>,
}

impl WorkUnit {
    /// True once the unit cannot change any more.
    pub fn is_final(&self) -> bool {
        self.state.is_some_and(UnitState::is_final)
    }

    /// The classic `StateName` (`Unknown` for an unknown number).
    pub fn state_name(&self) -> &'static str {
        self.state.map_or("Unknown", UnitState::name)
    }
}

impl From<v1::WorkUnit> for WorkUnit {
    fn from(u: v1::WorkUnit) -> Self {
        let extra = u.extra_data_json.trim();
        Self {
            state: UnitState::from_number(u.state),
            state_number: u.state,
            id: u.unit_id,
            detail: u.detail,
            stdout_size: u64::try_from(u.stdout_size).unwrap_or(0),
            work_type: u.work_type,
            extra_data_json: (!extra.is_empty() && extra != "null").then(|| extra.to_owned()),
        }
    }
}

/// How a service is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnType {
    /// Datagrams.
    Datagram,
    /// Streams.
    Stream,
    /// TLS streams.
    StreamTls,
}

impl ConnType {
    /// The classic `ConnType` number.
    pub fn number(self) -> i32 {
        match self {
            Self::Datagram => 0,
            Self::Stream => 1,
            Self::StreamTls => 2,
        }
    }

    /// The name `receptorctl status` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Datagram => "Datagram",
            Self::Stream => "Stream",
            Self::StreamTls => "StreamTLS",
        }
    }
}

/// A direct peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// The peer.
    pub node_id: String,
    /// The link cost.
    pub cost: f64,
}

/// A work type a node accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkCommand {
    /// The type's name.
    pub work_type: String,
    /// Submissions must be signed.
    pub secure: bool,
}

/// A service advertisement.
#[derive(Clone, Debug, PartialEq)]
pub struct Advertisement {
    /// The node offering it.
    pub node_id: String,
    /// The service name.
    pub service: String,
    /// RFC 3339 time of the advertisement.
    pub time: String,
    /// How it is reached.
    pub conn_type: ConnType,
    /// Configured tags.
    pub tags: BTreeMap<String, String>,
    /// Work types (on `control` services).
    pub work_commands: Vec<WorkCommand>,
}

impl From<v1::Advertisement> for Advertisement {
    fn from(ad: v1::Advertisement) -> Self {
        Self {
            conn_type: match ad.conn_type() {
                v1::ConnType::Datagram => ConnType::Datagram,
                v1::ConnType::Stream => ConnType::Stream,
                v1::ConnType::StreamTls => ConnType::StreamTls,
            },
            node_id: ad.node_id,
            service: ad.service,
            time: ad.time,
            tags: ad.tags.into_iter().collect(),
            work_commands: ad
                .work_commands
                .into_iter()
                .map(|c| WorkCommand {
                    work_type: c.work_type,
                    secure: c.secure,
                })
                .collect(),
        }
    }
}

/// A node's view of the mesh (the classic `status`).
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// The node asked.
    pub node_id: String,
    /// Its daemon's version.
    pub version: String,
    /// Logical CPUs of its host.
    pub cpu_count: u32,
    /// Physical memory of its host, MiB.
    pub memory_mib: u64,
    /// Direct peers.
    pub connections: Vec<Connection>,
    /// Destination -> next hop.
    pub routes: BTreeMap<String, String>,
    /// Services in the mesh.
    pub advertisements: Vec<Advertisement>,
    /// The link-state graph: node -> neighbour -> cost.
    pub known_costs: BTreeMap<String, BTreeMap<String, f64>>,
}

impl From<v1::StatusResponse> for Status {
    fn from(s: v1::StatusResponse) -> Self {
        Self {
            node_id: s.node_id,
            version: s.version,
            cpu_count: s.system_cpu_count,
            memory_mib: s.system_memory_mib,
            connections: s
                .connections
                .into_iter()
                .map(|c| Connection {
                    node_id: c.node_id,
                    cost: c.cost,
                })
                .collect(),
            routes: s.routing_table.into_iter().collect(),
            advertisements: s.advertisements.into_iter().map(Into::into).collect(),
            known_costs: s
                .known_connection_costs
                .into_iter()
                .map(|(node, row)| (node, row.costs.into_iter().collect()))
                .collect(),
        }
    }
}

/// A change in the mesh, from [`Client::watch_topology`](crate::Client::watch_topology).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TopologyEvent {
    /// The whole picture (first, and again after the watcher fell behind).
    Snapshot(Status),
    /// A direct peer appeared, changed cost, or went away (`removed`).
    Connection {
        /// The peer.
        node_id: String,
        /// The new cost.
        cost: f64,
        /// The connection is gone.
        removed: bool,
    },
    /// A node's neighbours changed, or it left the graph (`removed`).
    Node {
        /// The node.
        node_id: String,
        /// Its neighbours and costs now.
        neighbours: BTreeMap<String, f64>,
        /// It left.
        removed: bool,
    },
    /// The next hop to a destination changed; `None` when it became unreachable.
    Route {
        /// The destination.
        destination: String,
        /// The next hop.
        next_hop: Option<String>,
    },
    /// An advertisement appeared, changed or expired (`removed`).
    Service {
        /// The advertisement.
        advertisement: Advertisement,
        /// It expired or its node left.
        removed: bool,
    },
}

impl TopologyEvent {
    pub(crate) fn from_proto(event: v1::TopologyEvent) -> Option<Self> {
        use v1::topology_event::Event;
        Some(match event.event? {
            Event::Snapshot(s) => Self::Snapshot(s.into()),
            Event::Connection(c) => Self::Connection {
                node_id: c.node_id,
                cost: c.cost,
                removed: c.removed,
            },
            Event::Node(n) => Self::Node {
                node_id: n.node_id,
                neighbours: n.neighbours.into_iter().collect(),
                removed: n.removed,
            },
            Event::Route(r) => Self::Route {
                destination: r.destination,
                next_hop: (!r.next_hop.is_empty()).then_some(r.next_hop),
            },
            Event::Service(s) => Self::Service {
                advertisement: s.advertisement?.into(),
                removed: s.removed,
            },
        })
    }
}

/// One ping probe's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingReply {
    /// 1 for the first probe.
    pub sequence: u32,
    /// Who answered.
    pub from: Option<String>,
    /// Round-trip time, when answered.
    pub rtt: Option<Duration>,
    /// Why the probe failed; `None` on success.
    pub error: Option<String>,
}

impl From<v1::PingReply> for PingReply {
    fn from(p: v1::PingReply) -> Self {
        Self {
            sequence: p.sequence,
            from: non_empty(p.from),
            rtt: p.rtt.and_then(to_duration),
            error: non_empty(p.error),
        }
    }
}

/// One hop of a traceroute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// 0 for the first hop.
    pub hop: u32,
    /// The node at this hop.
    pub from: Option<String>,
    /// Round-trip time.
    pub rtt: Option<Duration>,
    /// Set when the trace ended here with a problem.
    pub error: Option<String>,
}

impl From<v1::TracerouteHop> for Hop {
    fn from(h: v1::TracerouteHop) -> Self {
        Self {
            hop: h.hop,
            from: non_empty(h.from),
            rtt: h.rtt.and_then(to_duration),
            error: non_empty(h.error),
        }
    }
}

/// The daemon's version and identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version, e.g. `0.1.0`.
    pub version: String,
    /// The node ID.
    pub node_id: String,
    /// When the daemon started.
    pub started: Option<SystemTime>,
}

impl From<v1::VersionResponse> for VersionInfo {
    fn from(v: v1::VersionResponse) -> Self {
        Self {
            version: v.version,
            node_id: v.node_id,
            started: v.started.and_then(|t| SystemTime::try_from(t).ok()),
        }
    }
}

/// What to submit: built with [`SubmitOptions::new`] and its setters.
///
/// ```
/// use std::time::Duration;
/// use receptor_client::SubmitOptions;
///
/// let options = SubmitOptions::new("echo")
///     .node("node2")
///     .param("params", "--verbose")
///     .ttl(Duration::from_secs(600))
///     .sign_work(true);
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions {
    pub(crate) header: v1::SubmitHeader,
}

impl SubmitOptions {
    /// Runs `work_type` on the local node.
    pub fn new(work_type: impl Into<String>) -> Self {
        Self {
            header: v1::SubmitHeader {
                work_type: work_type.into(),
                ..Default::default()
            },
        }
    }

    /// Runs the unit on another node (remote work); `localhost` or empty is local.
    #[must_use]
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.header.node = node.into();
        self
    }

    /// Adds a work parameter (`params` for extra command-line arguments, `secret_*`, ...).
    #[must_use]
    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.header.params.insert(key.into(), value.into());
        self
    }

    /// Remote work: the local `tls-client` that secures the connection to the remote node.
    #[must_use]
    pub fn tls_client(mut self, name: impl Into<String>) -> Self {
        self.header.tls_client = name.into();
        self
    }

    /// Remote work: cancel the unit if it has not started within `ttl`.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.header.ttl = Some(from_duration(ttl));
        self
    }

    /// Remote work: sign the submission with the node's `work-signing` key.
    #[must_use]
    pub fn sign_work(mut self, sign: bool) -> Self {
        self.header.sign_work = sign;
        self
    }

    /// A JWT for nodes that verify signatures.
    #[must_use]
    pub fn signature(mut self, jwt: impl Into<String>) -> Self {
        self.header.signature = jwt.into();
        self
    }

    /// The payload's size, when known: enables progress totals and a server-side check.
    #[must_use]
    pub fn payload_size(mut self, size: u64) -> Self {
        self.header.payload_size = size;
        self
    }
}

/// A created unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    /// The unit.
    pub unit: WorkUnit,
    /// `Job Started`, or `Job Submitted` when the start continues in the background.
    pub result: String,
}

/// A unit's change, from [`Client::watch_work`](crate::Client::watch_work).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkEvent {
    /// The unit after the change.
    pub unit: WorkUnit,
    /// It was released: no more events for it.
    pub released: bool,
    /// The watcher fell behind: this and the following events are the current states.
    pub resync: bool,
}

/// How a results stream ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultsEnd {
    /// The unit's status at the end (final when following).
    pub unit: WorkUnit,
    /// Offset just past the last byte of output.
    pub end_offset: u64,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub(crate) fn to_duration(d: prost_types::Duration) -> Option<Duration> {
    Duration::try_from(d).ok()
}

pub(crate) fn from_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

pub use receptor_proto::go_duration::format as go_duration;

/// Parses a Go duration (`1h20m30s`, `1.5h`, `300ms`, `90s`): what `--ttl` takes.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    receptor_proto::go_duration::parse(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_go() {
        for (d, want) in [
            (Duration::from_nanos(0), "0s"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(329_589), "329.589µs"),
            (Duration::from_nanos(1_162_160), "1.16216ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ] {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(
            parse_go_duration("1h20m30s"),
            Some(Duration::from_secs(4830))
        );
        assert_eq!(parse_go_duration("30m10s"), Some(Duration::from_secs(1810)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "10", "5x", "h", "1h-2m"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn units_convert_with_null_extra_data() {
        let u = WorkUnit::from(v1::WorkUnit {
            unit_id: "abc".into(),
            state: 3,
            detail: "exit status 1".into(),
            stdout_size: 12,
            work_type: "cat".into(),
            extra_data_json: "null".into(),
        });
        assert_eq!(u.state, Some(UnitState::Failed));
        assert!(u.is_final());
        assert_eq!(u.extra_data_json, None);
        assert_eq!(u.state_name(), "Failed");
        let odd = WorkUnit::from(v1::WorkUnit {
            state: 9,
            ..Default::default()
        });
        assert_eq!((odd.state, odd.state_name()), (None, "Unknown"));
    }
}
