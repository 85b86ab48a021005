//! The `Mesh` service over [`Ops`].

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use receptor_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{BoxStream, invalid, ops_status, reload_status, request_stream_status, until_shutdown};
use crate::ops::{Ops, Probe, StatusReport, TopologyChange, topology_diff};

/// Default probes of a `Ping` (receptorctl's default).
const DEFAULT_PING_COUNT: u32 = 4;
/// Most probes of one `Ping`.
const MAX_PING_COUNT: u32 = 10_000;
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);
const MAX_PING_INTERVAL: Duration = Duration::from_secs(3600);
/// A topology change set larger than this is sent as a fresh snapshot instead.
const MAX_CHANGES_PER_LOOK: usize = 256;
/// Bytes read from the mesh per `Connect` response message.
const CONNECT_CHUNK: usize = 64 * 1024;

/// The `receptor.v1.Mesh` service.
#[derive(Debug, Clone)]
pub struct MeshService {
    ops: Ops,
    cancel: CancellationToken,
}

impl MeshService {
    /// The service over `ops`; its streams end when `cancel` fires.
    pub fn new(ops: Ops, cancel: CancellationToken) -> Self {
        Self { ops, cancel }
    }
}

pub(crate) fn required(value: &str, field: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(invalid(format!("{field} is required")))
    } else {
        Ok(())
    }
}

fn duration(d: Duration) -> pb_types::Duration {
    pb_types::Duration::try_from(d).unwrap_or_default()
}

use receptor_proto::prost_types as pb_types;

// === conversions ===

/// A `Ping` request's probe count and interval, defaults applied.
pub(crate) fn ping_options(request: &pb::PingRequest) -> Result<(u32, Duration), Status> {
    required(&request.node, "node")?;
    let count = match request.count {
        0 => DEFAULT_PING_COUNT,
        n if n > MAX_PING_COUNT => {
            return Err(invalid(format!("count must be at most {MAX_PING_COUNT}")));
        }
        n => n,
    };
    let interval = match request.interval {
        None => DEFAULT_PING_INTERVAL,
        Some(d) => Duration::try_from(d)
            .ok()
            .filter(|d| *d <= MAX_PING_INTERVAL)
            .ok_or_else(|| invalid("interval must be between 0 and 1 hour"))?,
    };
    Ok((count, interval))
}

/// The `open` a `Connect` stream must start with (`first` is its first message).
pub(crate) fn connect_open(first: Option<pb::ConnectRequest>) -> Result<pb::ConnectOpen, Status> {
    use pb::connect_request::Request as In;
    let open = match first {
        Some(pb::ConnectRequest {
            request: Some(In::Open(open)),
        }) => open,
        Some(_) => return Err(invalid("the first message must carry open")),
        None => return Err(invalid("the request stream ended before open")),
    };
    required(&open.node, "open.node")?;
    required(&open.service, "open.service")?;
    Ok(open)
}

fn status_response(report: StatusReport) -> pb::StatusResponse {
    let mesh = report.mesh;
    pb::StatusResponse {
        node_id: mesh.node_id,
        version: report.version,
        system_cpu_count: u32::try_from(report.cpu_count).unwrap_or(u32::MAX),
        system_memory_mib: report.memory_mib,
        connections: mesh
            .connections
            .into_iter()
            .map(|c| pb::Connection {
                node_id: c.node_id,
                cost: c.cost,
            })
            .collect(),
        routing_table: mesh.routes.into_iter().collect(),
        advertisements: mesh.advertisements.into_iter().map(advertisement).collect(),
        known_connection_costs: mesh
            .known_connection_costs
            .into_iter()
            .map(|(node, costs)| {
                (
                    node,
                    pb::NeighbourCosts {
                        costs: costs.into_iter().collect(),
                    },
                )
            })
            .collect(),
    }
}

fn advertisement(ad: receptor_mesh::wire::ServiceAdvertisement) -> pb::Advertisement {
    let conn_type = match ad.conn_type {
        1 => pb::ConnType::Stream,
        2 => pb::ConnType::StreamTls,
        _ => pb::ConnType::Datagram,
    };
    pb::Advertisement {
        time: receptor_mesh::wire::format_go_time(ad.time),
        node_id: ad.node_id,
        service: ad.service,
        conn_type: conn_type.into(),
        tags: ad.tags.unwrap_or_default().into_iter().collect(),
        work_commands: ad
            .work_commands
            .unwrap_or_default()
            .into_iter()
            .map(|c| pb::WorkCommand {
                work_type: c.work_type,
                secure: c.secure,
            })
            .collect(),
    }
}

fn topology_event(change: TopologyChange) -> pb::TopologyEvent {
    use pb::topology_event::Event;
    let event = match change {
        TopologyChange::Connection { node_id, cost } => Event::Connection(pb::ConnectionChange {
            node_id,
            cost: cost.unwrap_or_default(),
            removed: cost.is_none(),
        }),
        TopologyChange::Node {
            node_id,
            neighbours,
        } => Event::Node(pb::NodeChange {
            node_id,
            removed: neighbours.is_none(),
            neighbours: neighbours.unwrap_or_default().into_iter().collect(),
        }),
        TopologyChange::Route {
            destination,
            next_hop,
        } => Event::Route(pb::RouteChange {
            destination,
            next_hop: next_hop.unwrap_or_default(),
        }),
        TopologyChange::Service {
            advertisement: ad,
            removed,
        } => Event::Service(pb::ServiceChange {
            advertisement: Some(advertisement(ad)),
            removed,
        }),
    };
    pb::TopologyEvent { event: Some(event) }
}

fn snapshot_event(report: StatusReport) -> pb::TopologyEvent {
    pb::TopologyEvent {
        event: Some(pb::topology_event::Event::Snapshot(status_response(report))),
    }
}

fn ping_reply(sequence: u32, probe: Probe) -> pb::PingReply {
    pb::PingReply {
        sequence,
        from: probe.from.unwrap_or_default(),
        rtt: probe.rtt.map(duration),
        error: probe.error.unwrap_or_default(),
    }
}

// === the service ===

#[tonic::async_trait]
impl pb::mesh_server::Mesh for MeshService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "status");
        let report = self.ops.status().await.map_err(|e| ops_status(&e))?;
        Ok(Response::new(status_response(report)))
    }

    type WatchTopologyStream = BoxStream<pb::TopologyEvent>;

    async fn watch_topology(
        &self,
        _request: Request<pb::WatchTopologyRequest>,
    ) -> Result<Response<Self::WatchTopologyStream>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "watch_topology");
        struct Watch {
            ops: Ops,
            changes: tokio::sync::watch::Receiver<u64>,
            last: Option<crate::ops::StatusReport>,
            pending: VecDeque<pb::TopologyEvent>,
        }
        // Subscribe before the first snapshot, so no change between the two is missed.
        let mut changes = self.ops.topology_changes();
        changes.mark_unchanged();
        let state = Watch {
            ops: self.ops.clone(),
            changes,
            last: None,
            pending: VecDeque::new(),
        };
        let stream = futures_util::stream::unfold(state, |mut w| async move {
            loop {
                if let Some(event) = w.pending.pop_front() {
                    return Some((Ok(event), w));
                }
                if w.last.is_some() && w.changes.changed().await.is_err() {
                    return None; // the node stopped
                }
                let report = match w.ops.status().await {
                    Ok(report) => report,
                    Err(error) => return Some((Err(ops_status(&error)), w)),
                };
                match w.last.replace(report.clone()) {
                    None => return Some((Ok(snapshot_event(report)), w)),
                    Some(before) => {
                        let diff = topology_diff(&before.mesh, &report.mesh);
                        if diff.len() > MAX_CHANGES_PER_LOOK {
                            return Some((Ok(snapshot_event(report)), w));
                        }
                        w.pending.extend(diff.into_iter().map(topology_event));
                    }
                }
            }
        });
        Ok(Response::new(until_shutdown(stream, self.cancel.clone())))
    }

    type PingStream = BoxStream<pb::PingReply>;

    async fn ping(
        &self,
        request: Request<pb::PingRequest>,
    ) -> Result<Response<Self::PingStream>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "ping");
        let request = request.into_inner();
        let (count, interval) = ping_options(&request)?;
        let stream = self
            .ops
            .ping_series(request.node, count, interval)
            .map(|(sequence, probe)| Ok(ping_reply(sequence, probe)));
        Ok(Response::new(until_shutdown(stream, self.cancel.clone())))
    }

    type TracerouteStream = BoxStream<pb::TracerouteHop>;

    async fn traceroute(
        &self,
        request: Request<pb::TracerouteRequest>,
    ) -> Result<Response<Self::TracerouteStream>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "traceroute");
        let target = request.into_inner().node;
        required(&target, "node")?;
        let ops = self.ops.clone();
        let stream = futures_util::stream::unfold(Some(0u8), move |ttl| {
            let ops = ops.clone();
            let target = target.clone();
            async move {
                let ttl = ttl?;
                let (probe, done) = ops.trace_hop(&target, ttl).await;
                let hop = pb::TracerouteHop {
                    hop: u32::from(ttl),
                    from: probe.from.unwrap_or_default(),
                    rtt: probe.rtt.map(duration),
                    error: probe.error.unwrap_or_default(),
                };
                Some((Ok(hop), (!done).then(|| ttl + 1)))
            }
        });
        Ok(Response::new(until_shutdown(stream, self.cancel.clone())))
    }

    type ConnectStream = BoxStream<pb::ConnectResponse>;

    async fn connect(
        &self,
        request: Request<tonic::Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "connect");
        use pb::connect_request::Request as In;
        use pb::connect_response::Response as Out;
        let mut inbound = request.into_inner();
        let open = connect_open(inbound.message().await.map_err(request_stream_status)?)?;
        let stream = self
            .ops
            .connect(&open.node, &open.service, &open.tls_client)
            .await
            .map_err(|e| ops_status(&e))?;
        let (from_mesh, mut to_mesh) = tokio::io::split(stream);
        // Client -> mesh, driven by the response stream below (no task of its own): each
        // message is written before the next is pulled, so a slow mesh slows the client.
        let upstream = async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::ConnectRequest {
                        request: Some(In::Data(data)),
                    })) => {
                        if to_mesh.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(_)) => {
                        return Err(invalid("only the first message may carry open"));
                    }
                    // Half-close: the remote service sees EOF, its answer keeps flowing.
                    Ok(None) => break,
                    Err(status) => return Err(request_stream_status(status)),
                }
            }
            let _ = to_mesh.shutdown().await;
            Ok(())
        };
        struct Bridge<U> {
            upstream: Option<std::pin::Pin<Box<U>>>,
            from_mesh: tokio::io::ReadHalf<receptor_mesh::quic::Stream>,
            opened: bool,
            done: bool,
        }
        let state = Bridge {
            upstream: Some(Box::pin(upstream)),
            from_mesh,
            opened: false,
            done: false,
        };
        let stream = futures_util::stream::unfold(state, |mut b| async move {
            if b.done {
                return None;
            }
            if !b.opened {
                b.opened = true;
                let opened = pb::ConnectResponse {
                    response: Some(Out::Opened(pb::ConnectOpened {})),
                };
                return Some((Ok(opened), b));
            }
            let mut buf = vec![0u8; CONNECT_CHUNK];
            loop {
                let read = match b.upstream.as_mut() {
                    Some(upstream) => tokio::select! {
                        result = upstream.as_mut() => {
                            b.upstream = None;
                            if let Err(status) = result {
                                b.done = true;
                                return Some((Err(status), b));
                            }
                            continue;
                        }
                        read = b.from_mesh.read(&mut buf) => read,
                    },
                    None => b.from_mesh.read(&mut buf).await,
                };
                return match read {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        let data = pb::ConnectResponse {
                            response: Some(Out::Data(buf)),
                        };
                        Some((Ok(data), b))
                    }
                };
            }
        });
        Ok(Response::new(until_shutdown(stream, self.cancel.clone())))
    }

    async fn reload(
        &self,
        _request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "reload");
        self.ops.reload().await.map_err(|e| reload_status(&e))?;
        Ok(Response::new(pb::ReloadResponse {}))
    }

    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "version");
        Ok(Response::new(pb::VersionResponse {
            version: self.ops.version().to_owned(),
            node_id: self.ops.node().id().to_owned(),
            started: Some(pb_types::Timestamp::from(self.ops.started())),
        }))
    }
}
