//! Running real `receptor` processes and the real (PyPI) `receptorctl` from tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Default time to wait for a condition.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The built `receptor` binary: `$RECEPTOR_BIN`, or next to this test binary's directory.
pub(crate) fn receptor_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RECEPTOR_BIN") {
        return Ok(path.into());
    }
    // target/debug/deps/e2e-<hash> -> target/debug/receptor
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("receptor"))
        .context("cannot locate the target directory")?;
    if !path.exists() {
        bail!(
            "{} does not exist: build it first (scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

/// The real receptorctl from PyPI: `$RECEPTORCTL` (set by scripts/test), else `receptorctl`
/// on PATH. Missing is a failure, never a skip.
pub(crate) fn receptorctl_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RECEPTORCTL") {
        return Ok(path.into());
    }
    which("receptorctl").context(
        "receptorctl not found: run the tests with scripts/test, which installs it from PyPI",
    )
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Polls `check` every 100 ms until it yields `Some`, failing after `timeout`.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running `receptor` process; killed on drop.
#[derive(Debug)]
pub(crate) struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    name: String,
}

impl Daemon {
    /// Starts `receptor` with `args` (e.g. `--config file`).
    pub(crate) async fn start(name: &str, args: &[&str]) -> Result<Self> {
        Self::start_env(name, args, &[]).await
    }

    /// Like [`Daemon::start`], with extra environment variables for the daemon (and so for
    /// the work commands it runs).
    pub(crate) async fn start_env(
        name: &str,
        args: &[&str],
        env: &[(&str, std::ffi::OsString)],
    ) -> Result<Self> {
        let mut child = Command::new(receptor_bin()?)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning receptor")?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            collect(out, Arc::clone(&log));
        }
        if let Some(err) = child.stderr.take() {
            collect(err, Arc::clone(&log));
        }
        Ok(Self {
            child,
            log,
            name: name.to_owned(),
        })
    }

    /// Starts `receptor --config <dir>/<name>.yaml` after writing `yaml` there.
    pub(crate) async fn start_yaml(name: &str, dir: &Path, yaml: &str) -> Result<Self> {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml)?;
        let path = path.to_string_lossy().into_owned();
        Self::start(name, &["--config", &path]).await
    }

    /// Like [`Daemon::start_yaml`], with extra environment variables.
    pub(crate) async fn start_yaml_env(
        name: &str,
        dir: &Path,
        yaml: &str,
        env: &[(&str, std::ffi::OsString)],
    ) -> Result<Self> {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml)?;
        let path = path.to_string_lossy().into_owned();
        Self::start_env(name, &["--config", &path], env).await
    }

    /// The process ID, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until the log matches `pattern` and returns the first capture group.
    pub(crate) async fn wait_log(&self, pattern: &str) -> Result<String> {
        let re = regex::Regex::new(pattern)?;
        let log = Arc::clone(&self.log);
        wait_for(&format!("{} to log {pattern:?}", self.name), WAIT, || {
            let text = log.lock().map(|l| l.clone()).unwrap_or_default();
            let found = re.captures(&text).map(|c| {
                c.get(1)
                    .or_else(|| c.get(0))
                    .map_or(String::new(), |m| m.as_str().to_owned())
            });
            async move { found }
        })
        .await
        .with_context(|| format!("log of {}:\n{}", self.name, self.log()))
    }

    /// The address a `tcp-listener` bound to, read from the log.
    pub(crate) async fn tcp_listener_addr(&self) -> Result<String> {
        self.wait_log(r"tcp listener bound addr=(\S+)").await
    }

    /// Sends SIGTERM and waits for the exit status.
    pub(crate) async fn terminate(mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill failed");
        }
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .context("receptor did not exit after SIGTERM")?
            .map_err(Into::into)
    }
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, log: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut log) = log.lock() {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
}

/// What a receptorctl run printed.
#[derive(Debug)]
pub(crate) struct CtlOutput {
    /// Exit code.
    pub(crate) code: Option<i32>,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

/// Runs the PyPI receptorctl against `socket`.
pub(crate) async fn receptorctl(socket: &Path, args: &[&str]) -> Result<CtlOutput> {
    let output = tokio::time::timeout(
        WAIT,
        Command::new(receptorctl_bin()?)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .context("receptorctl hung")??;
    Ok(CtlOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `receptorctl status --json`, parsed.
pub(crate) async fn status_json(socket: &Path) -> Result<serde_json::Value> {
    let out = receptorctl(socket, &["status", "--json"]).await?;
    if out.code != Some(0) {
        bail!("receptorctl status failed: {out:?}");
    }
    Ok(serde_json::from_str(&out.stdout)?)
}

/// Runs one of receptor's certificate tools (`--cert-init`, `--cert-makereq`,
/// `--cert-signreq`) in `dir`, failing with its output if it fails.
pub(crate) async fn cert_tool(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(receptor_bin()?)
        .current_dir(dir)
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

/// The Rust receptorctl, built next to `receptor` (scripts/test builds every binary).
pub(crate) fn rust_receptorctl() -> Result<PathBuf> {
    let path = receptor_bin()?.with_file_name("receptorctl");
    if !path.exists() {
        bail!(
            "{} does not exist: build the workspace binaries first",
            path.display()
        );
    }
    Ok(path)
}
