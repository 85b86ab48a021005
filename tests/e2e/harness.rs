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
        let mut command = Command::new(receptor_bin()?);
        command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn(name, command)
    }

    /// Starts `receptor --config <dir>/<name>.yaml` inside network namespace `netns`
    /// (`ip netns exec` execs receptor itself, so [`Daemon::pid`] is receptor's).
    pub(crate) async fn start_yaml_in(
        netns: &str,
        name: &str,
        dir: &Path,
        yaml: &str,
    ) -> Result<Self> {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml)?;
        let mut command = Command::new(crate::netns::IP);
        command
            .args(["netns", "exec", netns])
            .arg(receptor_bin()?)
            .arg("--config")
            .arg(&path);
        Self::spawn(name, command)
    }

    fn spawn(name: &str, mut command: Command) -> Result<Self> {
        let mut child = command
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

    /// SIGKILL (a crash: no shutdown code runs) and waits until the process is gone. Its
    /// command runners live in their own process groups and keep running, as after a real
    /// crash.
    pub(crate) async fn kill(mut self) -> Result<()> {
        self.child.start_kill().context("sending SIGKILL")?;
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .context("receptor did not exit after SIGKILL")??;
        Ok(())
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

// === raw control-socket client (no Python start-up per call, for tight loops) ===

/// Opens a control session and reads the greeting.
async fn control_session(socket: &Path) -> Result<BufReader<tokio::net::UnixStream>> {
    let stream = tokio::time::timeout(WAIT, tokio::net::UnixStream::connect(socket))
        .await
        .context("connecting to the control socket timed out")??;
    let mut session = BufReader::new(stream);
    let mut greeting = String::new();
    tokio::time::timeout(WAIT, session.read_line(&mut greeting))
        .await
        .context("no greeting")??;
    if !greeting.starts_with("Receptor Control") {
        bail!("unexpected greeting {greeting:?}");
    }
    Ok(session)
}

async fn reply_line(session: &mut BufReader<tokio::net::UnixStream>) -> Result<String> {
    let mut line = String::new();
    let n = tokio::time::timeout(WAIT, session.read_line(&mut line))
        .await
        .context("no reply")??;
    if n == 0 {
        bail!("the control session closed without a reply");
    }
    Ok(line.trim_end().to_owned())
}

/// Sends one command line and returns the one reply line.
pub(crate) async fn control(socket: &Path, command: &str) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut session = control_session(socket).await?;
    session
        .get_mut()
        .write_all(format!("{command}\n").as_bytes())
        .await?;
    reply_line(&mut session).await
}

/// `work list` as JSON (`{unit: status}`).
pub(crate) async fn work_list(socket: &Path) -> Result<serde_json::Value> {
    let line = control(socket, "work list").await?;
    serde_json::from_str(&line).with_context(|| format!("work list reply {line:?}"))
}

/// `work status <unit>` as JSON; `Ok(None)` when the node says the unit is unknown.
pub(crate) async fn work_status(socket: &Path, unit: &str) -> Result<Option<serde_json::Value>> {
    let line = control(socket, &format!("work status {unit}")).await?;
    if line.starts_with("ERROR: unknown work unit") {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .with_context(|| format!("work status reply {line:?}"))
}

/// Waits until `unit` is in a final state (Succeeded, Failed or Canceled) on `socket`.
pub(crate) async fn wait_final(
    socket: &Path,
    unit: &str,
    within: Duration,
) -> Result<serde_json::Value> {
    wait_for(&format!("unit {unit} to finish"), within, || async {
        let status = work_status(socket, unit).await.ok()??;
        matches!(status["State"].as_i64(), Some(2..=4)).then_some(status)
    })
    .await
}

/// A submit over the raw protocol: the JSON `request` (without command/subcommand), then
/// the payload from `payload`, then the result line. Returns the unit ID and the result line.
pub(crate) async fn work_submit(
    socket: &Path,
    request: serde_json::Value,
    payload: &[u8],
) -> Result<(String, String)> {
    use tokio::io::AsyncWriteExt;
    let mut request = request;
    request["command"] = "work".into();
    request["subcommand"] = "submit".into();
    let mut session = control_session(socket).await?;
    session
        .get_mut()
        .write_all(format!("{request}\n").as_bytes())
        .await?;
    let created = reply_line(&mut session).await?;
    let id = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|rest| rest.strip_suffix(". Send stdin data and EOF."))
        .with_context(|| format!("submit refused: {created}"))?
        .to_owned();
    session.get_mut().write_all(payload).await?;
    session.get_mut().shutdown().await?;
    let result = reply_line(&mut session).await?;
    Ok((id, result))
}

/// `work results <unit>`: every byte until the node closes the stream (the unit is done).
pub(crate) async fn work_results(socket: &Path, unit: &str, within: Duration) -> Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut session = control_session(socket).await?;
    session
        .get_mut()
        .write_all(format!("work results {unit}\n").as_bytes())
        .await?;
    let header = reply_line(&mut session).await?;
    if !header.starts_with("Streaming results for work unit") {
        bail!("work results refused: {header}");
    }
    let mut out = Vec::new();
    tokio::time::timeout(within, session.read_to_end(&mut out))
        .await
        .with_context(|| format!("results of {unit} did not end within {within:?}"))??;
    Ok(out)
}
