//! A unit's output as an `AsyncRead` and a `Stream` of chunks, resumed transparently from
//! the last offset when the stream breaks.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use receptor_proto::v1;
use receptor_proto::v1::work_client::WorkClient;
use tokio::io::{AsyncRead, ReadBuf};
use tonic::Streaming;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::types::ResultsEnd;

/// Consecutive reconnections without receiving a byte before giving up.
const MAX_RESUMES: u32 = 8;
/// First pause before reconnecting; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Reopen =
    Pin<Box<dyn Future<Output = Result<Streaming<v1::ResultsResponse>, tonic::Status>> + Send>>;

enum State {
    Open(Box<Streaming<v1::ResultsResponse>>),
    Reopening(Reopen),
    Done,
}

/// A unit's output, from [`Client::results`](crate::Client::results).
///
/// Read it as an [`AsyncRead`] (e.g. with `tokio::io::copy`) or as a [`Stream`] of chunks;
/// after the end, [`Results::end`] tells the unit's state and the output's total size. When
/// the stream breaks before its end message (the daemon restarted, the connection dropped),
/// it is reopened from the offset just past the last byte received, so no byte is lost or
/// repeated; it gives up after several attempts in a row without progress.
///
/// # Cancel safety
/// Reading is cancel safe: a chunk is consumed only when returned.
pub struct Results {
    client: WorkClient<Channel>,
    unit_id: String,
    follow: bool,
    signature: String,
    /// Offset of the next byte we expect.
    offset: u64,
    buf: Bytes,
    state: State,
    end: Option<ResultsEnd>,
    resumes: u32,
}

impl std::fmt::Debug for Results {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Results")
            .field("unit_id", &self.unit_id)
            .field("offset", &self.offset)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

pub(crate) fn request(
    unit_id: &str,
    offset: u64,
    follow: bool,
    signature: &str,
) -> v1::ResultsRequest {
    v1::ResultsRequest {
        unit_id: unit_id.to_owned(),
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        follow,
        signature: signature.to_owned(),
    }
}

impl Results {
    pub(crate) async fn open(
        mut client: WorkClient<Channel>,
        unit_id: &str,
        offset: u64,
        follow: bool,
        signature: &str,
    ) -> Result<Self> {
        let stream = client
            .results(request(unit_id, offset, follow, signature))
            .await?
            .into_inner();
        Ok(Self {
            client,
            unit_id: unit_id.to_owned(),
            follow,
            signature: signature.to_owned(),
            offset,
            buf: Bytes::new(),
            state: State::Open(Box::new(stream)),
            end: None,
            resumes: 0,
        })
    }

    /// How the stream ended: `None` until the end message arrived.
    pub fn end(&self) -> Option<&ResultsEnd> {
        self.end.as_ref()
    }

    /// The offset just past the last byte returned so far.
    pub fn offset(&self) -> u64 {
        self.offset - self.buf.len() as u64
    }

    /// Reads everything to the end and returns it with the end message.
    pub async fn read_all(mut self) -> Result<(Vec<u8>, ResultsEnd)> {
        let mut out = self.buf.to_vec();
        self.buf = Bytes::new();
        while let Some(chunk) = self.next().await {
            out.extend_from_slice(&chunk?);
        }
        let end = self
            .end
            .take()
            .ok_or_else(|| Error::Protocol("results stream ended without its end".into()))?;
        Ok((out, end))
    }

    fn reopen(&mut self) {
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << self.resumes.min(6))
            .min(MAX_BACKOFF);
        self.resumes += 1;
        let mut client = self.client.clone();
        let request = request(&self.unit_id, self.offset, self.follow, &self.signature);
        self.state = State::Reopening(Box::pin(async move {
            tokio::time::sleep(backoff).await;
            client
                .results(request)
                .await
                .map(tonic::Response::into_inner)
        }));
    }

    /// Whether a failed stream is worth reopening: transport trouble, not the server's
    /// considered answer.
    fn retryable(status: &tonic::Status) -> bool {
        matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Aborted
        )
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(None),
                State::Reopening(fut) => match ready!(fut.as_mut().poll(cx)) {
                    Ok(stream) => self.state = State::Open(Box::new(stream)),
                    Err(status) if Self::retryable(&status) && self.resumes < MAX_RESUMES => {
                        self.reopen();
                    }
                    Err(status) => {
                        self.state = State::Done;
                        return Poll::Ready(Some(Err(status.into())));
                    }
                },
                State::Open(stream) => match ready!(stream.poll_next_unpin(cx)) {
                    Some(Ok(message)) => match message.response {
                        Some(v1::results_response::Response::Data(data)) => {
                            if data.is_empty() {
                                continue;
                            }
                            self.offset += data.len() as u64;
                            self.resumes = 0;
                            return Poll::Ready(Some(Ok(Bytes::from(data))));
                        }
                        Some(v1::results_response::Response::End(end)) => {
                            self.state = State::Done;
                            let unit = end.unit.map(Into::into).ok_or_else(|| {
                                Error::Protocol("results end without the unit".into())
                            });
                            match unit {
                                Ok(unit) => {
                                    self.end = Some(ResultsEnd {
                                        unit,
                                        end_offset: u64::try_from(end.end_offset).unwrap_or(0),
                                    });
                                    return Poll::Ready(None);
                                }
                                Err(e) => return Poll::Ready(Some(Err(e))),
                            }
                        }
                        None => {
                            self.state = State::Done;
                            return Poll::Ready(Some(Err(Error::Protocol(
                                "empty results message".into(),
                            ))));
                        }
                    },
                    Some(Err(status)) if Self::retryable(&status) && self.resumes < MAX_RESUMES => {
                        self.reopen();
                    }
                    Some(Err(status)) => {
                        self.state = State::Done;
                        return Poll::Ready(Some(Err(status.into())));
                    }
                    // Ended without `end`: the stream was cut.
                    None if self.resumes < MAX_RESUMES => self.reopen(),
                    None => {
                        self.state = State::Done;
                        return Poll::Ready(Some(Err(Error::Unavailable(format!(
                            "results of {} keep breaking off at offset {}",
                            self.unit_id, self.offset
                        )))));
                    }
                },
            }
        }
    }
}

impl Stream for Results {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            return Poll::Ready(Some(Ok(std::mem::take(&mut this.buf))));
        }
        this.poll_chunk(cx)
    }
}

impl AsyncRead for Results {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            match ready!(this.poll_chunk(cx)) {
                Some(Ok(chunk)) => this.buf = chunk,
                Some(Err(e)) => return Poll::Ready(Err(e.into())),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf.split_to(n));
        Poll::Ready(Ok(()))
    }
}
