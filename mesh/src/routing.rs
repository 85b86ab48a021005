//! Sans-IO link-state routing (spec/wire.md §4): the link-state database, epochs and sequence
//! numbers, seen-update suppression, shortest paths. Time is an argument; nothing here sleeps,
//! spawns or touches a socket. `node::actor` drives it.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::wire::RoutingUpdate;

/// How long an update ID is remembered for flood suppression.
pub const SEEN_UPDATE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most nodes the database will hold; updates introducing more are refused (hostile floods).
pub const MAX_KNOWN_NODES: usize = 10_000;
/// Most connections one update may list.
pub const MAX_CONNECTIONS_PER_UPDATE: usize = 10_000;
/// Most remembered update IDs; the oldest are forgotten first.
pub const MAX_SEEN_UPDATES: usize = 100_000;

/// A new epoch for a node starting at `unix_secs`: seconds in the upper 40 bits, 24 random bits
/// below, so a restarted node always has a larger epoch than its previous incarnation.
pub fn new_epoch(unix_secs: u64, random24: u32) -> u64 {
    todo!("{unix_secs} {random24}")
}

/// What the caller must do after [`RoutingTable::handle_update`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateOutcome {
    /// Re-flood the update (with `ForwardingNode` = us) to every link except the arrival link.
    pub flood: bool,
    /// The update came from a node not seen before: request our own flood soon and learn its
    /// name for hash lookups.
    pub new_node: Option<String>,
    /// The link-state changed: recompute routes soon.
    pub topology_changed: bool,
    /// Duplicate-node handling (§4.5).
    pub duplicate: DuplicateAction,
    /// Why the update was dropped, if it was (for logs).
    pub dropped: Option<&'static str>,
}

/// Duplicate-node detection result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateAction {
    /// Nothing to do.
    #[default]
    None,
    /// Another node with our ID and a newer epoch exists: send an update with
    /// `SuspectedDuplicate` = this epoch at once.
    SuspectOther(u64),
    /// We are the newer duplicate: the node must shut down.
    WeAreDuplicate,
}

/// The link-state database and the routing table computed from it.
#[derive(Debug)]
pub struct RoutingTable {
    _private: (),
}

impl RoutingTable {
    /// An empty table for node `own_id` in incarnation `epoch`.
    pub fn new(own_id: impl Into<String>, epoch: u64) -> Self {
        todo!()
    }

    /// Our node ID.
    pub fn own_id(&self) -> &str {
        todo!()
    }

    /// Our epoch.
    pub fn epoch(&self) -> u64 {
        todo!()
    }

    /// A link to `peer` was established at `cost`: sets both directions of the edge.
    pub fn link_up(&mut self, peer: &str, cost: f64) {
        todo!()
    }

    /// The link to `peer` is gone: removes both directions of the edge.
    pub fn link_down(&mut self, peer: &str) {
        todo!()
    }

    /// Builds our next update: increments the sequence, lists our established links
    /// (`Connections` = our own row of the database, `{}` when empty), `NodeID` =
    /// `ForwardingNode` = us.
    pub fn make_update(&mut self, update_id: String, suspected_duplicate: u64) -> RoutingUpdate {
        todo!()
    }

    /// Applies a routing update received on an established link (§4.4 steps 1–6).
    pub fn handle_update(&mut self, update: &RoutingUpdate, now: Instant) -> UpdateOutcome {
        todo!()
    }

    /// Forgets update IDs older than [`SEEN_UPDATE_TTL`].
    pub fn purge_seen(&mut self, now: Instant) {
        todo!()
    }

    /// Recomputes shortest paths from us over the directed reported edges.
    pub fn recompute(&mut self) {
        todo!()
    }

    /// Next hop towards `dest` (as of the last [`recompute`](Self::recompute)).
    pub fn next_hop(&self, dest: &str) -> Option<&str> {
        todo!()
    }

    /// Destination -> next hop, as of the last recompute.
    pub fn routes(&self) -> &BTreeMap<String, String> {
        todo!()
    }

    /// Node -> (neighbour -> cost): the whole link-state database.
    pub fn known_connection_costs(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
        todo!()
    }

    /// Whether `node` has ever had an update accepted (or is us).
    pub fn is_known(&self, node: &str) -> bool {
        todo!()
    }
}
