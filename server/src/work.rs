//! The work engine (Go's Workceptor): units of work, their directories and their workers
//! (spec/control-work-config.md §2).
//!
//! # Layout
//! - `unit`: [`UnitId`] and the in-memory record of a unit (its last status, published on a
//!   `watch` channel so `work list` never reads the disk).
//! - `status`: the `status` file: Go's JSON, the `status.lock` flock, atomic replacement.
//! - `submit`: [`Submission`], a unit waiting for its payload.
//! - `results`: [`ResultStream`], a unit's stdout followed until the unit is done.
//! - `command`: the `work-command` worker, which runs each unit in a command-runner process.
//! - [`runner`]: the hidden `--command-runner` process itself.
//! - `shlex`: Go-compatible shell-style splitting of parameters.
//! - [`signing`]: RS512 JWT signing and verification.
//!
//! # Who talks to whom
//! `ops` calls [`WorkEngine`]. The engine keeps the unit index and does everything common to
//! all work types; what differs per type sits behind `trait Worker` (one implementation per
//! type), so the engine never matches on a work type. Workers spawn their monitors through
//! the engine's task tracker; monitors hold units, never the engine, so dropping the last
//! engine handle stops them. Runner processes are deliberately *not* children we kill: they
//! outlive the daemon, and [`WorkEngine::recover`] picks their units up again.

mod command;
mod fswatch;
pub(crate) mod remote;
mod results;
pub mod runner;
pub(crate) mod shlex;
pub mod signing;
mod status;
mod submit;
mod unit;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use receptor_mesh::wire::WorkCommand;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use self::remote::{
    DEFAULT_REMOTE_UNREACHABLE_TIMEOUT, DialFailure, DialFuture, MeshConn, MeshDialer,
};
pub use self::results::{RESULT_CHUNK, ResultStream};
pub use self::signing::{SignError, Signer, VerifyError};
use self::status::{LoadError, StatusFile};
pub use self::status::{State, Status};
pub use self::submit::{PAYLOAD_CHUNK, Submission};
pub use self::unit::{InvalidUnitId, MAX_UNIT_ID_LEN, UNIT_ID_LEN, UnitId};
use self::unit::{Unit, blocking};
use crate::config::{Config, LogLevel, WorkCommandConfig};

/// The work type every node has for work sent to other nodes (not advertised).
pub const REMOTE_WORK_TYPE: &str = "remote";
/// Unit directories read at once during recovery.
const RECOVERY_CONCURRENCY: usize = 32;
/// A unit directory being deleted is first renamed to this prefix plus its ID (see
/// [`remove_unit_dir`]); the `.` keeps it from ever parsing as a unit ID.
const TRASH_PREFIX: &str = ".released-";
/// The files the engine and its runners put in a unit directory.
const UNIT_FILES: [&str; 5] = ["status", "status.lock", ".status.tmp", "stdin", "stdout"];
/// A `work watch` stream repeats the current status after this much silence, so the
/// watching node can tell a quiet unit from a broken path.
pub const WATCH_KEEPALIVE: Duration = Duration::from_secs(5);

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a control connection reached us. Signatures are never checked on Unix sockets
/// (file permissions guard them), as in Go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A local Unix-socket connection.
    Unix,
    /// TCP, TLS or mesh.
    Network,
}

/// A `work submit` request, already split into Go's reserved keys and work parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitRequest {
    /// Target node: this node's ID or `localhost` (any case) means local.
    pub node: String,
    /// Work type.
    pub work_type: String,
    /// Every other key (`params`, `secret_*`, ...).
    pub params: BTreeMap<String, String>,
    /// `tlsclient` (remote work only).
    pub tls_client: String,
    /// `ttl` (remote work only).
    pub ttl: String,
    /// `signwork` was the string `"true"`.
    pub sign_work: bool,
    /// `signature`, empty when absent.
    pub signature: String,
    /// `traceparent` (Rust extension, never a work parameter): the W3C trace context of the
    /// submitting node's span, the parent of this unit's spans.
    pub trace_parent: Option<String>,
}

/// What `submit` reports once the worker was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// `Job Started`.
    Started,
    /// `Job Submitted`: the start continues in the background.
    Submitted,
}

impl StartOutcome {
    /// Go's `result` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "Job Started",
            Self::Submitted => "Job Submitted",
        }
    }
}

/// Whether cancel or release finished or continues in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (`cancelled`, `released`).
    Done,
    /// Continues in the background (`cancel pending`, `release pending`).
    Pending,
}

/// `ExtraData` as control clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraData {
    /// JSON `null`.
    Null,
    /// Compact JSON text.
    Json(String),
    /// The unit's work type is not configured: Go shows the string `"Unknown WorkType"`.
    UnknownWorkType,
}

/// A unit's status as `work status` and `work list` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    /// State number.
    pub state: State,
    /// Detail text.
    pub detail: String,
    /// Bytes of stdout.
    pub stdout_size: i64,
    /// Work type.
    pub work_type: String,
    /// Type-specific data (secrets removed).
    pub extra_data: ExtraData,
}

/// One change to a unit, as [`WorkEngine::watch`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkEvent {
    /// The unit.
    pub unit_id: String,
    /// Its status after the change.
    pub status: UnitStatus,
    /// The unit was released (it no longer exists once its directory is removed).
    pub released: bool,
}

/// One unit's status changes, from [`WorkEngine::watch_unit`].
#[derive(Debug)]
pub struct UnitWatch {
    unit: Arc<Unit>,
    rx: tokio::sync::watch::Receiver<unit::Snapshot>,
    first: bool,
}

impl UnitWatch {
    /// The unit's ID.
    pub fn unit_id(&self) -> &str {
        self.unit.id().as_str()
    }

    /// The current status the first time, then the status after the next change; `None`
    /// once the unit is released (or gone from memory).
    ///
    /// # Cancel safety
    /// Cancel safe: a change seen by a cancelled call is reported by the next one.
    pub async fn next(&mut self) -> Option<UnitStatus> {
        if !self.first && self.rx.changed().await.is_err() {
            return None;
        }
        self.first = false;
        if self.rx.borrow_and_update().released {
            return None;
        }
        Some(unit_status(&self.unit))
    }

    /// The unit's status now (for keep-alive repeats).
    pub fn current(&self) -> UnitStatus {
        unit_status(&self.unit)
    }
}

/// Unit changes a slow [`WorkEngine::watch`] receiver may fall behind before it lags.
const WATCH_BACKLOG: usize = 1024;

/// A failed work operation. The messages are Go's, since clients match on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkError {
    /// No such unit.
    #[error("unknown work unit {0}")]
    UnknownUnit(String),
    /// The ID cannot name a unit (it would escape the data directory). The text starts
    /// like Go's, so clients that look for `unknown work unit` still understand it.
    #[error("unknown work unit {}: {}", .0.0, .0)]
    InvalidUnitId(#[source] InvalidUnitId),
    /// No such work type.
    #[error("unknown work type {0}")]
    UnknownWorkType(String),
    /// `ttl` was given for local work.
    #[error("ttl option is intended for remote work only")]
    TtlForLocalWork,
    /// A signature problem.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// The worker refused or failed (its text is shown as is).
    #[error("{0}")]
    Worker(String),
    /// The work type refused the submission's parameters (its text is shown as is).
    #[error("{0}")]
    Params(String),
    /// The payload could not be stored.
    #[error("{0}")]
    Input(String),
    /// The unit was cancelled or released while it was being submitted.
    #[error("work unit {0} was cancelled before it started")]
    Aborted(String),
    /// This node runs no work engine.
    #[error("work is not available on this node")]
    Unavailable,
    /// A file operation failed.
    #[error("{context}: {}", go_io_error(.source))]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl WorkError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// A worker failure, as text (it ends up in `Detail` and `ERROR:` lines).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct WorkerError(pub(crate) String);

/// Why the engine could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two work types share a name, or one is named `remote`.
    #[error("work type {0} already registered")]
    DuplicateWorkType(String),
    /// Our own executable (re-run as the command runner) cannot be found.
    #[error("cannot locate the receptor executable to run commands")]
    CurrentExe(#[source] std::io::Error),
}

/// What one work type does differently: one implementation per type (`work-command`, later
/// `remote`, ...). The engine handles IDs, directories, status files, payloads, results and
/// release; a worker starts, restarts and cancels units of its type.
pub(crate) trait Worker: Send + Sync + fmt::Debug {
    /// The work type name.
    fn work_type(&self) -> &str;

    /// Whether submissions (and operations on units) must be signed (`verifysignature`).
    fn verify_signature(&self) -> bool;

    /// Whether operations on this unit must be signed (remote units decide per unit).
    fn requires_signature(&self, _status: &Status) -> bool {
        self.verify_signature()
    }

    /// Validates the submitted parameters and returns the unit's initial `ExtraData`
    /// (compact JSON) before anything is created on disk.
    fn prepare(&self, params: &BTreeMap<String, String>) -> Result<Option<String>, WorkerError>;

    /// Starts a unit whose payload is stored.
    fn start<'a>(
        &'a self,
        unit: &'a Arc<Unit>,
        spawner: &'a Spawner,
    ) -> BoxFuture<'a, Result<StartOutcome, WorkerError>>;

    /// Resumes a unit found on disk at startup (or by a lookup).
    fn restart<'a>(
        &'a self,
        unit: &'a Arc<Unit>,
        spawner: &'a Spawner,
    ) -> BoxFuture<'a, Result<(), WorkerError>>;

    /// Stops a unit. A unit that already finished is left as it is.
    fn cancel<'a>(&'a self, unit: &'a Arc<Unit>) -> BoxFuture<'a, Result<Outcome, WorkerError>>;

    /// Prepares a release; the engine deletes the directory when this returns `Done`.
    fn release<'a>(
        &'a self,
        unit: &'a Arc<Unit>,
        _force: bool,
    ) -> BoxFuture<'a, Result<Outcome, WorkerError>> {
        self.cancel(unit)
    }

    /// `ExtraData` as shown to clients (remote units remove secrets here).
    fn public_extra_data(&self, extra_data: Option<&str>) -> ExtraData {
        extra_data.map_or(ExtraData::Null, |raw| ExtraData::Json(raw.to_owned()))
    }

    /// Whether all of a unit's stdout is on disk once its state is final. True when the
    /// worker writes stdout locally; a worker that copies stdout from elsewhere returns false
    /// and results then wait for `StdoutSize` bytes.
    fn stdout_complete_when_final(&self) -> bool {
        true
    }
}

/// Spawns a worker's background tasks (monitors) under the engine's tracker; they stop when
/// the engine shuts down or its last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Spawner {
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// The engine's one inotify watcher over unit directories.
    pub(crate) dirs: fswatch::DirWatcher,
}

impl Spawner {
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }
}

/// Everything the engine needs, resolved from a [`Config`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's ID.
    pub node_id: String,
    /// Where units live: `<node datadir>/<node ID>`.
    pub data_dir: PathBuf,
    /// `work-command` entities.
    pub commands: Vec<WorkCommandConfig>,
    /// `work-signing`: the signer for remote work.
    pub signer: Option<Signer>,
    /// `work-verification`: the public key file.
    pub verification_key: Option<PathBuf>,
    /// The executable re-run as `--command-runner` (normally this one).
    pub runner_exe: PathBuf,
    /// The log level runners are started with.
    pub log_level: LogLevel,
    /// How remote work reaches other nodes (`None`: remote work fails to connect).
    pub dialer: Option<Arc<dyn MeshDialer>>,
    /// How long a remote node may stay unreachable before its units fail
    /// (`node.remoteunreachabletimeout`).
    pub remote_unreachable_timeout: Duration,
    /// How long finished units are kept before the engine releases them
    /// (`node.workretention`; `None`: until released).
    pub work_retention: Option<Duration>,
    /// The ttl of remote submissions that give none (`node.workttl`; `None`: no expiry).
    pub default_remote_ttl: Option<Duration>,
    /// Where the engine registers `receptor_work_*` (a daemon passes the one it exports).
    pub metrics: crate::metrics::Registry,
}

impl EngineConfig {
    /// Resolves the engine's settings from the daemon configuration.
    ///
    /// # Errors
    /// Our executable cannot be located.
    pub fn from_config(config: &Config) -> Result<Self, BuildError> {
        let datadir = if config.node.datadir.as_os_str().is_empty() {
            std::env::temp_dir().join("receptor")
        } else {
            config.node.datadir.clone()
        };
        Ok(Self {
            node_id: config.node.id.clone(),
            data_dir: datadir.join(&config.node.id),
            commands: config.work_commands.clone(),
            signer: config
                .work_signing
                .as_ref()
                .map(|s| Signer::new(&s.private_key, s.token_expiration)),
            verification_key: config
                .work_verification
                .as_ref()
                .map(|v| v.public_key.clone()),
            runner_exe: std::env::current_exe().map_err(BuildError::CurrentExe)?,
            log_level: config.log_level,
            dialer: None,
            remote_unreachable_timeout: config.node.remote_unreachable_timeout,
            work_retention: config.node.work_retention,
            default_remote_ttl: config.node.work_ttl,
            metrics: crate::metrics::Registry::new(),
        })
    }
}

/// The work engine: a cheap, cloneable handle.
#[doc(alias = "workceptor")]
#[derive(Debug, Clone)]
pub struct WorkEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: String,
    data_dir: PathBuf,
    types: BTreeMap<String, Arc<dyn Worker>>,
    type_order: Vec<String>,
    units: std::sync::Mutex<BTreeMap<UnitId, Arc<Unit>>>,
    verification_key: Option<PathBuf>,
    signer: Option<Signer>,
    remote: Arc<remote::RemoteWorker>,
    retention: Option<Duration>,
    spawner: Spawner,
    /// Every unit change, for [`WorkEngine::watch`].
    events: tokio::sync::broadcast::Sender<WorkEvent>,
    metrics: crate::metrics::WorkMetrics,
    _cancel_on_drop: DropGuard,
}

/// What [`WorkEngine::recover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Units loaded.
    pub units: usize,
    /// Units whose status could not be read (each marked Failed): (unit, problem).
    pub failed: Vec<(String, String)>,
    /// Directory entries that are not units (bad names): skipped.
    pub skipped: Vec<String>,
}

impl WorkEngine {
    /// An engine with the configured work types. Nothing is read from disk until
    /// [`WorkEngine::recover`].
    ///
    /// # Errors
    /// A work type is configured twice or named `remote`.
    pub fn new(config: EngineConfig) -> Result<Self, BuildError> {
        let launcher = Arc::new(command::Launcher {
            exe: config.runner_exe,
            log_level: config.log_level,
        });
        let mut types: BTreeMap<String, Arc<dyn Worker>> = BTreeMap::new();
        let mut type_order = Vec::new();
        for command in config.commands {
            let name = command.work_type.clone();
            if name == REMOTE_WORK_TYPE || types.contains_key(&name) {
                return Err(BuildError::DuplicateWorkType(name));
            }
            type_order.push(name.clone());
            types.insert(
                name,
                Arc::new(command::CommandWorker::new(command, Arc::clone(&launcher))),
            );
        }
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let spawner = Spawner {
            dirs: fswatch::DirWatcher::new(&tracker, &cancel),
            tracker,
            cancel: cancel.clone(),
        };
        let remote = Arc::new(remote::RemoteWorker::new(
            remote::RemoteSettings {
                dialer: config.dialer,
                signer: config.signer.clone(),
                unreachable: config.remote_unreachable_timeout,
                default_ttl: config.default_remote_ttl,
            },
            spawner.clone(),
        ));
        types.insert(
            REMOTE_WORK_TYPE.to_owned(),
            Arc::clone(&remote) as Arc<dyn Worker>,
        );
        let engine = Self {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                data_dir: config.data_dir,
                types,
                type_order,
                units: std::sync::Mutex::new(BTreeMap::new()),
                verification_key: config.verification_key,
                signer: config.signer,
                remote,
                retention: config.work_retention,
                spawner,
                events: tokio::sync::broadcast::Sender::new(WATCH_BACKLOG),
                metrics: crate::metrics::WorkMetrics::new(&config.metrics),
                _cancel_on_drop: cancel.drop_guard(),
            }),
        };
        engine.register_unit_gauge(&config.metrics);
        Ok(engine)
    }

    /// `receptor_work_units{state}`, counted from the unit index whenever it is read. Counting
    /// at read time keeps it right however a unit comes or goes (submission, recovery,
    /// release, retention expiry, a lookup of a unit another process created) with no
    /// bookkeeping on those paths.
    fn register_unit_gauge(&self, registry: &crate::metrics::Registry) {
        let weak = Arc::downgrade(&self.inner);
        registry.gauge_fn(
            "receptor_work_units",
            "Work units known to this node (not released), by state",
            &["state"],
            move |emit| {
                let mut counts = [0u64; 6];
                if let Some(inner) = weak.upgrade() {
                    let units = inner.units.lock().unwrap_or_else(|e| e.into_inner());
                    for unit in units.values().filter(|u| !u.is_released()) {
                        let state = unit.state();
                        let slot = usize::try_from(state.0).map_or(5, |i| i.min(5));
                        counts[slot] += 1;
                    }
                }
                for (index, count) in counts.iter().enumerate() {
                    let state = State(i64::try_from(index).unwrap_or(5));
                    // The five states always; `unknown` only when some unit has one.
                    if index < 5 || *count > 0 {
                        emit(&[crate::metrics::state_label(state)], *count as f64);
                    }
                }
            },
        );
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Where units live.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The signer for remote work, if `work-signing` is configured.
    pub fn signer(&self) -> Option<&Signer> {
        self.inner.signer.as_ref()
    }

    /// The work types to advertise (`WorkCommands`): every configured type in configuration
    /// order (as Go registers them), `remote` never.
    pub fn work_commands(&self) -> Vec<WorkCommand> {
        self.inner
            .type_order
            .iter()
            .filter_map(|name| self.inner.types.get(name))
            .map(|w| WorkCommand {
                work_type: w.work_type().to_owned(),
                secure: w.verify_signature(),
            })
            .collect()
    }

    /// Loads every unit directory under the data directory, before control clients are
    /// served: finished units become readable, running ones are monitored again, pending ones
    /// fail (`Pending at restart`). Directories without a status file are skipped; unreadable
    /// status files are moved aside and their units marked Failed. Never fails as a whole.
    pub async fn recover(&self) -> Recovery {
        let dir = self.inner.data_dir.clone();
        let names = blocking(move || -> std::io::Result<Vec<String>> {
            let mut names = Vec::new();
            match std::fs::read_dir(&dir) {
                Ok(entries) => {
                    for entry in entries.flatten() {
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            names.push(entry.file_name().to_string_lossy().into_owned());
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            names.sort();
            Ok(names)
        })
        .await;
        let mut report = Recovery::default();
        let names = match names {
            Ok(names) => names,
            Err(error) => {
                tracing::error!(dir = %self.inner.data_dir.display(), %error, "cannot scan the work data directory");
                return report;
            }
        };
        let mut ids = Vec::new();
        for name in names {
            if name.starts_with(TRASH_PREFIX) {
                // A release that a crash interrupted after its first step: finish it.
                let trash = self.inner.data_dir.join(&name);
                match blocking(move || remove_dir_if_present(&trash)).await {
                    Ok(()) => tracing::info!(dir = %name, "finished deleting a released unit"),
                    Err(error) => {
                        tracing::warn!(dir = %name, %error, "cannot delete a released unit's directory");
                    }
                }
                continue;
            }
            match UnitId::parse(&name) {
                Ok(id) if self.lookup(&id).is_none() => ids.push(id),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(dir = %self.inner.data_dir.join(&name).display(), "not a work unit directory (bad name), skipped");
                    report.skipped.push(name);
                }
            }
        }
        // Loads overlap (they are file reads); results are indexed as they come.
        let mut loads = futures_util::stream::iter(ids)
            .map(|id| async move { (self.load_unit(&id).await, id) })
            .buffer_unordered(RECOVERY_CONCURRENCY);
        let mut orphans = Vec::new();
        while let Some((loaded, id)) = loads.next().await {
            match loaded {
                Some((unit, problem)) => {
                    report.units += 1;
                    if let Some(problem) = problem {
                        report.failed.push((id.to_string(), problem));
                    }
                    self.insert(unit);
                }
                None => orphans.push(id),
            }
        }
        drop(loads);
        for id in orphans {
            self.remove_orphan(&id).await;
        }
        report.failed.sort();
        if report.units > 0 {
            tracing::info!(
                units = report.units,
                failed = report.failed.len(),
                "work units recovered"
            );
        }
        report
    }

    /// Status of one unit (`unit = Some`) or of all units.
    ///
    /// # Errors
    /// The unit is unknown.
    pub async fn list(
        &self,
        unit: Option<&str>,
    ) -> Result<BTreeMap<String, UnitStatus>, WorkError> {
        match unit {
            Some(id) => {
                let unit = self.find(id).await?;
                Ok([(unit.id().to_string(), unit_status(&unit))].into())
            }
            None => {
                let units: Vec<Arc<Unit>> = self
                    .units()
                    .values()
                    .filter(|u| !u.is_released())
                    .cloned()
                    .collect();
                Ok(units
                    .iter()
                    .map(|u| (u.id().to_string(), unit_status(u)))
                    .collect())
            }
        }
    }

    /// A feed of every unit change from now on: state, detail or size changed, or the unit
    /// was released. A receiver that falls more than a backlog behind gets
    /// [`broadcast::error::RecvError::Lagged`](tokio::sync::broadcast::error::RecvError) and
    /// should re-read [`WorkEngine::list`]; memory stays bounded whoever is slow.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<WorkEvent> {
        self.inner.events.subscribe()
    }

    /// Follows one unit's status (the `work watch` extension): the current status at once,
    /// then the latest one after each change. Only the newest state is kept for a slow
    /// reader, so memory stays bounded whatever the pace.
    ///
    /// # Errors
    /// The unit is unknown.
    pub async fn watch_unit(&self, unit: &str) -> Result<UnitWatch, WorkError> {
        let unit = self.find(unit).await?;
        let rx = unit.subscribe();
        Ok(UnitWatch {
            unit,
            rx,
            first: true,
        })
    }

    /// Status of one unit.
    ///
    /// # Errors
    /// The unit is unknown.
    pub async fn status(&self, unit: &str) -> Result<UnitStatus, WorkError> {
        let unit = self.find(unit).await?;
        Ok(unit_status(&unit))
    }

    /// Validates a submission and allocates its unit (`Pending / Waiting for Input Data`).
    /// The caller then streams the payload into the returned [`Submission`] and starts it.
    ///
    /// # Errors
    /// Signature, unknown type, parameters refused, remote work, or the unit directory could
    /// not be created.
    ///
    /// # Cancel safety
    /// Dropped after the unit was allocated, the unit stays `Pending` until the next restart
    /// marks it `Failed / Pending at restart`.
    pub async fn submit(
        &self,
        request: SubmitRequest,
        caller: Caller,
    ) -> Result<Submission, WorkError> {
        // The root of a unit's trace on this node (a child of the submitting node's span for
        // remote work); it lasts until the worker started.
        let span = tracing::info_span!(
            "work.unit",
            node.id = %self.inner.node_id,
            work.unit_id = tracing::field::Empty,
            work.type = %request.work_type,
            work.node = %request.node,
            work.payload_bytes = tracing::field::Empty,
        );
        if let Some(parent) = &request.trace_parent {
            crate::telemetry::TraceParent::parse(parent).adopt(&span);
        }
        let unit = self
            .allocate_submitted(request, caller)
            .instrument(span.clone())
            .await?;
        span.record("work.unit_id", unit.id().as_str());
        unit.set_trace(crate::telemetry::TraceParent::of(&span))
            .await;
        Submission::open(self.clone(), unit, span).await
    }

    /// [`WorkEngine::submit`] up to the allocated unit.
    async fn allocate_submitted(
        &self,
        request: SubmitRequest,
        caller: Caller,
    ) -> Result<Arc<Unit>, WorkError> {
        let worker = self.inner.types.get(&request.work_type).cloned();
        self.check_signature(
            worker.as_ref().is_some_and(|w| w.verify_signature()),
            &request.signature,
            caller,
        )?;
        let local =
            request.node == self.inner.node_id || request.node.eq_ignore_ascii_case("localhost");
        if !local {
            let extra_data = self
                .inner
                .remote
                .prepare_submit(&request)
                .map_err(|e| WorkError::Params(e.0))?;
            let worker: Arc<dyn Worker> = Arc::clone(&self.inner.remote) as Arc<dyn Worker>;
            return self
                .allocate(worker, Status::created(REMOTE_WORK_TYPE, Some(extra_data)))
                .await;
        }
        if !request.ttl.is_empty() {
            return Err(WorkError::TtlForLocalWork);
        }
        let Some(worker) = worker else {
            return Err(WorkError::UnknownWorkType(request.work_type));
        };
        let extra_data = worker
            .prepare(&request.params)
            .map_err(|e| WorkError::Params(e.0))?;
        self.allocate(
            Arc::clone(&worker),
            Status::created(&request.work_type, extra_data),
        )
        .await
    }

    /// Creates a unit directory with a fresh ID and its first status, and indexes it. An ID
    /// is drawn again if a unit in memory or a directory on disk already has it.
    async fn allocate(
        &self,
        worker: Arc<dyn Worker>,
        status: Status,
    ) -> Result<Arc<Unit>, WorkError> {
        let data_dir = self.inner.data_dir.clone();
        let io_error = |e| {
            WorkError::io(
                format!("cannot create a unit directory in {}", data_dir.display()),
                e,
            )
        };
        let (id, dir) = loop {
            let id = UnitId::generate()
                .map_err(|_| io_error(std::io::Error::other("system random source failed")))?;
            if self.lookup(&id).is_some() {
                continue;
            }
            let dir = data_dir.join(id.as_str());
            let created = blocking({
                let (data_dir, dir) = (data_dir.clone(), dir.clone());
                move || -> std::io::Result<bool> {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&data_dir)?;
                    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                        Ok(()) => Ok(true),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            })
            .await
            .map_err(io_error)?;
            if created {
                break (id, dir);
            }
        };
        let work_type = worker.work_type().to_owned();
        let unit = Unit::new(id, dir, Some(worker), status.clone(), self.unit_hooks(true));
        if let Err(error) = unit.store(status).await {
            let _ = remove_unit_dir(unit.dir());
            return Err(WorkError::io(
                format!("cannot write {}", unit.status_file().path().display()),
                error,
            ));
        }
        self.insert(Arc::clone(&unit));
        self.inner.metrics.submitted(&work_type);
        Ok(unit)
    }

    /// What a new in-memory unit reports to; `submitted_here` starts its duration clock.
    fn unit_hooks(&self, submitted_here: bool) -> unit::Hooks {
        unit::Hooks {
            events: self.inner.events.clone(),
            metrics: self.inner.metrics.clone(),
            submitted_at: submitted_here.then(tokio::time::Instant::now),
        }
    }

    /// Streams a unit's stdout from `start_pos` (negative counts as 0) until the unit is done.
    ///
    /// # Errors
    /// Unknown unit, or a signature problem.
    pub async fn results(
        &self,
        unit: &str,
        start_pos: i64,
        signature: &str,
        caller: Caller,
    ) -> Result<ResultStream, WorkError> {
        let unit = self.find(unit).await?;
        self.check_unit_signature(&unit, signature, caller)?;
        let dir = self.inner.spawner.dirs.watch(unit.dir());
        Ok(ResultStream::new(
            unit,
            u64::try_from(start_pos).unwrap_or(0),
            dir,
        ))
    }

    /// Cancels a unit: its process is interrupted (killed after a grace period) and it ends
    /// `Canceled`. A unit that already finished keeps its state.
    ///
    /// # Errors
    /// Unknown unit, signature, or the worker failed.
    ///
    /// # Cancel safety
    /// Dropped midway (daemon shutdown), the process may have been interrupted without the
    /// unit being marked Canceled: the runner then records `Failed / Killed`.
    pub async fn cancel(
        &self,
        unit: &str,
        signature: &str,
        caller: Caller,
    ) -> Result<Outcome, WorkError> {
        let unit = self.find(unit).await?;
        let span = tracing::info_span!("work.cancel", work.unit_id = %unit.id());
        unit.join_trace(&span);
        async {
            self.check_unit_signature(&unit, signature, caller)?;
            let _op = unit.op_lock.lock().await;
            let _cancelling = unit.cancelling();
            match unit.worker() {
                Some(worker) => worker
                    .cancel(&unit)
                    .await
                    .map_err(|e| WorkError::Worker(e.0)),
                None => Ok(Outcome::Done),
            }
        }
        .instrument(span)
        .await
    }

    /// Releases a unit: cancels it, deletes its directory and forgets it. `force` ignores
    /// cancel errors and deletes once, ignoring errors; otherwise deletion is tried 3 times,
    /// 1 s apart.
    ///
    /// # Errors
    /// Unknown unit, signature, or cancel/delete failed (without `force`).
    ///
    /// # Cancel safety
    /// Dropped midway, the unit may be cancelled but not yet deleted; releasing it again
    /// finishes the job.
    pub async fn release(
        &self,
        unit: &str,
        force: bool,
        signature: &str,
        caller: Caller,
    ) -> Result<Outcome, WorkError> {
        let unit = self.find(unit).await?;
        let span =
            tracing::info_span!("work.release", work.unit_id = %unit.id(), work.force = force);
        unit.join_trace(&span);
        async {
            self.check_unit_signature(&unit, signature, caller)?;
            let _op = unit.op_lock.lock().await;
            if unit.is_released() {
                return Ok(Outcome::Done);
            }
            let cancelling = unit.cancelling();
            let prepared = match unit.worker() {
                Some(worker) => worker.release(&unit, force).await,
                None => Ok(Outcome::Done),
            };
            drop(cancelling);
            match prepared {
                Ok(Outcome::Pending) => return Ok(Outcome::Pending),
                Ok(Outcome::Done) => {}
                Err(error) if !force => return Err(WorkError::Worker(error.0)),
                Err(error) => {
                    tracing::warn!(unit = %unit.id(), %error, "force-release: cancel failed, deleting anyway");
                }
            }
            unit.abort_input.cancel();
            let attempts = if force { 1 } else { 3 };
            let mut result = Ok(());
            for attempt in 1..=attempts {
                let dir = unit.dir().to_owned();
                result = blocking(move || remove_unit_dir(&dir)).await;
                match &result {
                    Ok(()) => break,
                    Err(error) if attempt < attempts => {
                        tracing::warn!(unit = %unit.id(), %error, "cannot remove unit directory, retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(_) => {}
                }
            }
            if let Err(error) = result {
                if !force {
                    return Err(WorkError::io(
                        format!("cannot remove {}", unit.dir().display()),
                        error,
                    ));
                }
                tracing::warn!(unit = %unit.id(), %error, "force-release: directory not removed");
            }
            unit.mark_released();
            self.units().remove(unit.id());
            Ok(Outcome::Done)
        }
        .instrument(span)
        .await
    }

    /// Starts the retention sweeper (`node.workretention`): every so often, units that
    /// finished (Succeeded, Failed or Canceled) longer than the retention ago are released,
    /// so a node's disk does not fill with old results. No-op without a retention. The task
    /// stops when the engine shuts down or its last handle is dropped.
    pub fn start_retention_sweeper(&self) {
        let Some(retention) = self.inner.retention else {
            return;
        };
        let period = (retention / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let weak = Arc::downgrade(&self.inner);
        self.inner.spawner.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let engine = WorkEngine { inner };
                engine.sweep_expired(retention).await;
            }
        });
    }

    /// Releases every unit that finished (Succeeded, Failed or Canceled) more than
    /// `retention` ago, judged by its status file's modification time; returns how many
    /// went. Remote units also release their remote end (a release left pending because the
    /// remote node is unreachable is retried on the next sweep).
    pub async fn sweep_expired(&self, retention: Duration) -> usize {
        let candidates: Vec<Arc<Unit>> = self
            .units()
            .values()
            .filter(|u| !u.is_released() && u.status().state.is_final())
            .cloned()
            .collect();
        let mut released = 0;
        for unit in candidates {
            let path = unit.dir().join("status");
            let age = blocking(move || {
                std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default())
            })
            .await;
            let Ok(age) = age else { continue };
            if age < retention {
                continue;
            }
            match self
                .release(unit.id().as_str(), false, "", Caller::Unix)
                .await
            {
                Ok(Outcome::Done) => {
                    released += 1;
                    tracing::info!(unit = %unit.id(), age_secs = age.as_secs(), "work unit past its retention, released");
                }
                Ok(Outcome::Pending) => {}
                Err(error) => {
                    tracing::warn!(unit = %unit.id(), %error, "cannot release a work unit past its retention");
                }
            }
        }
        released
    }

    /// Stops monitoring (runner processes keep running and are picked up by the next
    /// [`WorkEngine::recover`]); waits at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let spawner = &self.inner.spawner;
        spawner.cancel.cancel();
        spawner.tracker.close();
        if tokio::time::timeout(grace, spawner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("work monitors did not stop within {grace:?}");
        }
    }

    // === internals ===

    fn units(&self) -> std::sync::MutexGuard<'_, BTreeMap<UnitId, Arc<Unit>>> {
        self.inner.units.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(&self, id: &UnitId) -> Option<Arc<Unit>> {
        self.units().get(id).cloned()
    }

    /// Indexes `unit` unless another one with its ID got there first; returns the indexed one.
    fn insert(&self, unit: Arc<Unit>) -> Arc<Unit> {
        Arc::clone(self.units().entry(unit.id().clone()).or_insert(unit))
    }

    pub(crate) fn spawner(&self) -> &Spawner {
        &self.inner.spawner
    }

    /// The unit with this ID: from memory, or (like Go) from its directory if another process
    /// created it since.
    async fn find(&self, id: &str) -> Result<Arc<Unit>, WorkError> {
        let id = UnitId::parse(id).map_err(WorkError::InvalidUnitId)?;
        if let Some(unit) = self.lookup(&id) {
            if !unit.is_released() {
                return Ok(unit);
            }
            // Released in the background (remote work): forget it now.
            self.units().remove(&id);
            return Err(WorkError::UnknownUnit(id.to_string()));
        }
        match self.load_unit(&id).await {
            Some((unit, _)) => Ok(self.insert(unit)),
            None => Err(WorkError::UnknownUnit(id.to_string())),
        }
    }

    /// A unit directory without a status file, found at startup, is what a crash leaves
    /// between creating a unit's directory and writing its first status (or, before releases
    /// renamed first, in the middle of deleting one). Nobody can see or release such a unit,
    /// so it is deleted, provided it holds nothing but the files units are made of; anything
    /// else in it is left alone and reported.
    async fn remove_orphan(&self, id: &UnitId) {
        let dir = self.inner.data_dir.join(id.as_str());
        let removed = blocking(move || -> std::io::Result<bool> {
            if dir.join("status").exists() {
                return Ok(false);
            }
            for entry in std::fs::read_dir(&dir)? {
                let name = entry?.file_name();
                if !UNIT_FILES.iter().any(|f| name == *f) {
                    return Ok(false);
                }
            }
            remove_unit_dir(&dir)?;
            Ok(true)
        })
        .await;
        match removed {
            Ok(true) => {
                tracing::warn!(unit = %id, "removed a unit directory without a status file (left by a crash)");
            }
            Ok(false) => {
                tracing::warn!(unit = %id, "directory without a status file skipped (it holds other files)");
            }
            Err(error) => {
                tracing::warn!(unit = %id, %error, "cannot remove a unit directory without a status file");
            }
        }
    }

    /// Loads one unit directory: `None` when it has no status file. A status file that
    /// cannot be read is moved aside and the unit marked `Failed / Failed to restart: ...`
    /// (the problem is returned too).
    async fn load_unit(&self, id: &UnitId) -> Option<(Arc<Unit>, Option<String>)> {
        let dir = self.inner.data_dir.join(id.as_str());
        let file = StatusFile::new(&dir);
        let loaded = blocking({
            let file = file.clone();
            let dir = dir.clone();
            move || -> Result<Result<Status, LoadError>, std::io::Error> {
                // Never create files (the lock) in a directory that is not a unit.
                if !dir.is_dir() || !file.path().exists() {
                    return Ok(Err(LoadError::Missing(file.path().to_owned())));
                }
                file.remove_stale_temp()?;
                Ok(file.load_fast())
            }
        })
        .await
        .unwrap_or_else(|e| {
            Err(LoadError::Io {
                path: dir.join("status"),
                source: e,
            })
        });
        match loaded {
            Err(LoadError::Missing(_)) => None,
            Ok(status) => {
                let worker = self.inner.types.get(&status.work_type).cloned();
                let unit = Unit::new(
                    id.clone(),
                    dir,
                    worker.clone(),
                    status,
                    self.unit_hooks(false),
                );
                unit.recover_trace().await;
                let mut problem = None;
                if let Some(worker) = worker
                    && let Err(error) = worker.restart(&unit, &self.inner.spawner).await
                {
                    let size = unit.stdout_size().await;
                    unit.set_state(
                        State::FAILED,
                        format!("Failed to restart: {error}"),
                        Some(size),
                    )
                    .await;
                    problem = Some(error.0);
                }
                Some((unit, problem))
            }
            Err(error) => {
                let problem = chain(&error);
                tracing::error!(unit = %id, error = %problem, "unreadable work unit status; marking the unit failed");
                let quarantined = blocking({
                    let file = file.clone();
                    move || file.quarantine()
                })
                .await;
                if let Ok(aside) = &quarantined {
                    tracing::warn!(unit = %id, file = %aside.display(), "unreadable status file kept for inspection");
                }
                let size = blocking({
                    let dir = dir.clone();
                    move || Ok::<_, std::io::Error>(status::stdout_size(&dir))
                })
                .await
                .unwrap_or(0);
                let status = Status {
                    state: State::FAILED,
                    detail: format!("Failed to restart: {problem}"),
                    stdout_size: size,
                    work_type: String::new(),
                    extra_data: None,
                };
                let unit = Unit::new(
                    id.clone(),
                    dir,
                    None,
                    status.clone(),
                    self.unit_hooks(false),
                );
                if let Err(error) = unit.store(status).await {
                    tracing::error!(unit = %id, %error, "cannot rewrite the status file");
                }
                Some((unit, Some(problem)))
            }
        }
    }

    /// Go's `processSignature`: a signature for a type that takes none is refused on every
    /// connection; a required one is verified except on Unix sockets.
    fn check_signature(
        &self,
        required: bool,
        signature: &str,
        caller: Caller,
    ) -> Result<(), WorkError> {
        if !required && !signature.is_empty() {
            return Err(VerifyError::Unexpected.into());
        }
        if required && caller == Caller::Network {
            signing::verify(
                self.inner.verification_key.as_deref(),
                signature,
                &self.inner.node_id,
                SystemTime::now(),
            )?;
        }
        Ok(())
    }

    fn check_unit_signature(
        &self,
        unit: &Unit,
        signature: &str,
        caller: Caller,
    ) -> Result<(), WorkError> {
        let required = unit
            .worker()
            .is_some_and(|w| w.requires_signature(&unit.status()));
        self.check_signature(required, signature, caller)
    }
}

/// Deletes a unit directory so that a crash at any point leaves either the whole unit or
/// nothing a scan would take for one: the directory is renamed away in one step (after which
/// the unit is gone for every reader) and then removed; a crash in between leaves a
/// `.released-<id>` directory that [`WorkEngine::recover`] deletes. A missing directory
/// counts as removed.
pub(crate) fn remove_unit_dir(dir: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return remove_dir_if_present(dir);
    };
    let trash = parent.join(format!("{TRASH_PREFIX}{}", name.to_string_lossy()));
    // Left over from an earlier interrupted release of a unit with the same ID.
    remove_dir_if_present(&trash)?;
    match std::fs::rename(dir, &trash) {
        Ok(()) => remove_dir_if_present(&trash),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_dir_if_present(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn unit_status(unit: &Unit) -> UnitStatus {
    let status = unit.status();
    let extra_data = match unit.worker() {
        Some(worker) => worker.public_extra_data(status.extra_data.as_deref()),
        None => ExtraData::UnknownWorkType,
    };
    UnitStatus {
        state: status.state,
        detail: status.detail,
        stdout_size: status.stdout_size,
        work_type: status.work_type,
        extra_data,
    }
}

/// An error and its sources, `a: b: c`.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An OS error worded as Go words it: `no such file or directory`, not
/// `No such file or directory (os error 2)`.
pub(crate) fn go_io_error(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if error.raw_os_error().is_some() => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_like_go() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(go_io_error(&e), "no such file or directory");
        let e = std::io::Error::from_raw_os_error(13);
        assert_eq!(go_io_error(&e), "permission denied");
        assert_eq!(go_io_error(&std::io::Error::other("Custom")), "Custom");
    }

    #[test]
    fn error_texts_match_go() {
        assert_eq!(
            WorkError::UnknownUnit("NoSuchU1".into()).to_string(),
            "unknown work unit NoSuchU1"
        );
        assert_eq!(
            WorkError::InvalidUnitId(InvalidUnitId("../x".into())).to_string(),
            "unknown work unit ../x: \"../x\" is not a valid unit ID (1 to 64 letters, digits, '-' or '_')"
        );
        assert_eq!(
            WorkError::UnknownWorkType("x".into()).to_string(),
            "unknown work type x"
        );
        assert_eq!(
            WorkError::TtlForLocalWork.to_string(),
            "ttl option is intended for remote work only"
        );
    }
}
