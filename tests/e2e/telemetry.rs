//! OpenTelemetry traces (issue 7): real `receptor` processes export spans over OTLP/gRPC to a
//! real collector (`otlp_collector.py`: PyPI `grpcio` + `opentelemetry-proto`). A remote
//! unit's spans form one trace across the nodes, a gRPC caller's `traceparent` is the parent
//! of its request's spans, and without telemetry no exporter runs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail, ensure};
use receptor_proto::v1 as pb;
use receptor_proto::v1::work_client::WorkClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{Daemon, WAIT, cert_tool, receptorctl, wait_for};
use crate::remote::{node_yaml, socket, unit_id, unit_status, wait_sees, wait_state};

/// The name prefix of the OpenTelemetry SDK's exporter threads (the batch span processor
/// and the periodic metric reader), as the kernel shows it (15 characters at most).
const EXPORTER_THREAD: &str = "OpenTelemetry";

/// One span as the collector wrote it.
#[derive(Debug, Clone)]
struct Span {
    node: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: serde_json::Value,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(serde_json::Value::as_str)
    }
}

/// The OTLP receiver, killed on drop.
struct Collector {
    _child: Child,
    port: u16,
    file: PathBuf,
}

impl Collector {
    async fn start(dir: &Path) -> Result<Self> {
        Self::spawn(dir, &[]).await
    }

    /// A collector serving TLS with `cert` and `key`.
    async fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Result<Self> {
        Self::spawn(dir, &[cert, key]).await
    }

    async fn spawn(dir: &Path, tls: &[&Path]) -> Result<Self> {
        let python = match std::env::var_os("RECEPTOR_TEST_VENV") {
            Some(dir) => PathBuf::from(dir).join("python"),
            None => bail!("RECEPTOR_TEST_VENV is not set: run the tests with scripts/test"),
        };
        let file = dir.join("spans.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/otlp_collector.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(&file)
            .args(tls)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the OTLP collector")?;
        let stdout = child.stdout.take().context("collector stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .context("the collector did not start")??
            .context("the collector exited (is opentelemetry-proto installed?)")?;
        let port = line
            .strip_prefix("listening on ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("unexpected collector output {line:?}"))?;
        Ok(Self {
            _child: child,
            port,
            file,
        })
    }

    /// The `telemetry` entity that sends a node's spans here.
    fn entity(&self) -> String {
        format!(
            "- telemetry:\n    endpoint: http://127.0.0.1:{}\n    servicename: receptor-e2e\n",
            self.port
        )
    }

    /// Every metric data point received so far: `(node, name, attributes, value)`.
    fn metric_points(&self) -> Result<Vec<(String, String, serde_json::Value, f64)>> {
        let mut file = self.file.clone().into_os_string();
        file.push(".metrics");
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)?;
                Ok((
                    v["node"].as_str().unwrap_or_default().to_owned(),
                    v["name"].as_str().unwrap_or_default().to_owned(),
                    v["attributes"].clone(),
                    v["value"].as_f64().context("value")?,
                ))
            })
            .collect()
    }

    /// Every span received so far.
    fn spans(&self) -> Result<Vec<Span>> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)?;
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                Ok(Span {
                    node: s("node"),
                    name: s("name"),
                    trace_id: s("trace_id"),
                    span_id: s("span_id"),
                    parent_span_id: s("parent_span_id"),
                    attributes: v["attributes"].clone(),
                })
            })
            .collect()
    }
}

/// Names of the threads of process `pid`.
fn threads(pid: u32) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let comm = std::fs::read_to_string(task?.path().join("comm")).unwrap_or_default();
        names.push(comm.trim().to_owned());
    }
    Ok(names)
}

/// Stops a daemon with SIGTERM (its telemetry flushes on the way out) and checks it exited
/// cleanly.
async fn stop(daemon: Daemon, name: &str) -> Result<()> {
    let log = daemon.log();
    let status = daemon.terminate().await?;
    ensure!(status.success(), "{name} exited with {status}:\n{log}");
    Ok(())
}

/// Checks that `trace` is one tree: one root, and every other span's parent received.
fn check_tree(trace: &[Span]) -> Result<()> {
    let ids: BTreeSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&Span> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    ensure!(roots.len() == 1, "expected one root, got {roots:#?}");
    for span in trace {
        ensure!(
            span.parent_span_id.is_empty() || ids.contains(span.parent_span_id.as_str()),
            "the parent of {span:?} was not received"
        );
    }
    Ok(())
}

fn find<'a>(trace: &'a [Span], node: &str, name: &str) -> Result<&'a Span> {
    trace
        .iter()
        .find(|s| s.node == node && s.name == name)
        .with_context(|| format!("no {name} span from {node} in {trace:#?}"))
}

/// A 3-node line a - b - c (b dials both), all exporting: a unit submitted on a runs on c,
/// two hops away. Its spans on a and c form one trace: c's `work.unit` is a child of a's
/// `work.transfer` (the submit request carried a's `traceparent`), and everything else hangs
/// off the two `work.unit` spans. b only relays QUIC datagrams: the mesh wire protocol (Go's)
/// has no field for a trace context, and a span per relayed packet would cost too much, so
/// b exports spans of its own (its sessions, routing) but none in the unit's trace.
#[tokio::test]
async fn a_remote_unit_over_two_hops_is_one_trace_across_the_nodes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let collector = Collector::start(d).await?;
    let entity = collector.entity();
    let a = Daemon::start_yaml("node-a", d, &node_yaml(d, "node-a", true, &[], &entity)).await?;
    let c = Daemon::start_yaml("node-c", d, &node_yaml(d, "node-c", true, &[], &entity)).await?;
    let (a_addr, c_addr) = (a.tcp_listener_addr().await?, c.tcp_listener_addr().await?);
    let b_yaml = node_yaml(d, "node-b", false, &[&a_addr, &c_addr], &entity);
    let b = Daemon::start_yaml("node-b", d, &b_yaml).await?;
    let (a_sock, c_sock) = (socket(d, "node-a"), socket(d, "node-c"));
    wait_sees(&a_sock, "node-c").await?;

    let out = receptorctl(
        &a_sock,
        &["work", "submit", "cat", "--node", "node-c", "-l", "traced"],
    )
    .await?;
    ensure!(out.code == Some(0), "{out:?}");
    let unit = unit_id(&out)?;
    let status = wait_state(&a_sock, &unit, "Succeeded", WAIT).await?;
    let remote_unit = status["ExtraData"]["RemoteUnitID"]
        .as_str()
        .context("remote unit id")?
        .to_owned();
    // The trace context is not a work parameter on either node.
    ensure!(
        !status.to_string().contains("traceparent"),
        "traceparent leaked into {status}"
    );
    let remote_status = unit_status(&c_sock, &remote_unit).await?;
    ensure!(
        !remote_status.to_string().contains("traceparent"),
        "traceparent leaked into {remote_status}"
    );
    let results = receptorctl(&a_sock, &["work", "results", &unit]).await?;
    ensure!(results.stdout.trim_end() == "traced", "{results:?}");
    let release = receptorctl(&a_sock, &["work", "release", &unit]).await?;
    ensure!(release.code == Some(0), "{release:?}");
    wait_for("the remote unit to be released", WAIT, || async {
        unit_status(&c_sock, &remote_unit)
            .await
            .map_or(true, |s| s.is_null())
            .then_some(())
    })
    .await?;

    for (daemon, name) in [(a, "node-a"), (b, "node-b"), (c, "node-c")] {
        stop(daemon, name).await?;
    }

    let spans = collector.spans()?;
    let a_unit = spans
        .iter()
        .find(|s| s.name == "work.unit" && s.attr("work.unit_id") == Some(unit.as_str()))
        .with_context(|| format!("no work.unit span for {unit} in {spans:#?}"))?;
    let trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == a_unit.trace_id)
        .cloned()
        .collect();
    check_tree(&trace)?;
    let nodes: BTreeSet<&str> = trace.iter().map(|s| s.node.as_str()).collect();
    ensure!(
        nodes == BTreeSet::from(["node-a", "node-c"]),
        "nodes in the trace: {nodes:?}"
    );
    // b exported (its sessions) but is in no unit trace.
    ensure!(
        spans
            .iter()
            .any(|s| s.node == "node-b" && s.name == "mesh.session"),
        "no session span from node-b"
    );

    // Submit on a: the control request, the unit, its transfer to c.
    let a_request = find(&trace, "node-a", "control.request")?;
    ensure!(a_request.attr("control.command") == Some("work_submit"));
    ensure!(a_unit.parent_span_id == a_request.span_id, "{a_unit:?}");
    ensure!(a_unit.attr("work.type") == Some("cat") && a_unit.attr("work.node") == Some("node-c"));
    let transfer = find(&trace, "node-a", "work.transfer")?;
    ensure!(transfer.attr("peer.id") == Some("node-c"), "{transfer:?}");
    ensure!(
        trace.iter().any(|s| s.node == "node-a"
            && s.name == "mesh.stream.dial"
            && s.parent_span_id == transfer.span_id
            && s.attr("peer.id") == Some("node-c")),
        "no dial under the transfer"
    );
    // On c: the unit is a child of a's transfer; it ran and was released in the same trace.
    let c_unit = trace
        .iter()
        .find(|s| s.node == "node-c" && s.name == "work.unit")
        .context("no work.unit on node-c")?;
    ensure!(c_unit.parent_span_id == transfer.span_id, "{c_unit:?}");
    ensure!(c_unit.attr("work.unit_id") == Some(remote_unit.as_str()));
    let c_run = find(&trace, "node-c", "work.run")?;
    ensure!(
        c_run.parent_span_id == c_unit.span_id && c_run.attr("work.state") == Some("Succeeded")
    );
    for name in ["work.results", "work.release"] {
        ensure!(find(&trace, "node-c", name)?.parent_span_id == c_unit.span_id);
    }
    // Back on a: the remote unit's monitor, the fetch of its results, the release.
    let a_run = find(&trace, "node-a", "work.run")?;
    ensure!(a_run.parent_span_id == a_unit.span_id);
    ensure!(find(&trace, "node-a", "work.fetch")?.parent_span_id == a_run.span_id);
    for name in ["work.results", "work.release"] {
        ensure!(find(&trace, "node-a", name)?.parent_span_id == a_unit.span_id);
    }
    // The mesh sessions are roots of their own traces, with the peer and backend recorded.
    let sessions: Vec<&Span> = spans.iter().filter(|s| s.name == "mesh.session").collect();
    ensure!(sessions.len() >= 4, "sessions: {sessions:#?}");
    for session in &sessions {
        ensure!(session.parent_span_id.is_empty(), "{session:?}");
        ensure!(session.attr("backend.kind") == Some("tcp"), "{session:?}");
        ensure!(session.attr("peer.id").is_some(), "{session:?}");
    }
    Ok(())
}

/// A gRPC `Submit` with `traceparent` metadata: the request's span continues the caller's
/// trace, and the unit's spans hang under it.
#[tokio::test]
async fn a_grpc_callers_traceparent_is_the_parent_of_the_request_and_metrics_export() -> Result<()>
{
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let collector = Collector::start(d).await?;
    let extra = format!(
        "{}- grpc-service:\n    filename: {}/g.sock\n",
        collector.entity(),
        d.display()
    );
    let node = Daemon::start_yaml("node-g", d, &node_yaml(d, "node-g", true, &[], &extra)).await?;
    node.wait_log("grpc socket listening").await?;
    let channel = crate::grpc::unix_channel(d.join("g.sock")).await?;
    let messages = vec![
        pb::SubmitRequest {
            request: Some(pb::submit_request::Request::Header(pb::SubmitHeader {
                work_type: "cat".to_owned(),
                ..Default::default()
            })),
        },
        pb::SubmitRequest {
            request: Some(pb::submit_request::Request::Payload(b"hi".to_vec())),
        },
    ];
    let mut request = tonic::Request::new(futures_util::stream::iter(messages));
    request
        .metadata_mut()
        .insert("traceparent", format!("00-{TRACE}-{CALLER}-01").parse()?);
    let submitted = tokio::time::timeout(WAIT, WorkClient::new(channel).submit(request))
        .await
        .context("submit timed out")??
        .into_inner();
    let unit = submitted.unit.context("unit")?.unit_id;
    wait_state(&socket(d, "node-g"), &unit, "Succeeded", WAIT).await?;
    stop(node, "node-g").await?;

    let spans = collector.spans()?;
    let trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == TRACE)
        .cloned()
        .collect();
    let request = trace
        .iter()
        .find(|s| s.name == "grpc.request")
        .with_context(|| format!("no grpc.request in the caller's trace: {spans:#?}"))?;
    ensure!(request.parent_span_id == CALLER, "{request:?}");
    ensure!(
        request.attr("rpc.method") == Some("/receptor.v1.Work/Submit"),
        "{request:?}"
    );
    let unit_span = find(&trace, "node-g", "work.unit")?;
    ensure!(unit_span.parent_span_id == request.span_id, "{unit_span:?}");
    ensure!(unit_span.attr("work.unit_id") == Some(unit.as_str()));
    ensure!(find(&trace, "node-g", "work.run")?.parent_span_id == unit_span.span_id);
    // Apart from the caller's span (not ours), the trace is one tree under the request.
    let mut ours = trace.clone();
    for span in &mut ours {
        if span.span_id == request.span_id {
            span.parent_span_id.clear();
        }
    }
    check_tree(&ours)?;

    // The node's metrics went to the same collector (flushed at shutdown): the registry that
    // serves the Prometheus endpoint, read through the OTLP bridge.
    let points = collector.metric_points()?;
    let latest = |name: &str, attrs: &[(&str, &str)]| {
        points
            .iter()
            .filter(|(node, n, a, _)| {
                node == "node-g" && n == name && attrs.iter().all(|(k, v)| a[*k] == *v)
            })
            .map(|p| p.3)
            .fold(None, |max: Option<f64>, v| {
                Some(max.map_or(v, |m| m.max(v)))
            })
    };
    ensure!(
        latest("receptor_control_requests_total", &[("frontend", "grpc")]) >= Some(1.0),
        "no gRPC request counted over OTLP: {points:#?}"
    );
    ensure!(
        latest(
            "receptor_work_units_finished_total",
            &[("work_type", "cat"), ("state", "succeeded")]
        ) == Some(1.0),
        "the finished unit is not counted over OTLP: {points:#?}"
    );
    ensure!(
        latest(
            "receptor_work_unit_duration_seconds_count",
            &[("work_type", "cat")]
        ) == Some(1.0),
        "the unit's duration is not exported: {points:#?}"
    );
    ensure!(
        latest("receptor_mesh_known_nodes", &[]) == Some(1.0),
        "gauges are not exported: {points:#?}"
    );
    Ok(())
}

/// Telemetry is off by default: no exporter thread, nothing said about it. The same check on
/// a node with telemetry on finds the exporter threads (the check can fail).
#[tokio::test]
async fn without_telemetry_no_exporter_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let collector = Collector::start(d).await?;
    let off = Daemon::start_yaml("node-off", d, &node_yaml(d, "node-off", true, &[], "")).await?;
    let on = Daemon::start_yaml(
        "node-on",
        d,
        &node_yaml(d, "node-on", true, &[], &collector.entity()),
    )
    .await?;
    for daemon in [&off, &on] {
        daemon.wait_log("control socket listening").await?;
    }
    let on_pid = on.pid().context("node-on exited")?;
    let exporters = wait_for("node-on's exporter threads", WAIT, || async {
        let names = threads(on_pid).ok()?;
        let exporters: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with(EXPORTER_THREAD))
            .collect();
        (exporters.len() >= 2).then_some(exporters)
    })
    .await?;
    ensure!(exporters.len() == 2, "{exporters:?}");
    ensure!(on.log().contains("telemetry: exporting traces"));

    let off_pid = off.pid().context("node-off exited")?;
    let names = threads(off_pid)?;
    ensure!(names.len() > 1, "cannot see node-off's threads: {names:?}");
    let exporters: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(EXPORTER_THREAD))
        .collect();
    ensure!(
        exporters.is_empty(),
        "exporter threads without telemetry: {exporters:?}"
    );
    ensure!(!off.log().contains("telemetry"), "{}", off.log());
    // And nothing reached the collector from it.
    stop(off, "node-off").await?;
    stop(on, "node-on").await?;
    let spans = collector.spans()?;
    let by_node: HashMap<&str, usize> = spans.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.node.as_str()).or_default() += 1;
        m
    });
    ensure!(!by_node.contains_key("node-off"), "{by_node:?}");
    ensure!(
        by_node.get("node-on").is_some_and(|n| *n > 0),
        "{by_node:?}"
    );
    Ok(())
}

/// Secrets never reach a log or a span, even at debug level with every span exported: not the
/// work-signing private key, not the signed token (a JWT, which always starts `eyJ`) that
/// travels with each signed remote submission, not a `secret_*` work parameter.
#[tokio::test]
async fn secrets_never_reach_logs_or_spans() -> Result<()> {
    const SECRET: &str = "S3cr3t-V4lue-never-logged";
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("server/src/work/testdata");
    let private_key = testdata.join("signing-pkcs1.pem");
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let collector = Collector::start(d).await?;
    let debug = |yaml: String| yaml.replace("- log-level: info", "- log-level: debug");
    let c_extra = format!(
        "{}- work-verification:\n    publickey: {}\n\
         - work-command:\n    worktype: signed-cat\n    command: cat\n    verifysignature: true\n",
        collector.entity(),
        testdata.join("signing-public.pem").display()
    );
    let c = Daemon::start_yaml(
        "node-c",
        d,
        &debug(node_yaml(d, "node-c", true, &[], &c_extra)),
    )
    .await?;
    let c_addr = c.tcp_listener_addr().await?;
    let a_extra = format!(
        "{}- work-signing:\n    privatekey: {}\n    tokenexpiration: 10m\n",
        collector.entity(),
        private_key.display()
    );
    let a = Daemon::start_yaml(
        "node-a",
        d,
        &debug(node_yaml(d, "node-a", false, &[&c_addr], &a_extra)),
    )
    .await?;
    let a_sock = socket(d, "node-a");
    wait_sees(&a_sock, "node-c").await?;

    // A signed remote unit: the token is made on a and checked on c.
    let signed = receptorctl(
        &a_sock,
        &[
            "work",
            "submit",
            "signed-cat",
            "--node",
            "node-c",
            "--signwork",
            "-l",
            "signed",
            "-f",
        ],
    )
    .await?;
    ensure!(signed.code == Some(0), "{signed:?}");
    ensure!(signed.stdout.contains("signed"), "{signed:?}");
    // A secret parameter (refused without TLS to the remote node): never echoed.
    let secret = receptorctl(
        &a_sock,
        &[
            "work",
            "submit",
            "cat",
            "--node",
            "node-c",
            "--param",
            &format!("secret_token={SECRET}"),
            "-l",
            "x",
        ],
    )
    .await?;
    ensure!(
        !secret.stderr.contains(SECRET) && !secret.stdout.contains(SECRET),
        "{secret:?}"
    );
    let (a_log, c_log) = (a.log(), c.log());
    ensure!(
        a_log.contains("DEBUG") && c_log.contains("DEBUG"),
        "debug logging is not on, so the check below proves little"
    );
    stop(a, "node-a").await?;
    stop(c, "node-c").await?;

    let spans = std::fs::read_to_string(&collector.file).unwrap_or_default();
    ensure!(
        spans.contains("work.transfer"),
        "the spans did not arrive, so the check below proves nothing"
    );
    let pem = std::fs::read_to_string(&private_key)?;
    let key_lines: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    ensure!(!key_lines.is_empty());
    for (what, text) in [
        ("node-a log", &a_log),
        ("node-c log", &c_log),
        ("spans", &spans),
    ] {
        ensure!(
            !text.contains(SECRET),
            "the secret parameter is in the {what}"
        );
        ensure!(
            !text.contains("eyJ"),
            "a signed token (JWT) is in the {what}"
        );
        for line in &key_lines {
            ensure!(
                !text.contains(line),
                "private key material is in the {what}"
            );
        }
    }
    Ok(())
}

/// A CA (`<name>-ca.crt`) and a certificate for 127.0.0.1 signed by it (`<name>.crt`, `.key`),
/// made with the daemon's own cert tooling.
async fn ip_certificate(dir: &Path, name: &str) -> Result<()> {
    let (ca, ca_key) = (
        format!("outcert={name}-ca.crt"),
        format!("outkey={name}-ca.key"),
    );
    cert_tool(
        dir,
        &["--cert-init", "commonname=CA", "bits=2048", &ca, &ca_key],
    )
    .await?;
    let (req, key) = (format!("outreq={name}.csr"), format!("outkey={name}.key"));
    let args = ["--cert-makereq", "bits=2048", "commonname=collector"];
    cert_tool(
        dir,
        &[&args[..], &["ipaddress=127.0.0.1", &req, &key]].concat(),
    )
    .await?;
    let sign = [
        format!("req={name}.csr"),
        format!("cacert={name}-ca.crt"),
        format!("cakey={name}-ca.key"),
        format!("outcert={name}.crt"),
        "verify=yes".to_owned(),
    ];
    let sign: Vec<&str> = sign.iter().map(String::as_str).collect();
    cert_tool(dir, &[&["--cert-signreq"][..], &sign].concat()).await
}

/// `endpoint: https://...` with `tls:` exports over TLS, checking the collector's certificate:
/// a node that trusts the collector's CA delivers its spans and metrics; a node that trusts
/// another CA delivers nothing, logs why, and still runs and stops cleanly.
#[tokio::test]
async fn spans_and_metrics_reach_a_tls_collector_that_the_node_trusts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    ip_certificate(d, "collector").await?;
    ip_certificate(d, "other").await?;
    let collector =
        Collector::start_tls(d, &d.join("collector.crt"), &d.join("collector.key")).await?;
    let entity = |ca: &str| {
        format!(
            "- tls-client:\n    name: otlp\n    rootcas: {d}/{ca}-ca.crt\n\
             - telemetry:\n    endpoint: https://127.0.0.1:{port}\n    tls: otlp\n",
            d = d.display(),
            port = collector.port
        )
    };
    let trusted = Daemon::start_yaml(
        "node-t",
        d,
        &node_yaml(d, "node-t", true, &[], &entity("collector")),
    )
    .await?;
    let untrusted = Daemon::start_yaml(
        "node-u",
        d,
        &node_yaml(d, "node-u", true, &[], &entity("other")),
    )
    .await?;
    for (node, name) in [(&trusted, "node-t"), (&untrusted, "node-u")] {
        let out = receptorctl(
            &socket(d, name),
            &["work", "submit", "cat", "-l", "over tls"],
        )
        .await?;
        ensure!(out.code == Some(0), "{out:?}\n{}", node.log());
        wait_state(&socket(d, name), &unit_id(&out)?, "Succeeded", WAIT).await?;
    }
    // The batch exporter sends within 5 s; the untrusted node's attempt fails the handshake,
    // and the log says why.
    untrusted
        .wait_log("export failed.*invalid peer certificate")
        .await?;
    stop(trusted, "node-t").await?;
    stop(untrusted, "node-u").await?;

    let spans = collector.spans()?;
    ensure!(
        spans
            .iter()
            .any(|s| s.node == "node-t" && s.name == "work.unit"),
        "the trusted node's unit span did not arrive: {spans:#?}"
    );
    ensure!(
        collector.metric_points()?.iter().any(|p| p.0 == "node-t"),
        "the trusted node's metrics did not arrive"
    );
    ensure!(
        !spans.iter().any(|s| s.node == "node-u"),
        "a node that does not trust the collector exported to it"
    );
    Ok(())
}

/// A unit's trace outlives a restart: results and release asked of the restarted node join
/// the trace the unit began in (its context is kept in the unit's directory).
#[tokio::test]
async fn a_units_trace_continues_after_the_node_restarts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let collector = Collector::start(d).await?;
    let yaml = node_yaml(d, "node-r", true, &[], &collector.entity());
    let sock = socket(d, "node-r");
    let node = Daemon::start_yaml("node-r", d, &yaml).await?;
    let out = receptorctl(&sock, &["work", "submit", "cat", "--no-payload"]).await?;
    ensure!(out.code == Some(0), "{out:?}");
    let unit = unit_id(&out)?;
    wait_state(&sock, &unit, "Succeeded", WAIT).await?;
    stop(node, "node-r").await?;

    let node = Daemon::start_yaml("node-r", d, &yaml).await?;
    let release = receptorctl(&sock, &["work", "release", &unit]).await?;
    ensure!(release.code == Some(0), "{release:?}\n{}", node.log());
    stop(node, "node-r").await?;

    let spans = collector.spans()?;
    let unit_span = spans
        .iter()
        .find(|s| s.name == "work.unit" && s.attr("work.unit_id") == Some(unit.as_str()))
        .with_context(|| format!("no work.unit span for {unit}: {spans:#?}"))?;
    let release = spans
        .iter()
        .find(|s| s.name == "work.release")
        .with_context(|| format!("no work.release span: {spans:#?}"))?;
    ensure!(
        release.trace_id == unit_span.trace_id && release.parent_span_id == unit_span.span_id,
        "the release after the restart is not in the unit's trace: {release:?} vs {unit_span:?}"
    );
    Ok(())
}
