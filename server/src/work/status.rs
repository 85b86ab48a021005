//! A unit's `status` file: its format, its lock and its atomic replacement (spec §2.3).
//!
//! The file holds one compact JSON object and a LF, fields in Go's order:
//! `{"State":1,"Detail":"Running: PID 7","StdoutSize":12,"WorkType":"cat","ExtraData":{...}}`.
//!
//! Every read and write holds an exclusive `flock` on `status.lock`, opened the way Go's
//! `lockedfile` opens it, so this process, our command runners and Go command runners
//! (which rewrite `status` in place) never see each other's half-written files. We write a
//! temporary file, `fsync` it and rename it over `status`, so even a writer that ignores the
//! lock (Go's python worker) or a crash cannot leave a torn status behind. Everything here is
//! blocking I/O: async callers go through `spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::gojson::{compact, go_string};

/// Mode of every file in a unit directory.
pub(crate) const FILE_MODE: u32 = 0o600;

/// A unit's state number. Files written by other programs may hold any integer, so this is
/// not a closed enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State(pub i64);

impl State {
    /// Created, waiting for its payload or for the worker to start.
    pub const PENDING: State = State(0);
    /// The worker is running.
    pub const RUNNING: State = State(1);
    /// Finished successfully.
    pub const SUCCEEDED: State = State(2);
    /// Finished unsuccessfully (or could not start).
    pub const FAILED: State = State(3);
    /// Cancelled on request.
    pub const CANCELED: State = State(4);

    /// Go's `StateName`: `Pending`, `Running`, `Succeeded`, `Failed`, `Canceled` or
    /// `Unknown: N`.
    pub fn name(self) -> String {
        match self.0 {
            0 => "Pending".to_owned(),
            1 => "Running".to_owned(),
            2 => "Succeeded".to_owned(),
            3 => "Failed".to_owned(),
            4 => "Canceled".to_owned(),
            n => format!("Unknown: {n}"),
        }
    }

    /// Go's `IsComplete`: Succeeded or Failed. Canceled is *not* complete.
    pub fn is_complete(self) -> bool {
        self == Self::SUCCEEDED || self == Self::FAILED
    }

    /// Nothing will change any more: complete, or Canceled.
    pub fn is_final(self) -> bool {
        self.is_complete() || self == Self::CANCELED
    }
}

/// The content of a status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The state.
    pub state: State,
    /// Human-readable detail (spec §2.4 lists the texts).
    pub detail: String,
    /// Bytes of stdout known to exist.
    pub stdout_size: i64,
    /// The unit's work type.
    pub work_type: String,
    /// Type-specific data as compact JSON text; `None` is JSON `null`.
    pub extra_data: Option<String>,
}

impl Status {
    /// A freshly allocated unit: `Pending / Unit Created`.
    pub fn created(work_type: &str, extra_data: Option<String>) -> Self {
        Self {
            state: State::PENDING,
            detail: "Unit Created".to_owned(),
            stdout_size: 0,
            work_type: work_type.to_owned(),
            extra_data,
        }
    }

    /// Sets state and detail, and the stdout size unless it is `None` (Go's `-1`).
    pub fn set(&mut self, state: State, detail: impl Into<String>, stdout_size: Option<i64>) {
        self.state = state;
        self.detail = detail.into();
        if let Some(size) = stdout_size {
            self.stdout_size = size;
        }
    }

    /// The file's bytes: Go's field order, Go's escaping, a trailing LF.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        format!(
            "{{\"State\":{},\"Detail\":{},\"StdoutSize\":{},\"WorkType\":{},\"ExtraData\":{}}}\n",
            self.state.0,
            go_string(&self.detail),
            self.stdout_size,
            go_string(&self.work_type),
            self.extra_data.as_deref().unwrap_or("null"),
        )
        .into_bytes()
    }

    /// Parses a status file's content (Go's decoder rules: missing fields are zero, unknown
    /// fields are ignored, trailing whitespace is allowed).
    ///
    /// # Errors
    /// The text is not a JSON object of the right shape.
    pub fn parse(text: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Repr<'a> {
            #[serde(rename = "State", default)]
            state: i64,
            #[serde(rename = "Detail", default)]
            detail: String,
            #[serde(rename = "StdoutSize", default)]
            stdout_size: i64,
            #[serde(rename = "WorkType", default)]
            work_type: String,
            #[serde(rename = "ExtraData", borrow, default)]
            extra_data: Option<&'a RawValue>,
        }
        let repr: Repr<'_> = serde_json::from_slice(text)?;
        Ok(Self {
            state: State(repr.state),
            detail: repr.detail,
            stdout_size: repr.stdout_size,
            work_type: repr.work_type,
            extra_data: repr
                .extra_data
                .map(|raw| compact(raw.get()))
                .filter(|raw| raw != "null"),
        })
    }
}

/// Why a status file could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// There is no status file.
    #[error("status file {0} does not exist")]
    Missing(PathBuf),
    /// The file or its lock could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file does not hold a status record.
    #[error("{path} is not a valid status file")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// Identity of a version of the status file: changes whenever it is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// The status file of one unit directory, and its lock.
#[derive(Debug, Clone)]
pub(crate) struct StatusFile {
    path: PathBuf,
    lock_path: PathBuf,
    temp_path: PathBuf,
}

impl StatusFile {
    pub(crate) fn new(unit_dir: &Path) -> Self {
        Self {
            path: unit_dir.join("status"),
            lock_path: unit_dir.join("status.lock"),
            temp_path: unit_dir.join(".status.tmp"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the exclusive lock, as Go's `lockedfile.OpenFile(O_CREATE|O_WRONLY|O_TRUNC)`.
    /// Released when the returned file is dropped.
    fn lock(&self) -> io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&self.lock_path)?;
        file.lock()?;
        Ok(file)
    }

    /// The current stamp, or `None` when there is no file.
    pub(crate) fn stamp(&self) -> Option<Stamp> {
        let meta = std::fs::metadata(&self.path).ok()?;
        Some(Stamp {
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }

    /// Reads the file, taking the lock only when needed: a writer rewriting the file in
    /// place (Go's runner truncates and writes) can only be caught with an empty or cut-off
    /// object, which never parses, so a read that parses is a complete version. Saves creating
    /// and locking `status.lock` for every poll and every unit at recovery.
    pub(crate) fn load_fast(&self) -> Result<Status, LoadError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => match Status::parse(&bytes) {
                Ok(status) => Ok(status),
                Err(_) => self.load(),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(LoadError::Missing(self.path.clone()))
            }
            Err(_) => self.load(),
        }
    }

    /// Reads the file under the lock.
    pub(crate) fn load(&self) -> Result<Status, LoadError> {
        let io_error = |source| LoadError::Io {
            path: self.path.clone(),
            source,
        };
        let _lock = self.lock().map_err(io_error)?;
        self.read_locked()
    }

    fn read_locked(&self) -> Result<Status, LoadError> {
        let mut bytes = Vec::new();
        match File::open(&self.path) {
            Ok(mut file) => file
                .read_to_end(&mut bytes)
                .map_err(|source| LoadError::Io {
                    path: self.path.clone(),
                    source,
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LoadError::Missing(self.path.clone()));
            }
            Err(source) => {
                return Err(LoadError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        Status::parse(&bytes).map_err(|source| LoadError::Corrupt {
            path: self.path.clone(),
            source,
        })
    }

    /// Replaces the file with `status`, under the lock.
    pub(crate) fn store(&self, status: &Status) -> io::Result<()> {
        let _lock = self.lock()?;
        self.write_locked(status)
    }

    /// Read-modify-write under the lock: `change` applies to the file's content, or to `base`
    /// when there is no file yet (or it is empty). Returns what was written.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed (it is then left alone), or writing failed.
    pub(crate) fn update(
        &self,
        base: &Status,
        change: impl FnOnce(&mut Status),
    ) -> Result<Status, UpdateError> {
        let _lock = self.lock().map_err(UpdateError::Write)?;
        let mut status = match self.read_locked() {
            Ok(status) => status,
            Err(LoadError::Missing(_)) => base.clone(),
            Err(LoadError::Corrupt { .. })
                if std::fs::metadata(&self.path).is_ok_and(|m| m.len() == 0) =>
            {
                base.clone()
            }
            Err(error) => return Err(UpdateError::Read(error)),
        };
        change(&mut status);
        self.write_locked(&status).map_err(UpdateError::Write)?;
        Ok(status)
    }

    /// Temp file, fsync, rename over `status`, fsync the directory.
    fn write_locked(&self, status: &Status) -> io::Result<()> {
        let mut temp = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&self.temp_path)?;
        temp.write_all(&status.to_file_bytes())?;
        temp.sync_all()?;
        drop(temp);
        std::fs::rename(&self.temp_path, &self.path)?;
        if let Some(dir) = self.path.parent()
            && let Ok(dir) = File::open(dir)
        {
            // Makes the rename itself durable; a failure here loses nothing already written.
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Removes a temporary file left by a writer that died between writing it and renaming
    /// it over `status` (the status itself is intact: the rename is what publishes). Taken
    /// under the lock, so a live writer's temporary file is never touched. Nothing is created
    /// when there is nothing to remove.
    pub(crate) fn remove_stale_temp(&self) -> io::Result<bool> {
        if !self.temp_path.exists() {
            return Ok(false);
        }
        let _lock = self.lock()?;
        match std::fs::remove_file(&self.temp_path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves an unreadable status file aside (kept for inspection as `status.corrupt`).
    pub(crate) fn quarantine(&self) -> io::Result<PathBuf> {
        let _lock = self.lock()?;
        let aside = self.path.with_file_name("status.corrupt");
        std::fs::rename(&self.path, &aside)?;
        Ok(aside)
    }
}

/// Why a status update failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpdateError {
    /// The current file could not be read.
    #[error("cannot update status")]
    Read(#[source] LoadError),
    /// Writing failed.
    #[error("cannot write status file")]
    Write(#[source] io::Error),
}

/// Size of `<unit dir>/stdout`, 0 when it does not exist (Go's `stdoutSize`).
pub(crate) fn stdout_size(unit_dir: &Path) -> i64 {
    std::fs::metadata(unit_dir.join("stdout"))
        .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_format_matches_go_byte_for_byte() {
        let status = Status {
            state: State::SUCCEEDED,
            detail: "exit status 0".into(),
            stdout_size: 6,
            work_type: "cat".into(),
            extra_data: None,
        };
        assert_eq!(
            String::from_utf8(status.to_file_bytes()).expect("utf8"),
            "{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":6,\"WorkType\":\"cat\",\"ExtraData\":null}\n"
        );
        let running = Status {
            state: State::RUNNING,
            detail: "Running: PID 42 <&>".into(),
            stdout_size: 0,
            work_type: "echo".into(),
            extra_data: Some(r#"{"Pid":41,"Params":"-c \"x\""}"#.into()),
        };
        assert_eq!(
            String::from_utf8(running.to_file_bytes()).expect("utf8"),
            "{\"State\":1,\"Detail\":\"Running: PID 42 \\u003c\\u0026\\u003e\",\"StdoutSize\":0,\"WorkType\":\"echo\",\"ExtraData\":{\"Pid\":41,\"Params\":\"-c \\\"x\\\"\"}}\n"
        );
    }

    #[test]
    fn parse_round_trips_and_tolerates_go_variations() {
        let text = "{\"State\":1,\"Detail\":\"Running: PID 9\",\"StdoutSize\":3,\"WorkType\":\"cat\",\"ExtraData\":{\"Pid\":8,\"Params\":\"\"}}\n";
        let status = Status::parse(text.as_bytes()).expect("parse");
        assert_eq!(status.state, State::RUNNING);
        assert_eq!(
            status.extra_data.as_deref(),
            Some(r#"{"Pid":8,"Params":""}"#)
        );
        assert_eq!(status.to_file_bytes(), text.as_bytes());
        // The python worker writes no LF; missing fields are zero values.
        let sparse = Status::parse(br#"{"State":2, "Detail": "Complete"}"#).expect("parse");
        assert_eq!(sparse.stdout_size, 0);
        assert_eq!(sparse.extra_data, None);
        assert!(Status::parse(b"{\"State\":1").is_err());
        assert!(Status::parse(b"garbage").is_err());
        assert!(Status::parse(b"").is_err());
    }

    #[test]
    fn state_names_and_completeness() {
        assert_eq!(State(4).name(), "Canceled");
        assert_eq!(State(9).name(), "Unknown: 9");
        assert!(State::FAILED.is_complete());
        assert!(!State::CANCELED.is_complete());
        assert!(State::CANCELED.is_final());
        assert!(!State::RUNNING.is_final());
    }

    #[test]
    fn update_and_load_under_lock() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = StatusFile::new(dir.path());
        assert!(matches!(file.load(), Err(LoadError::Missing(_))));
        let base = Status::created("cat", None);
        let written = file.update(&base, |s| s.set(State::RUNNING, "Running: PID 1", Some(5)))?;
        assert_eq!(written.work_type, "cat");
        assert_eq!(file.load()?, written);
        let mode = std::fs::metadata(file.path())?.mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A Go runner rewrote it in place: we read its content, not our base.
        std::fs::write(
            file.path(),
            "{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":9,\"WorkType\":\"cat\",\"ExtraData\":null}\n",
        )?;
        let updated = file.update(&base, |s| s.extra_data = None)?;
        assert_eq!(updated.state, State::SUCCEEDED);
        assert_eq!(updated.stdout_size, 9);
        // A corrupt file is never overwritten by an update.
        std::fs::write(file.path(), "{nope")?;
        assert!(file.update(&base, |_| {}).is_err());
        assert!(matches!(file.load(), Err(LoadError::Corrupt { .. })));
        Ok(())
    }

    #[test]
    fn a_temp_file_left_by_a_crash_is_removed_and_the_status_kept()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = StatusFile::new(dir.path());
        assert!(!file.remove_stale_temp()?, "nothing to remove");
        assert!(
            !dir.path().join("status.lock").exists(),
            "no lock created for nothing"
        );
        let status = Status::created("cat", None);
        file.store(&status)?;
        // A writer killed after writing its temp file, before the rename.
        std::fs::write(dir.path().join(".status.tmp"), "{\"State\":2,\"Det")?;
        assert!(file.remove_stale_temp()?);
        assert!(!dir.path().join(".status.tmp").exists());
        assert_eq!(file.load()?, status);
        Ok(())
    }

    /// Go's `lockedfile` uses flock(2); ours must be the same kind of lock, or a Go runner and
    /// this process would not exclude each other. util-linux `flock` uses flock(2) too.
    #[test]
    fn the_lock_is_an_flock() -> Result<(), Box<dyn std::error::Error>> {
        let Ok(probe) = std::process::Command::new("flock")
            .arg("--version")
            .output()
        else {
            return Ok(()); // no util-linux here
        };
        if !probe.status.success() {
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let file = StatusFile::new(dir.path());
        let lock_path = dir.path().join("status.lock");
        let try_flock = || {
            std::process::Command::new("flock")
                .args(["-n", "-E", "42"])
                .arg(&lock_path)
                .arg("true")
                .status()
        };
        let held = file.lock()?;
        assert_eq!(
            try_flock()?.code(),
            Some(42),
            "flock(2) did not see our lock"
        );
        drop(held);
        assert_eq!(try_flock()?.code(), Some(0));
        Ok(())
    }
}
