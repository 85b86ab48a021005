//! Unit IDs and the in-memory record of one work unit.
//!
//! A [`Unit`] owns the path of its directory and the last status known for it. Every status
//! change (ours, or one read back from the file a runner wrote) is published on a `watch`
//! channel, so `work list` never touches the disk and result streams wake on changes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::status::{Stamp, State, Status, StatusFile, UpdateError, stdout_size};
use super::{WorkEvent, Worker};

/// Length of the unit IDs we generate.
pub const UNIT_ID_LEN: usize = 8;
/// Longest unit ID accepted from clients or found on disk.
pub const MAX_UNIT_ID_LEN: usize = 64;
/// The file in a unit's directory that keeps its trace context (W3C `traceparent`); only
/// written while traces are exported. Go nodes neither write nor read it.
pub(crate) const TRACE_FILE: &str = "traceparent";
const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A unit ID that is safe to use as a directory name: 1 to 64 of `[0-9A-Za-z_-]`. Go
/// generates 8 alphanumerics; anything with `/`, `.` or other characters (path traversal such
/// as `../x` or `/etc`) is refused before any path is built from it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId(String);

/// A string that is not a valid unit ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid unit ID (1 to 64 letters, digits, '-' or '_')")]
pub struct InvalidUnitId(pub String);

impl UnitId {
    /// Validates `text`.
    ///
    /// # Errors
    /// See [`UnitId`] for the rules.
    pub fn parse(text: &str) -> Result<Self, InvalidUnitId> {
        let valid = !text.is_empty()
            && text.len() <= MAX_UNIT_ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidUnitId(text.to_owned()))
        }
    }

    /// A fresh ID: 8 characters drawn uniformly from `[0-9a-zA-Z]` with the OS CSPRNG.
    ///
    /// # Errors
    /// The system random source failed.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let rng = SystemRandom::new();
        let mut id = String::with_capacity(UNIT_ID_LEN);
        let mut buf = [0u8; 32];
        while id.len() < UNIT_ID_LEN {
            rng.fill(&mut buf)?;
            // Rejection sampling: 248 = 4 * 62, so every symbol is equally likely.
            for &b in buf.iter().filter(|&&b| b < 248) {
                if id.len() == UNIT_ID_LEN {
                    break;
                }
                id.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
        Ok(Self(id))
    }

    /// The ID text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What watchers of a unit see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) status: Status,
    /// The unit was released: its directory is gone or going.
    pub(crate) released: bool,
}

/// Where a unit reports its changes.
#[derive(Debug)]
pub(crate) struct Hooks {
    /// The engine's change feed ([`super::WorkEngine::watch`]).
    pub(crate) events: broadcast::Sender<WorkEvent>,
    pub(crate) metrics: crate::metrics::WorkMetrics,
    /// When the unit was submitted, if that happened in this process (for its duration).
    pub(crate) submitted_at: Option<tokio::time::Instant>,
}

/// One work unit in memory.
#[derive(Debug)]
pub(crate) struct Unit {
    id: UnitId,
    dir: PathBuf,
    file: StatusFile,
    /// The work type's worker; `None` for a unit whose type is not configured (it can be
    /// listed and released, nothing else).
    worker: Option<Arc<dyn Worker>>,
    snapshot: watch::Sender<Snapshot>,
    /// Serialises status read-modify-writes within this process (the file lock serialises
    /// them between processes).
    write_lock: std::sync::Mutex<()>,
    /// Serialises start, cancel and release.
    pub(crate) op_lock: tokio::sync::Mutex<()>,
    /// Fires when the unit is cancelled or released: aborts a payload upload in progress.
    pub(crate) abort_input: CancellationToken,
    hooks: Hooks,
    /// The context of the unit's `work.unit` span, set at submission and kept on disk.
    trace: std::sync::OnceLock<crate::telemetry::TraceParent>,
    /// The unit was counted in `receptor_work_units_finished_total` (or was already final
    /// when it came into memory): each unit is counted once, in its settled final state.
    finish_counted: AtomicBool,
    /// A cancel is in progress: a `Failed` written meanwhile (the killed runner's) is not the
    /// outcome yet; see [`Unit::cancelling`].
    cancelling: AtomicBool,
}

/// Marks a cancel in progress; see [`Unit::cancelling`].
#[derive(Debug)]
pub(crate) struct Cancelling<'a>(&'a Unit);

impl Drop for Cancelling<'_> {
    fn drop(&mut self) {
        self.0.cancelling.store(false, Ordering::Relaxed);
        // Count the outcome now if the cancel left the unit final without a countable write
        // (e.g. it stayed `Failed`).
        let state = self.0.state();
        if state.is_final() {
            self.0.count_finished(state);
        }
    }
}

impl Unit {
    pub(crate) fn new(
        id: UnitId,
        dir: PathBuf,
        worker: Option<Arc<dyn Worker>>,
        status: Status,
        hooks: Hooks,
    ) -> Arc<Self> {
        let file = StatusFile::new(&dir);
        let finish_counted = AtomicBool::new(status.state.is_final());
        Arc::new(Self {
            id,
            dir,
            file,
            worker,
            snapshot: watch::Sender::new(Snapshot {
                status,
                released: false,
            }),
            write_lock: std::sync::Mutex::new(()),
            op_lock: tokio::sync::Mutex::new(()),
            abort_input: CancellationToken::new(),
            hooks,
            trace: std::sync::OnceLock::new(),
            finish_counted,
            cancelling: AtomicBool::new(false),
        })
    }

    /// Records the context of the unit's `work.unit` span; later operations join its trace.
    /// A non-empty context is also kept in the unit's directory ([`TRACE_FILE`]), so that
    /// after a restart the unit's results and release still join its trace.
    pub(crate) async fn set_trace(&self, parent: crate::telemetry::TraceParent) {
        if let Some(header) = parent.header() {
            // Best effort: without the file a restarted node starts new traces, nothing more.
            if let Err(error) = tokio::fs::write(self.dir.join(TRACE_FILE), header).await {
                tracing::debug!(unit = %self.id, %error, "cannot keep the unit's trace context");
            }
        }
        let _ = self.trace.set(parent);
    }

    /// Takes up the trace context kept by [`Unit::set_trace`] before a restart, if any
    /// (a missing, torn or foreign file gives none).
    pub(crate) async fn recover_trace(&self) {
        use tokio::io::AsyncReadExt as _;
        let mut text = String::new();
        let read = match tokio::fs::File::open(self.dir.join(TRACE_FILE)).await {
            // A traceparent is 55 bytes; never read more than a little over that.
            Ok(file) => file.take(256).read_to_string(&mut text).await,
            Err(error) => Err(error),
        };
        if read.is_ok() {
            let _ = self
                .trace
                .set(crate::telemetry::TraceParent::parse(text.trim()));
        }
    }

    /// Makes `span` (not yet entered) part of the unit's trace, so that the whole life of a
    /// unit (submit, run, results, release) is one trace whichever request started each step.
    pub(crate) fn join_trace(&self, span: &tracing::Span) {
        if let Some(parent) = self.trace.get() {
            parent.adopt(span);
        }
    }

    pub(crate) fn id(&self) -> &UnitId {
        &self.id
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn stdout_path(&self) -> PathBuf {
        self.dir.join("stdout")
    }

    pub(crate) fn stdin_path(&self) -> PathBuf {
        self.dir.join("stdin")
    }

    pub(crate) fn status_file(&self) -> &StatusFile {
        &self.file
    }

    pub(crate) fn worker(&self) -> Option<&Arc<dyn Worker>> {
        self.worker.as_ref()
    }

    /// The last known status.
    pub(crate) fn status(&self) -> Status {
        self.snapshot.borrow().status.clone()
    }

    /// The last known state (without copying the status).
    pub(crate) fn state(&self) -> State {
        self.snapshot.borrow().status.state
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.subscribe()
    }

    pub(crate) fn is_released(&self) -> bool {
        self.snapshot.borrow().released
    }

    pub(crate) fn mark_released(&self) {
        self.abort_input.cancel();
        let changed = self
            .snapshot
            .send_if_modified(|s| !std::mem::replace(&mut s.released, true));
        if changed {
            self.announce();
        }
    }

    /// Marks a cancel (or release) in progress until the guard is dropped: a cancelled
    /// runner may record `Failed` before the engine records `Canceled`, and only the latter
    /// is the unit's outcome for the metrics.
    pub(crate) fn cancelling(&self) -> Cancelling<'_> {
        self.cancelling.store(true, Ordering::Relaxed);
        Cancelling(self)
    }

    /// Counts the unit as finished in `state`, once.
    fn count_finished(&self, state: State) {
        if self.finish_counted.swap(true, Ordering::Relaxed) {
            return;
        }
        let work_type = self.worker.as_ref().map_or("unknown", |w| w.work_type());
        let elapsed = self.hooks.submitted_at.map(|at| at.elapsed());
        self.hooks.metrics.finished(work_type, state, elapsed);
    }

    fn publish(&self, status: Status) {
        let state = status.state;
        let changed = self.snapshot.send_if_modified(|s| {
            if s.status == status {
                false
            } else {
                s.status = status;
                true
            }
        });
        let provisional = state == State::FAILED && self.cancelling.load(Ordering::Relaxed);
        if changed && state.is_final() && !provisional {
            self.count_finished(state);
        }
        if changed {
            self.announce();
        }
    }

    /// Tells the engine's watchers about the current snapshot. Nobody listening is normal.
    fn announce(&self) {
        if self.hooks.events.receiver_count() > 0 {
            let _ = self.hooks.events.send(WorkEvent {
                unit_id: self.id.to_string(),
                status: super::unit_status(self),
                released: self.is_released(),
            });
        }
    }

    /// Read-modify-write of the status file (the file's content wins over memory, since a
    /// runner may have written it), then publishes the result.
    ///
    /// # Errors
    /// The file could not be read or written; memory is left unchanged.
    pub(crate) async fn update<F>(self: &Arc<Self>, change: F) -> Result<Status, UpdateError>
    where
        F: FnOnce(&mut Status) + Send + 'static,
    {
        let unit = Arc::clone(self);
        blocking(move || {
            let _guard = unit.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            let base = unit.status();
            let written = unit.file.update(&base, change)?;
            unit.publish(written.clone());
            Ok(written)
        })
        .await
    }

    /// Sets state and detail (and the stdout size unless `None`); failures are logged, as Go
    /// does, because no caller could do better than carry on.
    pub(crate) async fn set_state(
        self: &Arc<Self>,
        state: State,
        detail: impl Into<String>,
        stdout_size: Option<i64>,
    ) {
        let detail = detail.into();
        if let Err(error) = self
            .update(move |s| s.set(state, detail, stdout_size))
            .await
        {
            tracing::error!(unit = %self.id, error = %crate::work::chain(&error), "cannot update status");
        }
    }

    /// Replaces the status file and memory with `status` (no read first).
    pub(crate) async fn store(self: &Arc<Self>, status: Status) -> std::io::Result<()> {
        let unit = Arc::clone(self);
        blocking(move || {
            let _guard = unit.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            unit.file.store(&status)?;
            unit.publish(status);
            Ok(())
        })
        .await
    }

    /// Re-reads the file if its stamp differs from `last`; returns the new stamp. Read errors
    /// (a foreign writer caught mid-write) keep the last good status.
    pub(crate) async fn reload_if_changed(self: &Arc<Self>, last: Option<Stamp>) -> Option<Stamp> {
        let unit = Arc::clone(self);
        blocking(move || {
            let stamp = unit.file.stamp();
            if stamp.is_none() || stamp == last {
                return Ok::<_, std::io::Error>(stamp.or(last));
            }
            let _guard = unit.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            match unit.file.load_fast() {
                Ok(status) => {
                    unit.publish(status);
                    Ok(stamp)
                }
                Err(error) => {
                    tracing::debug!(unit = %unit.id, error = %crate::work::chain(&error), "status not readable yet");
                    Ok(last)
                }
            }
        })
        .await
        .unwrap_or(last)
    }

    /// Current size of the stdout file.
    pub(crate) async fn stdout_size(self: &Arc<Self>) -> i64 {
        let dir = self.dir.clone();
        blocking(move || Ok::<_, std::io::Error>(stdout_size(&dir)))
            .await
            .unwrap_or(0)
    }
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<std::io::Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(E::from(std::io::Error::other(join))),
    }
}

impl From<std::io::Error> for UpdateError {
    fn from(error: std::io::Error) -> Self {
        UpdateError::Write(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_id_validation() {
        for good in ["xk07MWEr", "NoSuchU1", "a", "wu-abc_1", &"x".repeat(64)] {
            assert!(UnitId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../x",
            "/etc",
            "..",
            ".",
            "a/b",
            "a b",
            "a.b",
            "é",
            "x\0",
            &"x".repeat(65),
        ] {
            assert!(UnitId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_8_alphanumerics_and_vary() {
        let ids: std::collections::BTreeSet<String> = (0..200)
            .map(|_| UnitId::generate().expect("rng").0)
            .collect();
        assert!(ids.len() > 195);
        for id in &ids {
            assert_eq!(id.len(), UNIT_ID_LEN);
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
            assert!(UnitId::parse(id).is_ok());
        }
    }
}
