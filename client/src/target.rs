//! Where a daemon is and how to reach it: a pure gRPC endpoint (Unix socket, or TCP with
//! TLS), or a classic control socket upgraded to gRPC with the `grpc` line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// Longest greeting or upgrade answer line we read (the classic protocol's lines are short;
/// anything longer is not a receptor).
const MAX_LINE: usize = 1024;
/// Default time allowed to connect, handshake and upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream to the daemon: Unix, TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub(crate) type BoxIo = Box<dyn Io>;

/// A daemon address and the way to speak gRPC to it.
///
/// ```
/// use receptor_client::{Target, TlsOptions};
///
/// // What the Python receptorctl's `--socket` accepts: the classic control socket,
/// // upgraded to gRPC on connect.
/// let local = Target::parse("/tmp/receptor.sock")?;
/// let remote = Target::parse("tls://node1.example:8888")?
///     .with_tls(TlsOptions::new().root_cas("/etc/receptor/ca.crt"));
/// // A pure gRPC endpoint (`grpc-service` in the daemon's configuration).
/// let grpc = Target::grpc_unix("/tmp/receptor-grpc.sock");
/// # let _ = (local, remote, grpc);
/// # Ok::<(), receptor_client::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Target {
    addr: Address,
    tls: Option<TlsOptions>,
    upgrade: bool,
    connect_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Address {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.addr {
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::Tcp { host, port } => {
                let scheme = if self.tls.is_some() { "tls" } else { "tcp" };
                write!(f, "{scheme}://{host}:{port}")
            }
        }
    }
}

impl Target {
    /// A pure gRPC endpoint on a Unix socket.
    pub fn grpc_unix(path: impl Into<PathBuf>) -> Self {
        Self::new(Address::Unix(path.into()), false)
    }

    /// A pure gRPC endpoint on TCP; add [`Target::with_tls`] for TLS.
    pub fn grpc_tcp(host: impl Into<String>, port: u16) -> Self {
        Self::new(
            Address::Tcp {
                host: host.into(),
                port,
            },
            false,
        )
    }

    /// A classic control socket on a Unix path, upgraded to gRPC.
    pub fn control_unix(path: impl Into<PathBuf>) -> Self {
        Self::new(Address::Unix(path.into()), true)
    }

    /// A classic control socket on TCP, upgraded to gRPC; add [`Target::with_tls`] for a
    /// `tcptls` control service.
    pub fn control_tcp(host: impl Into<String>, port: u16) -> Self {
        Self::new(
            Address::Tcp {
                host: host.into(),
                port,
            },
            true,
        )
    }

    fn new(addr: Address, upgrade: bool) -> Self {
        Self {
            addr,
            tls: None,
            upgrade,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }

    /// Parses an address the way the Python receptorctl's `--socket` does:
    /// `unix:[//]PATH`, a bare `PATH` (`~` expanded; no `:` allowed), `tcp:[//]HOST:PORT` or
    /// `tls:[//]HOST:PORT` (TLS with default options; replace them with
    /// [`Target::with_tls`]). These are classic control sockets, upgraded to gRPC.
    ///
    /// Rust-only forms name pure gRPC endpoints: `grpc+unix:PATH`, `grpc+tcp:HOST:PORT` and
    /// `grpc+tls:HOST:PORT`.
    pub fn parse(address: &str) -> Result<Self> {
        let invalid = || Error::InvalidAddress(address.to_owned());
        let (grpc, rest) = match address.strip_prefix("grpc+") {
            Some(rest) => (true, rest),
            None => (false, address),
        };
        for (scheme, tls) in [("tcp:", false), ("tls:", true)] {
            if let Some(hostport) = rest.strip_prefix(scheme) {
                let hostport = hostport.strip_prefix("//").unwrap_or(hostport);
                let (host, port) = hostport.rsplit_once(':').ok_or_else(invalid)?;
                let host_ok = !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
                if !host_ok || port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
                    return Err(invalid());
                }
                let port: u16 = port.parse().map_err(|_| invalid())?;
                let mut target = Self::new(
                    Address::Tcp {
                        host: host.to_owned(),
                        port,
                    },
                    !grpc,
                );
                if tls {
                    target.tls = Some(TlsOptions::new());
                }
                return Ok(target);
            }
        }
        let path = match rest.strip_prefix("unix:") {
            Some(p) => p.strip_prefix("//").unwrap_or(p),
            None if grpc => return Err(invalid()),
            None => rest,
        };
        if path.is_empty() || path.contains(':') {
            return Err(invalid());
        }
        Ok(Self::new(Address::Unix(expand_home(path)), !grpc))
    }

    /// Uses TLS with these options (for TCP targets; ignored on Unix sockets).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Gives up connecting (connect, TLS, greeting and upgrade) after `timeout`.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// True for a classic control socket (connections are upgraded with `grpc`).
    pub fn is_control_socket(&self) -> bool {
        self.upgrade
    }

    /// True when the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some() && matches!(self.addr, Address::Tcp { .. })
    }

    /// Loads certificates once, so every (re)connection reuses them.
    pub(crate) fn prepare(&self) -> Result<Connector> {
        let tls = match (&self.addr, &self.tls) {
            (Address::Tcp { host, .. }, Some(options)) => {
                // A pure gRPC TLS endpoint negotiates h2 by ALPN; the classic control socket
                // speaks lines first, so it gets no ALPN.
                let config = options.client_config(!self.upgrade)?;
                let name = options.server_name.clone().unwrap_or_else(|| host.clone());
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| Error::Tls(format!("invalid server name {name:?}")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        Ok(Connector {
            target: self.clone(),
            tls,
        })
    }
}

fn expand_home(path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    PathBuf::from(path)
}

/// What [`Target::prepare`] made: opens upgraded connections.
#[derive(Clone)]
pub(crate) struct Connector {
    target: Target,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Opens a connection ready for HTTP/2: connected, TLS done, and on a control socket
    /// greeted and upgraded. Returns the node ID from the greeting, if there was one.
    pub(crate) async fn open(&self) -> Result<(BoxIo, Option<String>)> {
        let name = self.target.to_string();
        tokio::time::timeout(self.target.connect_timeout, self.open_inner())
            .await
            .map_err(|_| Error::ConnectTimeout(name))?
    }

    async fn open_inner(&self) -> Result<(BoxIo, Option<String>)> {
        let name = self.target.to_string();
        let mut io: BoxIo = match &self.target.addr {
            Address::Unix(path) => {
                if !path.exists() {
                    return Err(Error::NoSuchSocket(path.clone()));
                }
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|source| Error::Connect {
                        target: name.clone(),
                        source,
                    })?;
                Box::new(stream)
            }
            Address::Tcp { host, port } => {
                let stream = connect_tcp(host, *port)
                    .await
                    .map_err(|source| Error::Connect {
                        target: name.clone(),
                        source,
                    })?;
                match &self.tls {
                    Some((connector, server_name)) => Box::new(
                        connector
                            .connect(server_name.clone(), stream)
                            .await
                            .map_err(|e| Error::Tls(format!("handshake with {name}: {e}")))?,
                    ),
                    None => Box::new(stream),
                }
            }
        };
        if !self.target.upgrade {
            return Ok((io, None));
        }
        let node = upgrade(&mut io, &name).await?;
        Ok((io, Some(node)))
    }
}

/// Tries every address the host resolves to, as the Python receptorctl does.
async fn connect_tcp(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                // gRPC messages are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the host name resolved to no address")))
}

/// Reads the greeting, asks for gRPC and checks the answer. Returns the node ID.
pub(crate) async fn upgrade(io: &mut BoxIo, name: &str) -> Result<String> {
    let greeting = read_line(io, name).await?;
    let node = parse_greeting(&greeting).ok_or_else(|| Error::NotReceptor {
        target: name.to_owned(),
        greeting: greeting.clone(),
    })?;
    io.write_all(b"grpc\n")
        .await
        .map_err(|source| Error::Connect {
            target: name.to_owned(),
            source,
        })?;
    io.flush().await.map_err(|source| Error::Connect {
        target: name.to_owned(),
        source,
    })?;
    let answer = read_line(io, name).await?;
    match answer.trim() {
        "grpc ok" => Ok(node),
        _ => Err(Error::GrpcNotSupported {
            node,
            answer: answer.trim().to_owned(),
        }),
    }
}

/// `Receptor Control, node <id>` -> `<id>` (the Python receptorctl's full match, after
/// trimming whitespace).
pub(crate) fn parse_greeting(line: &str) -> Option<String> {
    let node = line.trim().strip_prefix("Receptor Control, node ")?;
    (!node.is_empty()).then(|| node.to_owned())
}

/// Reads one line byte by byte: the HTTP/2 bytes that follow `grpc ok` must stay unread.
async fn read_line<R: AsyncRead + Unpin + ?Sized>(io: &mut R, name: &str) -> Result<String> {
    let mut line = Vec::new();
    loop {
        let byte = match io.read_u8().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(Error::NotReceptor {
                    target: name.to_owned(),
                    greeting: String::from_utf8_lossy(&line).into_owned(),
                });
            }
            Err(source) => {
                return Err(Error::Connect {
                    target: name.to_owned(),
                    source,
                });
            }
        };
        if byte == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte);
        if line.len() > MAX_LINE {
            return Err(Error::NotReceptor {
                target: name.to_owned(),
                greeting: String::from_utf8_lossy(&line).into_owned(),
            });
        }
    }
}

/// TLS settings for TCP targets, as the Python receptorctl's `--rootcas`, `--cert`, `--key`
/// and `--insecureskipverify` (or a `tls-client` of the receptor configuration) give them.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    root_cas: Option<PathBuf>,
    cert_key: Option<(PathBuf, PathBuf)>,
    insecure_skip_verify: bool,
    server_name: Option<String>,
}

impl TlsOptions {
    /// System trust, no client certificate, host name checked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates in this PEM file instead of the system's.
    #[must_use]
    pub fn root_cas(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_cas = Some(path.into());
        self
    }

    /// Presents this client certificate (PEM chain) and key (PEM).
    #[must_use]
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_key = Some((cert.into(), key.into()));
        self
    }

    /// Accepts a server certificate whatever name it is for. As in the Python receptorctl,
    /// the chain is still verified against the roots: only the name check is skipped.
    #[must_use]
    pub fn insecure_skip_verify(mut self, skip: bool) -> Self {
        self.insecure_skip_verify = skip;
        self
    }

    /// Checks the server certificate against this name instead of the target's host.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    fn client_config(&self, alpn_h2: bool) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.root_cas {
            Some(path) => {
                let certs = load_certs(path)?;
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        Error::Tls(format!("bad CA certificate in {}: {e}", path.display()))
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    // Unusable system certificates are skipped, as OpenSSL does.
                    let _ = roots.add(cert);
                }
            }
        }
        let roots = Arc::new(roots);
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?;
        let builder = if self.insecure_skip_verify {
            let inner =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| Error::Tls(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.cert_key {
            Some((cert, key)) => {
                let chain = load_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| Error::Tls(format!("reading key {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Tls(format!("client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        if alpn_h2 {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        Ok(config)
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("reading certificates {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("no certificate in {}", path.display())));
    }
    Ok(certs)
}

/// Verifies the chain but not the name (`--insecureskipverify`, like Python's
/// `check_hostname = False` with verification still on).
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_receptorctl_socket_addresses() {
        let t = Target::parse("/tmp/x.sock").unwrap();
        assert_eq!(t.addr, Address::Unix("/tmp/x.sock".into()));
        assert!(t.is_control_socket());
        let t = Target::parse("unix:///tmp/x.sock").unwrap();
        assert_eq!(t.addr, Address::Unix("/tmp/x.sock".into()));
        let t = Target::parse("unix:rel.sock").unwrap();
        assert_eq!(t.addr, Address::Unix("rel.sock".into()));
        let t = Target::parse("tcp://127.0.0.1:2222").unwrap();
        assert_eq!(
            t.addr,
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 2222
            }
        );
        assert!(!t.is_tls());
        let t = Target::parse("tls:node-1.example:443").unwrap();
        assert!(t.is_tls());
        assert_eq!(t.to_string(), "tls://node-1.example:443");
        let t = Target::parse("grpc+unix:/run/r.sock").unwrap();
        assert!(!t.is_control_socket());
        let t = Target::parse("grpc+tls://h:1").unwrap();
        assert!(t.is_tls() && !t.is_control_socket());
        for bad in [
            "",
            "a:b",
            "tcp://host",
            "tcp://:1",
            "tcp://h:x",
            "tcp://[::1]:1",
            "grpc+/x",
            "tcp://h:99999",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(Error::InvalidAddress(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn greeting_is_matched_like_receptorctl() {
        assert_eq!(
            parse_greeting("Receptor Control, node n1\n").as_deref(),
            Some("n1")
        );
        assert_eq!(parse_greeting("Receptor Control, node "), None);
        assert_eq!(parse_greeting("HTTP/1.1 400"), None);
    }

    #[tokio::test]
    async fn upgrade_reports_go_daemons_and_keeps_following_bytes() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut io: BoxIo = Box::new(client);
        let go = tokio::spawn(async move {
            server
                .write_all(b"Receptor Control, node go1\n")
                .await
                .unwrap();
            let mut buf = [0u8; 5];
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"grpc\n");
            server.write_all(b"ERROR: Unknown command\n").await.unwrap();
        });
        let err = upgrade(&mut io, "test").await.unwrap_err();
        go.await.unwrap();
        assert!(
            matches!(&err, Error::GrpcNotSupported { node, answer } if node == "go1" && answer == "ERROR: Unknown command"),
            "{err:?}"
        );
        assert!(err.to_string().contains("does not speak gRPC"));

        let (client, mut server) = tokio::io::duplex(1024);
        let mut io: BoxIo = Box::new(client);
        let rust = tokio::spawn(async move {
            server
                .write_all(b"Receptor Control, node r1\n")
                .await
                .unwrap();
            let mut buf = [0u8; 5];
            server.read_exact(&mut buf).await.unwrap();
            // The HTTP/2 preface may arrive in the same segment as the answer.
            server.write_all(b"grpc ok\nPRI *").await.unwrap();
        });
        assert_eq!(upgrade(&mut io, "test").await.unwrap(), "r1");
        rust.await.unwrap();
        let mut rest = [0u8; 5];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"PRI *");
    }
}
