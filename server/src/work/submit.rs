//! A submitted unit waiting for its payload (spec §2.5).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;

use super::status::{FILE_MODE, State};
use super::unit::Unit;
use super::{StartOutcome, WorkEngine, WorkError, go_io_error};

/// Payload bytes copied per read: memory use per upload is bounded by this.
pub const PAYLOAD_CHUNK: usize = 256 * 1024;

/// A unit allocated by [`WorkEngine::submit`]: `Pending / Waiting for Input Data`, with an
/// open `stdin` file. Feed it the payload ([`Submission::receive`]), then
/// [`Submission::start`] it. Dropped unfinished (the client vanished, the daemon stopped),
/// the unit is marked Failed.
#[derive(Debug)]
#[must_use = "a submission must be started"]
pub struct Submission {
    engine: WorkEngine,
    unit: Arc<Unit>,
    stdin: Option<tokio::fs::File>,
    received: u64,
    finished: bool,
    /// The unit's `work.unit` span: the payload is received in it, the start is its child.
    span: tracing::Span,
}

impl Submission {
    pub(super) async fn open(
        engine: WorkEngine,
        unit: Arc<Unit>,
        span: tracing::Span,
    ) -> Result<Self, WorkError> {
        let path = unit.stdin_path();
        let opened = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&path)
            .await;
        let stdin = match opened {
            Ok(file) => file,
            Err(error) => {
                let message = format!("open {}: {}", path.display(), go_io_error(&error));
                unit.set_state(
                    State::FAILED,
                    format!("Error reading input data: {message}"),
                    Some(0),
                )
                .await;
                return Err(WorkError::Input(message));
            }
        };
        unit.set_state(State::PENDING, "Waiting for Input Data", Some(0))
            .await;
        Ok(Self {
            engine,
            unit,
            stdin: Some(stdin),
            received: 0,
            finished: false,
            span,
        })
    }

    /// The unit's ID.
    pub fn unit_id(&self) -> &str {
        self.unit.id().as_str()
    }

    /// Payload bytes stored so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Copies `payload` to the unit's `stdin` file until EOF, in bounded chunks. Can be
    /// called more than once (e.g. once per gRPC message stream).
    ///
    /// # Errors
    /// Reading or writing failed (the unit is then `Failed / Error reading input data: ...`),
    /// or the unit was cancelled or released meanwhile.
    ///
    /// # Cancel safety
    /// Not cancel safe: bytes read but not yet written are lost. Drop the submission instead.
    pub async fn receive<R: AsyncRead + Unpin>(
        &mut self,
        payload: &mut R,
    ) -> Result<u64, WorkError> {
        let span = self.span.clone();
        self.receive_in_span(payload).instrument(span).await
    }

    async fn receive_in_span<R: AsyncRead + Unpin>(
        &mut self,
        payload: &mut R,
    ) -> Result<u64, WorkError> {
        if self.stdin.is_none() {
            return Err(WorkError::Input(
                "the payload was already completed".to_owned(),
            ));
        }
        let mut buf = vec![0u8; PAYLOAD_CHUNK];
        let mut copied = 0u64;
        loop {
            // Fill the buffer before writing: network reads often return a packet's worth,
            // and every write of a tokio file is a trip to the blocking pool.
            let mut filled = 0;
            let mut eof = false;
            while filled < buf.len() {
                let read = tokio::select! {
                    biased;
                    () = self.unit.abort_input.cancelled() => {
                        // Cancel or release decided the unit's fate already.
                        self.finished = true;
                        self.stdin = None;
                        return Err(WorkError::Aborted(self.unit.id().to_string()));
                    }
                    read = payload.read(&mut buf[filled..]) => read,
                };
                match read {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(error) => return Err(self.input_failed(go_io_error(&error)).await),
                }
            }
            if filled > 0 {
                let Some(stdin) = self.stdin.as_mut() else {
                    return Err(WorkError::Input(
                        "the payload was already completed".to_owned(),
                    ));
                };
                if let Err(error) = stdin.write_all(&buf[..filled]).await {
                    let message = format!(
                        "write {}: {}",
                        self.unit.stdin_path().display(),
                        go_io_error(&error)
                    );
                    return Err(self.input_failed(message).await);
                }
                copied += filled as u64;
                self.received += filled as u64;
            }
            if eof {
                return Ok(copied);
            }
        }
    }

    async fn input_failed(&mut self, message: String) -> WorkError {
        self.finished = true;
        self.stdin = None;
        self.unit
            .set_state(
                State::FAILED,
                format!("Error reading input data: {message}"),
                Some(0),
            )
            .await;
        WorkError::Input(message)
    }

    /// The payload is complete: stores it durably and starts the worker.
    ///
    /// # Errors
    /// Storing the payload or starting failed (the unit is then Failed with Go's detail), or
    /// the unit was cancelled or released meanwhile.
    pub async fn start(self) -> Result<StartOutcome, WorkError> {
        self.span.record("work.payload_bytes", self.received);
        let span =
            tracing::info_span!(parent: &self.span, "work.start", work.unit_id = %self.unit.id());
        self.start_in_span().instrument(span).await
    }

    async fn start_in_span(mut self) -> Result<StartOutcome, WorkError> {
        self.finished = true;
        if let Some(mut stdin) = self.stdin.take() {
            let synced = async {
                stdin.flush().await?;
                stdin.sync_all().await
            }
            .await;
            if let Err(error) = synced {
                let message = format!(
                    "write {}: {}",
                    self.unit.stdin_path().display(),
                    go_io_error(&error)
                );
                self.unit
                    .set_state(
                        State::FAILED,
                        format!("Error reading input data: {message}"),
                        Some(0),
                    )
                    .await;
                return Err(WorkError::Input(message));
            }
        }
        let unit = Arc::clone(&self.unit);
        let _op = unit.op_lock.lock().await;
        if unit.abort_input.is_cancelled() || unit.status().state.is_final() {
            return Err(WorkError::Aborted(unit.id().to_string()));
        }
        unit.set_state(State::PENDING, "Starting Worker", Some(0))
            .await;
        let Some(worker) = unit.worker() else {
            return Err(WorkError::Worker(
                "the unit's work type is not configured".to_owned(),
            ));
        };
        match worker.start(&unit, self.engine.spawner()).await {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                unit.set_state(
                    State::FAILED,
                    format!("Error starting worker: {error}"),
                    Some(0),
                )
                .await;
                Err(WorkError::Worker(error.0))
            }
        }
    }
}

impl Drop for Submission {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Abandoned mid-payload: record it, unless the runtime is going away.
        if tokio::runtime::Handle::try_current().is_ok() {
            let unit = Arc::clone(&self.unit);
            self.engine.spawner().spawn(async move {
                if !unit.is_released() && !unit.status().state.is_final() {
                    unit.set_state(
                        State::FAILED,
                        "Error reading input data: the submitting client went away",
                        Some(0),
                    )
                    .await;
                }
            });
        } else {
            tracing::warn!(unit = %self.unit.id(), "submission abandoned during shutdown");
        }
    }
}
