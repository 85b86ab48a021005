//! The classic control service over TCP and TLS (`tcplisten`, `tcptls`), driven by the PyPI
//! receptorctl, including `work submit` whose end of payload is a bare TCP half-close under TLS.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::harness::{Daemon, receptor_bin, receptorctl_bin};

async fn ctl(
    socket: &str,
    extra: &[&str],
    args: &[&str],
    stdin: &[u8],
) -> Result<(Option<i32>, String, String)> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(receptorctl_bin()?)
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).await?;
    }
    let out = tokio::time::timeout(crate::harness::WAIT, child.wait_with_output())
        .await
        .context("receptorctl hung")??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn cert_tool(dir: &Path, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new(receptor_bin()?)
        .current_dir(dir)
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

#[tokio::test]
async fn receptorctl_over_tcp_and_tls() -> Result<()> {
    receptorctl_bin()?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    cert_tool(
        d,
        &[
            "--cert-init",
            "commonname=Test CA",
            "bits=2048",
            "outcert=ca.crt",
            "outkey=ca.key",
        ],
    )
    .await?;
    cert_tool(
        d,
        &[
            "--cert-makereq",
            "bits=2048",
            "commonname=ctl",
            "nodeid=ctl",
            "ipaddress=127.0.0.1",
            "outreq=ctl.csr",
            "outkey=ctl.key",
        ],
    )
    .await?;
    cert_tool(
        d,
        &[
            "--cert-signreq",
            "req=ctl.csr",
            "cacert=ca.crt",
            "cakey=ca.key",
            "outcert=ctl.crt",
            "verify=yes",
        ],
    )
    .await?;
    let yaml = format!(
        "- node:\n    id: ctl\n    datadir: {d}/data\n- local-only\n- tls-server:\n    name: srv\n    cert: {d}/ctl.crt\n    key: {d}/ctl.key\n\
         - control-service:\n    service: control\n    tcplisten: 127.0.0.1:0\n- control-service:\n    service: ctltls\n    tcplisten: 127.0.0.1:0\n    tcptls: srv\n\
         - work-command:\n    worktype: cat\n    command: cat\n",
        d = d.display()
    );
    let daemon = Daemon::start_yaml("ctl", d, &yaml).await?;
    let plain = daemon
        .wait_log(r"(?m)control tcp listener bound addr=(\S+)$")
        .await?;
    let secure = daemon
        .wait_log(r"control tcp listener bound addr=(\S+) tls=\S*srv")
        .await?;

    let (code, out, err) = ctl(&format!("tcp:{plain}"), &[], &["status"], b"").await?;
    assert_eq!(code, Some(0), "{out}{err}\n{}", daemon.log());
    assert!(out.contains("Node ID: ctl"), "{out}");

    let ca = d.join("ca.crt");
    let tls_args = ["--rootcas", ca.to_str().context("utf-8 path")?];
    let socket = format!("tls:{secure}");
    let (code, out, err) = ctl(&socket, &tls_args, &["status"], b"").await?;
    assert_eq!(code, Some(0), "{out}{err}\n{}", daemon.log());
    assert!(out.contains("Node ID: ctl"), "{out}");

    // The payload ends with a raw TCP half-close, no close_notify: it must read as EOF.
    let (code, out, err) = ctl(
        &socket,
        &tls_args,
        &["work", "submit", "cat", "-p", "-", "-f"],
        b"over tls\n",
    )
    .await?;
    assert_eq!(code, Some(0), "{out}{err}\n{}", daemon.log());
    assert!(out.contains("over tls"), "{out}{err}");

    // A client that does not trust our CA is refused, and the listener keeps serving.
    let (code, _, _) = ctl(&socket, &[], &["status"], b"").await?;
    assert_ne!(code, Some(0));
    let (code, out, err) = ctl(&socket, &tls_args, &["status"], b"").await?;
    assert_eq!(code, Some(0), "{out}{err}");
    Ok(())
}
