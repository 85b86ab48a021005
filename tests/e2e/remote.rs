//! Remote work (issue 5): `work submit --node X` runs the unit on another node over the mesh,
//! through real `receptor` processes and the PyPI receptorctl.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::harness::{CtlOutput, Daemon, receptorctl, receptorctl_bin, status_json, wait_for};

/// Long enough for debug builds moving 100 MB over QUIC.
const LONG: Duration = Duration::from_secs(300);
const LINES: usize = 60;

/// A node's YAML: its own socket and data dir, optional listener and peers.
fn node_yaml(dir: &Path, id: &str, listen: bool, peers: &[&str], extra: &str) -> String {
    let mut yaml = format!(
        "- node:\n    id: {id}\n    datadir: {d}/{id}-data\n    remoteunreachabletimeout: 4s\n\
         - log-level: info\n\
         - control-service:\n    service: control\n    filename: {d}/{id}.sock\n\
         - work-command:\n    worktype: cat\n    command: cat\n\
         - work-command:\n    worktype: lines\n    command: bash\n    params: \"-c 'for i in $(seq 1 {LINES}); do echo line-$i; sleep 0.05; done'\"\n\
         - work-command:\n    worktype: sleeper\n    command: sleep\n    params: \"60\"\n",
        d = dir.display()
    );
    if listen {
        yaml.push_str("- tcp-listener:\n    bindaddr: 127.0.0.1\n    port: 0\n");
    }
    for peer in peers {
        yaml.push_str(&format!(
            "- tcp-peer:\n    address: {peer}\n    redial: true\n"
        ));
    }
    yaml.push_str(extra);
    yaml
}

fn socket(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.sock"))
}

/// receptorctl with a payload on stdin and a long timeout.
async fn ctl_with_stdin(socket: &Path, args: &[&str], stdin: &[u8]) -> Result<CtlOutput> {
    let mut child = Command::new(receptorctl_bin()?)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin).await?;
    drop(input);
    let output = tokio::time::timeout(LONG, child.wait_with_output())
        .await
        .context("receptorctl hung")??;
    Ok(CtlOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Waits until `from` sees `to`'s control service.
async fn wait_sees(from: &Path, to: &str) -> Result<()> {
    wait_for(&format!("{} to see {to}", from.display()), LONG, || {
        let socket = from.to_owned();
        let to = to.to_owned();
        async move {
            let status = status_json(&socket).await.ok()?;
            let ads = status["Advertisements"].as_array()?;
            ads.iter()
                .any(|ad| ad["NodeID"] == to.as_str())
                .then_some(())
        }
    })
    .await
}

fn unit_id(out: &CtlOutput) -> Result<String> {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .map(|s| s.trim().to_owned())
        .with_context(|| format!("no unit id in {out:?}"))
}

async fn unit_status(socket: &Path, unit: &str) -> Result<serde_json::Value> {
    let out = receptorctl(socket, &["work", "list", "--unit_id", unit]).await?;
    if out.code != Some(0) {
        bail!("work list failed: {out:?}");
    }
    let list: serde_json::Value = serde_json::from_str(&out.stdout)?;
    Ok(list[unit].clone())
}

async fn wait_state(
    socket: &Path,
    unit: &str,
    state: &str,
    within: Duration,
) -> Result<serde_json::Value> {
    wait_for(&format!("{unit} to be {state}"), within, || async {
        let status = unit_status(socket, unit).await.ok()?;
        (status["StateName"] == state).then_some(status)
    })
    .await
}

async fn results(socket: &Path, unit: &str) -> Result<String> {
    let out = receptorctl(socket, &["work", "results", unit]).await?;
    if out.code != Some(0) {
        bail!("work results failed: {out:?}");
    }
    Ok(out.stdout)
}

/// a listens, c listens, b dials both: the middle can be restarted with the same config.
struct Line {
    dir: tempfile::TempDir,
    a: Daemon,
    b: Option<Daemon>,
    c: Option<Daemon>,
    b_yaml: String,
}

impl Line {
    async fn start(c_extra: &str, a_extra: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let a = Daemon::start_yaml(
            "node-a",
            dir.path(),
            &node_yaml(dir.path(), "node-a", true, &[], a_extra),
        )
        .await?;
        let c = Daemon::start_yaml(
            "node-c",
            dir.path(),
            &node_yaml(dir.path(), "node-c", true, &[], c_extra),
        )
        .await?;
        let a_addr = a.tcp_listener_addr().await?;
        let c_addr = c.tcp_listener_addr().await?;
        let b_yaml = node_yaml(dir.path(), "node-b", false, &[&a_addr, &c_addr], "");
        let b = Daemon::start_yaml("node-b", dir.path(), &b_yaml).await?;
        let line = Self {
            dir,
            a,
            b: Some(b),
            c: Some(c),
            b_yaml,
        };
        wait_sees(&line.sock("node-a"), "node-c").await?;
        wait_sees(&line.sock("node-c"), "node-a").await?;
        Ok(line)
    }

    fn sock(&self, id: &str) -> PathBuf {
        socket(self.dir.path(), id)
    }

    fn logs(&self) -> String {
        format!(
            "--- a\n{}\n--- b\n{}\n--- c\n{}",
            self.a.log(),
            self.b.as_ref().map(Daemon::log).unwrap_or_default(),
            self.c.as_ref().map(Daemon::log).unwrap_or_default()
        )
    }
}

#[tokio::test]
async fn remote_work_over_one_and_two_hops() -> Result<()> {
    let line = Line::start("", "").await?;
    let a = line.sock("node-a");
    // One hop (a -> b) and two hops (a -> b -> c), payload from stdin.
    for target in ["node-b", "node-c"] {
        let payload = format!("hello from node-a to {target}\n");
        let out = ctl_with_stdin(
            &a,
            &["work", "submit", "cat", "--node", target, "-p", "-", "-f"],
            payload.as_bytes(),
        )
        .await?;
        assert_eq!(out.code, Some(0), "{out:?}\n{}", line.logs());
        assert!(out.stdout.contains(&payload), "{out:?}");
    }
    // ExtraData as Go renders it, and the unit can be released on both ends.
    let out = receptorctl(
        &a,
        &["work", "submit", "cat", "--node", "node-c", "-l", "x"],
    )
    .await?;
    let id = unit_id(&out)?;
    let status = wait_state(&a, &id, "Succeeded", Duration::from_secs(30)).await?;
    let extra = &status["ExtraData"];
    assert_eq!(status["WorkType"], "remote");
    assert_eq!(extra["RemoteNode"], "node-c");
    assert_eq!(extra["RemoteWorkType"], "cat");
    assert_eq!(extra["RemoteStarted"], true);
    assert_eq!(extra["Expiration"], "0001-01-01T00:00:00Z");
    let remote_id = extra["RemoteUnitID"]
        .as_str()
        .context("remote id")?
        .to_owned();
    assert_eq!(
        unit_status(&line.sock("node-c"), &remote_id).await?["StateName"],
        "Succeeded"
    );
    assert_eq!(results(&a, &id).await?.trim_end(), "x");
    let rel = receptorctl(&a, &["work", "release", &id]).await?;
    assert_eq!(rel.code, Some(0), "{rel:?}");
    assert!(
        unit_status(&line.sock("node-c"), &remote_id).await.is_err() || {
            let out = receptorctl(&line.sock("node-c"), &["work", "list"]).await?;
            !out.stdout.contains(&remote_id)
        }
    );
    Ok(())
}

/// A four-node line a - b - c - d (each dials the one before it): a unit on d is three hops away.
#[tokio::test]
async fn remote_work_over_three_hops() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut daemons = Vec::new();
    let mut prev: Option<String> = None;
    for id in ["node-a", "node-b", "node-c", "node-d"] {
        let peers: Vec<&str> = prev.iter().map(String::as_str).collect();
        let d = Daemon::start_yaml(id, dir.path(), &node_yaml(dir.path(), id, true, &peers, ""))
            .await?;
        prev = Some(d.tcp_listener_addr().await?);
        daemons.push(d);
    }
    let logs = || {
        daemons
            .iter()
            .map(Daemon::log)
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    let a = socket(dir.path(), "node-a");
    wait_sees(&a, "node-d").await?;
    wait_sees(&socket(dir.path(), "node-d"), "node-a").await?;
    let payload = "three hops from node-a to node-d\n";
    let out = ctl_with_stdin(
        &a,
        &["work", "submit", "cat", "--node", "node-d", "-p", "-", "-f"],
        payload.as_bytes(),
    )
    .await?;
    assert_eq!(out.code, Some(0), "{out:?}\n{}", logs());
    assert!(out.stdout.contains(payload), "{out:?}");
    // A streaming unit over three hops, then released on both ends.
    let out = receptorctl(&a, &["work", "submit", "lines", "--node", "node-d", "-n"]).await?;
    let id = unit_id(&out)?;
    let status = wait_state(&a, &id, "Succeeded", Duration::from_secs(60))
        .await
        .with_context(logs)?;
    let want: String = (1..=LINES).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(results(&a, &id).await?, want);
    let remote_id = status["ExtraData"]["RemoteUnitID"]
        .as_str()
        .context("remote id")?
        .to_owned();
    let d = socket(dir.path(), "node-d");
    assert_eq!(unit_status(&d, &remote_id).await?["StateName"], "Succeeded");
    let rel = receptorctl(&a, &["work", "release", &id]).await?;
    assert_eq!(rel.code, Some(0), "{rel:?}");
    wait_for("both ends released", Duration::from_secs(30), || async {
        let here = receptorctl(&a, &["work", "list"]).await.ok()?;
        let there = receptorctl(&d, &["work", "list"]).await.ok()?;
        (!here.stdout.contains(&id) && !there.stdout.contains(&remote_id)).then_some(())
    })
    .await
    .with_context(logs)?;
    Ok(())
}

#[tokio::test]
async fn remote_work_100mb_round_trip_is_byte_identical() -> Result<()> {
    let line = Line::start("", "").await?;
    let path = line.dir.path().join("payload.bin");
    let mut data = Vec::with_capacity(100 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < 100 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&path, &data)?;
    let want = sha2::Sha256::digest(&data);
    let a = line.sock("node-a");
    let out = ctl_with_stdin(
        &a,
        &[
            "work",
            "submit",
            "cat",
            "--node",
            "node-c",
            "-p",
            &path.to_string_lossy(),
        ],
        b"",
    )
    .await?;
    let id = unit_id(&out).with_context(|| line.logs())?;
    wait_state(&a, &id, "Succeeded", LONG)
        .await
        .with_context(|| line.logs())?;
    let stdout = line
        .dir
        .path()
        .join("node-a-data/node-a")
        .join(&id)
        .join("stdout");
    let got = std::fs::read(&stdout)?;
    assert_eq!(got.len(), data.len());
    assert_eq!(sha2::Sha256::digest(&got), want);
    // And through the results command too.
    let mut child = Command::new(receptorctl_bin()?)
        .arg("--socket")
        .arg(&a)
        .args(["work", "results", &id])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut hasher = sha2::Sha256::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout(LONG, stdout.read(&mut buf)).await??;
        if n == 0 {
            break;
        }
        total += n;
        hasher.update(&buf[..n]);
    }
    assert_eq!(total, data.len());
    assert_eq!(hasher.finalize(), want);
    Ok(())
}

#[tokio::test]
async fn many_parallel_remote_units_succeed_and_are_released() -> Result<()> {
    let line = Line::start("", "").await?;
    let a = line.sock("node-a");
    // 200 units, at most 50 receptorctl processes at a time.
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(50));
    let started = tokio::time::Instant::now();
    let mut jobs = Vec::new();
    for i in 0..200 {
        let a = a.clone();
        let limit = limit.clone();
        jobs.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let payload = format!("payload number {i}\n");
            let out = ctl_with_stdin(
                &a,
                &[
                    "work", "submit", "cat", "--node", "node-c", "-p", "-", "-f", "--rm",
                ],
                payload.as_bytes(),
            )
            .await?;
            anyhow::ensure!(
                out.code == Some(0) && out.stdout.contains(&payload),
                "{out:?}"
            );
            Ok(())
        }));
    }
    for job in jobs {
        job.await?.with_context(|| line.logs())?;
    }
    eprintln!("200 remote units took {:?}", started.elapsed());
    for (node, socket) in [("node-a", &a), ("node-c", &line.sock("node-c"))] {
        wait_for(
            &format!("{node} to have no units"),
            Duration::from_secs(30),
            || async {
                let out = receptorctl(socket, &["work", "list"]).await.ok()?;
                (out.stdout.trim() == "{}").then_some(())
            },
        )
        .await?;
        let data = line.dir.path().join(format!("{node}-data/{node}"));
        let left = std::fs::read_dir(&data).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "{node} still has unit directories");
    }
    Ok(())
}

#[tokio::test]
async fn remote_node_down_at_submit_completes_when_it_starts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = Daemon::start_yaml(
        "node-a",
        dir.path(),
        &node_yaml(dir.path(), "node-a", true, &[], ""),
    )
    .await?;
    let a_addr = a.tcp_listener_addr().await?;
    let b = Daemon::start_yaml(
        "node-b",
        dir.path(),
        &node_yaml(dir.path(), "node-b", true, &[&a_addr], ""),
    )
    .await?;
    let b_addr = b.tcp_listener_addr().await?;
    let sock = socket(dir.path(), "node-a");
    wait_sees(&sock, "node-b").await?;
    let out = receptorctl(
        &sock,
        &[
            "work",
            "submit",
            "cat",
            "--node",
            "node-c",
            "-l",
            "late but complete",
        ],
    )
    .await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Job Submitted"), "{out:?}");
    let id = unit_id(&out)?;
    assert_eq!(unit_status(&sock, &id).await?["StateName"], "Pending");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _c = Daemon::start_yaml(
        "node-c",
        dir.path(),
        &node_yaml(dir.path(), "node-c", false, &[&b_addr], ""),
    )
    .await?;
    wait_state(&sock, &id, "Succeeded", Duration::from_secs(60))
        .await
        .with_context(|| a.log())?;
    assert_eq!(results(&sock, &id).await?.trim_end(), "late but complete");
    Ok(())
}

#[tokio::test]
async fn middle_node_restart_loses_and_duplicates_nothing() -> Result<()> {
    let mut line = Line::start("", "").await?;
    let a = line.sock("node-a");
    let out = receptorctl(&a, &["work", "submit", "lines", "--node", "node-c", "-n"]).await?;
    let id = unit_id(&out)?;
    wait_for("some output", Duration::from_secs(30), || async {
        let status = unit_status(&a, &id).await.ok()?;
        (status["StdoutSize"].as_i64()? > 0).then_some(())
    })
    .await
    .with_context(|| line.logs())?;
    line.b.take().context("b")?.terminate().await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    line.b = Some(Daemon::start_yaml("node-b", line.dir.path(), &line.b_yaml).await?);
    wait_state(&a, &id, "Succeeded", Duration::from_secs(90))
        .await
        .with_context(|| line.logs())?;
    let want: String = (1..=LINES).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(results(&a, &id).await?, want);
    Ok(())
}

#[tokio::test]
async fn remote_node_that_never_returns_fails_within_the_bound() -> Result<()> {
    let mut line = Line::start("", "").await?;
    let a = line.sock("node-a");
    let out = receptorctl(&a, &["work", "submit", "sleeper", "--node", "node-c", "-n"]).await?;
    let id = unit_id(&out)?;
    wait_state(&a, &id, "Running", Duration::from_secs(30))
        .await
        .with_context(|| line.logs())?;
    line.c.take().context("c")?.terminate().await?;
    let started = tokio::time::Instant::now();
    let status = wait_state(&a, &id, "Failed", Duration::from_secs(40))
        .await
        .with_context(|| line.logs())?;
    assert!(started.elapsed() < Duration::from_secs(35));
    let detail = status["Detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("Remote node node-c unreachable"),
        "{status}"
    );
    // Release does not hang on the missing node: it is pending, then the unit goes.
    let rel = receptorctl(&a, &["work", "release", &id]).await?;
    assert_eq!(rel.code, Some(0), "{rel:?}");
    let force = receptorctl(&a, &["work", "release", "--force", &id]).await?;
    assert_eq!(force.code, Some(0), "{force:?}");
    wait_for("the unit to go", Duration::from_secs(30), || async {
        unit_status(&a, &id).await.is_err().then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn signed_remote_work_is_verified() -> Result<()> {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("server/src/work/testdata");
    let c_extra = format!(
        "- work-verification:\n    publickey: {}\n\
         - work-command:\n    worktype: signed-cat\n    command: cat\n    verifysignature: true\n",
        testdata.join("signing-public.pem").display()
    );
    let a_extra = format!(
        "- work-signing:\n    privatekey: {}\n    tokenexpiration: 10m\n",
        testdata.join("signing-pkcs1.pem").display()
    );
    let line = Line::start(&c_extra, &a_extra).await?;
    let a = line.sock("node-a");
    let unsigned = receptorctl(
        &a,
        &[
            "work",
            "submit",
            "signed-cat",
            "--node",
            "node-c",
            "-l",
            "x",
        ],
    )
    .await?;
    assert_ne!(unsigned.code, Some(0), "{unsigned:?}");
    assert!(
        unsigned.stderr.contains("could not verify signature"),
        "{unsigned:?}"
    );
    let signed = receptorctl(
        &a,
        &[
            "work",
            "submit",
            "signed-cat",
            "--node",
            "node-c",
            "--signwork",
            "-l",
            "signed payload",
            "-f",
        ],
    )
    .await?;
    assert_eq!(signed.code, Some(0), "{signed:?}\n{}", line.logs());
    assert!(signed.stdout.contains("signed payload"), "{signed:?}");
    Ok(())
}

#[tokio::test]
async fn submitting_node_restart_resumes_monitoring_and_fetching() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Daemon::start_yaml(
        "node-c",
        dir.path(),
        &node_yaml(dir.path(), "node-c", true, &[], ""),
    )
    .await?;
    let c_addr = c.tcp_listener_addr().await?;
    let a_yaml = node_yaml(dir.path(), "node-a", false, &[&c_addr], "");
    let a = Daemon::start_yaml("node-a", dir.path(), &a_yaml).await?;
    let sock = socket(dir.path(), "node-a");
    wait_sees(&sock, "node-c").await?;
    let out = receptorctl(
        &sock,
        &["work", "submit", "lines", "--node", "node-c", "-n"],
    )
    .await?;
    let id = unit_id(&out)?;
    wait_for("some output", Duration::from_secs(30), || async {
        let status = unit_status(&sock, &id).await.ok()?;
        (status["StdoutSize"].as_i64()? > 0).then_some(())
    })
    .await?;
    a.terminate().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = Daemon::start_yaml("node-a", dir.path(), &a_yaml).await?;
    wait_state(&sock, &id, "Succeeded", Duration::from_secs(60))
        .await
        .with_context(|| format!("{}\n--- c\n{}", a.log(), c.log()))?;
    let want: String = (1..=LINES).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(results(&sock, &id).await?, want);
    Ok(())
}

/// A TCP relay the test can cut (dropping every connection and refusing new ones) and restore.
struct Relay {
    addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Connections relayed so far.
    relayed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let relayed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accept = tokio::spawn({
            let up = up.clone();
            let conns = conns.clone();
            let relayed = relayed.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue;
                    }
                    relayed.fetch_add(1, Ordering::SeqCst);
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().expect("relay lock").push(task);
                }
            }
        });
        Ok(Self {
            addr,
            up,
            conns,
            relayed,
            accept,
        })
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.conns.lock().expect("relay lock").drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test]
async fn link_cut_and_restored_three_times_loses_and_duplicates_nothing() -> Result<()> {
    const N: usize = 300;
    const UNITS: usize = 20;
    let dir = tempfile::tempdir()?;
    let yaml = |id: &str, listen: bool, peers: &[&str]| {
        node_yaml(dir.path(), id, listen, peers, &format!(
            "- work-command:\n    worktype: numbered\n    command: bash\n    params: \"-c 'for i in $(seq 1 {N}); do echo numbered-line-$i; sleep 0.1; done'\"\n"
        ))
        .replace("remoteunreachabletimeout: 4s", "remoteunreachabletimeout: 60s")
    };
    let a = Daemon::start_yaml("node-a", dir.path(), &yaml("node-a", true, &[])).await?;
    let c = Daemon::start_yaml("node-c", dir.path(), &yaml("node-c", true, &[])).await?;
    let relay = Relay::start(a.tcp_listener_addr().await?).await?;
    let c_addr = c.tcp_listener_addr().await?;
    // b reaches a only through the relay.
    let b = Daemon::start_yaml(
        "node-b",
        dir.path(),
        &yaml("node-b", false, &[&relay.addr, &c_addr]),
    )
    .await?;
    let logs = || format!("--- a\n{}\n--- b\n{}\n--- c\n{}", a.log(), b.log(), c.log());
    let sock = socket(dir.path(), "node-a");
    wait_sees(&sock, "node-c").await?;
    let mut ids = Vec::new();
    for _ in 0..UNITS {
        let out = receptorctl(
            &sock,
            &["work", "submit", "numbered", "--node", "node-c", "-n"],
        )
        .await?;
        ids.push(unit_id(&out).with_context(logs)?);
    }
    let started = tokio::time::Instant::now();
    for round in 0..3 {
        // Let output flow, then cut the a - b link for a while and restore it: every cut
        // happens while the units are still streaming.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            unit_status(&sock, &ids[UNITS - 1]).await?["StateName"],
            "Running",
            "round {round}"
        );
        relay.cut();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        relay.restore();
        wait_for("b to re-dial a", Duration::from_secs(60), || async {
            (relay.relayed.load(std::sync::atomic::Ordering::SeqCst) > round + 1).then_some(())
        })
        .await
        .with_context(|| format!("round {round}\n{}", logs()))?;
        wait_sees(&sock, "node-c")
            .await
            .with_context(|| format!("round {round}\n{}", logs()))?;
    }
    // The link really was cut and re-dialled each time, while the units were still running.
    assert!(
        relay.relayed.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "b did not re-dial through the relay"
    );
    let want: String = (1..=N).map(|i| format!("numbered-line-{i}\n")).collect();
    for id in &ids {
        wait_state(&sock, id, "Succeeded", Duration::from_secs(120))
            .await
            .with_context(logs)?;
        let got = results(&sock, id).await?;
        assert!(
            got == want,
            "unit {id}: {} bytes, want {}\n{}",
            got.len(),
            want.len(),
            logs()
        );
    }
    eprintln!("20 units through 3 link cuts took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn finished_units_past_the_work_retention_are_released() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Daemon::start_yaml(
        "node-c",
        dir.path(),
        &node_yaml(dir.path(), "node-c", true, &[], ""),
    )
    .await?;
    let c_addr = c.tcp_listener_addr().await?;
    // Only node-a has a retention.
    let a_yaml = node_yaml(dir.path(), "node-a", false, &[&c_addr], "").replace(
        "remoteunreachabletimeout: 4s",
        // Long enough that a loaded machine still reads the units before they go.
        "remoteunreachabletimeout: 4s\n    workretention: 6s",
    );
    let a = Daemon::start_yaml("node-a", dir.path(), &a_yaml).await?;
    let logs = || format!("--- a\n{}\n--- c\n{}", a.log(), c.log());
    let sock = socket(dir.path(), "node-a");
    let c_sock = socket(dir.path(), "node-c");
    wait_sees(&sock, "node-c").await?;
    let local = unit_id(&receptorctl(&sock, &["work", "submit", "cat", "-l", "local"]).await?)?;
    wait_state(&sock, &local, "Succeeded", Duration::from_secs(30)).await?;
    // Readable while within the retention.
    assert_eq!(results(&sock, &local).await?.trim_end(), "local");
    let remote = unit_id(
        &receptorctl(
            &sock,
            &["work", "submit", "cat", "--node", "node-c", "-l", "remote"],
        )
        .await?,
    )?;
    let running = unit_id(&receptorctl(&sock, &["work", "submit", "sleeper", "-n"]).await?)?;
    let on_c = unit_id(&receptorctl(&c_sock, &["work", "submit", "cat", "-l", "kept"]).await?)?;
    let status = wait_state(&sock, &remote, "Succeeded", Duration::from_secs(30))
        .await
        .with_context(logs)?;
    let remote_id = status["ExtraData"]["RemoteUnitID"]
        .as_str()
        .context("remote id")?
        .to_owned();
    let started = tokio::time::Instant::now();
    wait_for(
        "finished units to be released",
        Duration::from_secs(30),
        || async {
            let here = receptorctl(&sock, &["work", "list"]).await.ok()?;
            let there = receptorctl(&c_sock, &["work", "list"]).await.ok()?;
            (!here.stdout.contains(&local)
                && !here.stdout.contains(&remote)
                && !there.stdout.contains(&remote_id))
            .then_some(())
        },
    )
    .await
    .with_context(logs)?;
    eprintln!("released {:?} after the check", started.elapsed());
    for id in [&local, &remote] {
        assert!(!dir.path().join("node-a-data/node-a").join(id).exists());
    }
    // A running unit is never swept; node-c (no retention) keeps its own finished unit.
    assert_eq!(unit_status(&sock, &running).await?["StateName"], "Running");
    assert_eq!(unit_status(&c_sock, &on_c).await?["StateName"], "Succeeded");
    Ok(())
}
