//! Unreliable datagrams between `(node, service)` pairs (Go's `netceptor.PacketConn`).

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::ServiceName;
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
                to_node: node.to_owned(),
                to_service,
                ttl,
                payload,
                reply: Some(reply),
            })
            .await?;
        result.await.map_err(|_| SendError::Shutdown)?
    }

    /// The next datagram or unreachable report; `None` once the node has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is lost if the future is dropped.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }
}

impl Drop for PacketConn {
    fn drop(&mut self) {
        self.node.try_command(Command::Unlisten(self.service));
    }
}
