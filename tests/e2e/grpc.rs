//! The gRPC API (`proto/receptor/v1`) against the built daemon: every RPC over the
//! `grpc-service` Unix socket, over TCP with TLS (client certificates), and over the classic
//! control socket after the `grpc` line; error codes; bounded memory for big uploads;
//! clients that vanish; shutdown during a stream; and a Python grpcio client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use receptor_proto::prost_types;
use receptor_proto::v1 as pb;
use receptor_proto::v1::mesh_client::MeshClient;
use receptor_proto::v1::work_client::WorkClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::harness::{Daemon, WAIT, wait_for};

/// Every network await of these tests is bounded by this.
const RPC: Duration = Duration::from_secs(30);

/// A node with a gRPC socket, a classic socket and a few work types.
fn node_yaml(dir: &Path, id: &str, extra: &str) -> String {
    let d = dir.display();
    format!(
        r#"---
- node:
    id: {id}
    datadir: {d}/data
- local-only:
- control-service:
    service: control
    filename: {d}/{id}.sock
- grpc-service:
    filename: {d}/{id}-grpc.sock
- work-command:
    worktype: cat
    command: cat
- work-command:
    worktype: echo
    command: sh
    params: -c "echo hello; cat"
- work-command:
    worktype: sleep
    command: sleep
    params: "30"
- work-command:
    worktype: count
    command: sh
    params: -c "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done"
- work-command:
    worktype: wc
    command: wc
    params: -c
{extra}"#
    )
}

struct Node {
    dir: tempfile::TempDir,
    daemon: Daemon,
    id: String,
}

impl Node {
    async fn start(id: &str, extra: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let daemon = Daemon::start_yaml(id, dir.path(), &node_yaml(dir.path(), id, extra)).await?;
        daemon.wait_log("grpc socket listening").await?;
        daemon.wait_log("control socket listening").await?;
        Ok(Self {
            dir,
            daemon,
            id: id.to_owned(),
        })
    }

    fn grpc_socket(&self) -> PathBuf {
        self.dir.path().join(format!("{}-grpc.sock", self.id))
    }

    fn control_socket(&self) -> PathBuf {
        self.dir.path().join(format!("{}.sock", self.id))
    }

    async fn channel(&self) -> Result<Channel> {
        unix_channel(self.grpc_socket()).await
    }

    fn pid(&self) -> Result<u32> {
        self.daemon.pid().context("daemon exited")
    }
}

/// A channel over a Unix socket (the URI is a placeholder; the connector decides).
async fn unix_channel(path: PathBuf) -> Result<Channel> {
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(channel)
}

/// A channel over the classic control socket after the `grpc` line. Reads byte by byte up to
/// `grpc ok`: the server starts HTTP/2 right after it, so nothing past the line may be
/// consumed here.
async fn upgraded_channel(path: PathBuf) -> Result<Channel> {
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let mut stream = UnixStream::connect(path).await?;
                let greeting = read_line(&mut stream).await?;
                if !greeting.starts_with("Receptor Control") {
                    return Err(std::io::Error::other(format!("greeting {greeting:?}")));
                }
                stream.write_all(b"grpc\n").await?;
                let reply = read_line(&mut stream).await?;
                if reply != "grpc ok" {
                    return Err(std::io::Error::other(format!("grpc reply {reply:?}")));
                }
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(channel)
}

async fn read_line(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte);
        if line.len() > 4096 {
            return Err(std::io::Error::other("line too long"));
        }
    }
}

async fn rpc<T>(future: impl std::future::Future<Output = Result<T, tonic::Status>>) -> Result<T> {
    Ok(tokio::time::timeout(RPC, future)
        .await
        .context("RPC timed out")??)
}

async fn rpc_status<T: std::fmt::Debug>(
    future: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<tonic::Status> {
    match tokio::time::timeout(RPC, future)
        .await
        .context("RPC timed out")?
    {
        Ok(value) => bail!("expected an error, got {value:?}"),
        Err(status) => Ok(status),
    }
}

fn header(work_type: &str) -> pb::SubmitHeader {
    pb::SubmitHeader {
        work_type: work_type.to_owned(),
        ..Default::default()
    }
}

/// Submits `work_type` with `payload` in messages of at most `chunk` bytes.
async fn submit(
    channel: Channel,
    head: pb::SubmitHeader,
    payload: Vec<u8>,
    chunk: usize,
) -> Result<pb::SubmitResponse, tonic::Status> {
    let mut messages = vec![pb::SubmitRequest {
        request: Some(pb::submit_request::Request::Header(head)),
    }];
    messages.extend(payload.chunks(chunk.max(1)).map(|c| pb::SubmitRequest {
        request: Some(pb::submit_request::Request::Payload(c.to_vec())),
    }));
    let mut client = WorkClient::new(channel);
    client
        .submit(futures_util::stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// Reads a whole results stream: (bytes, end message).
async fn results(
    channel: Channel,
    unit_id: &str,
    offset: i64,
    follow: bool,
) -> Result<(Vec<u8>, pb::ResultsEnd)> {
    let mut client = WorkClient::new(channel);
    let mut stream = rpc(client.results(pb::ResultsRequest {
        unit_id: unit_id.to_owned(),
        offset,
        follow,
        signature: String::new(),
    }))
    .await?
    .into_inner();
    let mut data = Vec::new();
    loop {
        let message = tokio::time::timeout(RPC, stream.message())
            .await
            .context("results stalled")??;
        match message.and_then(|m| m.response) {
            Some(pb::results_response::Response::Data(chunk)) => data.extend_from_slice(&chunk),
            Some(pb::results_response::Response::End(end)) => {
                ensure!(
                    tokio::time::timeout(RPC, stream.message())
                        .await??
                        .is_none(),
                    "a message after end"
                );
                return Ok((data, end));
            }
            None => bail!("the results stream ended without end"),
        }
    }
}

async fn wait_state(
    channel: &Channel,
    unit_id: &str,
    state: pb::WorkState,
) -> Result<pb::WorkUnit> {
    let client = WorkClient::new(channel.clone());
    wait_for(&format!("{unit_id} to be {state:?}"), WAIT, || {
        let mut client = client.clone();
        let unit_id = unit_id.to_owned();
        async move {
            let unit = client
                .get(pb::GetRequest { unit_id })
                .await
                .ok()?
                .into_inner();
            (unit.state == state as i32).then_some(unit)
        }
    })
    .await
}

// === the tests ===

#[tokio::test]
async fn mesh_and_work_rpcs_over_the_unix_socket() -> Result<()> {
    let node = Node::start("g1", "").await?;
    let channel = node.channel().await?;
    check_every_rpc(&node, channel).await
}

#[tokio::test]
async fn the_classic_socket_upgrades_to_grpc() -> Result<()> {
    let node = Node::start("g2", "").await?;
    let channel = upgraded_channel(node.control_socket()).await?;
    check_every_rpc(&node, channel).await?;
    // The classic protocol still works on other connections.
    let out = crate::harness::receptorctl(&node.control_socket(), &["status"]).await?;
    ensure!(out.code == Some(0), "{out:?}");
    Ok(())
}

/// Every RPC once, with its results checked (shared by the Unix, upgrade and TLS paths).
async fn check_every_rpc(node: &Node, channel: Channel) -> Result<()> {
    let mut mesh = MeshClient::new(channel.clone());
    let status = rpc(mesh.status(pb::StatusRequest {})).await?.into_inner();
    assert_eq!(status.node_id, node.id);
    assert!(!status.version.is_empty());
    assert!(status.system_cpu_count >= 1);
    let control = status
        .advertisements
        .iter()
        .find(|ad| ad.service == "control")
        .context("control service advertised")?;
    assert_eq!(control.conn_type, pb::ConnType::Stream as i32);
    assert!(
        control.work_commands.iter().any(|c| c.work_type == "cat"),
        "{control:?}"
    );

    let version = rpc(mesh.version(pb::VersionRequest {})).await?.into_inner();
    assert_eq!(version.node_id, node.id);
    assert_eq!(version.version, status.version);
    let started = version.started.context("started")?;
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    assert!(started.seconds <= now.seconds && started.seconds > now.seconds - 600);

    // Ping ourselves twice, 10 ms apart.
    let replies: Vec<pb::PingReply> = rpc(mesh.ping(pb::PingRequest {
        node: node.id.clone(),
        count: 2,
        interval: Some(prost_types::Duration {
            seconds: 0,
            nanos: 10_000_000,
        }),
    }))
    .await?
    .into_inner()
    .map(|r| r.map_err(anyhow::Error::from))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_>>()?;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[1].sequence, 2);
    assert!(
        replies
            .iter()
            .all(|r| r.error.is_empty() && r.from == node.id)
    );

    let hops: Vec<pb::TracerouteHop> = rpc(mesh.traceroute(pb::TracerouteRequest {
        node: node.id.clone(),
    }))
    .await?
    .into_inner()
    .map(|r| r.map_err(anyhow::Error::from))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_>>()?;
    assert_eq!(hops.len(), 1, "{hops:?}");
    assert_eq!(hops[0].from, node.id);

    // Reload without a changed file succeeds (the daemon was started from a file).
    rpc(mesh.reload(pb::ReloadRequest {})).await?;

    // Connect to our own control service: the classic greeting comes back through gRPC.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ConnectRequest {
        request: Some(pb::connect_request::Request::Open(pb::ConnectOpen {
            node: "localhost".into(),
            service: "control".into(),
            tls_client: String::new(),
        })),
    })
    .await?;
    let mut inbound = rpc(mesh.connect(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await?
        .into_inner();
    let first = rpc(inbound.message()).await?.context("opened")?;
    ensure!(
        matches!(
            first.response,
            Some(pb::connect_response::Response::Opened(_))
        ),
        "{first:?}"
    );
    tx.send(pb::ConnectRequest {
        request: Some(pb::connect_request::Request::Data(b"status\n".to_vec())),
    })
    .await?;
    drop(tx); // half-close: the control service answers, then closes
    let mut text = Vec::new();
    while let Some(message) = rpc(inbound.message()).await? {
        if let Some(pb::connect_response::Response::Data(data)) = message.response {
            text.extend_from_slice(&data);
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.starts_with(&format!("Receptor Control, node {}\n", node.id)),
        "{text}"
    );
    assert!(text.contains("\"NodeID\""), "{text}");

    // Work: submit, get, list, results (with and without follow, from an offset), cancel,
    // release, watch.
    let mut work = WorkClient::new(channel.clone());
    let mut watch = rpc(work.watch(pb::WatchRequest {
        unit_id: String::new(),
        include_existing: true,
    }))
    .await?
    .into_inner();
    let submitted = submit(channel.clone(), header("echo"), b"payload\n".to_vec(), 3).await?;
    let unit = submitted.unit.context("unit")?;
    assert_eq!(submitted.result, "Job Started");
    assert_eq!(unit.work_type, "echo");
    let done = wait_state(&channel, &unit.unit_id, pb::WorkState::Succeeded).await?;
    assert_eq!(done.stdout_size, 14);
    assert_eq!(done.extra_data_json, "null");
    let (data, end) = results(channel.clone(), &unit.unit_id, 0, true).await?;
    assert_eq!(data, b"hello\npayload\n");
    assert_eq!(end.end_offset, 14);
    assert_eq!(
        end.unit.context("end unit")?.state,
        pb::WorkState::Succeeded as i32
    );
    let (data, end) = results(channel.clone(), &unit.unit_id, 6, false).await?;
    assert_eq!(data, b"payload\n");
    assert_eq!(end.end_offset, 14);

    let listed = rpc(work.list(pb::ListRequest {})).await?.into_inner();
    assert!(listed.units.iter().any(|u| u.unit_id == unit.unit_id));

    // A running unit: results without follow stop at the current end, with a Running state.
    let sleeper = submit(channel.clone(), header("sleep"), Vec::new(), 1)
        .await?
        .unit
        .context("unit")?;
    wait_state(&channel, &sleeper.unit_id, pb::WorkState::Running).await?;
    let (data, end) = results(channel.clone(), &sleeper.unit_id, 0, false).await?;
    assert!(data.is_empty());
    assert_eq!(
        end.unit.context("unit")?.state,
        pb::WorkState::Running as i32
    );
    let cancelled = rpc(work.cancel(pb::CancelRequest {
        unit_id: sleeper.unit_id.clone(),
        signature: String::new(),
    }))
    .await?
    .into_inner();
    assert!(!cancelled.pending);
    wait_state(&channel, &sleeper.unit_id, pb::WorkState::Canceled).await?;
    for id in [&unit.unit_id, &sleeper.unit_id] {
        let released = rpc(work.release(pb::ReleaseRequest {
            unit_id: id.clone(),
            force: false,
            signature: String::new(),
        }))
        .await?
        .into_inner();
        assert!(!released.pending);
    }
    let listed = rpc(work.list(pb::ListRequest {})).await?.into_inner();
    assert!(
        !listed
            .units
            .iter()
            .any(|u| u.unit_id == unit.unit_id || u.unit_id == sleeper.unit_id)
    );
    // The watch saw the echo unit succeed and both releases.
    let mut succeeded = false;
    let mut released = 0;
    while !(succeeded && released == 2) {
        let event = rpc(watch.message()).await?.context("watch ended")?;
        let Some(u) = event.unit else { continue };
        if u.unit_id == unit.unit_id && u.state == pb::WorkState::Succeeded as i32 {
            succeeded = true;
        }
        if event.released && (u.unit_id == unit.unit_id || u.unit_id == sleeper.unit_id) {
            released += 1;
        }
    }
    Ok(())
}
