//! The service-advertisement store (spec/wire.md §5.3): the newest advertisement per
//! `(node, service)`, kept with its original bytes so re-floods are byte-identical. Sans-IO.
//!
//! Unlike Go, a cancellation leaves a tombstone holding its `Time`. Go deletes the entry, so a
//! cancel that arrives again over another path finds nothing stored, counts as new and is
//! re-flooded; in a mesh with a cycle that never stops. The tombstone makes the echo stale, and
//! also keeps a delayed older advertisement from resurrecting a withdrawn service. Tombstones are
//! invisible to [`Advertisements::get`] and [`Advertisements::iter`].

use std::collections::BTreeMap;

use bytes::Bytes;
use time::OffsetDateTime;

use crate::wire::ServiceAdvertisement;

/// Most `(node, service)` entries (tombstones included); advertisements for new keys are refused
/// beyond it.
pub const MAX_ADVERTISEMENTS: usize = 10_000;
/// Longest node ID or service name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// An advertisement as received, with the bytes to re-flood.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAd {
    /// The decoded advertisement.
    pub ad: ServiceAdvertisement,
    /// The complete message it came in (type byte first), flooded unchanged.
    pub raw: Bytes,
}

/// What [`Advertisements::handle`] did with an advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdOutcome {
    /// Stored as the newest for its key: flood the raw bytes to every link but the arrival one.
    Stored,
    /// A newer cancellation: the service is withdrawn; flood the raw bytes likewise.
    Cancelled,
    /// Not strictly newer than what we hold: drop, no flood.
    Stale,
    /// Refused (limits): drop, no flood.
    Refused(&'static str),
}

/// One key's state.
#[derive(Debug, Clone)]
enum Slot {
    Live(StoredAd),
    /// Withdrawn at this time.
    Cancelled(OffsetDateTime),
}

impl Slot {
    fn time(&self) -> OffsetDateTime {
        match self {
            Self::Live(stored) => stored.ad.time,
            Self::Cancelled(time) => *time,
        }
    }

    fn live(&self) -> Option<&StoredAd> {
        match self {
            Self::Live(stored) => Some(stored),
            Self::Cancelled(_) => None,
        }
    }
}

/// Received service advertisements by node, then service.
#[derive(Debug, Clone, Default)]
pub struct Advertisements {
    nodes: BTreeMap<String, BTreeMap<String, Slot>>,
    /// Entries over all nodes, tombstones included.
    len: usize,
}

impl Advertisements {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a received (or locally originated) advertisement. A newer `Time`, strictly after
    /// the stored one, wins; times compare as instants, whatever their offsets.
    pub fn handle(&mut self, ad: ServiceAdvertisement, raw: Bytes) -> AdOutcome {
        if ad.node_id.len() > MAX_NAME_LEN {
            return AdOutcome::Refused("node ID too long");
        }
        if ad.service.len() > MAX_NAME_LEN {
            return AdOutcome::Refused("service name too long");
        }
        let existing = self
            .nodes
            .get(&ad.node_id)
            .and_then(|services| services.get(&ad.service));
        match existing {
            Some(slot) if ad.time <= slot.time() => return AdOutcome::Stale,
            Some(_) => {}
            None if self.len >= MAX_ADVERTISEMENTS => {
                return AdOutcome::Refused("too many advertisements");
            }
            None => self.len += 1,
        }
        let node = ad.node_id.clone();
        let service = ad.service.clone();
        let (slot, outcome) = if ad.cancel {
            (Slot::Cancelled(ad.time), AdOutcome::Cancelled)
        } else {
            (Slot::Live(StoredAd { ad, raw }), AdOutcome::Stored)
        };
        self.nodes.entry(node).or_default().insert(service, slot);
        outcome
    }

    /// Live advertisements, sorted by (node, service).
    pub fn iter(&self) -> impl Iterator<Item = &StoredAd> {
        self.nodes
            .values()
            .flat_map(|services| services.values())
            .filter_map(Slot::live)
    }

    /// The live advertisement for `(node, service)`.
    pub fn get(&self, node: &str, service: &str) -> Option<&StoredAd> {
        self.nodes.get(node)?.get(service)?.live()
    }

    /// Forgets everything about `node`, tombstones included. Used when our own services are
    /// withdrawn.
    pub fn remove_node(&mut self, node: &str) {
        if let Some(services) = self.nodes.remove(node) {
            self.len -= services.len();
        }
    }

    /// Number of live advertisements.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no advertisement is live.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn ad(node: &str, service: &str, time: OffsetDateTime, cancel: bool) -> ServiceAdvertisement {
        ServiceAdvertisement {
            node_id: node.to_owned(),
            service: service.to_owned(),
            time,
            conn_type: 1,
            tags: None,
            work_commands: None,
            cancel,
        }
    }

    /// Distinct bytes per call so tests can tell which copy was kept.
    fn raw(tag: &str) -> Bytes {
        Bytes::from(format!("\u{2}{tag}"))
    }

    const T1: OffsetDateTime = datetime!(2026-11-24 20:00:00 UTC);
    const T2: OffsetDateTime = datetime!(2026-11-24 20:01:00 UTC);
    const T3: OffsetDateTime = datetime!(2026-11-24 20:02:00 UTC);

    #[test]
    fn newer_wins_older_and_equal_are_stale() {
        let mut store = Advertisements::new();
        assert_eq!(
            store.handle(ad("a", "control", T2, false), raw("t2")),
            AdOutcome::Stored
        );
        assert_eq!(
            store.handle(ad("a", "control", T2, false), raw("again")),
            AdOutcome::Stale
        );
        assert_eq!(
            store.handle(ad("a", "control", T1, false), raw("t1")),
            AdOutcome::Stale
        );
        assert_eq!(store.get("a", "control").map(|s| &s.raw), Some(&raw("t2")));

        assert_eq!(
            store.handle(ad("a", "control", T3, false), raw("t3")),
            AdOutcome::Stored
        );
        let stored = store.get("a", "control").expect("stored");
        assert_eq!(stored.raw, raw("t3"));
        assert_eq!(stored.ad.time, T3);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn times_compare_as_instants() {
        let mut store = Advertisements::new();
        assert_eq!(
            store.handle(ad("a", "s", T2, false), raw("utc")),
            AdOutcome::Stored
        );
        // The same instant written with another offset is not newer.
        let same = datetime!(2026-11-24 21:01:00 +01:00);
        assert_eq!(
            store.handle(ad("a", "s", same, false), raw("cet")),
            AdOutcome::Stale
        );
        // A later wall-clock reading in an earlier instant is older.
        let earlier = datetime!(2026-11-24 21:00:30 +01:00);
        assert_eq!(
            store.handle(ad("a", "s", earlier, false), raw("x")),
            AdOutcome::Stale
        );
        let later = datetime!(2026-11-24 15:01:01 -05:00);
        assert_eq!(
            store.handle(ad("a", "s", later, false), raw("y")),
            AdOutcome::Stored
        );
    }

    #[test]
    fn cancel_removes_and_is_flooded_once() {
        let mut store = Advertisements::new();
        store.handle(ad("a", "control", T1, false), raw("ad"));
        store.handle(ad("a", "other", T1, false), raw("other"));

        assert_eq!(
            store.handle(ad("a", "control", T2, true), raw("cancel")),
            AdOutcome::Cancelled
        );
        assert!(store.get("a", "control").is_none());
        assert!(store.get("a", "other").is_some());
        // The same cancel arriving over another path is an echo, not news.
        assert_eq!(
            store.handle(ad("a", "control", T2, true), raw("cancel")),
            AdOutcome::Stale
        );
        // A delayed ad older than the cancel does not resurrect the service.
        assert_eq!(
            store.handle(ad("a", "control", T1, false), raw("old")),
            AdOutcome::Stale
        );
        assert!(store.get("a", "control").is_none());
        // A newer ad does.
        assert_eq!(
            store.handle(ad("a", "control", T3, false), raw("new")),
            AdOutcome::Stored
        );
        assert!(store.get("a", "control").is_some());
    }

    #[test]
    fn cancel_for_unknown_service_is_flooded() {
        let mut store = Advertisements::new();
        assert_eq!(
            store.handle(ad("z", "gone", T1, true), raw("c")),
            AdOutcome::Cancelled
        );
        assert!(store.get("z", "gone").is_none());
        assert!(store.is_empty());
        assert_eq!(
            store.handle(ad("z", "gone", T1, true), raw("c")),
            AdOutcome::Stale
        );
    }

    #[test]
    fn iter_is_sorted_by_node_then_service() {
        let mut store = Advertisements::new();
        for (node, service) in [("b", "x"), ("a", "z"), ("a", "b"), ("c", "a")] {
            store.handle(ad(node, service, T1, false), raw(service));
        }
        store.handle(ad("b", "x", T2, true), raw("cancel"));
        let keys: Vec<(&str, &str)> = store
            .iter()
            .map(|s| (s.ad.node_id.as_str(), s.ad.service.as_str()))
            .collect();
        assert_eq!(keys, [("a", "b"), ("a", "z"), ("c", "a")]);
    }

    #[test]
    fn remove_node_forgets_its_ads() {
        let mut store = Advertisements::new();
        store.handle(ad("a", "s1", T1, false), raw("1"));
        store.handle(ad("a", "s2", T1, true), raw("2"));
        store.handle(ad("b", "s1", T1, false), raw("3"));
        store.remove_node("a");
        assert!(store.get("a", "s1").is_none());
        assert!(store.get("b", "s1").is_some());
        assert_eq!(store.len, 1);
        // Forgotten entirely, so the same advertisement counts as new again.
        assert_eq!(
            store.handle(ad("a", "s1", T1, false), raw("1")),
            AdOutcome::Stored
        );
        store.remove_node("nobody");
        assert_eq!(store.len, 2);
    }

    #[test]
    fn store_is_bounded() {
        let mut store = Advertisements::new();
        for i in 0..MAX_ADVERTISEMENTS {
            let outcome = store.handle(ad(&format!("n{i}"), "s", T1, false), raw("x"));
            assert_eq!(outcome, AdOutcome::Stored);
        }
        assert_eq!(
            store.handle(ad("extra", "s", T1, false), raw("x")),
            AdOutcome::Refused("too many advertisements")
        );
        assert_eq!(
            store.handle(ad("extra", "s", T1, true), raw("x")),
            AdOutcome::Refused("too many advertisements")
        );
        assert!(store.get("extra", "s").is_none());
        // Existing keys still update, and cancelling keeps the slot (a tombstone).
        assert_eq!(
            store.handle(ad("n0", "s", T2, false), raw("y")),
            AdOutcome::Stored
        );
        assert_eq!(
            store.handle(ad("n1", "s", T2, true), raw("y")),
            AdOutcome::Cancelled
        );
        assert_eq!(store.len(), MAX_ADVERTISEMENTS - 1);
        assert_eq!(store.len, MAX_ADVERTISEMENTS);
        // Forgetting a node frees room.
        store.remove_node("n1");
        assert_eq!(
            store.handle(ad("extra", "s", T1, false), raw("x")),
            AdOutcome::Stored
        );
    }

    #[test]
    fn long_names_are_refused() {
        let mut store = Advertisements::new();
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            store.handle(ad(&long, "s", T1, false), raw("x")),
            AdOutcome::Refused("node ID too long")
        );
        assert_eq!(
            store.handle(ad("a", &long, T1, false), raw("x")),
            AdOutcome::Refused("service name too long")
        );
        assert!(store.is_empty());
        assert_eq!(store.len, 0);
        let max = "x".repeat(MAX_NAME_LEN);
        assert_eq!(
            store.handle(ad(&max, &max, T1, false), raw("x")),
            AdOutcome::Stored
        );
    }
}
