//! `receptorctl reload`: backends restart from the re-read file; anything else changed is
//! refused with Go's codes (3: restart needed, 4: unusable configuration).

use anyhow::{Context, Result};

use crate::harness::{Daemon, WAIT, receptorctl, receptorctl_bin, status_json, wait_for};

#[tokio::test]
async fn reload_restarts_backends_and_refuses_other_changes() -> Result<()> {
    receptorctl_bin()?;
    let dir = tempfile::tempdir()?;
    let d = dir.path().display().to_string();
    let b = Daemon::start(
        "b",
        &[
            "--node",
            "id=b",
            "--tcp-listener",
            "port=0",
            "bindaddr=127.0.0.1",
            "--control-service",
            &format!("filename={d}/b.sock"),
        ],
    )
    .await?;
    let b_addr = b.tcp_listener_addr().await?;

    let base = format!(
        "- node:\n    id: a\n    datadir: {d}/a\n- control-service:\n    filename: {d}/a.sock\n"
    );
    let file = dir.path().join("a.yaml");
    std::fs::write(&file, format!("{base}- local-only\n"))?;
    let a = Daemon::start("a", &["--config", &file.to_string_lossy()]).await?;
    let socket = dir.path().join("a.sock");
    a.wait_log("Initialization complete").await?;

    let ok = receptorctl(&socket, &["reload"]).await?;
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(ok.stdout.contains("Reload successful"), "{ok:?}");

    // A new peer in the file: reload connects it.
    std::fs::write(&file, format!("{base}- tcp-peer:\n    address: {b_addr}\n"))?;
    let ok = receptorctl(&socket, &["reload"]).await?;
    assert_eq!(ok.code, Some(0), "{ok:?}\n{}", a.log());
    wait_for("a to connect to b after reload", WAIT, || {
        let socket = socket.clone();
        async move { (status_json(&socket).await.ok()?["RoutingTable"]["b"] == "b").then_some(()) }
    })
    .await
    .with_context(|| a.log())?;

    // A non-reloadable change: code 3, nothing restarted.
    std::fs::write(
        &file,
        format!(
            "{base}- tcp-peer:\n    address: {b_addr}\n- work-command:\n    worktype: cat\n    command: cat\n"
        ),
    )?;
    let refused = receptorctl(&socket, &["reload"]).await?;
    assert_eq!(refused.code, Some(3), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("non-reloadable config action 'work-command' was modified or added"),
        "{refused:?}"
    );

    // An unusable file: code 4.
    std::fs::write(
        &file,
        format!("{base}- tcp-peer:\n    address: {b_addr}\n    cost: -1\n"),
    )?;
    let refused = receptorctl(&socket, &["reload"]).await?;
    assert_eq!(refused.code, Some(4), "{refused:?}");
    assert!(
        refused.stderr.contains("ERROR: ")
            && refused.stderr.contains("connection cost must be positive"),
        "{refused:?}"
    );
    // Still connected: a failed reload stops nothing.
    assert_eq!(status_json(&socket).await?["RoutingTable"]["b"], "b");

    // A node started from the command line alone cannot reload.
    let b_socket = dir.path().join("b.sock");
    let refused = receptorctl(&b_socket, &["reload"]).await?;
    assert_eq!(refused.code, Some(4), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("no configuration file was provided"),
        "{refused:?}"
    );
    Ok(())
}
