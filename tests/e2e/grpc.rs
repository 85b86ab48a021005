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

use crate::harness::{Daemon, WAIT, cert_tool, wait_for};

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
        Self::start_in(tempfile::tempdir()?, id, extra).await
    }

    async fn start_in(dir: tempfile::TempDir, id: &str, extra: &str) -> Result<Self> {
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
pub(crate) async fn unix_channel(path: PathBuf) -> Result<Channel> {
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

/// Cuts the socket under a [`cuttable_channel`], as a crashed client would.
#[derive(Clone, Default)]
struct Cut(std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>);

impl Cut {
    fn cut(&self) {
        if let Ok(handles) = self.0.lock() {
            for handle in handles.iter() {
                handle.abort();
            }
        }
    }
}

/// A Unix-socket channel whose socket the test can close abruptly: the client side talks to
/// an in-memory pipe, relayed to the socket by a task that [`Cut::cut`] aborts (the socket
/// is then closed without any HTTP/2 goodbye).
async fn cuttable_channel(path: PathBuf) -> Result<(Channel, Cut)> {
    let cut = Cut::default();
    let handles = cut.clone();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let (path, handles) = (path.clone(), handles.clone());
            async move {
                let mut socket = UnixStream::connect(path).await?;
                let (client, mut relay) = tokio::io::duplex(64 << 10);
                let task = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut relay, &mut socket).await;
                });
                if let Ok(mut handles) = handles.0.lock() {
                    handles.push(task.abort_handle());
                }
                Ok::<_, std::io::Error>(TokioIo::new(client))
            }
        }))
        .await?;
    Ok((channel, cut))
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

// === errors ===

#[tokio::test]
async fn invalid_requests_get_clear_codes_and_the_daemon_stays_healthy() -> Result<()> {
    let node = Node::start("ge", "").await?;
    let channel = node.channel().await?;
    let mut mesh = MeshClient::new(channel.clone());
    let mut work = WorkClient::new(channel.clone());

    let code = |s: tonic::Status| s.code();
    // Empty and unknown IDs.
    let s = rpc_status(work.get(pb::GetRequest::default())).await?;
    assert_eq!(code(s.clone()), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("unit_id"), "{s:?}");
    let s = rpc_status(work.get(pb::GetRequest {
        unit_id: "nosuch".into(),
    }))
    .await?;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = rpc_status(work.get(pb::GetRequest {
        unit_id: "../etc".into(),
    }))
    .await?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = rpc_status(mesh.ping(pb::PingRequest::default())).await?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = rpc_status(mesh.ping(pb::PingRequest {
        node: "ge".into(),
        count: 20_000,
        interval: None,
    }))
    .await?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = rpc_status(mesh.traceroute(pb::TracerouteRequest::default())).await?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // Unknown work type, bad first message, bad parameters, a size that does not match.
    let s = submit(channel.clone(), header("nosuch"), b"x".to_vec(), 1)
        .await
        .err()
        .context("unknown work type accepted")?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("unknown work type nosuch"), "{s:?}");
    let mut extra = header("cat");
    extra.params.insert("params".into(), "-n".into());
    let s = submit(channel.clone(), extra, Vec::new(), 1)
        .await
        .err()
        .context("params accepted")?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = rpc_status(work.submit(futures_util::stream::iter([pb::SubmitRequest {
        request: Some(pb::submit_request::Request::Payload(b"x".to_vec())),
    }])))
    .await?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let mut sized = header("cat");
    sized.payload_size = 10;
    let s = submit(channel.clone(), sized, b"12345".to_vec(), 2)
        .await
        .err()
        .context("short payload accepted")?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("payload_size"), "{s:?}");

    // Negative offset.
    let unit = submit(channel.clone(), header("cat"), b"abc".to_vec(), 1)
        .await?
        .unit
        .context("unit")?;
    let s = rpc_status(work.results(pb::ResultsRequest {
        unit_id: unit.unit_id.clone(),
        offset: -1,
        ..Default::default()
    }))
    .await?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // Connect: unknown tls-client, nothing listening.
    let open = |service: &str, tls: &str| {
        futures_util::stream::iter([pb::ConnectRequest {
            request: Some(pb::connect_request::Request::Open(pb::ConnectOpen {
                node: "localhost".into(),
                service: service.into(),
                tls_client: tls.into(),
            })),
        }])
    };
    let s = rpc_status(mesh.connect(open("control", "nosuch"))).await?;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = rpc_status(mesh.connect(open("", ""))).await?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // A message beyond 4 MiB: refused in a stream and as a unary request.
    let big = vec![b'x'; 5 << 20];
    let s = submit(channel.clone(), header("cat"), big.clone(), big.len())
        .await
        .err()
        .context("huge message accepted")?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = rpc_status(work.get(pb::GetRequest {
        unit_id: String::from_utf8(big)?,
    }))
    .await?;
    // tonic answers an oversized unary request itself, with gRPC's usual code for it.
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");

    // A reload that cannot apply (the node ID changed: only a restart can do that) is
    // FAILED_PRECONDITION with Go's reason, and nothing stops.
    let config = node.dir.path().join(format!("{}.yaml", node.id));
    let original = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        original.replacen(&format!("id: {}", node.id), "id: renamed", 1),
    )?;
    let s = rpc_status(mesh.reload(pb::ReloadRequest {})).await?;
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(!s.message().is_empty(), "{s:?}");
    std::fs::write(&config, original)?;
    rpc(mesh.reload(pb::ReloadRequest {})).await?;

    // Still healthy, on this connection and on a new one.
    rpc(mesh.status(pb::StatusRequest {})).await?;
    let mut fresh = MeshClient::new(node.channel().await?);
    rpc(fresh.status(pb::StatusRequest {})).await?;
    let cat = wait_state(&channel, &unit.unit_id, pb::WorkState::Succeeded).await?;
    assert_eq!(cat.stdout_size, 3);
    Ok(())
}

// === TLS ===

/// A CA `<ca>.crt` and a certificate `<name>.crt` it signed for node `name`.
pub(crate) async fn make_certs(dir: &Path, ca: &str, names: &[&str]) -> Result<()> {
    if !dir.join(format!("{ca}.crt")).exists() {
        cert_tool(
            dir,
            &[
                "--cert-init",
                &format!("commonname={ca}"),
                "bits=2048",
                &format!("outcert={ca}.crt"),
                &format!("outkey={ca}.key"),
            ],
        )
        .await?;
    }
    for name in names {
        cert_tool(
            dir,
            &[
                "--cert-makereq",
                "bits=2048",
                &format!("commonname={name}"),
                &format!("nodeid={name}"),
                "ipaddress=127.0.0.1",
                &format!("outreq={name}.csr"),
                &format!("outkey={name}.key"),
            ],
        )
        .await?;
        cert_tool(
            dir,
            &[
                "--cert-signreq",
                &format!("req={name}.csr"),
                &format!("cacert={ca}.crt"),
                &format!("cakey={ca}.key"),
                &format!("outcert={name}.crt"),
                "verify=yes",
            ],
        )
        .await?;
    }
    Ok(())
}

/// A TLS channel to `addr` trusting `ca`, presenting `client` (a `<name>.crt/.key` pair).
async fn tls_channel(dir: &Path, addr: &str, client: Option<&str>) -> Result<Channel> {
    use receptor_server::tls::{load_certificates, load_private_key};
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certificates(&dir.join("ca.crt"))? {
        roots.add(cert)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(receptor_mesh::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(name) => builder.with_client_auth_cert(
            load_certificates(&dir.join(format!("{name}.crt")))?,
            load_private_key(&dir.join(format!("{name}.key")))?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let addr = addr.to_owned();
    let channel = Endpoint::try_from(format!("http://{addr}"))?
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, addr) = (connector.clone(), addr.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
                    .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(channel)
}

#[tokio::test]
async fn every_rpc_over_tcp_with_mutual_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path().to_owned();
    make_certs(&d, "ca", &["gt", "client"]).await?;
    make_certs(&d, "otherca", &["stranger"]).await?;
    let extra = format!(
        "- tls-server:\n    name: srv\n    cert: {d}/gt.crt\n    key: {d}/gt.key\n    clientcas: {d}/ca.crt\n    requireclientcert: true\n\
         - grpc-service:\n    tcplisten: 127.0.0.1:0\n    tcptls: srv\n",
        d = d.display()
    );
    let node = Node::start_in(dir, "gt", &extra).await?;
    let addr = node
        .daemon
        .wait_log(r"grpc tcp listener bound addr=(\S+) tls=\S*srv")
        .await?;

    // Refused: no client certificate, and one from a CA the server does not trust.
    for client in [None, Some("stranger")] {
        let refused = async {
            let channel = tls_channel(&d, &addr, client).await?;
            let mut mesh = MeshClient::new(channel);
            rpc(mesh.status(pb::StatusRequest {})).await
        };
        ensure!(refused.await.is_err(), "client {client:?} was served");
    }
    // Served: a certificate from the configured clientcas.
    let channel = tls_channel(&d, &addr, Some("client")).await?;
    check_every_rpc(&node, channel).await?;
    ensure!(
        node.daemon.log().contains("gRPC TLS handshake failed"),
        "{}",
        node.daemon.log()
    );
    Ok(())
}

// === memory, disconnects, shutdown ===

/// Peak resident memory of process `pid` in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    line.split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()
        .context("VmHWM number")
}

/// The byte at offset `i` of the test payload (not constant, so reordering would show).
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

#[tokio::test]
async fn a_100_mb_submit_and_its_results_stream_with_bounded_memory() -> Result<()> {
    const SIZE: u64 = 100 << 20;
    const MESSAGE: u64 = 1 << 20;
    let node = Node::start("gm", "").await?;
    let pid = node.pid()?;
    let channel = node.channel().await?;
    let mut mesh = MeshClient::new(channel.clone());
    rpc(mesh.status(pb::StatusRequest {})).await?;
    let before = peak_rss_kib(pid)?;

    // Generated lazily: the client never holds more than one message either.
    let mut head = header("cat");
    head.payload_size = SIZE;
    let first = futures_util::stream::iter([pb::SubmitRequest {
        request: Some(pb::submit_request::Request::Header(head)),
    }]);
    let payload = futures_util::stream::iter((0..SIZE / MESSAGE).map(|m| pb::SubmitRequest {
        request: Some(pb::submit_request::Request::Payload(
            (m * MESSAGE..(m + 1) * MESSAGE).map(pattern).collect(),
        )),
    }));
    let mut work = WorkClient::new(channel.clone());
    let unit = tokio::time::timeout(Duration::from_secs(300), work.submit(first.chain(payload)))
        .await
        .context("upload timed out")??
        .into_inner()
        .unit
        .context("unit")?;
    let after_upload = peak_rss_kib(pid)?;

    let mut stream = rpc(work.results(pb::ResultsRequest {
        unit_id: unit.unit_id.clone(),
        offset: 0,
        follow: true,
        signature: String::new(),
    }))
    .await?
    .into_inner();
    let mut received = 0u64;
    let end = loop {
        let message = tokio::time::timeout(RPC, stream.message())
            .await
            .context("results stalled")??;
        match message.and_then(|m| m.response) {
            Some(pb::results_response::Response::Data(chunk)) => {
                ensure!(chunk.len() <= 256 << 10, "chunk of {} bytes", chunk.len());
                for (i, byte) in chunk.iter().enumerate() {
                    ensure!(
                        *byte == pattern(received + i as u64),
                        "wrong byte at {}",
                        received + i as u64
                    );
                }
                received += chunk.len() as u64;
            }
            Some(pb::results_response::Response::End(end)) => break end,
            None => bail!("no end after {received} bytes"),
        }
    };
    assert_eq!(received, SIZE);
    assert_eq!(end.end_offset, SIZE as i64);
    assert_eq!(
        end.unit.context("unit")?.state,
        pb::WorkState::Succeeded as i32
    );
    let after_results = peak_rss_kib(pid)?;
    // Buffering the payload or the output would add 100 MiB; allow a few messages and
    // HTTP/2 windows.
    let limit = 48 << 10;
    ensure!(
        after_upload.saturating_sub(before) < limit && after_results.saturating_sub(before) < limit,
        "daemon peak RSS grew from {before} KiB to {after_upload} KiB (upload) and {after_results} KiB (results)"
    );
    eprintln!(
        "daemon VmHWM: {before} KiB at start, {after_upload} KiB after the upload, {after_results} KiB after the results"
    );
    Ok(())
}

#[tokio::test]
async fn clients_that_vanish_mid_stream_leave_the_daemon_healthy() -> Result<()> {
    let node = Node::start("gd", "").await?;
    let channel = node.channel().await?;

    // An upload cut after some payload: the unit ends Failed, never half-run.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::SubmitRequest {
        request: Some(pb::submit_request::Request::Header(header("wc"))),
    })
    .await?;
    tx.send(pb::SubmitRequest {
        request: Some(pb::submit_request::Request::Payload(vec![b'x'; 1000])),
    })
    .await?;
    let (cut_channel, cut) = cuttable_channel(node.grpc_socket()).await?;
    let upload = tokio::spawn(async move {
        let mut work = WorkClient::new(cut_channel);
        work.submit(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let work = WorkClient::new(channel.clone());
    let unit_id = wait_for("the cut upload's unit", WAIT, || {
        let mut work = work.clone();
        async move {
            let units = work.list(pb::ListRequest {}).await.ok()?.into_inner().units;
            units
                .into_iter()
                .find(|u| u.work_type == "wc")
                .map(|u| u.unit_id)
        }
    })
    .await?;
    // The connection drops with the request stream still open.
    cut.cut();
    let outcome = tokio::time::timeout(RPC, upload).await??;
    ensure!(outcome.is_err(), "{outcome:?}");
    drop(tx);
    let failed = wait_state(&channel, &unit_id, pb::WorkState::Failed).await?;
    assert!(failed.detail.contains("went away"), "{failed:?}");

    // A results reader that hangs up after the first message.
    let unit = submit(channel.clone(), header("count"), Vec::new(), 1)
        .await?
        .unit
        .context("unit")?;
    {
        let (reader, cut) = cuttable_channel(node.grpc_socket()).await?;
        let mut reader = WorkClient::new(reader);
        let mut stream = rpc(reader.results(pb::ResultsRequest {
            unit_id: unit.unit_id.clone(),
            follow: true,
            ..Default::default()
        }))
        .await?
        .into_inner();
        rpc(stream.message()).await?.context("first chunk")?;
        cut.cut();
    }
    // Still healthy; the whole output is still there for the next reader.
    wait_state(&channel, &unit.unit_id, pb::WorkState::Succeeded).await?;
    let (data, end) = results(channel.clone(), &unit.unit_id, 0, true).await?;
    assert!(data.ends_with(b"line-19999\n"));
    assert_eq!(end.end_offset, data.len() as i64);
    let mut mesh = MeshClient::new(channel);
    rpc(mesh.status(pb::StatusRequest {})).await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_during_a_results_stream_ends_it_with_unavailable() -> Result<()> {
    let node = Node::start("gs", "").await?;
    let channel = node.channel().await?;
    let unit = submit(channel.clone(), header("sleep"), Vec::new(), 1)
        .await?
        .unit
        .context("unit")?;
    wait_state(&channel, &unit.unit_id, pb::WorkState::Running).await?;
    let mut work = WorkClient::new(channel.clone());
    let mut stream = rpc(work.results(pb::ResultsRequest {
        unit_id: unit.unit_id.clone(),
        follow: true,
        ..Default::default()
    }))
    .await?
    .into_inner();
    let mut watch =
        rpc(MeshClient::new(channel.clone()).watch_topology(pb::WatchTopologyRequest {}))
            .await?
            .into_inner();
    rpc(watch.message()).await?.context("snapshot")?;

    let Node { daemon, dir, .. } = node;
    let exit = tokio::spawn(daemon.terminate());
    // Both streams end at once, with UNAVAILABLE rather than a normal end.
    let status = rpc_status(stream.message()).await?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = rpc_status(watch.message()).await?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let exit = exit.await??;
    ensure!(exit.success(), "exit status {exit:?}");
    drop(dir);
    Ok(())
}

// === topology ===

#[tokio::test]
async fn watch_topology_reports_a_peer_coming_and_going() -> Result<()> {
    let a = Node::start(
        "ga",
        "- tcp-listener:\n    port: 0\n    bindaddr: 127.0.0.1\n",
    )
    .await?;
    let addr = a.daemon.tcp_listener_addr().await?;
    let mut mesh = MeshClient::new(a.channel().await?);
    let mut watch = rpc(mesh.watch_topology(pb::WatchTopologyRequest {}))
        .await?
        .into_inner();
    let first = rpc(watch.message()).await?.context("snapshot")?;
    let Some(pb::topology_event::Event::Snapshot(snapshot)) = first.event else {
        bail!("first event {first:?}");
    };
    assert_eq!(snapshot.node_id, "ga");
    assert!(snapshot.connections.is_empty());

    let b = Node::start("gb", &format!("- tcp-peer:\n    address: {addr}\n")).await?;
    let (mut connected, mut routed, mut service) = (false, false, false);
    while !(connected && routed && service) {
        let event = rpc(watch.message()).await?.context("watch ended")?;
        match event.event {
            Some(pb::topology_event::Event::Connection(c)) if c.node_id == "gb" => {
                assert!(!c.removed);
                assert_eq!(c.cost, 1.0);
                connected = true;
            }
            Some(pb::topology_event::Event::Route(r)) if r.destination == "gb" => {
                assert_eq!(r.next_hop, "gb");
                routed = true;
            }
            Some(pb::topology_event::Event::Service(s)) => {
                let ad = s.advertisement.context("advertisement")?;
                if ad.node_id == "gb" && ad.service == "control" && !s.removed {
                    service = true;
                }
            }
            _ => {}
        }
    }
    drop(b);
    loop {
        let event = rpc(watch.message()).await?.context("watch ended")?;
        if let Some(pb::topology_event::Event::Connection(c)) = event.event
            && c.node_id == "gb"
        {
            assert!(c.removed, "{c:?}");
            break;
        }
    }
    Ok(())
}

// === a foreign client ===

/// Python's grpcio, with stubs generated from proto/ by grpcio-tools at test time.
#[tokio::test]
async fn a_python_grpcio_client_calls_status_and_list() -> Result<()> {
    let python = match std::env::var_os("RECEPTOR_TEST_VENV") {
        Some(dir) => PathBuf::from(dir).join("python"),
        None => bail!("RECEPTOR_TEST_VENV is not set: run the tests with scripts/test"),
    };
    let node = Node::start("gp", "").await?;
    let channel = node.channel().await?;
    let unit = submit(channel.clone(), header("cat"), b"py".to_vec(), 1)
        .await?
        .unit
        .context("unit")?;
    let stubs = tempfile::tempdir()?;
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let out = tokio::process::Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I", proto])
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .args(["receptor/v1/mesh.proto", "receptor/v1/work.proto"])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = r#"
import sys
import grpc
from receptor.v1 import mesh_pb2, mesh_pb2_grpc, work_pb2, work_pb2_grpc
channel = grpc.insecure_channel("unix:" + sys.argv[1], options=[("grpc.default_authority", "localhost")])
status = mesh_pb2_grpc.MeshStub(channel).Status(mesh_pb2.StatusRequest(), timeout=20)
units = work_pb2_grpc.WorkStub(channel).List(work_pb2.ListRequest(), timeout=20)
print("node", status.node_id)
for unit in units.units:
    print("unit", unit.unit_id, unit.work_type)
try:
    work_pb2_grpc.WorkStub(channel).Get(work_pb2.GetRequest(unit_id="nosuch"), timeout=20)
except grpc.RpcError as error:
    print("error", error.code().name)
"#;
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(&python)
            .arg("-c")
            .arg(script)
            .arg(node.grpc_socket())
            .env("PYTHONPATH", stubs.path())
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("node gp\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("unit {} cat\n", unit.unit_id)),
        "{stdout}"
    );
    assert!(stdout.contains("error NOT_FOUND\n"), "{stdout}");
    Ok(())
}
