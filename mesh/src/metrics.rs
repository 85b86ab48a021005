//! A small, dependency-free metrics registry: counters, gauges and histograms.
//!
//! Writers hold cheap handles ([`Counter`], [`Gauge`], [`Histogram`]): an update is one relaxed
//! atomic operation, with no lock and no allocation, so instrumenting the per-message paths of
//! the node costs next to nothing when nobody reads. Handles are looked up (under the
//! registry's lock) once, when a session, a unit or a component is created, never per message.
//!
//! **The single read path is [`Registry::snapshot`]**: it returns plain data
//! ([`FamilySnapshot`]) that every exporter consumes (the daemon's Prometheus text endpoint, an
//! OTLP bridge). Nothing else reads the atomics.
//!
//! Label sets are small and bounded by construction (a backend kind, a drop reason, a configured
//! work type, a control command). As a guard, a family keeps at most
//! [`MAX_SERIES_PER_FAMILY`] label sets; further ones share one series whose labels all read
//! [`OVERFLOW_LABEL`], so a bug cannot grow memory without bound.
//!
//! A registry is an instance, never a global: each node (and each test) can have its own, and
//! several components may share one by cloning it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Most label sets one family holds; more share the overflow series.
pub const MAX_SERIES_PER_FAMILY: usize = 256;
/// The value of every label of the overflow series.
pub const OVERFLOW_LABEL: &str = "_overflow";

/// What kind of metric a family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonically increasing count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations sorted into buckets, with their sum and count.
    Histogram,
}

impl Kind {
    /// The Prometheus/OpenMetrics type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family as read by [`Registry::snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct FamilySnapshot {
    /// Metric name, e.g. `receptor_mesh_connections`.
    pub name: String,
    /// One-line description.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Every label set, sorted by label values.
    pub series: Vec<SeriesSnapshot>,
}

/// One label set of a family and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSnapshot {
    /// `(label name, label value)` pairs in the family's label order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: Value,
}

/// A series' value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter's total.
    Counter(u64),
    /// A gauge's current value.
    Gauge(f64),
    /// A histogram's buckets, sum and count.
    Histogram(HistogramSnapshot),
}

/// A histogram as read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)` for each finite bound, ascending. The `+Inf` bucket is
    /// `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

// === handles ===

/// A monotonically increasing counter. Cloning shares the count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// A counter not registered anywhere (for components run without a registry).
    pub fn detached() -> Self {
        Self::default()
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current total.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down. Cloning shares the value.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// A gauge not registered anywhere.
    pub fn detached() -> Self {
        Self::default()
    }

    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Sets the value from a count.
    pub fn set_count(&self, count: usize) {
        self.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Adds one now and subtracts it again when the returned guard is dropped: for "things
    /// open right now" gauges, which then cannot drift whichever way the thing ends.
    pub fn track(&self) -> GaugeGuard {
        self.inc();
        GaugeGuard(self.clone())
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Holds one unit of a [`Gauge`]; see [`Gauge::track`].
#[derive(Debug)]
#[must_use = "the gauge goes down again when the guard is dropped"]
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug)]
struct HistogramCore {
    /// Finite upper bounds, ascending.
    bounds: Arc<[f64]>,
    /// Non-cumulative counts, one per bound plus the `+Inf` bucket.
    buckets: Box<[AtomicU64]>,
    /// Sum of observations, as `f64` bits.
    sum: AtomicU64,
    count: AtomicU64,
}

/// Observations sorted into fixed buckets. Cloning shares the data.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCore>);

impl Histogram {
    fn new(bounds: Arc<[f64]>) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistogramCore {
            bounds,
            buckets,
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }))
    }

    /// A histogram not registered anywhere.
    pub fn detached(bounds: &[f64]) -> Self {
        Self::new(sorted_bounds(bounds))
    }

    /// Records one observation (NaN is ignored).
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let core = &self.0;
        let index = core.bounds.partition_point(|&bound| bound < value);
        if let Some(bucket) = core.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        // A CAS loop on the bits: observations are rare (per unit, not per message).
        let _ = core
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        core.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current buckets, sum and count.
    pub fn get(&self) -> HistogramSnapshot {
        let core = &self.0;
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(core.bounds.len());
        for (bound, bucket) in core.bounds.iter().zip(core.buckets.iter()) {
            cumulative += bucket.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let overflow = core.buckets.last().map_or(0, |b| b.load(Ordering::Relaxed));
        HistogramSnapshot {
            buckets,
            sum: f64::from_bits(core.sum.load(Ordering::Relaxed)),
            // Derived from the buckets so `+Inf` always equals the count in one snapshot.
            count: cumulative + overflow,
        }
    }
}

/// Finite bounds, ascending, without duplicates.
fn sorted_bounds(bounds: &[f64]) -> Arc<[f64]> {
    let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    bounds.into()
}

// === families ===

#[derive(Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Metric {
    fn value(&self) -> Value {
        match self {
            Metric::Counter(c) => Value::Counter(c.get()),
            Metric::Gauge(g) => Value::Gauge(g.get() as f64),
            Metric::Histogram(h) => Value::Histogram(h.get()),
        }
    }
}

/// Emits one `(label values, value)` pair of a callback gauge.
pub type Emit<'a> = &'a mut dyn FnMut(&[&str], f64);
/// Computes a callback gauge at read time; see [`Registry::gauge_fn`].
pub type GaugeFn = Arc<dyn Fn(Emit<'_>) + Send + Sync>;

enum Source {
    Series(Mutex<BTreeMap<Vec<String>, Metric>>),
    Callback(GaugeFn),
}

struct FamilyCore {
    name: String,
    help: String,
    kind: Kind,
    labels: Vec<String>,
    /// Histogram bounds (empty for other kinds).
    bounds: Arc<[f64]>,
    source: Source,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No section under these locks panics; recover the data if one somehow did.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FamilyCore {
    fn get(&self, values: &[&str]) -> Metric {
        let Source::Series(series) = &self.source else {
            // Callback families have no handles; hand out a detached one.
            return self.fresh();
        };
        let mut series = lock(series);
        let mut key: Vec<String> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, _)| values.get(i).copied().unwrap_or("").to_owned())
            .collect();
        if let Some(metric) = series.get(&key) {
            return metric.clone();
        }
        if series.len() >= MAX_SERIES_PER_FAMILY {
            tracing::warn!(metric = %self.name, "too many label sets; counting in the overflow series");
            key = vec![OVERFLOW_LABEL.to_owned(); self.labels.len()];
        }
        series.entry(key).or_insert_with(|| self.fresh()).clone()
    }

    fn fresh(&self) -> Metric {
        match self.kind {
            Kind::Counter => Metric::Counter(Counter::default()),
            Kind::Gauge => Metric::Gauge(Gauge::default()),
            Kind::Histogram => Metric::Histogram(Histogram::new(Arc::clone(&self.bounds))),
        }
    }

    fn snapshot(&self) -> FamilySnapshot {
        let labelled = |values: &[String]| -> Vec<(String, String)> {
            self.labels
                .iter()
                .cloned()
                .zip(values.iter().cloned())
                .collect()
        };
        let series = match &self.source {
            Source::Series(series) => lock(series)
                .iter()
                .map(|(values, metric)| SeriesSnapshot {
                    labels: labelled(values),
                    value: metric.value(),
                })
                .collect(),
            Source::Callback(collect) => {
                let mut found: BTreeMap<Vec<String>, f64> = BTreeMap::new();
                collect(&mut |values: &[&str], value: f64| {
                    if found.len() < MAX_SERIES_PER_FAMILY {
                        let key = values.iter().map(|v| (*v).to_owned()).collect();
                        found.insert(key, value);
                    }
                });
                found
                    .into_iter()
                    .map(|(values, value)| SeriesSnapshot {
                        labels: labelled(&values),
                        value: Value::Gauge(value),
                    })
                    .collect()
            }
        };
        FamilySnapshot {
            name: self.name.clone(),
            help: self.help.clone(),
            kind: self.kind,
            series,
        }
    }
}

/// A family of counters, gauges or histograms with the same labels; `M` is the handle type.
pub struct Family<M> {
    core: Arc<FamilyCore>,
    _handle: std::marker::PhantomData<fn() -> M>,
}

impl<M> Clone for Family<M> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
            _handle: std::marker::PhantomData,
        }
    }
}

impl<M> fmt::Debug for Family<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.core.name)
            .field("labels", &self.core.labels)
            .finish_non_exhaustive()
    }
}

impl Family<Counter> {
    /// The counter for these label values (created at zero on first use). Takes the
    /// family's lock: look handles up once and keep them, not per event.
    pub fn get(&self, values: &[&str]) -> Counter {
        match self.core.get(values) {
            Metric::Counter(c) => c,
            _ => Counter::detached(),
        }
    }
}

impl Family<Gauge> {
    /// The gauge for these label values (created at zero on first use).
    pub fn get(&self, values: &[&str]) -> Gauge {
        match self.core.get(values) {
            Metric::Gauge(g) => g,
            _ => Gauge::detached(),
        }
    }
}

impl Family<Histogram> {
    /// The histogram for these label values (created empty on first use).
    pub fn get(&self, values: &[&str]) -> Histogram {
        match self.core.get(values) {
            Metric::Histogram(h) => h,
            _ => Histogram::new(Arc::clone(&self.core.bounds)),
        }
    }
}

// === registry ===

/// Where metrics are registered and read. Cloning shares the registry.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<Vec<Arc<FamilyCore>>>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("families", &lock(&self.families).len())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or finds) a family. Registering a name again with the same kind and labels
    /// returns the existing family, so components sharing a registry add up; a conflicting
    /// registration gets a family that is not exported (and a warning), never a panic.
    fn family(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[&str],
        bounds: &[f64],
        callback: Option<GaugeFn>,
    ) -> Arc<FamilyCore> {
        let mut families = lock(&self.families);
        let core = Arc::new(FamilyCore {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            bounds: sorted_bounds(bounds),
            source: match callback {
                Some(f) => Source::Callback(f),
                None => Source::Series(Mutex::new(BTreeMap::new())),
            },
        });
        if let Some(existing) = families.iter().find(|f| f.name == name) {
            let same = existing.kind == kind
                && existing.labels == core.labels
                && existing.bounds == core.bounds
                && matches!(existing.source, Source::Series(_))
                && matches!(core.source, Source::Series(_));
            if same {
                return Arc::clone(existing);
            }
            tracing::warn!(
                metric = name,
                "metric registered twice with different shapes; the second is not exported"
            );
            return core;
        }
        families.push(Arc::clone(&core));
        core
    }

    /// A counter without labels.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        self.counter_family(name, help, &[]).get(&[])
    }

    /// A family of counters labelled by `labels`.
    pub fn counter_family(&self, name: &str, help: &str, labels: &[&str]) -> Family<Counter> {
        Family {
            core: self.family(name, help, Kind::Counter, labels, &[], None),
            _handle: std::marker::PhantomData,
        }
    }

    /// A gauge without labels.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.gauge_family(name, help, &[]).get(&[])
    }

    /// A family of gauges labelled by `labels`.
    pub fn gauge_family(&self, name: &str, help: &str, labels: &[&str]) -> Family<Gauge> {
        Family {
            core: self.family(name, help, Kind::Gauge, labels, &[], None),
            _handle: std::marker::PhantomData,
        }
    }

    /// A family of histograms with the given finite bucket upper bounds (`+Inf` is implied).
    pub fn histogram_family(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        bounds: &[f64],
    ) -> Family<Histogram> {
        Family {
            core: self.family(name, help, Kind::Histogram, labels, bounds, None),
            _handle: std::marker::PhantomData,
        }
    }

    /// A gauge family computed when read: `collect` emits `(label values, value)` pairs.
    /// For values that are cheaper and safer to count from the source of truth at read time
    /// than to maintain on every change (units by state). `collect` runs under no registry
    /// lock but must be quick, and must not call back into this registry.
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        collect: impl Fn(Emit<'_>) + Send + Sync + 'static,
    ) {
        self.family(
            name,
            help,
            Kind::Gauge,
            labels,
            &[],
            Some(Arc::new(collect)),
        );
    }

    /// Reads every family: **the single read path** for all exporters. Families come in
    /// registration order; series are sorted by label values.
    pub fn snapshot(&self) -> Vec<FamilySnapshot> {
        // Copy the list first so callbacks run without the registry lock held.
        let families: Vec<Arc<FamilyCore>> = lock(&self.families).clone();
        families.iter().map(|f| f.snapshot()).collect()
    }
}

// === the node's metrics ===

/// Why the node dropped a message. Each is a label value of
/// `receptor_mesh_messages_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its hops-to-live ran out (`message expired`).
    HopLimit,
    /// No route to the destination node.
    NoRoute,
    /// A firewall rule dropped or rejected it.
    Firewall,
    /// The queue towards a peer was full.
    SessionQueueFull,
    /// The queue of a local service was full.
    ServiceQueueFull,
    /// Addressed to a service nobody listens on here.
    ServiceUnknown,
    /// A data message naming a node hash we do not know.
    UnknownNode,
    /// It could not be decoded (the peer is disconnected).
    Malformed,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 8] = [
        DropReason::HopLimit,
        DropReason::NoRoute,
        DropReason::Firewall,
        DropReason::SessionQueueFull,
        DropReason::ServiceQueueFull,
        DropReason::ServiceUnknown,
        DropReason::UnknownNode,
        DropReason::Malformed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::HopLimit => "hop_limit",
            DropReason::NoRoute => "no_route",
            DropReason::Firewall => "firewall",
            DropReason::SessionQueueFull => "session_queue_full",
            DropReason::ServiceQueueFull => "service_queue_full",
            DropReason::ServiceUnknown => "service_unknown",
            DropReason::UnknownNode => "unknown_node",
            DropReason::Malformed => "malformed",
        }
    }
}

/// Traffic counters of one backend kind (`tcp`, `udp`, `ws`, `memory`).
#[derive(Debug, Clone)]
pub(crate) struct BackendTraffic {
    pub(crate) messages_in: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) bytes_out: Counter,
}

/// The handles the node, its sessions and its streams update.
#[derive(Debug)]
pub(crate) struct MeshMetrics {
    pub(crate) connections: Gauge,
    pub(crate) sessions: Gauge,
    pub(crate) known_nodes: Gauge,
    pub(crate) routes: Gauge,
    pub(crate) connections_established: Counter,
    pub(crate) routing_updates_sent: Counter,
    pub(crate) routing_updates_received: Counter,
    pub(crate) datagrams_delivered: Counter,
    pub(crate) datagrams_forwarded: Counter,
    pub(crate) streams_open: Gauge,
    pub(crate) streams_opened: Counter,
    dropped: [Counter; DropReason::ALL.len()],
    messages_in: Family<Counter>,
    bytes_in: Family<Counter>,
    messages_out: Family<Counter>,
    bytes_out: Family<Counter>,
}

impl MeshMetrics {
    pub(crate) fn new(registry: &Registry) -> Self {
        let dropped_family = registry.counter_family(
            "receptor_mesh_messages_dropped_total",
            "Messages the node dropped, by reason",
            &["reason"],
        );
        let direction = |what: &str, dir: &str, help: &str| {
            registry.counter_family(
                &format!("receptor_mesh_backend_{what}_{dir}_total"),
                help,
                &["backend"],
            )
        };
        Self {
            connections: registry.gauge(
                "receptor_mesh_connections",
                "Established connections to peer nodes",
            ),
            sessions: registry.gauge(
                "receptor_mesh_sessions",
                "Backend sessions, established or still handshaking",
            ),
            known_nodes: registry.gauge(
                "receptor_mesh_known_nodes",
                "Nodes in the link-state database, this one included",
            ),
            routes: registry.gauge("receptor_mesh_routes", "Nodes this node has a route to"),
            connections_established: registry.counter(
                "receptor_mesh_connections_established_total",
                "Connections to peer nodes established",
            ),
            routing_updates_sent: registry.counter(
                "receptor_mesh_routing_updates_sent_total",
                "Routing updates sent to peers (each copy counts)",
            ),
            routing_updates_received: registry.counter(
                "receptor_mesh_routing_updates_received_total",
                "Routing updates received from established peers",
            ),
            datagrams_delivered: registry.counter(
                "receptor_mesh_datagrams_delivered_total",
                "Data messages delivered to a service on this node",
            ),
            datagrams_forwarded: registry.counter(
                "receptor_mesh_datagrams_forwarded_total",
                "Data messages sent on towards another node (originated here or passing through)",
            ),
            streams_open: registry.gauge(
                "receptor_mesh_streams_open",
                "QUIC streams over the mesh open on this node",
            ),
            streams_opened: registry.counter(
                "receptor_mesh_streams_opened_total",
                "QUIC streams over the mesh opened (dialed or accepted)",
            ),
            dropped: DropReason::ALL.map(|reason| dropped_family.get(&[reason.as_str()])),
            messages_in: direction(
                "messages",
                "received",
                "Netceptor messages received, by backend kind",
            ),
            bytes_in: direction(
                "bytes",
                "received",
                "Bytes of messages received, by backend kind",
            ),
            messages_out: direction(
                "messages",
                "sent",
                "Netceptor messages queued to peers, by backend kind",
            ),
            bytes_out: direction(
                "bytes",
                "sent",
                "Bytes of messages queued to peers, by backend kind",
            ),
        }
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        if let Some(counter) = self.dropped.get(reason as usize) {
            counter.inc();
        }
    }

    /// The traffic counters of a backend kind (looked up once per session).
    pub(crate) fn backend(&self, kind: &str) -> BackendTraffic {
        BackendTraffic {
            messages_in: self.messages_in.get(&[kind]),
            bytes_in: self.bytes_in.get(&[kind]),
            messages_out: self.messages_out.get(&[kind]),
            bytes_out: self.bytes_out.get(&[kind]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family<'a>(snapshot: &'a [FamilySnapshot], name: &str) -> &'a FamilySnapshot {
        snapshot
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn counters_and_gauges_read_back_through_snapshot() {
        let registry = Registry::new();
        let hits = registry.counter("hits_total", "Hits");
        hits.inc();
        hits.add(4);
        let by_kind = registry.counter_family("bytes_total", "Bytes", &["backend"]);
        by_kind.get(&["udp"]).add(7);
        by_kind.get(&["tcp"]).add(3);
        by_kind.get(&["tcp"]).add(2); // the same series again
        let open = registry.gauge("open", "Open things");
        let guard = open.track();
        open.inc();
        open.dec();

        let snapshot = registry.snapshot();
        assert_eq!(
            family(&snapshot, "hits_total").series,
            vec![SeriesSnapshot {
                labels: vec![],
                value: Value::Counter(5)
            }]
        );
        let bytes = family(&snapshot, "bytes_total");
        assert_eq!(bytes.kind, Kind::Counter);
        assert_eq!(
            bytes.series,
            vec![
                SeriesSnapshot {
                    labels: vec![("backend".into(), "tcp".into())],
                    value: Value::Counter(5)
                },
                SeriesSnapshot {
                    labels: vec![("backend".into(), "udp".into())],
                    value: Value::Counter(7)
                },
            ]
        );
        assert_eq!(family(&snapshot, "open").series[0].value, Value::Gauge(1.0));
        drop(guard);
        assert_eq!(
            family(&registry.snapshot(), "open").series[0].value,
            Value::Gauge(0.0)
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let registry = Registry::new();
        let h = registry
            .histogram_family("d_seconds", "Durations", &["t"], &[1.0, 0.1, 10.0, 1.0])
            .get(&["x"]);
        for v in [0.05, 0.1, 0.5, 3.0, 100.0, f64::NAN] {
            h.observe(v);
        }
        let snapshot = registry.snapshot();
        let Value::Histogram(read) = &family(&snapshot, "d_seconds").series[0].value else {
            panic!("not a histogram");
        };
        // Bounds sorted and deduplicated; `le` is inclusive (0.1 lands in the 0.1 bucket).
        assert_eq!(read.buckets, vec![(0.1, 2), (1.0, 3), (10.0, 4)]);
        assert_eq!(read.count, 5);
        assert!((read.sum - 103.65).abs() < 1e-9, "{}", read.sum);
    }

    #[test]
    fn same_name_shares_a_family_and_conflicts_are_not_exported() {
        let registry = Registry::new();
        let a = registry.counter_family("c_total", "C", &["k"]);
        let b = registry.counter_family("c_total", "C", &["k"]);
        a.get(&["x"]).inc();
        b.get(&["x"]).inc();
        let clash = registry.gauge("c_total", "C");
        clash.set(99);
        let snapshot = registry.snapshot();
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot[0].series[0].value, Value::Counter(2));
    }

    #[test]
    fn label_sets_are_capped() {
        let registry = Registry::new();
        let family_handle = registry.counter_family("many_total", "Many", &["id"]);
        for i in 0..MAX_SERIES_PER_FAMILY + 10 {
            family_handle.get(&[&i.to_string()]).inc();
        }
        let snapshot = registry.snapshot();
        let series = &family(&snapshot, "many_total").series;
        assert_eq!(series.len(), MAX_SERIES_PER_FAMILY + 1);
        let overflow = series
            .iter()
            .find(|s| s.labels[0].1 == OVERFLOW_LABEL)
            .expect("overflow series");
        assert_eq!(overflow.value, Value::Counter(10));
    }

    #[test]
    fn callback_gauges_are_computed_at_read_time() {
        let registry = Registry::new();
        let source = Arc::new(AtomicI64::new(2));
        let read = Arc::clone(&source);
        registry.gauge_fn("units", "Units", &["state"], move |emit| {
            emit(&["running"], read.load(Ordering::Relaxed) as f64);
            emit(&["pending"], 0.0);
        });
        let first = registry.snapshot();
        assert_eq!(
            family(&first, "units").series[1],
            SeriesSnapshot {
                labels: vec![("state".into(), "running".into())],
                value: Value::Gauge(2.0)
            }
        );
        source.store(5, Ordering::Relaxed);
        assert_eq!(
            family(&registry.snapshot(), "units").series[1].value,
            Value::Gauge(5.0)
        );
    }

    #[test]
    fn mesh_metrics_preregister_every_drop_reason() {
        let registry = Registry::new();
        let metrics = MeshMetrics::new(&registry);
        metrics.dropped(DropReason::NoRoute);
        let snapshot = registry.snapshot();
        let dropped = family(&snapshot, "receptor_mesh_messages_dropped_total");
        assert_eq!(dropped.series.len(), DropReason::ALL.len());
        let no_route = dropped
            .series
            .iter()
            .find(|s| s.labels[0].1 == "no_route")
            .expect("no_route");
        assert_eq!(no_route.value, Value::Counter(1));
    }
}
