//! Remote work between two in-process engines joined by an in-memory "mesh": node-a submits
//! to node-b, whose control sessions run on `serve_session` behind a dialer that records
//! every line node-a sends. Checks that a Rust remote pushes status (`work watch`, no
//! polling), that a remote answering like Go (`ERROR: bad command`) is polled instead, and
//! the node-level default ttl.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use receptor_mesh::{Node, NodeConfig};
use receptor_server::config::{LogLevel, WorkCommandConfig};
use receptor_server::control::serve_session;
use receptor_server::ops::Ops;
use receptor_server::work::{
    Caller, DialFailure, DialFuture, EngineConfig, MeshConn, MeshDialer, State, SubmitRequest,
    UnitStatus, WorkEngine,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(30);

/// Dials node-b's control service in memory; logs what the dialing node sends.
#[derive(Debug)]
struct FakeMesh {
    remote: Ops,
    /// Every line sent to node-b (payload lines included).
    sent: Arc<Mutex<Vec<String>>>,
    /// Answer `work watch` as a Go node does: the line is passed on as `work bogus`, which
    /// the real session answers with Go's `ERROR: bad command`.
    go_like: bool,
}

impl MeshDialer for FakeMesh {
    fn dial<'a>(&'a self, node: &'a str, service: &'a str, _tls: &'a str) -> DialFuture<'a> {
        Box::pin(async move {
            if node != "node-b" || service != "control" {
                return Err(DialFailure {
                    message: "no route to node".to_owned(),
                    tls: false,
                });
            }
            let (ours, proxy_in) = tokio::io::duplex(1 << 16);
            let (proxy_out, theirs) = tokio::io::duplex(1 << 16);
            let ops = self.remote.clone();
            tokio::spawn(async move {
                let _ = serve_session(theirs, &ops).await;
            });
            let (in_read, mut in_write) = tokio::io::split(proxy_in);
            let (mut out_read, mut out_write) = tokio::io::split(proxy_out);
            let sent = Arc::clone(&self.sent);
            let go_like = self.go_like;
            // Client to node-b, line by line (so each line is logged whole).
            tokio::spawn(async move {
                let mut lines = BufReader::new(in_read);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match lines.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if go_like && text.starts_with("work watch ") {
                        line.splice(5..10, *b"bogus");
                    }
                    sent.lock().unwrap_or_else(|e| e.into_inner()).push(text);
                    if out_write.write_all(&line).await.is_err() {
                        return;
                    }
                }
                let _ = out_write.shutdown().await;
            });
            // Node-b to client.
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
                let _ = in_write.shutdown().await;
            });
            Ok(Box::new(ours) as Box<dyn MeshConn>)
        })
    }

    fn has_tls_client(&self, _name: &str) -> bool {
        false
    }
}

fn sh() -> WorkCommandConfig {
    WorkCommandConfig {
        work_type: "sh".into(),
        command: "sh".into(),
        params: "-c".into(),
        allow_runtime_params: true,
        verify_signature: false,
    }
}

fn config(dir: &Path, id: &str) -> EngineConfig {
    EngineConfig {
        node_id: id.into(),
        data_dir: dir.join(id),
        commands: vec![sh()],
        signer: None,
        verification_key: None,
        runner_exe: PathBuf::from(env!("CARGO_BIN_EXE_receptor")),
        log_level: LogLevel::Info,
        dialer: None,
        remote_unreachable_timeout: Duration::from_secs(5),
        work_retention: None,
        default_remote_ttl: None,
        metrics: Default::default(),
    }
}

struct Pair {
    _dir: tempfile::TempDir,
    a: WorkEngine,
    b: WorkEngine,
    sent: Arc<Mutex<Vec<String>>>,
}

fn pair(go_like: bool, tweak: impl FnOnce(&mut EngineConfig)) -> Result<Pair> {
    let dir = tempfile::tempdir()?;
    let b = WorkEngine::new(config(dir.path(), "node-b"))?;
    let remote = Ops::new(Node::spawn(NodeConfig::new("node-b"))?, "test").with_work(b.clone());
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut a_config = config(dir.path(), "node-a");
    a_config.dialer = Some(Arc::new(FakeMesh {
        remote,
        sent: Arc::clone(&sent),
        go_like,
    }));
    tweak(&mut a_config);
    let a = WorkEngine::new(a_config)?;
    Ok(Pair {
        _dir: dir,
        a,
        b,
        sent,
    })
}

impl Pair {
    fn sent_starting(&self, prefix: &str) -> usize {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
}

async fn submit_remote(engine: &WorkEngine, script: &str, ttl: &str) -> Result<String> {
    let request = SubmitRequest {
        node: "node-b".into(),
        work_type: "sh".into(),
        params: BTreeMap::from([("params".to_owned(), script.to_owned())]),
        ttl: ttl.into(),
        ..SubmitRequest::default()
    };
    let mut submission = engine.submit(request, Caller::Unix).await?;
    let id = submission.unit_id().to_owned();
    submission.receive(&mut &b""[..]).await?;
    submission.start().await?;
    Ok(id)
}

/// Waits (on the unit's own change feed, no polling) until `done` holds.
async fn wait_for(
    engine: &WorkEngine,
    id: &str,
    done: impl Fn(&UnitStatus) -> bool,
) -> Result<UnitStatus> {
    let mut watch = engine.watch_unit(id).await?;
    tokio::time::timeout(WAIT, async {
        let mut last = None;
        while let Some(status) = watch.next().await {
            if done(&status) {
                return Ok(status);
            }
            last = Some(status);
        }
        bail!("unit {id} released while waiting (last {last:?})")
    })
    .await
    .with_context(|| format!("unit {id} stuck at {:?}", watch.current()))?
}

async fn results(engine: &WorkEngine, id: &str) -> Result<String> {
    let stream = engine.results(id, 0, "", Caller::Unix).await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.copy_to(&mut out))
        .await
        .context("results stream did not end")??;
    Ok(String::from_utf8(out)?)
}

const SCRIPT: &str = "'for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.3; done'";
const WANT: &str = "line-1\nline-2\nline-3\nline-4\nline-5\nline-6\n";

#[tokio::test]
async fn a_rust_remote_pushes_status_and_is_never_polled() -> Result<()> {
    let p = pair(false, |_| {})?;
    let id = submit_remote(&p.a, SCRIPT, "").await?;
    // The unit runs for about 2 s: Go's protocol would have polled twice by then.
    let done = wait_for(&p.a, &id, |s| s.state.is_final()).await?;
    ensure!(done.state == State::SUCCEEDED, "{done:?}");
    ensure!(results(&p.a, &id).await? == WANT);
    ensure!(p.sent_starting("work watch ") >= 1, "no watch sent");
    ensure!(
        p.sent_starting("work status ") == 0,
        "the remote was polled: {:?}",
        p.sent.lock().unwrap_or_else(|e| e.into_inner())
    );
    Ok(())
}

#[tokio::test]
async fn a_go_like_remote_without_watch_is_polled_instead() -> Result<()> {
    let p = pair(true, |_| {})?;
    let id = submit_remote(&p.a, SCRIPT, "").await?;
    let done = wait_for(&p.a, &id, |s| s.state.is_final()).await?;
    ensure!(done.state == State::SUCCEEDED, "{done:?}");
    ensure!(results(&p.a, &id).await? == WANT);
    ensure!(p.sent_starting("work watch ") >= 1, "watch never tried");
    ensure!(
        p.sent_starting("work status ") >= 1,
        "no fallback to polling"
    );
    Ok(())
}

#[tokio::test]
async fn a_remote_unit_released_behind_our_back_fails_the_pushed_unit() -> Result<()> {
    let p = pair(false, |_| {})?;
    let id = submit_remote(&p.a, "'sleep 30'", "").await?;
    let running = wait_for(&p.a, &id, |s| s.state == State::RUNNING).await?;
    let remote_id = remote_unit_id(&running)?;
    // Someone force-releases the unit on node-b: its last state (the runner killed) is
    // pushed, or, if the release wins the race, the watch ends with Go's "unknown work
    // unit". Either way node-a's unit fails at once instead of running for 30 s.
    p.b.release(&remote_id, true, "", Caller::Unix).await?;
    let failed = wait_for(&p.a, &id, |s| s.state.is_final()).await?;
    ensure!(failed.state == State::FAILED, "{failed:?}");
    ensure!(
        failed.detail == "Killed" || failed.detail == "Remote work unit is gone",
        "{failed:?}"
    );
    ensure!(p.sent_starting("work status ") == 0);
    Ok(())
}

fn remote_unit_id(status: &UnitStatus) -> Result<String> {
    let receptor_server::work::ExtraData::Json(raw) = &status.extra_data else {
        bail!("no extra data: {status:?}");
    };
    let value: serde_json::Value = serde_json::from_str(raw)?;
    Ok(value["RemoteUnitID"]
        .as_str()
        .context("no RemoteUnitID")?
        .to_owned())
}

fn expiration(status: &UnitStatus) -> Result<String> {
    let receptor_server::work::ExtraData::Json(raw) = &status.extra_data else {
        bail!("no extra data: {status:?}");
    };
    let value: serde_json::Value = serde_json::from_str(raw)?;
    Ok(value["Expiration"]
        .as_str()
        .context("no Expiration")?
        .to_owned())
}

#[tokio::test]
async fn the_node_default_ttl_applies_when_a_submission_gives_none() -> Result<()> {
    let p = pair(false, |c| {
        c.default_remote_ttl = Some(Duration::from_secs(3600))
    })?;
    // No ttl: the node's default sets an expiration about an hour from now.
    let id = submit_remote(&p.a, "'true'", "").await?;
    let status = p.a.status(&id).await?;
    let at = time::OffsetDateTime::parse(
        &expiration(&status)?,
        &time::format_description::well_known::Rfc3339,
    )?;
    let left = at - time::OffsetDateTime::now_utc();
    ensure!(
        left > time::Duration::minutes(59) && left <= time::Duration::minutes(60),
        "expiration {at} is {left} away"
    );
    // An explicit ttl wins over the default.
    let id = submit_remote(&p.a, "'true'", "2m").await?;
    let status = p.a.status(&id).await?;
    let at = time::OffsetDateTime::parse(
        &expiration(&status)?,
        &time::format_description::well_known::Rfc3339,
    )?;
    let left = at - time::OffsetDateTime::now_utc();
    ensure!(left <= time::Duration::minutes(2), "{left}");
    // Without a default, no ttl means no expiration (Go's zero time).
    let p = pair(false, |_| {})?;
    let id = submit_remote(&p.a, "'true'", "").await?;
    ensure!(expiration(&p.a.status(&id).await?)? == "0001-01-01T00:00:00Z");
    Ok(())
}

#[tokio::test]
async fn the_node_default_ttl_expires_a_unit_whose_node_never_answers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut a_config = config(dir.path(), "node-a");
    // A dialer that never reaches anything: the unit waits to start, then expires.
    let b = Ops::new(Node::spawn(NodeConfig::new("node-b"))?, "test");
    a_config.dialer = Some(Arc::new(FakeMesh {
        remote: b,
        sent: Arc::default(),
        go_like: false,
    }));
    a_config.default_remote_ttl = Some(Duration::from_millis(1500));
    let a = WorkEngine::new(a_config)?;
    let request = SubmitRequest {
        node: "node-x".into(),
        work_type: "sh".into(),
        ..SubmitRequest::default()
    };
    let mut submission = a.submit(request, Caller::Unix).await?;
    let id = submission.unit_id().to_owned();
    submission.receive(&mut &b""[..]).await?;
    submission.start().await?;
    let failed = wait_for(&a, &id, |s| s.state.is_final()).await?;
    ensure!(failed.state == State::FAILED, "{failed:?}");
    ensure!(
        failed.detail.starts_with("Work unit expired on "),
        "{failed:?}"
    );
    Ok(())
}

/// The executing side: `work watch` over a control session.
#[tokio::test]
async fn work_watch_sends_now_then_changes_then_unknown_at_release() -> Result<()> {
    let p = pair(false, |_| {})?;
    let remote = Ops::new(Node::spawn(NodeConfig::new("node-b"))?, "test").with_work(p.b.clone());
    let request = SubmitRequest {
        node: "localhost".into(),
        work_type: "sh".into(),
        params: BTreeMap::from([("params".to_owned(), "'sleep 30'".to_owned())]),
        ..SubmitRequest::default()
    };
    let mut submission = p.b.submit(request, Caller::Unix).await?;
    let id = submission.unit_id().to_owned();
    submission.receive(&mut &b""[..]).await?;
    submission.start().await?;
    wait_for(&p.b, &id, |s| s.state == State::RUNNING).await?;

    let (client, server) = tokio::io::duplex(1 << 16);
    let session = tokio::spawn(async move { serve_session(server, &remote).await });
    let (read, mut write) = tokio::io::split(client);
    let mut lines = BufReader::new(read).lines();
    let mut next = async || -> Result<Option<String>> {
        Ok(tokio::time::timeout(WAIT, lines.next_line())
            .await
            .context("no line")??)
    };
    ensure!(
        next()
            .await?
            .context("greeting")?
            .starts_with("Receptor Control")
    );
    // An unknown unit is an ordinary error; the session goes on.
    write.write_all(b"work watch NoSuchU1\n").await?;
    ensure!(next().await?.as_deref() == Some("ERROR: unknown work unit NoSuchU1"));
    write
        .write_all(format!("work watch {id}\n").as_bytes())
        .await?;
    let first: serde_json::Value = serde_json::from_str(&next().await?.context("status")?)?;
    ensure!(first["StateName"] == "Running", "{first}");
    ensure!(first["WorkType"] == "sh", "{first}");
    // A cancel is pushed as it happens.
    p.b.cancel(&id, "", Caller::Unix).await?;
    loop {
        let line = next().await?.context("watch ended early")?;
        let status: serde_json::Value = serde_json::from_str(&line)?;
        if status["StateName"] == "Canceled" {
            break;
        }
    }
    p.b.release(&id, false, "", Caller::Unix).await?;
    let mut last = String::new();
    while let Some(line) = next().await? {
        last = line;
    }
    ensure!(last == format!("ERROR: unknown work unit {id}"), "{last}");
    let _ = write.shutdown().await;
    session.await??;
    Ok(())
}
