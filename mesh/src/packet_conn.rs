//! Unreliable datagrams between `(node, service)` pairs (Go's `netceptor.PacketConn`).
//!
//! Two ways to send: [`PacketConn::send_to`] waits for the node to route the datagram and
//! reports the outcome; [`PacketConn::try_send_to`] only queues it (no reply per datagram), for
//! callers such as QUIC that send many packets from `poll` functions. Both go through the node
//! actor's one routing path.

use std::future::Future;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::ServiceName;
pub use crate::node::TrySendError;
use crate::node::{Command, MAX_FORWARDING_HOPS, Node, SendError};

/// Something that arrived for a local service.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A datagram.
    Datagram {
        /// Sending node.
        from_node: String,
        /// Sending service.
        from_service: ServiceName,
        /// The payload.
        payload: Bytes,
    },
    /// A message this service sent could not be delivered.
    Unreachable(Unreachable),
    /// A datagram queued with [`PacketConn::try_send_to`] could not be routed by this node.
    SendFailed {
        /// The destination node.
        to_node: String,
        /// The destination service.
        to_service: ServiceName,
        /// Why it failed.
        error: SendError,
    },
}

/// An unreachable report for a message we sent (spec/wire.md §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// `service unknown`, `message expired` or `blocked by firewall`.
    pub problem: String,
    /// The node that detected the problem.
    pub reported_by: String,
    /// The original destination node.
    pub to_node: String,
    /// The original destination service.
    pub to_service: String,
}

/// A registered local service: receives datagrams addressed to it and sends from it.
///
/// Dropping it unregisters the service (and withdraws its advertisement).
#[derive(Debug)]
pub struct PacketConn {
    node: Node,
    service: ServiceName,
    incoming: mpsc::Receiver<Incoming>,
}

impl PacketConn {
    pub(crate) fn new(
        node: Node,
        service: ServiceName,
        incoming: mpsc::Receiver<Incoming>,
    ) -> Self {
        Self {
            node,
            service,
            incoming,
        }
    }

    /// Our service name.
    pub fn local_service(&self) -> ServiceName {
        self.service
    }

    /// The node this service lives on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Sends `payload` to `node:service` with the default hops-to-live. `localhost` means this
    /// node.
    ///
    /// # Errors
    /// No route, an unknown local service, a bad service name, or the node stopped.
    pub async fn send_to(
        &self,
        node: &str,
        service: &str,
        payload: Bytes,
    ) -> Result<(), SendError> {
        self.send_to_ttl(node, service, payload, MAX_FORWARDING_HOPS)
            .await
    }

    /// Like [`send_to`](Self::send_to) with an explicit hops-to-live.
    ///
    /// # Errors
    /// As for [`send_to`](Self::send_to).
    pub async fn send_to_ttl(
        &self,
        node: &str,
        service: &str,
        payload: Bytes,
        ttl: u8,
    ) -> Result<(), SendError> {
        let to_service = ServiceName::try_from(service)?;
        let (reply, result) = oneshot::channel();
        self.node
            .command(Command::Send {
                from_service: self.service,
                to_node: node.into(),
                to_service,
                ttl,
                payload,
                reply: Some(reply),
            })
            .await?;
        result.await.map_err(|_| SendError::Shutdown)?
    }

    /// Queues `payload` for `node:service` with the default hops-to-live, without waiting.
    ///
    /// Routing happens later in the node; if it fails, an [`Incoming::SendFailed`] arrives on
    /// this connection. Unreachable reports from other nodes arrive as usual.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the node's inbox is full (wait for
    /// [`send_ready`](Self::send_ready)), a bad service name, or the node stopped.
    pub fn try_send_to(
        &self,
        node: &str,
        service: &str,
        payload: Bytes,
    ) -> Result<(), TrySendError> {
        let to_service = ServiceName::try_from(service)?;
        self.node
            .try_send_data(self.service, node.into(), to_service, payload)
    }

    /// Resolves when [`try_send_to`](Self::try_send_to) is likely to find room. The future
    /// does not borrow `self`, so it can be stored in a poller.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn send_ready(&self) -> impl Future<Output = Result<(), TrySendError>> + Send + 'static {
        self.node.send_ready()
    }

    /// The next datagram or report; `None` once the node has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is lost if the future is dropped.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// Polls for the next datagram or report; `Ready(None)` once the node has stopped.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.incoming.poll_recv(cx)
    }

    /// Polls for up to `limit` items at once, appending them to `buffer`. `Ready(0)` means
    /// the node has stopped (or `limit` is 0).
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut Vec<Incoming>,
        limit: usize,
    ) -> Poll<usize> {
        self.incoming.poll_recv_many(cx, buffer, limit)
    }
}

impl Drop for PacketConn {
    fn drop(&mut self) {
        self.node.try_command(Command::Unlisten(self.service));
    }
}
