//! Following a unit's stdout (spec §2.10), exactly once and to the end.
//!
//! Go polls every 250 ms and decides it is done by comparing the file's size (not its own
//! read position) with `StdoutSize`, which can end a stream before the last bytes were sent
//! (receptor#597) or hang it. Here the stream takes a status snapshot *before* each read: once
//! a snapshot shows the unit finished, everything its worker will write is on disk, so
//! reading to EOF after it delivers every byte, once. An idle stream sleeps until the unit's
//! status changes or the engine's inotify watcher reports a write to the unit's files, so a
//! busy stream has little latency and an idle one costs nothing (see `fswatch` for the
//! fallback without inotify).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::fswatch::DirWatch;
use super::unit::{Snapshot, Unit, blocking};

/// Most bytes returned by one [`ResultStream::next_chunk`]: large enough that a bulk download
/// costs few reads and messages, small enough to bound the memory of many concurrent streams.
pub const RESULT_CHUNK: usize = 256 * 1024;
/// How often an idle stream checks that `stdout` still exists.
const EXISTS_CHECK: Duration = Duration::from_secs(1);
/// Consecutive checks without `stdout` (the unit was deleted behind our back) that end a
/// stream, as in Go.
const MISSING_LIMIT: u32 = 3;

/// A unit's stdout from a start position until the unit is done: it has Succeeded, Failed
/// or been Canceled, and every byte up to the end was returned. (Go never ends the stream of
/// a Canceled unit; clients then have to hang up. We end it once the process is gone.) It
/// also ends when the unit is released.
#[derive(Debug)]
pub struct ResultStream {
    unit: Arc<Unit>,
    rx: watch::Receiver<Snapshot>,
    file: Option<Arc<File>>,
    pos: u64,
    /// Writes to the unit's directory.
    dir: DirWatch,
    missing: u32,
    last_check: Instant,
    done: bool,
    /// Wait for more output until the unit is done; `false` stops at the current end.
    follow: bool,
    /// `work.results`: open while the stream is, so its duration is the transfer's.
    _span: tracing::Span,
}

impl ResultStream {
    pub(super) fn new(unit: Arc<Unit>, start: u64, dir: DirWatch) -> Self {
        let rx = unit.subscribe();
        let span =
            tracing::info_span!("work.results", work.unit_id = %unit.id(), work.start_pos = start);
        unit.join_trace(&span);
        Self {
            _span: span,
            unit,
            rx,
            file: None,
            pos: start,
            dir,
            missing: 0,
            last_check: Instant::now(),
            done: false,
            follow: true,
        }
    }

    /// Makes the stream stop at the output's current end instead of following the unit
    /// until it is done.
    #[must_use]
    pub fn without_follow(mut self) -> Self {
        self.follow = false;
        self
    }

    /// The unit's status now (its last known status once it was released).
    pub fn unit_status(&self) -> super::UnitStatus {
        super::unit_status(&self.unit)
    }

    /// The unit's ID.
    pub fn unit_id(&self) -> &str {
        self.unit.id().as_str()
    }

    /// Offset of the next byte.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next bytes of stdout (at most [`RESULT_CHUNK`]), waiting for the unit to write
    /// them; `None` at the end.
    ///
    /// # Errors
    /// Reading `stdout` failed.
    ///
    /// # Cancel safety
    /// Cancel safe: the position only advances when a chunk is returned.
    pub async fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if self.done {
                return Ok(None);
            }
            // Before looking at the files: a write from now on wakes `wait`.
            self.dir.mark_seen();
            let snapshot = self.rx.borrow_and_update().clone();
            if snapshot.released {
                self.done = true;
                continue;
            }
            let finished = snapshot.status.state.is_final();
            let Some(file) = self.file.clone() else {
                let path = self.unit.stdout_path();
                match blocking(move || File::open(path)).await {
                    Ok(file) => self.file = Some(Arc::new(file)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if finished || !self.follow {
                            // Finished without producing any output.
                            self.done = true;
                        } else {
                            self.wait().await;
                        }
                    }
                    Err(e) => return Err(e),
                }
                continue;
            };
            let pos = self.pos;
            let chunk = blocking(move || {
                let mut buf = vec![0u8; RESULT_CHUNK];
                let n = file.read_at(&mut buf, pos)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf)
            })
            .await?;
            if !chunk.is_empty() {
                self.pos += chunk.len() as u64;
                self.missing = 0;
                return Ok(Some(chunk));
            }
            if !self.follow {
                self.done = true;
                continue;
            }
            if finished {
                let claimed = u64::try_from(snapshot.status.stdout_size).unwrap_or(0);
                let local = self
                    .unit
                    .worker()
                    .is_none_or(|w| w.stdout_complete_when_final());
                if self.pos >= claimed || local {
                    self.done = true;
                    continue;
                }
            }
            if self.stdout_vanished().await {
                tracing::warn!(unit = %self.unit.id(), "stdout disappeared; ending the results stream");
                self.done = true;
                continue;
            }
            self.wait().await;
        }
    }

    /// Writes the rest of the stream to `out`; returns the bytes written.
    ///
    /// # Errors
    /// Reading stdout or writing to `out` failed (e.g. the client disconnected).
    pub async fn copy_to<W: AsyncWrite + Unpin>(mut self, out: &mut W) -> std::io::Result<u64> {
        let mut total = 0u64;
        while let Some(chunk) = self.next_chunk().await? {
            out.write_all(&chunk).await?;
            total += chunk.len() as u64;
        }
        out.flush().await?;
        Ok(total)
    }

    async fn wait(&mut self) {
        tokio::select! {
            changed = self.rx.changed() => {
                if changed.is_err() {
                    // The unit is gone from memory entirely.
                    self.done = true;
                }
            }
            () = self.dir.changed() => {}
        }
    }

    async fn stdout_vanished(&mut self) -> bool {
        if self.last_check.elapsed() < EXISTS_CHECK {
            return false;
        }
        self.last_check = Instant::now();
        let path = self.unit.stdout_path();
        let exists = blocking(move || Ok::<_, std::io::Error>(path.exists()))
            .await
            .unwrap_or(true);
        if exists {
            self.missing = 0;
        } else {
            self.missing += 1;
        }
        self.missing > MISSING_LIMIT
    }
}
