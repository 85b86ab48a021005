//! Sans-IO link-state routing (spec/wire.md §4): the link-state database, epochs and sequence
//! numbers, seen-update suppression, shortest paths. Time is an argument; nothing here sleeps,
//! spawns or touches a socket. `node::actor` drives it.

use std::cell::OnceCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use tokio::time::Instant;

use crate::wire::RoutingUpdate;

/// How long an update ID is remembered for flood suppression.
pub const SEEN_UPDATE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most nodes the database will hold. When it is full, an update introducing a new node first
/// evicts the nodes we have no route to, and is refused if that frees no room (hostile floods).
pub const MAX_KNOWN_NODES: usize = 10_000;
/// Most connections one update may list.
pub const MAX_CONNECTIONS_PER_UPDATE: usize = 10_000;
/// Most remembered update IDs; the oldest are forgotten first.
pub const MAX_SEEN_UPDATES: usize = 100_000;
/// Longest node ID, neighbour name or update ID accepted in an update, in bytes. Go sets no limit;
/// this one keeps a hostile peer from parking megabytes of names in our database and seen set.
pub const MAX_NAME_LEN: usize = 256;

/// A new epoch for a node starting at `unix_secs`: seconds in the upper 40 bits, 24 random bits
/// below, so a restarted node always has a larger epoch than its previous incarnation.
pub fn new_epoch(unix_secs: u64, random24: u32) -> u64 {
    (unix_secs << 24) | u64::from(random24 & 0x00FF_FFFF)
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
    /// Nodes forgotten to make room for the new one (the database was full and we had no
    /// route to them): the caller may forget their names too.
    pub evicted: Vec<String>,
}

impl UpdateOutcome {
    fn dropped(reason: &'static str) -> Self {
        Self {
            dropped: Some(reason),
            ..Self::default()
        }
    }
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

/// A name's index in [`RoutingTable::slots`]: every name the table refers to (nodes, and the
/// neighbours their rows list) is stored once and referred to by this index everywhere else.
type Id = u32;

/// Our own slot: created first and never freed.
const OWN: Id = 0;

/// One row of the database. Go keeps the version (`knownNodeInfo`) and the costs
/// (`knownConnectionCosts`) in separate maps; one map with an optional version gives the same
/// observable behaviour: a peer whose row was created by `link_up` is routable at once but still
/// counts as new when its first update arrives.
#[derive(Debug, Clone, Default)]
struct NodeEntry {
    /// `(epoch, sequence)` of the latest accepted update; `None` until one was accepted (and
    /// always for our own row, whose version lives in [`RoutingTable`]).
    version: Option<(u64, u64)>,
    /// The node's reported links. `None` (Go's nil map) and `Some(empty)` differ when an update is
    /// compared against them, as in Go's `reflect.DeepEqual`.
    connections: Option<Row>,
    /// Whether the node is in the link-state database proper (Go's `knownConnectionCosts`):
    /// set by a link or by an update that changed its connections. A node whose updates only
    /// ever carried `null` connections is versioned but neither shown nor routable, as in Go.
    listed: bool,
}

/// A node's reported links, sorted by neighbour [`Id`]. Every node holds one row per node of
/// the mesh, so rows are compact: a boxed slice of 16-byte links, replaced whole by updates.
#[derive(Debug, Clone, Default, PartialEq)]
struct Row(Box<[(Id, f64)]>);

impl Row {
    fn iter(&self) -> impl Iterator<Item = (Id, f64)> + '_ {
        self.0.iter().copied()
    }

    fn ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.0.iter().map(|&(n, _)| n)
    }

    fn position(&self, id: Id) -> Result<usize, usize> {
        self.0.binary_search_by_key(&id, |&(n, _)| n)
    }

    fn insert(&mut self, id: Id, cost: f64) {
        match self.position(id) {
            Ok(at) => self.0[at].1 = cost,
            Err(at) => {
                let mut links = Vec::from(std::mem::take(&mut self.0));
                links.insert(at, (id, cost));
                self.0 = links.into_boxed_slice();
            }
        }
    }

    fn remove(&mut self, id: Id) {
        if let Ok(at) = self.position(id) {
            let mut links = Vec::from(std::mem::take(&mut self.0));
            links.remove(at);
            self.0 = links.into_boxed_slice();
        }
    }
}

/// Everything the table knows under one name. A slot lives while the name is a key of the
/// database or is listed by some row (the two ways a name enters the table); then it is freed
/// and its index reused.
#[derive(Debug, Default)]
struct Slot {
    /// Empty while the slot is free. Shared with the node's hash -> name table.
    name: Arc<str>,
    /// The node's row of the database, if the name is a key of it.
    entry: Option<NodeEntry>,
    /// The nodes whose rows list this name, sorted: every row read backwards, so that deleting
    /// the edges towards a node visits only the rows that have one, not the whole database
    /// (which made every topology change O(known nodes), and a mesh's convergence O(N³)).
    listed_by: Vec<Id>,
    /// Next hop towards this node, as of the last recompute.
    hop: Option<Id>,
}

/// The link-state database and the routing table computed from it.
///
/// Every node of a mesh holds the whole database, so its size per known node is multiplied by
/// the mesh size on every node (5,000 nodes: 25 M entries in a process simulating them all).
/// Names are therefore interned: each is stored once, in its [`Slot`], and rows, the reverse
/// index and routes refer to it by a 4-byte [`Id`]. Heap bytes per known node of a table
/// that learnt a 5,000-node AWX-like mesh (one update each, counted by a counting allocator):
/// 495 with `String` keys everywhere (a map of nodes, rows of names, a map of name lists, a
/// map of routes), 306 with interning, of which about 75 were the seen update IDs, which
/// [`SeenUpdates`] cuts to a fifth.
#[derive(Debug)]
pub struct RoutingTable {
    own_id: String,
    epoch: u64,
    sequence: u64,
    /// By [`Id`]; [`OWN`] is us.
    slots: Vec<Slot>,
    /// The live ids sorted by name: name lookups by binary search, and name order for
    /// [`recompute`](Self::recompute)'s tie-breaks and for listings. A new name costs a shift
    /// of this vector (4 bytes per name), which happens once per name, not per update.
    order: Vec<Id>,
    /// Freed ids, reused first.
    free: Vec<Id>,
    /// Number of slots with an entry: the database's keys.
    node_count: usize,
    /// Number of slots with a route.
    route_count: usize,
    /// [`routes`](Self::routes) as a map, built on demand and dropped when the routes change,
    /// so that a node whose routes nobody lists does not hold a second copy of them.
    routes_cache: OnceCell<BTreeMap<String, String>>,
    /// Update IDs seen recently, for flood suppression.
    seen: SeenUpdates,
    /// Set when an eviction found every node reachable; cleared by any change of the edges.
    /// While set, a full table refuses new nodes without walking the graph again, so a peer
    /// that keeps announcing new nodes into a full table of reachable ones costs a lookup
    /// per update, not a traversal.
    eviction_futile: bool,
}

impl RoutingTable {
    /// An empty table for node `own_id` in incarnation `epoch`.
    pub fn new(own_id: impl Into<String>, epoch: u64) -> Self {
        let own_id = own_id.into();
        // Our row exists from the start so the database (and `status`) always shows us.
        let own = Slot {
            name: own_id.as_str().into(),
            entry: Some(NodeEntry {
                version: None,
                connections: Some(Row::default()),
                listed: true,
            }),
            ..Slot::default()
        };
        Self {
            own_id,
            epoch,
            sequence: 0,
            slots: vec![own],
            order: vec![OWN],
            free: Vec::new(),
            node_count: 1,
            route_count: 0,
            routes_cache: OnceCell::new(),
            seen: SeenUpdates::default(),
            eviction_futile: false,
        }
    }

    /// Our node ID.
    pub fn own_id(&self) -> &str {
        &self.own_id
    }

    /// Our epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number of the last update we made (0 before the first).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// A link to `peer` was established at `cost`: sets both directions of the edge.
    pub fn link_up(&mut self, peer: &str, cost: f64) {
        if peer == self.own_id {
            return;
        }
        self.eviction_futile = false;
        let peer = self.intern(peer);
        self.own_row_mut().insert(peer, cost);
        // The peer becomes a key at once, as in Go, so it is routable before its first update.
        let entry = self.entry_or_default(peer);
        entry.listed = true;
        entry
            .connections
            .get_or_insert_with(Row::default)
            .insert(OWN, cost);
        self.index_edge(OWN, peer);
        self.index_edge(peer, OWN);
    }

    /// The link to `peer` is gone: removes both directions of the edge.
    pub fn link_down(&mut self, peer: &str) {
        if peer == self.own_id {
            return;
        }
        self.eviction_futile = false;
        let Some(peer) = self.lookup(peer) else {
            // Neither a key nor listed by anyone: in particular not in our row.
            return;
        };
        self.own_row_mut().remove(peer);
        if let Some(row) = self.slots[peer as usize]
            .entry
            .as_mut()
            .and_then(|entry| entry.connections.as_mut())
        {
            row.remove(OWN);
        }
        self.unindex_edge(OWN, peer);
        self.unindex_edge(peer, OWN);
    }

    /// Our established links and their costs.
    pub fn links(&self) -> BTreeMap<String, f64> {
        self.row_map(OWN).unwrap_or_default()
    }

    /// Builds our next update: increments the sequence, lists our established links
    /// (`Connections` = our own row of the database, `{}` when empty), `NodeID` =
    /// `ForwardingNode` = us.
    pub fn make_update(&mut self, update_id: String, suspected_duplicate: u64) -> RoutingUpdate {
        self.sequence += 1;
        RoutingUpdate {
            node_id: self.own_id.clone(),
            update_id,
            update_epoch: self.epoch,
            update_sequence: self.sequence,
            connections: Some(self.links()),
            forwarding_node: self.own_id.clone(),
            suspected_duplicate,
        }
    }

    /// Applies a routing update received on an established link (§4.4 steps 1–6).
    pub fn handle_update(&mut self, update: &RoutingUpdate, now: Instant) -> UpdateOutcome {
        // Step 1.
        if update.node_id.is_empty() {
            return UpdateOutcome::dropped("empty node ID");
        }
        // Checked before anything is stored so that hostile input never grows memory.
        if let Err(reason) = validate_update(update) {
            return UpdateOutcome::dropped(reason);
        }

        // Step 2: our own ID. Never recorded as seen and never re-flooded.
        if update.node_id == self.own_id {
            let duplicate = if update.update_epoch == self.epoch {
                return UpdateOutcome::dropped("our own update");
            } else if update.suspected_duplicate == self.epoch {
                DuplicateAction::WeAreDuplicate
            } else if update.update_epoch > self.epoch {
                DuplicateAction::SuspectOther(update.update_epoch)
            } else {
                return UpdateOutcome::dropped("update from an older incarnation of us");
            };
            return UpdateOutcome {
                duplicate,
                dropped: Some("update bearing our node ID"),
                ..UpdateOutcome::default()
            };
        }

        // Step 3.
        if self.seen.contains(&update.update_id) {
            return UpdateOutcome::dropped("update already seen");
        }
        self.seen.insert(&update.update_id, now);

        // Step 4: a duplicate notification only re-versions the node; the link-state stays.
        if update.suspected_duplicate != 0 {
            if let Some(entry) = self.entry_mut(&update.node_id)
                && let Some((epoch, _)) = entry.version
                && epoch == update.suspected_duplicate
            {
                entry.version = Some((update.update_epoch, update.update_sequence));
            }
            return UpdateOutcome {
                flood: true,
                ..UpdateOutcome::default()
            };
        }

        // Step 5.
        let mut outcome = UpdateOutcome::default();
        let known = self.lookup(&update.node_id);
        let entry = known.and_then(|id| self.slots[id as usize].entry.as_ref());
        match entry.and_then(|e| e.version) {
            Some((epoch, sequence)) => {
                if update.update_epoch < epoch
                    || (update.update_epoch == epoch && update.update_sequence <= sequence)
                {
                    return UpdateOutcome::dropped("stale update");
                }
            }
            None => {
                if entry.is_none() && self.node_count >= MAX_KNOWN_NODES {
                    outcome.evicted = self.evict_unreachable();
                    if self.node_count >= MAX_KNOWN_NODES {
                        return UpdateOutcome::dropped("too many known nodes");
                    }
                    // The database shown by `status` shrank, though no route changed.
                    outcome.topology_changed = true;
                }
                outcome.new_node = Some(update.node_id.clone());
            }
        }
        // Eviction may have freed the node's slot (a name only listed by evicted rows).
        let node = self.intern(&update.node_id);
        let unchanged = {
            let entry = self.entry_or_default(node);
            entry.version = Some((update.update_epoch, update.update_sequence));
            entry.connections.as_ref().map(|row| row.0.len())
                == update.connections.as_ref().map(BTreeMap::len)
        } && self.row_equals(node, update.connections.as_ref());
        if !unchanged {
            self.eviction_futile = false;
            let new = update.connections.as_ref().map(|map| {
                let mut links: Vec<(Id, f64)> = map
                    .iter()
                    .map(|(name, cost)| (self.intern(name), *cost))
                    .collect();
                links.sort_unstable_by_key(|&(id, _)| id);
                Row(links.into_boxed_slice())
            });
            let entry = self.entry_or_default(node);
            let old = std::mem::replace(&mut entry.connections, new);
            entry.listed = true;
            // Index the new edges before dropping the old ones, so that a name on both rows
            // is never left without a lister (which would free its slot under the new row).
            let new_ids: Vec<Id> = self.row_ids(node);
            for &neighbour in &new_ids {
                self.index_edge(node, neighbour);
            }
            for neighbour in old.iter().flat_map(Row::ids) {
                if new_ids.binary_search(&neighbour).is_err() {
                    self.unindex_edge(node, neighbour);
                }
            }
            self.remove_edges_not_confirmed(node, update.connections.as_ref());
            outcome.topology_changed = true;
        }

        // Step 6: flood even when only the sequence changed, as Go does.
        outcome.flood = true;
        outcome
    }

    /// Forgets update IDs remembered for long enough (see [`SeenUpdates::purge`]).
    pub fn purge_seen(&mut self, now: Instant) {
        self.seen.purge(now);
    }

    /// Recomputes shortest paths from us over the directed reported edges.
    pub fn recompute(&mut self) {
        // Nodes are indexed in name order so that comparing indices compares names: ties
        // between equal-cost paths go to the lexicographically smallest next hop.
        let listed: Vec<Id> = self
            .order
            .iter()
            .copied()
            .filter(|&id| {
                self.slots[id as usize]
                    .entry
                    .as_ref()
                    .is_some_and(|e| e.listed)
            })
            .collect();
        let mut index = vec![usize::MAX; self.slots.len()];
        for (i, &id) in listed.iter().enumerate() {
            index[id as usize] = i;
        }
        for slot in &mut self.slots {
            slot.hop = None;
        }
        self.route_count = 0;
        self.routes_cache.take();
        let own = index[OWN as usize];
        if own == usize::MAX {
            return;
        }
        let edges: Vec<Vec<(usize, f64)>> = listed
            .iter()
            .map(|&id| {
                self.slots[id as usize]
                    .entry
                    .iter()
                    .flat_map(|e| e.connections.iter())
                    .flat_map(Row::iter)
                    // Only keys of the database are destinations.
                    .filter_map(|(neighbour, cost)| {
                        let i = index[neighbour as usize];
                        (i != usize::MAX).then_some((i, cost))
                    })
                    .collect()
            })
            .collect();

        // Label per node: (cost, next hop). A node is finalised when popped and never revisited,
        // which bounds the work even when float sums absorb small costs (1e308 + 1 == 1e308).
        let mut label: Vec<Option<(f64, usize)>> = vec![None; listed.len()];
        let mut done = vec![false; listed.len()];
        let mut heap = BinaryHeap::new();
        done[own] = true;
        for &(v, cost) in &edges[own] {
            relax(&mut label, &mut heap, v, cost, v, own);
        }
        while let Some(Reverse(item)) = heap.pop() {
            let u = item.node;
            let current = label[u].is_some_and(|(cost, hop)| {
                cost.total_cmp(&item.cost).is_eq() && hop == item.next_hop
            });
            if done[u] || !current {
                continue;
            }
            done[u] = true;
            for &(v, cost) in &edges[u] {
                if !done[v] {
                    relax(
                        &mut label,
                        &mut heap,
                        v,
                        item.cost + cost,
                        item.next_hop,
                        own,
                    );
                }
            }
        }

        for (node, l) in label.iter().enumerate() {
            if let Some((_, hop)) = l {
                self.slots[listed[node] as usize].hop = Some(listed[*hop]);
                self.route_count += 1;
            }
        }
    }

    /// Next hop towards `dest` (as of the last [`recompute`](Self::recompute)).
    pub fn next_hop(&self, dest: &str) -> Option<&str> {
        let hop = self.slots[self.lookup(dest)? as usize].hop?;
        Some(&self.slots[hop as usize].name)
    }

    /// Destination -> next hop, as of the last recompute.
    pub fn routes(&self) -> &BTreeMap<String, String> {
        self.routes_cache.get_or_init(|| self.route_map())
    }

    /// Destination -> next hop, as of the last recompute: a fresh copy, which (unlike
    /// [`routes`](Self::routes)) the table does not keep.
    pub fn route_map(&self) -> BTreeMap<String, String> {
        self.slots
            .iter()
            .filter_map(|slot| {
                let hop = slot.hop?;
                Some((slot.name.to_string(), self.name(hop).to_owned()))
            })
            .collect()
    }

    /// Number of destinations with a route, as of the last recompute.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// Node -> (neighbour -> cost): the whole link-state database.
    pub fn known_connection_costs(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
        self.order
            .iter()
            .filter(|&&id| {
                self.slots[id as usize]
                    .entry
                    .as_ref()
                    .is_some_and(|e| e.listed)
            })
            .map(|&id| {
                (
                    self.name(id).to_owned(),
                    self.row_map(id).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Whether `node` has ever had an update accepted (or is us).
    pub fn is_known(&self, node: &str) -> bool {
        node == self.own_id || self.entry(node).is_some_and(|e| e.version.is_some())
    }

    /// Number of nodes in the database, us included.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// The table's copy of `name`, if it refers to it (as a node or a listed neighbour), for
    /// callers that keep names per node too and would otherwise hold a copy of each.
    pub fn shared_name(&self, name: &str) -> Option<Arc<str>> {
        self.lookup(name)
            .map(|id| Arc::clone(&self.slots[id as usize].name))
    }

    // === names ===

    fn name(&self, id: Id) -> &str {
        &self.slots[id as usize].name
    }

    fn lookup(&self, name: &str) -> Option<Id> {
        self.order
            .binary_search_by(|&id| (*self.slots[id as usize].name).cmp(name))
            .ok()
            .map(|at| self.order[at])
    }

    /// The id of `name`, allocating a slot if it has none. A new slot must get an entry or a
    /// lister before the next call that may free slots, or it leaks until the name is used.
    fn intern(&mut self, name: &str) -> Id {
        let at = match self
            .order
            .binary_search_by(|&id| (*self.slots[id as usize].name).cmp(name))
        {
            Ok(at) => return self.order[at],
            Err(at) => at,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize].name = name.into();
                id
            }
            None => {
                // At most MAX_KNOWN_NODES keys plus the names their rows list (each row bounded
                // by MAX_CONNECTIONS_PER_UPDATE), far below u32::MAX.
                let id = Id::try_from(self.slots.len()).unwrap_or(Id::MAX);
                grow_by_an_eighth(&mut self.slots);
                self.slots.push(Slot {
                    name: name.into(),
                    ..Slot::default()
                });
                id
            }
        };
        grow_by_an_eighth(&mut self.order);
        self.order.insert(at, id);
        id
    }

    /// Frees `id`'s slot if nothing refers to it any more (and it is not free already).
    fn release_if_unused(&mut self, id: Id) {
        let slot = &self.slots[id as usize];
        if id == OWN || slot.entry.is_some() || !slot.listed_by.is_empty() {
            return;
        }
        // A free slot is not in `order`: this is what keeps a slot from being freed twice
        // (an evicted node whose last lister was evicted before it).
        let Ok(at) = self
            .order
            .binary_search_by(|&other| (*self.slots[other as usize].name).cmp(&slot.name))
        else {
            return;
        };
        if self.order[at] != id {
            return;
        }
        self.order.remove(at);
        let slot = &mut self.slots[id as usize];
        slot.name = Arc::default();
        if slot.hop.take().is_some() {
            self.route_count -= 1;
            self.routes_cache.take();
        }
        self.free.push(id);
    }

    // === rows ===

    fn entry(&self, name: &str) -> Option<&NodeEntry> {
        self.slots[self.lookup(name)? as usize].entry.as_ref()
    }

    fn entry_mut(&mut self, name: &str) -> Option<&mut NodeEntry> {
        let id = self.lookup(name)?;
        self.slots[id as usize].entry.as_mut()
    }

    fn entry_or_default(&mut self, id: Id) -> &mut NodeEntry {
        let slot = &mut self.slots[id as usize];
        if slot.entry.is_none() {
            self.node_count += 1;
        }
        slot.entry.get_or_insert_with(NodeEntry::default)
    }

    fn own_row_mut(&mut self) -> &mut Row {
        self.entry_or_default(OWN)
            .connections
            .get_or_insert_with(Row::default)
    }

    fn row_ids(&self, id: Id) -> Vec<Id> {
        self.slots[id as usize]
            .entry
            .iter()
            .flat_map(|e| e.connections.iter())
            .flat_map(Row::ids)
            .collect()
    }

    fn row_map(&self, id: Id) -> Option<BTreeMap<String, f64>> {
        let row = self.slots[id as usize]
            .entry
            .as_ref()?
            .connections
            .as_ref()?;
        Some(
            row.iter()
                .map(|(n, c)| (self.name(n).to_owned(), c))
                .collect(),
        )
    }

    /// Whether `id`'s row lists exactly `map` (`BTreeMap` equality: same names, same costs);
    /// `None` is Go's nil map, which equals only itself. Lengths are compared by the caller.
    fn row_equals(&self, id: Id, map: Option<&BTreeMap<String, f64>>) -> bool {
        let row = self.slots[id as usize]
            .entry
            .as_ref()
            .and_then(|e| e.connections.as_ref());
        match (row, map) {
            (None, None) => true,
            (Some(row), Some(map)) => map.iter().all(|(name, cost)| {
                self.lookup(name)
                    .and_then(|n| row.position(n).ok())
                    .is_some_and(|at| row.0[at].1 == *cost)
            }),
            _ => false,
        }
    }

    // === edges ===

    /// Forgets every node we have no route to (never us, never a peer we are linked to) and
    /// returns their names. Called only when the database is full and a new node announces
    /// itself: without it, a peer that filled the table with fake nodes would lock out every
    /// real node until a restart, even after the peer is gone.
    ///
    /// The cost is what §4.7 keeps for life: an evicted node's `(epoch, sequence)`. A replay of
    /// one of its old updates is then taken as news once its update ID has left the seen set
    /// (an hour, or [`MAX_SEEN_UPDATES`] IDs later), installing an old row until the node's
    /// next update (every node floods one every 10 s) replaces it. The node was unreachable,
    /// so its row routed nothing; and a full table is an abnormal state, so a mesh within the
    /// bound behaves exactly as Go's. Rows of the remaining nodes that list an evicted node
    /// keep that edge: they are those nodes' reports, as for any name not in the database.
    fn evict_unreachable(&mut self) -> Vec<String> {
        if self.eviction_futile {
            return Vec::new();
        }
        let reachable = self.reachable();
        let own_links = self.row_ids(OWN);
        let doomed: Vec<Id> = (0..self.slots.len())
            .filter_map(|i| Id::try_from(i).ok())
            .filter(|&id| {
                id != OWN
                    && self.slots[id as usize].entry.is_some()
                    && !reachable[id as usize]
                    && own_links.binary_search(&id).is_err()
            })
            .collect();
        self.eviction_futile = doomed.is_empty();
        if doomed.is_empty() {
            return Vec::new();
        }
        let names = doomed.iter().map(|&id| self.name(id).to_owned()).collect();
        let mut is_doomed = vec![false; self.slots.len()];
        for &id in &doomed {
            is_doomed[id as usize] = true;
        }
        // Routes are as of the last recompute: routes to an evicted node, or through one (a
        // stale route whose first hop has gone), must not outlive it until the next one.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot
                .hop
                .is_some_and(|hop| is_doomed[hop as usize] || is_doomed[i])
            {
                slot.hop = None;
                self.route_count -= 1;
            }
        }
        self.routes_cache.take();
        for &id in &doomed {
            if let Some(entry) = self.slots[id as usize].entry.take() {
                self.node_count -= 1;
                for neighbour in entry.connections.iter().flat_map(Row::ids) {
                    self.unindex_edge(id, neighbour);
                }
            }
        }
        for &id in &doomed {
            self.release_if_unused(id);
        }
        names
    }

    /// By [`Id`]: whether the node has a path from us over the edges
    /// [`recompute`](Self::recompute) uses (rows of listed nodes, towards listed nodes).
    fn reachable(&self) -> Vec<bool> {
        let mut reached = vec![false; self.slots.len()];
        reached[OWN as usize] = true;
        let mut frontier = vec![OWN];
        while let Some(node) = frontier.pop() {
            let Some(row) = self.slots[node as usize]
                .entry
                .as_ref()
                .and_then(|e| e.connections.as_ref())
            else {
                continue;
            };
            for neighbour in row.ids() {
                let listed = self.slots[neighbour as usize]
                    .entry
                    .as_ref()
                    .is_some_and(|e| e.listed);
                if listed && !reached[neighbour as usize] {
                    reached[neighbour as usize] = true;
                    frontier.push(neighbour);
                }
            }
        }
        reached
    }

    /// Deletes every other node's edge to `node` unless `node` lists that node too, which keeps
    /// links symmetric: a node that no longer reports a link makes the far end's stale report
    /// unusable. Our own links are ours to manage (`link_up`/`link_down`).
    fn remove_edges_not_confirmed(
        &mut self,
        node: Id,
        connections: Option<&BTreeMap<String, f64>>,
    ) {
        let listing = std::mem::take(&mut self.slots[node as usize].listed_by);
        let (kept, unconfirmed): (Vec<Id>, Vec<Id>) = listing.into_iter().partition(|&other| {
            other == OWN || connections.is_some_and(|c| c.contains_key(self.name(other)))
        });
        self.slots[node as usize].listed_by = kept;
        for other in unconfirmed {
            if let Some(row) = self.slots[other as usize]
                .entry
                .as_mut()
                .and_then(|entry| entry.connections.as_mut())
            {
                row.remove(node);
            }
        }
    }

    /// Records that `from`'s row lists `to`.
    fn index_edge(&mut self, from: Id, to: Id) {
        let listing = &mut self.slots[to as usize].listed_by;
        if let Err(at) = listing.binary_search(&from) {
            listing.insert(at, from);
        }
    }

    /// Records that `from`'s row no longer lists `to`, freeing `to`'s slot if that was all
    /// that kept it.
    fn unindex_edge(&mut self, from: Id, to: Id) {
        let listing = &mut self.slots[to as usize].listed_by;
        if let Ok(at) = listing.binary_search(&from) {
            listing.remove(at);
            if listing.is_empty() {
                // Give back the allocation too: most names are listed by a handful of rows.
                *listing = Vec::new();
                self.release_if_unused(to);
            }
        }
    }
}

/// Makes room for one more element of `v`, growing it by an eighth rather than doubling it:
/// every node holds one slot per node of the mesh, and a doubled vector is up to half empty
/// (at 5,000 nodes, 8,192 slots of which 3,192 unused, on every node). Still geometric, so
/// pushes stay amortised O(1).
fn grow_by_an_eighth<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(16));
    }
}

/// Rejects updates a hostile or broken peer could use to grow our memory or poison path costs.
/// Checks an update for values no honest node sends (oversized names or maps, costs that are
/// not positive and finite). The node disconnects a peer that sends one.
///
/// # Errors
/// The reason the update is hostile.
pub fn validate_update(update: &RoutingUpdate) -> Result<(), &'static str> {
    if update.node_id.len() > MAX_NAME_LEN {
        return Err("node ID too long");
    }
    if update.update_id.len() > MAX_NAME_LEN {
        return Err("update ID too long");
    }
    let Some(connections) = &update.connections else {
        return Ok(());
    };
    if connections.len() > MAX_CONNECTIONS_PER_UPDATE {
        return Err("too many connections");
    }
    for (neighbour, cost) in connections {
        if neighbour.len() > MAX_NAME_LEN {
            return Err("neighbour name too long");
        }
        // NaN is not finite, so only positive finite costs pass; Dijkstra relies on both.
        if !cost.is_finite() || *cost <= 0.0 {
            return Err("invalid connection cost");
        }
    }
    Ok(())
}

/// The update IDs a node has seen, so that it floods each update once (spec §4.7 step 3).
///
/// A large mesh fills this: every node floods a new update every 10 s, so 5,000 nodes make
/// 1.8 M IDs an hour, and the set sits at its [`MAX_SEEN_UPDATES`] bound on every node. It is
/// therefore kept small per ID: each ID is stored as a keyed 64-bit hash in one of two hash
/// sets, ~10 to 18 bytes an ID, where a set of exact keys plus a queue of (key, time) in
/// insertion order cost 60 to 100 (6.4 MB per node at the bound, now about 1.2 MB). A false
/// "seen" needs a hash collision with one of at most 100,000 remembered IDs (odds about 1 in
/// 10^14 per update, and the key is secret, so a peer cannot aim for one); it would drop one
/// update, which the origin's next periodic update repairs.
///
/// The two sets are generations: new IDs go to `current`; when `current` has existed for
/// [`SEEN_UPDATE_TTL`] (checked at each purge) or holds half the bound, it becomes `previous`
/// and the old `previous` is forgotten at once. So an ID is remembered for at least
/// [`SEEN_UPDATE_TTL`] unless the bound is reached, and what the bound forgets is always older
/// than everything kept. Go remembers IDs for 1 to 1.5 h; this keeps them 1 to about 3 h,
/// which only suppresses replays for longer.
#[derive(Debug, Default)]
struct SeenUpdates {
    hasher: RandomState,
    current: SeenSet,
    /// When the first ID of `current` was recorded.
    current_since: Option<Instant>,
    previous: SeenSet,
}

type SeenSet = HashSet<u64, BuildHasherDefault<PreHashed>>;

impl SeenUpdates {
    fn key(&self, update_id: &str) -> u64 {
        self.hasher.hash_one(update_id.as_bytes())
    }

    fn contains(&self, update_id: &str) -> bool {
        let key = self.key(update_id);
        self.current.contains(&key) || self.previous.contains(&key)
    }

    fn insert(&mut self, update_id: &str, now: Instant) {
        if self.current.len() >= MAX_SEEN_UPDATES / 2 {
            self.rotate();
        }
        let key = self.key(update_id);
        self.current.insert(key);
        self.current_since.get_or_insert(now);
    }

    /// Starts a new generation if the current one is [`SEEN_UPDATE_TTL`] old.
    fn purge(&mut self, now: Instant) {
        if self
            .current_since
            .is_some_and(|since| now.saturating_duration_since(since) >= SEEN_UPDATE_TTL)
        {
            self.rotate();
        }
    }

    fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
        self.current_since = None;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The hasher of [`SeenSet`], whose keys are keyed hashes already: it passes a `u64` through.
#[derive(Debug, Default, Clone, Copy)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `HashSet<u64>`; folded in FNV-1a style so the hasher stays correct if it
        // ever is.
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A tentative label in the Dijkstra queue, ordered by cost, then next hop, then node.
#[derive(Debug, Clone, Copy)]
struct QueueItem {
    cost: f64,
    next_hop: usize,
    node: usize,
}

impl Ord for QueueItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cost
            .total_cmp(&other.cost)
            .then(self.next_hop.cmp(&other.next_hop))
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for QueueItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for QueueItem {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for QueueItem {}

/// Offers `v` the label `(cost, next_hop)`; it is taken if cheaper, or as cheap with a smaller
/// next hop.
fn relax(
    label: &mut [Option<(f64, usize)>],
    heap: &mut BinaryHeap<Reverse<QueueItem>>,
    v: usize,
    cost: f64,
    next_hop: usize,
    own: usize,
) {
    if v == own {
        return;
    }
    let better = match label[v] {
        None => true,
        Some((old_cost, old_hop)) => cost
            .total_cmp(&old_cost)
            .then(next_hop.cmp(&old_hop))
            .is_lt(),
    };
    if better {
        label[v] = Some((cost, next_hop));
        heap.push(Reverse(QueueItem {
            cost,
            next_hop,
            node: v,
        }));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap, VecDeque};
    use std::time::Duration;

    use super::*;

    const T0: u64 = 1_700_000_000;

    fn update(
        node: &str,
        id: &str,
        epoch: u64,
        sequence: u64,
        connections: &[(&str, f64)],
    ) -> RoutingUpdate {
        RoutingUpdate {
            node_id: node.to_owned(),
            update_id: id.to_owned(),
            update_epoch: epoch,
            update_sequence: sequence,
            connections: Some(
                connections
                    .iter()
                    .map(|(n, c)| ((*n).to_owned(), *c))
                    .collect(),
            ),
            forwarding_node: node.to_owned(),
            suspected_duplicate: 0,
        }
    }

    fn row(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
    }

    /// A mesh of routing tables joined by perfect links. Floods follow the outcomes exactly as
    /// the node actor will: re-flood except to the arrival link, originate on a new node or on a
    /// duplicate suspicion.
    struct Sim {
        tables: BTreeMap<String, RoutingTable>,
        adj: BTreeMap<String, BTreeSet<String>>,
        queue: VecDeque<(String, String, RoutingUpdate)>,
        next_id: u64,
        now: Instant,
    }

    impl Sim {
        fn new(names: &[&str]) -> Self {
            let tables = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let epoch = new_epoch(T0, u32::try_from(i).expect("few nodes"));
                    ((*n).to_owned(), RoutingTable::new(*n, epoch))
                })
                .collect();
            Self {
                tables,
                adj: BTreeMap::new(),
                queue: VecDeque::new(),
                next_id: 0,
                now: Instant::now(),
            }
        }

        fn table(&self, name: &str) -> &RoutingTable {
            self.tables.get(name).expect("node in sim")
        }

        fn table_mut(&mut self, name: &str) -> &mut RoutingTable {
            self.tables.get_mut(name).expect("node in sim")
        }

        fn connect(&mut self, a: &str, b: &str, cost: f64) {
            self.table_mut(a).link_up(b, cost);
            self.table_mut(b).link_up(a, cost);
            self.adj
                .entry(a.to_owned())
                .or_default()
                .insert(b.to_owned());
            self.adj
                .entry(b.to_owned())
                .or_default()
                .insert(a.to_owned());
        }

        fn disconnect(&mut self, a: &str, b: &str) {
            self.table_mut(a).link_down(b);
            self.table_mut(b).link_down(a);
            self.adj.entry(a.to_owned()).or_default().remove(b);
            self.adj.entry(b.to_owned()).or_default().remove(a);
        }

        fn neighbours(&self, node: &str) -> Vec<String> {
            self.adj
                .get(node)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        }

        fn originate(&mut self, node: &str, suspected_duplicate: u64) {
            self.next_id += 1;
            let id = format!("u{:07}", self.next_id);
            let update = self.table_mut(node).make_update(id, suspected_duplicate);
            for n in self.neighbours(node) {
                self.queue.push_back((n, node.to_owned(), update.clone()));
            }
        }

        /// Originates from `from`, delivers everything until quiet, then recomputes everywhere.
        fn flood(&mut self, from: &[&str]) {
            for node in from {
                self.originate(node, 0);
            }
            let mut deliveries = 0;
            while let Some((to, arrival, update)) = self.queue.pop_front() {
                deliveries += 1;
                assert!(deliveries < 100_000, "flood does not terminate");
                let now = self.now;
                let outcome = self.table_mut(&to).handle_update(&update, now);
                if outcome.flood {
                    let mut forwarded = update.clone();
                    forwarded.forwarding_node.clone_from(&to);
                    for n in self.neighbours(&to) {
                        if n != arrival {
                            self.queue.push_back((n, to.clone(), forwarded.clone()));
                        }
                    }
                }
                if outcome.new_node.is_some() {
                    self.originate(&to, 0);
                }
                if let DuplicateAction::SuspectOther(epoch) = outcome.duplicate {
                    self.originate(&to, epoch);
                }
            }
            for table in self.tables.values_mut() {
                table.recompute();
            }
        }

        fn flood_all(&mut self) {
            let names: Vec<String> = self.tables.keys().cloned().collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            self.flood(&names);
        }
    }

    impl RoutingTable {
        fn remembers(&self, update_id: &str) -> bool {
            self.seen.contains(update_id)
        }

        /// The reverse index, by name.
        fn index_by_name(&self) -> HashMap<String, Vec<String>> {
            self.order
                .iter()
                .map(|&id| &self.slots[id as usize])
                .filter(|slot| !slot.listed_by.is_empty())
                .map(|slot| {
                    let mut listers: Vec<String> = slot
                        .listed_by
                        .iter()
                        .map(|&n| self.name(n).to_owned())
                        .collect();
                    listers.sort();
                    (slot.name.to_string(), listers)
                })
                .collect()
        }

        /// The reverse index, rebuilt from the rows.
        fn index_from_rows(&self) -> HashMap<String, Vec<String>> {
            let mut index: HashMap<String, BTreeSet<String>> = HashMap::new();
            for (node, row) in self.rows() {
                for neighbour in row.into_keys() {
                    index.entry(neighbour).or_default().insert(node.clone());
                }
            }
            index
                .into_iter()
                .map(|(n, set)| (n, set.into_iter().collect()))
                .collect()
        }

        /// Every row of the database by name, `null` ones and unlisted nodes' included.
        fn rows(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
            self.order
                .iter()
                .filter_map(|&id| Some((self.name(id).to_owned(), self.row_map(id)?)))
                .collect()
        }

        /// The version of a node of the database.
        fn version(&self, node: &str) -> Option<(u64, u64)> {
            self.entry(node).expect("node in the database").version
        }

        /// The interning invariants: `order` holds exactly the live slots, by name; a slot
        /// is live while it is a key or listed; counts match.
        fn check_slots(&self) {
            let names: Vec<&str> = self.order.iter().map(|&id| self.name(id)).collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]), "order not sorted");
            let live: BTreeSet<Id> = self.order.iter().copied().collect();
            let free: BTreeSet<Id> = self.free.iter().copied().collect();
            assert_eq!(free.len(), self.free.len(), "an id freed twice");
            assert_eq!(live.len() + free.len(), self.slots.len());
            assert!(live.is_disjoint(&free));
            for (i, slot) in self.slots.iter().enumerate() {
                let id = Id::try_from(i).expect("small");
                if live.contains(&id) {
                    assert!(
                        id == OWN || slot.entry.is_some() || !slot.listed_by.is_empty(),
                        "slot {} kept alive by nothing",
                        slot.name
                    );
                } else {
                    assert!(slot.entry.is_none() && slot.listed_by.is_empty());
                    assert!(slot.hop.is_none());
                }
                if let Some(hop) = slot.hop {
                    assert!(live.contains(&hop), "route through a freed slot");
                }
                for n in slot
                    .entry
                    .iter()
                    .flat_map(|e| e.connections.iter())
                    .flat_map(Row::ids)
                {
                    assert!(live.contains(&n), "row lists a freed slot");
                }
            }
            let keys = self.slots.iter().filter(|s| s.entry.is_some()).count();
            assert_eq!(keys, self.node_count);
            let routes = self.slots.iter().filter(|s| s.hop.is_some()).count();
            assert_eq!(routes, self.route_count);
            assert_eq!(self.route_map().len(), routes);
        }
    }

    /// The reverse index matches the rows, and deleting unconfirmed edges through it has the
    /// effect of the plain rule of §4.4 (visit every known node), over random updates, link
    /// changes and withdrawals.
    #[test]
    fn edge_removal_matches_the_plain_rule() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(7);
        let now = Instant::now();
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let mut t = RoutingTable::new("n0", 1);
        // The plain rule, applied to a copy of the rows.
        let mut plain: BTreeMap<String, Option<BTreeMap<String, f64>>> =
            BTreeMap::from([("n0".to_owned(), Some(BTreeMap::new()))]);
        // Nodes in the database proper (a link or a connections change put them there; a node
        // only ever heard of with null connections is not, as in Go).
        let mut listed: BTreeSet<String> = BTreeSet::from(["n0".to_owned()]);
        let mut sequence = 0;
        for step in 0..3000 {
            let node = &names[rng.random_range(0..names.len())];
            let peer = &names[rng.random_range(1..names.len())];
            match rng.random_range(0..10) {
                0 => {
                    t.link_up(peer, 1.0);
                    plain
                        .entry("n0".into())
                        .or_default()
                        .get_or_insert_default()
                        .insert(peer.clone(), 1.0);
                    plain
                        .entry(peer.clone())
                        .or_default()
                        .get_or_insert_default()
                        .insert("n0".into(), 1.0);
                    listed.insert(peer.clone());
                }
                1 => {
                    t.link_down(peer);
                    plain
                        .entry("n0".into())
                        .or_default()
                        .get_or_insert_default()
                        .remove(peer);
                    if let Some(Some(row)) = plain.get_mut(peer) {
                        row.remove("n0");
                    }
                }
                _ if node != "n0" => {
                    sequence += 1;
                    let links: Vec<(&str, f64)> = names
                        .iter()
                        .filter(|n| *n != node && rng.random_bool(0.3))
                        .map(|n| (n.as_str(), 1.0))
                        .collect();
                    let mut u = update(node, &format!("s{step}"), 5, sequence, &links);
                    if rng.random_bool(0.1) {
                        u.connections = None;
                    }
                    let outcome = t.handle_update(&u, now);
                    if outcome.dropped.is_none() {
                        plain.entry(node.clone()).or_default();
                    }
                    if outcome.topology_changed {
                        listed.insert(node.clone());
                        plain.insert(node.clone(), u.connections.clone());
                        for (other, row) in &mut plain {
                            if other != "n0"
                                && !u
                                    .connections
                                    .as_ref()
                                    .is_some_and(|c| c.contains_key(other))
                                && let Some(row) = row
                            {
                                row.remove(node);
                            }
                        }
                    }
                }
                _ => {}
            }
            let plain_costs: BTreeMap<String, BTreeMap<String, f64>> = plain
                .iter()
                .filter(|(n, _)| listed.contains(*n))
                .map(|(n, row)| (n.clone(), row.clone().unwrap_or_default()))
                .collect();
            assert_eq!(t.known_connection_costs(), plain_costs, "step {step}");
            assert_eq!(t.index_by_name(), t.index_from_rows(), "step {step}");
            t.check_slots();
        }
    }

    #[test]
    fn epoch_layout() {
        assert_eq!(new_epoch(1, 0), 1 << 24);
        assert_eq!(new_epoch(T0, 0xFF_FFFF), (T0 << 24) | 0xFF_FFFF);
        // Bits above 24 of the random part are discarded, so they cannot disturb the seconds.
        assert_eq!(new_epoch(T0, 0xFFFF_FFFF), new_epoch(T0, 0xFF_FFFF));
        assert!(new_epoch(T0 + 1, 0) > new_epoch(T0, 0xFF_FFFF));
    }

    #[test]
    fn make_update_increments_sequence_and_lists_links() {
        let mut t = RoutingTable::new("a", 7);
        let first = t.make_update("id000001".into(), 0);
        assert_eq!(first.update_sequence, 1);
        assert_eq!(first.connections, Some(BTreeMap::new()));
        assert_eq!(first.node_id, "a");
        assert_eq!(first.forwarding_node, "a");
        assert_eq!(first.update_epoch, 7);
        t.link_up("b", 2.5);
        let second = t.make_update("id000002".into(), 99);
        assert_eq!(second.update_sequence, 2);
        assert_eq!(second.connections, Some(row(&[("b", 2.5)])));
        assert_eq!(second.suspected_duplicate, 99);
        assert_eq!(t.sequence(), 2);
    }

    #[test]
    fn link_up_makes_peer_routable_before_its_first_update() {
        let mut t = RoutingTable::new("a", 1);
        t.link_up("b", 1.0);
        t.recompute();
        assert_eq!(t.next_hop("b"), Some("b"));
        assert!(!t.is_known("b"));
        assert!(t.is_known("a"));
        let costs = t.known_connection_costs();
        assert_eq!(costs["a"], row(&[("b", 1.0)]));
        assert_eq!(costs["b"], row(&[("a", 1.0)]));

        let outcome = t.handle_update(&update("b", "x1", 5, 1, &[("a", 1.0)]), Instant::now());
        assert_eq!(outcome.new_node.as_deref(), Some("b"));
        assert!(outcome.flood);
        assert!(t.is_known("b"));

        t.link_down("b");
        t.recompute();
        assert_eq!(t.next_hop("b"), None);
        let costs = t.known_connection_costs();
        assert!(costs["a"].is_empty());
        assert!(costs["b"].is_empty());
    }

    #[test]
    fn line_of_five_converges() {
        let mut sim = Sim::new(&["a", "b", "c", "d", "e"]);
        for (x, y) in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")] {
            sim.connect(x, y, 1.0);
        }
        sim.flood_all();
        for (name, table) in &sim.tables {
            for other in sim.tables.keys() {
                if other != name {
                    assert!(
                        table.next_hop(other).is_some(),
                        "{name} has no route to {other}"
                    );
                }
            }
            assert_eq!(table.next_hop(name), None, "no route to ourselves");
        }
        assert_eq!(sim.table("a").next_hop("e"), Some("b"));
        assert_eq!(sim.table("e").next_hop("a"), Some("d"));
        assert_eq!(sim.table("c").next_hop("a"), Some("b"));
        assert_eq!(sim.table("c").next_hop("e"), Some("d"));
        // Everyone holds the same database.
        let reference = sim.table("a").known_connection_costs();
        assert_eq!(reference.len(), 5);
        for table in sim.tables.values() {
            assert_eq!(table.known_connection_costs(), reference);
        }
    }

    #[test]
    fn ring_prefers_cheaper_path_and_routes_around_a_cut() {
        let mut sim = Sim::new(&["a", "b", "c", "d"]);
        sim.connect("a", "b", 1.0);
        sim.connect("b", "c", 1.0);
        sim.connect("c", "d", 1.0);
        sim.connect("d", "a", 10.0);
        sim.flood_all();
        assert_eq!(sim.table("a").next_hop("d"), Some("b"));
        assert_eq!(sim.table("a").next_hop("c"), Some("b"));
        assert_eq!(sim.table("d").next_hop("a"), Some("c"));

        sim.disconnect("b", "c");
        sim.flood(&["b", "c"]);
        assert_eq!(sim.table("a").next_hop("c"), Some("d"));
        assert_eq!(sim.table("a").next_hop("d"), Some("d"));
        assert_eq!(sim.table("b").next_hop("c"), Some("a"));
        assert_eq!(sim.table("c").next_hop("b"), Some("d"));
        // Both directions of the cut edge are gone everywhere.
        for table in sim.tables.values() {
            let costs = table.known_connection_costs();
            assert!(!costs["b"].contains_key("c"), "{}", table.own_id());
            assert!(!costs["c"].contains_key("b"), "{}", table.own_id());
        }
    }

    #[test]
    fn equal_cost_ties_pick_smallest_next_hop() {
        let mut sim = Sim::new(&["a", "b", "c", "d"]);
        // Two equal paths from a to d, through b and through c, whatever the insertion order.
        sim.connect("a", "c", 1.0);
        sim.connect("a", "b", 1.0);
        sim.connect("c", "d", 1.0);
        sim.connect("b", "d", 1.0);
        sim.flood_all();
        assert_eq!(sim.table("a").next_hop("d"), Some("b"));
        assert_eq!(sim.table("d").next_hop("a"), Some("b"));
    }

    #[test]
    fn epoch_restart_and_stale_updates() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", new_epoch(T0, 1));
        let old = new_epoch(T0, 2);
        let new = new_epoch(T0 + 60, 3);

        assert!(t.handle_update(&update("x", "i1", old, 5, &[]), now).flood);
        // Restart: larger epoch, sequence starting again at 1.
        let outcome = t.handle_update(&update("x", "i2", new, 1, &[("y", 1.0)]), now);
        assert!(outcome.flood);
        assert!(outcome.topology_changed);
        assert_eq!(outcome.new_node, None);
        assert_eq!(t.version("x"), Some((new, 1)));

        let before = t.known_connection_costs();
        for (id, epoch, seq) in [("i3", old, 6), ("i4", new, 1), ("i5", new, 0)] {
            let outcome = t.handle_update(&update("x", id, epoch, seq, &[]), now);
            assert!(!outcome.flood, "{id}");
            assert_eq!(outcome.dropped, Some("stale update"), "{id}");
        }
        assert_eq!(t.known_connection_costs(), before);
        assert_eq!(t.version("x"), Some((new, 1)));

        // Only the sequence moved: still flooded, but the topology is unchanged.
        let outcome = t.handle_update(&update("x", "i6", new, 2, &[("y", 1.0)]), now);
        assert!(outcome.flood);
        assert!(!outcome.topology_changed);
        assert_eq!(t.version("x"), Some((new, 2)));
    }

    #[test]
    fn own_id_updates_are_never_flooded() {
        let now = Instant::now();
        let epoch = new_epoch(T0, 10);
        let mut t = RoutingTable::new("a", epoch);

        let echo = t.handle_update(&update("a", "e1", epoch, 1, &[]), now);
        assert_eq!(echo.duplicate, DuplicateAction::None);
        assert!(!echo.flood);
        assert!(echo.dropped.is_some());

        let newer = t.handle_update(&update("a", "e2", epoch + 1, 1, &[]), now);
        assert_eq!(newer.duplicate, DuplicateAction::SuspectOther(epoch + 1));
        assert!(!newer.flood);

        let older = t.handle_update(&update("a", "e3", epoch - 1, 1, &[]), now);
        assert_eq!(older.duplicate, DuplicateAction::None);
        assert!(!older.flood);

        let mut accusation = update("a", "e4", epoch - 1, 9, &[]);
        accusation.suspected_duplicate = epoch;
        let outcome = t.handle_update(&accusation, now);
        assert_eq!(outcome.duplicate, DuplicateAction::WeAreDuplicate);
        assert!(!outcome.flood);

        // None of them was recorded as seen or stored.
        assert!(t.seen.is_empty());
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn duplicate_detection_on_both_sides() {
        let now = Instant::now();
        let old_epoch = new_epoch(T0, 1);
        let new_epoch_ = new_epoch(T0 + 100, 2);
        let mut old_x = RoutingTable::new("x", old_epoch);
        let mut new_x = RoutingTable::new("x", new_epoch_);
        let mut b = RoutingTable::new("b", new_epoch(T0, 3));
        old_x.link_up("b", 1.0);
        new_x.link_up("b", 1.0);
        b.link_up("x", 1.0);

        // b knows the old x first.
        let u = old_x.make_update("o1".into(), 0);
        assert!(b.handle_update(&u, now).flood);

        // The new x appears; b accepts its newer epoch and floods it, so the old x sees it.
        let u = new_x.make_update("n1".into(), 0);
        assert!(b.handle_update(&u, now).flood);
        let seen_by_old = old_x.handle_update(&u, now);
        assert_eq!(
            seen_by_old.duplicate,
            DuplicateAction::SuspectOther(new_epoch_)
        );

        // The old x accuses; b re-versions x to the accuser's epoch without touching links.
        let links_before = b.known_connection_costs();
        let accusation = old_x.make_update("o2".into(), new_epoch_);
        let outcome = b.handle_update(&accusation, now);
        assert!(outcome.flood);
        assert!(!outcome.topology_changed);
        assert_eq!(b.version("x"), Some((old_epoch, 2)));
        assert_eq!(b.known_connection_costs(), links_before);

        // The flooded accusation reaches the new x, which must shut down.
        let verdict = new_x.handle_update(&accusation, now);
        assert_eq!(verdict.duplicate, DuplicateAction::WeAreDuplicate);
        assert!(!verdict.flood);

        // The old incarnation's updates are accepted again.
        let u = old_x.make_update("o3".into(), 0);
        assert!(b.handle_update(&u, now).flood);
    }

    #[test]
    fn suspected_duplicate_for_other_epoch_changes_nothing_but_floods() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        t.handle_update(&update("x", "i1", 50, 3, &[("y", 1.0)]), now);
        let mut u = update("x", "i2", 40, 9, &[]);
        u.suspected_duplicate = 49;
        let outcome = t.handle_update(&u, now);
        assert!(outcome.flood);
        assert!(!outcome.topology_changed);
        assert_eq!(t.version("x"), Some((50, 3)));
        assert_eq!(t.known_connection_costs()["x"], row(&[("y", 1.0)]));

        // Unknown node: nothing stored, still flooded.
        let mut u = update("z", "i3", 40, 9, &[]);
        u.suspected_duplicate = 49;
        assert!(t.handle_update(&u, now).flood);
        assert!(!t.is_known("z"));
    }

    #[test]
    fn seen_update_is_not_processed_twice() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        let first = t.handle_update(&update("x", "same", 5, 1, &[]), now);
        assert!(first.flood);
        // Same UpdateID, even with a newer sequence: dropped as a loop echo.
        let second = t.handle_update(&update("x", "same", 5, 2, &[("y", 1.0)]), now);
        assert!(!second.flood);
        assert_eq!(second.dropped, Some("update already seen"));
        assert_eq!(t.version("x"), Some((5, 1)));
    }

    #[test]
    fn seen_keys_tell_update_ids_apart() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        let ids = [
            "",
            "abc",
            "abc\0",
            "ABC",
            "abcdefgh",
            "abcdefghijklmno",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
        ];
        let keys: BTreeSet<u64> = ids.iter().map(|id| t.seen.key(id)).collect();
        assert_eq!(keys.len(), ids.len());
        for (seq, id) in (1..).zip(ids) {
            assert!(!t.remembers(id), "{id:?}");
            assert!(
                t.handle_update(&update("x", id, 5, seq, &[]), now).flood,
                "{id:?}"
            );
            assert!(t.remembers(id), "{id:?}");
            let again = t.handle_update(&update("x", id, 5, seq + 100, &[]), now);
            assert_eq!(again.dropped, Some("update already seen"), "{id:?}");
        }
    }

    #[test]
    fn withdrawn_link_deletes_the_far_ends_edge() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        t.link_up("b", 1.0);
        t.handle_update(&update("b", "1", 5, 1, &[("a", 1.0), ("c", 1.0)]), now);
        t.handle_update(&update("c", "2", 5, 1, &[("b", 1.0), ("d", 2.0)]), now);
        t.recompute();
        assert_eq!(t.next_hop("c"), Some("b"));

        // c stops listing b: b's stale edge to c goes, so c becomes unreachable.
        let outcome = t.handle_update(&update("c", "3", 5, 2, &[("d", 2.0)]), now);
        assert!(outcome.topology_changed);
        let costs = t.known_connection_costs();
        assert_eq!(costs["b"], row(&[("a", 1.0)]));
        assert_eq!(costs["c"], row(&[("d", 2.0)]));
        t.recompute();
        assert_eq!(t.next_hop("c"), None);

        // b stops listing us: our own link is ours to manage and stays.
        t.handle_update(&update("b", "4", 5, 2, &[]), now);
        assert_eq!(t.known_connection_costs()["a"], row(&[("b", 1.0)]));
        t.recompute();
        assert_eq!(t.next_hop("b"), Some("b"));
    }

    #[test]
    fn nil_and_empty_connections_differ() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        let mut u = update("x", "1", 5, 1, &[]);
        assert!(t.handle_update(&u, now).topology_changed);
        u.update_id = "2".into();
        u.update_sequence = 2;
        u.connections = None;
        assert!(t.handle_update(&u, now).topology_changed);
        u.update_id = "3".into();
        u.update_sequence = 3;
        let outcome = t.handle_update(&u, now);
        assert!(outcome.flood);
        assert!(!outcome.topology_changed);
        assert!(t.known_connection_costs()["x"].is_empty());
    }

    /// Found by the `routing_update` fuzz target: the first update of a node with `null`
    /// connections put the node in the database (shown by `status`, and a destination from
    /// the next recompute) without `topology_changed`. Go keeps such a node out of
    /// `knownConnectionCosts` until it reports connections.
    #[test]
    fn null_connections_from_a_new_node_add_nothing_to_the_database() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        t.link_up("b", 1.0);
        t.handle_update(&update("b", "1", 5, 1, &[("a", 1.0), ("x", 1.0)]), now);
        let before = t.known_connection_costs();
        let mut u = update("x", "2", 5, 1, &[]);
        u.connections = None;
        let outcome = t.handle_update(&u, now);
        assert_eq!(outcome.new_node.as_deref(), Some("x"));
        assert!(outcome.flood);
        assert!(!outcome.topology_changed);
        assert!(t.is_known("x"));
        assert_eq!(t.known_connection_costs(), before);
        t.recompute();
        assert_eq!(t.next_hop("x"), None);
        // Once it reports connections it is in the database and routable.
        let outcome = t.handle_update(&update("x", "3", 5, 2, &[("b", 1.0)]), now);
        assert!(outcome.topology_changed);
        t.recompute();
        assert_eq!(t.next_hop("x"), Some("b"));
    }

    #[test]
    fn only_database_keys_are_destinations() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        t.link_up("b", 1.0);
        t.handle_update(&update("b", "1", 5, 1, &[("a", 1.0), ("ghost", 1.0)]), now);
        t.recompute();
        assert_eq!(t.next_hop("b"), Some("b"));
        assert_eq!(t.next_hop("ghost"), None);
        assert_eq!(t.routes().len(), 1);
    }

    #[test]
    fn huge_costs_overflow_without_breaking_paths() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        t.link_up("b", 1e308);
        t.handle_update(&update("b", "1", 5, 1, &[("a", 1e308), ("c", 1e308)]), now);
        t.handle_update(
            &update("c", "2", 5, 1, &[("b", 1e308), ("d", f64::MIN_POSITIVE)]),
            now,
        );
        t.handle_update(&update("d", "3", 5, 1, &[("c", f64::MIN_POSITIVE)]), now);
        t.recompute();
        // a -> c costs inf, as does a -> d: both are still paths.
        assert_eq!(t.next_hop("b"), Some("b"));
        assert_eq!(t.next_hop("c"), Some("b"));
        assert_eq!(t.next_hop("d"), Some("b"));
    }

    #[test]
    fn hostile_updates_are_rejected_without_state_change() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        t.link_up("b", 1.0);
        t.handle_update(&update("b", "ok", 5, 1, &[("a", 1.0)]), now);

        let long = "n".repeat(MAX_NAME_LEN + 1);
        let mut cases: Vec<(&str, RoutingUpdate)> = Vec::new();
        let too_many: BTreeMap<String, f64> = (0..=MAX_CONNECTIONS_PER_UPDATE)
            .map(|i| (format!("n{i}"), 1.0))
            .collect();
        let mut u = update("b", "h1", 5, 2, &[]);
        u.connections = Some(too_many);
        cases.push(("too many connections", u));
        for (i, cost) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, -0.0]
            .into_iter()
            .enumerate()
        {
            let id = format!("c{i}");
            cases.push((
                "invalid connection cost",
                update("b", &id, 5, 2, &[("a", 1.0), ("c", cost)]),
            ));
        }
        cases.push(("node ID too long", update(&long, "l1", 5, 1, &[])));
        cases.push((
            "neighbour name too long",
            update("b", "l2", 5, 2, &[(&long, 1.0)]),
        ));
        cases.push(("update ID too long", update("b", &long, 5, 2, &[])));
        // Our own ID with a hostile body is refused before the duplicate logic can act on it.
        let mut own = update("a", "l3", 99, 1, &[("b", f64::NAN)]);
        own.suspected_duplicate = 1;
        cases.push(("invalid connection cost", own));

        let costs = t.known_connection_costs();
        let seen = t.seen.len();
        for (reason, u) in &cases {
            let outcome = t.handle_update(u, now);
            assert_eq!(outcome.dropped, Some(*reason), "{}", u.update_id);
            assert!(!outcome.flood);
            assert!(!outcome.topology_changed);
            assert_eq!(outcome.duplicate, DuplicateAction::None);
            assert_eq!(outcome.new_node, None);
        }
        assert_eq!(t.known_connection_costs(), costs);
        assert_eq!(t.seen.len(), seen);
        assert_eq!(t.version("b"), Some((5, 1)));

        // The limits themselves are allowed.
        let mut u = update(&"m".repeat(MAX_NAME_LEN), "max", 5, 1, &[]);
        u.connections = Some(
            (0..MAX_CONNECTIONS_PER_UPDATE)
                .map(|i| (format!("n{i}"), f64::MAX))
                .collect(),
        );
        assert!(t.handle_update(&u, now).flood);
    }

    /// Links `a` to a peer `evil` that announces `count` fake nodes in a chain
    /// (evil - fake0 - fake1 - ...), so every admitted fake is reachable through evil.
    /// Returns how many updates were refused as "too many known nodes".
    fn fill_with_fakes(t: &mut RoutingTable, count: usize, now: Instant) -> usize {
        t.link_up("evil", 1.0);
        t.handle_update(
            &update("evil", "evil", 5, 1, &[("a", 1.0), ("fake0", 1.0)]),
            now,
        );
        let mut refused = 0;
        for i in 0..count {
            let prev = if i == 0 {
                "evil".to_owned()
            } else {
                format!("fake{}", i - 1)
            };
            let next = format!("fake{}", i + 1);
            let u = update(
                &format!("fake{i}"),
                &format!("id{i}"),
                5,
                1,
                &[(&prev, 1.0), (&next, 1.0)],
            );
            let outcome = t.handle_update(&u, now);
            if outcome.dropped == Some("too many known nodes") {
                assert!(!outcome.flood);
                assert_eq!(outcome.new_node, None);
                assert!(outcome.evicted.is_empty());
                refused += 1;
            }
        }
        refused
    }

    #[test]
    fn known_nodes_are_bounded() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        let refused = fill_with_fakes(&mut t, 20_000, now);
        assert_eq!(t.node_count(), MAX_KNOWN_NODES);
        assert_eq!(t.known_connection_costs().len(), MAX_KNOWN_NODES);
        // a and evil take two places; every fake was reachable, so none was evicted.
        assert_eq!(refused, 20_000 - (MAX_KNOWN_NODES - 2));
        // Known nodes still get through.
        let u = update("fake0", "again", 5, 2, &[("evil", 1.0), ("a", 1.0)]);
        assert!(t.handle_update(&u, now).flood);
    }

    /// A peer fills the table with fake nodes and goes away: the next real node to announce
    /// itself evicts the fakes, now unreachable, and is admitted and routed. Peers we are
    /// linked to stay, even those we have no update from.
    #[test]
    fn unreachable_nodes_make_room_for_a_new_one() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        t.link_up("b", 1.0);
        t.handle_update(&update("b", "b1", 5, 1, &[("a", 1.0)]), now);
        fill_with_fakes(&mut t, MAX_KNOWN_NODES, now);
        assert_eq!(t.node_count(), MAX_KNOWN_NODES);
        t.link_up("quiet", 1.0);
        assert_eq!(
            t.node_count(),
            MAX_KNOWN_NODES + 1,
            "links bypass the bound"
        );
        t.recompute();
        assert_eq!(t.next_hop("fake0"), Some("evil"));

        // While evil is linked its fakes are reachable: a new node is refused, twice (the
        // second time without a traversal, which this cannot see, but the outcome is the same).
        for id in ["r1", "r2"] {
            let outcome = t.handle_update(&update("real", id, 5, 1, &[("b", 1.0)]), now);
            assert_eq!(outcome.dropped, Some("too many known nodes"));
            assert!(outcome.evicted.is_empty());
        }

        t.link_down("evil");
        t.handle_update(&update("b", "b2", 5, 2, &[("a", 1.0), ("real", 1.0)]), now);
        let outcome = t.handle_update(&update("real", "r3", 5, 1, &[("b", 1.0)]), now);
        assert_eq!(outcome.dropped, None);
        assert!(outcome.flood);
        assert!(outcome.topology_changed);
        assert_eq!(outcome.new_node.as_deref(), Some("real"));
        let evicted: BTreeSet<&str> = outcome.evicted.iter().map(String::as_str).collect();
        assert_eq!(
            evicted.len(),
            MAX_KNOWN_NODES - 2,
            "evil and every admitted fake"
        );
        assert!(evicted.contains("evil") && evicted.contains("fake0"));
        for kept in ["a", "b", "quiet", "real"] {
            assert!(!evicted.contains(kept), "{kept} was evicted");
        }
        // Routes to the evicted nodes went with them, before any recompute.
        assert_eq!(t.next_hop("fake0"), None);
        assert_eq!(t.next_hop("evil"), None);
        assert_eq!(t.next_hop("b"), Some("b"));
        let costs = t.known_connection_costs();
        let names: Vec<&str> = costs.keys().map(String::as_str).collect();
        assert_eq!(names, ["a", "b", "quiet", "real"]);
        assert_eq!(t.index_by_name(), t.index_from_rows());
        t.check_slots();
        t.recompute();
        assert_eq!(t.next_hop("real"), Some("b"));
        assert_eq!(t.next_hop("quiet"), Some("quiet"));
        assert_eq!(t.routes().len(), 3);

        // What eviction gives up: a fake's epoch and sequence. Its old update under a new ID
        // counts as news again (and takes a place: the table has room now).
        let outcome = t.handle_update(&update("fake0", "replay", 5, 1, &[]), now);
        assert_eq!(outcome.new_node.as_deref(), Some("fake0"));
        // Update IDs are still remembered, so a verbatim replay is not.
        let replay = update("fake1", "id1", 5, 1, &[("fake0", 1.0), ("fake2", 1.0)]);
        assert_eq!(
            t.handle_update(&replay, now).dropped,
            Some("update already seen")
        );
    }

    #[test]
    fn seen_set_is_bounded_oldest_first() {
        let now = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        let total = MAX_SEEN_UPDATES + MAX_SEEN_UPDATES / 4;
        for seq in 1..=total {
            let seq64 = u64::try_from(seq).expect("fits");
            t.handle_update(&update("x", &format!("s{seq}"), 5, seq64, &[]), now);
            assert!(t.seen.len() <= MAX_SEEN_UPDATES);
        }
        // What the bound forgot is a prefix: every remembered ID is newer than every
        // forgotten one, and at least the newest half of the bound is remembered.
        let remembered: Vec<bool> = (1..=total)
            .map(|seq| t.remembers(&format!("s{seq}")))
            .collect();
        let first_kept = remembered.iter().position(|&r| r).expect("some kept");
        assert!(remembered[first_kept..].iter().all(|&r| r));
        assert!(total - first_kept >= MAX_SEEN_UPDATES / 2);
        assert!(!t.remembers("s1"));
    }

    #[test]
    fn purge_forgets_old_update_ids() {
        let t0 = Instant::now();
        let mut t = RoutingTable::new("a", 1);
        t.handle_update(&update("x", "early", 5, 1, &[]), t0);
        let t1 = t0 + Duration::from_secs(30 * 60);
        t.handle_update(&update("x", "late", 5, 2, &[]), t1);

        // Younger than the TTL: kept.
        t.purge_seen(t0 + SEEN_UPDATE_TTL - Duration::from_secs(1));
        assert!(t.remembers("early") && t.remembers("late"));
        // Exactly the TTL old: still kept (its generation is retired, not forgotten).
        t.purge_seen(t0 + SEEN_UPDATE_TTL);
        assert!(t.remembers("early") && t.remembers("late"));

        // The next generation starts with "later" and retires a TTL after it: then the
        // first one, at least a TTL old by then, is forgotten.
        let t2 = t0 + SEEN_UPDATE_TTL + Duration::from_secs(1);
        t.handle_update(&update("x", "later", 5, 3, &[]), t2);
        t.purge_seen(t2 + SEEN_UPDATE_TTL - Duration::from_secs(1));
        assert!(t.remembers("early") && t.remembers("later"));
        t.purge_seen(t2 + SEEN_UPDATE_TTL);
        assert!(!t.remembers("early"));
        assert!(!t.remembers("late"));
        assert!(t.remembers("later"));
        assert_eq!(t.seen.len(), 1);
        let t3 = t2 + SEEN_UPDATE_TTL;

        // A forgotten ID is processed again (and here accepted: its sequence is newer).
        assert!(t.handle_update(&update("x", "early", 5, 4, &[]), t3).flood);
        // A remembered one is not.
        assert!(!t.handle_update(&update("x", "later", 5, 5, &[]), t3).flood);
    }
}
