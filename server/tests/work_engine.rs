//! The work engine against real command-runner processes (the built `receptor` binary), in
//! temp dirs: submit, results, failure, cancel, release, restart recovery, robustness.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use receptor_server::config::{LogLevel, WorkCommandConfig};
use receptor_server::metrics::{Registry, Value};
use receptor_server::work::{
    Caller, EngineConfig, ExtraData, State, SubmitRequest, UnitStatus, WorkEngine,
};

const WAIT: Duration = Duration::from_secs(30);

fn command(work_type: &str, command: &str, params: &str) -> WorkCommandConfig {
    WorkCommandConfig {
        work_type: work_type.into(),
        command: command.into(),
        params: params.into(),
        allow_runtime_params: true,
        verify_signature: false,
    }
}

fn standard_types() -> Vec<WorkCommandConfig> {
    vec![
        command("cat", "cat", ""),
        command("sh", "sh", "-c"),
        command("sleep", "sleep", "30"),
    ]
}

fn engine_at(dir: &Path, commands: Vec<WorkCommandConfig>) -> Result<WorkEngine> {
    Ok(WorkEngine::new(config_at(dir, commands))?)
}

fn config_at(dir: &Path, commands: Vec<WorkCommandConfig>) -> EngineConfig {
    EngineConfig {
        node_id: "node-a".into(),
        data_dir: dir.join("node-a"),
        commands,
        signer: None,
        verification_key: None,
        runner_exe: PathBuf::from(env!("CARGO_BIN_EXE_receptor")),
        log_level: LogLevel::Info,
        dialer: None,
        remote_unreachable_timeout: std::time::Duration::from_secs(5),
        work_retention: None,
        default_remote_ttl: None,
        metrics: Default::default(),
    }
}

fn request(work_type: &str, params: Option<&str>) -> SubmitRequest {
    SubmitRequest {
        node: "localhost".into(),
        work_type: work_type.into(),
        params: params
            .map(|p| BTreeMap::from([("params".to_owned(), p.to_owned())]))
            .unwrap_or_default(),
        ..SubmitRequest::default()
    }
}

/// Submits and starts a unit; returns its ID.
async fn submit(
    engine: &WorkEngine,
    work_type: &str,
    params: Option<&str>,
    payload: &[u8],
) -> Result<String> {
    let mut submission = engine
        .submit(request(work_type, params), Caller::Unix)
        .await?;
    let id = submission.unit_id().to_owned();
    let mut payload = payload;
    submission.receive(&mut payload).await?;
    submission.start().await?;
    Ok(id)
}

async fn wait_state(
    engine: &WorkEngine,
    id: &str,
    done: impl Fn(&UnitStatus) -> bool,
) -> Result<UnitStatus> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = engine.status(id).await?;
        if done(&status) {
            return Ok(status);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("unit {id} stuck at {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_final(engine: &WorkEngine, id: &str) -> Result<UnitStatus> {
    // Final, and the runner (if any) has exited: its PID is cleared then.
    wait_state(engine, id, |s| {
        s.state.is_final() && runner_pid(s).is_none()
    })
    .await
}

async fn results(engine: &WorkEngine, id: &str, start: i64) -> Result<Vec<u8>> {
    let stream = engine.results(id, start, "", Caller::Unix).await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.copy_to(&mut out))
        .await
        .context("results stream did not end")??;
    Ok(out)
}

fn runner_pid(status: &UnitStatus) -> Option<i32> {
    let ExtraData::Json(raw) = &status.extra_data else {
        return None;
    };
    let value: serde_json::Value = serde_json::from_str(raw).ok()?;
    value["Pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|&p| p > 0)
}

#[tokio::test]
async fn cat_succeeds_with_exact_stdout() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let id = submit(&engine, "cat", None, b"hello\n").await?;
    assert_eq!(id.len(), 8);
    assert_eq!(results(&engine, &id, 0).await?, b"hello\n");
    let status = wait_final(&engine, &id).await?;
    assert_eq!(status.state, State::SUCCEEDED);
    assert_eq!(status.detail, "exit status 0");
    assert_eq!(status.stdout_size, 6);
    assert_eq!(status.work_type, "cat");
    let unit_dir = dir.path().join("node-a").join(&id);
    let on_disk = std::fs::read_to_string(unit_dir.join("status"))?;
    assert_eq!(
        on_disk,
        "{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":6,\"WorkType\":\"cat\",\"ExtraData\":null}\n"
    );
    assert_eq!(std::fs::read(unit_dir.join("stdin"))?, b"hello\n");
    use std::os::unix::fs::PermissionsExt;
    for file in ["status", "stdin", "stdout", "status.lock"] {
        assert_eq!(
            std::fs::metadata(unit_dir.join(file))?.permissions().mode() & 0o777,
            0o600,
            "{file}"
        );
    }
    assert_eq!(
        std::fs::metadata(&unit_dir)?.permissions().mode() & 0o777,
        0o700
    );
    engine.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test]
async fn nonzero_exit_fails_with_go_detail_and_merged_output() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let id = submit(&engine, "sh", Some("'echo out; echo err >&2; exit 3'"), b"").await?;
    let output = results(&engine, &id, 0).await?;
    assert_eq!(output, b"out\nerr\n");
    let status = wait_final(&engine, &id).await?;
    assert_eq!(
        (status.state, status.detail.as_str()),
        (State::FAILED, "exit status 3")
    );
    // A command that cannot be executed fails with Go's text.
    let engine2 = engine_at(
        dir.path(),
        vec![command("missing", "no-such-command-xyz", "")],
    )?;
    let id = submit(&engine2, "missing", None, b"").await?;
    let status = wait_final(&engine2, &id).await?;
    assert_eq!(status.state, State::FAILED);
    assert_eq!(
        status.detail,
        "exec: \"no-such-command-xyz\": executable file not found in $PATH"
    );
    Ok(())
}

#[tokio::test]
async fn cancel_of_a_sleep_is_prompt() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let id = submit(&engine, "sleep", None, b"").await?;
    let running = wait_state(&engine, &id, |s| s.state == State::RUNNING).await?;
    assert!(running.detail.starts_with("Running: PID "), "{running:?}");
    let runner = runner_pid(&running).context("runner PID in ExtraData")?;
    let started = tokio::time::Instant::now();
    engine.cancel(&id, "", Caller::Unix).await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        started.elapsed()
    );
    let status = engine.status(&id).await?;
    assert_eq!(
        (status.state, status.detail.as_str()),
        (State::CANCELED, "Canceled")
    );
    assert!(
        !Path::new(&format!("/proc/{runner}")).exists(),
        "runner {runner} survived"
    );
    // The results of a cancelled unit end (Go would stream for ever).
    assert_eq!(results(&engine, &id, 0).await?, b"");
    // Cancelling again, or a finished unit, changes nothing.
    engine.cancel(&id, "", Caller::Unix).await?;
    let done = submit(&engine, "cat", None, b"x").await?;
    wait_final(&engine, &done).await?;
    engine.cancel(&done, "", Caller::Unix).await?;
    assert_eq!(engine.status(&done).await?.state, State::SUCCEEDED);
    Ok(())
}

#[tokio::test]
async fn release_deletes_the_unit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let id = submit(&engine, "cat", None, b"data").await?;
    wait_final(&engine, &id).await?;
    let unit_dir = dir.path().join("node-a").join(&id);
    assert!(unit_dir.exists());
    engine.release(&id, false, "", Caller::Unix).await?;
    assert!(!unit_dir.exists());
    assert_eq!(
        engine
            .status(&id)
            .await
            .map_err(|e| e.to_string())
            .err()
            .as_deref(),
        Some(format!("unknown work unit {id}").as_str())
    );
    // Releasing a running unit cancels it first; force-release works too.
    let running = submit(&engine, "sleep", None, b"").await?;
    wait_state(&engine, &running, |s| s.state == State::RUNNING).await?;
    engine.release(&running, true, "", Caller::Unix).await?;
    assert!(engine.list(None).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn results_from_an_offset_follow_a_running_unit_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let script = "'for i in 1 2 3 4 5 6 7 8; do echo line$i; sleep 0.15; done'";
    let id = submit(&engine, "sh", Some(script), b"").await?;
    // Start reading while the unit is still writing.
    wait_state(&engine, &id, |s| s.state == State::RUNNING).await?;
    let tail = results(&engine, &id, 6).await?;
    let full: String = (1..=8).map(|i| format!("line{i}\n")).collect();
    assert_eq!(String::from_utf8(tail)?, full[6..]);
    assert_eq!(results(&engine, &id, 0).await?, full.as_bytes());
    assert_eq!(results(&engine, &id, 10_000).await?, b"");
    assert_eq!(results(&engine, &id, -5).await?, full.as_bytes());
    Ok(())
}

#[tokio::test]
async fn large_output_is_complete() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let id = submit(
        &engine,
        "sh",
        Some("'head -c 3000000 /dev/zero | tr \"\\\\0\" x; echo end'"),
        b"",
    )
    .await?;
    let out = results(&engine, &id, 0).await?;
    assert_eq!(out.len(), 3_000_004);
    assert!(out.ends_with(b"xend\n"));
    let status = wait_final(&engine, &id).await?;
    assert_eq!(status.stdout_size, 3_000_004);
    Ok(())
}

#[tokio::test]
async fn a_killed_runner_fails_its_unit_instead_of_leaving_it_running() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let id = submit(&engine, "sleep", None, b"").await?;
    let running = wait_state(&engine, &id, |s| s.state == State::RUNNING).await?;
    let runner = runner_pid(&running).context("runner PID")?;
    let child: i32 = running.detail.trim_start_matches("Running: PID ").parse()?;
    kill(runner, "KILL").await?;
    let status = wait_final(&engine, &id).await?;
    kill(-child, "KILL").await.ok();
    assert_eq!(status.state, State::FAILED);
    assert_eq!(
        status.detail,
        "command runner exited (signal: killed) without reporting a result"
    );
    Ok(())
}

async fn kill(pid: i32, signal: &str) -> Result<()> {
    let status = tokio::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(pid.to_string())
        .status()
        .await?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

fn write_unit(data_dir: &Path, id: &str, status: &str) -> Result<PathBuf> {
    let dir = data_dir.join(id);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("status"), status)?;
    Ok(dir)
}

#[tokio::test]
async fn recovery_after_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("node-a");
    let first = engine_at(dir.path(), standard_types())?;
    let done = submit(&first, "cat", None, b"kept\n").await?;
    wait_final(&first, &done).await?;
    let script = "'sleep 1.5; echo survived'";
    let running = submit(&first, "sh", Some(script), b"").await?;
    wait_state(&first, &running, |s| s.state == State::RUNNING).await?;
    // The daemon stops; the runner does not.
    first.shutdown(Duration::from_secs(5)).await;
    drop(first);

    write_unit(
        &data_dir,
        "Pending1",
        "{\"State\":0,\"Detail\":\"Waiting for Input Data\",\"StdoutSize\":0,\"WorkType\":\"cat\",\"ExtraData\":{\"Pid\":0,\"Params\":\"\"}}\n",
    )?;
    write_unit(&data_dir, "Corrupt1", "{\"State\":1,\"Det")?;
    write_unit(
        &data_dir,
        "Foreign1",
        "{\"State\":2,\"Detail\":\"Finished\",\"StdoutSize\":0,\"WorkType\":\"kube\",\"ExtraData\":{\"KubePod\":\"p\"}}\n",
    )?;
    write_unit(
        &data_dir,
        "Orphan01",
        "{\"State\":1,\"Detail\":\"Running: PID 1\",\"StdoutSize\":0,\"WorkType\":\"sleep\",\"ExtraData\":{\"Pid\":2147483000,\"Params\":\"30\"}}\n",
    )?;
    std::fs::create_dir_all(data_dir.join("NoStatus"))?;
    std::fs::create_dir_all(data_dir.join("bad.name"))?;
    std::fs::write(data_dir.join("stray-file"), "x")?;

    let second = engine_at(dir.path(), standard_types())?;
    let report = second.recover().await;
    assert_eq!(report.units, 6, "{report:?}");
    assert_eq!(report.skipped, vec!["bad.name".to_owned()]);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, "Corrupt1");

    let units = second.list(None).await?;
    assert_eq!(units.len(), 6, "{:?}", units.keys());
    assert_eq!(units[&done].state, State::SUCCEEDED);
    assert_eq!(results(&second, &done, 0).await?, b"kept\n");
    let pending = &units["Pending1"];
    assert_eq!(
        (pending.state, pending.detail.as_str()),
        (State::FAILED, "Pending at restart")
    );
    let corrupt = &units["Corrupt1"];
    assert_eq!(corrupt.state, State::FAILED);
    assert!(
        corrupt.detail.starts_with("Failed to restart: "),
        "{corrupt:?}"
    );
    assert!(data_dir.join("Corrupt1/status.corrupt").exists());
    let foreign = &units["Foreign1"];
    assert_eq!(foreign.extra_data, ExtraData::UnknownWorkType);
    // The runner kept going while no engine watched; its unit completes.
    let survived = wait_final(&second, &running).await?;
    assert_eq!(
        (survived.state, survived.detail.as_str()),
        (State::SUCCEEDED, "exit status 0")
    );
    assert_eq!(results(&second, &running, 0).await?, b"survived\n");
    // A unit whose runner is gone (machine reboot) fails instead of staying Running.
    let orphan = wait_final(&second, "Orphan01").await?;
    assert_eq!(orphan.state, State::FAILED);
    assert_eq!(
        orphan.detail,
        "command runner is no longer running without reporting a result"
    );
    // Placeholders and failed units can be released.
    second.release("Foreign1", false, "", Caller::Unix).await?;
    second.release("Corrupt1", false, "", Caller::Unix).await?;
    assert!(!data_dir.join("Corrupt1").exists());
    // A unit created by someone else is found by ID, as Go does.
    write_unit(
        &data_dir,
        "Later001",
        "{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":0,\"WorkType\":\"cat\",\"ExtraData\":null}\n",
    )?;
    assert_eq!(second.status("Later001").await?.state, State::SUCCEEDED);
    Ok(())
}

#[tokio::test]
async fn cancel_of_a_running_unit_after_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let first = engine_at(dir.path(), standard_types())?;
    let id = submit(&first, "sleep", None, b"").await?;
    let running = wait_state(&first, &id, |s| s.state == State::RUNNING).await?;
    let runner = runner_pid(&running).context("runner PID")?;
    first.shutdown(Duration::from_secs(5)).await;
    drop(first);
    let second = engine_at(dir.path(), standard_types())?;
    second.recover().await;
    assert_eq!(second.status(&id).await?.state, State::RUNNING);
    let started = tokio::time::Instant::now();
    second.cancel(&id, "", Caller::Unix).await?;
    assert!(started.elapsed() < Duration::from_secs(12));
    let status = second.status(&id).await?;
    assert_eq!(
        (status.state, status.detail.as_str()),
        (State::CANCELED, "Canceled")
    );
    assert!(
        !Path::new(&format!("/proc/{runner}/cmdline")).exists() || {
            let cmdline = std::fs::read(format!("/proc/{runner}/cmdline")).unwrap_or_default();
            cmdline.is_empty()
        }
    );
    Ok(())
}

fn err<T>(result: Result<T, receptor_server::work::WorkError>) -> Option<String> {
    result.err().map(|e| e.to_string())
}

#[tokio::test]
async fn submission_errors_match_go() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut types = standard_types();
    types.push(WorkCommandConfig {
        allow_runtime_params: false,
        ..command("strict", "cat", "")
    });
    let engine = engine_at(dir.path(), types)?;
    assert_eq!(
        err(engine
            .submit(request("strict", Some("-x")), Caller::Unix)
            .await)
        .as_deref(),
        Some("extra params provided but not allowed")
    );
    assert_eq!(
        err(engine.submit(request("nope", None), Caller::Unix).await).as_deref(),
        Some("unknown work type nope")
    );
    let mut ttl = request("cat", None);
    ttl.ttl = "10s".into();
    assert_eq!(
        err(engine.submit(ttl, Caller::Unix).await).as_deref(),
        Some("ttl option is intended for remote work only")
    );
    let mut remote = request("cat", None);
    remote.node = "node-b".into();
    remote.params.insert("secret_x".into(), "s".into());
    assert_eq!(
        err(engine.submit(remote, Caller::Unix).await).as_deref(),
        Some("cannot send secrets over a non-TLS connection")
    );
    let mut local_by_id = request("cat", None);
    local_by_id.node = "node-a".into();
    let mut s = engine.submit(local_by_id, Caller::Unix).await?;
    let by_id = s.unit_id().to_owned();
    s.receive(&mut &b""[..]).await?;
    s.start().await?;
    wait_final(&engine, &by_id).await?;
    let mut signed = request("cat", None);
    signed.signature = "abc".into();
    assert_eq!(
        err(engine.submit(signed, Caller::Network).await).as_deref(),
        Some("work type did not expect a signature")
    );
    // Refused submissions leave nothing behind (Go leaves empty directories).
    let dirs = std::fs::read_dir(dir.path().join("node-a"))?.count();
    assert_eq!(dirs, 1);
    for bad in ["../x", "/etc", "..", "a/b", ""] {
        let e = err(engine.status(bad).await).unwrap_or_default();
        assert!(
            e.starts_with(&format!("unknown work unit {bad}")),
            "{bad:?}: {e}"
        );
        assert!(e.contains("not a valid unit ID"), "{e}");
        assert!(engine.release(bad, true, "", Caller::Unix).await.is_err());
    }
    assert_eq!(
        err(engine.results("NoSuchU1", 0, "", Caller::Unix).await).as_deref(),
        Some("unknown work unit NoSuchU1")
    );
    Ok(())
}

#[tokio::test]
async fn signatures_are_required_on_network_connections_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("pub.pem");
    std::fs::write(
        &key,
        include_str!("../src/work/testdata/signing-public.pem"),
    )?;
    let engine = WorkEngine::new(EngineConfig {
        node_id: "node-a".into(),
        data_dir: dir.path().join("node-a"),
        commands: vec![WorkCommandConfig {
            verify_signature: true,
            ..command("secure", "cat", "")
        }],
        signer: None,
        verification_key: Some(key),
        runner_exe: PathBuf::from(env!("CARGO_BIN_EXE_receptor")),
        log_level: LogLevel::Info,
        dialer: None,
        remote_unreachable_timeout: std::time::Duration::from_secs(5),
        work_retention: None,
        default_remote_ttl: None,
        metrics: Default::default(),
    })?;
    assert_eq!(engine.work_commands().len(), 1);
    assert!(engine.work_commands()[0].secure);
    let err = engine
        .submit(request("secure", None), Caller::Network)
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("could not verify signature: signature is empty")
    );
    let mut bad = request("secure", None);
    bad.signature = "x.y.z".into();
    assert!(engine.submit(bad, Caller::Network).await.is_err());
    // Unix sockets are trusted.
    let id = submit(&engine, "secure", None, b"ok").await?;
    wait_final(&engine, &id).await?;
    assert!(engine.results(&id, 0, "", Caller::Network).await.is_err());
    assert!(
        engine
            .release(&id, false, "", Caller::Network)
            .await
            .is_err()
    );
    engine.release(&id, false, "", Caller::Unix).await?;
    Ok(())
}

#[tokio::test]
async fn abandoned_and_cancelled_submissions_do_not_linger() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let submission = engine.submit(request("cat", None), Caller::Unix).await?;
    let abandoned = submission.unit_id().to_owned();
    assert_eq!(
        engine.status(&abandoned).await?.detail,
        "Waiting for Input Data"
    );
    drop(submission);
    let status = wait_final(&engine, &abandoned).await?;
    assert_eq!(status.state, State::FAILED);
    assert!(status.detail.starts_with("Error reading input data: "));

    // A payload that never ends: cancel aborts the upload.
    let mut submission = engine.submit(request("cat", None), Caller::Unix).await?;
    let id = submission.unit_id().to_owned();
    let (mut client, mut server) = tokio::io::duplex(64);
    use tokio::io::AsyncWriteExt;
    client.write_all(b"partial").await?;
    let upload = tokio::spawn(async move {
        submission
            .receive(&mut server)
            .await
            .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    engine.cancel(&id, "", Caller::Unix).await?;
    let result = tokio::time::timeout(WAIT, upload).await??;
    assert!(result.is_err_and(|e| e.contains("cancelled before it started")));
    assert_eq!(engine.status(&id).await?.state, State::CANCELED);
    drop(client);
    Ok(())
}

#[tokio::test]
async fn listing_ten_thousand_units_is_fast() -> Result<()> {
    // 20,000 files: on tmpfs where there is one, so the disk does not dominate the test.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let data_dir = dir.path().join("node-a");
    for i in 0..10_000 {
        write_unit(
            &data_dir,
            &format!("u{i:07}"),
            "{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":3,\"WorkType\":\"cat\",\"ExtraData\":null}\n",
        )?;
    }
    let engine = engine_at(dir.path(), standard_types())?;
    let started = tokio::time::Instant::now();
    let report = engine.recover().await;
    let recovery = started.elapsed();
    assert_eq!(report.units, 10_000);
    assert!(
        recovery < Duration::from_secs(10),
        "recovery took {recovery:?}"
    );
    let started = tokio::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(engine.list(None).await?.len(), 10_000);
    }
    let per_list = started.elapsed() / 5;
    assert!(
        per_list < Duration::from_millis(500),
        "work list took {per_list:?}"
    );
    Ok(())
}

#[tokio::test]
async fn releasing_a_unit_ends_its_results_stream() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let id = submit(&engine, "sh", Some("'echo first; sleep 30'"), b"").await?;
    wait_state(&engine, &id, |s| s.stdout_size > 0).await?;
    let mut stream = engine.results(&id, 0, "", Caller::Unix).await?;
    assert_eq!(stream.next_chunk().await?.as_deref(), Some(&b"first\n"[..]));
    let reader = tokio::spawn(async move { stream.next_chunk().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    engine.release(&id, true, "", Caller::Unix).await?;
    let rest = tokio::time::timeout(Duration::from_secs(5), reader).await???;
    assert_eq!(rest, None);
    Ok(())
}

#[tokio::test]
async fn duplicate_or_reserved_work_types_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for types in [
        vec![command("cat", "cat", ""), command("cat", "tac", "")],
        vec![command("remote", "cat", "")],
    ] {
        let name = types
            .last()
            .map(|t| t.work_type.clone())
            .unwrap_or_default();
        let error = engine_at(dir.path(), types).err().map(|e| e.to_string());
        assert_eq!(error, Some(format!("work type {name} already registered")));
    }
    Ok(())
}

#[tokio::test]
async fn sweep_releases_only_units_finished_longer_than_the_retention() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let old = submit(&engine, "cat", None, b"old").await?;
    wait_final(&engine, &old).await?;
    let running = submit(&engine, "sleep", None, b"").await?;
    wait_state(&engine, &running, |s| s.state == State::RUNNING).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fresh = submit(&engine, "cat", None, b"fresh").await?;
    wait_final(&engine, &fresh).await?;
    // Nothing has finished an hour ago; only `old` finished more than a second ago.
    assert_eq!(engine.sweep_expired(Duration::from_secs(3600)).await, 0);
    assert_eq!(engine.sweep_expired(Duration::from_secs(1)).await, 1);
    assert!(engine.status(&old).await.is_err());
    assert!(!dir.path().join("node-a").join(&old).exists());
    assert_eq!(engine.status(&fresh).await?.state, State::SUCCEEDED);
    assert_eq!(engine.status(&running).await?.state, State::RUNNING);
    engine.release(&running, true, "", Caller::Unix).await?;
    Ok(())
}

#[tokio::test]
async fn watch_reports_every_transition_of_a_unit_in_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = engine_at(dir.path(), standard_types())?;
    let mut events = engine.watch();
    let id = submit(&engine, "cat", None, b"hello\n").await?;
    wait_final(&engine, &id).await?;
    engine.release(&id, false, "", Caller::Unix).await?;

    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .context("no release event")??;
        if event.unit_id != id {
            continue;
        }
        seen.push((event.status.state, event.released));
        if event.released {
            break;
        }
    }
    // Pending (waiting for input) comes first, Succeeded before the release, nothing after.
    ensure!(seen.first() == Some(&(State::PENDING, false)), "{seen:?}");
    ensure!(
        seen.iter().any(|&(s, r)| s == State::SUCCEEDED && !r),
        "no Succeeded event: {seen:?}"
    );
    ensure!(seen.last().map(|e| e.1) == Some(true), "{seen:?}");
    let states: Vec<i64> = seen.iter().map(|(s, _)| s.0).collect();
    ensure!(
        states
            .windows(2)
            .all(|w| w[0] <= w[1] || w[1] == State::PENDING.0),
        "states went backwards: {seen:?}"
    );
    Ok(())
}

/// One sample of `registry`, by name and label values (0 when the series does not exist).
fn sample(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    registry
        .snapshot()
        .into_iter()
        .filter(|family| family.name == name)
        .flat_map(|family| family.series)
        .find(|series| series.labels == wanted)
        .map_or(0.0, |series| match series.value {
            Value::Counter(v) => v as f64,
            Value::Gauge(v) => v,
            Value::Histogram(h) => h.count as f64,
        })
}

fn units_by_state(registry: &Registry) -> [f64; 5] {
    ["pending", "running", "succeeded", "failed", "canceled"]
        .map(|state| sample(registry, "receptor_work_units", &[("state", state)]))
}

#[tokio::test]
async fn unit_metrics_follow_finish_expiry_release_drop_and_recovery() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let first_registry = Registry::new();
    let first = WorkEngine::new(EngineConfig {
        metrics: first_registry.clone(),
        ..config_at(dir.path(), standard_types())
    })?;
    assert_eq!(units_by_state(&first_registry), [0.0; 5]);

    let expired = submit(&first, "cat", None, b"x").await?;
    wait_final(&first, &expired).await?;
    assert_eq!(units_by_state(&first_registry), [0.0, 0.0, 1.0, 0.0, 0.0]);
    let cat = [("work_type", "cat")];
    let cat_ok = [("work_type", "cat"), ("state", "succeeded")];
    assert_eq!(
        sample(&first_registry, "receptor_work_units_submitted_total", &cat),
        1.0
    );
    assert_eq!(
        sample(
            &first_registry,
            "receptor_work_units_finished_total",
            &cat_ok
        ),
        1.0
    );
    assert_eq!(
        sample(&first_registry, "receptor_work_unit_duration_seconds", &cat),
        1.0
    );

    let running = submit(&first, "sleep", None, b"").await?;
    wait_state(&first, &running, |s| s.state == State::RUNNING).await?;
    // Retention expiry releases the finished unit only.
    assert_eq!(first.sweep_expired(Duration::ZERO).await, 1);
    assert_eq!(units_by_state(&first_registry), [0.0, 1.0, 0.0, 0.0, 0.0]);
    let kept = submit(&first, "cat", None, b"kept").await?;
    wait_final(&first, &kept).await?;
    assert_eq!(units_by_state(&first_registry), [0.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(
        sample(
            &first_registry,
            "receptor_work_units_finished_total",
            &cat_ok
        ),
        2.0
    );

    // The engine goes away (daemon stop): its units are no longer counted.
    first.shutdown(WAIT).await;
    drop(first);
    assert_eq!(units_by_state(&first_registry), [0.0; 5]);

    // A restart recovers both units; nothing finished in this process yet.
    let second_registry = Registry::new();
    let second = WorkEngine::new(EngineConfig {
        metrics: second_registry.clone(),
        ..config_at(dir.path(), standard_types())
    })?;
    second.recover().await;
    assert_eq!(units_by_state(&second_registry), [0.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(
        sample(
            &second_registry,
            "receptor_work_units_finished_total",
            &cat_ok
        ),
        0.0
    );

    // Cancelling counts a canceled unit (not the `Failed` its killed runner records first);
    // releasing removes it from the gauge.
    second.cancel(&running, "", Caller::Unix).await?;
    let canceled = wait_final(&second, &running).await?;
    assert_eq!(canceled.state, State::CANCELED, "{canceled:?}");
    let sleep_canceled = [("work_type", "sleep"), ("state", "canceled")];
    assert_eq!(
        sample(
            &second_registry,
            "receptor_work_units_finished_total",
            &sleep_canceled
        ),
        1.0
    );
    let sleep_failed = [("work_type", "sleep"), ("state", "failed")];
    assert_eq!(
        sample(
            &second_registry,
            "receptor_work_units_finished_total",
            &sleep_failed
        ),
        0.0
    );
    // Recovered units have no submission time here: no duration is recorded for them.
    assert_eq!(
        sample(
            &second_registry,
            "receptor_work_unit_duration_seconds",
            &[("work_type", "sleep")]
        ),
        0.0
    );
    assert_eq!(units_by_state(&second_registry), [0.0, 0.0, 1.0, 0.0, 1.0]);
    second.release(&running, false, "", Caller::Unix).await?;
    second.release(&kept, false, "", Caller::Unix).await?;
    assert_eq!(units_by_state(&second_registry), [0.0; 5]);
    Ok(())
}
