//! The `remote` worker (spec §2.9): a unit that runs on another node, reached over the mesh
//! through that node's `control` service, speaking exactly what Go nodes send (spec §1.5).
//!
//! # Life of a remote unit
//! - **Start**: dial `<node>:control`, check the greeting (5 s), send the JSON `submit` line,
//!   take the remote unit ID from `with ID (...)\.` (stored at once), stream the local `stdin`
//!   file, half-close, read the result line. A connection problem turns into `Job Submitted`
//!   and a background loop that retries with Go's backoff (1 s, ×1.5, at most 60 s).
//! - **Monitoring**: a status monitor (one connection, `work status <id>` every second, as Go
//!   does) and a results fetcher (`work results` from the local `stdout` size, appended to
//!   `stdout`, resumed from the local size after any failure). The local unit only becomes
//!   Succeeded/Failed/Canceled once the remote did *and* every byte the remote reported is in
//!   the local file; until then it shows Running with the remote's detail.
//! - **Bounded failure** (better than Go, which retries for ever, receptor#711): when the
//!   remote node cannot be reached for [`EngineConfig::remote_unreachable_timeout`]
//!   (`node.remoteunreachabletimeout`, default [`DEFAULT_REMOTE_UNREACHABLE_TIMEOUT`]), the
//!   unit fails with a Detail that says so. This covers a node down at submit time, a node
//!   that vanishes while the unit runs, and background cancel/release retries.
//! - **Restart**: started units resume monitoring; units not yet started resume trying to
//!   start (Go fails them: receptor#363); released or cancelled ones resume that.
//!
//! [`EngineConfig::remote_unreachable_timeout`]: super::EngineConfig::remote_unreachable_timeout

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::signing::Signer;
use super::status::{FILE_MODE, State};
use super::unit::Unit;
use super::{BoxFuture, ExtraData, Outcome, Spawner, StartOutcome, Worker, WorkerError};

/// How long a remote node may stay unreachable before its units fail, by default.
pub const DEFAULT_REMOTE_UNREACHABLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The greeting must arrive within this time (as in Go).
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply to `work status` must arrive within this time, or the connection is renewed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The result line after a submission's payload (the remote starts its worker first).
const SUBMIT_RESULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Status polling interval (Go's), for remote nodes without `work watch`.
const POLL: Duration = Duration::from_secs(1);
/// A `work watch` stream silent this long (the remote repeats its state every
/// [`super::WATCH_KEEPALIVE`]) is taken for a broken path and renewed.
const WATCH_SILENCE: Duration = Duration::from_secs(12);
/// Go's reconnect backoff: first delay, factor, cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Longest control line we read from a remote node.
const MAX_REPLY: u64 = 1024 * 1024;
/// Bytes copied per read while fetching results.
const FETCH_CHUNK: usize = 256 * 1024;
/// A results stream that brings nothing for this long while the remote reports bytes we do
/// not have is taken for dead and reopened from the local size. A remote node that crashed
/// and restarted never answers on its old streams (its new QUIC endpoint cannot reset them),
/// and waiting for the QUIC idle timeout would stall the unit for half a minute.
const FETCH_STALL: Duration = Duration::from_secs(10);
/// The time Go writes for "no expiration".
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A byte stream to a mesh service.
pub trait MeshConn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> MeshConn for T {}

/// Why a mesh dial failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialFailure {
    /// The error text.
    pub message: String,
    /// The TLS handshake failed (Go's `CRYPTO_ERROR`): retrying will not help.
    pub tls: bool,
}

/// What [`MeshDialer::dial`] returns.
pub type DialFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Box<dyn MeshConn>, DialFailure>> + Send + 'a>>;

/// Opens streams to services on other nodes (the daemon implements it over QUIC).
pub trait MeshDialer: Send + Sync + fmt::Debug {
    /// Dials `service` on `node` with the `tls-client` named `tls` (empty: insecure).
    fn dial<'a>(&'a self, node: &'a str, service: &'a str, tls: &'a str) -> DialFuture<'a>;

    /// Whether a `tls-client` with this name is configured.
    fn has_tls_client(&self, name: &str) -> bool;
}

/// `ExtraData` of a remote unit, in Go's field order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct RemoteExtra {
    #[serde(rename = "RemoteNode", default)]
    pub(crate) remote_node: String,
    #[serde(rename = "RemoteWorkType", default)]
    pub(crate) remote_work_type: String,
    #[serde(rename = "RemoteParams", default)]
    pub(crate) remote_params: BTreeMap<String, String>,
    #[serde(rename = "RemoteUnitID", default)]
    pub(crate) remote_unit_id: String,
    #[serde(rename = "RemoteStarted", default)]
    pub(crate) remote_started: bool,
    #[serde(rename = "LocalCancelled", default)]
    pub(crate) local_cancelled: bool,
    #[serde(rename = "LocalReleased", default)]
    pub(crate) local_released: bool,
    #[serde(rename = "SignWork", default)]
    pub(crate) sign_work: bool,
    #[serde(rename = "TLSClient", default)]
    pub(crate) tls_client: String,
    #[serde(rename = "Expiration", default)]
    pub(crate) expiration: String,
}

impl RemoteExtra {
    pub(crate) fn parse(raw: Option<&str>) -> Option<Self> {
        raw.and_then(|raw| serde_json::from_str(raw).ok())
    }

    fn to_json(&self) -> String {
        crate::gojson::to_go_json(self)
    }

    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        if self.expiration.is_empty() || self.expiration == ZERO_TIME {
            return None;
        }
        let t = time::OffsetDateTime::parse(
            &self.expiration,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()?;
        Some(SystemTime::from(t))
    }
}

/// A remote unit's `ExtraData` as shown to clients: without its secret parameters.
pub(crate) fn public_extra_data(extra_data: Option<&str>) -> ExtraData {
    match RemoteExtra::parse(extra_data) {
        Some(mut extra) => {
            extra.remote_params.retain(|k, _| !is_secret(k));
            ExtraData::Json(extra.to_json())
        }
        None => extra_data.map_or(ExtraData::Null, |raw| ExtraData::Json(raw.to_owned())),
    }
}

/// The `Expiration` of a remote unit submitted now with `ttl`: Go's zero time for none.
pub(crate) fn expiration(ttl: Option<Duration>) -> String {
    match ttl {
        None => ZERO_TIME.to_owned(),
        Some(ttl) => rfc3339(SystemTime::now() + ttl),
    }
}

/// Secrets are keys starting with `secret_`, case-insensitively.
pub(crate) fn is_secret(key: &str) -> bool {
    // Compared as bytes: a key's 7th byte may sit inside a multi-byte character.
    key.as_bytes()
        .get(..7)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"secret_"))
}

/// Go's `Mon Jan 2 15:04:05` (UTC here).
fn go_stamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day padding:none] [hour]:[minute]:[second]"
    );
    t.format(&fmt).unwrap_or_default()
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ZERO_TIME.to_owned())
}

/// What went wrong talking to the remote node.
#[derive(Debug, Clone)]
enum Failure {
    /// Could not reach it, or the connection broke: retry.
    Connection(DialFailure),
    /// It answered with an error (or nonsense): retrying will not help.
    Remote(String),
}

impl Failure {
    fn io(error: &std::io::Error) -> Self {
        Self::Connection(DialFailure {
            message: super::go_io_error(error),
            tls: false,
        })
    }

    fn text(&self) -> &str {
        match self {
            Self::Connection(f) => &f.message,
            Self::Remote(m) => m,
        }
    }
}

/// A control session with the remote node, greeting checked.
struct Session {
    conn: BufReader<Box<dyn MeshConn>>,
}

impl Session {
    async fn line(&mut self, limit: Duration) -> Result<String, Failure> {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            limit,
            (&mut self.conn).take(MAX_REPLY).read_until(b'\n', &mut buf),
        )
        .await
        .map_err(|_| {
            Failure::Connection(DialFailure {
                message: "timed out waiting for the remote node".to_owned(),
                tls: false,
            })
        })?
        .map_err(|e| Failure::io(&e))?;
        if read == 0 {
            return Err(Failure::Connection(DialFailure {
                message: "connection closed by the remote node".to_owned(),
                tls: false,
            }));
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
    }

    async fn send(&mut self, text: &str) -> Result<(), Failure> {
        let conn = self.conn.get_mut();
        conn.write_all(text.as_bytes())
            .await
            .map_err(|e| Failure::io(&e))?;
        conn.flush().await.map_err(|e| Failure::io(&e))
    }
}

/// What the remote reported last.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteState {
    state: State,
    detail: String,
    size: i64,
}

/// Shared between a unit's status monitor and results fetcher.
#[derive(Debug)]
struct Mirror {
    /// The remote's last reported state; the fetcher wakes on its changes.
    remote: tokio::sync::watch::Sender<Option<RemoteState>>,
    last_contact: std::sync::Mutex<Instant>,
    /// Asks a *polling* status monitor for a fresh state now (a watching one gets every
    /// change pushed anyway).
    poke: tokio::sync::Notify,
}

impl Mirror {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            remote: tokio::sync::watch::Sender::new(None),
            last_contact: std::sync::Mutex::new(Instant::now()),
            poke: tokio::sync::Notify::new(),
        })
    }

    /// Changes of the remote state.
    fn changes(&self) -> tokio::sync::watch::Receiver<Option<RemoteState>> {
        self.remote.subscribe()
    }

    fn touch(&self) {
        *self.last_contact.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn silent_for(&self) -> Duration {
        self.last_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    fn remote(&self) -> Option<RemoteState> {
        self.remote.borrow().clone()
    }

    fn set(&self, state: RemoteState) {
        self.remote.send_if_modified(|current| {
            if current.as_ref() == Some(&state) {
                false
            } else {
                *current = Some(state);
                true
            }
        });
    }

    /// The remote is finished and every byte it reported is here.
    fn done(&self, local: u64) -> bool {
        self.remote()
            .is_some_and(|r| r.state.is_final() && local >= u64::try_from(r.size).unwrap_or(0))
    }
}

/// What every remote task needs.
#[derive(Debug)]
struct Ctx {
    dialer: Option<Arc<dyn MeshDialer>>,
    signer: Option<Signer>,
    unreachable: Duration,
}

impl Ctx {
    async fn connect(&self, extra: &RemoteExtra) -> Result<Session, Failure> {
        let Some(dialer) = &self.dialer else {
            return Err(Failure::Remote(
                "this node cannot reach other nodes".to_owned(),
            ));
        };
        let conn = dialer
            .dial(&extra.remote_node, "control", &extra.tls_client)
            .await
            .map_err(Failure::Connection)?;
        let mut session = Session {
            conn: BufReader::new(conn),
        };
        let greeting = session.line(GREETING_TIMEOUT).await?;
        if !greeting.contains(&extra.remote_node) {
            return Err(Failure::Connection(DialFailure {
                message: format!(
                    "while expecting node ID {}, got message: {greeting}",
                    extra.remote_node
                ),
                tls: false,
            }));
        }
        Ok(session)
    }

    fn signature(&self, extra: &RemoteExtra) -> Result<Option<String>, Failure> {
        if !extra.sign_work {
            return Ok(None);
        }
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| Failure::Remote(super::SignError::NoKey.to_string()))?;
        signer
            .sign(&extra.remote_node, SystemTime::now())
            .map(Some)
            .map_err(|e| Failure::Remote(e.to_string()))
    }

    /// A one-line request (`cancel`, `release`): Go's check of the reply's first 5 bytes.
    async fn simple(&self, extra: &RemoteExtra, subcommand: &str) -> Result<String, Failure> {
        let mut request = serde_json::Map::new();
        request.insert("command".into(), "work".into());
        request.insert("subcommand".into(), subcommand.into());
        request.insert("unitid".into(), extra.remote_unit_id.clone().into());
        if let Some(signature) = self.signature(extra)? {
            request.insert("signature".into(), signature.into());
        }
        let mut session = self.connect(extra).await?;
        session
            .send(&format!("{}\n", crate::gojson::to_go_json(&request)))
            .await?;
        let reply = session.line(REPLY_TIMEOUT).await?;
        match reply.strip_prefix("ERROR") {
            Some(rest) => Err(Failure::Remote(
                rest.trim_start_matches(':').trim_start().to_owned(),
            )),
            None => Ok(reply),
        }
    }
}

/// Go's reconnect delays: 1 s, ×1.5, at most 60 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(BACKOFF_FIRST)
    }

    fn next(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 3 / 2).min(BACKOFF_CAP);
        delay
    }
}

/// Sleeps unless `token` fires first; returns false when it fired.
async fn pause(token: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        () = token.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// The `remote` work type.
#[derive(Debug)]
pub(crate) struct RemoteWorker {
    ctx: Arc<Ctx>,
    default_ttl: Option<Duration>,
    spawner: Spawner,
    /// The background job (start loop, monitors, cancel or release retries) of each unit.
    jobs: Arc<std::sync::Mutex<HashMap<String, CancellationToken>>>,
}

/// Everything the engine tells the remote worker.
#[derive(Debug, Clone)]
pub(crate) struct RemoteSettings {
    pub(crate) dialer: Option<Arc<dyn MeshDialer>>,
    pub(crate) signer: Option<Signer>,
    pub(crate) unreachable: Duration,
    /// The ttl of submissions that give none (`node.workttl`).
    pub(crate) default_ttl: Option<Duration>,
}

impl RemoteWorker {
    pub(crate) fn new(settings: RemoteSettings, spawner: Spawner) -> Self {
        Self {
            ctx: Arc::new(Ctx {
                dialer: settings.dialer,
                signer: settings.signer,
                unreachable: settings.unreachable,
            }),
            default_ttl: settings.default_ttl,
            spawner,
            jobs: Arc::default(),
        }
    }

    /// Go's remote branch of submission (§2.5): checks and the initial `ExtraData`.
    pub(crate) fn prepare_submit(
        &self,
        request: &super::SubmitRequest,
    ) -> Result<String, WorkerError> {
        if request.tls_client.is_empty() && request.params.keys().any(|k| is_secret(k)) {
            return Err(WorkerError(
                "cannot send secrets over a non-TLS connection".to_owned(),
            ));
        }
        if !request.tls_client.is_empty()
            && !self
                .ctx
                .dialer
                .as_ref()
                .is_some_and(|d| d.has_tls_client(&request.tls_client))
        {
            return Err(WorkerError(format!(
                "unknown TLS config {}",
                request.tls_client
            )));
        }
        let ttl = if request.ttl.is_empty() {
            self.default_ttl
        } else {
            Some(crate::config::parse_duration(&request.ttl).map_err(WorkerError)?)
        };
        if let Some(ttl) = ttl
            && request.sign_work
            && let Some(signer) = &self.ctx.signer
            && ttl > signer.expiration()
        {
            tracing::warn!(ttl = ?ttl, "ttl is longer than the work-signing token expiration");
        }
        let expiration = expiration(ttl);
        Ok(RemoteExtra {
            remote_node: request.node.clone(),
            remote_work_type: request.work_type.clone(),
            remote_params: request.params.clone(),
            tls_client: request.tls_client.clone(),
            sign_work: request.sign_work,
            expiration,
            ..RemoteExtra::default()
        }
        .to_json())
    }

    /// Replaces the unit's background job with a fresh one.
    fn new_job(&self, unit: &Unit) -> CancellationToken {
        let token = CancellationToken::new();
        if let Some(old) = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(unit.id().to_string(), token.clone())
        {
            old.cancel();
        }
        token
    }

    fn stop_job(&self, unit: &Unit) {
        if let Some(old) = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(unit.id().as_str())
        {
            old.cancel();
        }
    }

    /// Spawns `task` as the unit's job; the map entry goes when it ends.
    fn spawn_job(
        &self,
        unit: &Arc<Unit>,
        token: CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let jobs = Arc::clone(&self.jobs);
        let id = unit.id().to_string();
        self.spawner.spawn(async move {
            tokio::select! {
                biased;
                () = token.cancelled() => {}
                () = task => {}
            }
            let mut jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
            if jobs
                .get(&id)
                .is_some_and(|t| t.is_cancelled() || t == &token)
            {
                jobs.remove(&id);
            }
        });
    }

    fn spawn_monitors(&self, unit: &Arc<Unit>) {
        let token = self.new_job(unit);
        // Lasts while the remote unit runs and its results come back.
        let span = tracing::info_span!("work.run", work.unit_id = %unit.id(), work.type = super::REMOTE_WORK_TYPE);
        unit.join_trace(&span);
        let task = monitor(Arc::clone(&self.ctx), Arc::clone(unit), token.clone()).instrument(span);
        self.spawn_job(unit, token, task);
    }

    async fn start_unit(&self, unit: &Arc<Unit>) -> Result<StartOutcome, WorkerError> {
        let extra = extra_of(unit)?;
        if extra.remote_started {
            return Err(WorkerError("unit was already started".to_owned()));
        }
        if let Some(at) = extra.expires_at()
            && SystemTime::now() >= at
        {
            expire(unit, at).await;
            return Ok(StartOutcome::Submitted);
        }
        match submit_once(&self.ctx, unit).await {
            Ok(()) => {
                self.spawn_monitors(unit);
                Ok(StartOutcome::Started)
            }
            Err(Failure::Remote(message)) => Err(WorkerError(message)),
            Err(Failure::Connection(failure)) => {
                tracing::info!(unit = %unit.id(), node = %extra.remote_node, error = %failure.message, "Connection to remote node failed; retrying in the background");
                self.spawn_start_loop(unit, failure);
                Ok(StartOutcome::Submitted)
            }
        }
    }

    fn spawn_start_loop(&self, unit: &Arc<Unit>, first: DialFailure) {
        let token = self.new_job(unit);
        let task = start_loop(
            Arc::clone(&self.ctx),
            Arc::clone(unit),
            token.clone(),
            first,
        );
        self.spawn_job(unit, token, task);
    }

    async fn cancel_unit(&self, unit: &Arc<Unit>) -> Result<Outcome, WorkerError> {
        let extra = set_flags(unit, true, false).await?;
        if extra.remote_unit_id.is_empty() {
            self.stop_job(unit);
            if !unit.status().state.is_final() {
                unit.set_state(State::FAILED, "Locally Cancelled", Some(0))
                    .await;
            }
            return Ok(Outcome::Done);
        }
        match self.ctx.simple(&extra, "cancel").await {
            Ok(_) => Ok(Outcome::Done),
            Err(Failure::Remote(message)) => Err(WorkerError(message)),
            Err(Failure::Connection(failure)) => {
                tracing::info!(unit = %unit.id(), error = %failure.message, "remote cancel failed; retrying in the background");
                // The monitors keep running; a separate task retries the cancel.
                let ctx = Arc::clone(&self.ctx);
                let unit = Arc::clone(unit);
                self.spawner.spawn(async move {
                    let mut backoff = Backoff::new();
                    let since = Instant::now();
                    while !unit.is_released() && since.elapsed() < ctx.unreachable {
                        tokio::time::sleep(backoff.next()).await;
                        match ctx.simple(&extra, "cancel").await {
                            Ok(_) => return,
                            Err(Failure::Remote(message)) => {
                                tracing::warn!(unit = %unit.id(), %message, "remote cancel refused");
                                return;
                            }
                            Err(Failure::Connection(_)) => {}
                        }
                    }
                });
                Ok(Outcome::Pending)
            }
        }
    }

    async fn release_unit(&self, unit: &Arc<Unit>, force: bool) -> Result<Outcome, WorkerError> {
        let extra = match set_flags(unit, true, true).await {
            Ok(extra) => extra,
            Err(error) if force => {
                tracing::warn!(unit = %unit.id(), %error, "force-release: status not updated");
                RemoteExtra::parse(unit.status().extra_data.as_deref()).unwrap_or_default()
            }
            Err(error) => return Err(error),
        };
        self.stop_job(unit);
        if extra.remote_unit_id.is_empty() {
            return Ok(Outcome::Done);
        }
        if force {
            let attempt =
                tokio::time::timeout(REPLY_TIMEOUT, self.ctx.simple(&extra, "release")).await;
            match attempt {
                Ok(Ok(_)) => {}
                Ok(Err(failure)) => {
                    tracing::warn!(unit = %unit.id(), error = %failure.text(), "force-release: remote release failed");
                }
                Err(_) => {
                    tracing::warn!(unit = %unit.id(), "force-release: remote release timed out");
                }
            }
            return Ok(Outcome::Done);
        }
        match self.ctx.simple(&extra, "release").await {
            Ok(_) => Ok(Outcome::Done),
            Err(Failure::Remote(message)) if message.contains("unknown work unit") => {
                Ok(Outcome::Done)
            }
            Err(Failure::Remote(message)) => Err(WorkerError(message)),
            Err(Failure::Connection(failure)) => {
                tracing::info!(unit = %unit.id(), error = %failure.message, "remote release failed; retrying in the background");
                self.spawn_release_loop(unit, extra);
                Ok(Outcome::Pending)
            }
        }
    }

    fn spawn_release_loop(&self, unit: &Arc<Unit>, extra: RemoteExtra) {
        let token = self.new_job(unit);
        let task = release_loop(
            Arc::clone(&self.ctx),
            Arc::clone(unit),
            token.clone(),
            extra,
        );
        self.spawn_job(unit, token, task);
    }

    async fn restart_unit(&self, unit: &Arc<Unit>) -> Result<(), WorkerError> {
        let extra = extra_of(unit)?;
        let status = unit.status();
        if extra.local_released {
            if extra.remote_unit_id.is_empty() {
                let dir = unit.dir().to_owned();
                let _ = tokio::task::spawn_blocking(move || super::remove_unit_dir(&dir)).await;
                unit.mark_released();
            } else {
                self.spawn_release_loop(unit, extra);
            }
            return Ok(());
        }
        if extra.remote_unit_id.is_empty() {
            if status.state.is_final() {
                return Ok(());
            }
            if extra.local_cancelled {
                unit.set_state(State::FAILED, "Locally Cancelled", Some(0))
                    .await;
                return Ok(());
            }
            // Go fails these ("remote work had not previously started"); the payload is on
            // disk, so the start simply continues.
            self.spawn_start_loop(
                unit,
                DialFailure {
                    message: "node restarted".to_owned(),
                    tls: false,
                },
            );
            return Ok(());
        }
        let local = u64::try_from(unit.stdout_size().await).unwrap_or(0);
        if status.state.is_final() && local >= u64::try_from(status.stdout_size).unwrap_or(0) {
            return Ok(());
        }
        if extra.local_cancelled {
            let ctx = Arc::clone(&self.ctx);
            let extra = extra.clone();
            let id = unit.id().to_string();
            self.spawner.spawn(async move {
                if let Err(failure) = ctx.simple(&extra, "cancel").await {
                    tracing::warn!(unit = %id, error = %failure.text(), "remote cancel after restart failed");
                }
            });
        }
        self.spawn_monitors(unit);
        Ok(())
    }
}

fn extra_of(unit: &Unit) -> Result<RemoteExtra, WorkerError> {
    RemoteExtra::parse(unit.status().extra_data.as_deref())
        .ok_or_else(|| WorkerError("remote unit has no valid ExtraData".to_owned()))
}

async fn update_extra(
    unit: &Arc<Unit>,
    change: impl FnOnce(&mut RemoteExtra) + Send + 'static,
) -> Result<RemoteExtra, WorkerError> {
    let written = unit
        .update(move |s| {
            let mut extra = RemoteExtra::parse(s.extra_data.as_deref()).unwrap_or_default();
            change(&mut extra);
            s.extra_data = Some(extra.to_json());
        })
        .await
        .map_err(|e| WorkerError(super::chain(&e)))?;
    RemoteExtra::parse(written.extra_data.as_deref())
        .ok_or_else(|| WorkerError("remote unit has no valid ExtraData".to_owned()))
}

async fn set_flags(
    unit: &Arc<Unit>,
    cancelled: bool,
    released: bool,
) -> Result<RemoteExtra, WorkerError> {
    update_extra(unit, move |e| {
        e.local_cancelled |= cancelled;
        e.local_released |= released;
    })
    .await
}

async fn fail(unit: &Arc<Unit>, detail: String) {
    let size = unit.stdout_size().await;
    unit.set_state(State::FAILED, detail, Some(size)).await;
}

async fn expire(unit: &Arc<Unit>, at: SystemTime) {
    fail(unit, format!("Work unit expired on {}", go_stamp(at))).await;
}

/// One submission attempt (§1.5 "submit"), in a `work.transfer` span of the unit's trace
/// whose context goes to the remote node (`traceparent`), so its spans join the trace.
async fn submit_once(ctx: &Ctx, unit: &Arc<Unit>) -> Result<(), Failure> {
    let span = tracing::info_span!(
        "work.transfer",
        work.unit_id = %unit.id(),
        peer.id = tracing::field::Empty,
        work.remote_unit_id = tracing::field::Empty,
    );
    unit.join_trace(&span);
    submit_once_in_span(ctx, unit).instrument(span).await
}

async fn submit_once_in_span(ctx: &Ctx, unit: &Arc<Unit>) -> Result<(), Failure> {
    let extra = extra_of(unit).map_err(|e| Failure::Remote(e.0))?;
    let span = tracing::Span::current();
    span.record("peer.id", extra.remote_node.as_str());
    let signature = ctx.signature(&extra)?;
    let mut request = serde_json::Map::new();
    for (key, value) in &extra.remote_params {
        request.insert(key.clone(), value.clone().into());
    }
    request.insert("command".into(), "work".into());
    request.insert("subcommand".into(), "submit".into());
    request.insert("node".into(), extra.remote_node.clone().into());
    request.insert("worktype".into(), extra.remote_work_type.clone().into());
    request.insert("tlsclient".into(), extra.tls_client.clone().into());
    if let Some(signature) = signature {
        request.insert("signature".into(), signature.into());
    }
    // Only with telemetry on: otherwise the request is exactly Go's. A Go executor takes it
    // as one more work parameter, which its command and kubernetes workers ignore.
    if let Some(parent) = crate::telemetry::TraceParent::of(&span).header() {
        request.insert(crate::telemetry::TRACEPARENT.into(), parent.into());
    }
    let mut stdin = tokio::fs::File::open(unit.stdin_path())
        .await
        .map_err(|e| Failure::Remote(format!("cannot read stdin: {}", super::go_io_error(&e))))?;
    let mut session = ctx.connect(&extra).await?;
    session
        .send(&format!("{}\n", crate::gojson::to_go_json(&request)))
        .await?;
    let reply = session.line(REPLY_TIMEOUT).await?;
    let id = regex_id(&reply)
        .ok_or_else(|| Failure::Remote(format!("could not parse response: {reply}")))?;
    let remote_id = id.to_owned();
    span.record("work.remote_unit_id", remote_id.as_str());
    update_extra(unit, move |e| e.remote_unit_id = remote_id)
        .await
        .map_err(|e| Failure::Remote(e.0))?;
    {
        let conn = session.conn.get_mut();
        // Large reads: each read of a tokio file is a trip to the blocking pool, and
        // `io::copy`'s 8 KiB buffer would make that thousands of trips per 50 MB.
        let mut stdin = BufReader::with_capacity(super::PAYLOAD_CHUNK, &mut stdin);
        tokio::io::copy_buf(&mut stdin, conn)
            .await
            .map_err(|e| Failure::io(&e))?;
        conn.shutdown().await.map_err(|e| Failure::io(&e))?;
    }
    match session.line(SUBMIT_RESULT_TIMEOUT).await {
        Ok(result) => {
            if let Some(at) = result.find("ERROR: ") {
                return Err(Failure::Remote(format!(
                    "error from remote: {}",
                    &result[at + 7..]
                )));
            }
        }
        Err(failure) => {
            // The payload went out but the answer was lost: the remote may well run the
            // unit. Monitoring it (rather than submitting again) never runs the work twice;
            // if the remote did not get everything, its own Detail says so.
            tracing::warn!(unit = %unit.id(), error = %failure.text(), "no submit result from the remote node; monitoring the remote unit");
        }
    }
    update_extra(unit, |e| e.remote_started = true)
        .await
        .map_err(|e| Failure::Remote(e.0))?;
    Ok(())
}

/// Go's `with ID ([a-zA-Z0-9]+)\.`.
fn regex_id(line: &str) -> Option<&str> {
    let at = line.find("with ID ")? + 8;
    let rest = &line[at..];
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    (end > 0 && rest[end..].starts_with('.')).then(|| &rest[..end])
}

/// Keeps trying to start a unit whose remote node could not be reached.
async fn start_loop(ctx: Arc<Ctx>, unit: Arc<Unit>, token: CancellationToken, first: DialFailure) {
    let Ok(extra) = extra_of(&unit) else { return };
    let expires = extra.expires_at();
    let since = Instant::now();
    let mut backoff = Backoff::new();
    let mut last = first;
    loop {
        if last.tls {
            fail(
                &unit,
                format!("TLS error connecting to remote service: {}", last.message),
            )
            .await;
            return;
        }
        if since.elapsed() >= ctx.unreachable {
            fail(
                &unit,
                format!(
                    "Remote node {} unreachable for {}; the work was not started: {}",
                    extra.remote_node,
                    crate::ops::go_duration(ctx.unreachable),
                    last.message
                ),
            )
            .await;
            return;
        }
        let mut delay = backoff
            .next()
            .min(ctx.unreachable.saturating_sub(since.elapsed()));
        if let Some(at) = expires {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            if left.is_zero() {
                expire(&unit, at).await;
                return;
            }
            delay = delay.min(left);
        }
        if !pause(&token, delay).await {
            return;
        }
        if let Some(at) = expires
            && SystemTime::now() >= at
        {
            expire(&unit, at).await;
            return;
        }
        let attempt = {
            let _op = unit.op_lock.lock().await;
            if token.is_cancelled() || unit.status().state.is_final() {
                return;
            }
            submit_once(&ctx, &unit).await
        };
        match attempt {
            Ok(()) => {
                tracing::info!(unit = %unit.id(), node = %extra.remote_node, "remote unit started");
                monitor(ctx, unit, token).await;
                return;
            }
            Err(Failure::Remote(message)) => {
                fail(&unit, message).await;
                return;
            }
            Err(Failure::Connection(failure)) => {
                tracing::info!(unit = %unit.id(), node = %extra.remote_node, error = %failure.message, "Connection to remote node failed");
                last = failure;
            }
        }
    }
}

/// Sends `release` until it gets through (or the node stays unreachable too long), then
/// deletes the local unit.
async fn release_loop(
    ctx: Arc<Ctx>,
    unit: Arc<Unit>,
    token: CancellationToken,
    extra: RemoteExtra,
) {
    let since = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match ctx.simple(&extra, "release").await {
            Ok(_) => break,
            Err(Failure::Remote(message)) if message.contains("unknown work unit") => break,
            Err(Failure::Remote(message)) => {
                tracing::warn!(unit = %unit.id(), %message, "remote release refused; releasing locally");
                break;
            }
            Err(Failure::Connection(failure)) => {
                if since.elapsed() >= ctx.unreachable {
                    tracing::warn!(unit = %unit.id(), node = %extra.remote_node, error = %failure.message, "remote node unreachable; releasing locally only");
                    break;
                }
            }
        }
        if !pause(&token, backoff.next()).await {
            return;
        }
    }
    let dir = unit.dir().to_owned();
    for _ in 0..3 {
        let dir = dir.clone();
        let removed = tokio::task::spawn_blocking(move || super::remove_unit_dir(&dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match removed {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(unit = %unit.id(), %error, "cannot remove unit directory, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    unit.mark_released();
}

/// Runs the status monitor and the results fetcher until the unit is done.
async fn monitor(ctx: Arc<Ctx>, unit: Arc<Unit>, token: CancellationToken) {
    let Ok(extra) = extra_of(&unit) else { return };
    let mirror = Mirror::new();
    let status = status_monitor(&ctx, &unit, &extra, &mirror, &token);
    let fetch = fetcher(&ctx, &unit, &extra, &mirror, &token);
    // Whichever ends first ends both (as in Go): the fetcher ends when all is here, the
    // status monitor when the unit failed locally.
    tokio::select! {
        () = status => {}
        () = fetch => {}
    }
}

/// Copies the remote state into the local status: a final state only once every byte the
/// remote reported is in the local `stdout`.
async fn apply(unit: &Arc<Unit>, mirror: &Mirror) {
    let Some(remote) = mirror.remote() else {
        return;
    };
    let local = unit.stdout_size().await;
    let state = if remote.state.is_final() && local < remote.size {
        State::RUNNING
    } else {
        remote.state
    };
    let current = unit.status();
    if current.state == state
        && current.detail == remote.detail
        && current.stdout_size == remote.size
    {
        return;
    }
    unit.set_state(state, remote.detail, Some(remote.size))
        .await;
}

#[derive(Deserialize)]
struct StatusReply {
    #[serde(rename = "State", default)]
    state: i64,
    #[serde(rename = "Detail", default)]
    detail: String,
    #[serde(rename = "StdoutSize", default)]
    stdout_size: i64,
}

/// Follows the remote unit's state: pushed by `work watch` where the remote node is this
/// implementation, polled with Go's `work status` every second where it answers
/// `ERROR: bad command` (a Go node). Either way, connection problems renew the session,
/// and a remote that stays unreachable too long fails the unit.
async fn status_monitor(
    ctx: &Ctx,
    unit: &Arc<Unit>,
    extra: &RemoteExtra,
    mirror: &Mirror,
    token: &CancellationToken,
) {
    let mut session: Option<Session> = None;
    let mut backoff = Backoff::new();
    // Until the remote shows it does not know `work watch`.
    let mut push = true;
    let request = format!("work status {}\n", extra.remote_unit_id);
    loop {
        if token.is_cancelled() || unit.is_released() {
            return;
        }
        let mut current = match session.take() {
            Some(s) => s,
            None => match ctx.connect(extra).await {
                Ok(s) => {
                    backoff = Backoff::new();
                    s
                }
                Err(failure) => {
                    if mirror.silent_for() >= ctx.unreachable {
                        fail(
                            unit,
                            format!(
                                "Remote node {} unreachable for {} (remote unit {} may still exist): {}",
                                extra.remote_node,
                                crate::ops::go_duration(ctx.unreachable),
                                extra.remote_unit_id,
                                failure.text()
                            ),
                        )
                        .await;
                        return;
                    }
                    tracing::debug!(unit = %unit.id(), error = %failure.text(), "status monitor: cannot reach the remote node");
                    let left = ctx.unreachable.saturating_sub(mirror.silent_for());
                    if !pause(
                        token,
                        backoff.next().min(left.max(Duration::from_millis(50))),
                    )
                    .await
                    {
                        return;
                    }
                    continue;
                }
            },
        };
        if push {
            match watch(unit, extra, mirror, token, &mut current).await {
                Watched::Stop => return,
                Watched::Lost(failure) => {
                    tracing::debug!(unit = %unit.id(), error = %failure.text(), "status watch: connection lost");
                    continue;
                }
                Watched::Unsupported => {
                    tracing::debug!(unit = %unit.id(), node = %extra.remote_node, "remote node has no work watch; polling its status");
                    push = false;
                }
            }
        }
        let reply = match current.send(&request).await {
            Ok(()) => current.line(REPLY_TIMEOUT).await,
            Err(f) => Err(f),
        };
        let line = match reply {
            Ok(line) => line,
            Err(failure) => {
                tracing::debug!(unit = %unit.id(), error = %failure.text(), "status monitor: connection lost");
                continue;
            }
        };
        session = Some(current);
        if !take_status_line(unit, mirror, &line).await || finished(unit, mirror).await {
            return;
        }
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            () = mirror.poke.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// How a `work watch` ended.
enum Watched {
    /// The unit is done (or gone, or the job was cancelled): stop monitoring.
    Stop,
    /// The session broke: reconnect.
    Lost(Failure),
    /// The remote does not know `work watch` (Go answers `ERROR: bad command`); the session
    /// is still usable for polling.
    Unsupported,
}

/// Follows the remote unit on `session` with `work watch` until it is done.
async fn watch(
    unit: &Arc<Unit>,
    extra: &RemoteExtra,
    mirror: &Mirror,
    token: &CancellationToken,
    session: &mut Session,
) -> Watched {
    let request = format!("work watch {}\n", extra.remote_unit_id);
    if let Err(failure) = session.send(&request).await {
        return Watched::Lost(failure);
    }
    let mut limit = REPLY_TIMEOUT;
    loop {
        let line = tokio::select! {
            biased;
            () = token.cancelled() => return Watched::Stop,
            line = session.line(limit) => match line {
                Ok(line) => line,
                Err(failure) => return Watched::Lost(failure),
            },
        };
        if limit == REPLY_TIMEOUT && line.starts_with("ERROR") && line.contains("bad command") {
            return Watched::Unsupported;
        }
        limit = WATCH_SILENCE;
        if !take_status_line(unit, mirror, &line).await || finished(unit, mirror).await {
            return Watched::Stop;
        }
    }
}

/// Applies one status line from the remote (`work status` or `work watch`); false when
/// monitoring must stop (the remote unit is gone).
async fn take_status_line(unit: &Arc<Unit>, mirror: &Mirror, line: &str) -> bool {
    mirror.touch();
    if line.starts_with("ERROR") {
        if line.contains("unknown work unit") {
            fail(unit, "Remote work unit is gone".to_owned()).await;
            return false;
        }
        tracing::warn!(unit = %unit.id(), reply = %line, "remote status error");
        return true;
    }
    match serde_json::from_str::<StatusReply>(line) {
        Ok(reply) => {
            mirror.set(RemoteState {
                state: State(reply.state),
                detail: reply.detail,
                size: reply.stdout_size,
            });
            apply(unit, mirror).await;
        }
        Err(error) => {
            tracing::warn!(unit = %unit.id(), %error, reply = %line, "unreadable remote status");
        }
    }
    true
}

/// The remote is finished, every byte it reported is here, and the local unit shows it.
async fn finished(unit: &Arc<Unit>, mirror: &Mirror) -> bool {
    let local = u64::try_from(unit.stdout_size().await).unwrap_or(0);
    mirror.done(local) && unit.status().state.is_final()
}

async fn fetcher(
    ctx: &Ctx,
    unit: &Arc<Unit>,
    extra: &RemoteExtra,
    mirror: &Mirror,
    token: &CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut changes = mirror.changes();
    loop {
        if token.is_cancelled() || unit.is_released() {
            return;
        }
        let opened = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(unit.stdout_path())
            .await;
        let mut file = match opened {
            Ok(file) => file,
            Err(error) => {
                tracing::error!(unit = %unit.id(), %error, "cannot open stdout");
                if !pause(token, backoff.next()).await {
                    return;
                }
                continue;
            }
        };
        let mut local = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if mirror.done(local) {
            apply(unit, mirror).await;
            if unit.status().state.is_final() {
                return;
            }
        }
        changes.borrow_and_update();
        let span = tracing::info_span!("work.fetch", work.start_pos = local);
        match fetch_once(ctx, extra, mirror, token, &mut file, &mut local)
            .instrument(span)
            .await
        {
            Ok(()) => backoff = Backoff::new(),
            Err(failure) => {
                tracing::debug!(unit = %unit.id(), error = %failure.text(), "results fetch interrupted");
            }
        }
        let _ = file.sync_data().await;
        // Ask the status monitor for a fresh remote state now rather than in a second.
        // notify_one keeps the request if the monitor is busy with a poll right now;
        // notify_waiters would lose it and stall the unit for a whole poll interval.
        mirror.poke.notify_one();
        apply(unit, mirror).await;
        if mirror.done(local) && unit.status().state.is_final() {
            return;
        }
        // Fetch again once the remote reports something new (its final state, typically,
        // when its stream ended first), or after the backoff when the stream broke.
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// One `work results` stream, appended to `file` from `local`.
async fn fetch_once(
    ctx: &Ctx,
    extra: &RemoteExtra,
    mirror: &Mirror,
    token: &CancellationToken,
    file: &mut tokio::fs::File,
    local: &mut u64,
) -> Result<(), Failure> {
    let mut request = serde_json::Map::new();
    request.insert("command".into(), "work".into());
    request.insert("subcommand".into(), "results".into());
    request.insert("unitid".into(), extra.remote_unit_id.clone().into());
    request.insert("startpos".into(), (*local).into());
    if let Some(signature) = ctx.signature(extra)? {
        request.insert("signature".into(), signature.into());
    }
    let mut session = ctx.connect(extra).await?;
    session
        .send(&format!("{}\n", crate::gojson::to_go_json(&request)))
        .await?;
    let head = session.line(REPLY_TIMEOUT).await?;
    if !head.contains("Streaming results") {
        return Err(Failure::Remote(format!("unexpected results reply: {head}")));
    }
    mirror.touch();
    let _ = session.conn.get_mut().shutdown().await;
    let mut buf = vec![0u8; FETCH_CHUNK];
    let mut changes = mirror.changes();
    let mut last_read = Instant::now();
    loop {
        let read = tokio::select! {
            biased;
            () = token.cancelled() => return Ok(()),
            read = session.conn.read(&mut buf) => read,
            () = tokio::time::sleep_until(last_read + FETCH_STALL) => {
                let behind = mirror
                    .remote()
                    .is_some_and(|r| u64::try_from(r.size).unwrap_or(0) > *local);
                if behind {
                    return Err(Failure::Remote(format!(
                        "no results for {FETCH_STALL:?} while the remote reports more; reopening"
                    )));
                }
                last_read = Instant::now();
                continue;
            }
            // (The sender lives in `mirror`, which outlives this borrow: no error.)
            _ = changes.changed() => {
                // A Go remote never ends the stream of a Canceled unit: stop once the
                // remote's final size is here.
                if mirror.done(*local) {
                    return Ok(());
                }
                continue;
            }
        };
        let n = read.map_err(|e| Failure::io(&e))?;
        if n == 0 {
            return Ok(());
        }
        file.write_all(&buf[..n])
            .await
            .map_err(|e| Failure::Remote(format!("cannot write stdout: {e}")))?;
        file.flush()
            .await
            .map_err(|e| Failure::Remote(format!("cannot write stdout: {e}")))?;
        *local += n as u64;
        last_read = Instant::now();
        mirror.touch();
        // The state may have turned final before these last bytes came (see above).
        if mirror.done(*local) {
            return Ok(());
        }
    }
}

impl Worker for RemoteWorker {
    fn work_type(&self) -> &str {
        super::REMOTE_WORK_TYPE
    }

    fn verify_signature(&self) -> bool {
        false
    }

    fn requires_signature(&self, status: &super::Status) -> bool {
        RemoteExtra::parse(status.extra_data.as_deref()).is_some_and(|e| e.sign_work)
    }

    fn prepare(&self, _params: &BTreeMap<String, String>) -> Result<Option<String>, WorkerError> {
        Err(WorkerError(
            "work type remote cannot be submitted directly; name the target node".to_owned(),
        ))
    }

    fn start<'a>(
        &'a self,
        unit: &'a Arc<Unit>,
        _spawner: &'a Spawner,
    ) -> BoxFuture<'a, Result<StartOutcome, WorkerError>> {
        Box::pin(self.start_unit(unit))
    }

    fn restart<'a>(
        &'a self,
        unit: &'a Arc<Unit>,
        _spawner: &'a Spawner,
    ) -> BoxFuture<'a, Result<(), WorkerError>> {
        Box::pin(self.restart_unit(unit))
    }

    fn cancel<'a>(&'a self, unit: &'a Arc<Unit>) -> BoxFuture<'a, Result<Outcome, WorkerError>> {
        Box::pin(self.cancel_unit(unit))
    }

    fn release<'a>(
        &'a self,
        unit: &'a Arc<Unit>,
        force: bool,
    ) -> BoxFuture<'a, Result<Outcome, WorkerError>> {
        Box::pin(self.release_unit(unit, force))
    }

    fn public_extra_data(&self, extra_data: Option<&str>) -> ExtraData {
        public_extra_data(extra_data)
    }

    fn stdout_complete_when_final(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `grpc_request` fuzz target: a submit parameter key whose 7th byte falls
    /// inside a multi-byte character (`secretƢ`) panicked on slicing. Submissions reach this
    /// from gRPC and the control socket; `ExtraData` from status files on disk too.
    #[test]
    fn secret_keys_with_multibyte_characters_do_not_panic() {
        assert!(!is_secret("secretƢx"));
        assert!(!is_secret("secret"));
        assert!(!is_secret("ƢƢƢƢ"));
        assert!(is_secret("secret_x"));
        assert!(is_secret("SeCrEt_Ƣ"));
        let shown = public_extra_data(Some(
            r#"{"RemoteNode":"n","RemoteParams":{"secretƢx":"a","Secret_y":"b","params":"-n"}}"#,
        ));
        let ExtraData::Json(json) = shown else {
            panic!("a remote unit's ExtraData must stay JSON: {shown:?}");
        };
        assert!(json.contains(r#""secretƢx":"a""#), "{json}");
        assert!(json.contains(r#""params":"-n""#), "{json}");
        assert!(!json.contains("Secret_y"), "a secret was shown: {json}");
    }

    #[test]
    fn unit_ids_are_parsed_like_go() {
        assert_eq!(
            regex_id("Work unit created with ID Ab3dE6gH. Send stdin data and EOF."),
            Some("Ab3dE6gH")
        );
        assert_eq!(regex_id("ERROR: unknown work type x"), None);
        assert_eq!(regex_id("with ID . x"), None);
    }

    #[test]
    fn extra_data_has_go_field_order() {
        let extra = RemoteExtra {
            remote_node: "b".into(),
            remote_work_type: "cat".into(),
            remote_params: [("params".to_owned(), "x".to_owned())].into(),
            expiration: ZERO_TIME.into(),
            ..RemoteExtra::default()
        };
        assert_eq!(
            extra.to_json(),
            r#"{"RemoteNode":"b","RemoteWorkType":"cat","RemoteParams":{"params":"x"},"RemoteUnitID":"","RemoteStarted":false,"LocalCancelled":false,"LocalReleased":false,"SignWork":false,"TLSClient":"","Expiration":"0001-01-01T00:00:00Z"}"#
        );
        assert!(extra.expires_at().is_none());
    }

    #[test]
    fn secrets_are_hidden_from_clients() {
        let worker = RemoteWorker::new(
            RemoteSettings {
                dialer: None,
                signer: None,
                unreachable: Duration::from_secs(1),
                default_ttl: None,
            },
            Spawner {
                tracker: tokio_util::task::TaskTracker::new(),
                cancel: CancellationToken::new(),
                dirs: super::super::fswatch::DirWatcher::default(),
            },
        );
        let extra = RemoteExtra {
            remote_params: [
                ("SECRET_x".to_owned(), "s".to_owned()),
                ("params".to_owned(), "p".to_owned()),
            ]
            .into(),
            ..RemoteExtra::default()
        };
        let ExtraData::Json(shown) = worker.public_extra_data(Some(&extra.to_json())) else {
            panic!("json expected");
        };
        assert!(
            shown.contains(r#""RemoteParams":{"params":"p"}"#),
            "{shown}"
        );
    }

    #[test]
    fn expiration_stamp_reads_like_go() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3661);
        assert_eq!(go_stamp(t), "Sun Jan 4 01:01:01");
        let text = rfc3339(t);
        let extra = RemoteExtra {
            expiration: text,
            ..RemoteExtra::default()
        };
        assert_eq!(extra.expires_at(), Some(t));
    }
}
