//! quinn's socket and runtime seams over the mesh.
//!
//! [`MeshSocket`] implements [`quinn::AsyncUdpSocket`] over one [`PacketConn`]: every QUIC
//! packet is one data message. Remote `(node, service)` pairs get stable synthetic IPv6
//! addresses (ULA `fd00::/8`) from a bounded two-way table owned by the socket. Sends use the
//! node's fire-and-forget path; readiness comes from the node's inbox capacity.
//!
//! [`MeshRuntime`] is quinn's runtime: Tokio timers and clock, with quinn's driver tasks
//! spawned into the node's task tracker instead of detached.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, UdpPoller};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::MAX_PACKET_SIZE;
use crate::node::{Node, SendError};
use crate::packet_conn::{Incoming, PacketConn, TrySendError, Unreachable};
use crate::{ServiceName, wire};

/// Most remote `(node, service)` pairs one socket maps at a time.
pub(super) const MAX_REMOTES: usize = 4096;
/// A mapping unused for this long may be replaced when the table is full (twice the QUIC
/// idle timeout, so its connection is certainly gone).
const REMOTE_EXPIRY: Duration = Duration::from_secs(60);
/// Reports (unreachables, local send failures) queued for the dial or listener watching them.
pub(super) const REPORT_QUEUE: usize = 16;

/// A remote endpoint of a stream: a service on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Remote {
    pub(super) node: Arc<str>,
    pub(super) service: ServiceName,
}

/// Something the node told us about our own traffic.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Report {
    /// Another node (or ours) reported a datagram undeliverable.
    Unreachable(Unreachable),
    /// Our node could not route a datagram.
    SendFailed {
        to_node: String,
        to_service: ServiceName,
        error: SendError,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Sections under these locks do not panic; recover the data if one somehow did.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The synthetic address of `(node, service)`: `fd` + 56 bits of the node hash + the 8-byte
/// service field, with the port (from 1) telling apart the rare pairs that collide.
pub(super) fn synthetic_addr(node: &str, service: ServiceName, port: u16) -> SocketAddr {
    let hash = wire::node_hash(node).to_be_bytes();
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..8].copy_from_slice(&hash[1..8]);
    octets[8..16].copy_from_slice(&service.to_wire());
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(octets), port, 0, 0))
}

struct Entry {
    remote: Remote,
    last_used: Instant,
}

/// The two-way map between remotes and synthetic addresses.
#[derive(Default)]
struct AddrTable {
    by_addr: HashMap<SocketAddr, Entry>,
    by_remote: HashMap<Arc<str>, HashMap<ServiceName, SocketAddr>>,
}

impl AddrTable {
    fn addr_of(&mut self, node: &str, service: ServiceName) -> Option<SocketAddr> {
        let now = Instant::now();
        if let Some(addr) = self.by_remote.get(node).and_then(|m| m.get(&service)) {
            if let Some(entry) = self.by_addr.get_mut(addr) {
                entry.last_used = now;
            }
            return Some(*addr);
        }
        if self.by_addr.len() >= MAX_REMOTES && !self.evict_one(now) {
            return None;
        }
        let node: Arc<str> = Arc::from(node);
        let addr = (1..=u16::MAX)
            .map(|port| synthetic_addr(&node, service, port))
            .find(|addr| !self.by_addr.contains_key(addr))?;
        self.by_addr.insert(
            addr,
            Entry {
                remote: Remote {
                    node: Arc::clone(&node),
                    service,
                },
                last_used: now,
            },
        );
        self.by_remote
            .entry(node)
            .or_default()
            .insert(service, addr);
        Some(addr)
    }

    fn remote_of(&self, addr: &SocketAddr) -> Option<&Remote> {
        self.by_addr.get(addr).map(|e| &e.remote)
    }

    /// Forgets the least recently used mapping if it has expired.
    fn evict_one(&mut self, now: Instant) -> bool {
        let Some((addr, entry)) = self.by_addr.iter().min_by_key(|(_, e)| e.last_used) else {
            return false;
        };
        if now.duration_since(entry.last_used) < REMOTE_EXPIRY {
            return false;
        }
        let (addr, remote) = (*addr, entry.remote.clone());
        self.by_addr.remove(&addr);
        if let Some(services) = self.by_remote.get_mut(&*remote.node) {
            services.remove(&remote.service);
            if services.is_empty() {
                self.by_remote.remove(&*remote.node);
            }
        }
        true
    }
}

struct RecvState {
    conn: PacketConn,
    batch: Vec<Incoming>,
}

/// A quinn socket over a mesh service.
pub(super) struct MeshSocket {
    node: Node,
    service: ServiceName,
    local: SocketAddr,
    recv: Mutex<RecvState>,
    table: Mutex<AddrTable>,
    reports: mpsc::Sender<Report>,
}

impl fmt::Debug for MeshSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshSocket")
            .field("node", &self.node.id())
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl MeshSocket {
    /// Wraps `conn`. Reports about our traffic go to `reports` (dropped when it is full).
    pub(super) fn new(conn: PacketConn, reports: mpsc::Sender<Report>) -> Self {
        let node = conn.node().clone();
        let service = conn.local_service();
        Self {
            local: synthetic_addr(node.id(), service, 0),
            node,
            service,
            recv: Mutex::new(RecvState {
                conn,
                batch: Vec::new(),
            }),
            table: Mutex::new(AddrTable::default()),
            reports,
        }
    }

    /// Our service name.
    pub(super) fn service(&self) -> ServiceName {
        self.service
    }

    /// The address quinn should use for `node:service` (`None` if the table is full).
    pub(super) fn addr_of(&self, node: &str, service: ServiceName) -> Option<SocketAddr> {
        lock(&self.table).addr_of(node, service)
    }

    /// The remote behind a synthetic address.
    pub(super) fn remote_of(&self, addr: &SocketAddr) -> Option<Remote> {
        lock(&self.table).remote_of(addr).cloned()
    }

    fn report(&self, report: Report) {
        // Only the first few matter (a dial aborts on the first); drop the rest.
        let _ = self.reports.try_send(report);
    }
}

impl AsyncUdpSocket for MeshSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(SendPoller {
            node: self.node.clone(),
            pending: Mutex::new(None),
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let len = transmit.contents.len();
        if len > usize::from(MAX_PACKET_SIZE) || transmit.segment_size.is_some_and(|s| s != len) {
            // quinn is configured never to do this; a Go peer would truncate it anyway.
            tracing::warn!(len, "dropping an oversized QUIC datagram");
            return Ok(());
        }
        let Some(remote) = lock(&self.table).remote_of(&transmit.destination).cloned() else {
            tracing::debug!(addr = %transmit.destination, "QUIC datagram to an unmapped address dropped");
            return Ok(());
        };
        let payload = Bytes::copy_from_slice(transmit.contents);
        match self
            .node
            .try_send_data(self.service, remote.node, remote.service, payload)
        {
            Ok(()) => Ok(()),
            Err(TrySendError::Full) => Err(io::ErrorKind::WouldBlock.into()),
            Err(TrySendError::Shutdown | TrySendError::ServiceName(_)) => {
                Err(io::Error::new(io::ErrorKind::NotConnected, "node stopped"))
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let limit = bufs.len().min(meta.len());
        if limit == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut state = lock(&self.recv);
        let RecvState { conn, batch } = &mut *state;
        loop {
            batch.clear();
            match conn.poll_recv_many(cx, batch, limit) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "node stopped",
                    )));
                }
                Poll::Ready(_) => {}
            }
            let mut filled = 0;
            for item in batch.drain(..) {
                match item {
                    Incoming::Datagram {
                        from_node,
                        from_service,
                        payload,
                    } => {
                        let buf = &mut bufs[filled];
                        if payload.is_empty() || payload.len() > buf.len() {
                            // quic-go would truncate (and fail to decrypt) what we cannot hold.
                            tracing::debug!(len = payload.len(), "unusable QUIC datagram dropped");
                            continue;
                        }
                        let Some(addr) = lock(&self.table).addr_of(&from_node, from_service) else {
                            tracing::debug!(%from_node, "too many QUIC peers, datagram dropped");
                            continue;
                        };
                        buf[..payload.len()].copy_from_slice(&payload);
                        meta[filled] = RecvMeta {
                            addr,
                            len: payload.len(),
                            stride: payload.len(),
                            ecn: None,
                            dst_ip: None,
                        };
                        filled += 1;
                    }
                    Incoming::Unreachable(unreachable) => {
                        self.report(Report::Unreachable(unreachable));
                    }
                    Incoming::SendFailed {
                        to_node,
                        to_service,
                        error,
                    } => self.report(Report::SendFailed {
                        to_node,
                        to_service,
                        error,
                    }),
                }
            }
            if filled > 0 {
                return Poll::Ready(Ok(filled));
            }
            // Only reports (or dropped datagrams): poll again so a waker is registered.
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        // A data message arrives whole or not at all, so path MTU discovery is meaningful.
        false
    }
}

type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), TrySendError>> + Send>>;

/// Waits for room in the node's inbox.
struct SendPoller {
    node: Node,
    /// Only touched through `&mut self` (`get_mut`), so the lock is never contended; it makes
    /// the poller `Sync` as quinn requires.
    pending: Mutex<Option<ReadyFuture>>,
}

impl fmt::Debug for SendPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendPoller").finish_non_exhaustive()
    }
}

impl UdpPoller for SendPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let pending = this
            .pending
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let future = pending.get_or_insert_with(|| Box::pin(this.node.send_ready()));
        let result = future.as_mut().poll(cx);
        if result.is_ready() {
            *pending = None;
        }
        result.map(|ready| {
            ready.map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "node stopped"))
        })
    }
}

/// quinn's runtime on the mesh: Tokio time (so paused-clock tests work) and quinn's tasks in
/// the node's tracker.
#[derive(Debug)]
pub(super) struct MeshRuntime {
    pub(super) node: Node,
}

#[allow(
    clippy::disallowed_types,
    reason = "quinn's Runtime trait speaks std Instant; the values come from the Tokio clock"
)]
impl Runtime for MeshRuntime {
    fn new_timer(&self, at: std::time::Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        if !self.node.spawn_tracked(future) {
            tracing::debug!("node stopped, QUIC task not started");
        }
    }

    fn wrap_udp_socket(&self, _socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "mesh endpoints have no UDP socket",
        ))
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> ServiceName {
        ServiceName::try_from(name).expect("short name")
    }

    #[test]
    fn synthetic_addresses_are_stable_ula_and_carry_the_service() {
        let a = synthetic_addr("node1", svc("control"), 1);
        assert_eq!(a, synthetic_addr("node1", svc("control"), 1));
        let SocketAddr::V6(v6) = a else {
            panic!("not IPv6")
        };
        assert_eq!(v6.ip().octets()[0], 0xfd);
        assert_eq!(&v6.ip().octets()[8..], b"control\0");
        assert_ne!(a, synthetic_addr("node2", svc("control"), 1));
        assert_ne!(a, synthetic_addr("node1", svc("other"), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn table_is_two_way_bounded_and_recycles_expired_entries() {
        let mut table = AddrTable::default();
        let first = table.addr_of("n", svc("s0")).expect("room");
        assert_eq!(table.addr_of("n", svc("s0")), Some(first));
        assert_eq!(
            table.remote_of(&first),
            Some(&Remote {
                node: Arc::from("n"),
                service: svc("s0")
            })
        );
        for i in 1..MAX_REMOTES {
            table.addr_of("n", svc(&format!("s{i}"))).expect("room");
        }
        assert_eq!(
            table.addr_of("other", svc("x")),
            None,
            "full, nothing expired"
        );
        tokio::time::advance(REMOTE_EXPIRY + Duration::from_secs(1)).await;
        table.addr_of("n", svc("s1")).expect("still mapped"); // refreshes s1
        let new = table
            .addr_of("other", svc("x"))
            .expect("an expired entry was recycled");
        assert_eq!(table.by_addr.len(), MAX_REMOTES);
        assert!(table.remote_of(&new).is_some());
    }
}
