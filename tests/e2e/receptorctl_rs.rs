//! The Rust client library and the Rust `receptorctl` against real daemons: the library
//! over a pure gRPC socket, over the classic socket's `grpc` upgrade and over TLS; and the
//! Rust and Python receptorctl side by side on one scenario, with normalised outputs equal.
#![allow(clippy::unwrap_used)] // unwrap_err() on calls that must fail

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use receptor_client::{Client, Error, SubmitOptions, Target, TlsOptions, UnitState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::harness::{
    CtlOutput, Daemon, WAIT, cert_tool, receptorctl_bin, rust_receptorctl, status_json, wait_for,
};

async fn run_ctl(bin: &Path, socket: &str, args: &[&str]) -> Result<CtlOutput> {
    let output = tokio::time::timeout(
        WAIT,
        Command::new(bin)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{} {args:?} hung", bin.display()))??;
    Ok(CtlOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A CA and a certificate for 127.0.0.1 under `dir`: `ca.crt`, `srv.crt`, `srv.key`.
async fn make_certs(dir: &Path) -> Result<()> {
    cert_tool(
        dir,
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
        dir,
        &[
            "--cert-makereq",
            "bits=2048",
            "commonname=lib",
            "nodeid=lib",
            "ipaddress=127.0.0.1",
            "outreq=srv.csr",
            "outkey=srv.key",
        ],
    )
    .await?;
    cert_tool(
        dir,
        &[
            "--cert-signreq",
            "req=srv.csr",
            "cacert=ca.crt",
            "cakey=ca.key",
            "outcert=srv.crt",
            "verify=yes",
        ],
    )
    .await
}

async fn timed<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT, fut)
        .await
        .with_context(|| format!("{what} timed out"))
}

#[tokio::test]
async fn client_library_over_grpc_socket_upgrade_and_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    make_certs(d).await?;
    let yaml = format!(
        "- node:\n    id: lib\n    datadir: {d}/data\n- local-only\n\
         - tls-server:\n    name: srv\n    cert: {d}/srv.crt\n    key: {d}/srv.key\n\
         - control-service:\n    service: control\n    filename: {d}/lib.sock\n\
         - control-service:\n    service: ctltls\n    tcplisten: 127.0.0.1:0\n    tcptls: srv\n\
         - grpc-service:\n    filename: {d}/lib-grpc.sock\n\
         - work-command:\n    worktype: cat\n    command: cat\n\
         - work-command:\n    worktype: fail\n    command: sh\n    params: -c \"echo bad; exit 2\"\n",
        d = d.display()
    );
    let daemon = Daemon::start_yaml("lib", d, &yaml).await?;
    daemon.wait_log("grpc socket listening").await?;
    let tls_addr = daemon
        .wait_log(r"control tcp listener bound addr=(\S+) tls=\S*srv")
        .await?;

    // Pure gRPC socket.
    let client = timed(
        "connect",
        Client::connect(Target::grpc_unix(d.join("lib-grpc.sock"))),
    )
    .await??;
    let status = timed("status", client.status()).await??;
    assert_eq!(status.node_id, "lib");

    // Submit 3 MiB through an AsyncRead with progress, read it back as AsyncRead.
    let payload: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = std::sync::Arc::clone(&progress);
    let submitted = timed(
        "submit",
        client.submit(
            SubmitOptions::new("cat").payload_size(payload.len() as u64),
            std::io::Cursor::new(payload.clone()),
            Some(Box::new(move |n| {
                seen.store(n, std::sync::atomic::Ordering::Relaxed)
            })),
        ),
    )
    .await??;
    assert_eq!(
        progress.load(std::sync::atomic::Ordering::Relaxed),
        payload.len() as u64
    );
    let id = submitted.unit.id.clone();
    let mut results = timed("results", client.results(&id, 0, true)).await??;
    let mut out = Vec::new();
    timed("read results", results.read_to_end(&mut out)).await??;
    assert!(out == payload, "output differs from the payload");
    let end = results.end().context("no end message")?;
    assert_eq!(end.unit.state, Some(UnitState::Succeeded));
    assert_eq!(end.end_offset, payload.len() as u64);

    // Resume from an offset: exactly the tail.
    let (tail, end) = timed(
        "tail",
        client
            .results(&id, payload.len() as u64 - 10, false)
            .await?
            .read_all(),
    )
    .await??;
    assert_eq!(tail, payload[payload.len() - 10..]);
    assert_eq!(end.end_offset, payload.len() as u64);

    // Watch one unit to its release.
    let mut events = timed("watch", client.watch_work(Some(&id), true)).await??;
    let first = timed("first event", events.next())
        .await?
        .context("no event")??;
    assert_eq!(first.unit.id, id);
    timed("release", client.release(&id, false)).await??;
    timed("the release event", async {
        while let Some(event) = events.next().await {
            if event?.released {
                return Ok(());
            }
        }
        Err(Error::Protocol("the watch ended before the release".into()))
    })
    .await??;
    let err = timed("get", client.get(&id)).await?.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    // A failing unit ends Failed, with its output.
    let failed = timed(
        "submit fail",
        client.submit(SubmitOptions::new("fail"), tokio::io::empty(), None),
    )
    .await??;
    let (out, end) = timed(
        "fail results",
        client.results(&failed.unit.id, 0, true).await?.read_all(),
    )
    .await??;
    assert_eq!(out, b"bad\n");
    assert_eq!(end.unit.state, Some(UnitState::Failed));
    let err = timed(
        "unknown type",
        client.submit(SubmitOptions::new("nope"), tokio::io::empty(), None),
    )
    .await?
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    // A duplex stream to a mesh service: the node's own classic control service.
    let mut control = timed(
        "connect_service",
        client.connect_service("localhost", "control", None),
    )
    .await??;
    let mut greeting = vec![0u8; 64];
    let n = timed("greeting", control.read(&mut greeting)).await??;
    assert!(
        String::from_utf8_lossy(&greeting[..n]).starts_with("Receptor Control, node lib"),
        "{:?}",
        String::from_utf8_lossy(&greeting[..n])
    );
    control.write_all(b"work list\n").await?;
    let mut reply = vec![0u8; 4096];
    let n = timed("work list reply", control.read(&mut reply)).await??;
    assert!(String::from_utf8_lossy(&reply[..n]).contains(&failed.unit.id));
    drop(control);

    // The classic Unix socket, upgraded.
    let upgraded = timed(
        "upgrade",
        Client::connect(Target::parse(&d.join("lib.sock").to_string_lossy())?),
    )
    .await??;
    assert_eq!(upgraded.greeted_node(), Some("lib"));
    assert_eq!(timed("version", upgraded.version()).await??.node_id, "lib");

    // The classic TLS socket, upgraded; a client without our CA is refused clearly.
    let tls_target = Target::parse(&format!("tls://{tls_addr}"))?;
    let secure = timed(
        "tls connect",
        Client::connect(
            tls_target
                .clone()
                .with_tls(TlsOptions::new().root_cas(d.join("ca.crt"))),
        ),
    )
    .await??;
    assert_eq!(timed("tls list", secure.list()).await??.len(), 1);
    let err = timed("untrusted", Client::connect(tls_target))
        .await?
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");

    // A path that is not a socket, and a socket that is not receptor.
    let err = Client::connect(Target::control_unix(d.join("missing.sock")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchSocket(_)), "{err:?}");
    Ok(())
}

/// Replaces what legitimately differs between two runs: unit IDs (numbered in order of
/// appearance), durations, times, and the version warning.
fn normalise(text: &str, ids: &[String]) -> String {
    let mut text = text.to_owned();
    for (i, id) in ids.iter().enumerate() {
        text = text.replace(id.as_str(), &format!("<unit{i}>"));
    }
    let duration = regex::Regex::new(r"\b[0-9.]+(ns|µs|ms|s)\b").unwrap_or_else(|_| unreachable!());
    let date = regex::Regex::new(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
        .unwrap_or_else(|_| unreachable!());
    // The remote end's unit ID, and the receptorctl's own version (1.6.x vs ours).
    let remote_id =
        regex::Regex::new(r#""RemoteUnitID": "[A-Za-z0-9]*""#).unwrap_or_else(|_| unreachable!());
    let own_version =
        regex::Regex::new(r"(?m)^receptorctl  \S+$").unwrap_or_else(|_| unreachable!());
    let text = remote_id.replace_all(&text, r#""RemoteUnitID": "<remote>""#);
    let text = own_version.replace_all(&text, "receptorctl  <version>");
    let text = duration.replace_all(&text, "<dur>");
    let text = date.replace_all(&text, "<time>");
    text.lines()
        .filter(|l| !l.contains("are different versions"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn unit_ids(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"Unit ID: ([A-Za-z0-9]+)|\(([A-Za-z0-9]+), released\)")
        .unwrap_or_else(|_| unreachable!());
    re.captures_iter(text)
        .filter_map(|c| c.get(1).or_else(|| c.get(2)).map(|m| m.as_str().to_owned()))
        .collect()
}

/// One receptorctl's run of the scenario: (step, exit code, stdout, stderr), normalised.
async fn scenario(bin: &Path, socket: &str) -> Result<Vec<(String, Option<i32>, String, String)>> {
    let mut ids: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    let plan: Vec<Vec<String>> = vec![
        vec!["status".into()],
        vec!["status".into(), "--json".into()],
        vec![
            "ping".into(),
            "b".into(),
            "--count".into(),
            "2".into(),
            "--delay".into(),
            "0.1".into(),
        ],
        vec!["ping".into(), "nosuch".into(), "--count".into(), "1".into()],
        vec!["traceroute".into(), "b".into()],
        vec!["version".into()],
        vec![
            "work".into(),
            "submit".into(),
            "cat".into(),
            "-l".into(),
            "local hello".into(),
            "-f".into(),
        ],
        vec![
            "work".into(),
            "submit".into(),
            "cat".into(),
            "--node".into(),
            "b".into(),
            "-l".into(),
            "remote hello".into(),
            "-f".into(),
            "--rm".into(),
        ],
        vec!["work".into(), "submit".into(), "echo".into(), "-n".into()],
        vec![
            "work".into(),
            "submit".into(),
            "echo".into(),
            "--node".into(),
            "b".into(),
            "-n".into(),
        ],
        vec![
            "work".into(),
            "submit".into(),
            "fail".into(),
            "-n".into(),
            "-f".into(),
        ],
        vec!["work".into(), "submit".into(), "cat".into()],
        vec!["work".into(), "submit".into(), "nosuch".into(), "-n".into()],
        vec!["work".into(), "results".into(), "nosuch".into()],
        vec!["work".into(), "release".into(), "nosuch".into()],
    ];
    for args in plan {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_ctl(bin, socket, &argv).await?;
        ids.extend(unit_ids(&out.stdout));
        steps.push((args.join(" "), out.code, out.stdout, out.stderr));
    }
    // The units just submitted (local, then remote): results, their status, release.
    let local = ids
        .get(ids.len().saturating_sub(2))
        .cloned()
        .context("no local unit id")?;
    let remote = ids.last().cloned().context("no remote unit id")?;
    for unit in [&local, &remote] {
        for args in [
            vec!["work", "results", unit.as_str()],
            vec!["work", "list", "--unit_id", unit.as_str()],
            vec!["work", "release", unit.as_str()],
            vec!["work", "cancel"],
        ] {
            let out = run_ctl(bin, socket, &args).await?;
            steps.push((args.join(" "), out.code, out.stdout, out.stderr));
        }
    }
    // Whatever is left (the failed unit and the --follow ones), listed and released.
    let out = run_ctl(bin, socket, &["work", "list", "-q"]).await?;
    let left: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    ids.extend(
        left.iter()
            .filter(|id| !ids.contains(id))
            .cloned()
            .collect::<Vec<_>>(),
    );
    steps.push((
        "work list -q (count)".into(),
        out.code,
        left.len().to_string(),
        out.stderr,
    ));
    let out = run_ctl(bin, socket, &["work", "release", "--all"]).await?;
    steps.push((
        "work release --all (count)".into(),
        out.code,
        out.stdout.lines().count().to_string(),
        out.stderr,
    ));
    let out = run_ctl(bin, socket, &["work", "list"]).await?;
    steps.push(("work list".into(), out.code, out.stdout, out.stderr));
    Ok(steps
        .into_iter()
        .map(|(step, code, out, err)| {
            (
                normalise(&step, &ids),
                code,
                normalise(&out, &ids),
                normalise(&err, &ids),
            )
        })
        .collect())
}

#[tokio::test]
async fn rust_and_python_receptorctl_agree() -> Result<()> {
    let python = receptorctl_bin()?;
    let rust = rust_receptorctl()?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let node = |id: &str, extra: &str| {
        format!(
            "- node:\n    id: {id}\n    datadir: {d}/{id}-data\n\
             - control-service:\n    service: control\n    filename: {d}/{id}.sock\n\
             - work-command:\n    worktype: cat\n    command: cat\n\
             - work-command:\n    worktype: echo\n    command: sh\n    params: -c \"echo hello\"\n\
             - work-command:\n    worktype: fail\n    command: sh\n    params: -c \"echo bad; exit 2\"\n{extra}",
            d = d.display()
        )
    };
    let a = Daemon::start_yaml(
        "a",
        d,
        &node(
            "a",
            "- tcp-listener:\n    bindaddr: 127.0.0.1\n    port: 0\n",
        ),
    )
    .await?;
    let addr = a.tcp_listener_addr().await?;
    let _b = Daemon::start_yaml(
        "b",
        d,
        &node(
            "b",
            &format!("- tcp-peer:\n    address: {addr}\n    redial: true\n"),
        ),
    )
    .await?;
    let socket = d.join("a.sock");
    // Both nodes' control services known on a, and b's route.
    wait_for("a to see b", WAIT, || {
        let socket = socket.clone();
        async move {
            let status = status_json(&socket).await.ok()?;
            let ads = status["Advertisements"].as_array()?;
            (ads.iter().any(|ad| ad["NodeID"] == "b") && status["RoutingTable"]["b"] == "b")
                .then_some(())
        }
    })
    .await?;
    let socket = socket.to_string_lossy().into_owned();
    let from_python = scenario(&python, &socket).await?;
    let from_rust = scenario(&rust, &socket).await?;
    ensure!(from_python.len() == from_rust.len());
    let mut differences = Vec::new();
    for (p, r) in from_python.iter().zip(&from_rust) {
        if p != r {
            differences.push(format!("python: {p:#?}\nrust:   {r:#?}"));
        }
    }
    // Checked facts, so that agreeing on nothing would not pass.
    let step = |name: &str| from_rust.iter().find(|s| s.0.starts_with(name));
    let local = step("work submit cat -l local hello -f").context("step")?;
    assert_eq!((local.1, local.2.as_str()), (Some(0), "local hello"));
    let remote = step("work submit cat --node b").context("step")?;
    assert_eq!(remote.1, Some(0), "{remote:?}");
    assert!(remote.2.starts_with("remote hello"), "{remote:?}");
    let fail = step("work submit fail").context("step")?;
    assert_eq!(fail.1, Some(1), "{fail:?}");
    assert_eq!(
        differences.len(),
        0,
        "outputs differ:\n{}",
        differences.join("\n")
    );
    Ok(())
}

/// Peak resident memory (KiB) of `program args...`, measured by a Python parent with
/// `getrusage(RUSAGE_CHILDREN)` after the child exits (exact, no sampling race).
async fn peak_rss_kib(program: &Path, args: &[&str]) -> Result<(u64, CtlOutput)> {
    let venv = std::env::var_os("RECEPTOR_TEST_VENV")
        .map(PathBuf::from)
        .context("RECEPTOR_TEST_VENV is not set: run the tests with scripts/test")?;
    let script = "import resource, subprocess, sys\n\
                  r = subprocess.run(sys.argv[1:], capture_output=True)\n\
                  sys.stdout.buffer.write(r.stdout)\n\
                  sys.stderr.buffer.write(r.stderr)\n\
                  print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n\
                  sys.exit(r.returncode)\n";
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        Command::new(venv.join("python"))
            .arg("-c")
            .arg(script)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("measured command hung")??;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no maxrss in {stderr}"))?;
    Ok((
        kib,
        CtlOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr,
        },
    ))
}

#[tokio::test]
async fn rust_receptorctl_extras_json_graph_watch_progress_and_bounded_memory() -> Result<()> {
    let rust = rust_receptorctl()?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let node = |id: &str, extra: &str| {
        format!(
            "- node:\n    id: {id}\n    datadir: {d}/{id}-data\n\
             - control-service:\n    service: control\n    filename: {d}/{id}.sock\n\
             - work-command:\n    worktype: cat\n    command: cat\n{extra}",
            d = d.display()
        )
    };
    let a = Daemon::start_yaml(
        "a",
        d,
        &node(
            "a",
            "- tcp-listener:\n    bindaddr: 127.0.0.1\n    port: 0\n",
        ),
    )
    .await?;
    let addr = a.tcp_listener_addr().await?;
    let _b = Daemon::start_yaml(
        "b",
        d,
        &node("b", &format!("- tcp-peer:\n    address: {addr}\n")),
    )
    .await?;
    let socket = d.join("a.sock");
    let sock = socket.to_string_lossy().into_owned();
    wait_for("a to route to b", WAIT, || {
        let socket = socket.clone();
        async move {
            let status = status_json(&socket).await.ok()?;
            (status["RoutingTable"]["b"] == "b").then_some(())
        }
    })
    .await?;

    // The mesh graph, as DOT and as text: both nodes and the link between them.
    let dot = run_ctl(&rust, &sock, &["status", "--graph", "dot"]).await?;
    ensure!(dot.code == Some(0), "{dot:?}");
    ensure!(dot.stdout.contains("graph"), "not DOT: {}", dot.stdout);
    ensure!(
        dot.stdout.contains("\"a\"") && dot.stdout.contains("\"b\""),
        "nodes missing: {}",
        dot.stdout
    );
    let text = run_ctl(&rust, &sock, &["status", "--graph"]).await?;
    ensure!(text.code == Some(0), "{text:?}");
    ensure!(
        text.stdout.contains('a') && text.stdout.contains('b'),
        "{}",
        text.stdout
    );

    // --json on commands whose normal output is text.
    for args in [
        &["status", "--json"][..],
        &["ping", "b", "--count", "1", "--json"][..],
        &["traceroute", "b", "--json"][..],
        &["version", "--json"][..],
    ] {
        let out = run_ctl(&rust, &sock, args).await?;
        ensure!(out.code == Some(0), "{args:?}: {out:?}");
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .with_context(|| format!("{args:?} printed no JSON: {}", out.stdout))?;
    }
    let out = run_ctl(&rust, &sock, &["work", "submit", "cat", "-l", "watched"]).await?;
    ensure!(out.code == Some(0), "{out:?}");
    let unit = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .context("no unit id")?
        .trim()
        .to_owned();

    // work watch of one unit: its state (it has finished) and then the release, then it ends.
    let watch = {
        let rust = rust.clone();
        let sock = sock.clone();
        let unit = unit.clone();
        tokio::spawn(
            async move { run_ctl(&rust, &sock, &["work", "watch", &unit, "--json"]).await },
        )
    };
    wait_for("the unit to succeed", WAIT, || {
        let (rust, sock, unit) = (rust.clone(), sock.clone(), unit.clone());
        async move {
            let out = run_ctl(&rust, &sock, &["work", "list", "--unit_id", &unit])
                .await
                .ok()?;
            out.stdout.contains("Succeeded").then_some(())
        }
    })
    .await?;
    let released = run_ctl(&rust, &sock, &["work", "release", &unit]).await?;
    ensure!(released.code == Some(0), "{released:?}");
    let watched = tokio::time::timeout(WAIT, watch)
        .await
        .context("work watch did not end after the release")???;
    ensure!(watched.code == Some(0), "{watched:?}");
    ensure!(
        watched.stdout.contains("Succeeded") && watched.stdout.contains(&unit),
        "watch output: {}",
        watched.stdout
    );
    ensure!(
        watched.stdout.to_lowercase().contains("released"),
        "no release in the watch output: {}",
        watched.stdout
    );

    // A 100 MB payload from a file: the client's memory stays bounded (it streams).
    let payload = d.join("payload.bin");
    {
        let mut file = tokio::fs::File::create(&payload).await?;
        let block = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            file.write_all(&block).await?;
        }
        file.flush().await?;
    }
    let payload_arg = payload.to_string_lossy().into_owned();
    let (peak_kib, out) = peak_rss_kib(
        &rust,
        &[
            "--socket",
            &sock,
            "work",
            "submit",
            "cat",
            "-p",
            &payload_arg,
            "-f",
            "--rm",
        ],
    )
    .await?;
    ensure!(out.code == Some(0), "{out:?}");
    ensure!(
        out.stdout.len() >= 100 << 20,
        "results cut short: {} bytes",
        out.stdout.len()
    );
    ensure!(
        peak_kib < 64 * 1024,
        "the Rust receptorctl peaked at {peak_kib} KiB moving 100 MB both ways"
    );

    // Progress on a terminal (script(1) gives it a pty), and none when stderr is a file.
    let script = which::which_script()?;
    let command = format!(
        "{} --socket {} work submit cat -p {} -f --rm >/dev/null",
        rust.display(),
        sock,
        payload_arg
    );
    let tty = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        Command::new(script)
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("receptorctl under script hung")??;
    let shown = String::from_utf8_lossy(&tty.stdout);
    ensure!(tty.status.success(), "{shown}");
    ensure!(
        shown.contains("MiB"),
        "no progress bar on a terminal: {shown:?}"
    );
    ensure!(
        !out.stderr.contains("MiB"),
        "progress printed without a terminal: {}",
        out.stderr
    );
    Ok(())
}

mod which {
    use anyhow::{Context, Result};
    use std::path::PathBuf;

    /// util-linux `script`, to run a command on a pseudo-terminal.
    pub(super) fn which_script() -> Result<PathBuf> {
        ["/usr/bin/script", "/bin/script"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("script(1) from util-linux is needed for the terminal test")
    }
}
