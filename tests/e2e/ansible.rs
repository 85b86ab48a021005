//! A real AWX-style workload: `ansible-runner transmit` builds the job payload, node-a submits
//! it with the PyPI receptorctl to an `ansible-runner worker` work type on node-b, and the
//! streamed results go through `ansible-runner process`, exactly as AWX does. ansible-runner and
//! ansible-core come from PyPI into the test venv (scripts/test installs them and sets
//! `RECEPTOR_TEST_VENV` to the venv's bin directory).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::harness::{Daemon, receptorctl, receptorctl_bin, status_json, wait_for};

/// Generous for a debug build on a 2-core machine; the playbook itself takes a few seconds.
const LONG: Duration = Duration::from_secs(180);
const MESSAGE: &str = "hello from receptor-rs";

/// The venv bin directory holding ansible-runner and ansible-playbook: `$RECEPTOR_TEST_VENV`,
/// else the directory of receptorctl (scripts/test installs all three into one venv). Missing
/// is a failure, never a skip.
fn venv_bin() -> Result<PathBuf> {
    let dir = match std::env::var_os("RECEPTOR_TEST_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => receptorctl_bin()?
            .parent()
            .context("receptorctl has no parent directory")?
            .to_owned(),
    };
    for tool in ["ansible-runner", "ansible-playbook"] {
        if !dir.join(tool).is_file() {
            bail!(
                "{} not found in {}: run the tests with scripts/test, which installs it from PyPI",
                tool,
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// PATH with the venv first, so ansible-runner finds ansible-playbook.
fn path_with(venv: &Path) -> Result<std::ffi::OsString> {
    let mut dirs = vec![venv.to_owned()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    Ok(std::env::join_paths(dirs)?)
}

/// Runs `program args`, with `stdin` from a file, and returns stdout; fails on a non-zero exit.
async fn run(
    program: &Path,
    args: &[&str],
    stdin: Option<&Path>,
    path: &std::ffi::OsStr,
) -> Result<Vec<u8>> {
    let stdin = match stdin {
        Some(file) => Stdio::from(std::fs::File::open(file)?),
        None => Stdio::null(),
    };
    let child = Command::new(program)
        .args(args)
        .env("PATH", path)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", program.display()))?;
    let out = tokio::time::timeout(LONG, child.wait_with_output())
        .await
        .with_context(|| format!("{} {args:?} hung", program.display()))??;
    if !out.status.success() {
        bail!(
            "{} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn node_yaml(dir: &Path, id: &str, extra: &str) -> String {
    format!(
        "- node:\n    id: {id}\n    datadir: {d}/{id}-data\n\
         - log-level: info\n\
         - control-service:\n    service: control\n    filename: {d}/{id}.sock\n{extra}",
        d = dir.display()
    )
}

/// A private data dir with a one-task playbook against localhost.
fn write_project(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("project"))?;
    std::fs::create_dir_all(dir.join("inventory"))?;
    std::fs::write(
        dir.join("project/test.yml"),
        format!(
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: say hello\n      \
             ansible.builtin.debug:\n        msg: {MESSAGE}\n"
        ),
    )?;
    std::fs::write(
        dir.join("inventory/hosts"),
        "localhost ansible_connection=local\n",
    )?;
    Ok(())
}

/// Every job event JSON file under `dir`.
fn job_events(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let mut events = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.parent().and_then(Path::file_name) == Some("job_events".as_ref())
                && path.extension() == Some("json".as_ref())
            {
                events.push(serde_json::from_str(&std::fs::read_to_string(&path)?)?);
            }
        }
    }
    Ok(events)
}

/// The `status` file ansible-runner process writes under `<dir>/artifacts`.
fn final_status(artifacts: &Path) -> Result<String> {
    let mut stack = vec![artifacts.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name() == Some("status".as_ref()) {
                return Ok(std::fs::read_to_string(&path)?.trim().to_owned());
            }
        }
    }
    bail!("no status file under {}", artifacts.display())
}

#[tokio::test]
async fn ansible_runner_playbook_runs_on_a_remote_node() -> Result<()> {
    let venv = venv_bin()?;
    let runner = venv.join("ansible-runner");
    let path = path_with(&venv)?;
    let dir = tempfile::tempdir()?;
    let root = dir.path();

    let a = Daemon::start_yaml(
        "node-a",
        root,
        &node_yaml(
            root,
            "node-a",
            "- tcp-listener:\n    bindaddr: 127.0.0.1\n    port: 0\n",
        ),
    )
    .await?;
    let a_addr = a.tcp_listener_addr().await?;
    let b_extra = format!(
        "- tcp-peer:\n    address: {a_addr}\n    redial: true\n\
         - work-command:\n    worktype: ansible-runner\n    command: {}\n    params: worker\n    \
         allowruntimeparams: true\n",
        runner.display()
    );
    let b = Daemon::start_yaml_env(
        "node-b",
        root,
        &node_yaml(root, "node-b", &b_extra),
        &[("PATH", path.clone())],
    )
    .await?;
    let logs = || format!("--- a\n{}\n--- b\n{}", a.log(), b.log());
    let a_sock = root.join("node-a.sock");
    wait_for("node-a to see node-b's ansible-runner", LONG, || async {
        let status = status_json(&a_sock).await.ok()?;
        let ads = status["Advertisements"].as_array()?;
        ads.iter()
            .any(|ad| {
                ad["NodeID"] == "node-b"
                    && ad["WorkCommands"]
                        .as_array()
                        .is_some_and(|wc| wc.iter().any(|w| w["WorkType"] == "ansible-runner"))
            })
            .then_some(())
    })
    .await
    .with_context(logs)?;

    // AWX's side: transmit the private data dir into a payload.
    let job = root.join("job");
    write_project(&job)?;
    let job_str = job.to_string_lossy().into_owned();
    let payload = run(
        &runner,
        &["transmit", &job_str, "-p", "test.yml"],
        None,
        &path,
    )
    .await?;
    let payload_file = root.join("payload.json");
    std::fs::write(&payload_file, &payload)?;

    // Submit to node-b through node-a, then stream the results back.
    let payload_str = payload_file.to_string_lossy().into_owned();
    let out = receptorctl(
        &a_sock,
        &[
            "work",
            "submit",
            "ansible-runner",
            "--node",
            "node-b",
            "-p",
            &payload_str,
        ],
    )
    .await?;
    assert_eq!(out.code, Some(0), "{out:?}\n{}", logs());
    let unit = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .map(|s| s.trim().to_owned())
        .with_context(|| format!("no unit id in {out:?}"))?;
    let ctl = receptorctl_bin()?;
    let a_sock_str = a_sock.to_string_lossy().into_owned();
    let results = run(
        &ctl,
        &["--socket", &a_sock_str, "work", "results", &unit],
        None,
        &path,
    )
    .await
    .with_context(logs)?;
    let results_file = root.join("results.json");
    std::fs::write(&results_file, &results)?;

    let out = receptorctl(&a_sock, &["work", "list", "--unit_id", &unit]).await?;
    let list: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(list[&unit]["StateName"], "Succeeded", "{list}\n{}", logs());

    // AWX's side again: process the streamed results into artifacts.
    let processed = root.join("processed");
    std::fs::create_dir_all(&processed)?;
    let processed_str = processed.to_string_lossy().into_owned();
    let stdout = run(
        &runner,
        &["process", &processed_str],
        Some(&results_file),
        &path,
    )
    .await
    .with_context(logs)?;
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(stdout.contains(MESSAGE), "process output: {stdout}");

    let events = job_events(&processed.join("artifacts"))?;
    let ok = events.iter().find(|e| e["event"] == "runner_on_ok");
    let ok = ok.with_context(|| format!("no runner_on_ok among {events:#?}"))?;
    assert_eq!(ok["event_data"]["task"], "say hello", "{ok:#}");
    assert_eq!(ok["event_data"]["res"]["msg"], MESSAGE, "{ok:#}");
    assert!(
        events.iter().any(|e| e["event"] == "playbook_on_stats"),
        "no playbook_on_stats among {events:#?}"
    );
    assert_eq!(final_status(&processed.join("artifacts"))?, "successful");
    Ok(())
}
