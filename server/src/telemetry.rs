//! Logging and OpenTelemetry: the tracing subscriber, OTLP/gRPC export of spans (and the
//! OTLP meter provider), and W3C trace context for work that crosses nodes.
//!
//! Off by default: without a `telemetry` entity and without an OTLP endpoint in the
//! environment, the subscriber is the plain log formatter and no exporter thread exists.
//!
//! # Settings
//! The `telemetry` entity's params win; what it leaves unset comes from the standard
//! variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` (either
//! one also turns export on without the entity), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`
//! (and `_ARG`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`. `OTEL_SDK_DISABLED=true` turns
//! export off even with the entity.
//!
//! # Propagation
//! [`TraceParent`] carries a span's context as a W3C `traceparent`: in the submit request a
//! node sends to the node that runs a remote unit, from a gRPC caller's metadata, and inside
//! a work unit so that its later operations (run, results, release) join the unit's trace.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use receptor_mesh::metrics::{Kind, Registry, Value};
use receptor_mesh::tls::{TlsConfigError, TlsConnector, client_config};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::{Config, LogLevel, TlsClientConfig};
use crate::tls::{TlsLoadError, load_client};

/// How long [`Telemetry::shutdown`] may spend flushing.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);
/// `service.name` when neither the entity nor `OTEL_SERVICE_NAME` sets one.
pub const DEFAULT_SERVICE_NAME: &str = "receptor";
/// The W3C header (and submit-request key) that carries a trace context.
pub const TRACEPARENT: &str = "traceparent";
/// Spans that are exported, whatever the log level: ours, at info and above.
const EXPORT_FILTER: &str = "off,receptor_server=info,receptor_mesh=info";
/// The one span the log shows as context (the mesh node's, `node{node.id=...}`).
const LOGGED_SPAN: &str = "node";
/// The instrumentation scope of our spans and metrics.
const SCOPE: &str = "receptor";

/// Resolved export settings; `None` from [`Settings::resolve`] means telemetry is off.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The collector URL from the entity; `None` lets the exporter read `OTEL_EXPORTER_OTLP_*`.
    pub endpoint: Option<String>,
    /// The `tls-client` for an `https://` endpoint (the configuration checked that both are
    /// set together).
    pub tls: Option<TlsClientConfig>,
    /// `service.name`.
    pub service_name: String,
    /// Ratio of new traces sampled; `None` leaves the sampler to `OTEL_TRACES_SAMPLER`.
    pub sample_ratio: Option<f64>,
    /// This node's ID, a resource attribute (`node.id`) of everything exported.
    pub node_id: String,
}

impl Settings {
    /// Export settings from the configuration and the environment (`env` looks a variable
    /// up), or `None` when telemetry is off.
    pub fn resolve(config: &Config, env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return None;
        }
        let entity = config.telemetry.as_ref();
        let env_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        if entity.is_none() && !env_endpoint {
            return None;
        }
        Some(Self {
            endpoint: entity.and_then(|t| t.endpoint.clone()),
            tls: entity
                .and_then(|t| t.tls.as_deref())
                .and_then(|name| config.tls_clients.iter().find(|c| c.name == name))
                .cloned(),
            service_name: entity
                .and_then(|t| t.service_name.clone())
                .or_else(|| env("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned()),
            sample_ratio: entity.and_then(|t| t.sample_ratio),
            node_id: config.node.id.clone(),
        })
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The OTLP exporter rejected its configuration (a bad endpoint, https without TLS...).
    #[error("cannot build the OTLP exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The `tls-client` for the collector could not be loaded.
    #[error("cannot load the collector's tls-client")]
    Tls(#[from] TlsLoadError),
    /// The TLS settings could not be turned into a client configuration.
    #[error("cannot build the collector's TLS configuration")]
    TlsConfig(#[from] TlsConfigError),
    /// The endpoint is not a URL with a host the TLS check can use.
    #[error("bad collector endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the tracing subscriber")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes what is still buffered.
#[derive(Debug, Default)]
#[must_use = "spans are exported only when flushed: call Telemetry::shutdown"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

/// Installs the global subscriber: logs at `level` to stdout and, with `settings`, spans to
/// the OTLP collector.
///
/// # Panics
/// Never; but with `settings` it must run inside a tokio runtime (the gRPC channel is
/// created there), and that runtime must outlive [`Telemetry::shutdown`].
///
/// # Errors
/// A bad exporter configuration, or a subscriber was already installed.
pub fn init(level: LogLevel, settings: Option<&Settings>) -> Result<Telemetry, InitError> {
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warning => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    // Our crates log at the configured level; dependencies only report warnings and worse.
    let filter = format!("warn,receptor={level},receptor_mesh={level},receptor_server={level}");
    // The log shows the node span as context, never the telemetry spans: logs read as they
    // always did, and with telemetry off no layer wants those spans, so tracing disables
    // their call sites and they cost nothing.
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(std::io::stdout)
        .with_filter(EnvFilter::new(filter).and(filter_fn(|meta| {
            !meta.is_span() || meta.name() == LOGGED_SPAN
        })));
    let mut telemetry = Telemetry::default();
    let spans = match settings {
        None => None,
        Some(settings) => {
            let resource = resource(settings);
            let channel = tls_channel(settings)?;
            let tracer = tracer_provider(settings, channel.clone(), resource.clone())?;
            let meter = meter_provider(settings, channel, resource)?;
            opentelemetry::global::set_meter_provider(meter.clone());
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer.tracer(SCOPE))
                .with_filter(EnvFilter::new(EXPORT_FILTER));
            telemetry = Telemetry {
                tracer: Some(tracer),
                meter: Some(meter),
            };
            Some(layer)
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;
    if let Some(settings) = settings {
        tracing::info!(
            endpoint = settings.endpoint.as_deref().unwrap_or("(from OTEL_EXPORTER_OTLP_*)"),
            service.name = %settings.service_name,
            "telemetry: exporting traces over OTLP/gRPC"
        );
    }
    Ok(telemetry)
}

/// The meter of our metrics: exported over OTLP when telemetry is on, a no-op otherwise.
pub fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter(SCOPE)
}

/// Exports `registry` over OTLP: one asynchronous instrument per family, read through
/// [`Registry::snapshot`] (the same read path as the Prometheus endpoint) each time the
/// periodic reader collects. With telemetry off the global meter is a no-op and the callbacks
/// never run. OpenTelemetry has no asynchronous histogram, so a histogram goes out as two
/// counters, `<name>_count` and `<name>_sum` (its buckets are on the Prometheus endpoint).
pub fn export_metrics(registry: &Registry) {
    let meter = meter();
    for family in registry.snapshot() {
        let name = family.name.clone();
        let read = {
            let registry = registry.clone();
            move |name: &str| {
                registry
                    .snapshot()
                    .into_iter()
                    .find(|f| f.name == name)
                    .map(|f| f.series)
                    .unwrap_or_default()
            }
        };
        match family.kind {
            Kind::Counter => {
                let _ = meter
                    .u64_observable_counter(name.clone())
                    .with_description(family.help)
                    .with_callback(move |observer| {
                        for series in read(&name) {
                            if let Value::Counter(total) = series.value {
                                observer.observe(total, &key_values(&series.labels));
                            }
                        }
                    })
                    .build();
            }
            Kind::Gauge => {
                let _ = meter
                    .f64_observable_gauge(name.clone())
                    .with_description(family.help)
                    .with_callback(move |observer| {
                        for series in read(&name) {
                            if let Value::Gauge(value) = series.value {
                                observer.observe(value, &key_values(&series.labels));
                            }
                        }
                    })
                    .build();
            }
            Kind::Histogram => {
                let count_read = read.clone();
                let count_name = name.clone();
                let _ = meter
                    .u64_observable_counter(format!("{name}_count"))
                    .with_description(format!("{} (observations)", family.help))
                    .with_callback(move |observer| {
                        for series in count_read(&count_name) {
                            if let Value::Histogram(h) = series.value {
                                observer.observe(h.count, &key_values(&series.labels));
                            }
                        }
                    })
                    .build();
                let _ = meter
                    .f64_observable_counter(format!("{name}_sum"))
                    .with_description(format!("{} (sum of observations)", family.help))
                    .with_callback(move |observer| {
                        for series in read(&name) {
                            if let Value::Histogram(h) = series.value {
                                observer.observe(h.sum, &key_values(&series.labels));
                            }
                        }
                    })
                    .build();
            }
        }
    }
}

fn key_values(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect()
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// Flushes and stops the exporters, giving up after `deadline`. Call it outside async
    /// code, while the runtime that [`init`] ran in is still alive: the exports run on it.
    pub fn shutdown(self, deadline: Duration) {
        let Self { tracer, meter } = self;
        if tracer.is_none() && meter.is_none() {
            return;
        }
        // The SDK's own waits are longer than our deadline (the meter's cannot be set), so
        // the flush runs on its own thread and is abandoned when the deadline passes.
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let flush = std::thread::Builder::new()
            .name("telemetry-flush".to_owned())
            .spawn(move || {
                if let Some(tracer) = tracer
                    && let Err(error) = tracer.shutdown_with_timeout(deadline)
                {
                    tracing::warn!(%error, "telemetry: spans not flushed");
                }
                if let Some(meter) = meter
                    && let Err(error) = meter.shutdown()
                {
                    tracing::debug!(%error, "telemetry: metrics not flushed");
                }
                let _ = done.send(());
            });
        match flush {
            Ok(_) => {
                if finished.recv_timeout(deadline).is_err() {
                    tracing::warn!("telemetry: flush did not finish within {deadline:?}");
                }
            }
            Err(error) => tracing::warn!(%error, "telemetry: cannot start the flush"),
        }
    }
}

fn resource(settings: &Settings) -> Resource {
    Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("node.id", settings.node_id.clone()),
            KeyValue::new("service.version", crate::daemon::VERSION),
        ])
        .build()
}

/// The gRPC channel to an `https://` collector: our rustls client settings (roots, client
/// certificate, pins, minimum version) with the host name checked and ALPN `h2`, which gRPC
/// servers require. `None` for plain http, where the exporter builds its own channel.
/// Connects lazily: a collector that is down is retried by the exporter, never fatal.
fn tls_channel(settings: &Settings) -> Result<Option<Channel>, InitError> {
    let (Some(endpoint), Some(tls)) = (&settings.endpoint, &settings.tls) else {
        return Ok(None);
    };
    let bad = |reason: String| InitError::Endpoint {
        endpoint: endpoint.clone(),
        reason,
    };
    let uri: Uri = endpoint.parse().map_err(|e| bad(format!("{e}")))?;
    let host = uri.host().ok_or_else(|| bad("no host".to_owned()))?;
    let port = uri.port_u16().unwrap_or(443);
    // An IPv6 literal comes with its brackets, which a server name does not have.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name =
        ServerName::try_from(host.clone()).map_err(|e| bad(format!("{host:?}: {e}")))?;
    let mut client = client_config(&load_client(tls, &settings.node_id)?)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(client));
    let connect = tower::service_fn(move |_: Uri| {
        let (connector, server_name, host) = (connector.clone(), server_name.clone(), host.clone());
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_shared(endpoint.clone())
        .map_err(|e| bad(format!("{e}")))?
        .connect_with_connector_lazy(connect);
    Ok(Some(channel))
}

/// Points an exporter (spans or metrics) at the collector: the entity's endpoint, and the
/// TLS channel when there is one; what is unset is left to `OTEL_EXPORTER_OTLP_*`.
fn to_collector<B: WithExportConfig + WithTonicConfig>(
    mut exporter: B,
    settings: &Settings,
    channel: Option<Channel>,
) -> B {
    if let Some(endpoint) = &settings.endpoint {
        exporter = exporter.with_endpoint(endpoint.clone());
    }
    if let Some(channel) = channel {
        exporter = exporter.with_channel(channel);
    }
    exporter
}

fn tracer_provider(
    settings: &Settings,
    channel: Option<Channel>,
    resource: Resource,
) -> Result<SdkTracerProvider, InitError> {
    let exporter = to_collector(
        opentelemetry_otlp::SpanExporter::builder().with_tonic(),
        settings,
        channel,
    );
    let mut provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build()?)
        .with_resource(resource);
    if let Some(ratio) = settings.sample_ratio {
        // A remote parent's decision stands, so a trace is never cut in the middle.
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(ratio),
        )));
    }
    Ok(provider.build())
}

fn meter_provider(
    settings: &Settings,
    channel: Option<Channel>,
    resource: Resource,
) -> Result<SdkMeterProvider, InitError> {
    let exporter = to_collector(
        opentelemetry_otlp::MetricExporter::builder().with_tonic(),
        settings,
        channel,
    );
    Ok(SdkMeterProvider::builder()
        .with_periodic_exporter(exporter.build()?)
        .with_resource(resource)
        .build())
}

// === impl TraceParent ===

/// A span's trace context, kept after the span ended so that later spans can join its trace
/// (empty when telemetry is off or the span is not sampled).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceParent(Option<SpanContext>);

impl TraceParent {
    /// The context of `span` (for `Span::current()`: the innermost entered span).
    pub fn of(span: &Span) -> Self {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        Self(span_context.is_valid().then_some(span_context))
    }

    /// Parses a W3C `traceparent` value; an invalid one gives an empty parent.
    pub fn parse(header: &str) -> Self {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), header.to_owned())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        let span_context = context.span().span_context().clone();
        Self(span_context.is_valid().then_some(span_context))
    }

    /// The W3C `traceparent` value, if there is a context.
    pub fn header(&self) -> Option<String> {
        let span_context = self.0.clone()?;
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(
            &Context::new().with_remote_span_context(span_context),
            &mut carrier,
        );
        carrier.remove(TRACEPARENT)
    }

    /// Makes `span` (not yet entered) a child of this context; nothing when empty.
    pub fn adopt(&self, span: &Span) {
        if let Some(span_context) = &self.0 {
            let _ = span.set_parent(Context::new().with_remote_span_context(span_context.clone()));
        }
    }

    /// Whether there is a context.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &str) -> Config {
        match crate::config::from_args(args.split_whitespace().map(str::to_owned)) {
            Ok(crate::config::Invocation::Run(config)) => config,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn off_without_entity_or_endpoint() {
        let c = config("--node id=a");
        assert_eq!(Settings::resolve(&c, env(&[])), None);
        assert_eq!(
            Settings::resolve(&c, env(&[("OTEL_SERVICE_NAME", "x")])),
            None
        );
    }

    #[test]
    fn entity_wins_and_env_fills_the_rest() {
        let c = config("--node id=a --telemetry endpoint=http://127.0.0.1:4317 sampleratio=0.5");
        let s = Settings::resolve(&c, env(&[("OTEL_SERVICE_NAME", "svc")])).expect("on");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(s.service_name, "svc");
        assert_eq!(s.sample_ratio, Some(0.5));
        assert_eq!(s.node_id, "a");
        let c = config("--node id=a --telemetry servicename=mine");
        let s = Settings::resolve(&c, env(&[("OTEL_SERVICE_NAME", "svc")])).expect("on");
        assert_eq!(s.service_name, "mine");
        assert_eq!(s.endpoint, None);
    }

    #[test]
    fn env_endpoint_turns_export_on_and_sdk_disabled_off() {
        let c = config("--node id=a");
        let s = Settings::resolve(&c, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4317")]))
            .expect("on");
        assert_eq!(s.service_name, DEFAULT_SERVICE_NAME);
        assert_eq!(s.endpoint, None, "the exporter reads the variable itself");
        let c = config("--node id=a --telemetry endpoint=http://h:4317");
        assert_eq!(
            Settings::resolve(&c, env(&[("OTEL_SDK_DISABLED", "TRUE")])),
            None
        );
    }

    #[test]
    fn entity_params_are_checked() {
        let problems =
            |args: &str| match crate::config::from_args(args.split_whitespace().map(str::to_owned))
            {
                Err(e) => e
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                Ok(_) => panic!("accepted {args}"),
            };
        let p = problems("--node id=a --telemetry endpoint=h:4317 sampleratio=2");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("http://"), "{p:?}");
        assert!(p[1].contains("between 0 and 1"), "{p:?}");
        // TLS: https needs a tls-client, a tls-client needs https, and it must exist.
        let p = problems("--node id=a --telemetry endpoint=https://h:4317");
        assert!(p.len() == 1 && p[0].contains("with tls set"), "{p:?}");
        let p = problems("--node id=a --tls-client name=c --telemetry endpoint=http://h:1 tls=c");
        assert!(
            p.len() == 1 && p[0].contains("must be an https://"),
            "{p:?}"
        );
        let p = problems("--node id=a --tls-client name=c --telemetry tls=c");
        assert!(p.len() == 1 && p[0].contains("needs an https://"), "{p:?}");
        let p = problems("--node id=a --telemetry endpoint=https://h:1 tls=nope");
        assert!(
            p.len() == 1 && p[0].contains("no tls-client named nope"),
            "{p:?}"
        );
        let c = config("--node id=a --tls-client name=c --telemetry endpoint=https://h:1 tls=c");
        let s = Settings::resolve(&c, env(&[])).expect("on");
        assert_eq!(s.tls.map(|t| t.name).as_deref(), Some("c"));
    }

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(header);
        assert!(!parent.is_empty());
        assert_eq!(parent.header().as_deref(), Some(header));
        assert!(TraceParent::parse("00-zz-00f067aa0ba902b7-01").is_empty());
        assert_eq!(TraceParent::default().header(), None);
    }

    #[test]
    fn no_context_without_an_exporting_subscriber() {
        // No otel layer is installed in unit tests: spans have no trace context.
        let span = tracing::info_span!("x");
        assert!(TraceParent::of(&span).is_empty());
    }
}
