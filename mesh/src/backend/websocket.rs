//! The WebSocket backend (`ws-listener`, `ws-peer`), optionally over TLS (`wss`): one
//! netceptor message per WebSocket message (spec/wire.md §1.4).
//!
//! The HTTP/1.1 upgrade is done here, by hand, so both sides look exactly like Go's
//! gorilla/websocket 1.5.3 on the wire (vectors/README.md, WebSocket); tungstenite only does
//! the framing afterwards.
//!
//! * We always send binary messages and accept text or binary ones. Fragmented messages are
//!   reassembled and pings answered (tungstenite does both). No compression, no subprotocol.
//!   Empty messages are never sent and are dropped on receipt (a Go node crashes on one).
//! * Listener: Go `http.ServeMux` path matching (`/` matches everything, `/x` only itself, `/x/`
//!   its subtree), 404 otherwise. The request head must arrive within [`HEADER_TIMEOUT`]
//!   (TLS handshake included) and fit in [`MAX_REQUEST_HEAD`]. The `Origin` check is gorilla's:
//!   403 if an `Origin` header is present and its host differs (ASCII case-insensitively) from
//!   `Host`. Go dialers send `Origin: http://<Host>`, which passes; a browser page on another
//!   site cannot open a link (cross-site WebSocket hijacking).
//! * Dialer: sends Go's header set (`Host`, `User-Agent`, `Connection`, `Origin`,
//!   `Sec-WebSocket-Key`, `Sec-WebSocket-Version`, `Upgrade`, plus the optional extra header)
//!   with `Origin: http(s)://<url host[:port]>` exactly as Go builds it. A `wss` dialer never
//!   offers ALPN `h2`: a Go listener (`http.Server.ServeTLS`) would pick it and the upgrade
//!   would fail.
//! * The listener speaks first after the upgrade (the node sends its initial update at once);
//!   bytes that arrive in the same read as the handshake are kept.
//! * Incoming messages are capped at [`MAX_MESSAGE_LEN`] (Go has no cap; netceptor messages are
//!   at most 65535 bytes in practice). A bigger one ends the session, not the listener.
//! * On session end we send a close frame (Go just closes the socket; either is fine for Go).
//! * Not supported: HTTP(S) proxies (Go dialers honour `HTTPS_PROXY`), and Go's path-cleaning
//!   redirects (a request for `/x` when serving `/x/` gets 404, not 301).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use super::{
    Backend, BackendError, BackendFuture, Dialed, LinkConfig, SESSION_QUEUE, Session, SessionInfo,
    SessionSink, accept_loop, redial_loop,
};

/// The listener path when none is configured.
pub const DEFAULT_PATH: &str = "/";
/// Time a client has to complete TLS and send its request head (Go's `ReadHeaderTimeout`).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest upgrade request (or response) head accepted.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Largest WebSocket message (and frame) accepted.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;
/// How long connecting, TLS and the upgrade may take before a dial counts as failed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a closing session may spend flushing queued messages to a slow peer.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a refused client may keep sending before we close (Go lingers too).
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded from a refused client.
const MAX_LINGER_BYTES: usize = 256 * 1024;
/// Most header lines parsed in an upgrade request or response.
const MAX_HEADERS: usize = 64;
const USER_AGENT: &str = concat!("receptor-rs/", env!("CARGO_PKG_VERSION"));
const KIND: &str = "ws";

/// A byte stream a WebSocket can run over: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxedIo = Box<dyn Io>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * MAX_MESSAGE_LEN)
        .max_message_size(Some(MAX_MESSAGE_LEN))
        .max_frame_size(Some(MAX_MESSAGE_LEN))
}

/// Why a WebSocket dialer could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The address is not a usable `ws://` or `wss://` URL.
    #[error("invalid websocket url {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `wss://` URL needs a TLS client configuration.
    #[error("wss url {0:?} needs a tls client configuration")]
    TlsRequired(String),
    /// The extra header cannot be sent.
    #[error("invalid extra header {0:?}")]
    ExtraHeader(String),
}

/// Why one dial attempt failed (logged by the dial loop).
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect failed")]
    Connect(#[source] io::Error),
    #[error("tls handshake failed")]
    Tls(#[source] io::Error),
    #[error("upgrade request failed")]
    Io(#[from] io::Error),
    #[error("upgrade refused: {0}")]
    Refused(String),
    #[error("timed out")]
    Timeout,
}

// === URLs and paths ===

/// A parsed `ws://` / `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WsUrl {
    secure: bool,
    /// `host[:port]` exactly as written: the `Host` header and the `Origin` host.
    authority: String,
    /// `host:port` to connect to.
    connect_addr: String,
    /// Path and query: the request target.
    target: String,
}

fn parse_url(url: &str) -> Result<WsUrl, ConfigError> {
    let bad = |reason| ConfigError::Url {
        url: url.to_owned(),
        reason,
    };
    let (scheme, rest) = url.split_once("://").ok_or(bad("no scheme"))?;
    let secure = if scheme.eq_ignore_ascii_case("ws") {
        false
    } else if scheme.eq_ignore_ascii_case("wss") {
        true
    } else {
        return Err(bad("the scheme must be ws or wss"));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    // Userinfo is not sent (Go's dialer uses it for basic auth only, which receptor never does).
    let authority = authority.rsplit('@').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(bad("invalid host"));
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    if authority.starts_with('[') && !authority.contains(']') {
        return Err(bad("unterminated IPv6 address"));
    }
    let connect_addr = if has_port {
        let port = authority.rsplit(':').next().unwrap_or_default();
        if port.parse::<u16>().is_err() {
            return Err(bad("invalid port"));
        }
        authority.to_owned()
    } else {
        format!("{authority}:{}", if secure { 443 } else { 80 })
    };
    let target = match target {
        "" => "/".to_owned(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_owned(),
    };
    if target
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(bad("invalid path"));
    }
    Ok(WsUrl {
        secure,
        authority: authority.to_owned(),
        connect_addr,
        target,
    })
}

/// Go `http.ServeMux` (legacy) matching of one pattern against a request path.
fn path_matches(pattern: &str, path: &str) -> bool {
    if pattern.ends_with('/') {
        path.starts_with(pattern)
    } else {
        path == pattern
    }
}

fn normalise_path(path: &str) -> String {
    match path {
        "" => DEFAULT_PATH.to_owned(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// === the HTTP upgrade ===

/// Reads an HTTP head (up to the blank line). Returns the head and any bytes after it.
async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    limit: usize,
) -> Result<(Vec<u8>, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = io.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[searched_from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            let end = searched_from + pos + 4;
            if end > limit {
                return Err(HeadError::TooLarge);
            }
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > limit {
            return Err(HeadError::TooLarge);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("connection closed during the http head")]
    Closed,
    #[error("http head too large")]
    TooLarge,
    #[error("reading the http head failed")]
    Io(#[source] io::Error),
}

/// An HTTP error answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rejection {
    status: u16,
    reason: &'static str,
    body: &'static str,
}

impl Rejection {
    const fn new(status: u16, reason: &'static str, body: &'static str) -> Self {
        Self {
            status,
            reason,
            body,
        }
    }

    fn render(&self) -> String {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}\n",
            self.status,
            self.reason,
            self.body.len() + 1,
            self.body
        )
    }
}

fn header_values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'h str,
) -> impl Iterator<Item = &'h str> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// Whether a comma-separated header (any of its lines) lists `token`.
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    header_values(headers, name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn first_value<'h>(headers: &'h [httparse::Header<'_>], name: &'h str) -> Option<&'h str> {
    header_values(headers, name).next().map(str::trim)
}

/// gorilla's `isValidChallengeKey`: base64 of 16 bytes.
fn valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The host part of an `Origin` value (`scheme://host[:port]`), if it has one.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    Some(host.rsplit('@').next().unwrap_or(host))
}

/// Checks an upgrade request the way Go's `ServeMux` and gorilla's `Upgrader` do, in their
/// order. Returns the `Sec-WebSocket-Accept` value.
fn check_request(head: &[u8], pattern: &str) -> Result<String, Rejection> {
    let bad = |body| Rejection::new(400, "Bad Request", body);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("400 Bad Request")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::new(
                431,
                "Request Header Fields Too Large",
                "431 Request Header Fields Too Large",
            ));
        }
        Err(_) => return Err(bad("400 Bad Request")),
    }
    let headers = request.headers;
    let Some(host) = first_value(headers, "host") else {
        return Err(bad("400 Bad Request: missing required Host header"));
    };
    let target = request.path.unwrap_or_default();
    // Absolute-form targets (`http://host/path`) carry the path after the authority.
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let path = target.split('?').next().unwrap_or_default();
    if !path_matches(pattern, path) {
        return Err(Rejection::new(404, "Not Found", "404 page not found"));
    }
    if !has_token(headers, "connection", "upgrade") {
        return Err(bad(
            "websocket: the client is not using the websocket protocol: 'upgrade' token not found in 'Connection' header",
        ));
    }
    if !has_token(headers, "upgrade", "websocket") {
        return Err(bad(
            "websocket: the client is not using the websocket protocol: 'websocket' token not found in 'Upgrade' header",
        ));
    }
    if request.method != Some("GET") {
        return Err(Rejection::new(
            405,
            "Method Not Allowed",
            "websocket: the client is not using the websocket protocol: request method is not GET",
        ));
    }
    if !has_token(headers, "sec-websocket-version", "13") {
        return Err(bad(
            "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header",
        ));
    }
    if let Some(origin) = first_value(headers, "origin")
        && !origin_host(origin).is_some_and(|o| o.eq_ignore_ascii_case(host))
    {
        return Err(Rejection::new(
            403,
            "Forbidden",
            "websocket: request origin not allowed by Upgrader.CheckOrigin",
        ));
    }
    match first_value(headers, "sec-websocket-key") {
        Some(key) if valid_key(key) => Ok(derive_accept_key(key.as_bytes())),
        _ => Err(bad(
            "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length",
        )),
    }
}

/// The upgrade answer, byte for byte what gorilla sends.
fn switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// The upgrade request, in Go's order: `Host`, `User-Agent`, then the rest sorted by name.
fn upgrade_request(url: &WsUrl, key: &str, extra: Option<&(String, String)>) -> String {
    let origin_scheme = if url.secure { "https" } else { "http" };
    let mut headers: Vec<(&str, String)> = vec![
        ("Connection", "Upgrade".to_owned()),
        ("Origin", format!("{origin_scheme}://{}", url.authority)),
        ("Sec-WebSocket-Key", key.to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
        ("Upgrade", "websocket".to_owned()),
    ];
    if let Some((name, value)) = extra {
        headers.push((name.as_str(), value.clone()));
    }
    headers.sort_by_key(|(name, _)| name.to_ascii_lowercase());
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\n",
        url.target, url.authority
    );
    for (name, value) in headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(&value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// Checks the listener's answer the way gorilla's dialer does.
fn check_response(head: &[u8], key: &str) -> Result<(), DialError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(DialError::Refused("malformed http response".to_owned())),
    }
    if response.code != Some(101) {
        return Err(DialError::Refused(format!(
            "status {} {}",
            response.code.unwrap_or_default(),
            response.reason.unwrap_or_default()
        )));
    }
    let headers = response.headers;
    if !has_token(headers, "upgrade", "websocket") || !has_token(headers, "connection", "upgrade") {
        return Err(DialError::Refused("missing upgrade headers".to_owned()));
    }
    if first_value(headers, "sec-websocket-accept")
        != Some(derive_accept_key(key.as_bytes()).as_str())
    {
        return Err(DialError::Refused("wrong Sec-WebSocket-Accept".to_owned()));
    }
    if first_value(headers, "sec-websocket-extensions").is_some() {
        return Err(DialError::Refused("unrequested extension".to_owned()));
    }
    Ok(())
}

// === the session pump ===

/// Turns an upgraded WebSocket into a [`Session`]; the caller owns the pump future.
///
/// The pump ends when the peer closes or errs, when `cancel` fires, or when the node dropped
/// the session and its queued messages are written (at most [`CLOSE_GRACE`] later).
fn ws_session<S>(
    ws: WebSocketStream<S>,
    info: SessionInfo,
    cancel: CancellationToken,
) -> (Session, impl Future<Output = ()> + Send + 'static)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(SESSION_QUEUE);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(SESSION_QUEUE);
    let remote = info.remote_addr.clone();
    let session = Session {
        outbound: out_tx,
        inbound: in_rx,
        info,
    };
    let pump = async move {
        let (mut sink, mut stream) = ws.split();
        let dropped = in_tx.clone();
        let reader = async {
            loop {
                let message = match stream.next().await {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(Message::Text(text))) => Bytes::from(text),
                    Some(Ok(Message::Close(_))) | None => {
                        tracing::debug!(%remote, "peer closed the websocket");
                        return;
                    }
                    // Pings are answered by tungstenite; pongs and raw frames mean nothing here.
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => {
                        tracing::debug!(%remote, %error, "websocket read failed");
                        return;
                    }
                };
                if message.is_empty() {
                    continue;
                }
                if in_tx.send(message).await.is_err() {
                    // The node dropped the session: let the writer flush and finish.
                    std::future::pending::<()>().await;
                }
            }
        };
        let writer = async {
            while let Some(message) = out_rx.recv().await {
                if message.is_empty() || message.len() > MAX_MESSAGE_LEN {
                    tracing::warn!(%remote, len = message.len(), "refusing to send a message of this size");
                    continue;
                }
                if let Err(error) = sink.send(Message::Binary(message)).await {
                    tracing::debug!(%remote, %error, "websocket write failed");
                    return;
                }
            }
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
        };
        // A peer that stopped reading must not keep a dropped session alive forever.
        let abandoned = async {
            dropped.closed().await;
            tokio::time::sleep(CLOSE_GRACE).await;
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {}
            () = reader => {}
            () = writer => {}
            () = abandoned => tracing::debug!(%remote, "gave up flushing a closed websocket session"),
        }
    };
    (session, pump)
}

// === impl Listener ===

/// A bound `ws-listener` (`wss` when given a TLS acceptor).
pub struct Listener {
    listener: TcpListener,
    local_addr: SocketAddr,
    path: String,
    link: LinkConfig,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds `addr` (`host:port`; port 0 picks a free port) and serves WebSocket upgrades on
    /// `path` (Go `ServeMux` semantics; empty means `/`). With `tls`, clients must speak TLS
    /// first; ALPN `h2` is never selected.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(
        addr: &str,
        path: &str,
        link: LinkConfig,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let tls = tls.map(|acceptor| {
            if acceptor.config().alpn_protocols.iter().any(|p| p == b"h2") {
                let mut config = (**acceptor.config()).clone();
                config.alpn_protocols.retain(|p| p != b"h2");
                TlsAcceptor::from(Arc::new(config))
            } else {
                acceptor
            }
        });
        Ok(Self {
            listener,
            local_addr,
            path: normalise_path(path),
            link,
            tls,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn serve(
        self,
        sessions: SessionSink,
        cancel: CancellationToken,
    ) -> Result<(), BackendError> {
        let path: Arc<str> = Arc::from(self.path.as_str());
        accept_loop(KIND, &self.listener, &sessions, &cancel, |stream, peer, cancel| {
            let tls = self.tls.clone();
            let path = Arc::clone(&path);
            let info = SessionInfo {
                kind: KIND,
                remote_addr: peer.to_string(),
                link: self.link.clone(),
            };
            let sessions = sessions.clone();
            async move {
                let upgraded = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    upgraded = tokio::time::timeout(HEADER_TIMEOUT, accept_upgrade(stream, tls, &path)) => upgraded,
                };
                let ws = match upgraded {
                    Ok(Ok(ws)) => ws,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "websocket upgrade failed");
                        return;
                    }
                    Err(_elapsed) => {
                        tracing::debug!(%peer, "websocket upgrade timed out");
                        return;
                    }
                };
                let (session, pump) = ws_session(ws, info, cancel.clone());
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    sent = sessions.send(session) => if sent.is_err() { return },
                }
                pump.await;
            }
        })
        .await
    }
}

/// Why an incoming connection did not become a session (logged at debug level).
#[derive(Debug, thiserror::Error)]
enum UpgradeError {
    #[error("tls handshake failed")]
    Tls(#[source] io::Error),
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("answered {0}")]
    Rejected(u16),
    #[error("writing the response failed")]
    Write(#[source] io::Error),
}

async fn accept_upgrade(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    path: &str,
) -> Result<WebSocketStream<BoxedIo>, UpgradeError> {
    let mut io: BoxedIo = match tls {
        Some(acceptor) => Box::new(acceptor.accept(stream).await.map_err(UpgradeError::Tls)?),
        None => Box::new(stream),
    };
    let (head, rest) = match read_head(&mut io, MAX_REQUEST_HEAD).await {
        Ok(read) => read,
        Err(HeadError::TooLarge) => {
            let answer = Rejection::new(
                431,
                "Request Header Fields Too Large",
                "431 Request Header Fields Too Large",
            );
            refuse(&mut io, &answer).await;
            return Err(HeadError::TooLarge.into());
        }
        Err(error) => return Err(error.into()),
    };
    match check_request(&head, path) {
        Ok(accept) => {
            io.write_all(switching_protocols(&accept).as_bytes())
                .await
                .map_err(UpgradeError::Write)?;
            io.flush().await.map_err(UpgradeError::Write)?;
            Ok(
                WebSocketStream::from_partially_read(io, rest, Role::Server, Some(ws_config()))
                    .await,
            )
        }
        Err(rejection) => {
            refuse(&mut io, &rejection).await;
            Err(UpgradeError::Rejected(rejection.status))
        }
    }
}

/// Sends an error answer and closes like Go's `net/http` does: half-close, then read and
/// discard what the client is still sending (bounded), so it is not reset before it reads
/// the answer.
async fn refuse(io: &mut BoxedIo, rejection: &Rejection) {
    if io.write_all(rejection.render().as_bytes()).await.is_err() || io.shutdown().await.is_err() {
        return;
    }
    let mut discarded = 0;
    let mut chunk = [0u8; 4096];
    let drain = async {
        while discarded < MAX_LINGER_BYTES {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

impl Backend for Listener {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(self.serve(sessions, cancel))
    }
}

// === impl Dialer ===

/// A `ws-peer`: dials a `ws://` or `wss://` URL and redials with backoff while `redial` is set.
#[derive(Clone)]
pub struct Dialer {
    url: WsUrl,
    extra_header: Option<(String, String)>,
    redial: bool,
    link: LinkConfig,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("url", &self.url)
            .field("extra_header", &self.extra_header)
            .field("redial", &self.redial)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer for `url` (`ws://host[:port]/path` or `wss://...`). `extra_header` is sent with
    /// the upgrade request (Go's `extraheader`, already split at its first `:`). `tls` is
    /// required for `wss` (the connector and the name to verify) and ignored for `ws`, as in Go.
    ///
    /// # Errors
    /// The URL or the header is unusable, or a `wss` URL has no TLS configuration.
    pub fn new(
        url: &str,
        extra_header: Option<(String, String)>,
        redial: bool,
        link: LinkConfig,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    ) -> Result<Self, ConfigError> {
        let parsed = parse_url(url)?;
        let extra_header = extra_header
            .map(|(name, value)| {
                let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
                if is_token(&name) && !value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                    Ok((name, value))
                } else {
                    Err(ConfigError::ExtraHeader(format!("{name}:{value}")))
                }
            })
            .transpose()?;
        if parsed.secure && tls.is_none() {
            return Err(ConfigError::TlsRequired(url.to_owned()));
        }
        let tls = if parsed.secure { tls } else { None };
        Ok(Self {
            url: parsed,
            extra_header,
            redial,
            link,
            tls,
        })
    }

    async fn dial(&self) -> Result<WebSocketStream<BoxedIo>, DialError> {
        let tcp = TcpStream::connect(&self.url.connect_addr)
            .await
            .map_err(DialError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let mut io: BoxedIo = match &self.tls {
            Some((connector, name)) => {
                // Offer what the config offers minus h2: a Go wss listener would pick h2.
                let alpn = connector
                    .config()
                    .alpn_protocols
                    .iter()
                    .filter(|p| p.as_slice() != b"h2")
                    .cloned()
                    .collect();
                let stream = connector
                    .with_alpn(alpn)
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(DialError::Tls)?;
                Box::new(stream)
            }
            None => Box::new(tcp),
        };
        let key = generate_key();
        let request = upgrade_request(&self.url, &key, self.extra_header.as_ref());
        io.write_all(request.as_bytes()).await?;
        io.flush().await?;
        let (head, rest) = read_head(&mut io, MAX_REQUEST_HEAD)
            .await
            .map_err(|e| match e {
                HeadError::Io(e) => DialError::Io(e),
                other => DialError::Refused(other.to_string()),
            })?;
        check_response(&head, &key)?;
        Ok(WebSocketStream::from_partially_read(io, rest, Role::Client, Some(ws_config())).await)
    }

    async fn dial_loop(
        self,
        sessions: SessionSink,
        cancel: CancellationToken,
    ) -> Result<(), BackendError> {
        let address = format!(
            "{}://{}{}",
            if self.url.secure { "wss" } else { "ws" },
            self.url.authority,
            self.url.target
        );
        let this = &self;
        let remote = &address;
        let dial = |token: CancellationToken| async move {
            let ws = tokio::time::timeout(DIAL_TIMEOUT, this.dial())
                .await
                .unwrap_or(Err(DialError::Timeout))
                .map_err(|error| ErrorChain(&error).to_string())?;
            let info = SessionInfo {
                kind: KIND,
                remote_addr: remote.clone(),
                link: this.link.clone(),
            };
            let (session, pump) = ws_session(ws, info, token);
            Ok::<Dialed, String>((session, Box::pin(pump)))
        };
        redial_loop(KIND, &address, self.redial, sessions, cancel, dial).await
    }
}

/// Displays an error with its sources, `a: b: c`.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

impl Backend for Dialer {
    fn run(self: Box<Self>, sessions: SessionSink, cancel: CancellationToken) -> BackendFuture {
        Box::pin(self.dial_loop(sessions, cancel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servemux_matching() {
        assert!(path_matches("/", "/"));
        assert!(path_matches("/", "/anything/at/all"));
        assert!(path_matches("/netc", "/netc"));
        assert!(!path_matches("/netc", "/netc/"));
        assert!(!path_matches("/netc", "/netcx"));
        assert!(path_matches("/netc/", "/netc/"));
        assert!(path_matches("/netc/", "/netc/a/b"));
        assert!(!path_matches("/netc/", "/netc"));
        assert_eq!(normalise_path(""), "/");
        assert_eq!(normalise_path("netc"), "/netc");
    }

    #[test]
    fn urls() {
        let u = parse_url("ws://127.0.0.1:27432/netc").expect("valid");
        assert_eq!(
            u,
            WsUrl {
                secure: false,
                authority: "127.0.0.1:27432".into(),
                connect_addr: "127.0.0.1:27432".into(),
                target: "/netc".into(),
            }
        );
        let u = parse_url("wss://example.com").expect("valid");
        assert_eq!(
            (u.secure, u.connect_addr.as_str(), u.target.as_str()),
            (true, "example.com:443", "/")
        );
        let u = parse_url("ws://[::1]/x?y=1#frag").expect("valid");
        assert_eq!(
            (
                u.authority.as_str(),
                u.connect_addr.as_str(),
                u.target.as_str()
            ),
            ("[::1]", "[::1]:80", "/x?y=1")
        );
        let u = parse_url("ws://[::1]:99?q").expect("valid");
        assert_eq!(
            (u.connect_addr.as_str(), u.target.as_str()),
            ("[::1]:99", "/?q")
        );
        for bad in [
            "http://x/",
            "127.0.0.1:80",
            "ws:///path",
            "ws://host:notaport/",
            "ws://ho st/",
            "ws://[::1/",
            "ws://host/pa th",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_matches_go_byte_for_byte() {
        // vectors/go-ws-session.jsonl, line 5: the Go dialer's request (User-Agent aside).
        let url = parse_url("ws://127.0.0.1:27432/netc").expect("valid");
        let request = upgrade_request(&url, "qFAICxh+4L4AGs9eTsLioQ==", None);
        let go = "GET /netc HTTP/1.1\r\nHost: 127.0.0.1:27432\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\nOrigin: http://127.0.0.1:27432\r\nSec-WebSocket-Key: qFAICxh+4L4AGs9eTsLioQ==\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(
            request.replace(USER_AGENT, "Go-http-client/1.1"),
            go,
            "header order and values"
        );
        let url = parse_url("wss://h.example:8443/").expect("valid");
        let request = upgrade_request(
            &url,
            "qFAICxh+4L4AGs9eTsLioQ==",
            Some(&("X-Token".into(), "abc".into())),
        );
        assert!(request.contains("Origin: https://h.example:8443\r\nSec-WebSocket-Key"));
        assert!(request.contains("Upgrade: websocket\r\nX-Token: abc\r\n\r\n"));
    }

    #[test]
    fn response_matches_go_byte_for_byte() {
        // vectors/go-ws-session.jsonl, lines 5-6.
        let head = b"GET /netc HTTP/1.1\r\nHost: 127.0.0.1:27432\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\nOrigin: http://127.0.0.1:27432\r\nSec-WebSocket-Key: qFAICxh+4L4AGs9eTsLioQ==\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n";
        let accept = check_request(head, "/netc").expect("accepted");
        assert_eq!(
            switching_protocols(&accept),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: lcxmUeZYcJC16vt8zb+n6+lgKgk=\r\n\r\n"
        );
        check_response(
            switching_protocols(&accept).as_bytes(),
            "qFAICxh+4L4AGs9eTsLioQ==",
        )
        .expect("our dialer accepts gorilla's answer");
        assert!(
            check_response(
                switching_protocols(&accept).as_bytes(),
                "AAAAAAAAAAAAAAAAAAAAAA=="
            )
            .is_err()
        );
    }

    #[test]
    fn request_checks() {
        let req = |target: &str, extra: &str| {
            format!(
                "GET {target} HTTP/1.1\r\nHost: Example.com:80\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
            )
        };
        let status = |head: String, pattern: &str| {
            check_request(head.as_bytes(), pattern).map_or_else(|r| r.status, |_| 101)
        };
        assert_eq!(status(req("/", ""), "/"), 101);
        assert_eq!(status(req("/x/y?z", ""), "/"), 101);
        assert_eq!(status(req("/netc", ""), "/other"), 404);
        assert_eq!(status(req("/netc?x=1", ""), "/netc"), 101);
        assert_eq!(status(req("http://example.com:80/netc", ""), "/netc"), 101);
        assert_eq!(
            status(req("/", "Origin: http://example.COM:80\r\n"), "/"),
            101
        );
        assert_eq!(
            status(req("/", "Origin: https://example.com:80/page\r\n"), "/"),
            101
        );
        assert_eq!(status(req("/", "Origin: http://evil.com\r\n"), "/"), 403);
        assert_eq!(status(req("/", "Origin: null\r\n"), "/"), 403);
        let post = req("/", "").replacen("GET", "POST", 1);
        assert_eq!(status(post, "/"), 405);
        let no_host = req("/", "").replace("Host: Example.com:80\r\n", "");
        assert_eq!(status(no_host, "/"), 400);
        let bad_key = req("/", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(status(bad_key, "/"), 400);
        let no_upgrade = req("/", "").replace("Upgrade: WebSocket\r\n", "");
        assert_eq!(status(no_upgrade, "/"), 400);
        let v8 = req("/", "").replace("Version: 13", "Version: 8");
        assert_eq!(status(v8, "/"), 400);
        let many = req("/", &"X-A: b\r\n".repeat(MAX_HEADERS));
        assert_eq!(status(many, "/"), 431);
        assert_eq!(status("garbage\r\n\r\n".to_owned(), "/"), 400);
    }

    #[test]
    fn extra_header_validation() {
        let dial = |h: (&str, &str)| {
            Dialer::new(
                "ws://127.0.0.1:1/",
                Some((h.0.to_owned(), h.1.to_owned())),
                false,
                LinkConfig::default(),
                None,
            )
        };
        assert!(dial(("X-Token", " abc ")).is_ok());
        assert!(dial(("Bad Name", "x")).is_err());
        assert!(dial(("X-Token", "a\r\nInjected: 1")).is_err());
        assert!(matches!(
            Dialer::new("wss://h/", None, false, LinkConfig::default(), None),
            Err(ConfigError::TlsRequired(_))
        ));
    }
}
