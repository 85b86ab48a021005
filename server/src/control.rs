//! The classic control service: the line protocol receptorctl and AWX speak
//! (spec/control-work-config.md §1).
//!
//! A thin front-end over [`Ops`]: it parses lines ([`command`]), runs the operation and renders
//! the result as Go would (one line of compact JSON with sorted map keys, or `ERROR: ...`).

pub(crate) mod command;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::command::{Command, Parsed, WorkCommand};
use crate::error_chain;
use crate::gojson::{escape, go_string, to_go_json};
use crate::idle::IdleConnections;
use crate::ops::{Ops, Probe, StatusReport, go_duration};
use crate::work::{Caller, ExtraData, Outcome, UnitStatus, UnitWatch, WATCH_KEEPALIVE};

/// Longest accepted command line. Go has no limit; we refuse to buffer more than this.
pub const MAX_LINE: usize = 1 << 20;
/// Most control sessions served at once per listener.
pub const MAX_SESSIONS: usize = 256;

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The lock file could not be created or opened.
    #[error("could not open lock file {path}")]
    LockFile {
        /// Lock file path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the socket's lock.
    #[error("could not acquire lock on socket file: {path} is locked by another process")]
    Locked {
        /// Lock file path.
        path: PathBuf,
    },
    /// Binding or setting permissions failed.
    #[error("error opening Unix socket {path}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A bound Unix socket holding its lock file (control sockets, `grpc-service`,
/// `unix-socket-server`).
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    _lock: File,
}

impl UnixSocket {
    /// Locks `<path>.lock`, then puts a new socket with mode `permissions` at `path`,
    /// replacing whatever was there. The socket is created and given its mode in a private
    /// directory next to `path` and only then renamed into place, so no client can connect
    /// while it still has the default mode.
    ///
    /// # Errors
    /// See [`BindError`].
    pub fn bind(path: &Path, permissions: u32) -> Result<Self, BindError> {
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| BindError::LockFile {
                path: lock_path.clone(),
                source,
            })?;
        let _ = std::fs::set_permissions(&lock_path, std::fs::Permissions::from_mode(0o600));
        if lock.try_lock().is_err() {
            return Err(BindError::Locked { path: lock_path });
        }
        let listener = bind_with_mode(path, permissions).map_err(|source| BindError::Socket {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file (when the service stops).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds a Unix socket at `path` that has mode `mode` before anyone can reach it.
fn bind_with_mode(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // A 0700 directory of our own: nobody else can connect to the socket inside it.
    let staging = tempfile::Builder::new()
        .prefix(".receptor-")
        .tempdir_in(parent)?;
    let staged = staging.path().join("s");
    match UnixListener::bind(&staged) {
        Ok(listener) => {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
            std::fs::rename(&staged, path)?;
            Ok(listener)
        }
        // The staging path is a few bytes longer than `path`; near the 108-byte limit of
        // socket paths fall back to binding in place (the mode is then set right after).
        Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let listener = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            Ok(listener)
        }
        Err(error) => Err(error),
    }
}

/// A bound Unix control socket.
#[derive(Debug)]
pub struct UnixControl {
    socket: UnixSocket,
}

impl UnixControl {
    /// Locks `<path>.lock`, replaces whatever is at `path` with a new socket and sets its mode.
    ///
    /// # Errors
    /// See [`BindError`].
    pub fn bind(path: &Path, permissions: u32) -> Result<Self, BindError> {
        Ok(Self {
            socket: UnixSocket::bind(path, permissions)?,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Serves sessions until `cancel` fires; sessions in progress end with it.
    pub async fn serve(self, ops: Ops, cancel: CancellationToken) {
        let listener = self.socket.listener();
        let accept = || async move {
            Some(
                listener
                    .accept()
                    .await
                    .map(|(stream, _)| std::future::ready(Ok(stream))),
            )
        };
        serve_streams(accept, ops, Caller::Unix, cancel).await;
        self.socket.remove();
    }
}

/// Serves the control service on the mesh (the `control` service that Go nodes dial for
/// remote work and `connect`), until `cancel` fires or the node stops.
pub async fn serve_mesh(
    listener: receptor_mesh::quic::Listener,
    ops: Ops,
    cancel: CancellationToken,
) {
    let listener = &listener;
    let accept = || async move {
        listener
            .accept()
            .await
            .ok()
            .map(|stream| Ok(std::future::ready(Ok::<_, std::io::Error>(stream))))
    };
    serve_streams(accept, ops, Caller::Network, cancel).await;
}

/// How long a TLS client of the TCP control listener has to finish its handshake (as Go).
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A `control-service` `tcplisten` listener, optionally with TLS (`tcptls`).
pub struct TcpControl {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for TcpControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpControl")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl TcpControl {
    /// Binds `addr` (`host:port`).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<Self> {
        Ok(Self {
            listener: tokio::net::TcpListener::bind(addr).await?,
            tls,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves sessions until `cancel` fires. TLS handshakes run inside each session's task, so
    /// a slow client cannot hold up the accept loop.
    pub async fn serve(self, ops: Ops, cancel: CancellationToken) {
        let listener = &self.listener;
        let tls = &self.tls;
        let accept = || async move {
            let accepted = listener.accept().await;
            Some(accepted.map(|(stream, peer)| {
                let tls = tls.clone();
                async move {
                    let stream: Box<dyn Conn> = match tls {
                        None => Box::new(stream),
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                            match handshake.await {
                                Ok(Ok(tls)) => Box::new(receptor_mesh::tls::SessionStream::new(tls, peer.to_string())),
                                Ok(Err(error)) => {
                                    tracing::warn!(%peer, reason = %receptor_mesh::tls::describe_io(&error), "control TLS handshake failed");
                                    return Err(error);
                                }
                                Err(_) => {
                                    tracing::warn!(%peer, "control TLS handshake timed out");
                                    return Err(std::io::ErrorKind::TimedOut.into());
                                }
                            }
                        }
                    };
                    Ok(stream)
                }
            }))
        };
        serve_streams(accept, ops, Caller::Network, cancel).await;
    }
}

/// A byte stream a control session can run on.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// The accept loop shared by every control listener: at most [`MAX_SESSIONS`] sessions at a
/// time, each ended by `cancel`. `accept` yields `None` once its listener is closed, and
/// `Some(Err(_))` for a failure worth retrying.
async fn serve_streams<S, P, F, Fut>(
    mut accept: F,
    ops: Ops,
    caller: Caller,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: std::future::Future<Output = std::io::Result<S>> + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<std::io::Result<P>>>,
{
    let limit = Arc::new(Semaphore::new(MAX_SESSIONS));
    let idle = IdleConnections::default();
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = accept() => match accepted {
                None => break,
                Some(Ok(prepare)) => {
                    // When full, the session idle the longest is closed to make room, so
                    // idle connections cannot lock clients out; when every session is busy,
                    // accepting pauses until one ends.
                    let slot = tokio::select! {
                        () = cancel.cancelled() => break,
                        slot = idle.reserve_or_wait(&limit) => slot,
                    };
                    let Some(slot) = slot else { break };
                    let ops = ops.clone();
                    let cancel = cancel.child_token();
                    let idle = idle.clone();
                    // A session is idle from the moment it holds a slot, before its task first
                    // runs: on a busy machine the accept loop can fill every slot first.
                    let early = slot.is_free().then(|| idle.enter(cancel.clone()));
                    sessions.spawn(async move {
                        let Some(permit) = slot.ready().await else {
                            tracing::warn!("a control session did not make room in time, refusing one");
                            return;
                        };
                        let session = async {
                            // The per-connection set-up (a TLS handshake) logs its own
                            // failures; the session is idle until it is done.
                            let waiting = early.unwrap_or_else(|| idle.enter(cancel.clone()));
                            let Ok(stream) = prepare.await else { return Ok(()) };
                            drop(waiting);
                            serve_session_with(stream, &ops, caller, Some((&idle, &cancel))).await
                        };
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            result = session => {
                                if let Err(error) = result {
                                    tracing::debug!(%error, "control session ended with an error");
                                }
                            }
                        }
                        drop(permit);
                    });
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "control listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Bridges a control session to a mesh stream after `connect`: client EOF half-closes the
/// stream; the stream's EOF ends the session.
async fn bridge<R, W>(stream: receptor_mesh::quic::Stream, client_in: &mut R, client_out: &mut W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut from_mesh, mut to_mesh) = tokio::io::split(stream);
    let upstream = async {
        let _ = tokio::io::copy(client_in, &mut to_mesh).await;
        let _ = to_mesh.shutdown().await;
        // Keep running until the downstream direction finishes.
        std::future::pending::<()>().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut from_mesh, client_out).await;
        let _ = client_out.shutdown().await;
    };
    tokio::select! {
        () = downstream => {}
        () = upstream => {}
    }
}

/// Runs one control session on any byte stream: greeting, then commands until EOF. The
/// connection counts as a network one (work signatures are verified); Unix sockets use
/// [`serve_session_as`] with [`Caller::Unix`].
///
/// # Errors
/// An I/O error on the stream.
pub async fn serve_session<S>(stream: S, ops: &Ops) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_session_as(stream, ops, Caller::Network).await
}

/// [`serve_session`] for a connection of the given kind.
///
/// # Errors
/// An I/O error on the stream.
pub async fn serve_session_as<S>(stream: S, ops: &Ops, caller: Caller) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_session_with(stream, ops, caller, None).await
}

/// [`serve_session_as`] on a capped listener: while the session waits for a command line it
/// is registered in `idle`, which may end it through the token to make room.
async fn serve_session_with<S>(
    stream: S,
    ops: &Ops,
    caller: Caller,
    idle: Option<(&IdleConnections, &CancellationToken)>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    // The buffered reader is kept for the whole session so that bytes read past a line (a
    // `work submit` payload) are never lost.
    let mut reader = BufReader::new(reader);
    writer
        .write_all(format!("Receptor Control, node {}\n", ops.node().id()).as_bytes())
        .await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        let waiting = idle.map(|(idle, close)| idle.enter(close.clone()));
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        drop(waiting);
        if read == 0 {
            return Ok(());
        }
        let terminated = line.last() == Some(&b'\n');
        if !terminated && line.len() > MAX_LINE {
            writer.write_all(b"ERROR: command line too long\n").await?;
            return Ok(());
        }
        line.retain(|&b| b != b'\r' && b != b'\n');
        if !line.is_empty() {
            let text = String::from_utf8_lossy(&line);
            let parsed = command::parse(&text);
            ops.count_request(crate::metrics::Frontend::Classic, parsed.name());
            let span = tracing::info_span!(
                "control.request",
                node.id = %ops.node().id(),
                control.command = parsed.name(),
                control.caller = ?caller,
            );
            let reply = match parsed {
                Parsed::Command(Command::Connect { node, service, tls }) => {
                    match ops
                        .connect(&node, &service, &tls)
                        .instrument(span.clone())
                        .await
                    {
                        Ok(stream) => {
                            writer.write_all(b"Connecting\n").await?;
                            writer.flush().await?;
                            bridge(stream, &mut reader, &mut writer)
                                .instrument(span)
                                .await;
                            return Ok(());
                        }
                        Err(error) => format!("ERROR: {}\n", error_chain(&error)),
                    }
                }
                Parsed::Command(Command::Grpc) => {
                    let slot = match ops.grpc() {
                        None => Err("gRPC is not available on this node".to_owned()),
                        Some(handoff) => handoff.reserve().map_err(|e| e.to_string()),
                    };
                    match slot {
                        Err(error) => format!("ERROR: {error}\n"),
                        Ok(slot) => {
                            writer.write_all(b"grpc ok\n").await?;
                            writer.flush().await?;
                            // A client waits for `grpc ok` before it speaks HTTP/2, but keep
                            // whatever it sent early: it belongs to the new protocol.
                            let buffered = reader.buffer().to_vec();
                            let stream = reader.into_inner().unsplit(writer);
                            if let Some(handoff) = ops.grpc()
                                && let Err(error) =
                                    handoff.upgrade(stream, buffered, caller, slot).await
                            {
                                tracing::debug!(%error, "gRPC upgrade failed");
                            }
                            return Ok(());
                        }
                    }
                }
                Parsed::Command(Command::Work(work)) => {
                    match run_work(work, ops, caller, &mut reader, &mut writer)
                        .instrument(span)
                        .await?
                    {
                        Some(reply) => reply,
                        // The work command closed the connection.
                        None => return Ok(()),
                    }
                }
                parsed => execute(parsed, ops).instrument(span).await,
            };
            writer.write_all(reply.as_bytes()).await?;
            writer.flush().await?;
        }
        if !terminated {
            // EOF after an unterminated line: Go still answers it, then ends the session.
            return Ok(());
        }
    }
}

/// Runs a `work` subcommand. Returns the reply line, or `None` once the session is over: a
/// results stream was sent, or a payload upload failed (the connection is then closed).
async fn run_work<R, W>(
    work: WorkCommand,
    ops: &Ops,
    caller: Caller,
    reader: &mut R,
    writer: &mut W,
) -> std::io::Result<Option<String>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let reply = match work {
        WorkCommand::List { unit_id } => ops
            .work_list(unit_id.as_deref())
            .await
            .map(|units| unit_map_json(&units)),
        WorkCommand::Status { unit_id } => ops
            .work_status(&unit_id)
            .await
            .map(|status| unit_status_json(&status)),
        WorkCommand::Watch { unit_id } => match ops.work_watch(&unit_id).await {
            Err(error) => Err(error),
            Ok(watch) => {
                serve_watch(watch, reader, writer).await?;
                return Ok(None);
            }
        },
        WorkCommand::Submit(request) => match ops.work_submit(request, caller).await {
            Err(error) => Err(error),
            Ok(mut submission) => {
                let id = submission.unit_id().to_owned();
                writer
                    .write_all(
                        format!("Work unit created with ID {id}. Send stdin data and EOF.\n")
                            .as_bytes(),
                    )
                    .await?;
                writer.flush().await?;
                // Every byte until EOF is payload, streamed to the unit's stdin file.
                match submission.receive(reader).await {
                    Err(error) => {
                        // What the client still sends is payload, never commands: the
                        // session ends here.
                        writer
                            .write_all(format!("ERROR: {error}\n").as_bytes())
                            .await?;
                        let _ = writer.shutdown().await;
                        return Ok(None);
                    }
                    Ok(_) => submission.start().await.map(|outcome| {
                        format!(
                            "{{\"result\":{},\"unitid\":{}}}",
                            go_string(outcome.as_str()),
                            go_string(&id)
                        )
                    }),
                }
            }
        },
        WorkCommand::Results {
            unit_id,
            start_pos,
            signature,
        } => match ops
            .work_results(&unit_id, start_pos, &signature, caller)
            .await
        {
            Err(error) => Err(error),
            Ok(stream) => {
                writer
                    .write_all(format!("Streaming results for work unit {unit_id}\n").as_bytes())
                    .await?;
                if let Err(error) = stream.copy_to(writer).await {
                    tracing::debug!(unit = %unit_id, %error, "results stream ended early");
                }
                let _ = writer.shutdown().await;
                return Ok(None);
            }
        },
        WorkCommand::Cancel { unit_id, signature } => ops
            .work_cancel(&unit_id, &signature, caller)
            .await
            .map(|outcome| outcome_json(outcome, "cancelled", "cancel pending", &unit_id)),
        WorkCommand::Release {
            unit_id,
            signature,
            force,
        } => ops
            .work_release(&unit_id, force, &signature, caller)
            .await
            .map(|outcome| outcome_json(outcome, "released", "release pending", &unit_id)),
    };
    Ok(Some(match reply {
        Ok(json) => format!("{json}\n"),
        Err(error) => format!("ERROR: {error}\n"),
    }))
}

/// Serves `work watch` until the unit is released or the client hangs up: one status line
/// (the `work status` object) now and after every change, the current one again after
/// [`WATCH_KEEPALIVE`] of silence (so the other end can tell a quiet unit from a dead
/// path), and `ERROR: unknown work unit <id>` once the unit is released. Changes are
/// coalesced: a slow reader gets the newest state, never a backlog. The session ends with
/// the watch, like a results stream.
async fn serve_watch<R, W>(
    mut watch: UnitWatch,
    reader: &mut R,
    writer: &mut W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut sink = [0u8; 512];
    loop {
        let line = tokio::select! {
            next = watch.next() => match next {
                Some(status) => format!("{}\n", unit_status_json(&status)),
                None => {
                    let gone = format!("ERROR: unknown work unit {}\n", watch.unit_id());
                    writer.write_all(gone.as_bytes()).await?;
                    break;
                }
            },
            () = tokio::time::sleep(WATCH_KEEPALIVE) => {
                format!("{}\n", unit_status_json(&watch.current()))
            }
            // The client sends nothing during a watch: EOF (or an error) means it is gone.
            // Anything else is discarded.
            read = reader.read(&mut sink) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        };
        writer.write_all(line.as_bytes()).await?;
        writer.flush().await?;
    }
    let _ = writer.shutdown().await;
    Ok(())
}

fn outcome_json(outcome: Outcome, done: &str, pending: &str, unit_id: &str) -> String {
    let key = match outcome {
        Outcome::Done => done,
        Outcome::Pending => pending,
    };
    format!("{{{}:{}}}", go_string(key), go_string(unit_id))
}

/// A unit's status as Go renders its map: keys sorted.
fn unit_status_json(status: &UnitStatus) -> String {
    let extra = match &status.extra_data {
        ExtraData::Null => "null".to_owned(),
        ExtraData::Json(raw) => escape(raw),
        ExtraData::UnknownWorkType => go_string("Unknown WorkType"),
    };
    format!(
        "{{\"Detail\":{},\"ExtraData\":{},\"State\":{},\"StateName\":{},\"StdoutSize\":{},\"WorkType\":{}}}",
        go_string(&status.detail),
        extra,
        status.state.0,
        go_string(&status.state.name()),
        status.stdout_size,
        go_string(&status.work_type),
    )
}

fn unit_map_json(units: &std::collections::BTreeMap<String, UnitStatus>) -> String {
    let mut out = String::from("{");
    for (i, (id, status)) in units.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&go_string(id));
        out.push(':');
        out.push_str(&unit_status_json(status));
    }
    out.push('}');
    out
}

async fn execute(parsed: Parsed, ops: &Ops) -> String {
    let command = match parsed {
        Parsed::Command(command) => command,
        Parsed::Errors(errors) => return errors.iter().map(|e| format!("ERROR: {e}\n")).collect(),
    };
    let rendered = match command {
        Command::Status { requested_fields } => match ops.status().await {
            Ok(report) => to_go_json(&StatusJson {
                report: &report,
                fields: requested_fields.as_deref(),
            }),
            Err(error) => return format!("ERROR: {error}\n"),
        },
        Command::Ping { target } => to_go_json(&PingJson(&ops.ping(&target).await)),
        Command::Traceroute { target } => {
            let hops = ops.traceroute(&target).await;
            let map: std::collections::BTreeMap<String, HopJson<'_>> = hops
                .iter()
                .map(|(ttl, probe)| (ttl.to_string(), HopJson(probe)))
                .collect();
            to_go_json(&map)
        }
        Command::Reload => {
            let mut reply = serde_json::Map::new();
            match ops.reload().await {
                Ok(()) => {
                    reply.insert("Success".into(), true.into());
                }
                Err(error) => {
                    reply.insert("Success".into(), false.into());
                    reply.insert("Error".into(), error.to_string().into());
                }
            }
            to_go_json(&reply)
        }
        // Handled by the session loop, which owns the raw stream they switch to.
        Command::Work(_) | Command::Connect { .. } | Command::Grpc => {
            return "ERROR: bad command\n".to_owned();
        }
    };
    format!("{rendered}\n")
}

// === rendering ===

/// A float as Go encodes it (`1`, not `1.0`).
struct GoFloat(f64);

impl Serialize for GoFloat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = receptor_mesh::wire::format_go_float(self.0);
        match serde_json::value::RawValue::from_string(text) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_f64(self.0),
        }
    }
}

struct StatusJson<'a> {
    report: &'a StatusReport,
    fields: Option<&'a [String]>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectionJson<'a> {
    #[serde(rename = "NodeID")]
    node_id: &'a str,
    cost: GoFloat,
}

#[derive(Serialize)]
struct AdJson<'a> {
    #[serde(rename = "NodeID")]
    node_id: &'a str,
    #[serde(rename = "Service")]
    service: &'a str,
    #[serde(rename = "Time")]
    time: String,
    #[serde(rename = "ConnType")]
    conn_type: u8,
    #[serde(rename = "Tags")]
    tags: &'a Option<std::collections::BTreeMap<String, String>>,
    #[serde(rename = "WorkCommands")]
    work_commands: Option<Vec<WorkCommandJson<'a>>>,
}

#[derive(Serialize)]
struct WorkCommandJson<'a> {
    #[serde(rename = "WorkType")]
    work_type: &'a str,
    #[serde(rename = "Secure")]
    secure: bool,
}

impl Serialize for StatusJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mesh = &self.report.mesh;
        let wanted = |name: &str| {
            self.fields
                .is_none_or(|fields| fields.iter().any(|f| f == name))
        };
        // Go renders a map, so keys come out sorted.
        let mut map = s.serialize_map(None)?;
        if wanted("Advertisements") {
            let ads: Vec<AdJson<'_>> = mesh
                .advertisements
                .iter()
                .map(|ad| AdJson {
                    node_id: &ad.node_id,
                    service: &ad.service,
                    time: receptor_mesh::wire::format_go_time(ad.time),
                    conn_type: ad.conn_type,
                    tags: &ad.tags,
                    work_commands: ad.work_commands.as_ref().map(|commands| {
                        commands
                            .iter()
                            .map(|c| WorkCommandJson {
                                work_type: &c.work_type,
                                secure: c.secure,
                            })
                            .collect()
                    }),
                })
                .collect();
            map.serialize_entry("Advertisements", &ads)?;
        }
        if wanted("Connections") {
            let connections: Vec<ConnectionJson<'_>> = mesh
                .connections
                .iter()
                .map(|c| ConnectionJson {
                    node_id: &c.node_id,
                    cost: GoFloat(c.cost),
                })
                .collect();
            map.serialize_entry("Connections", &connections)?;
        }
        if wanted("KnownConnectionCosts") {
            let costs: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, GoFloat>> =
                mesh.known_connection_costs
                    .iter()
                    .map(|(node, row)| {
                        (
                            node.as_str(),
                            row.iter()
                                .map(|(peer, cost)| (peer.as_str(), GoFloat(*cost)))
                                .collect(),
                        )
                    })
                    .collect();
            map.serialize_entry("KnownConnectionCosts", &costs)?;
        }
        if wanted("NodeID") {
            map.serialize_entry("NodeID", &mesh.node_id)?;
        }
        if wanted("RoutingTable") {
            map.serialize_entry("RoutingTable", &mesh.routes)?;
        }
        if wanted("SystemCPUCount") {
            map.serialize_entry("SystemCPUCount", &self.report.cpu_count)?;
        }
        if wanted("SystemMemoryMiB") {
            map.serialize_entry("SystemMemoryMiB", &self.report.memory_mib)?;
        }
        if wanted("Version") {
            map.serialize_entry("Version", &self.report.version)?;
        }
        map.end()
    }
}

struct PingJson<'a>(&'a Probe);

impl Serialize for PingJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let probe = self.0;
        let mut map = s.serialize_map(None)?;
        match &probe.error {
            Some(error) => {
                map.serialize_entry("Error", error)?;
                map.serialize_entry("Success", &false)?;
            }
            None => {
                let rtt = probe.rtt.unwrap_or_default();
                map.serialize_entry("From", probe.from.as_deref().unwrap_or(""))?;
                map.serialize_entry("Success", &true)?;
                map.serialize_entry("Time", &u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX))?;
                map.serialize_entry("TimeStr", &go_duration(rtt))?;
            }
        }
        map.end()
    }
}

struct HopJson<'a>(&'a Probe);

impl Serialize for HopJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let probe = self.0;
        let rtt = probe.rtt.unwrap_or_default();
        let mut map = s.serialize_map(None)?;
        if let Some(error) = &probe.error {
            map.serialize_entry("Error", error)?;
        }
        map.serialize_entry("From", probe.from.as_deref().unwrap_or(""))?;
        map.serialize_entry("Time", &u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX))?;
        map.serialize_entry("TimeStr", &go_duration(rtt))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::work::State;

    fn status(
        state: State,
        detail: &str,
        size: i64,
        work_type: &str,
        extra: ExtraData,
    ) -> UnitStatus {
        UnitStatus {
            state,
            detail: detail.into(),
            stdout_size: size,
            work_type: work_type.into(),
            extra_data: extra,
        }
    }

    /// Lines copied from vectors/go-control-transcripts.jsonl (Go 1.4.9 replies).
    #[test]
    fn unit_status_renders_byte_for_byte_like_go() {
        let cat = status(State::SUCCEEDED, "exit status 0", 6, "cat", ExtraData::Null);
        assert_eq!(
            unit_status_json(&cat),
            r#"{"Detail":"exit status 0","ExtraData":null,"State":2,"StateName":"Succeeded","StdoutSize":6,"WorkType":"cat"}"#
        );
        let canceled = status(State::CANCELED, "Canceled", 0, "sleep", ExtraData::Null);
        assert_eq!(
            unit_status_json(&canceled),
            r#"{"Detail":"Canceled","ExtraData":null,"State":4,"StateName":"Canceled","StdoutSize":0,"WorkType":"sleep"}"#
        );
        let echo = status(
            State::SUCCEEDED,
            "exit status 0",
            21,
            "echo",
            ExtraData::Null,
        );
        let units: BTreeMap<String, UnitStatus> =
            [("xk07MWEr".to_owned(), cat), ("gYqB5Vru".to_owned(), echo)].into();
        assert_eq!(
            unit_map_json(&units),
            r#"{"gYqB5Vru":{"Detail":"exit status 0","ExtraData":null,"State":2,"StateName":"Succeeded","StdoutSize":21,"WorkType":"echo"},"xk07MWEr":{"Detail":"exit status 0","ExtraData":null,"State":2,"StateName":"Succeeded","StdoutSize":6,"WorkType":"cat"}}"#
        );
        assert_eq!(unit_map_json(&BTreeMap::new()), "{}");
        // ExtraData keeps its struct order (Go marshals a struct there, not a map).
        let running = status(
            State::RUNNING,
            "Running: PID 12",
            0,
            "sleep",
            ExtraData::Json(r#"{"Pid":11,"Params":"30 <&>"}"#.into()),
        );
        assert_eq!(
            unit_status_json(&running),
            r#"{"Detail":"Running: PID 12","ExtraData":{"Pid":11,"Params":"30 \u003c\u0026\u003e"},"State":1,"StateName":"Running","StdoutSize":0,"WorkType":"sleep"}"#
        );
        let unknown = status(State(7), "x", 0, "kube", ExtraData::UnknownWorkType);
        assert_eq!(
            unit_status_json(&unknown),
            r#"{"Detail":"x","ExtraData":"Unknown WorkType","State":7,"StateName":"Unknown: 7","StdoutSize":0,"WorkType":"kube"}"#
        );
    }

    #[test]
    fn outcomes_render_like_go() {
        assert_eq!(
            outcome_json(Outcome::Done, "cancelled", "cancel pending", "nFaAAR3V"),
            r#"{"cancelled":"nFaAAR3V"}"#
        );
        assert_eq!(
            outcome_json(Outcome::Pending, "released", "release pending", "u"),
            r#"{"release pending":"u"}"#
        );
    }
}
