//! The `metrics` entity: a three-node line (a - b - c) with the Prometheus endpoint on every
//! node, scraped before and after a workload (pings through the middle node, a remote work
//! unit over a mesh stream, gRPC requests, a release), and its counters and gauges checked
//! against what the workload must have done.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    CtlOutput, Daemon, WAIT, receptorctl, rust_receptorctl, status_json, wait_for,
};

/// Every HTTP exchange with the endpoint is bounded by this.
const HTTP: Duration = Duration::from_secs(10);

/// One scrape: `(name, sorted labels) -> value`, plus the declared type of every family.
#[derive(Debug, Default)]
struct Scrape {
    samples: HashMap<(String, BTreeMap<String, String>), f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// The sample `name{labels}`; absent counts as 0 (a labelled series appears on first use).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// The sum over every series of `name` (e.g. all backends).
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }
}

/// Parses the Prometheus text format 0.0.4 strictly enough that a malformed line fails the
/// test: `# HELP`/`# TYPE` comments, `name{k="v",...} value` with escaped label values.
fn parse(text: &str) -> Result<Scrape> {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').context("TYPE without kind")?;
            ensure!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "unexpected type {kind:?}"
            );
            scrape.types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        ensure!(!line.starts_with('#'), "unexpected comment {line:?}");
        let name_end = line
            .find(['{', ' '])
            .with_context(|| format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let end;
            loop {
                // A label name up to `="`.
                let start = match chars.next() {
                    Some((i, '}')) => {
                        end = i;
                        break;
                    }
                    Some((i, _)) => i,
                    None => bail!("unterminated labels in {line:?}"),
                };
                let eq = body[start..]
                    .find("=\"")
                    .with_context(|| format!("bad label in {line:?}"))?;
                let key = body[start..start + eq].to_owned();
                for _ in 0..eq + 1 {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            other => bail!("bad escape {other:?} in {line:?}"),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => value.push(c),
                        None => bail!("unterminated label value in {line:?}"),
                    }
                }
                labels.insert(key, value);
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((i, '}')) => {
                        end = i;
                        break;
                    }
                    other => bail!("expected , or }} but got {other:?} in {line:?}"),
                }
            }
            rest = &body[end + 1..];
        }
        let value = rest
            .strip_prefix(' ')
            .with_context(|| format!("no space before the value in {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .with_context(|| format!("bad value in {line:?}"))?,
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| scrape.types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        ensure!(
            scrape.types.contains_key(family),
            "sample {name} before its # TYPE"
        );
        let previous = scrape.samples.insert((name.to_owned(), labels), value);
        ensure!(previous.is_none(), "duplicate series in {line:?}");
    }
    Ok(scrape)
}

/// `GET path` over HTTP/1.1; returns (status code, headers, body).
async fn http_get(addr: &str, path: &str, method: &str) -> Result<(u16, String, String)> {
    let exchange = async {
        let mut conn = TcpStream::connect(addr).await?;
        conn.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        conn.read_to_string(&mut response).await?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("no end of headers")?;
        let code = head.split(' ').nth(1).context("no status code")?.parse()?;
        anyhow::Ok((code, head.to_owned(), body.to_owned()))
    };
    tokio::time::timeout(HTTP, exchange)
        .await
        .context("metrics endpoint hung")?
}

async fn scrape(addr: &str) -> Result<Scrape> {
    let (code, head, body) = http_get(addr, "/metrics", "GET").await?;
    ensure!(code == 200, "scrape answered {code}: {head}");
    ensure!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse(&body).with_context(|| format!("scraped text:\n{body}"))
}

fn node_yaml(dir: &Path, id: &str, listen: bool, peer: Option<&str>) -> String {
    let d = dir.display();
    let mut yaml = format!(
        "- node:\n    id: {id}\n    datadir: {d}/{id}-data\n\
         - control-service:\n    service: control\n    filename: {d}/{id}.sock\n\
         - work-command:\n    worktype: cat\n    command: cat\n\
         - metrics:\n    listen: 127.0.0.1:0\n"
    );
    if listen {
        yaml.push_str("- tcp-listener:\n    bindaddr: 127.0.0.1\n    port: 0\n");
    }
    if let Some(peer) = peer {
        yaml.push_str(&format!("- tcp-peer:\n    address: {peer}\n"));
    }
    yaml
}

/// The address the daemon's `metrics` endpoint bound to, read from its log.
async fn metrics_addr(daemon: &Daemon) -> Result<String> {
    daemon.wait_log(r"metrics listener bound addr=(\S+)").await
}

fn ok(out: &CtlOutput) -> Result<()> {
    ensure!(out.code == Some(0), "receptorctl failed: {out:?}");
    Ok(())
}

#[tokio::test]
async fn prometheus_endpoint_counts_a_workload() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let a = Daemon::start_yaml("a", d, &node_yaml(d, "a", true, None)).await?;
    let a_addr = a.tcp_listener_addr().await?;
    let b = Daemon::start_yaml("b", d, &node_yaml(d, "b", true, Some(&a_addr))).await?;
    let b_addr = b.tcp_listener_addr().await?;
    let c = Daemon::start_yaml("c", d, &node_yaml(d, "c", false, Some(&b_addr))).await?;
    let (a_metrics, b_metrics, c_metrics) = (
        metrics_addr(&a).await?,
        metrics_addr(&b).await?,
        metrics_addr(&c).await?,
    );
    let a_sock = d.join("a.sock");

    // Wait until a knows c's control service (and so has a route through b).
    wait_for("a to see c", WAIT, || {
        let socket = a_sock.clone();
        async move {
            let status = status_json(&socket).await.ok()?;
            let ads = status["Advertisements"].as_array()?;
            (ads.iter().any(|ad| ad["NodeID"] == "c") && status["RoutingTable"]["c"] == "b")
                .then_some(())
        }
    })
    .await?;

    // Topology gauges.
    let before_a = scrape(&a_metrics).await?;
    let before_b = scrape(&b_metrics).await?;
    let before_c = scrape(&c_metrics).await?;
    assert_eq!(before_a.types["receptor_mesh_connections"], "gauge");
    assert_eq!(
        before_a.types["receptor_mesh_messages_dropped_total"],
        "counter"
    );
    assert_eq!(
        before_a.types["receptor_work_unit_duration_seconds"],
        "histogram"
    );
    assert_eq!(before_a.get("receptor_mesh_connections", &[]), 1.0);
    assert_eq!(before_b.get("receptor_mesh_connections", &[]), 2.0);
    assert_eq!(before_c.get("receptor_mesh_connections", &[]), 1.0);
    assert_eq!(before_a.get("receptor_mesh_routes", &[]), 2.0);
    assert_eq!(before_a.get("receptor_mesh_known_nodes", &[]), 3.0);
    assert!(before_a.get("receptor_mesh_connections_established_total", &[]) >= 1.0);
    assert!(before_a.get("receptor_mesh_routing_updates_sent_total", &[]) >= 1.0);
    assert!(before_a.get("receptor_mesh_routing_updates_received_total", &[]) >= 1.0);
    for state in ["pending", "running", "succeeded", "failed", "canceled"] {
        assert_eq!(
            before_a.get("receptor_work_units", &[("state", state)]),
            0.0,
            "{state}"
        );
    }

    // Workload 1: three pings from a to c, through b.
    let pings = receptorctl(&a_sock, &["ping", "c", "--count", "3", "--delay", "0.1"]).await?;
    ok(&pings)?;
    // Workload 2: a remote unit on c (a dials c's control service: a mesh stream).
    let payload = "hello-metrics";
    let out = receptorctl(
        &a_sock,
        &["work", "submit", "--node", "c", "cat", "-l", payload],
    )
    .await?;
    ok(&out)?;
    let unit = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .map(str::trim)
        .with_context(|| format!("no unit id in {out:?}"))?
        .to_owned();
    let unit_on_a = unit.clone();
    wait_for("the remote unit to succeed", WAIT, || {
        let (socket, unit) = (a_sock.clone(), unit_on_a.clone());
        async move {
            let out = receptorctl(&socket, &["work", "list", "--unit_id", &unit])
                .await
                .ok()?;
            let list: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            (list[&unit]["StateName"] == "Succeeded").then_some(())
        }
    })
    .await
    .with_context(|| format!("logs:\n{}\n{}", a.log(), c.log()))?;
    let results = receptorctl(&a_sock, &["work", "results", &unit]).await?;
    ok(&results)?;
    assert_eq!(results.stdout.trim_end(), payload);
    // Workload 3: gRPC requests through the Rust receptorctl (the `grpc` line upgrade).
    let rust = tokio::process::Command::new(rust_receptorctl()?)
        .arg("--socket")
        .arg(&a_sock)
        .args(["ping", "b", "--count", "2"])
        .output();
    let rust = tokio::time::timeout(WAIT, rust).await??;
    ensure!(rust.status.success(), "rust receptorctl ping: {rust:?}");

    let after_a = scrape(&a_metrics).await?;
    let after_b = scrape(&b_metrics).await?;
    let after_c = scrape(&c_metrics).await?;
    let delta = |before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.get(name, labels) - before.get(name, labels)
    };

    // Control requests, per front-end and command.
    let classic = |command| [("frontend", "classic"), ("command", command)];
    let grpc = |command| [("frontend", "grpc"), ("command", command)];
    let requests = "receptor_control_requests_total";
    assert_eq!(delta(&before_a, &after_a, requests, &classic("ping")), 3.0);
    assert_eq!(delta(&before_a, &after_a, requests, &classic("grpc")), 1.0);
    assert_eq!(delta(&before_a, &after_a, requests, &grpc("ping")), 1.0);
    assert!(delta(&before_a, &after_a, requests, &classic("work_submit")) >= 1.0);
    assert!(delta(&before_a, &after_a, requests, &classic("work_results")) >= 1.0);
    // c served the remote unit through its mesh control service (the classic protocol).
    assert!(delta(&before_c, &after_c, requests, &classic("work_submit")) >= 1.0);

    // Datagrams: b forwarded the pings both ways and the remote unit's QUIC packets.
    assert!(
        delta(
            &before_b,
            &after_b,
            "receptor_mesh_datagrams_forwarded_total",
            &[]
        ) >= 6.0,
        "b forwarded too little"
    );
    assert!(
        delta(
            &before_a,
            &after_a,
            "receptor_mesh_datagrams_delivered_total",
            &[]
        ) >= 3.0
    );
    for (before, after, node) in [(&before_a, &after_a, "a"), (&before_b, &after_b, "b")] {
        for name in [
            "receptor_mesh_backend_messages_sent_total",
            "receptor_mesh_backend_messages_received_total",
            "receptor_mesh_backend_bytes_sent_total",
            "receptor_mesh_backend_bytes_received_total",
        ] {
            let moved = delta(before, after, name, &[("backend", "tcp")]);
            assert!(moved > 0.0, "{name} on {node} did not move");
            assert_eq!(
                after.sum(name),
                after.get(name, &[("backend", "tcp")]),
                "{name}"
            );
        }
    }
    // Nothing was dropped for lack of a route or hops in this healthy mesh.
    for reason in ["no_route", "hop_limit", "firewall", "malformed"] {
        let dropped = "receptor_mesh_messages_dropped_total";
        assert_eq!(after_b.get(dropped, &[("reason", reason)]), 0.0, "{reason}");
    }

    // Streams: a dialed c's control service at least once.
    assert!(
        delta(
            &before_a,
            &after_a,
            "receptor_mesh_streams_opened_total",
            &[]
        ) >= 1.0
    );
    assert!(
        delta(
            &before_c,
            &after_c,
            "receptor_mesh_streams_opened_total",
            &[]
        ) >= 1.0
    );

    // Work: one remote unit on a, one cat unit on c, both succeeded, with a duration.
    let units = |work_type| [("work_type", work_type)];
    let finished = |work_type, state| [("work_type", work_type), ("state", state)];
    assert!(
        delta(
            &before_a,
            &after_a,
            "receptor_work_units_submitted_total",
            &units("remote")
        ) >= 1.0
    );
    assert_eq!(
        delta(
            &before_a,
            &after_a,
            "receptor_work_units_finished_total",
            &finished("remote", "succeeded")
        ),
        1.0
    );
    assert_eq!(
        delta(
            &before_c,
            &after_c,
            "receptor_work_units_finished_total",
            &finished("cat", "succeeded")
        ),
        1.0
    );
    assert_eq!(
        delta(
            &before_c,
            &after_c,
            "receptor_work_unit_duration_seconds_count",
            &units("cat")
        ),
        1.0
    );
    assert_eq!(
        after_c.get(
            "receptor_work_unit_duration_seconds_bucket",
            &[("work_type", "cat"), ("le", "+Inf")]
        ),
        after_c.get("receptor_work_unit_duration_seconds_count", &units("cat"))
    );
    assert_eq!(
        after_a.get("receptor_work_units", &[("state", "succeeded")]),
        1.0
    );
    assert_eq!(
        after_c.get("receptor_work_units", &[("state", "succeeded")]),
        1.0
    );

    // Release on a releases c's unit too: both gauges return to zero.
    let release = receptorctl(&a_sock, &["work", "release", &unit]).await?;
    ok(&release)?;
    ensure!(release.stdout.contains(", released)"), "{release:?}");
    let released_a = scrape(&a_metrics).await?;
    assert_eq!(
        released_a.get("receptor_work_units", &[("state", "succeeded")]),
        0.0
    );
    wait_for("c's unit to be released", WAIT, || {
        let addr = c_metrics.clone();
        async move {
            let now = scrape(&addr).await.ok()?;
            (now.get("receptor_work_units", &[("state", "succeeded")]) == 0.0).then_some(())
        }
    })
    .await?;
    // The counters keep their totals after the release.
    let released_c = scrape(&c_metrics).await?;
    assert_eq!(
        released_c.get(
            "receptor_work_units_finished_total",
            &finished("cat", "succeeded")
        ),
        after_c.get(
            "receptor_work_units_finished_total",
            &finished("cat", "succeeded")
        )
    );

    // The endpoint answers only GET on its path.
    assert_eq!(http_get(&a_metrics, "/other", "GET").await?.0, 404);
    assert_eq!(http_get(&a_metrics, "/metrics", "POST").await?.0, 405);
    Ok(())
}

#[tokio::test]
async fn no_metrics_entity_means_no_listener() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let yaml = format!(
        "- node:\n    id: quiet\n    datadir: {d}/data\n\
         - local-only:\n\
         - control-service:\n    filename: {d}/quiet.sock\n",
        d = d.display()
    );
    let daemon = Daemon::start_yaml("quiet", d, &yaml).await?;
    daemon.wait_log("control socket listening").await?;
    daemon.wait_log("Initialization complete").await?;
    assert!(
        !daemon.log().contains("metrics listener"),
        "{}",
        daemon.log()
    );
    Ok(())
}

/// The expiry of every certificate the node holds is a gauge (Unix seconds), so an operator
/// can alert before a mesh link stops handshaking. The figure is the notAfter of the
/// Go-made certificates in shared/vectors (2027-11-24T20:56:59Z); a `tls-client` without a
/// certificate has no series.
#[tokio::test]
async fn certificate_expiry_is_a_gauge() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors/go-certs");
    let yaml = format!(
        "{}- tls-server:\n    name: srv\n    cert: {certs}/node-a.crt\n    key: {certs}/node-a.key\n\
         - tls-client:\n    name: cli\n    cert: {certs}/node-a.crt\n    key: {certs}/node-a.key\n    rootcas: {certs}/ca.crt\n\
         - tls-client:\n    name: nocert\n    rootcas: {certs}/ca.crt\n",
        node_yaml(d, "node-a", true, None)
    );
    let node = Daemon::start_yaml("node-a", d, &yaml).await?;
    let scrape = scrape(&metrics_addr(&node).await?).await?;
    const NAME: &str = "receptor_tls_certificate_expiry_timestamp_seconds";
    const NOT_AFTER: f64 = 1_827_089_819.0;
    ensure!(
        scrape.types.get(NAME).map(String::as_str) == Some("gauge"),
        "{scrape:#?}"
    );
    ensure!(
        scrape.get(NAME, &[("kind", "server"), ("name", "srv")]) == NOT_AFTER,
        "{scrape:#?}"
    );
    ensure!(
        scrape.get(NAME, &[("kind", "client"), ("name", "cli")]) == NOT_AFTER,
        "{scrape:#?}"
    );
    let series = scrape.samples.keys().filter(|(n, _)| n == NAME).count();
    ensure!(
        series == 2,
        "a certificate-less tls-client has a series: {scrape:#?}"
    );
    Ok(())
}
