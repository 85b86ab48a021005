//! [`Stream`]: the one bidirectional QUIC stream of a mesh connection, and the task that
//! supervises its connection.
//!
//! Each connection has a supervisor task in the node's tracker. While the `Stream` lives, the
//! supervisor watches for the connection closing and (on the dialer) for `service unknown`
//! reports about the dialed service. When the `Stream` is dropped it hands its two halves to
//! the supervisor, which closes carefully (spec/wire.md §10.6): it finishes our send side,
//! drains and discards what the peer still sends until its FIN, waits until the peer has
//! acknowledged all our data, and only then closes the connection with application error 0
//! ("normal close"). quic-go discards buffered stream data the moment its connection closes,
//! so closing any earlier could cut off a slow reader.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::socket::{Remote, Report};
use super::{ERROR_LISTENER, ERROR_NORMAL_CLOSE, MAX_LINGER};
use crate::ServiceName;
use crate::node::Node;

/// A byte stream to a service on another (or this) node.
///
/// Reads and writes go straight to quinn. [`shutdown`](AsyncWrite::poll_shutdown) sends our
/// FIN (half-close): the peer reads EOF and can still answer. Dropping the stream closes it
/// gracefully in the background without losing data on either side; see the module docs.
pub struct Stream {
    halves: Option<(SendStream, RecvStream)>,
    connection: Connection,
    remote: Remote,
    local_service: ServiceName,
    handover: Option<oneshot::Sender<(SendStream, RecvStream)>>,
    /// Counts this stream in `receptor_mesh_streams_open` while it lives.
    _open: crate::metrics::GaugeGuard,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("remote_node", &self.remote.node)
            .field("remote_service", &self.remote.service)
            .field("local_service", &self.local_service)
            .finish_non_exhaustive()
    }
}

/// What the supervisor watches besides the connection itself.
pub(super) struct Watch {
    /// Reports about traffic to the remote (node, service) of this connection.
    pub(super) reports: Option<(mpsc::Receiver<Report>, Remote)>,
    /// The dialer's own endpoint, kept until the connection is done.
    pub(super) endpoint: Option<Endpoint>,
}

impl Stream {
    /// Wraps an established connection and its stream, and starts its supervisor.
    pub(super) fn start(
        node: &Node,
        connection: Connection,
        send: SendStream,
        recv: RecvStream,
        remote: Remote,
        local_service: ServiceName,
        watch: Watch,
    ) -> Self {
        let (handover, halves) = oneshot::channel();
        node.metrics().streams_opened.inc();
        let open = node.metrics().streams_open.track();
        let supervised = connection.clone();
        if !node.spawn_tracked(supervise(supervised, halves, watch)) {
            // The node is stopping; the stream will fail on first use.
            connection.close(VarInt::from_u32(ERROR_LISTENER), b"netceptor shutdown");
        }
        Self {
            halves: Some((send, recv)),
            connection,
            remote,
            local_service,
            handover: Some(handover),
            _open: open,
        }
    }

    /// The node at the other end.
    pub fn remote_node(&self) -> &str {
        &self.remote.node
    }

    /// The service at the other end (the dialer's ephemeral service, on a listener).
    pub fn remote_service(&self) -> ServiceName {
        self.remote.service
    }

    /// Our service: the listener's name, or the dialer's ephemeral one.
    pub fn local_service(&self) -> ServiceName {
        self.local_service
    }

    /// The QUIC connection, for statistics and diagnostics.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    fn send(&mut self) -> io::Result<&mut SendStream> {
        self.halves
            .as_mut()
            .map(|(send, _)| send)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "stream closed"))
    }

    fn recv(&mut self) -> io::Result<&mut RecvStream> {
        self.halves
            .as_mut()
            .map(|(_, recv)| recv)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "stream closed"))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().recv() {
            Ok(recv) => Pin::new(recv).poll_read(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().send() {
            Ok(send) => AsyncWrite::poll_write(Pin::new(send), cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().send() {
            Ok(send) => AsyncWrite::poll_flush(Pin::new(send), cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    /// Finishes our send side (FIN). Repeated calls succeed.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = match self.get_mut().send() {
            Ok(send) => match send.finish() {
                Ok(()) | Err(quinn::ClosedStream { .. }) => Ok(()),
            },
            Err(error) => Err(error),
        };
        Poll::Ready(result)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let (Some(halves), Some(handover)) = (self.halves.take(), self.handover.take()) {
            // If the supervisor is gone the connection is closed already; nothing to save.
            let _ = handover.send(halves);
        }
    }
}

/// Watches a connection while its `Stream` lives, then closes it carefully.
async fn supervise(
    connection: Connection,
    halves: oneshot::Receiver<(SendStream, RecvStream)>,
    mut watch: Watch,
) {
    let endpoint = watch.endpoint.take();
    let halves = tokio::select! {
        biased;
        _ = connection.closed() => return,
        halves = halves => halves,
        reason = watch_reports(watch.reports.take()) => {
            // The remote service is gone (e.g. its node restarted): fail fast, as Go does.
            connection.close(VarInt::from_u32(ERROR_LISTENER), reason.as_bytes());
            return;
        }
    };
    let Ok((send, recv)) = halves else {
        return; // the Stream was dropped without handing over (cannot happen), or unwinding
    };
    let lingered = tokio::time::timeout(MAX_LINGER, linger(send, recv, &connection));
    tokio::select! {
        biased;
        _ = connection.closed() => {}
        done = lingered => {
            if done.is_err() {
                tracing::debug!(remote = %connection.remote_address(), "stream linger timed out");
            }
            connection.close(VarInt::from_u32(ERROR_NORMAL_CLOSE), b"normal close");
        }
    }
    // The endpoint (a dialer's own) lives on in quinn's driver until the close is sent.
    drop(endpoint);
}

/// Resolves with a reason when a report says the dialed service cannot be reached.
async fn watch_reports(reports: Option<(mpsc::Receiver<Report>, Remote)>) -> String {
    let Some((mut reports, target)) = reports else {
        return std::future::pending().await;
    };
    while let Some(report) = reports.recv().await {
        if let Some(reason) = report_about(&report, &target)
            && reason == crate::wire::PROBLEM_SERVICE_UNKNOWN
        {
            // Only this is final: no route, expiry or a firewall can be transient (a link
            // flapping, a route changing), and QUIC recovers from lost packets by itself.
            return reason;
        }
    }
    std::future::pending().await
}

/// The problem text of a report about traffic to `target`.
pub(super) fn report_about(report: &Report, target: &Remote) -> Option<String> {
    match report {
        Report::Unreachable(u)
            if u.to_node == *target.node && u.to_service == target.service.to_string_lossy() =>
        {
            Some(u.problem.clone())
        }
        Report::SendFailed {
            to_node,
            to_service,
            error,
        } if *to_node == *target.node && *to_service == target.service => Some(error.to_string()),
        _ => None,
    }
}

/// Finish, drain the peer's data to its FIN, and wait until ours is acknowledged.
async fn linger(mut send: SendStream, mut recv: RecvStream, connection: &Connection) {
    let _ = send.finish();
    let drain = async {
        loop {
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(_discarded)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    let acked = async {
        let _ = send.stopped().await;
    };
    tokio::join!(drain, acked);
    tracing::trace!(remote = %connection.remote_address(), "stream done, closing connection");
}
