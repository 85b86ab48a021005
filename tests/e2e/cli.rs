//! The `receptor` command line as a user meets it: help, version, and configuration errors
//! that list every problem at once.

use std::process::Output;

use anyhow::Result;

use crate::harness::receptor_bin;

async fn run(args: &[&str]) -> Result<Output> {
    Ok(tokio::process::Command::new(receptor_bin()?)
        .args(args)
        .output()
        .await?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn help_and_version_exit_zero() -> Result<()> {
    for args in [&["--help"][..], &["-h"], &[]] {
        let out = run(args).await?;
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = stdout(&out);
        for entity in [
            "--node",
            "--tcp-listener",
            "--control-service",
            "--work-command",
            "--cert-init",
        ] {
            assert!(
                text.contains(entity),
                "help for {args:?} lacks {entity}:\n{text}"
            );
        }
    }
    let out = run(&["--version"]).await?;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), env!("CARGO_PKG_VERSION"));
    Ok(())
}

#[tokio::test]
async fn every_configuration_problem_is_reported_at_once() -> Result<()> {
    let out = run(&[
        "--node",
        "id=a",
        "--tcp-listener",
        "port=0",
        "cost=0",
        "--foo",
    ])
    .await?;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("Error: connection cost must be positive"),
        "{text}"
    );
    assert!(text.contains("unknown config type foo"), "{text}");

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "- node:\n    id: a\n- tcp-listener:\n    port: 99999\n    prot: 3\n- bogus:\n    x: 1\n",
    )?;
    let out = run(&["--config", &file.to_string_lossy()]).await?;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("unknown field name prot") && text.contains("bad.yaml:5"),
        "{text}"
    );
    assert!(
        text.contains("unknown config type bogus") && text.contains("bad.yaml:6"),
        "{text}"
    );
    assert!(
        text.contains("out of range") && text.contains("bad.yaml:4"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn entities_not_built_yet_are_refused_not_ignored() -> Result<()> {
    let out = run(&[
        "--node",
        "id=a",
        "--ip-router",
        "networkname=x",
        "localnet=10.0.0.0/30",
    ])
    .await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("not supported yet: ip-router"),
        "{}",
        stdout(&out)
    );
    Ok(())
}

#[tokio::test]
async fn a_node_without_backends_has_nothing_to_do() -> Result<()> {
    let out = run(&["--node", "id=a"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("Run receptor --help for command line instructions."));
    Ok(())
}

/// `--config-v2` with no `--config` reads `$HOME/receptor.yaml` in Go's version 2 layout
/// (the mapping the upstream docs show), and the node runs from it: a second node written
/// in the list layout peers with it and receptorctl sees both.
#[tokio::test]
async fn config_v2_runs_a_node_from_home_receptor_yaml() -> anyhow::Result<()> {
    use crate::harness::{Daemon, WAIT, receptorctl, status_json, wait_for};
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(
        d.join("receptor.yaml"),
        format!(
            "---\nversion: 2\nnode:\n  id: v2node\n  datadir: {d}/v2-data\n\
             tcp-listeners:\n  - port: 0\n    bindaddr: 127.0.0.1\n\
             control-services:\n  - service: control\n    filename: {d}/v2.sock\n",
            d = d.display()
        ),
    )?;
    let v2 = Daemon::start_env(
        "v2node",
        &["--config-v2"],
        &[("HOME", d.as_os_str().to_owned())],
    )
    .await?;
    let addr = v2.tcp_listener_addr().await?;
    let v1 = Daemon::start_yaml(
        "v1node",
        d,
        &format!(
            "- node:\n    id: v1node\n    datadir: {d}/v1-data\n\
             - tcp-peer:\n    address: {addr}\n\
             - control-service:\n    service: control\n    filename: {d}/v1.sock\n",
            d = d.display()
        ),
    )
    .await?;
    let socket = d.join("v2.sock");
    wait_for("v2node to see v1node", WAIT, || {
        let socket = socket.clone();
        async move {
            let status = status_json(&socket).await.ok()?;
            status["KnownConnectionCosts"]
                .get("v1node")
                .is_some()
                .then_some(())
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", v2.log(), v1.log()))?;
    let out = receptorctl(&d.join("v1.sock"), &["ping", "v2node", "--count", "1"]).await?;
    anyhow::ensure!(out.code == Some(0), "{out:?}");
    Ok(())
}
