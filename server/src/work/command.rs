//! The `work-command` worker (spec §2.6): each unit runs in a command-runner process, our own
//! executable re-run as `receptor --node id=worker --log-level L --command-runner command=C
//! params=P unitdir=D`. The runner writes the unit's status file; the engine watches it.
//!
//! The runner is started in its own process group (`process_group(0)`; Go uses `setsid`, which
//! the workspace's `forbid(unsafe_code)` rules out and which would also detach the controlling
//! terminal). Either way a Ctrl-C or signal aimed at the daemon's group does not reach runners,
//! so running units survive a daemon restart and are picked up by `recover`.
//!
//! Monitoring a runner we started: wait for its exit, and re-read the status file when the
//! engine's inotify watcher reports a change in the unit directory (only a changed stamp is
//! read; a 5 s safety net, or a 1 s poll without inotify). A recovered runner (not our
//! child) is followed the same way, and its exit is seen through a pidfd (a PID check once a
//! second where pidfds are unavailable). In both cases
//! a runner that dies without writing a final state (SIGKILL, OOM, reboot) fails its unit
//! instead of leaving it Running for ever, as Go would.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;

use super::status::State;
use super::unit::Unit;
use super::{BoxFuture, Outcome, Spawner, StartOutcome, Worker, WorkerError};
use crate::config::{LogLevel, WorkCommandConfig};

/// How long cancel waits for a runner to exit after SIGINT (the runner itself SIGKILLs its
/// command after 10 s) before killing the runner.
const CANCEL_WAIT: Duration = Duration::from_secs(15);
/// How often a recovered runner's PID is checked.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);
/// Start of the detail of a unit whose runner died without a result.
const RUNNER_GONE_PREFIX: &str = "command runner ";

/// How runners are launched.
#[derive(Debug)]
pub(crate) struct Launcher {
    pub(crate) exe: PathBuf,
    pub(crate) log_level: LogLevel,
}

impl Launcher {
    /// The executable to run. After a package upgrade replaced our binary, Linux reports our
    /// own executable as `<path> (deleted)`: the new binary at `<path>` is then used, as Go
    /// (which runs `os.Args[0]`) would.
    fn program(&self) -> PathBuf {
        if self.exe.exists() {
            return self.exe.clone();
        }
        let text = self.exe.to_string_lossy();
        match text.strip_suffix(" (deleted)") {
            Some(original) => PathBuf::from(original),
            None => self.exe.clone(),
        }
    }
}

/// `ExtraData` of a command unit, in Go's field order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct CommandExtra {
    #[serde(rename = "Pid", default)]
    pid: i64,
    #[serde(rename = "Params", default)]
    params: String,
}

impl CommandExtra {
    fn parse(raw: Option<&str>) -> Option<Self> {
        raw.and_then(|raw| serde_json::from_str(raw).ok())
    }

    fn to_json(&self) -> String {
        crate::gojson::to_go_json(self)
    }
}

/// Go's `combineParams`.
fn combine_params(base: &str, runtime: &str) -> String {
    match (base.is_empty(), runtime.is_empty()) {
        (_, true) => base.to_owned(),
        (true, false) => runtime.to_owned(),
        (false, false) => format!("{base} {runtime}"),
    }
}

/// The worker of one `work-command` type.
#[derive(Debug)]
pub(crate) struct CommandWorker {
    config: WorkCommandConfig,
    launcher: Arc<Launcher>,
    /// Runners this process started and that still run, by unit ID: their exit is observed
    /// by the monitor, which removes the entry.
    runners: Arc<std::sync::Mutex<HashMap<String, watch::Receiver<bool>>>>,
}

impl CommandWorker {
    pub(crate) fn new(config: WorkCommandConfig, launcher: Arc<Launcher>) -> Self {
        Self {
            config,
            launcher,
            runners: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    fn runner_exit(&self, unit: &str) -> Option<watch::Receiver<bool>> {
        self.runners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(unit)
            .cloned()
    }

    async fn start_unit(
        &self,
        unit: &Arc<Unit>,
        spawner: &Spawner,
    ) -> Result<StartOutcome, WorkerError> {
        unit.set_state(State::PENDING, "Launching command runner", Some(0))
            .await;
        let params = CommandExtra::parse(unit.status().extra_data.as_deref())
            .map(|e| e.params)
            .unwrap_or_default();
        let level = match self.launcher.log_level {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        };
        let mut command = tokio::process::Command::new(self.launcher.program());
        command
            .args([
                "--node",
                "id=worker",
                "--log-level",
                level,
                "--command-runner",
            ])
            .arg(format!("command={}", self.config.command))
            .arg(format!("params={params}"))
            .arg(format!("unitdir={}", unit.dir().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                let text = format!(
                    "fork/exec {}: {}",
                    self.launcher.program().display(),
                    super::go_io_error(&error)
                );
                unit.set_state(
                    State::FAILED,
                    format!("Failed to start command runner: {text}"),
                    Some(0),
                )
                .await;
                return Err(WorkerError(text));
            }
        };
        let pid = child.id().map_or(0, i64::from);
        let recorded = unit
            .update(move |status| {
                let mut extra =
                    CommandExtra::parse(status.extra_data.as_deref()).unwrap_or_default();
                extra.pid = pid;
                status.extra_data = Some(extra.to_json());
            })
            .await;
        if let Err(error) = recorded {
            tracing::error!(unit = %unit.id(), error = %super::chain(&error), "cannot record the runner PID");
        }
        let (exited_tx, exited_rx) = watch::channel(false);
        self.runners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(unit.id().to_string(), exited_rx);
        tracing::debug!(unit = %unit.id(), pid, "command runner started");
        let monitored = Arc::clone(unit);
        let runners = Arc::clone(&self.runners);
        let mut dir = spawner.dirs.watch(unit.dir());
        // Lasts while the command runs: its duration is the unit's run time.
        let span = tracing::info_span!(
            "work.run",
            work.unit_id = %unit.id(),
            work.type = %unit.status().work_type,
            process.pid = pid,
            work.state = tracing::field::Empty,
        );
        unit.join_trace(&span);
        let run_span = span.clone();
        spawner.spawn(
            async move {
                let mut stamp = None;
                let exit = loop {
                    dir.mark_seen();
                    stamp = monitored.reload_if_changed(stamp).await;
                    tokio::select! {
                        status = child.wait() => break status,
                        () = dir.changed() => {}
                    }
                };
                let how = match &exit {
                    Ok(status) => super::runner::process_state_text(*status),
                    Err(error) => format!("wait failed: {error}"),
                };
                runner_gone(&monitored, &format!("command runner exited ({how})")).await;
                run_span.record("work.state", monitored.status().state.name());
                let _ = exited_tx.send(true);
                runners
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(monitored.id().as_str());
            }
            .instrument(span),
        );
        Ok(StartOutcome::Started)
    }

    async fn cancel_unit(&self, unit: &Arc<Unit>) -> Result<Outcome, WorkerError> {
        let status = unit.status();
        if status.state.is_final() {
            // The runner wrote its final state (seen by a status poll) but may not have
            // exited yet: let the monitor record its end first, or a release would delete
            // the directory under that last status write (ENOTEMPTY, then a 1 s retry).
            if let Some(mut exited) = self.runner_exit(unit.id().as_str()) {
                let _ = tokio::time::timeout(CANCEL_WAIT, exited.wait_for(|gone| *gone)).await;
            }
            return Ok(Outcome::Done);
        }
        let pid = CommandExtra::parse(status.extra_data.as_deref()).map_or(0, |e| e.pid);
        if pid <= 0 {
            // Nothing runs yet (the payload is still arriving): stop the submission.
            unit.abort_input.cancel();
            unit.set_state(State::CANCELED, "Canceled", None).await;
            return Ok(Outcome::Done);
        }
        let pid_raw = i32::try_from(pid).ok().and_then(Pid::from_raw);
        match (self.runner_exit(unit.id().as_str()), pid_raw) {
            (Some(mut exited), Some(pid)) => {
                if !*exited.borrow() {
                    signal(pid, Signal::INT);
                    let timed_out =
                        tokio::time::timeout(CANCEL_WAIT, exited.wait_for(|gone| *gone))
                            .await
                            .is_err();
                    if timed_out {
                        tracing::warn!(unit = %unit.id(), %pid, "command runner ignored SIGINT; killing it");
                        signal(pid, Signal::KILL);
                        let _ = tokio::time::timeout(CANCEL_WAIT, exited.wait_for(|gone| *gone))
                            .await
                            .is_err();
                    }
                }
            }
            (None, Some(pid)) => {
                // A runner from before a restart: not our child, so poll its PID.
                if runner_alive(pid, unit.dir()) {
                    signal(pid, Signal::INT);
                    if !wait_gone(pid, unit.dir(), CANCEL_WAIT).await {
                        signal(pid, Signal::KILL);
                        wait_gone(pid, unit.dir(), CANCEL_WAIT).await;
                    }
                }
            }
            (_, None) => {}
        }
        let size = unit.stdout_size().await;
        let result = unit
            .update(move |s| {
                // A unit that finished on its own before the signal keeps its result; one
                // stopped by the signal (or whose runner had to be killed) is Canceled.
                let finished_itself = s.state.is_complete()
                    && s.detail != "Killed"
                    && !s.detail.starts_with(RUNNER_GONE_PREFIX);
                if !finished_itself {
                    s.set(State::CANCELED, "Canceled", Some(size));
                }
            })
            .await;
        result.map_err(|e| WorkerError(super::chain(&e)))?;
        Ok(Outcome::Done)
    }

    async fn restart_unit(&self, unit: &Arc<Unit>, spawner: &Spawner) -> Result<(), WorkerError> {
        let status = unit.status();
        if status.state.is_final() {
            return Ok(());
        }
        let pid = CommandExtra::parse(status.extra_data.as_deref()).map_or(0, |e| e.pid);
        let mut pid = i32::try_from(pid).ok().and_then(Pid::from_raw);
        if pid.is_none() {
            // The daemon may have died between starting the runner and recording its PID:
            // that runner is running the unit (it may have reported Running already), so
            // find it rather than fail the unit under it.
            let dir = unit.dir().to_owned();
            pid = tokio::task::spawn_blocking(move || find_runner(&dir))
                .await
                .ok()
                .flatten();
            if let Some(found) = pid {
                tracing::info!(unit = %unit.id(), pid = %found, "found the unit's command runner, whose PID was not recorded");
                let raw = i64::from(found.as_raw_nonzero().get());
                let recorded = unit
                    .update(move |status| {
                        let mut extra =
                            CommandExtra::parse(status.extra_data.as_deref()).unwrap_or_default();
                        extra.pid = raw;
                        status.extra_data = Some(extra.to_json());
                    })
                    .await;
                if let Err(error) = recorded {
                    tracing::error!(unit = %unit.id(), error = %super::chain(&error), "cannot record the runner PID");
                }
            }
        }
        // Go fails every Pending unit; one whose runner was already started (the daemon
        // stopped just after launching it) is still running, so it is monitored instead.
        let launched = pid.is_some_and(|pid| runner_alive(pid, unit.dir()));
        if status.state == State::PENDING && !launched {
            let size = unit.stdout_size().await;
            unit.set_state(State::FAILED, "Pending at restart", Some(size))
                .await;
            return Ok(());
        }
        let monitored = Arc::clone(unit);
        let mut dir = spawner.dirs.watch(unit.dir());
        // Not our child, so no wait(): a pidfd becomes readable when the runner exits.
        let exit_fd = pid
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            })
            .and_then(|fd| super::fswatch::register(fd).ok());
        spawner.spawn(async move {
            let mut stamp = None;
            let mut last_liveness = tokio::time::Instant::now();
            let mut exit_seen = false;
            loop {
                dir.mark_seen();
                stamp = monitored.reload_if_changed(stamp).await;
                if monitored.is_released() {
                    break;
                }
                if monitored.status().state.is_final() {
                    if let Some(pid) = pid {
                        wait_gone(pid, monitored.dir(), CANCEL_WAIT).await;
                    }
                    runner_gone(&monitored, "command runner exited").await;
                    break;
                }
                if exit_seen || last_liveness.elapsed() >= LIVENESS_CHECK {
                    last_liveness = tokio::time::Instant::now();
                    let alive = pid.is_some_and(|pid| runner_alive(pid, monitored.dir()));
                    if !alive {
                        monitored.reload_if_changed(None).await;
                        runner_gone(&monitored, "command runner is no longer running").await;
                        break;
                    }
                }
                let runner_exit = async {
                    match &exit_fd {
                        Some(fd) => {
                            let _ = fd.readable().await;
                        }
                        // Without a pidfd (old kernel), check the PID now and then.
                        None => tokio::time::sleep(LIVENESS_CHECK).await,
                    }
                };
                exit_seen = tokio::select! {
                    () = dir.changed() => false,
                    () = runner_exit => true,
                };
            }
        });
        Ok(())
    }
}

/// After the runner exited: `ExtraData` becomes null (as in Go), and a unit left unfinished
/// (the runner was killed or crashed) fails instead of staying Running for ever.
async fn runner_gone(unit: &Arc<Unit>, why: &str) {
    let size = unit.stdout_size().await;
    let why = why.to_owned();
    let result = unit
        .update(move |s| {
            s.extra_data = None;
            if !s.state.is_final() {
                s.set(
                    State::FAILED,
                    format!("{why} without reporting a result"),
                    Some(size),
                );
            }
        })
        .await;
    if let Err(error) = result {
        tracing::error!(unit = %unit.id(), error = %super::chain(&error), "cannot record the end of the runner");
    }
}

fn signal(pid: Pid, signal: Signal) {
    if let Err(error) = rustix::process::kill_process(pid, signal) {
        // ESRCH: it already finished, which is what we wanted.
        tracing::debug!(%pid, %error, "signal not delivered");
    }
}

/// Whether `pid` is still the command runner of `unit_dir` (not a reused PID).
pub(crate) fn runner_alive(pid: Pid, unit_dir: &Path) -> bool {
    match rustix::process::test_kill_process(pid) {
        Ok(()) => {}
        Err(rustix::io::Errno::PERM) => {}
        Err(_) => return false,
    }
    let cmdline = format!("/proc/{}/cmdline", pid.as_raw_nonzero());
    match std::fs::read(&cmdline) {
        Ok(bytes) => runs_unit(&bytes, unit_dir),
        // No /proc (not Linux): the signal test is all we have.
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// Whether a `/proc/<pid>/cmdline` is that of the command runner of `unit_dir`.
fn runs_unit(cmdline: &[u8], unit_dir: &Path) -> bool {
    // A zombie has an empty command line: it is gone.
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    // Compare the last two components (<node>/<unit>), so a data directory spelled
    // differently since (relative, trailing slash, symlink) still matches.
    let tail = |p: &Path| {
        let unit = p.file_name().map(|n| n.to_owned());
        let node = p.parent().and_then(Path::file_name).map(|n| n.to_owned());
        (node, unit)
    };
    let wanted = tail(unit_dir);
    args.contains(&b"--command-runner".as_slice())
        && args.iter().any(|arg| {
            std::str::from_utf8(arg)
                .ok()
                .and_then(|a| a.strip_prefix("unitdir="))
                .is_some_and(|dir| tail(Path::new(dir)) == wanted)
        })
}

/// The running command runner of `unit_dir`, found by its command line (Linux `/proc`).
fn find_runner(unit_dir: &Path) -> Option<Pid> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(Pid::from_raw)
        .find(|pid| {
            std::fs::read(format!("/proc/{}/cmdline", pid.as_raw_nonzero()))
                .is_ok_and(|cmdline| runs_unit(&cmdline, unit_dir))
        })
}

async fn wait_gone(pid: Pid, unit_dir: &Path, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while runner_alive(pid, unit_dir) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

impl Worker for CommandWorker {
    fn work_type(&self) -> &str {
        &self.config.work_type
    }

    fn verify_signature(&self) -> bool {
        self.config.verify_signature
    }

    fn prepare(&self, params: &BTreeMap<String, String>) -> Result<Option<String>, WorkerError> {
        let runtime = params.get("params").map_or("", String::as_str);
        if !runtime.is_empty() && !self.config.allow_runtime_params {
            return Err(WorkerError(
                "extra params provided but not allowed".to_owned(),
            ));
        }
        let extra = CommandExtra {
            pid: 0,
            params: combine_params(&self.config.params, runtime),
        };
        Ok(Some(extra.to_json()))
    }

    fn start<'a>(
        &'a self,
        unit: &'a Arc<Unit>,
        spawner: &'a Spawner,
    ) -> BoxFuture<'a, Result<StartOutcome, WorkerError>> {
        Box::pin(self.start_unit(unit, spawner))
    }

    fn restart<'a>(
        &'a self,
        unit: &'a Arc<Unit>,
        spawner: &'a Spawner,
    ) -> BoxFuture<'a, Result<(), WorkerError>> {
        Box::pin(self.restart_unit(unit, spawner))
    }

    fn cancel<'a>(&'a self, unit: &'a Arc<Unit>) -> BoxFuture<'a, Result<Outcome, WorkerError>> {
        Box::pin(self.cancel_unit(unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(params: &str, allow: bool) -> CommandWorker {
        CommandWorker::new(
            WorkCommandConfig {
                work_type: "t".into(),
                command: "bash".into(),
                params: params.into(),
                allow_runtime_params: allow,
                verify_signature: false,
            },
            Arc::new(Launcher {
                exe: PathBuf::from("/bin/false"),
                log_level: LogLevel::Info,
            }),
        )
    }

    #[test]
    fn params_are_combined_and_checked_like_go() {
        let none = BTreeMap::new();
        let runtime: BTreeMap<String, String> = [("params".into(), "-x 'y z'".into())].into();
        assert_eq!(
            worker("-c", false).prepare(&none),
            Ok(Some(r#"{"Pid":0,"Params":"-c"}"#.into()))
        );
        assert_eq!(
            worker("", false).prepare(&runtime),
            Err(WorkerError("extra params provided but not allowed".into()))
        );
        assert_eq!(
            worker("-c", true).prepare(&runtime),
            Ok(Some(r#"{"Pid":0,"Params":"-c -x 'y z'"}"#.into()))
        );
        assert_eq!(
            worker("", true).prepare(&runtime),
            Ok(Some(r#"{"Pid":0,"Params":"-x 'y z'"}"#.into()))
        );
        let empty: BTreeMap<String, String> = [("params".into(), String::new())].into();
        assert!(worker("", false).prepare(&empty).is_ok());
    }

    #[test]
    fn a_replaced_binary_is_found_at_its_path() {
        let launcher = |exe: &str| Launcher {
            exe: PathBuf::from(exe),
            log_level: LogLevel::Info,
        };
        assert_eq!(launcher("/bin/sh").program(), PathBuf::from("/bin/sh"));
        assert_eq!(
            launcher("/usr/bin/receptor (deleted)").program(),
            PathBuf::from("/usr/bin/receptor")
        );
    }

    #[test]
    fn liveness_rejects_other_processes() {
        let me = Pid::from_raw(i32::try_from(std::process::id()).expect("pid")).expect("nonzero");
        assert!(!runner_alive(me, Path::new("/tmp/none")));
        let unlikely = Pid::from_raw(i32::MAX - 7).expect("nonzero");
        assert!(!runner_alive(unlikely, Path::new("/tmp/none")));
    }
}
