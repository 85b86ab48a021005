//! The node actor: the single owner of sessions, routing, services and timers.
//!
//! It joins the pure pieces (`wire`, `routing`, `adverts`, `firewall`) to I/O. Nothing here
//! awaits a peer: messages to sessions and local services are queued with `try_send` and
//! dropped when a queue is full (datagram semantics), so one slow peer cannot stall the mesh.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{StreamExt, StreamMap};
use tokio_util::sync::CancellationToken;

use super::{Advertise, Command, ConnectionInfo, ListenError, NodeConfig, SendError, Status};
use crate::ServiceName;
use crate::adverts::{AdOutcome, Advertisements};
use crate::backend::{Session, SessionInfo};
use crate::firewall::{Action, Firewall};
use crate::id::random_name;
use crate::metrics::{BackendTraffic, DropReason, MeshMetrics};
use crate::packet_conn::{Incoming, Unreachable};
use crate::routing::{DuplicateAction, RoutingTable, new_epoch};
use crate::wire::{self, Data, Message, RoutingUpdate, ServiceAdvertisement};

/// Interval of initial connect messages on a session not yet established (spec §2.1).
const INITIAL_INTERVAL: Duration = Duration::from_secs(1);
/// Initial messages sent before giving up on a session.
const INITIAL_MAX_SENDS: u32 = 11;
/// Coalescing delay for route floods and table recomputes.
const CHANGE_DELAY: Duration = Duration::from_millis(100);
/// Periodic routing update (also the keepalive).
const ROUTE_UPDATE_INTERVAL: Duration = Duration::from_secs(10);
/// Periodic service advertisements.
const SERVICE_AD_INTERVAL: Duration = Duration::from_secs(60);
/// Delay before advertising a newly registered service (and the first ads after start).
const SERVICE_AD_DELAY: Duration = Duration::from_secs(5);
/// How often links are checked for idleness.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How often old update IDs are forgotten.
const SEEN_PURGE_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Most sessions (established or not) the node holds; beyond this new ones are closed.
const MAX_SESSIONS: usize = 4096;
/// Share of a peer's queue (a quarter) that only data messages may take. Routing updates and service ads
/// come in floods (a mesh converging, a peer announcing thousands of nodes) and are sent again
/// periodically, so a dropped copy only delays them; data (pings, streams, unreachables) is not
/// re-sent by the mesh. Without the reserve, a flood that fills a queue drops every ping behind
/// it.
const DATA_RESERVE_DIVISOR: usize = 4;
/// Most names remembered for hash lookups.
const MAX_NAMES: usize = 20_000;
/// Commands, and separately session messages, handled per wakeup before timers and the other
/// sources get a turn. Batching amortises the select and timer setup over busy traffic
/// (QUIC sends a message per packet).
const BATCH: usize = 64;

const PING: &[u8] = b"ping";
const UNREACH: &[u8] = b"unreach";

type SessionId = u64;
type SessionStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Option<Bytes>> + Send>>;

struct Peer {
    outbound: mpsc::Sender<Bytes>,
    info: SessionInfo,
    /// Set once the first routing message arrived and was accepted.
    remote: Option<String>,
    cost: f64,
    /// The peer listed us in one of its updates.
    remote_established: bool,
    last_received: Instant,
    initial_sent: u32,
    next_initial: Instant,
    /// Send our advertisements on the next flood (new links learn services at once).
    needs_ads: bool,
    /// `mesh.session`: open as long as the session, a root of its own trace.
    span: tracing::Span,
    /// This session's backend's traffic counters.
    traffic: BackendTraffic,
}

struct LocalService {
    deliver: mpsc::Sender<Incoming>,
    advertise: Option<Advertise>,
}

pub(super) struct NodeActor {
    id: String,
    id_hash: u64,
    max_idle: Duration,
    firewall: Firewall,
    routing: RoutingTable,
    adverts: Advertisements,
    names: HashMap<u64, Arc<str>>,
    /// `id` again, shared cheaply with per-message code.
    shared_id: Arc<str>,
    services: HashMap<ServiceName, LocalService>,
    peers: HashMap<SessionId, Peer>,
    /// Remote node ID -> its (one) established session.
    connections: BTreeMap<String, SessionId>,
    /// Every session's inbound messages; `None` marks the end of a session.
    inbound: StreamMap<SessionId, SessionStream>,
    next_session: SessionId,
    commands: mpsc::Receiver<Command>,
    sessions: mpsc::Receiver<Session>,
    cancel: CancellationToken,
    /// Bumped whenever connections, routes, the link-state graph or services may have
    /// changed (see [`super::Node::topology_changes`]).
    topology: watch::Sender<u64>,
    metrics: Arc<MeshMetrics>,
    // Timers: each is the next instant the job runs.
    next_flood: Instant,
    next_recompute: Option<Instant>,
    next_ads: Instant,
    next_idle_check: Instant,
    next_purge: Instant,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NodeActor {
    pub(super) fn new(
        config: NodeConfig,
        commands: mpsc::Receiver<Command>,
        sessions: mpsc::Receiver<Session>,
        cancel: CancellationToken,
        topology: watch::Sender<u64>,
        metrics: Arc<MeshMetrics>,
    ) -> Self {
        let epoch = config
            .epoch
            .unwrap_or_else(|| new_epoch(unix_now(), rand::random::<u32>() & 0x00ff_ffff));
        let id_hash = wire::node_hash(&config.id);
        let now = Instant::now();
        let mut names = HashMap::new();
        let shared_id: Arc<str> = Arc::from(config.id.as_str());
        names.insert(id_hash, Arc::clone(&shared_id));
        Self {
            routing: RoutingTable::new(config.id.clone(), epoch),
            id: config.id,
            id_hash,
            max_idle: config.max_idle.max(super::MIN_IDLE_TIMEOUT),
            firewall: config.firewall,
            adverts: Advertisements::new(),
            names,
            shared_id,
            services: HashMap::new(),
            peers: HashMap::new(),
            connections: BTreeMap::new(),
            inbound: StreamMap::new(),
            next_session: 0,
            commands,
            sessions,
            cancel,
            topology,
            metrics,
            next_flood: now + ROUTE_UPDATE_INTERVAL,
            next_recompute: None,
            next_ads: now + SERVICE_AD_DELAY,
            next_idle_check: now + IDLE_CHECK_INTERVAL,
            next_purge: now + SEEN_PURGE_INTERVAL,
        }
    }

    pub(super) async fn run(mut self) {
        tracing::info!(epoch = self.routing.epoch(), "node started");
        loop {
            let wake = self.next_wakeup();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => {
                        self.handle_command(command);
                        for _ in 1..BATCH {
                            let Ok(command) = self.commands.try_recv() else { break };
                            self.handle_command(command);
                        }
                    }
                    None => break,
                },
                Some(session) = self.sessions.recv() => self.add_session(session),
                Some((sid, message)) = self.inbound.next(), if !self.inbound.is_empty() => {
                    self.handle_inbound(sid, message);
                    for _ in 1..BATCH {
                        let Some(Some((sid, message))) = self.inbound.next().now_or_never() else {
                            break;
                        };
                        self.handle_inbound(sid, message);
                    }
                }
                () = tokio::time::sleep_until(wake) => self.run_timers(),
            }
        }
        tracing::info!("node stopped");
    }

    fn handle_inbound(&mut self, sid: SessionId, message: Option<Bytes>) {
        match message {
            Some(message) => self.handle_message(sid, message),
            None => self.close_session(sid, "transport closed"),
        }
    }

    // === timers ===

    fn next_wakeup(&self) -> Instant {
        let mut wake = self
            .next_flood
            .min(self.next_ads)
            .min(self.next_idle_check)
            .min(self.next_purge);
        if let Some(at) = self.next_recompute {
            wake = wake.min(at);
        }
        for peer in self.peers.values() {
            if peer.remote.is_none() {
                wake = wake.min(peer.next_initial);
            }
        }
        wake
    }

    /// Tells topology watchers to look again. Watch channels coalesce, so a burst of
    /// changes costs a slow watcher one fresh look, never a queue.
    fn topology_changed(&self) {
        self.topology
            .send_modify(|generation| *generation = generation.wrapping_add(1));
        // Topology changes are rare next to messages: refresh the gauges here.
        self.metrics.connections.set_count(self.connections.len());
        self.metrics.sessions.set_count(self.peers.len());
        self.metrics.routes.set_count(self.routing.route_count());
        self.metrics
            .known_nodes
            .set_count(self.routing.node_count());
    }

    fn request_flood(&mut self) {
        self.next_flood = self.next_flood.min(Instant::now() + CHANGE_DELAY);
    }

    fn request_recompute(&mut self) {
        let at = Instant::now() + CHANGE_DELAY;
        self.next_recompute = Some(self.next_recompute.map_or(at, |t| t.min(at)));
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        if self.next_recompute.is_some_and(|t| t <= now) {
            self.next_recompute = None;
            let span = tracing::info_span!(
                parent: None,
                "mesh.routing.update",
                node.id = %self.id,
                mesh.routes = tracing::field::Empty,
            );
            let _entered = span.enter();
            self.routing.recompute();
            span.record("mesh.routes", self.routing.route_count());
            self.topology_changed();
            tracing::debug!(routes = ?self.routing.route_map(), "routing table recomputed");
        }
        if self.next_flood <= now {
            self.next_flood = now + ROUTE_UPDATE_INTERVAL;
            self.flood_own_update(0);
            let new_links: Vec<SessionId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.needs_ads && p.remote.is_some())
                .map(|(sid, _)| *sid)
                .collect();
            for sid in new_links {
                if let Some(peer) = self.peers.get_mut(&sid) {
                    peer.needs_ads = false;
                }
                for ad in self.own_ads() {
                    self.send_to_session(sid, ad.encode());
                }
            }
        }
        if self.next_ads <= now {
            self.next_ads = now + SERVICE_AD_INTERVAL;
            self.prune_closed_services();
            for ad in self.own_ads() {
                self.flood(ad.encode(), None);
            }
        }
        if self.next_idle_check <= now {
            self.next_idle_check = now + IDLE_CHECK_INTERVAL;
            let idle: Vec<SessionId> = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.remote.is_some() && now.duration_since(p.last_received) > self.max_idle
                })
                .map(|(sid, _)| *sid)
                .collect();
            for sid in idle {
                self.close_session(sid, "idle timeout");
            }
        }
        if self.next_purge <= now {
            self.next_purge = now + SEEN_PURGE_INTERVAL;
            self.routing.purge_seen(now);
        }
        let due: Vec<SessionId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.remote.is_none() && p.next_initial <= now)
            .map(|(sid, _)| *sid)
            .collect();
        for sid in due {
            self.send_initial(sid);
        }
    }

    // === sessions ===

    fn add_session(&mut self, session: Session) {
        if self.peers.len() >= MAX_SESSIONS {
            tracing::warn!(remote = %session.info.remote_addr, "too many sessions, closing new one");
            return;
        }
        let sid = self.next_session;
        self.next_session += 1;
        let traffic = self.metrics.backend(session.info.kind);
        tracing::debug!(session = sid, kind = session.info.kind, remote = %session.info.remote_addr, "new session");
        // A root, not a child of the node's span: a session can last as long as the node.
        let span = tracing::info_span!(
            parent: None,
            "mesh.session",
            node.id = %self.id,
            backend.kind = session.info.kind,
            peer.addr = %session.info.remote_addr,
            peer.id = tracing::field::Empty,
            mesh.close_reason = tracing::field::Empty,
        );
        let stream = ReceiverStream::new(session.inbound)
            .map(Some)
            .chain(tokio_stream::once(None));
        self.inbound.insert(sid, Box::pin(stream));
        self.peers.insert(
            sid,
            Peer {
                outbound: session.outbound,
                cost: session.info.link.cost,
                info: session.info,
                remote: None,
                remote_established: false,
                last_received: Instant::now(),
                initial_sent: 0,
                next_initial: Instant::now(),
                needs_ads: true,
                span,
                traffic,
            },
        );
        self.metrics.sessions.set_count(self.peers.len());
        self.send_initial(sid);
    }

    /// Sends the "initial connect message" on a session that is not established yet.
    fn send_initial(&mut self, sid: SessionId) {
        let Some(peer) = self.peers.get(&sid) else {
            return;
        };
        if peer.initial_sent >= INITIAL_MAX_SENDS {
            self.close_session(sid, "no routing message from peer");
            return;
        }
        let update = self.routing.make_update(random_name(), 0).encode();
        if let Some(peer) = self.peers.get_mut(&sid) {
            peer.initial_sent += 1;
            peer.next_initial = Instant::now() + INITIAL_INTERVAL;
        }
        self.send_to_session(sid, update);
    }

    fn reject(&mut self, sid: SessionId, why: &str) {
        if let Some(peer) = self.peers.get(&sid) {
            tracing::warn!(remote = %peer.info.remote_addr, peer.id = ?peer.remote, reason = why, "rejecting connection");
        }
        self.send_to_session(sid, Message::Reject.encode());
        self.close_session(sid, why);
    }

    fn close_session(&mut self, sid: SessionId, why: &str) {
        self.inbound.remove(&sid);
        let Some(peer) = self.peers.remove(&sid) else {
            return;
        };
        peer.span.record("mesh.close_reason", why);
        self.metrics.sessions.set_count(self.peers.len());
        // Dropping `peer.outbound` lets the pump flush what is queued and close the transport.
        if let Some(remote) = peer.remote {
            if self.connections.get(&remote) == Some(&sid) {
                self.connections.remove(&remote);
                self.routing.link_down(&remote);
                self.request_flood();
                self.request_recompute();
                self.topology_changed();
                tracing::info!(peer.id = %remote, reason = why, "connection closed");
            }
        } else {
            tracing::debug!(session = sid, remote = %peer.info.remote_addr, reason = why, "session closed before handshake");
        }
    }

    fn send_to_session(&mut self, sid: SessionId, message: Bytes) {
        let Some(peer) = self.peers.get(&sid) else {
            return;
        };
        let (len, is_route) = (message.len(), message.first() == Some(&wire::MSG_ROUTE));
        if message.first() != Some(&wire::MSG_DATA)
            && peer.outbound.capacity() <= peer.outbound.max_capacity() / DATA_RESERVE_DIVISOR
        {
            self.metrics.dropped(DropReason::SessionQueueFull);
            tracing::debug!(remote = %peer.info.remote_addr, "session queue full for control messages, message dropped");
            return;
        }
        match peer.outbound.try_send(message) {
            Ok(()) => {
                peer.traffic.messages_out.inc();
                peer.traffic.bytes_out.add(len as u64);
                if is_route {
                    self.metrics.routing_updates_sent.inc();
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.dropped(DropReason::SessionQueueFull);
                tracing::debug!(remote = %peer.info.remote_addr, "session queue full, message dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Sends to every established connection except `except`.
    fn flood(&mut self, message: Bytes, except: Option<SessionId>) {
        let targets: Vec<SessionId> = self
            .connections
            .values()
            .copied()
            .filter(|sid| Some(*sid) != except)
            .collect();
        for sid in targets {
            self.send_to_session(sid, message.clone());
        }
    }

    fn flood_own_update(&mut self, suspected_duplicate: u64) {
        if self.connections.is_empty() {
            return;
        }
        let update = self.routing.make_update(random_name(), suspected_duplicate);
        self.flood(update.encode(), None);
    }

    // === messages from peers ===

    fn handle_message(&mut self, sid: SessionId, raw: Bytes) {
        let Some(peer) = self.peers.get_mut(&sid) else {
            return;
        };
        peer.last_received = Instant::now();
        peer.traffic.messages_in.inc();
        peer.traffic.bytes_in.add(raw.len() as u64);
        let established = peer.remote.is_some();
        let message = match wire::decode(&raw) {
            Ok(message) => message,
            Err(wire::DecodeError::UnknownType(kind)) => {
                // A newer peer may speak more message types; Go ignores them too.
                tracing::debug!(remote = %peer.info.remote_addr, kind, "ignoring unknown message type");
                return;
            }
            Err(error) => {
                self.metrics.dropped(DropReason::Malformed);
                tracing::warn!(remote = %peer.info.remote_addr, peer.id = ?peer.remote, %error, "disconnecting peer that sent a malformed message");
                self.close_session(sid, "malformed message");
                return;
            }
        };
        match (message, established) {
            (Message::Reject, _) => {
                tracing::warn!(session = sid, "peer rejected the connection");
                self.close_session(sid, "rejected by peer");
            }
            (Message::Routing(update), false) => self.handshake(sid, &update),
            (_, false) => {} // anything else before the handshake is ignored (spec §2.2)
            (Message::Routing(update), true) => self.handle_routing(sid, update),
            (Message::ServiceAd(ad), true) => self.handle_service_ad(sid, ad, raw),
            (Message::Data(data), true) => self.handle_data(data),
        }
    }

    /// The first routing message on a session decides who the peer is (spec §2.2).
    fn handshake(&mut self, sid: SessionId, update: &RoutingUpdate) {
        let remote = update.forwarding_node.clone();
        let Some(peer) = self.peers.get(&sid) else {
            return;
        };
        if remote.is_empty() {
            return;
        }
        if let Err(reason) = crate::routing::validate_update(update).and_then(|()| {
            (remote.len() <= crate::routing::MAX_NAME_LEN)
                .then_some(())
                .ok_or("node ID too long")
        }) {
            return self.reject(sid, reason);
        }
        if remote == self.id {
            return self.reject(sid, "peer uses our own node ID");
        }
        if !peer.info.link.allows(&remote) {
            return self.reject(sid, "peer not in allowed peers");
        }
        if self.connections.contains_key(&remote) {
            return self.reject(sid, "already connected to this node ID");
        }
        if self.connections.len() >= MAX_SESSIONS {
            return self.reject(sid, "too many connections");
        }
        let cost = peer.info.link.cost_for(&remote);
        if let Some(peer) = self.peers.get_mut(&sid) {
            peer.remote = Some(remote.clone());
            peer.cost = cost;
            peer.span.record("peer.id", remote.as_str());
        }
        self.learn_name(&remote);
        self.connections.insert(remote.clone(), sid);
        self.metrics.connections_established.inc();
        self.routing.link_up(&remote, cost);
        self.request_flood();
        self.request_recompute();
        self.topology_changed();
        tracing::info!(peer.id = %remote, cost, "connection established");
    }

    fn handle_routing(&mut self, sid: SessionId, update: RoutingUpdate) {
        let Some(peer) = self.peers.get_mut(&sid) else {
            return;
        };
        let remote = peer.remote.clone().unwrap_or_default();
        self.metrics.routing_updates_received.inc();
        if update.forwarding_node != remote {
            return self.reject(sid, "remote node ID changed unexpectedly");
        }
        if let Err(reason) = crate::routing::validate_update(&update) {
            return self.reject(sid, reason);
        }
        if update.node_id == remote {
            match update.connections.as_ref().and_then(|c| c.get(&self.id)) {
                None if peer.remote_established => {
                    return self.reject(sid, "remote node no longer lists us as a connection");
                }
                None => return, // a late initial message
                Some(&cost) => {
                    peer.remote_established = true;
                    if cost != peer.cost {
                        return self.reject(sid, "we disagree about the connection cost");
                    }
                }
            }
        }
        let outcome = self.routing.handle_update(&update, Instant::now());
        if let Some(reason) = outcome.dropped {
            tracing::debug!(node = %update.node_id, reason, "routing update dropped");
        }
        match outcome.duplicate {
            DuplicateAction::None => {}
            DuplicateAction::SuspectOther(epoch) => {
                tracing::warn!(epoch, "another node is using our node ID");
                self.flood_own_update(epoch);
            }
            DuplicateAction::WeAreDuplicate => {
                tracing::error!("a newer node is using our node ID: shutting down");
                self.cancel.cancel();
                return;
            }
        }
        // Evicted nodes were unreachable; forgetting their names keeps the hash table from
        // filling up with a hostile peer's fakes (it would then refuse real nodes' names). A
        // node that comes back is announced as new and learnt again.
        for node in &outcome.evicted {
            self.forget_name(node);
        }
        if let Some(node) = outcome.new_node {
            self.learn_name(&node);
            self.request_flood();
        }
        if outcome.topology_changed {
            self.request_recompute();
            self.topology_changed();
        }
        if outcome.flood {
            let mut copy = update;
            copy.forwarding_node.clone_from(&self.id);
            self.flood(copy.encode(), Some(sid));
        }
    }

    fn handle_service_ad(&mut self, sid: SessionId, ad: ServiceAdvertisement, raw: Bytes) {
        if ad.node_id == self.id {
            return; // our own ad coming back
        }
        match self.adverts.handle(ad, raw.clone()) {
            AdOutcome::Stored | AdOutcome::Cancelled => {
                self.flood(raw, Some(sid));
                self.topology_changed();
            }
            AdOutcome::Stale => {}
            AdOutcome::Refused(reason) => tracing::debug!(reason, "service advertisement refused"),
        }
    }

    fn learn_name(&mut self, name: &str) {
        self.learn_hashed_name(wire::node_hash(name), name);
    }

    fn forget_name(&mut self, name: &str) {
        let hash = wire::node_hash(name);
        // Only if the hash maps to this very name: the first name for a hash wins (spec §3.2).
        if name != self.id && self.names.get(&hash).is_some_and(|known| **known == *name) {
            self.names.remove(&hash);
        }
    }

    fn learn_hashed_name(&mut self, hash: u64, name: &str) {
        if self.names.len() >= MAX_NAMES {
            return;
        }
        // The first name for a hash wins (spec §3.2). The routing table's copy of the name is
        // shared when it has one: this map holds a name per node of the mesh, as the table
        // does, so a copy of its own would cost every node an allocation per known node.
        let routing = &self.routing;
        self.names
            .entry(hash)
            .or_insert_with(|| routing.shared_name(name).unwrap_or_else(|| Arc::from(name)));
    }

    // === data ===

    fn handle_data(&mut self, data: Data) {
        let (Some(from), Some(to)) = (
            self.names.get(&data.from_node),
            self.names.get(&data.to_node),
        ) else {
            self.metrics.dropped(DropReason::UnknownNode);
            tracing::debug!(
                from = data.from_node,
                to = data.to_node,
                "data message with unknown node hash dropped"
            );
            return;
        };
        let (from, to) = (Arc::clone(from), Arc::clone(to));
        // Errors only matter to a local sender; this message came from the mesh.
        let _ = self.route(data, &from, &to);
    }

    /// Firewall, then local delivery or forwarding (spec §3.5).
    fn route(&mut self, data: Data, from: &str, to: &str) -> Result<(), SendError> {
        let action = if self.firewall.is_empty() {
            Action::Accept // the common case: skip building the service strings
        } else {
            let from_service = data.from_service.to_string_lossy();
            let to_service = data.to_service.to_string_lossy();
            self.firewall.evaluate(from, &from_service, to, &to_service)
        };
        match action {
            Action::Accept => {}
            Action::Drop => {
                self.metrics.dropped(DropReason::Firewall);
                return Ok(());
            }
            Action::Reject => {
                self.metrics.dropped(DropReason::Firewall);
                if data.from_service.as_bytes() != UNREACH {
                    self.send_unreachable(&data, from, to, "blocked by firewall");
                }
                return Ok(());
            }
        }
        if to == self.id {
            self.deliver_local(data, from)
        } else {
            self.forward(data, from, to)
        }
    }

    fn forward(&mut self, mut data: Data, from: &str, to: &str) -> Result<(), SendError> {
        if data.ttl == 0 {
            self.metrics.dropped(DropReason::HopLimit);
            if data.from_service.as_bytes() != UNREACH {
                self.send_unreachable(&data, from, to, "message expired");
            }
            return Ok(());
        }
        let Some(sid) = self
            .routing
            .next_hop(to)
            .and_then(|hop| self.connections.get(hop))
            .copied()
        else {
            self.metrics.dropped(DropReason::NoRoute);
            tracing::debug!(%to, "no route to node, data message dropped");
            return Err(SendError::NoRoute);
        };
        self.metrics.datagrams_forwarded.inc();
        data.ttl -= 1;
        self.send_to_session(sid, data.encode());
        Ok(())
    }

    fn deliver_local(&mut self, data: Data, from: &str) -> Result<(), SendError> {
        if matches!(data.to_service.as_bytes(), PING | UNREACH) {
            self.metrics.datagrams_delivered.inc();
        }
        match data.to_service.as_bytes() {
            PING => {
                let reply = Data {
                    ttl: super::MAX_FORWARDING_HOPS,
                    from_node: self.id_hash,
                    to_node: data.from_node,
                    from_service: data.to_service,
                    to_service: data.from_service,
                    payload: Bytes::new(),
                };
                let id = self.id.clone();
                self.route(reply, &id, from)
            }
            UNREACH => {
                self.deliver_unreachable(&data.payload, from);
                Ok(())
            }
            _ => {
                let Some(service) = self.services.get(&data.to_service) else {
                    self.metrics.dropped(DropReason::ServiceUnknown);
                    if from != self.id {
                        self.send_unreachable(&data, from, &self.id.clone(), "service unknown");
                        return Ok(());
                    }
                    return Err(SendError::ServiceUnknown);
                };
                let incoming = Incoming::Datagram {
                    from_node: from.to_owned(),
                    from_service: data.from_service,
                    payload: data.payload,
                };
                match service.deliver.try_send(incoming) {
                    Ok(()) => self.metrics.datagrams_delivered.inc(),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.metrics.dropped(DropReason::ServiceQueueFull);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.metrics.dropped(DropReason::ServiceUnknown);
                        self.unlisten(data.to_service);
                    }
                }
                Ok(())
            }
        }
    }

    fn send_unreachable(&mut self, data: &Data, from: &str, to: &str, problem: &str) {
        let report = wire::Unreachable {
            from_node: from.to_owned(),
            to_node: to.to_owned(),
            from_service: data.from_service.to_string_lossy(),
            to_service: data.to_service.to_string_lossy(),
            problem: problem.to_owned(),
        };
        let unreach = ServiceName::from_wire(*b"unreach\0");
        let message = Data {
            ttl: super::MAX_FORWARDING_HOPS,
            from_node: self.id_hash,
            to_node: data.from_node,
            from_service: unreach,
            to_service: unreach,
            payload: report.encode(),
        };
        let id = self.id.clone();
        let _ = self.route(message, &id, from);
    }

    fn deliver_unreachable(&mut self, payload: &[u8], reported_by: &str) {
        let Ok(report) = wire::Unreachable::decode(payload) else {
            tracing::debug!(from = reported_by, "malformed unreachable message dropped");
            return;
        };
        if report.from_node != self.id {
            return;
        }
        let Ok(service) = ServiceName::try_from(report.from_service.as_str()) else {
            return;
        };
        if let Some(local) = self.services.get(&service) {
            let _ = local.deliver.try_send(Incoming::Unreachable(Unreachable {
                problem: report.problem,
                reported_by: reported_by.to_owned(),
                to_node: report.to_node,
                to_service: report.to_service,
            }));
        }
    }

    // === commands from handles ===

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Listen {
                service,
                advertise,
                deliver,
                reply,
            } => {
                let _ = reply.send(self.listen(service, advertise, deliver));
            }
            Command::Unlisten(service) => self.unlisten(service),
            Command::Send {
                from_service,
                to_node,
                to_service,
                ttl,
                payload,
                reply,
            } => {
                let result = self.originate(from_service, &to_node, to_service, ttl, payload);
                let to_node = to_node.to_string();
                match (reply, result) {
                    (Some(reply), result) => {
                        let _ = reply.send(result);
                    }
                    (None, Ok(())) => {}
                    (None, Err(error)) => {
                        // Fire-and-forget senders (QUIC) learn of failures on their own queue.
                        if let Some(local) = self.services.get(&from_service) {
                            let _ = local.deliver.try_send(Incoming::SendFailed {
                                to_node,
                                to_service,
                                error,
                            });
                        }
                    }
                }
            }
        }
    }

    fn originate(
        &mut self,
        from_service: ServiceName,
        to_node: &str,
        to_service: ServiceName,
        ttl: u8,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let own_id = Arc::clone(&self.shared_id);
        let to = if to_node.eq_ignore_ascii_case("localhost") {
            &*own_id
        } else {
            to_node
        };
        let to_hash = wire::node_hash(to);
        self.learn_hashed_name(to_hash, to);
        // The table's copy of the name (the first name for a hash wins, spec §3.2).
        let to: Arc<str> = match self.names.get(&to_hash) {
            Some(known) if **known == *to => Arc::clone(known),
            _ => Arc::from(to),
        };
        let data = Data {
            ttl,
            from_node: self.id_hash,
            to_node: to_hash,
            from_service,
            to_service,
            payload,
        };
        self.route(data, &own_id, &to)
    }

    fn listen(
        &mut self,
        service: Option<ServiceName>,
        advertise: Option<Advertise>,
        deliver: mpsc::Sender<Incoming>,
    ) -> Result<ServiceName, ListenError> {
        self.prune_closed_services();
        let name = match service {
            Some(name) => {
                if matches!(name.as_bytes(), PING | UNREACH) {
                    return Err(ListenError::Reserved(name.to_string_lossy()));
                }
                if self.services.contains_key(&name) {
                    return Err(ListenError::InUse(name.to_string_lossy()));
                }
                name
            }
            None => loop {
                let Ok(name) = ServiceName::try_from(random_name().as_str()) else {
                    continue;
                };
                if !self.services.contains_key(&name) {
                    break name;
                }
            },
        };
        if advertise.is_some() {
            // Go waits 5 s before announcing a new service; so do we, batching bursts.
            self.next_ads = self.next_ads.min(Instant::now() + SERVICE_AD_DELAY);
        }
        let advertised = advertise.is_some();
        self.services
            .insert(name, LocalService { deliver, advertise });
        if advertised {
            self.topology_changed();
        }
        Ok(name)
    }

    fn unlisten(&mut self, service: ServiceName) {
        if let Some(LocalService {
            advertise: Some(advertise),
            ..
        }) = self.services.remove(&service)
        {
            let cancel = ServiceAdvertisement {
                node_id: self.id.clone(),
                service: service.to_string_lossy(),
                time: time::OffsetDateTime::now_utc(),
                conn_type: advertise.conn_type,
                tags: None,
                work_commands: None,
                cancel: true,
            };
            self.flood(cancel.encode(), None);
            self.topology_changed();
        }
    }

    fn prune_closed_services(&mut self) {
        let closed: Vec<ServiceName> = self
            .services
            .iter()
            .filter(|(_, s)| s.deliver.is_closed())
            .map(|(name, _)| *name)
            .collect();
        for name in closed {
            self.unlisten(name);
        }
    }

    /// Our advertisements, stamped now.
    fn own_ads(&self) -> Vec<ServiceAdvertisement> {
        let now = time::OffsetDateTime::now_utc();
        let mut ads: Vec<ServiceAdvertisement> = self
            .services
            .iter()
            .filter_map(|(name, local)| {
                let advertise = local.advertise.as_ref()?;
                Some(ServiceAdvertisement {
                    node_id: self.id.clone(),
                    service: name.to_string_lossy(),
                    time: now,
                    conn_type: advertise.conn_type,
                    tags: Some(advertise.tags.clone()),
                    work_commands: advertise.work_commands.clone(),
                    cancel: false,
                })
            })
            .collect();
        ads.sort_by(|a, b| a.service.cmp(&b.service));
        ads
    }

    fn status(&self) -> Status {
        let connections = self
            .connections
            .iter()
            .filter_map(|(node, sid)| {
                self.peers.get(sid).map(|p| ConnectionInfo {
                    node_id: node.clone(),
                    cost: p.cost,
                })
            })
            .collect();
        let mut advertisements: Vec<ServiceAdvertisement> = self
            .adverts
            .iter()
            .filter(|stored| stored.ad.node_id != self.id)
            .map(|stored| stored.ad.clone())
            .collect();
        advertisements.extend(self.own_ads());
        advertisements.sort_by(|a, b| (&a.node_id, &a.service).cmp(&(&b.node_id, &b.service)));
        Status {
            node_id: self.id.clone(),
            connections,
            routes: self.routing.route_map(),
            known_connection_costs: self.routing.known_connection_costs(),
            advertisements,
        }
    }
}
