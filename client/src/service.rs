//! A byte stream to a service on a mesh node over the `Mesh.Connect` RPC.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::StreamExt;
use receptor_proto::v1;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::PollSender;
use tonic::Streaming;

/// Largest data message we send (the contract allows 4 MiB; smaller keeps latency low).
pub(crate) const MAX_WRITE: usize = 64 * 1024;

/// A duplex byte stream to a mesh service, from
/// [`Client::connect_service`](crate::Client::connect_service).
///
/// `shutdown` half-closes (the remote service sees end of input); reading returns 0 bytes
/// once the remote side closed.
pub struct ServiceStream {
    pub(crate) tx: PollSender<v1::ConnectRequest>,
    pub(crate) rx: Streaming<v1::ConnectResponse>,
    pub(crate) buf: Bytes,
    pub(crate) eof: bool,
}

impl std::fmt::Debug for ServiceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceStream")
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for ServiceStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.buf.is_empty() {
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.rx.poll_next_unpin(cx)) {
                Some(Ok(message)) => match message.response {
                    Some(v1::connect_response::Response::Data(data)) => this.buf = data.into(),
                    // `opened` again or an empty message: nothing to read.
                    Some(v1::connect_response::Response::Opened(_)) | None => {}
                },
                Some(Err(status)) => {
                    this.eof = true;
                    return Poll::Ready(Err(crate::Error::from(status).into()));
                }
                None => this.eof = true,
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ServiceStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(this.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = data.len().min(MAX_WRITE);
        let message = v1::ConnectRequest {
            request: Some(v1::connect_request::Request::Data(data[..n].to_vec())),
        };
        match this.tx.send_item(message) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Messages go to the channel as they are written; gRPC sends them on its own.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing the sender ends the request stream: the mesh stream is half-closed.
        self.get_mut().tx.close();
        Poll::Ready(Ok(()))
    }
}
