//! The bodies of the cargo-fuzz targets in `fuzz/` that exercise this crate, and [`smoke`], a
//! libFuzzer-free driver that runs any target body on a seed corpus plus deterministic mutations
//! of it, so `cargo test` on stable covers the same properties (spec: every input from outside
//! is untrusted; a panic or failed assertion here is a bug).
//!
//! Compiled for this crate's unit tests and with the `fuzzing` feature only: the assertions
//! panic on purpose, which library code must never do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::routing::{MAX_KNOWN_NODES, RoutingTable};
use crate::wire::{self, Message, RoutingUpdate};

/// `wire_decode`: whatever decodes must re-encode to bytes that decode to the same message and
/// re-encode identically (decoding never yields NaN costs, so `PartialEq` on the message is
/// exact), and the zero-copy decoder must agree with the copying one.
pub fn wire_decode(data: &[u8]) {
    let Ok(msg) = wire::decode(data) else {
        return;
    };
    let encoded = msg.encode();
    assert!(!encoded.is_empty(), "encode produced an empty message");
    let again = wire::decode(&encoded);
    assert_eq!(again.as_ref().ok(), Some(&msg), "decode(encode(m)) != m");
    assert_eq!(msg.encode(), encoded, "encoding is not stable");
    let shared = wire::decode_bytes(encoded);
    assert_eq!(shared.ok(), Some(msg), "decode_bytes disagrees with decode");
}

/// Our node ID in [`routing_update`].
const OWN: &str = "me";
/// The fake peers' IDs, plus names that are only ever mentioned in updates.
const NAMES: [&str; 8] = ["me", "p0", "p1", "p2", "p3", "far0", "far1", ""];
/// Link costs from well-behaved to hostile (the table must refuse the last four).
const COSTS: [f64; 10] = [
    1.0,
    2.5,
    0.1,
    1e-300,
    1e300,
    f64::MAX,
    0.0,
    -1.0,
    f64::INFINITY,
    f64::NAN,
];

/// Reads the fuzzer's bytes as a little program; running out of bytes yields zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[usize::from(self.byte()) % options.len()]
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `routing_update`: drives one node's [`RoutingTable`] with links to up to four fake peers
/// coming and going, routing updates built from the input or decoded from wire bytes in it,
/// route recomputation and seen-set purges, checking after every step that:
/// - a dropped update changes nothing and is never flooded, an update bearing our own ID is
///   never flooded, and a second copy of a flooded update is dropped;
/// - our links are exactly the live connections;
/// - every route leads to a known node other than us through a live connection;
/// - the database stays bounded and recomputing is deterministic.
pub fn routing_update(data: &[u8]) {
    let mut input = Bytes(data);
    let mut table = RoutingTable::new(OWN, 1000);
    let mut live: BTreeMap<&str, f64> = BTreeMap::new();
    let mut now = Instant::now();
    let mut update_ids = 0u32;
    while !input.is_empty() {
        match input.byte() % 8 {
            0 => {
                let peer = input.pick(&NAMES[1..5]);
                let cost = input.pick(&COSTS[..6]);
                table.link_up(peer, cost);
                live.insert(peer, cost);
            }
            1 => {
                let peer = input.pick(&NAMES[1..5]);
                table.link_down(peer);
                live.remove(peer);
            }
            2 | 3 => {
                let update = built_update(&mut input, &mut update_ids);
                apply(&mut table, &update, now);
            }
            4 => {
                let len = usize::from(u16::from_le_bytes([input.byte(), input.byte()]));
                if let Ok(Message::Routing(update)) = wire::decode(input.take(len)) {
                    apply(&mut table, &update, now);
                }
            }
            5 => {
                let minutes = u64::from(input.byte()) * 10;
                now = now
                    .checked_add(Duration::from_secs(minutes * 60))
                    .unwrap_or(now);
                table.purge_seen(now);
            }
            6 => {
                let update = table.make_update(format!("own{update_ids}"), 0);
                update_ids += 1;
                assert_eq!(update.node_id, OWN);
                assert_eq!(update.connections.as_ref(), Some(&table.links()));
            }
            _ => check_routes(&mut table, &live),
        }
        let own_links = table.links();
        let links: BTreeMap<&str, f64> = own_links.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(links, live, "our links are not the live connections");
        assert!(
            table.node_count() <= MAX_KNOWN_NODES + NAMES.len(),
            "the database grew past its bound"
        );
    }
    check_routes(&mut table, &live);
}

/// An update from a name of [`NAMES`] with small epochs and sequences, so that staleness,
/// duplicates and restarts all occur.
fn built_update(input: &mut Bytes<'_>, update_ids: &mut u32) -> RoutingUpdate {
    let node_id = input.pick(&NAMES).to_owned();
    let flags = input.byte();
    let update_id = if flags & 1 == 0 {
        *update_ids += 1;
        format!("u{update_ids}")
    } else {
        // A reused ID: must be suppressed unless it was purged.
        format!("u{}", input.byte() % 4)
    };
    let connections = if flags & 2 == 0 {
        let mut row = BTreeMap::new();
        for _ in 0..input.byte() % 5 {
            row.insert(input.pick(&NAMES).to_owned(), input.pick(&COSTS));
        }
        Some(row)
    } else {
        None
    };
    RoutingUpdate {
        node_id,
        update_id,
        update_epoch: u64::from(input.byte() % 4) * 500,
        update_sequence: u64::from(input.byte() % 8),
        connections,
        forwarding_node: input.pick(&NAMES[1..5]).to_owned(),
        suspected_duplicate: if flags & 4 == 0 {
            0
        } else {
            u64::from(input.byte() % 4) * 500
        },
    }
}

/// Applies `update` and checks what the outcome promises.
fn apply(table: &mut RoutingTable, update: &RoutingUpdate, now: Instant) {
    let before = table.known_connection_costs();
    let outcome = table.handle_update(update, now);
    if outcome.dropped.is_some() {
        assert!(
            !outcome.flood && !outcome.topology_changed && outcome.new_node.is_none(),
            "a dropped update had effects: {outcome:?}"
        );
        assert_eq!(
            table.known_connection_costs(),
            before,
            "a dropped update changed the database"
        );
    }
    if update.node_id == OWN {
        assert!(!outcome.flood, "an update bearing our ID was flooded");
    }
    if outcome.flood {
        let again = table.handle_update(update, now);
        assert!(
            again.dropped.is_some() && !again.flood,
            "a second copy of a flooded update was not suppressed: {again:?}"
        );
    }
    if !outcome.topology_changed {
        assert_eq!(
            table.known_connection_costs(),
            before,
            "the database changed without topology_changed"
        );
    }
}

fn check_routes(table: &mut RoutingTable, live: &BTreeMap<&str, f64>) {
    table.recompute();
    let routes = table.routes().clone();
    let known: BTreeSet<String> = table.known_connection_costs().into_keys().collect();
    for (dest, hop) in &routes {
        assert_ne!(dest, OWN, "a route to ourselves");
        assert!(known.contains(dest), "a route to unknown node {dest}");
        assert!(
            live.contains_key(hop.as_str()),
            "route to {dest} via {hop}, which is not a live connection"
        );
    }
    for peer in live.keys() {
        assert!(
            routes.contains_key(*peer),
            "no route to directly connected {peer}"
        );
    }
    table.recompute();
    assert_eq!(table.routes(), &routes, "recompute is not deterministic");
}

// === the stable driver ===

/// Runs `body` on every file of the target's seed corpus (`fuzz/seeds/<target>` in this
/// repository, shared with the cargo-fuzz targets), then on `iterations` inputs made by mutating
/// them with a fixed-seed generator: a libFuzzer-free smoke run for stable toolchains. A panicking
/// input is printed in hex before the panic goes on.
///
/// # Panics
/// When the corpus cannot be read or is empty, and when `body` panics.
pub fn smoke(target: &str, iterations: usize, body: impl Fn(&[u8])) {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let seeds = seeds.as_path();
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(seeds)
        .unwrap_or_else(|e| panic!("cannot read seed corpus {}: {e}", seeds.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .filter_map(|path| std::fs::read(path).ok())
        .collect();
    corpus.sort();
    assert!(
        !corpus.is_empty(),
        "seed corpus {} is empty",
        seeds.display()
    );
    let run = |input: &[u8]| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(input)));
        if let Err(panic) = outcome {
            eprintln!(
                "fuzz smoke: failing input ({} bytes): {}",
                input.len(),
                hex(input)
            );
            std::panic::resume_unwind(panic);
        }
    };
    for seed in &corpus {
        run(seed);
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..iterations {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(base, &corpus, &mut rng);
        run(&input);
    }
}

/// Bytes that matter to the parsers under test (JSON, YAML, control lines, command lines).
const INTERESTING: &[u8] = b"{}[]\":,\\\n\r\t -=#&*!|>0123456789.eE+nulltruefalse\x00\xff\x80";

fn mutate(base: &[u8], corpus: &[Vec<u8>], rng: &mut XorShift) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = rng.byte(),
            2 => out.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            3 if at < out.len() => {
                out.remove(at);
            }
            4 => {
                // Duplicate a chunk in place (repetition finds nesting and length bugs).
                let end = (at + 1 + rng.below(16)).min(out.len());
                let chunk = out[at.min(end)..end].to_vec();
                insert_at(&mut out, at, &chunk);
            }
            5 => {
                // Splice in a piece of another seed.
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(other.len() + 1);
                let end = (start + rng.below(64)).min(other.len());
                insert_at(&mut out, at, &other[start..end]);
            }
            6 => out.truncate(at),
            _ => out.insert(at, rng.byte()),
        }
    }
    out
}

fn insert_at(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let tail = out.split_off(at);
    out.extend_from_slice(bytes);
    out.extend_from_slice(&tail);
}

/// A tiny deterministic generator (xorshift64): no dependency, the same inputs on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        // n is small; the modulo bias is irrelevant here.
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_decode_smoke() {
        smoke("wire_decode", 20_000, wire_decode);
    }

    #[test]
    fn routing_update_smoke() {
        smoke("routing_update", 5_000, routing_update);
    }
}
