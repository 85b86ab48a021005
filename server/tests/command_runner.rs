//! The hidden `--command-runner` entity, run directly the way a Go node runs it
//! (`receptor --node id=worker --log-level info --command-runner command=.. params=.. unitdir=..`):
//! the file protocol must match Go's so either side can use the other's runner.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

const WAIT: Duration = Duration::from_secs(30);

/// A unit directory as a Go node leaves it before starting its runner.
fn unit_dir(root: &Path, id: &str, stdin: &[u8]) -> Result<PathBuf> {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("stdin"), stdin)?;
    std::fs::write(
        dir.join("status"),
        "{\"State\":0,\"Detail\":\"Launching command runner\",\"StdoutSize\":0,\"WorkType\":\"echo\",\"ExtraData\":{\"Pid\":4242,\"Params\":\"x \\u003cy\\u003e\"}}\n",
    )?;
    Ok(dir)
}

fn runner(command: &str, params: &str, dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_receptor"));
    cmd.args([
        "--node",
        "id=worker",
        "--log-level",
        "info",
        "--command-runner",
    ])
    .arg(format!("command={command}"))
    .arg(format!("params={params}"))
    .arg(format!("unitdir={}", dir.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    cmd
}

async fn run(command: &str, params: &str, dir: &Path) -> Result<i32> {
    let output = tokio::time::timeout(WAIT, runner(command, params, dir).output())
        .await
        .context("runner hung")??;
    output.status.code().context("runner killed by a signal")
}

fn status(dir: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(dir.join("status"))?)
}

#[tokio::test]
async fn success_clears_extra_data_and_reports_the_exact_size() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dir = unit_dir(root.path(), "Unit0001", b"payload\n")?;
    assert_eq!(run("cat", "", &dir).await?, 0);
    assert_eq!(
        status(&dir)?,
        "{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":8,\"WorkType\":\"echo\",\"ExtraData\":null}\n"
    );
    assert_eq!(std::fs::read(dir.join("stdout"))?, b"payload\n");
    Ok(())
}

#[tokio::test]
async fn exit_codes_and_stderr_are_passed_on() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dir = unit_dir(root.path(), "Unit0002", b"")?;
    assert_eq!(run("sh", "-c 'echo a; echo b >&2; exit 7'", &dir).await?, 7);
    let text = status(&dir)?;
    ensure!(
        text.starts_with("{\"State\":3,\"Detail\":\"exit status 7\",\"StdoutSize\":4,"),
        "{text}"
    );
    assert_eq!(std::fs::read(dir.join("stdout"))?, b"a\nb\n");
    Ok(())
}

#[tokio::test]
async fn start_errors_fail_the_unit_with_go_texts() -> Result<()> {
    let root = tempfile::tempdir()?;
    let cases = [
        (
            "no-such-command-xyz",
            "",
            "exec: \\\"no-such-command-xyz\\\": executable file not found in $PATH",
        ),
        (
            "/no/such/file",
            "",
            "fork/exec /no/such/file: no such file or directory",
        ),
        (
            "sh",
            "-c 'unterminated",
            "EOF found when expecting closing quote",
        ),
    ];
    for (i, (command, params, detail)) in cases.into_iter().enumerate() {
        let dir = unit_dir(root.path(), &format!("Fail000{i}"), b"")?;
        assert_eq!(run(command, params, &dir).await?, 255, "{command}");
        let text = status(&dir)?;
        ensure!(
            text.contains(&format!("\"State\":3,\"Detail\":\"{detail}\"")),
            "{text}"
        );
    }
    // Not a unit directory: refused, nothing written.
    let bad = root.path().join("not.a.unit");
    std::fs::create_dir_all(&bad)?;
    assert_eq!(run("true", "", &bad).await?, 255);
    assert!(!bad.join("status").exists());
    Ok(())
}

#[tokio::test]
async fn sigterm_kills_the_command_and_reports_killed() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dir = unit_dir(root.path(), "Unit0003", b"")?;
    let mut child = runner("sh", "-c 'echo started; sleep 30'", &dir).spawn()?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !status(&dir)?.contains("Running: PID ") {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "never running: {}",
            status(&dir)?
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().context("pid")?;
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    ensure!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .context("runner did not stop")??;
    assert_eq!(exit.code(), Some(255));
    let text = status(&dir)?;
    ensure!(
        text.starts_with("{\"State\":3,\"Detail\":\"Killed\",\"StdoutSize\":8,"),
        "{text}"
    );
    Ok(())
}
