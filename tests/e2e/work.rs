//! Local work end to end: the built `receptor` with `work-command` types, driven by the PyPI
//! receptorctl and by raw sockets replaying Go's captured control sessions
//! (vectors/go-control-transcripts.jsonl), compared byte for byte where deterministic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::harness::{CtlOutput, Daemon, WAIT, receptorctl, receptorctl_bin, wait_for};

const TRANSCRIPTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/vectors/go-control-transcripts.jsonl"
);

/// The work types of the node the Go transcripts were captured on.
fn node_yaml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"---
- node:
    id: node-a
    datadir: {d}/data
- log-level: info
- local-only:
- control-service:
    service: control
    filename: {d}/node-a.sock
- work-command:
    worktype: cat
    command: cat
- work-command:
    worktype: echo
    command: sh
    params: -c "echo hello-from-node-a; cat"
- work-command:
    worktype: sleep
    command: sleep
    params: "30"
- work-command:
    worktype: fail
    command: sh
    params: -c "echo oops; exit 3"
- work-command:
    worktype: emit
    command: sh
    allowruntimeparams: true
"#
    )
}

struct Node {
    dir: tempfile::TempDir,
    daemon: Daemon,
}

impl Node {
    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let daemon = Daemon::start_yaml("node-a", dir.path(), &node_yaml(dir.path())).await?;
        let node = Self { dir, daemon };
        node.wait_ready().await?;
        Ok(node)
    }

    async fn restart(self) -> Result<Self> {
        let Self { dir, daemon } = self;
        let status = daemon.terminate().await?;
        ensure!(status.success(), "receptor exited with {status}");
        let daemon = Daemon::start_yaml("node-a", dir.path(), &node_yaml(dir.path())).await?;
        let node = Self { dir, daemon };
        node.wait_ready().await?;
        Ok(node)
    }

    async fn wait_ready(&self) -> Result<()> {
        self.daemon
            .wait_log("control socket listening")
            .await
            .map(drop)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("node-a.sock")
    }

    async fn ctl(&self, args: &[&str]) -> Result<CtlOutput> {
        receptorctl(&self.socket(), args).await
    }

    async fn ctl_stdin(&self, args: &[&str], stdin: &[u8]) -> Result<CtlOutput> {
        let mut child = tokio::process::Command::new(receptorctl_bin()?)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut input = child.stdin.take().context("stdin")?;
        input.write_all(stdin).await?;
        drop(input);
        let output = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .context("receptorctl hung")??;
        Ok(CtlOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// One raw session: sends `input`, half-closes, returns everything received.
    async fn raw(&self, input: &[u8]) -> Result<Vec<u8>> {
        raw_session(&self.socket(), input).await
    }

    async fn status(&self, unit: &str) -> Result<Value> {
        let reply = self.raw(format!("work status {unit}\n").as_bytes()).await?;
        let text = String::from_utf8(reply)?;
        let line = text.lines().nth(1).context("no status line")?;
        serde_json::from_str(line).with_context(|| format!("status reply {line:?}"))
    }

    async fn wait_state(&self, unit: &str, state: i64) -> Result<Value> {
        wait_for(
            &format!("unit {unit} to reach state {state}"),
            WAIT,
            || async move {
                let status = self.status(unit).await.ok()?;
                (status["State"] == state).then_some(status)
            },
        )
        .await
        .with_context(|| self.daemon.log())
    }
}

async fn raw_session(socket: &Path, input: &[u8]) -> Result<Vec<u8>> {
    let mut stream = UnixStream::connect(socket).await?;
    stream.write_all(input).await?;
    stream.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .context("the server did not close the session")??;
    Ok(out)
}

fn unit_id(stdout: &str) -> Result<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .map(str::to_owned)
        .with_context(|| format!("no unit ID in {stdout:?}"))
}

#[tokio::test]
async fn receptorctl_work_commands() -> Result<()> {
    let node = Node::start().await?;

    let empty = node.ctl(&["work", "list"]).await?;
    assert_eq!(
        (empty.code, empty.stdout.as_str()),
        (Some(0), "{}\n"),
        "{empty:?}"
    );

    // The CI smoke test and the transcript: payload on stdin, --follow.
    let followed = node
        .ctl_stdin(&["work", "submit", "cat", "-p", "-", "-f"], b"hello\n")
        .await?;
    assert_eq!(
        (followed.code, followed.stdout.as_str()),
        (Some(0), "hello\n"),
        "{followed:?}"
    );
    let literal = node
        .ctl(&["work", "submit", "cat", "-l", "hello world", "-f"])
        .await?;
    assert_eq!(literal.stdout, "hello world\n", "{literal:?}");

    let submitted = node.ctl(&["work", "submit", "echo", "-l", "hi"]).await?;
    assert_eq!(submitted.code, Some(0), "{submitted:?}");
    let echo = unit_id(&submitted.stdout)?;
    assert_eq!(
        submitted.stdout,
        format!("Result: Job Started\nUnit ID: {echo}\n")
    );
    let results = node.ctl(&["work", "results", &echo]).await?;
    assert_eq!(
        (results.code, results.stdout.as_str()),
        (Some(0), "hello-from-node-a\nhi\n")
    );

    let one = node.ctl(&["work", "list", "--unit_id", &echo]).await?;
    let expected = format!(
        "{{\n    \"{echo}\": {{\n        \"Detail\": \"exit status 0\",\n        \"ExtraData\": null,\n        \"State\": 2,\n        \"StateName\": \"Succeeded\",\n        \"StdoutSize\": 21,\n        \"WorkType\": \"echo\"\n    }}\n}}\n"
    );
    assert_eq!(one.stdout, expected);
    let quiet = node.ctl(&["work", "list", "-q"]).await?;
    assert_eq!(quiet.stdout.lines().count(), 3, "{quiet:?}");

    // Failures: results exits 1 with the detail; submit errors exit 101.
    let failed = node.ctl(&["work", "submit", "fail", "-n", "-f"]).await?;
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert_eq!(failed.stdout, "oops\n");
    assert!(
        failed
            .stderr
            .contains("ERROR: Remote unit failed: exit status 3"),
        "{failed:?}"
    );
    let unknown_type = node.ctl(&["work", "submit", "nosuch", "-n"]).await?;
    assert_eq!(unknown_type.code, Some(101), "{unknown_type:?}");
    assert!(
        unknown_type
            .stderr
            .contains("ERROR: Failed to start work unit: unknown work type nosuch")
    );
    let not_allowed = node
        .ctl(&["work", "submit", "cat", "-n", "extra", "params"])
        .await?;
    assert_eq!(not_allowed.code, Some(101));
    assert!(
        not_allowed
            .stderr
            .contains("extra params provided but not allowed"),
        "{not_allowed:?}"
    );
    let remote = node
        .ctl(&[
            "work",
            "submit",
            "cat",
            "--node",
            "node-b",
            "-n",
            "-a",
            "secret_x=1",
        ])
        .await?;
    assert_eq!(remote.code, Some(101));
    assert!(
        remote
            .stderr
            .contains("cannot send secrets over a non-TLS connection"),
        "{remote:?}"
    );
    let with_params = node
        .ctl(&[
            "work",
            "submit",
            "emit",
            "-n",
            "-f",
            "--",
            "-c",
            "'echo $0-$1'",
            "a",
            "b",
        ])
        .await?;
    assert_eq!(with_params.stdout, "a-b\n", "{with_params:?}");

    // Cancel a running unit, then release it.
    let sleeping = node.ctl(&["work", "submit", "sleep", "-n"]).await?;
    let sleep_id = unit_id(&sleeping.stdout)?;
    node.wait_state(&sleep_id, 1).await?;
    let cancelled = node.ctl(&["work", "cancel", &sleep_id]).await?;
    assert_eq!(
        cancelled.stdout,
        format!("Cancelled:\n({sleep_id}, cancelled)\n"),
        "{cancelled:?}"
    );
    let status = node.status(&sleep_id).await?;
    assert_eq!(status["Detail"], "Canceled");
    assert_eq!(status["StateName"], "Canceled");
    let nothing = node.ctl(&["work", "cancel"]).await?;
    assert_eq!(nothing.code, Some(0));
    assert!(nothing.stderr.contains("No unit IDs supplied"));
    let released = node.ctl(&["work", "release", &sleep_id]).await?;
    assert_eq!(
        released.stdout,
        format!("Released:\n({sleep_id}, released)\n")
    );

    let unknown = node.ctl(&["work", "release", "NoSuchU1"]).await?;
    assert_eq!(unknown.code, Some(1));
    assert_eq!(unknown.stdout, "Released:\n");
    assert!(
        unknown
            .stderr
            .contains("ERROR: NoSuchU1: ERROR: unknown work unit NoSuchU1")
    );

    // --rm releases after following.
    let removed = node
        .ctl(&["work", "submit", "cat", "-l", "bye", "-f", "--rm"])
        .await?;
    assert!(
        removed.stdout.starts_with("bye\n(") && removed.stdout.ends_with(", released)\n"),
        "{removed:?}"
    );

    let all = node.ctl(&["work", "release", "--all"]).await?;
    assert_eq!(all.code, Some(0), "{all:?}");
    assert_eq!(all.stdout.lines().count(), 6, "{all:?}");
    let none = node.ctl(&["work", "list"]).await?;
    assert_eq!(none.stdout, "{}\n");
    assert!(
        std::fs::read_dir(node.dir.path().join("data/node-a"))?
            .next()
            .is_none()
    );

    // The work types are advertised in status.
    let human = node.ctl(&["status"]).await?;
    assert!(
        human.stdout.contains("cat, echo, sleep, fail, emit"),
        "{}",
        human.stdout
    );
    Ok(())
}

// === Go transcript replay ===

struct Case {
    name: String,
    value: Value,
}

fn transcripts() -> Result<Vec<Case>> {
    let text =
        std::fs::read_to_string(TRANSCRIPTS).with_context(|| format!("reading {TRANSCRIPTS}"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let value: Value = serde_json::from_str(l)?;
            Ok(Case {
                name: value["case"].as_str().unwrap_or_default().to_owned(),
                value,
            })
        })
        .collect()
}

/// Maps Go's unit IDs to ours, and normalises what differs between runs.
#[derive(Default)]
struct Ids(BTreeMap<String, String>);

impl Ids {
    fn learn(&mut self, go: &str, ours: &str) -> Result<()> {
        let go_ids = created_ids(go);
        let our_ids = created_ids(ours);
        ensure!(
            go_ids.len() == our_ids.len(),
            "submit replies differ:\n{go}\n{ours}"
        );
        for (g, o) in go_ids.into_iter().zip(our_ids) {
            self.0.insert(g, o);
        }
        Ok(())
    }

    fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (go, ours) in &self.0 {
            out = out.replace(go, ours);
        }
        out
    }

    fn ours(&self, go: &str) -> Result<&str> {
        self.0
            .get(go)
            .map(String::as_str)
            .with_context(|| format!("unit {go} not replayed"))
    }
}

fn created_ids(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"Work unit created with ID ([a-zA-Z0-9]+)\.").expect("regex");
    re.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

/// Version strings differ between builds; everything else must match.
fn normalise(text: &str) -> String {
    let re = regex::Regex::new(r#"\{"Version":"[^"]*"\}"#).expect("regex");
    re.replace_all(text, r#"{"Version":"*"}"#).into_owned()
}

/// Compares line by line. JSON objects whose keys are unit IDs may come out in a different
/// order than Go's (our IDs differ): those compare as JSON, and our keys must still be sorted.
fn compare(case: &str, expected: &str, got: &str) -> Result<()> {
    let expected = normalise(expected);
    let got = normalise(got);
    if expected == got {
        return Ok(());
    }
    let (e_lines, g_lines): (Vec<&str>, Vec<&str>) =
        (expected.split('\n').collect(), got.split('\n').collect());
    ensure!(
        e_lines.len() == g_lines.len(),
        "{case}: replies differ\n--- go\n{expected}\n--- ours\n{got}"
    );
    for (e, g) in e_lines.iter().zip(&g_lines) {
        if e == g {
            continue;
        }
        let (Ok(ev), Ok(gv)) = (
            serde_json::from_str::<Value>(e),
            serde_json::from_str::<Value>(g),
        ) else {
            bail!("{case}: line differs\n--- go\n{e}\n--- ours\n{g}");
        };
        ensure!(ev == gv, "{case}: JSON differs\n--- go\n{e}\n--- ours\n{g}");
        let keys: Vec<&String> = gv
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        let positions: Vec<usize> = keys
            .iter()
            .filter_map(|k| g.find(&format!("\"{k}\":")))
            .collect();
        ensure!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{case}: keys not sorted: {g}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn go_control_transcripts_replay_against_our_socket() -> Result<()> {
    let cases = transcripts()?;
    let node = Node::start().await?;
    let mut ids = Ids::default();
    // In capture order: each case builds on the units the earlier ones created.
    let replayed = [
        "work list (empty)",
        "work submit local -p - -f (cat, payload 'hello\\n')",
        "work submit local -l hi (echo, no -f)",
        "work status (plain text, as receptorctl's results helper and Go remote-work monitors send it)",
        "work status (JSON)",
        "work results",
        "work list (non-empty)",
        "work list --unit_id <unitid>",
        "work release",
        "work submit local -n (sleep 30, for cancel)",
        "work cancel",
        "work status (canceled unit)",
        "work release (canceled unit)",
        "work release unknown unit",
        "work subcommand errors (plain text)",
        "unknown command (plain text)",
        "unknown command (JSON)",
        "malformed JSON",
        "JSON without command / non-string command",
        "CRLF line",
    ];
    for name in replayed {
        let case = cases
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("transcript case {name:?} missing"))?;
        for conn in case.value["connections"]
            .as_array()
            .context("connections")?
        {
            let sent = ids.apply(conn["c2s"]["utf8"].as_str().context("c2s")?);
            let expected_go = conn["s2c"]["utf8"].as_str().context("s2c")?;
            // A cancel needs its unit running; other reads need their units finished.
            if sent.starts_with("{\"command\":\"status\"") && sent.contains("work cancel ") {
                let unit = sent.rsplit(' ').next().unwrap_or_default().trim();
                node.wait_state(unit, 1).await?;
            } else if sent.contains("work ") && !sent.contains("\"subcommand\": \"submit\"") {
                let node = &node;
                for unit in ids.0.values() {
                    wait_for("units to settle", WAIT, || async move {
                        let s = node.status(unit).await.ok();
                        let state = s.as_ref().and_then(|s| s["State"].as_i64());
                        let sleeper = s.as_ref().is_some_and(|s| s["WorkType"] == "sleep");
                        // Released units are gone; running sleeps (kept for the cancel
                        // case) are settled enough; everything else must be final.
                        (s.is_none()
                            || state.is_some_and(|st| st >= 2)
                            || (sleeper && state == Some(1)))
                        .then_some(())
                    })
                    .await?;
                }
            }
            let got = String::from_utf8(node.raw(sent.as_bytes()).await?)?;
            if created_ids(expected_go).len() == 1 {
                ids.learn(expected_go, &got)?;
            }
            compare(name, &ids.apply(expected_go), &got)
                .with_context(|| format!("sent {sent:?}\n{}", node.daemon.log()))?;
        }
        if name.starts_with("work submit") {
            let id = ids.0.values().last().cloned().unwrap_or_default();
            if !name.contains("sleep") {
                node.wait_state(&id, 2).await?;
            }
        }
    }
    assert!(ids.ours("xk07MWEr").is_ok());
    Ok(())
}

#[tokio::test]
async fn receptorctl_outputs_match_go_transcripts() -> Result<()> {
    let cases = transcripts()?;
    let node = Node::start().await?;
    let mut ids = Ids::default();
    let socket = node.socket();
    let socket = socket.to_str().context("socket path")?;
    for name in [
        "work list (empty)",
        "work submit local -p - -f (cat, payload 'hello\\n')",
        "work submit local -l hi (echo, no -f)",
        "work results",
        "work list --unit_id <unitid>",
        "work release",
        "work submit local -n (sleep 30, for cancel)",
        "work cancel",
        "work release (canceled unit)",
        "work release unknown unit",
    ] {
        let case = cases.iter().find(|c| c.name == name).context("case")?;
        let argv: Vec<String> = case.value["argv"]
            .as_array()
            .context("argv")?
            .iter()
            .skip(1)
            .map(|a| ids.apply(a.as_str().unwrap_or_default()))
            .map(|a| {
                if a.ends_with(".sock") {
                    socket.to_owned()
                } else {
                    a
                }
            })
            .collect();
        let args: Vec<&str> = argv.iter().skip(2).map(String::as_str).collect();
        if name == "work cancel" {
            node.wait_state(args.last().copied().unwrap_or_default(), 1)
                .await?;
        }
        let out = match case.value["stdin"].as_str() {
            Some(stdin) => node.ctl_stdin(&args, stdin.as_bytes()).await?,
            None => node.ctl(&args).await?,
        };
        let go_stdout = case.value["stdout"].as_str().unwrap_or_default();
        if let (Some(go), Some(ours)) = (
            go_stdout.lines().find_map(|l| l.strip_prefix("Unit ID: ")),
            out.stdout.lines().find_map(|l| l.strip_prefix("Unit ID: ")),
        ) {
            ids.0.insert(go.to_owned(), ours.to_owned());
            if !name.contains("sleep") {
                node.wait_state(ours, 2).await?;
            }
        }
        assert_eq!(
            out.code,
            case.value["rc"].as_i64().map(|c| c as i32),
            "{name}: {out:?}"
        );
        assert_eq!(out.stdout, ids.apply(go_stdout), "{name}");
        let go_stderr = case.value["stderr"].as_str().unwrap_or_default();
        assert_eq!(out.stderr, ids.apply(go_stderr), "{name}");
    }
    Ok(())
}

// === robustness ===

#[tokio::test]
async fn hostile_clients_cannot_wedge_the_node() -> Result<()> {
    let node = Node::start().await?;
    // A line that never ends: refused after 1 MiB, the session closed.
    let mut long = UnixStream::connect(node.socket()).await?;
    let chunk = vec![b'x'; 1 << 16];
    let mut sent = 0usize;
    while sent < 8 << 20 {
        if long.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, long.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.ends_with("ERROR: command line too long\n"), "{reply}");
    assert!(sent < 8 << 20, "the server kept reading an endless line");

    // A client that stalls mid-payload holds only its own unit.
    let mut stalled = UnixStream::connect(node.socket()).await?;
    stalled
        .write_all(b"{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"localhost\",\"worktype\":\"cat\"}\npartial")
        .await?;
    let mut greeting = vec![0u8; 256];
    let n = stalled.read(&mut greeting).await?;
    let mut text = String::from_utf8_lossy(&greeting[..n]).into_owned();
    while !text.contains("Send stdin data and EOF.") {
        let n = stalled.read(&mut greeting).await?;
        ensure!(n > 0, "no submit reply: {text}");
        text.push_str(&String::from_utf8_lossy(&greeting[..n]));
    }
    let stalled_id = created_ids(&text).pop().context("unit id")?;
    let quick = node
        .ctl(&["work", "submit", "cat", "-l", "meanwhile", "-f"])
        .await?;
    assert_eq!(quick.stdout, "meanwhile\n");
    assert_eq!(
        node.status(&stalled_id).await?["Detail"],
        "Waiting for Input Data"
    );
    // Cancelling the stalled unit aborts its upload.
    node.ctl(&["work", "cancel", &stalled_id]).await?;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stalled.read_to_end(&mut rest)).await??;
    assert!(
        String::from_utf8_lossy(&rest).starts_with("ERROR: work unit"),
        "{rest:?}"
    );
    assert_eq!(node.status(&stalled_id).await?["State"], 4);

    // A results reader that disconnects mid-stream does not disturb the unit.
    let emitter = node
        .ctl(&[
            "work",
            "submit",
            "emit",
            "-n",
            "--",
            "-c",
            "'for i in $(seq 1 40); do echo line $i; sleep 0.05; done'",
        ])
        .await?;
    let id = unit_id(&emitter.stdout)?;
    let mut reader = UnixStream::connect(node.socket()).await?;
    reader
        .write_all(format!("work results {id} 0\n").as_bytes())
        .await?;
    let mut first = vec![0u8; 64];
    let _ = reader.read(&mut first).await?;
    drop(reader);
    let done = node.wait_state(&id, 2).await?;
    let all = node.raw(format!("work results {id}\n").as_bytes()).await?;
    let text = String::from_utf8(all)?;
    let body = text
        .split_once("Streaming results for work unit ")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let body = body.split_once('\n').map(|(_, b)| b).unwrap_or_default();
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    assert_eq!(body, expected);
    assert_eq!(done["StdoutSize"], expected.len());

    // Path traversal in unit IDs is refused.
    let traversal = node.raw(b"work status ../etc\nwork release /etc\n").await?;
    let traversal = String::from_utf8(traversal)?;
    assert!(
        traversal.contains("ERROR: unknown work unit ../etc: \"../etc\" is not a valid unit ID"),
        "{traversal}"
    );
    assert!(
        traversal.contains("ERROR: unknown work unit /etc: "),
        "{traversal}"
    );
    Ok(())
}

#[tokio::test]
async fn running_work_survives_a_daemon_restart() -> Result<()> {
    let node = Node::start().await?;
    let submitted = node
        .ctl(&[
            "work",
            "submit",
            "emit",
            "-n",
            "--",
            "-c",
            "'sleep 2; echo finished after restart'",
        ])
        .await?;
    let id = unit_id(&submitted.stdout)?;
    node.wait_state(&id, 1).await?;
    let pending_dir = node.dir.path().join("data/node-a/Pending9");
    std::fs::create_dir_all(&pending_dir)?;
    std::fs::write(
        pending_dir.join("status"),
        "{\"State\":0,\"Detail\":\"Starting Worker\",\"StdoutSize\":0,\"WorkType\":\"cat\",\"ExtraData\":null}\n",
    )?;
    let node = node.restart().await?;
    let results = node.ctl(&["work", "results", &id]).await?;
    assert_eq!(
        (results.code, results.stdout.as_str()),
        (Some(0), "finished after restart\n"),
        "{results:?}"
    );
    let status = node.status(&id).await?;
    assert_eq!(status["Detail"], "exit status 0");
    let pending = node.status("Pending9").await?;
    assert_eq!(pending["Detail"], "Pending at restart");
    assert_eq!(pending["StateName"], "Failed");
    Ok(())
}

/// The receptorctl suite's access_control node: OpenSSH-format signing keys (which never
/// parse) must not stop the node, and signed types advertise as secure.
#[tokio::test]
async fn access_control_node_starts_with_openssh_keys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("signwork_key");
    let keygen = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&key)
        .status()
        .await
        .context("ssh-keygen is needed (the receptorctl suite uses it too)")?;
    ensure!(keygen.success(), "ssh-keygen failed");
    let d = dir.path().display();
    let yaml = format!(
        r#"---
- node:
    id: node1
    datadir: {d}/data
- log-level: debug
- local-only:
- control-service:
    service: control
    filename: {d}/node1.sock
- work-signing:
    privatekey: {d}/signwork_key
    tokenexpiration: 10h30m
- work-verification:
    publickey: {d}/signwork_key.pub
- work-command:
    workType: signed-echo
    command: bash
    params: "-c \"while read -r line; do echo ${{line^^}}; done\""
    verifysignature: true
- work-command:
    workType: unsigned-echo
    command: bash
    params: "-c \"while read -r line; do echo ${{line^^}}; done\""
"#
    );
    let daemon = Daemon::start_yaml("node1", dir.path(), &yaml).await?;
    daemon.wait_log("control socket listening").await?;
    let socket = dir.path().join("node1.sock");
    let status = crate::harness::status_json(&socket).await?;
    let commands = status["Advertisements"][0]["WorkCommands"].clone();
    assert_eq!(
        commands,
        serde_json::json!([
            {"WorkType": "signed-echo", "Secure": true},
            {"WorkType": "unsigned-echo", "Secure": false}
        ])
    );
    // Unix-socket clients are trusted: no signature needed.
    for work_type in ["signed-echo", "unsigned-echo"] {
        let out = receptorctl(&socket, &["work", "submit", work_type, "-l", "shout", "-f"]).await?;
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "SHOUT\n"),
            "{out:?}"
        );
    }
    Ok(())
}
