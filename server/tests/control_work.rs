//! `work` over a control session that is not a Unix socket (TCP, TLS and mesh sessions go
//! through `serve_session`): signed submissions, results and releases, with the JWTs our own
//! signer makes, as a Go node would send them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use receptor_mesh::{Node, NodeConfig};
use receptor_server::config::{LogLevel, WorkCommandConfig};
use receptor_server::control::{serve_session, serve_session_as};
use receptor_server::ops::Ops;
use receptor_server::work::{Caller, EngineConfig, Signer, WorkEngine};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    _dir: tempfile::TempDir,
    ops: Ops,
    signer: Signer,
}

fn fixture() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let public = dir.path().join("pub.pem");
    std::fs::write(
        &public,
        include_str!("../src/work/testdata/signing-public.pem"),
    )?;
    let private = dir.path().join("key.pem");
    std::fs::write(
        &private,
        include_str!("../src/work/testdata/signing-pkcs8.pem"),
    )?;
    let signer = Signer::new(&private, Duration::from_secs(300));
    let engine = WorkEngine::new(EngineConfig {
        node_id: "node-a".into(),
        data_dir: dir.path().join("node-a"),
        commands: vec![
            WorkCommandConfig {
                work_type: "signed-echo".into(),
                command: "cat".into(),
                params: String::new(),
                allow_runtime_params: false,
                verify_signature: true,
            },
            WorkCommandConfig {
                work_type: "unsigned-echo".into(),
                command: "cat".into(),
                params: String::new(),
                allow_runtime_params: false,
                verify_signature: false,
            },
        ],
        signer: Some(signer.clone()),
        verification_key: Some(public),
        runner_exe: PathBuf::from(env!("CARGO_BIN_EXE_receptor")),
        log_level: LogLevel::Info,
        dialer: None,
        remote_unreachable_timeout: std::time::Duration::from_secs(5),
        work_retention: None,
        default_remote_ttl: None,
        metrics: Default::default(),
    })?;
    let node = Node::spawn(NodeConfig::new("node-a"))?;
    let ops = Ops::new(node, "test").with_work(engine);
    Ok(Fixture {
        _dir: dir,
        ops,
        signer,
    })
}

/// Runs one session on an in-memory stream: sends `input`, half-closes, returns the replies.
async fn session(ops: &Ops, caller: Option<Caller>, input: &[u8]) -> Result<String> {
    let (mut client, server): (DuplexStream, DuplexStream) = tokio::io::duplex(1 << 16);
    let ops = ops.clone();
    let served = tokio::spawn(async move {
        match caller {
            Some(caller) => serve_session_as(server, &ops, caller).await,
            None => serve_session(server, &ops).await,
        }
    });
    client.write_all(input).await?;
    client.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut out))
        .await
        .context("session did not end")??;
    served.await??;
    Ok(String::from_utf8(out)?)
}

fn created_id(reply: &str) -> Result<String> {
    let re = regex::Regex::new(r"with ID ([a-zA-Z0-9]+)\.")?;
    Ok(re.captures(reply).context("no unit ID")?[1].to_owned())
}

#[tokio::test]
async fn signed_work_over_a_network_session() -> Result<()> {
    let f = fixture()?;
    let token = f.signer.sign("node-a", SystemTime::now())?;

    let refused = session(
        &f.ops,
        None,
        b"{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"node-a\",\"worktype\":\"signed-echo\"}\n",
    )
    .await?;
    assert_eq!(
        refused,
        "Receptor Control, node node-a\nERROR: could not verify signature: signature is empty\n"
    );
    let wrong_node = f.signer.sign("node-z", SystemTime::now())?;
    let refused = session(
        &f.ops,
        None,
        format!("{{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"node-a\",\"worktype\":\"signed-echo\",\"signature\":\"{wrong_node}\"}}\n").as_bytes(),
    )
    .await?;
    assert!(
        refused.ends_with("ERROR: token audience did not match node ID\n"),
        "{refused}"
    );

    let submitted = session(
        &f.ops,
        None,
        format!("{{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"node-a\",\"worktype\":\"signed-echo\",\"signature\":\"{token}\"}}\nsigned payload\n").as_bytes(),
    )
    .await?;
    let id = created_id(&submitted)?;
    assert_eq!(
        submitted,
        format!(
            "Receptor Control, node node-a\nWork unit created with ID {id}. Send stdin data and EOF.\n{{\"result\":\"Job Started\",\"unitid\":\"{id}\"}}\n"
        )
    );

    // Results need the signature too (not on a Unix socket).
    let refused = session(
        &f.ops,
        None,
        format!("{{\"command\":\"work\",\"subcommand\":\"results\",\"unitid\":\"{id}\",\"startpos\":0}}\n").as_bytes(),
    )
    .await?;
    assert!(
        refused.ends_with("ERROR: could not verify signature: signature is empty\n"),
        "{refused}"
    );
    let results = session(
        &f.ops,
        None,
        format!("{{\"command\":\"work\",\"subcommand\":\"results\",\"unitid\":\"{id}\",\"startpos\":0,\"signature\":\"{token}\"}}\n").as_bytes(),
    )
    .await?;
    assert_eq!(
        results,
        format!(
            "Receptor Control, node node-a\nStreaming results for work unit {id}\nsigned payload\n"
        )
    );
    let unix = session(
        &f.ops,
        Some(Caller::Unix),
        format!("work results {id}\n").as_bytes(),
    )
    .await?;
    assert!(unix.ends_with("signed payload\n"), "{unix}");

    // A signature for a type that takes none is refused everywhere.
    let unexpected = session(
        &f.ops,
        Some(Caller::Unix),
        format!("{{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"localhost\",\"worktype\":\"unsigned-echo\",\"signature\":\"{token}\"}}\n").as_bytes(),
    )
    .await?;
    assert!(
        unexpected.ends_with("ERROR: work type did not expect a signature\n"),
        "{unexpected}"
    );

    // Status needs no signature; release does.
    let status = session(&f.ops, None, format!("work status {id}\n").as_bytes()).await?;
    ensure!(status.contains("\"WorkType\":\"signed-echo\""), "{status}");
    let refused = session(&f.ops, None, format!("work release {id}\n").as_bytes()).await?;
    assert!(
        refused.ends_with("ERROR: could not verify signature: signature is empty\n"),
        "{refused}"
    );
    let released = session(
        &f.ops,
        None,
        format!("{{\"command\":\"work\",\"subcommand\":\"release\",\"unitid\":\"{id}\",\"signature\":\"{token}\"}}\n").as_bytes(),
    )
    .await?;
    assert!(
        released.ends_with(&format!("{{\"released\":\"{id}\"}}\n")),
        "{released}"
    );
    Ok(())
}

#[tokio::test]
async fn payload_bytes_after_the_submit_line_are_never_commands() -> Result<()> {
    let f = fixture()?;
    // The payload looks like commands and arrives in the same write as the submit line.
    let submitted = session(
        &f.ops,
        Some(Caller::Unix),
        b"{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"localhost\",\"worktype\":\"unsigned-echo\"}\nwork list\nstatus\n",
    )
    .await?;
    let id = created_id(&submitted)?;
    assert!(
        submitted.ends_with(&format!(
            "{{\"result\":\"Job Started\",\"unitid\":\"{id}\"}}\n"
        )),
        "{submitted}"
    );
    let results = session(
        &f.ops,
        Some(Caller::Unix),
        format!("work results {id}\n").as_bytes(),
    )
    .await?;
    assert_eq!(
        results,
        format!(
            "Receptor Control, node node-a\nStreaming results for work unit {id}\nwork list\nstatus\n"
        )
    );
    Ok(())
}
