//! The daemon's metrics: the work engine's and control front-ends' handles, the Prometheus
//! text rendering of a [`Registry`] snapshot, and the `metrics` entity's HTTP endpoint.
//!
//! One [`Registry`] (the mesh crate's, dependency-free) holds everything: the node registers
//! `receptor_mesh_*`, the work engine `receptor_work_*`, the front-ends
//! `receptor_control_*`. Exporters read it only through [`Registry::snapshot`]; this module's
//! [`render_prometheus`] is one such reader, an OTLP bridge would be another.
//!
//! The endpoint is a deliberately tiny HTTP/1.1 server: `GET <path>` answers the exposition
//! text, anything else 404/405; one request per connection, a bounded request head, a bounded
//! number of connections, and a deadline for each.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use receptor_mesh::metrics::{
    Counter, FamilySnapshot, Gauge, Histogram, HistogramSnapshot, Kind, Registry, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::work::State;

/// Bucket bounds of `receptor_work_unit_duration_seconds`: a tenth of a second to a day.
pub const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// The `state` label of a unit state (Go's names, lower case; `unknown` outside the five).
pub fn state_label(state: State) -> &'static str {
    match state {
        State::PENDING => "pending",
        State::RUNNING => "running",
        State::SUCCEEDED => "succeeded",
        State::FAILED => "failed",
        State::CANCELED => "canceled",
        _ => "unknown",
    }
}

// === work and control handles ===

/// The work engine's counters (the units-by-state gauge is computed from the engine's index
/// when read, so it cannot drift: see `WorkEngine::new`).
#[derive(Debug, Clone)]
pub(crate) struct WorkMetrics {
    submitted: receptor_mesh::metrics::Family<Counter>,
    finished: receptor_mesh::metrics::Family<Counter>,
    durations: receptor_mesh::metrics::Family<Histogram>,
}

impl WorkMetrics {
    pub(crate) fn new(registry: &Registry) -> Self {
        Self {
            submitted: registry.counter_family(
                "receptor_work_units_submitted_total",
                "Work units created by submissions, by work type",
                &["work_type"],
            ),
            finished: registry.counter_family(
                "receptor_work_units_finished_total",
                "Work units that reached a final state (succeeded, failed, canceled), by work type",
                &["work_type", "state"],
            ),
            durations: registry.histogram_family(
                "receptor_work_unit_duration_seconds",
                "Time from submission to a final state, for units submitted since this daemon started",
                &["work_type"],
                DURATION_BUCKETS,
            ),
        }
    }

    pub(crate) fn submitted(&self, work_type: &str) {
        self.submitted.get(&[work_type]).inc();
    }

    /// A unit of `work_type` reached final `state`; `elapsed` since its submission when that
    /// happened in this process.
    pub(crate) fn finished(&self, work_type: &str, state: State, elapsed: Option<Duration>) {
        self.finished.get(&[work_type, state_label(state)]).inc();
        if let Some(elapsed) = elapsed {
            self.durations
                .get(&[work_type])
                .observe(elapsed.as_secs_f64());
        }
    }
}

/// Which control front-end served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// The classic line protocol (Unix socket, TCP or the mesh `control` service).
    Classic,
    /// The gRPC API.
    Grpc,
}

impl Frontend {
    fn as_str(self) -> &'static str {
        match self {
            Frontend::Classic => "classic",
            Frontend::Grpc => "grpc",
        }
    }
}

/// `receptor_control_requests_total{frontend, command}`. Commands are fixed names chosen by
/// the front-ends (never client text), so the label set stays bounded.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    requests: receptor_mesh::metrics::Family<Counter>,
}

impl ControlMetrics {
    /// Registers the family in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            requests: registry.counter_family(
                "receptor_control_requests_total",
                "Control requests, by front-end and command",
                &["frontend", "command"],
            ),
        }
    }

    /// Counts one request.
    pub fn request(&self, frontend: Frontend, command: &'static str) {
        self.requests.get(&[frontend.as_str(), command]).inc();
    }
}

impl Default for ControlMetrics {
    /// Counting into a registry nobody reads.
    fn default() -> Self {
        Self::new(&Registry::new())
    }
}

// === Prometheus text exposition format 0.0.4 ===

/// The `Content-Type` of [`render_prometheus`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders a snapshot in the Prometheus text exposition format 0.0.4: `# HELP` and `# TYPE`
/// per family, one line per series, histograms as `_bucket{le=...}` (cumulative, ending with
/// `le="+Inf"`), `_sum` and `_count`.
pub fn render_prometheus(families: &[FamilySnapshot]) -> String {
    let mut out = String::new();
    for family in families {
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        for series in &family.series {
            match &series.value {
                Value::Counter(v) => {
                    sample(&mut out, &family.name, &series.labels, None, &v.to_string());
                }
                Value::Gauge(v) => {
                    sample(&mut out, &family.name, &series.labels, None, &number(*v))
                }
                Value::Histogram(h) => {
                    let bucket = format!("{}_bucket", family.name);
                    for (bound, count) in &h.buckets {
                        let le = number(*bound);
                        sample(
                            &mut out,
                            &bucket,
                            &series.labels,
                            Some(&le),
                            &count.to_string(),
                        );
                    }
                    let count = h.count.to_string();
                    sample(&mut out, &bucket, &series.labels, Some("+Inf"), &count);
                    let sum = format!("{}_sum", family.name);
                    sample(&mut out, &sum, &series.labels, None, &number(h.sum));
                    let total = format!("{}_count", family.name);
                    sample(&mut out, &total, &series.labels, None, &count);
                }
            }
        }
    }
    out
}

fn sample(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let le = le.map(|le| ("le", le));
        for (key, value) in labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(le)
        {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Help text escapes `\` and newlines.
fn escape_help(help: &str) -> String {
    help.replace('\\', r"\\").replace('\n', r"\n")
}

/// A float as Prometheus writes it: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // Rust's shortest round-trip form: `1`, `0.5`, `1e-7`; all valid Go ParseFloat input.
        format!("{value}")
    }
}

// === the HTTP endpoint ===

/// Default path of the endpoint.
pub const DEFAULT_PATH: &str = "/metrics";
/// Most bytes of a request head we read.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Most connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;
/// Deadline of one whole request (read, render, write).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound `metrics` endpoint.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    path: String,
}

impl MetricsListener {
    /// Binds `addr` (`host:port`); the exposition is served at `path`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: &str, path: &str) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            path: path.to_owned(),
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `registry` until `cancel` fires; requests in progress are aborted with it.
    pub async fn serve(self, registry: Registry, cancel: CancellationToken) {
        let path: Arc<str> = Arc::from(self.path.as_str());
        let mut connections = JoinSet::new();
        loop {
            if connections.len() >= MAX_CONNECTIONS {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    _ = connections.join_next() => continue,
                }
            }
            let stream = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "metrics listener: accept failed");
                        // Typically fd exhaustion: give it a moment instead of spinning.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (registry, path) = (registry.clone(), Arc::clone(&path));
            connections.spawn(async move {
                match tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &registry, &path)).await
                {
                    Ok(Err(error)) => tracing::debug!(%error, "metrics request failed"),
                    Err(_) => tracing::debug!("metrics request timed out"),
                    Ok(Ok(())) => {}
                }
            });
        }
        connections.shutdown().await;
    }
}

/// Answers one request and closes the connection.
async fn handle<S>(mut stream: S, registry: &Registry, path: &str) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_REQUEST_HEAD {
            break false;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&buf[..n]);
    };
    let response = if complete {
        respond(&head, registry, path)
    } else if head.len() > MAX_REQUEST_HEAD {
        reply(
            431,
            "Request Header Fields Too Large",
            "text/plain",
            "request head too large\n",
        )
    } else {
        return Ok(()); // the client went away mid-request
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The full response to a complete request head.
fn respond(head: &[u8], registry: &Registry, path: &str) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return reply(400, "Bad Request", "text/plain", "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return reply(400, "Bad Request", "text/plain", "HTTP/1.x only\n");
    }
    // Scrapers may add a query (`?name[]=...`); we always return everything.
    let target = target.split('?').next().unwrap_or(target);
    if target != path {
        return reply(404, "Not Found", "text/plain", "not found\n");
    }
    match method {
        "GET" => {
            let body = render_prometheus(&registry.snapshot());
            reply(200, "OK", PROMETHEUS_CONTENT_TYPE, &body)
        }
        _ => {
            let mut response = reply(405, "Method Not Allowed", "text/plain", "GET only\n");
            // Insert `Allow` before the blank line that ends the headers.
            let at = response.len() - "GET only\n".len() - 2;
            response.splice(at..at, b"Allow: GET\r\n".iter().copied());
            response
        }
    }
}

fn reply(code: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body.as_bytes());
    response
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;

    #[test]
    fn exposition_matches_golden_text() {
        let registry = Registry::new();
        registry
            .counter("receptor_test_requests_total", "Requests")
            .add(3);
        let labelled = registry.counter_family(
            "receptor_test_labelled_total",
            "Back\\slash and\nnewline in help",
            &["kind", "odd"],
        );
        labelled.get(&["tcp", "a\"b\\c\nd"]).inc();
        registry.gauge("receptor_test_open", "Open").set(-2);
        let h = registry
            .histogram_family("receptor_test_seconds", "Durations", &["t"], &[0.5, 1.0])
            .get(&["x"]);
        h.observe(0.25);
        h.observe(0.75);
        h.observe(4.0);
        registry.counter_family("receptor_test_empty_total", "Nothing yet", &["k"]);

        let golden = r#"# HELP receptor_test_requests_total Requests
# TYPE receptor_test_requests_total counter
receptor_test_requests_total 3
# HELP receptor_test_labelled_total Back\\slash and\nnewline in help
# TYPE receptor_test_labelled_total counter
receptor_test_labelled_total{kind="tcp",odd="a\"b\\c\nd"} 1
# HELP receptor_test_open Open
# TYPE receptor_test_open gauge
receptor_test_open -2
# HELP receptor_test_seconds Durations
# TYPE receptor_test_seconds histogram
receptor_test_seconds_bucket{t="x",le="0.5"} 1
receptor_test_seconds_bucket{t="x",le="1"} 2
receptor_test_seconds_bucket{t="x",le="+Inf"} 3
receptor_test_seconds_sum{t="x"} 5
receptor_test_seconds_count{t="x"} 3
# HELP receptor_test_empty_total Nothing yet
# TYPE receptor_test_empty_total counter
"#;
        assert_eq!(render_prometheus(&registry.snapshot()), golden);
    }

    #[test]
    fn numbers_render_like_prometheus() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.1), "0.1");
        assert_eq!(number(86400.0), "86400");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }

    fn text(response: &[u8]) -> String {
        String::from_utf8_lossy(response).into_owned()
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let registry = Registry::new();
        registry.counter("x_total", "X").inc();
        let ok = text(&respond(
            b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            &registry,
            "/metrics",
        ));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.ends_with("x_total 1\n"), "{ok}");
        let query = text(&respond(
            b"GET /metrics?x=1 HTTP/1.0\r\n\r\n",
            &registry,
            "/metrics",
        ));
        assert!(query.starts_with("HTTP/1.1 200 OK\r\n"), "{query}");
        let missing = text(&respond(
            b"GET /other HTTP/1.1\r\n\r\n",
            &registry,
            "/metrics",
        ));
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = text(&respond(
            b"POST /metrics HTTP/1.1\r\n\r\n",
            &registry,
            "/metrics",
        ));
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET\r\n\r\nGET only\n"), "{post}");
        let garbage = text(&respond(
            b"\x00\xff nonsense\r\n\r\n",
            &registry,
            "/metrics",
        ));
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        let head = text(&respond(
            b"HEAD /metrics HTTP/1.1\r\n\r\n",
            &registry,
            "/metrics",
        ));
        assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    }

    #[tokio::test]
    async fn huge_request_heads_are_refused() -> anyhow::Result<()> {
        let registry = Registry::new();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX: {}",
            "a".repeat(MAX_REQUEST_HEAD * 2)
        );
        client.write_all(huge.as_bytes()).await?;
        handle(server, &registry, "/metrics").await?;
        let mut reply = String::new();
        client.read_to_string(&mut reply).await?;
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
        Ok(())
    }

    #[tokio::test]
    async fn serves_over_tcp() -> anyhow::Result<()> {
        let registry = Registry::new();
        registry.counter("served_total", "Served").add(2);
        let listener = MetricsListener::bind("127.0.0.1:0", "/metrics").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let server = tokio::spawn(listener.serve(registry, cancel.clone()));

        let mut conn = TcpStream::connect(addr).await?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut body)).await??;
        assert!(
            body.contains("\r\n\r\n# HELP served_total Served\n"),
            "{body}"
        );
        assert!(body.ends_with("served_total 2\n"), "{body}");

        // A client that connects and says nothing does not block the next one.
        let _silent = TcpStream::connect(addr).await?;
        let mut conn = TcpStream::connect(addr).await?;
        conn.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await?;
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut reply)).await??;
        assert!(reply.starts_with("HTTP/1.1 404 "), "{reply}");

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), server).await??;
        Ok(())
    }
}
