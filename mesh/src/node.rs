//! [`Node`]: a running mesh node (the role of Go's `netceptor.Netceptor`).
//!
//! `Node` is a cheap, cloneable handle. All state lives in one actor task
//! ([`actor::NodeActor`]) that owns the routing table, the sessions and the local service
//! registry; handles talk to it over a bounded channel and get answers on oneshots. Backends
//! run as tasks owned by the node and hand their sessions to the actor.
//!
//! ```text
//!  Node handles ──Command──▶ NodeActor ◀──Session── backend tasks (tcp, memory, ...)
//!                              │  ▲
//!              Incoming ◀──────┘  └── session messages (StreamMap, no task per session)
//!            (PacketConn)
//! ```
//!
//! Per-connection work that must outlive a user handle (QUIC drivers, a stream's careful
//! close) runs in the node's [`TaskTracker`], cancelled when the node stops.

mod actor;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Backend, Session};
use crate::firewall::Firewall;
use crate::packet_conn::{Incoming, PacketConn};
use crate::wire::{ServiceAdvertisement, WorkCommand};
use crate::{ServiceName, validate_node_id};

/// Default hops-to-live of everything the node originates.
pub const MAX_FORWARDING_HOPS: u8 = 30;
/// Shortest allowed link idle timeout (and the default): 2 × 10 s + 1 s.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(21);
/// How long a ping waits for its reply.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Capacity of the actor's command inbox.
const COMMAND_QUEUE: usize = 1024;
/// Capacity of the inbox for new sessions.
const SESSION_INBOX: usize = 64;
/// Datagrams queued per local service before new ones are dropped.
pub const SERVICE_QUEUE: usize = 1024;

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node ID.
    pub id: String,
    /// Rules applied to every data message.
    pub firewall: Firewall,
    /// Links silent for longer than this are dropped (at least 21 s).
    pub max_idle: Duration,
    /// The incarnation number; `None` derives it from the clock (`unix_secs << 24 | rand24`),
    /// which is what a daemon wants. Tests set it to restart a node within one second.
    pub epoch: Option<u64>,
    /// Where the node registers its metrics (`receptor_mesh_*`). The default is a registry of
    /// its own that nobody reads; a daemon passes the one it exports.
    pub metrics: crate::metrics::Registry,
}

impl NodeConfig {
    /// Defaults for node `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            firewall: Firewall::default(),
            max_idle: MIN_IDLE_TIMEOUT,
            epoch: None,
            metrics: crate::metrics::Registry::new(),
        }
    }
}

/// How a listening service is advertised to the mesh.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Advertise {
    /// 0 datagram, 1 stream, 2 stream with user TLS.
    pub conn_type: u8,
    /// Tags, e.g. `{"type": "Control Service"}`.
    pub tags: BTreeMap<String, String>,
    /// Work types, for control services.
    pub work_commands: Option<Vec<WorkCommand>>,
}

/// A direct neighbour.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionInfo {
    /// Its node ID.
    pub node_id: String,
    /// The link cost.
    pub cost: f64,
}

/// A snapshot of the node's view of the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Our node ID.
    pub node_id: String,
    /// Established links, sorted by node ID.
    pub connections: Vec<ConnectionInfo>,
    /// Destination -> next hop.
    pub routes: BTreeMap<String, String>,
    /// The link-state database.
    pub known_connection_costs: BTreeMap<String, BTreeMap<String, f64>>,
    /// Every known service, ours included, sorted by (node, service).
    pub advertisements: Vec<ServiceAdvertisement>,
}

/// A successful ping.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReply {
    /// The node that answered (for traceroute probes: where the probe expired).
    pub from: String,
    /// Round-trip time.
    pub rtt: Duration,
}

/// Why a ping failed. The messages are the strings Go nodes report.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// No reply within [`PING_TIMEOUT`].
    #[error("timeout")]
    Timeout,
    /// An unreachable came back.
    #[error("{problem}")]
    Unreachable {
        /// The problem text, e.g. `message expired`.
        problem: String,
        /// The node that reported it.
        from: String,
        /// Time until the report arrived.
        rtt: Duration,
    },
    /// The probe could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The node stopped.
    #[error("netceptor shutdown")]
    Shutdown,
}

/// Why a datagram could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No route to the destination node.
    #[error("no route to node")]
    NoRoute,
    /// The destination is this node and nothing listens on the service.
    #[error("service unknown")]
    ServiceUnknown,
    /// A service name longer than 8 bytes.
    #[error(transparent)]
    ServiceName(#[from] crate::id::ServiceNameError),
    /// The node stopped.
    #[error("netceptor shutdown")]
    Shutdown,
}

/// Why a service could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Something already listens on it.
    #[error("service {0} is already listening")]
    InUse(String),
    /// `ping` and `unreach` are handled by the node itself.
    #[error("service {0} is reserved")]
    Reserved(String),
    /// A service name longer than 8 bytes.
    #[error(transparent)]
    ServiceName(#[from] crate::id::ServiceNameError),
    /// The node stopped.
    #[error("netceptor shutdown")]
    Shutdown,
}

/// Why a node could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The node ID is unusable.
    #[error("invalid node ID")]
    NodeId(#[from] crate::id::NodeIdError),
}

/// Shutdown did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("node tasks did not stop within {0:?}")]
pub struct ShutdownError(pub Duration);

pub(crate) enum Command {
    Status(oneshot::Sender<Status>),
    Listen {
        service: Option<ServiceName>,
        advertise: Option<Advertise>,
        deliver: mpsc::Sender<Incoming>,
        reply: oneshot::Sender<Result<ServiceName, ListenError>>,
    },
    Unlisten(ServiceName),
    /// Originate a datagram. With `reply: None` (the fire-and-forget path) a failure is
    /// reported to the sending service as [`Incoming::SendFailed`] instead.
    Send {
        from_service: ServiceName,
        to_node: Arc<str>,
        to_service: ServiceName,
        ttl: u8,
        payload: Bytes,
        reply: Option<oneshot::Sender<Result<(), SendError>>>,
    },
}

/// Why a fire-and-forget send was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The node's inbox is full; wait for [`PacketConn::send_ready`] and retry.
    #[error("node inbox full")]
    Full,
    /// A service name longer than 8 bytes.
    #[error(transparent)]
    ServiceName(#[from] crate::id::ServiceNameError),
    /// The node stopped.
    #[error("netceptor shutdown")]
    Shutdown,
}

struct Shared {
    id: String,
    commands: mpsc::Sender<Command>,
    sessions: mpsc::Sender<Session>,
    /// Stops the whole node (actor and backends).
    cancel: CancellationToken,
    /// Stops the current generation of backends (reload replaces it).
    backends: Mutex<CancellationToken>,
    tasks: Mutex<JoinSet<()>>,
    /// Per-connection tasks (QUIC drivers, stream close); they stop with `cancel`.
    tracker: TaskTracker,
    /// The actor's topology generation (see [`Node::topology_changes`]).
    topology: watch::Sender<u64>,
    metrics: Arc<crate::metrics::MeshMetrics>,
}

/// A running mesh node. Cloning gives another handle to the same node.
///
/// The node stops when [`shutdown`](Node::shutdown) is called or the last handle is dropped.
#[doc(alias = "netceptor")]
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded sections never panic; recover the data if one somehow did.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Node {
    /// Starts a node with no backends.
    ///
    /// # Errors
    /// The node ID is invalid.
    pub fn spawn(config: NodeConfig) -> Result<Self, SpawnError> {
        validate_node_id(&config.id)?;
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (sessions, session_rx) = mpsc::channel(SESSION_INBOX);
        let cancel = CancellationToken::new();
        let backends = cancel.child_token();
        let mut tasks = JoinSet::new();
        let (topology, _) = watch::channel(0);
        let metrics = Arc::new(crate::metrics::MeshMetrics::new(&config.metrics));
        let actor = actor::NodeActor::new(
            config.clone(),
            command_rx,
            session_rx,
            cancel.clone(),
            topology.clone(),
            Arc::clone(&metrics),
        );
        let span = tracing::info_span!("node", node.id = %config.id);
        tasks.spawn(tracing::Instrument::instrument(actor.run(), span));
        Ok(Self {
            shared: Arc::new(Shared {
                id: config.id,
                commands,
                sessions,
                cancel,
                backends: Mutex::new(backends),
                tasks: Mutex::new(tasks),
                tracker: TaskTracker::new(),
                topology,
                metrics,
            }),
        })
    }

    /// Our node ID.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Runs `backend` until the node stops or [`stop_backends`](Self::stop_backends) is called.
    pub fn add_backend(&self, backend: impl Backend) {
        let cancel = lock(&self.shared.backends).child_token();
        let sessions = self.shared.sessions.clone();
        let run = Box::new(backend).run(sessions, cancel);
        lock(&self.shared.tasks).spawn(async move {
            if let Err(error) = run.await {
                tracing::error!(%error, "backend stopped");
            }
        });
    }

    /// Stops every backend added so far (their sessions close); later backends run normally.
    pub fn stop_backends(&self) {
        let mut backends = lock(&self.shared.backends);
        backends.cancel();
        *backends = self.shared.cancel.child_token();
    }

    /// A change signal for [`Node::status`]: the value (a generation counter) changes
    /// whenever connections, routes, the link-state graph or service advertisements may have
    /// changed. Watchers re-read the status and compare; a slow watcher sees one change for
    /// any number of them, so nothing queues up. The channel closes when the node stops.
    pub fn topology_changes(&self) -> watch::Receiver<u64> {
        self.shared.topology.subscribe()
    }

    /// A snapshot of connections, routes and services.
    ///
    /// # Errors
    /// The node stopped.
    pub async fn status(&self) -> Result<Status, SendError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Status(tx)).await?;
        rx.await.map_err(|_| SendError::Shutdown)
    }

    /// Registers a datagram service: `Some(name)` for a well-known name, `None` for a fresh
    /// ephemeral one. With `advertise`, the service is announced to the mesh.
    ///
    /// # Errors
    /// The name is taken, reserved or too long, or the node stopped.
    pub async fn listen(
        &self,
        service: Option<&str>,
        advertise: Option<Advertise>,
    ) -> Result<PacketConn, ListenError> {
        let service = service.map(ServiceName::try_from).transpose()?;
        let (deliver, incoming) = mpsc::channel(SERVICE_QUEUE);
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Listen {
                service,
                advertise,
                deliver,
                reply,
            })
            .await
            .map_err(|_| ListenError::Shutdown)?;
        let name = rx.await.map_err(|_| ListenError::Shutdown)??;
        Ok(PacketConn::new(self.clone(), name, incoming))
    }

    /// Pings `target` with hops-to-live `ttl` and waits up to 10 s for the answer.
    ///
    /// A probe that expires in transit is answered by the node where it expired, which is how
    /// traceroute finds each hop.
    ///
    /// # Errors
    /// See [`PingError`].
    pub async fn ping(&self, target: &str, ttl: u8) -> Result<PingReply, PingError> {
        let mut conn = self
            .listen(None, None)
            .await
            .map_err(|_| PingError::Shutdown)?;
        let started = Instant::now();
        conn.send_to_ttl(target, "ping", Bytes::new(), ttl).await?;
        let wait = async {
            loop {
                match conn.recv().await {
                    Some(Incoming::Datagram { from_service, .. })
                        if from_service.as_bytes() != b"ping" =>
                    {
                        // Not a ping reply (someone wrote to our ephemeral service): ignore.
                    }
                    Some(Incoming::Datagram { from_node, .. }) => {
                        return Ok(PingReply {
                            from: from_node,
                            rtt: started.elapsed(),
                        });
                    }
                    Some(Incoming::Unreachable(u)) => {
                        return Err(PingError::Unreachable {
                            problem: u.problem,
                            from: u.reported_by,
                            rtt: started.elapsed(),
                        });
                    }
                    Some(Incoming::SendFailed { error, .. }) => return Err(PingError::Send(error)),
                    None => return Err(PingError::Shutdown),
                }
            }
        };
        tokio::time::timeout(PING_TIMEOUT, wait)
            .await
            .unwrap_or(Err(PingError::Timeout))
    }

    /// Resolves when the node has stopped (shutdown, or a duplicate node ID was detected).
    pub async fn stopped(&self) {
        self.shared.cancel.cancelled().await;
    }

    /// Stops the node and waits up to `grace` for its tasks to finish; stragglers are aborted.
    ///
    /// # Errors
    /// The tasks did not finish in time.
    pub async fn shutdown(&self, grace: Duration) -> Result<(), ShutdownError> {
        self.shared.cancel.cancel();
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        let tracker = self.shared.tracker.clone();
        tracker.close();
        let drained = tokio::time::timeout(grace, async {
            while tasks.join_next().await.is_some() {}
            tracker.wait().await;
        })
        .await;
        tasks.abort_all();
        drained.map_err(|_| ShutdownError(grace))
    }

    /// Opens a stream to `node:service` with the insecure TLS of ConnType 1 services (the
    /// `control` service, for example), waiting up to [`crate::quic::DEFAULT_DIAL_TIMEOUT`].
    ///
    /// # Errors
    /// See [`crate::quic::DialError`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future abandons the dial and frees its ephemeral service.
    pub async fn connect(
        &self,
        node: &str,
        service: &str,
    ) -> Result<crate::quic::Stream, crate::quic::DialError> {
        crate::quic::dial(
            self,
            node,
            service,
            crate::quic::ClientTls::Insecure,
            crate::quic::DEFAULT_DIAL_TIMEOUT,
        )
        .await
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::MeshMetrics {
        &self.shared.metrics
    }

    /// Runs `task` in the node's tracker until it ends or the node stops. Returns `false` (and
    /// drops the task) when called outside a Tokio runtime or after the node stopped.
    pub(crate) fn spawn_tracked<F>(&self, task: F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self.shared.cancel.is_cancelled() {
            return false;
        }
        let cancel = self.shared.cancel.clone();
        self.shared.tracker.spawn_on(
            async move {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => {}
                    () = task => {}
                }
            },
            &runtime,
        );
        true
    }

    /// Queues a datagram without waiting (the fast path of QUIC). Failures after queueing come
    /// back to `from_service` as [`Incoming::SendFailed`].
    pub(crate) fn try_send_data(
        &self,
        from_service: ServiceName,
        to_node: Arc<str>,
        to_service: ServiceName,
        payload: Bytes,
    ) -> Result<(), TrySendError> {
        self.shared
            .commands
            .try_send(Command::Send {
                from_service,
                to_node,
                to_service,
                ttl: MAX_FORWARDING_HOPS,
                payload,
                reply: None,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => TrySendError::Full,
                mpsc::error::TrySendError::Closed(_) => TrySendError::Shutdown,
            })
    }

    /// Resolves once the node's inbox has room for another command (a hint: another sender
    /// may take the slot first).
    pub(crate) fn send_ready(
        &self,
    ) -> impl std::future::Future<Output = Result<(), TrySendError>> + Send + 'static {
        let commands = self.shared.commands.clone();
        async move {
            commands
                .reserve()
                .await
                .map(drop)
                .map_err(|_| TrySendError::Shutdown)
        }
    }

    pub(crate) async fn command(&self, command: Command) -> Result<(), SendError> {
        self.shared
            .commands
            .send(command)
            .await
            .map_err(|_| SendError::Shutdown)
    }

    pub(crate) fn try_command(&self, command: Command) {
        // Used from Drop, where we cannot wait; if the inbox is full the actor notices the
        // closed channel on its next delivery or advertisement tick instead.
        let _ = self.shared.commands.try_send(command);
    }
}
