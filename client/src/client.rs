//! [`Client`]: one gRPC channel to a daemon and a method per RPC.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use hyper_util::rt::TokioIo;
use receptor_proto::v1;
use receptor_proto::v1::mesh_client::MeshClient;
use receptor_proto::v1::work_client::WorkClient;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};
use crate::results::Results;
use crate::service::ServiceStream;
use crate::target::{BoxIo, Target};
use crate::types::{
    Hop, PingReply, Status, SubmitOptions, Submitted, TopologyEvent, VersionInfo, WorkEvent,
    WorkUnit, from_duration,
};

/// Payload bytes per `Submit` message.
const SUBMIT_CHUNK: usize = 64 * 1024;
/// Messages queued towards the daemon on a `connect_service` stream.
const CONNECT_QUEUE: usize = 8;

/// A progress callback for uploads: called with the payload bytes handed to gRPC so far.
pub type Progress = Box<dyn FnMut(u64) + Send + 'static>;

/// A connection to one receptor daemon's gRPC API. Cheap to clone: clones share the
/// connection (HTTP/2 multiplexes calls), which is re-established on demand if it breaks.
#[derive(Clone, Debug)]
pub struct Client {
    mesh: MeshClient<Channel>,
    work: WorkClient<Channel>,
    node_id: Option<String>,
}

impl Client {
    /// Connects to `target`, failing at once (with the reason) if the daemon cannot be
    /// reached, does not greet like receptor, or does not speak gRPC.
    pub async fn connect(target: Target) -> Result<Self> {
        let connector = target.prepare()?;
        let (first, node_id) = connector.open().await?;
        // The first connection is the one just checked; later ones (after a break) are
        // opened the same way.
        let first: Arc<Mutex<Option<BoxIo>>> = Arc::new(Mutex::new(Some(first)));
        let make = tower::service_fn(move |_: Uri| {
            let first = first.lock().ok().and_then(|mut slot| slot.take());
            let connector = connector.clone();
            async move {
                let io = match first {
                    Some(io) => io,
                    None => connector.open().await?.0,
                };
                Ok::<_, Error>(TokioIo::new(io))
            }
        });
        // The URI is only a name: the connector above decides where bytes go.
        let channel = Endpoint::from_static("http://receptor")
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            // Bulk results: big frames and windows that keep the daemon sending.
            .max_frame_size(256 << 10)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .connect_with_connector(make)
            .await?;
        Ok(Self::from_channel(channel, node_id))
    }

    /// Wraps an existing channel (tests, custom transports).
    pub fn from_channel(channel: Channel, node_id: Option<String>) -> Self {
        Self {
            mesh: MeshClient::new(channel.clone()),
            work: WorkClient::new(channel),
            node_id,
        }
    }

    /// The node ID the control socket greeted with (upgraded connections only).
    pub fn greeted_node(&self) -> Option<&str> {
        self.node_id.as_deref()
    }

    /// The generated `Mesh` client, for anything this API does not wrap.
    pub fn mesh_client(&self) -> MeshClient<Channel> {
        self.mesh.clone()
    }

    /// The generated `Work` client, for anything this API does not wrap.
    pub fn work_client(&self) -> WorkClient<Channel> {
        self.work.clone()
    }

    // ---- Mesh -------------------------------------------------------------------------

    /// The node's view of the mesh.
    pub async fn status(&self) -> Result<Status> {
        let response = self.mesh.clone().status(v1::StatusRequest {}).await?;
        Ok(response.into_inner().into())
    }

    /// The daemon's version and node ID.
    pub async fn version(&self) -> Result<VersionInfo> {
        let response = self.mesh.clone().version(v1::VersionRequest {}).await?;
        Ok(response.into_inner().into())
    }

    /// Pings `node` `count` times (0 means 4), `interval` apart (`None` means 1 s). Each
    /// probe yields one item; a lost probe is an item with `error` set, not an `Err`.
    pub async fn ping(
        &self,
        node: &str,
        count: u32,
        interval: Option<Duration>,
    ) -> Result<BoxStream<'static, Result<PingReply>>> {
        let request = v1::PingRequest {
            node: node.to_owned(),
            count,
            interval: interval.map(from_duration),
        };
        let stream = self.mesh.clone().ping(request).await?.into_inner();
        Ok(stream.map_ok(PingReply::from).map_err(Error::from).boxed())
    }

    /// Traces the path to `node`, one item per hop.
    pub async fn traceroute(&self, node: &str) -> Result<BoxStream<'static, Result<Hop>>> {
        let request = v1::TracerouteRequest {
            node: node.to_owned(),
        };
        let stream = self.mesh.clone().traceroute(request).await?.into_inner();
        Ok(stream.map_ok(Hop::from).map_err(Error::from).boxed())
    }

    /// Re-reads the daemon's configuration file and applies what can change live.
    pub async fn reload(&self) -> Result<()> {
        self.mesh.clone().reload(v1::ReloadRequest {}).await?;
        Ok(())
    }

    /// The mesh as it changes: a snapshot first, then one event per change.
    pub async fn watch_topology(&self) -> Result<BoxStream<'static, Result<TopologyEvent>>> {
        let stream = self
            .mesh
            .clone()
            .watch_topology(v1::WatchTopologyRequest {})
            .await?
            .into_inner();
        Ok(stream
            .map_err(Error::from)
            .try_filter_map(|e| async move { Ok(TopologyEvent::from_proto(e)) })
            .boxed())
    }

    /// Opens a byte stream to `service` on `node` (`localhost` for this node), optionally
    /// secured with one of the daemon's `tls-client` configurations.
    ///
    /// ```no_run
    /// # async fn demo(client: receptor_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// let mut control = client.connect_service("node2", "control", None).await?;
    /// let mut greeting = [0u8; 64];
    /// let n = control.read(&mut greeting).await?;
    /// control.write_all(b"work list\n").await?;
    /// # let _ = n;
    /// # Ok(()) }
    /// ```
    pub async fn connect_service(
        &self,
        node: &str,
        service: &str,
        tls_client: Option<&str>,
    ) -> Result<ServiceStream> {
        let (tx, rx) = tokio::sync::mpsc::channel(CONNECT_QUEUE);
        let open = v1::ConnectRequest {
            request: Some(v1::connect_request::Request::Open(v1::ConnectOpen {
                node: node.to_owned(),
                service: service.to_owned(),
                tls_client: tls_client.unwrap_or_default().to_owned(),
            })),
        };
        tx.send(open)
            .await
            .map_err(|_| Error::Protocol("connect request queue closed".into()))?;
        let mut responses = self
            .mesh
            .clone()
            .connect(ReceiverStream::new(rx))
            .await?
            .into_inner();
        match responses.message().await? {
            Some(v1::ConnectResponse {
                response: Some(v1::connect_response::Response::Opened(_)),
            }) => Ok(ServiceStream {
                tx: PollSender::new(tx),
                rx: responses,
                buf: bytes::Bytes::new(),
                eof: false,
            }),
            Some(_) => Err(Error::Protocol(
                "Connect answered with data before `opened`".into(),
            )),
            None => Err(Error::Protocol("Connect ended before `opened`".into())),
        }
    }

    // ---- Work -------------------------------------------------------------------------

    /// Creates a unit and uploads `payload` (its stdin). The unit starts once the payload
    /// has been sent; if reading `payload` fails, the call is aborted so the unit fails
    /// instead of running on a truncated payload.
    ///
    /// ```no_run
    /// # async fn demo(client: receptor_client::Client) -> receptor_client::Result<()> {
    /// use receptor_client::SubmitOptions;
    ///
    /// let submitted = client
    ///     .submit(SubmitOptions::new("cat"), &b"hello\n"[..], None)
    ///     .await?;
    /// println!("{} {}", submitted.result, submitted.unit.id);
    /// # Ok(()) }
    /// ```
    pub async fn submit<R>(
        &self,
        options: SubmitOptions,
        payload: R,
        progress: Option<Progress>,
    ) -> Result<Submitted>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let (err_tx, err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
        let header = v1::SubmitRequest {
            request: Some(v1::submit_request::Request::Header(options.header)),
        };
        struct Upload<R> {
            header: Option<v1::SubmitRequest>,
            payload: R,
            progress: Option<Progress>,
            sent: u64,
            err_tx: Option<tokio::sync::oneshot::Sender<std::io::Error>>,
        }
        let upload = Upload {
            header: Some(header),
            payload,
            progress,
            sent: 0,
            err_tx: Some(err_tx),
        };
        let body = futures_util::stream::unfold(upload, |mut up| async move {
            if let Some(header) = up.header.take() {
                return Some((header, up));
            }
            let mut chunk = vec![0u8; SUBMIT_CHUNK];
            match up.payload.read(&mut chunk).await {
                Ok(0) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    up.sent += n as u64;
                    if let Some(progress) = up.progress.as_mut() {
                        progress(up.sent);
                    }
                    let message = v1::SubmitRequest {
                        request: Some(v1::submit_request::Request::Payload(chunk)),
                    };
                    Some((message, up))
                }
                Err(e) => {
                    if let Some(tx) = up.err_tx.take() {
                        let _ = tx.send(e);
                    }
                    // Never end the request stream: ending it would start the unit. The
                    // caller drops the call, which resets the HTTP/2 stream.
                    std::future::pending::<()>().await;
                    None
                }
            }
        });
        let mut work = self.work.clone();
        let call = work.submit(body);
        let response = tokio::select! {
            response = call => response?.into_inner(),
            Ok(e) = err_rx => return Err(Error::Payload(e)),
        };
        let unit = response
            .unit
            .ok_or_else(|| Error::Protocol("Submit answered without the unit".into()))?;
        Ok(Submitted {
            unit: unit.into(),
            result: response.result,
        })
    }

    /// Every unit on the node.
    pub async fn list(&self) -> Result<Vec<WorkUnit>> {
        let response = self.work.clone().list(v1::ListRequest {}).await?;
        Ok(response
            .into_inner()
            .units
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// One unit.
    pub async fn get(&self, unit_id: &str) -> Result<WorkUnit> {
        let request = v1::GetRequest {
            unit_id: unit_id.to_owned(),
        };
        Ok(self.work.clone().get(request).await?.into_inner().into())
    }

    /// A unit's output from byte `offset`. With `follow`, waits for more output until the
    /// unit is final. See [`Results`] for reading it and for resumption.
    ///
    /// ```no_run
    /// # async fn demo(client: receptor_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut results = client.results("Ab3dE5gH", 0, true).await?;
    /// tokio::io::copy(&mut results, &mut tokio::io::stdout()).await?;
    /// if let Some(end) = results.end() {
    ///     eprintln!("{}: {} bytes", end.unit.state_name(), end.end_offset);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn results(&self, unit_id: &str, offset: u64, follow: bool) -> Result<Results> {
        Results::open(self.work.clone(), unit_id, offset, follow, "").await
    }

    /// Like [`Client::results`], with a JWT for nodes that verify signatures.
    pub async fn results_signed(
        &self,
        unit_id: &str,
        offset: u64,
        follow: bool,
        signature: &str,
    ) -> Result<Results> {
        Results::open(self.work.clone(), unit_id, offset, follow, signature).await
    }

    /// Cancels a unit. `Ok(true)` means the cancel goes on in the background.
    pub async fn cancel(&self, unit_id: &str) -> Result<bool> {
        let request = v1::CancelRequest {
            unit_id: unit_id.to_owned(),
            signature: String::new(),
        };
        Ok(self
            .work
            .clone()
            .cancel(request)
            .await?
            .into_inner()
            .pending)
    }

    /// Cancels if needed and deletes a unit; with `force`, even if its remote node cannot
    /// be told. `Ok(true)` means the release goes on in the background.
    pub async fn release(&self, unit_id: &str, force: bool) -> Result<bool> {
        let request = v1::ReleaseRequest {
            unit_id: unit_id.to_owned(),
            force,
            signature: String::new(),
        };
        Ok(self
            .work
            .clone()
            .release(request)
            .await?
            .into_inner()
            .pending)
    }

    /// Units' state changes as they happen: every unit, or only `unit_id` (the stream then
    /// ends after its release). With `include_existing`, first one event per existing unit.
    ///
    /// ```no_run
    /// # async fn demo(client: receptor_client::Client) -> receptor_client::Result<()> {
    /// use futures_util::StreamExt;
    ///
    /// let mut events = client.watch_work(None, true).await?;
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{} {}", event.unit.id, event.unit.state_name());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch_work(
        &self,
        unit_id: Option<&str>,
        include_existing: bool,
    ) -> Result<BoxStream<'static, Result<WorkEvent>>> {
        let request = v1::WatchRequest {
            unit_id: unit_id.unwrap_or_default().to_owned(),
            include_existing,
        };
        let stream = self.work.clone().watch(request).await?.into_inner();
        Ok(stream
            .map_err(Error::from)
            .and_then(|e| async move {
                let unit = e
                    .unit
                    .ok_or_else(|| Error::Protocol("watch event without the unit".into()))?;
                Ok(WorkEvent {
                    unit: unit.into(),
                    released: e.released,
                    resync: e.resync,
                })
            })
            .boxed())
    }
}
