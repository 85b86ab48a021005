//! The hidden `--command-runner` process: runs one unit's command and reports its progress
//! in the unit's status file, with Go's exact file protocol (spec §2.6), so Go nodes can use
//! this binary as their runner and we can monitor Go runners after an upgrade:
//!
//! 1. writes `Pending / Not started yet`;
//! 2. runs the command directly (no shell), stdin from `stdin`, stdout *and* stderr appended
//!    to `stdout` (one open file, so the two streams interleave without overwriting);
//! 3. writes `Running / Running: PID <pid>` with the current stdout size at once and then
//!    every 250 ms while the size changes (Go rewrites it unconditionally);
//! 4. on SIGINT or SIGTERM: SIGINT to the command's process group, SIGKILL after 10 s,
//!    `Failed / Killed`, exit 255;
//! 5. on exit: `fsync` stdout, then `Succeeded / exit status 0` or `Failed / <exit text>`, so
//!    `StdoutSize` never claims bytes that a crash could lose; exits with the command's code.
//!
//! Differences from Go, on purpose: stdout is not opened `O_SYNC` (one `fsync` before the
//! final status gives the same guarantee without a disk write per output line), and the
//! command gets its own process group, so cancelling also stops its children (bash loops,
//! ansible forks) instead of orphaning them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};

use super::go_io_error;
use super::shlex;
use super::status::{FILE_MODE, State, Status, StatusFile, stdout_size};
use crate::config::CommandRunnerConfig;

/// Time the command gets to exit after SIGINT before it is killed.
pub const KILL_GRACE: Duration = Duration::from_secs(10);
/// Interval between status updates while the command runs.
pub const TICK: Duration = Duration::from_millis(250);
/// Consecutive failed status writes after which the runner gives up (as Go).
const MAX_WRITE_FAILURES: u32 = 3;
/// Exit code of a runner that failed or was killed (Go's `os.Exit(-1)`).
pub const FAILURE_EXIT: i32 = 255;

/// Runs the command-runner entity; returns the process exit code.
pub fn run(config: &CommandRunnerConfig) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "command runner cannot start its runtime");
            return FAILURE_EXIT;
        }
    };
    runtime.block_on(run_unit(config))
}

struct Reporter {
    file: StatusFile,
    unit_dir: PathBuf,
    base: Status,
    last: Option<(State, String, i64)>,
    failures: u32,
}

impl Reporter {
    /// Writes state, detail and size, keeping the rest of the file (ExtraData, WorkType).
    fn report(&mut self, state: State, detail: &str, size: i64) -> std::io::Result<()> {
        let current = (state, detail.to_owned(), size);
        if self.last.as_ref() == Some(&current) {
            return Ok(());
        }
        let owned = detail.to_owned();
        self.file
            .update(&self.base, |s| s.set(state, owned, Some(size)))
            .map_err(|e| std::io::Error::other(super::chain(&e)))?;
        self.last = Some(current);
        Ok(())
    }

    /// A final report; failures are logged (nothing else can be done). `ExtraData` (the pid)
    /// goes null in the same write, so no reader ever sees a final state with a stale pid.
    fn finish(&mut self, state: State, detail: &str) {
        let size = stdout_size(&self.unit_dir);
        let owned = detail.to_owned();
        let result = self.file.update(&self.base, |s| {
            s.set(state, owned, Some(size));
            s.extra_data = None;
        });
        if let Err(error) = result {
            tracing::error!(file = %self.file.path().display(), error = %super::chain(&error), "Error updating status file");
        }
    }
}

async fn run_unit(config: &CommandRunnerConfig) -> i32 {
    let dir = config.unit_dir.clone();
    // Only a unit directory: its name must be a unit ID (no `..`, no `/etc`).
    let named_like_a_unit = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| super::UnitId::parse(n).is_ok());
    if !named_like_a_unit || !dir.is_dir() {
        tracing::error!(unitdir = %dir.display(), "command runner: not a work unit directory");
        return FAILURE_EXIT;
    }
    // Signals first, so a cancel arriving during start-up is not lost.
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "command runner cannot handle signals");
            return FAILURE_EXIT;
        }
    };
    let mut reporter = Reporter {
        file: StatusFile::new(&dir),
        unit_dir: dir.clone(),
        base: Status {
            state: State::PENDING,
            detail: String::new(),
            stdout_size: 0,
            work_type: String::new(),
            extra_data: Some(r#"{"Pid":0,"Params":""}"#.to_owned()),
        },
        last: None,
        failures: 0,
    };
    if let Err(error) = reporter.report(State::PENDING, "Not started yet", 0) {
        tracing::error!(%error, "Error updating status file");
    }
    let (mut child, stdout) = match launch(config, &dir) {
        Ok(started) => started,
        Err(text) => {
            reporter.finish(State::FAILED, &text);
            tracing::error!(error = %text, "Command runner exited with error");
            return FAILURE_EXIT;
        }
    };
    let child_pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(Pid::from_raw);
    let running = format!("Running: PID {}", child.id().unwrap_or(0));
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let exit = loop {
        tokio::select! {
            biased;
            _ = interrupt.recv() => return killed(&mut child, child_pid, &mut reporter).await,
            _ = terminate.recv() => return killed(&mut child, child_pid, &mut reporter).await,
            exit = child.wait() => break exit,
            _ = ticker.tick() => {
                let size = stdout_size(&dir);
                match reporter.report(State::RUNNING, &running, size) {
                    Ok(()) => reporter.failures = 0,
                    Err(error) => {
                        reporter.failures += 1;
                        tracing::error!(%error, "Error updating status file");
                        if reporter.failures > MAX_WRITE_FAILURES {
                            tracing::error!("Exceeded retries for updating status file; stopping the command");
                            stop(&mut child, child_pid).await;
                            return FAILURE_EXIT;
                        }
                    }
                }
            }
        }
    };
    // Output first, then the status that claims it.
    if let Err(error) = stdout.sync_all() {
        tracing::error!(%error, "cannot flush stdout to disk");
    }
    match exit {
        Ok(status) => {
            let text = process_state_text(status);
            let state = if status.success() {
                State::SUCCEEDED
            } else {
                State::FAILED
            };
            reporter.finish(state, &text);
            status.code().map_or(FAILURE_EXIT, |code| code & 0xff)
        }
        Err(error) => {
            reporter.finish(State::FAILED, &format!("Error: {error}"));
            FAILURE_EXIT
        }
    }
}

/// Opens the unit's files and starts the command.
fn launch(
    config: &CommandRunnerConfig,
    dir: &Path,
) -> Result<(tokio::process::Child, File), String> {
    let params = if config.params.is_empty() {
        Vec::new()
    } else {
        shlex::split(&config.params).map_err(|e| e.to_string())?
    };
    let stdin_path = dir.join("stdin");
    let stdin = File::open(&stdin_path)
        .map_err(|e| format!("open {}: {}", stdin_path.display(), go_io_error(&e)))?;
    let stdout_path = dir.join("stdout");
    let stdout = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(&stdout_path)
        .map_err(|e| format!("open {}: {}", stdout_path.display(), go_io_error(&e)))?;
    let clone_error =
        |e: std::io::Error| format!("dup {}: {}", stdout_path.display(), go_io_error(&e));
    let out = stdout.try_clone().map_err(clone_error)?;
    let err = stdout.try_clone().map_err(clone_error)?;
    let program = look_path(&config.command)?;
    let child = tokio::process::Command::new(&program)
        .arg0(&config.command)
        .args(&params)
        .stdin(stdin)
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("fork/exec {}: {}", program.display(), go_io_error(&e)))?;
    Ok((child, stdout))
}

/// Go's `exec.LookPath`: a name with a slash is used as is; otherwise the first executable
/// regular file of that name in `$PATH`.
fn look_path(command: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    let not_found = || format!("exec: \"{command}\": executable file not found in $PATH");
    if command.is_empty() {
        return Err(not_found());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(command);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(not_found())
}

/// SIGINT to the command's group, SIGKILL after the grace period.
async fn stop(child: &mut tokio::process::Child, pid: Option<Pid>) {
    let Some(pid) = pid else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, Signal::INT);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::info!(%pid, "sending SIGKILL to the command");
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
}

async fn killed(
    child: &mut tokio::process::Child,
    pid: Option<Pid>,
    reporter: &mut Reporter,
) -> i32 {
    stop(child, pid).await;
    reporter.finish(State::FAILED, "Killed");
    FAILURE_EXIT
}

/// Go's `os.ProcessState.String()`: `exit status 3`, `signal: killed`,
/// `signal: segmentation fault (core dumped)`.
pub fn process_state_text(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    if let Some(signal) = status.signal() {
        let core = if status.core_dumped() {
            " (core dumped)"
        } else {
            ""
        };
        return format!("signal: {}{core}", signal_name(signal));
    }
    if let Some(signal) = status.stopped_signal() {
        return format!("stop signal: {}", signal_name(signal));
    }
    if status.continued() {
        return "continued".to_owned();
    }
    status.to_string()
}

/// Go's names of Linux signals (`syscall.Signal.String()`).
fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        16 => "stack fault",
        17 => "child exited",
        18 => "continued",
        19 => "stopped (signal)",
        20 => "stopped",
        21 => "stopped (tty input)",
        22 => "stopped (tty output)",
        23 => "urgent I/O condition",
        24 => "CPU time limit exceeded",
        25 => "file size limit exceeded",
        26 => "virtual timer expired",
        27 => "profiling timer expired",
        28 => "window changed",
        29 => "I/O possible",
        30 => "power failure",
        31 => "bad system call",
        n => return format!("signal {n}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_states_read_like_go() {
        assert_eq!(process_state_text(ExitStatus::from_raw(0)), "exit status 0");
        assert_eq!(
            process_state_text(ExitStatus::from_raw(3 << 8)),
            "exit status 3"
        );
        assert_eq!(
            process_state_text(ExitStatus::from_raw(9)),
            "signal: killed"
        );
        assert_eq!(
            process_state_text(ExitStatus::from_raw(2)),
            "signal: interrupt"
        );
        assert_eq!(
            process_state_text(ExitStatus::from_raw(11 | 0x80)),
            "signal: segmentation fault (core dumped)"
        );
    }

    #[test]
    fn look_path_errors_like_go() {
        assert_eq!(
            look_path("no-such-command-xyz"),
            Err("exec: \"no-such-command-xyz\": executable file not found in $PATH".to_owned())
        );
        assert!(look_path("sh").is_ok_and(|p| p.ends_with("sh")));
        assert_eq!(look_path("/x/y"), Ok(PathBuf::from("/x/y")));
    }
}
