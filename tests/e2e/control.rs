//! The classic control service over TCP and TLS (`tcplisten`, `tcptls`), driven by the PyPI
//! receptorctl, including `work submit` whose end of payload is a bare TCP half-close under TLS.

use std::path::Path;

use anyhow::{Context, Result};

use crate::harness::{Daemon, cert_tool, receptorctl_bin};

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

// === Go transcripts that need a mesh: status, ping, traceroute ===

const TRANSCRIPTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/vectors/go-control-transcripts.jsonl"
);

/// Masks what differs between runs (times, RTTs, version, host facts) so the rest compares
/// byte for byte.
fn normalise(text: &str) -> Result<String> {
    let rules = [
        (r#""Time":"[^"]*""#, r#""Time":"T""#),
        (r#""Time":\d+"#, r#""Time":0"#),
        (r#""TimeStr":"[^"]*""#, r#""TimeStr":"S""#),
        (r#""Version":"[^"]*""#, r#""Version":"V""#),
        (r#""SystemCPUCount":\d+"#, r#""SystemCPUCount":0"#),
        (r#""SystemMemoryMiB":\d+"#, r#""SystemMemoryMiB":0"#),
    ];
    let mut out = text.to_owned();
    for (pattern, replacement) in rules {
        out = regex::Regex::new(pattern)?
            .replace_all(&out, replacement)
            .into_owned();
    }
    Ok(out)
}

/// Sends `bytes` on a fresh control connection, half-closes, and reads to EOF.
async fn raw_session(socket: &Path, bytes: &[u8]) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream.write_all(bytes).await?;
    stream.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(crate::harness::WAIT, stream.read_to_end(&mut out))
        .await
        .context("session did not end")??;
    Ok(String::from_utf8(out)?)
}

#[tokio::test]
async fn go_mesh_transcripts_replay_byte_for_byte() -> Result<()> {
    let text =
        std::fs::read_to_string(TRANSCRIPTS).with_context(|| format!("reading {TRANSCRIPTS}"))?;
    let cases: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // The nodes of the capture: node-a dials node-b; both run cat, echo and sleep.
    let dir = tempfile::tempdir()?;
    let d = dir.path().display().to_string();
    let work = "- work-command: {worktype: cat, command: cat}\n- work-command: {worktype: echo, command: /bin/sh, params: \"-c 'echo hello-from-node-a; cat'\"}\n- work-command: {worktype: sleep, command: sleep, params: \"30\"}\n";
    let b = Daemon::start_yaml(
        "node-b",
        dir.path(),
        &format!("- node: {{id: node-b, datadir: {d}/b}}\n- tcp-listener: {{bindaddr: 127.0.0.1, port: 0}}\n- control-service: {{service: control, filename: {d}/b.sock}}\n{work}"),
    )
    .await?;
    let b_addr = b.tcp_listener_addr().await?;
    let a = Daemon::start_yaml(
        "node-a",
        dir.path(),
        &format!("- node: {{id: node-a, datadir: {d}/a}}\n- tcp-peer: {{address: \"{b_addr}\"}}\n- control-service: {{service: control, filename: {d}/a.sock}}\n{work}"),
    )
    .await?;
    let socket = dir.path().join("a.sock");
    // Wait until node-a sees node-b's advertisement, as in the capture.
    crate::harness::wait_for(
        "node-a to know node-b's control service",
        crate::harness::WAIT,
        || {
            let socket = socket.clone();
            async move {
                let out = raw_session(
                    &socket,
                    b"{\"command\":\"status\",\"requested_fields\":[\"Advertisements\"]}\n",
                )
                .await
                .ok()?;
                out.contains("\"NodeID\":\"node-b\",\"Service\":\"control\"")
                    .then_some(())
            }
        },
    )
    .await
    .with_context(|| format!("{}\n{}", a.log(), b.log()))?;

    let mut checked = 0;
    for name in [
        "status",
        "status --json",
        "ping",
        "ping unknown node",
        "traceroute",
        "plain-text commands",
        "unterminated line then EOF",
    ] {
        let case = cases
            .iter()
            .find(|c| c["case"] == name)
            .with_context(|| format!("transcript case {name:?} missing"))?;
        for conn in case["connections"].as_array().context("connections")? {
            let sent = conn["c2s"]["utf8"].as_str().context("c2s")?;
            let want = normalise(conn["s2c"]["utf8"].as_str().context("s2c")?)?;
            let got = normalise(&raw_session(&socket, sent.as_bytes()).await?)?;
            assert_eq!(got, want, "case {name:?}, sent {sent:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 7);
    Ok(())
}
