//! Service proxies (issue 7): `tcp-server`/`tcp-client`, `udp-server`/`udp-client` and
//! `unix-socket-server`/`unix-socket-client` carry ordinary services across a 3-node line
//! (2 hops) of real `receptor` processes, byte-exact, many connections at once; a proxy to a
//! service that is down closes connections and works once the service is up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

use crate::harness::{Daemon, cert_tool, receptorctl, status_json, wait_for};

/// Long enough for debug builds moving 100 MB over QUIC.
const LONG: Duration = Duration::from_secs(300);
const BIG: usize = 50 * 1024 * 1024;

/// Deterministic pseudo-random bytes (xorshift), so a shifted or repeated chunk is caught.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Echoes every connection of `listener` until the test ends.
fn spawn_tcp_echo(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
}

fn spawn_unix_echo(listener: UnixListener) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
}

fn spawn_udp_echo(socket: UdpSocket) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
}

/// Writes `data` and half-closes while reading everything back; returns what came back.
async fn echo_round_trip<S>(stream: S, data: &[u8]) -> Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await?;
    writer.await??;
    Ok(back)
}

fn sha(data: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(data).to_vec()
}

/// a <- b <- c: a and b listen, b dials a, c dials b. `a_extra`/`c_extra` add entities.
struct Line {
    dir: tempfile::TempDir,
    a: Daemon,
    _b: Daemon,
    _c: Daemon,
}

fn node_yaml(dir: &Path, id: &str, listen: bool, peer: Option<&str>, extra: &str) -> String {
    let mut yaml = format!(
        "- node:\n    id: {id}\n    datadir: {d}/{id}-data\n\
         - log-level: info\n\
         - control-service:\n    service: control\n    filename: {d}/{id}.sock\n",
        d = dir.display()
    );
    if listen {
        yaml.push_str("- tcp-listener:\n    bindaddr: 127.0.0.1\n    port: 0\n");
    }
    if let Some(peer) = peer {
        yaml.push_str(&format!("- tcp-peer:\n    address: {peer}\n"));
    }
    yaml.push_str(extra);
    yaml
}

impl Line {
    async fn start(a_extra: &str, c_extra: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        Self::start_in(dir, a_extra, c_extra).await
    }

    async fn start_in(dir: tempfile::TempDir, a_extra: &str, c_extra: &str) -> Result<Self> {
        let d = dir.path();
        let a =
            Daemon::start_yaml("node-a", d, &node_yaml(d, "node-a", true, None, a_extra)).await?;
        let a_addr = a.tcp_listener_addr().await?;
        let b = Daemon::start_yaml(
            "node-b",
            d,
            &node_yaml(d, "node-b", true, Some(&a_addr), ""),
        )
        .await?;
        let b_addr = b.tcp_listener_addr().await?;
        let c = Daemon::start_yaml(
            "node-c",
            d,
            &node_yaml(d, "node-c", false, Some(&b_addr), c_extra),
        )
        .await?;
        Ok(Self {
            dir,
            a,
            _b: b,
            _c: c,
        })
    }

    fn socket(&self, id: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{id}.sock"))
    }

    /// Waits until node-a has a route to node-c and knows its `service` advertisement;
    /// returns the advertisement's tags.
    async fn wait_service(&self, service: &str) -> Result<BTreeMap<String, String>> {
        let socket = self.socket("node-a");
        wait_for(&format!("node-a to see node-c:{service}"), LONG, || {
            let socket = socket.clone();
            async move {
                let status = status_json(&socket).await.ok()?;
                // Advertisements can arrive before the route: wait for both.
                status["RoutingTable"].get("node-c")?;
                let ad = status["Advertisements"]
                    .as_array()?
                    .iter()
                    .find(|ad| ad["NodeID"] == "node-c" && ad["Service"] == service)?;
                serde_json::from_value(ad["Tags"].clone()).ok()
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_proxy_carries_50_mb_and_many_connections_across_two_hops() -> Result<()> {
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    spawn_tcp_echo(echo);
    let line = Line::start(
        "- tcp-server:\n    bindaddr: 127.0.0.1\n    port: 0\n    remotenode: node-c\n    remoteservice: tcpecho\n",
        &format!("- tcp-client:\n    service: tcpecho\n    address: {echo_addr}\n"),
    )
    .await?;
    let tags = line.wait_service("tcpecho").await?;
    assert_eq!(tags.get("type").map(String::as_str), Some("TCP Proxy"));
    assert_eq!(tags.get("address"), Some(&echo_addr.to_string()));
    let proxy = line
        .a
        .wait_log(r"tcp-server proxy listening addr=(\S+)")
        .await?;

    let data = pattern(BIG, 7);
    let back = tokio::time::timeout(LONG, async {
        echo_round_trip(TcpStream::connect(&proxy).await?, &data).await
    })
    .await
    .context("50 MB echo through the tcp proxy timed out")??;
    ensure!(
        back.len() == data.len(),
        "got {} of {} bytes",
        back.len(),
        data.len()
    );
    ensure!(sha(&back) == sha(&data), "echoed bytes differ");

    // Many connections at once, each with its own bytes.
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..64u64 {
        let proxy = proxy.clone();
        clients.spawn(async move {
            let data = pattern(256 * 1024, 100 + i);
            let back = echo_round_trip(TcpStream::connect(&proxy).await?, &data).await?;
            ensure!(
                back == data,
                "connection {i}: echo differs ({} bytes)",
                back.len()
            );
            Ok::<_, anyhow::Error>(())
        });
    }
    tokio::time::timeout(LONG, async {
        while let Some(done) = clients.join_next().await {
            done??;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("concurrent proxied connections timed out")??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unix_socket_proxy_carries_50_mb_across_two_hops() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let echo_path = dir.path().join("echo.sock");
    spawn_unix_echo(UnixListener::bind(&echo_path)?);
    let proxy_path = dir.path().join("proxy.sock");
    let line = Line::start_in(
        dir,
        &format!(
            "- unix-socket-server:\n    filename: {}\n    permissions: 0o600\n    remotenode: node-c\n    remoteservice: unixecho\n",
            proxy_path.display()
        ),
        &format!(
            "- unix-socket-client:\n    service: unixecho\n    filename: {}\n",
            echo_path.display()
        ),
    )
    .await?;
    let tags = line.wait_service("unixecho").await?;
    assert_eq!(tags.get("type").map(String::as_str), Some("Unix Proxy"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&proxy_path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "proxy socket mode");

    let data = pattern(BIG, 11);
    let back = tokio::time::timeout(LONG, async {
        echo_round_trip(UnixStream::connect(&proxy_path).await?, &data).await
    })
    .await
    .context("50 MB echo through the unix proxy timed out")??;
    ensure!(
        back.len() == data.len(),
        "got {} of {} bytes",
        back.len(),
        data.len()
    );
    ensure!(sha(&back) == sha(&data), "echoed bytes differ");

    let mut clients = tokio::task::JoinSet::new();
    for i in 0..32u64 {
        let path = proxy_path.clone();
        clients.spawn(async move {
            let data = pattern(128 * 1024, 500 + i);
            let back = echo_round_trip(UnixStream::connect(&path).await?, &data).await?;
            ensure!(back == data, "connection {i}: echo differs");
            Ok::<_, anyhow::Error>(())
        });
    }
    tokio::time::timeout(LONG, async {
        while let Some(done) = clients.join_next().await {
            done??;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("concurrent unix connections timed out")??;
    Ok(())
}

/// Sends `data` as numbered datagrams through `socket` (connected to the proxy), at most
/// `window` unanswered at once, resending what the echo has not returned; reassembles the
/// echoes in order. UDP may drop; the result must still be byte-exact.
async fn udp_transfer(
    socket: &UdpSocket,
    data: &[u8],
    chunk: usize,
    window: usize,
) -> Result<Vec<u8>> {
    let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
    let mut got: Vec<Option<Vec<u8>>> = vec![None; chunks.len()];
    let mut received = 0usize;
    let mut next = 0usize;
    let mut in_flight: BTreeMap<usize, tokio::time::Instant> = BTreeMap::new();
    let mut buf = vec![0u8; 65_536];
    let resend_after = Duration::from_millis(300);
    let deadline = tokio::time::Instant::now() + LONG;
    let send = |seq: usize| {
        let mut datagram = (seq as u64).to_le_bytes().to_vec();
        datagram.extend_from_slice(chunks[seq]);
        datagram
    };
    while received < chunks.len() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "udp transfer timed out at {received}/{}",
            chunks.len()
        );
        while in_flight.len() < window && next < chunks.len() {
            socket.send(&send(next)).await?;
            in_flight.insert(next, tokio::time::Instant::now());
            next += 1;
        }
        match tokio::time::timeout(resend_after, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                ensure!(n >= 8, "short datagram");
                let seq = u64::from_le_bytes(buf[..8].try_into()?) as usize;
                ensure!(seq < chunks.len(), "bad sequence {seq}");
                if got[seq].is_none() {
                    got[seq] = Some(buf[8..n].to_vec());
                    received += 1;
                }
                in_flight.remove(&seq);
            }
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => {
                let now = tokio::time::Instant::now();
                for (seq, sent) in in_flight.iter_mut() {
                    if now - *sent >= resend_after {
                        socket.send(&send(*seq)).await?;
                        *sent = now;
                    }
                }
            }
        }
    }
    Ok(got.into_iter().flatten().flatten().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn udp_proxy_carries_50_mb_and_keeps_peers_apart() -> Result<()> {
    let echo = UdpSocket::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    spawn_udp_echo(echo);
    let line = Line::start(
        "- udp-server:\n    bindaddr: 127.0.0.1\n    port: 0\n    remotenode: node-c\n    remoteservice: udpecho\n",
        &format!("- udp-client:\n    service: udpecho\n    address: {echo_addr}\n"),
    )
    .await?;
    let tags = line.wait_service("udpecho").await?;
    assert_eq!(tags.get("type").map(String::as_str), Some("UDP Proxy"));
    let proxy = line
        .a
        .wait_log(r"udp-server proxy listening addr=(\S+)")
        .await?;

    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(&proxy).await?;
    let data = pattern(BIG, 13);
    let back = udp_transfer(&socket, &data, 8 * 1024, 32).await?;
    ensure!(
        back.len() == data.len(),
        "got {} of {} bytes",
        back.len(),
        data.len()
    );
    ensure!(sha(&back) == sha(&data), "echoed bytes differ");

    // Many UDP peers at once: each gets exactly its own echoes back.
    let mut peers = tokio::task::JoinSet::new();
    for i in 0..32u64 {
        let proxy = proxy.clone();
        peers.spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(&proxy).await?;
            let data = pattern(64 * 1024, 900 + i);
            let back = udp_transfer(&socket, &data, 4 * 1024, 8).await?;
            ensure!(back == data, "peer {i}: echo differs");
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = peers.join_next().await {
        done??;
    }
    Ok(())
}

#[tokio::test]
async fn tcp_proxy_to_a_down_service_closes_connections_then_recovers() -> Result<()> {
    // A port that is bound but not listening (yet): connections are refused, and no other
    // test can take the port meanwhile.
    let reserved = tokio::net::TcpSocket::new_v4()?;
    reserved.bind("127.0.0.1:0".parse()?)?;
    let port = reserved.local_addr()?;
    let line = Line::start(
        "- tcp-server:\n    bindaddr: 127.0.0.1\n    port: 0\n    remotenode: node-c\n    remoteservice: later\n",
        &format!("- tcp-client:\n    service: later\n    address: {port}\n"),
    )
    .await?;
    line.wait_service("later").await?;
    let proxy = line
        .a
        .wait_log(r"tcp-server proxy listening addr=(\S+)")
        .await?;

    // Down: the connection is accepted locally, then closed without data.
    let mut stream = TcpStream::connect(&proxy).await?;
    let _ = stream.write_all(b"hello").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(LONG, stream.read_to_end(&mut buf))
        .await
        .context("a connection to a down service stayed open")?;
    ensure!(
        buf.is_empty(),
        "got data from a down service: {buf:?} ({read:?})"
    );
    if let Err(error) = line._c.wait_log(r"cannot reach the local service").await {
        bail!("{error:#}\nlog of node-a:\n{}", line.a.log());
    }

    // Up: the next connection works.
    spawn_tcp_echo(reserved.listen(128)?);
    let back = tokio::time::timeout(LONG, async {
        echo_round_trip(TcpStream::connect(&proxy).await?, b"hello again").await
    })
    .await
    .context("echo after the service came up timed out")??;
    ensure!(back == b"hello again", "got {back:?}");
    Ok(())
}

#[tokio::test]
async fn tcp_server_to_its_own_control_service_serves_receptorctl() -> Result<()> {
    // The upstream receptorctl tests reach node1's control service as tcp://localhost:11112
    // through `tcp-server ... remotenode: localhost, remoteservice: control`.
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let node = Daemon::start_yaml(
        "node1",
        d,
        &format!(
            "{}- tcp-server:\n    bindaddr: 127.0.0.1\n    port: 0\n    remotenode: localhost\n    remoteservice: control\n",
            node_yaml(d, "node1", true, None, "")
        ),
    )
    .await?;
    let proxy = node
        .wait_log(r"tcp-server proxy listening addr=(\S+)")
        .await?;
    let url = format!("tcp://{proxy}");
    let out = receptorctl(Path::new(&url), &["status"]).await?;
    if out.code != Some(0) || !out.stdout.contains("Node ID: node1") {
        bail!(
            "receptorctl over the tcp proxy failed: {out:?}\n{}",
            node.log()
        );
    }
    Ok(())
}

/// A CA and, for node-a and node-c, a certificate (`a.crt`, `c.crt` with keys) naming the
/// node and the IP 127.0.0.1, made by our Go-compatible cert tools: good for mesh TLS and for
/// local TLS on 127.0.0.1.
async fn make_certs(d: &Path) -> Result<()> {
    cert_tool(
        d,
        &[
            "--cert-init",
            "commonname=Proxy CA",
            "bits=2048",
            "outcert=ca.crt",
            "outkey=ca.key",
        ],
    )
    .await?;
    for node in ["a", "c"] {
        cert_tool(
            d,
            &[
                "--cert-makereq",
                "bits=2048",
                &format!("commonname=node-{node}"),
                &format!("nodeid=node-{node}"),
                "ipaddress=127.0.0.1",
                &format!("outreq={node}.csr"),
                &format!("outkey={node}.key"),
            ],
        )
        .await?;
        cert_tool(
            d,
            &[
                "--cert-signreq",
                &format!("req={node}.csr"),
                "cacert=ca.crt",
                "cakey=ca.key",
                &format!("outcert={node}.crt"),
                "verify=yes",
            ],
        )
        .await?;
    }
    Ok(())
}

fn tls_acceptor(d: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(d.join("c.crt"))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(d.join("c.key"))?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

fn tls_connector(d: &Path) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(d.join("ca.crt"))? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_proxy_with_tls_on_every_leg() -> Result<()> {
    // client =TLS=> node-a tcp-server (tlsserver) =mesh TLS (tlsclient)=> node-c tcp-client
    // (tlsserver) =TLS (tlsclient)=> echo server.
    let dir = tempfile::tempdir()?;
    let d = dir.path().to_owned();
    make_certs(&d).await?;
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    let acceptor = tls_acceptor(&d)?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = echo.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (mut r, mut w) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let tls = |kind: &str, node: &str| {
        format!(
            "- {kind}:\n    name: t\n    cert: {d}/{node}.crt\n    key: {d}/{node}.key\n{extra}",
            d = d.display(),
            extra = if kind == "tls-client" {
                format!("    rootcas: {}/ca.crt\n", d.display())
            } else {
                String::new()
            },
        )
    };
    let a_extra = format!(
        "{}{}- tcp-server:\n    bindaddr: 127.0.0.1\n    port: 0\n    remotenode: node-c\n    remoteservice: tlsecho\n    tlsserver: t\n    tlsclient: t\n",
        tls("tls-server", "a"),
        tls("tls-client", "a")
    );
    let c_extra = format!(
        "{}{}- tcp-client:\n    service: tlsecho\n    address: 127.0.0.1:{}\n    tlsserver: t\n    tlsclient: t\n",
        tls("tls-server", "c"),
        tls("tls-client", "c"),
        echo_addr.port()
    );
    let line = Line::start_in(dir, &a_extra, &c_extra).await?;
    line.wait_service("tlsecho").await?;
    let proxy = line
        .a
        .wait_log(r"tcp-server proxy listening addr=(\S+)")
        .await?;
    let connector = tls_connector(&d)?;
    let data = pattern(8 * 1024 * 1024, 21);
    let back = tokio::time::timeout(LONG, async {
        let tcp = TcpStream::connect(&proxy).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let stream = connector.connect(name, tcp).await?;
        echo_round_trip(stream, &data).await
    })
    .await
    .context("echo through TLS proxies timed out")??;
    ensure!(
        sha(&back) == sha(&data),
        "echoed bytes differ ({} bytes)",
        back.len()
    );
    Ok(())
}

/// `command-service`: each mesh connection runs the command on its own terminal (`tty`
/// names a pty), carries input and output both ways, and ends when the command exits; the
/// caller's end of input reaches the command as a terminal end-of-file, so a command that
/// reads to the end (`cat`) answers everything and exits.
#[tokio::test]
async fn command_service_runs_each_connection_on_a_pty() -> Result<()> {
    use crate::mesh::read_until;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let yaml = format!(
        "- node:\n    id: cmd\n    datadir: {d}/data\n- local-only\n\
         - control-service:\n    service: control\n    filename: {d}/cmd.sock\n\
         - command-service:\n    service: shell\n    command: sh -c \"tty; read line; echo got:$line\"\n\
         - command-service:\n    service: cat\n    command: cat\n",
        d = d.display()
    );
    let daemon = Daemon::start_yaml("cmd", d, &yaml).await?;
    let socket = d.join("cmd.sock");
    let status = status_json(&socket).await?;
    let tags: Vec<&serde_json::Value> = status["Advertisements"]
        .as_array()
        .context("advertisements")?
        .iter()
        .filter(|a| a["Service"] == "shell" || a["Service"] == "cat")
        .map(|a| &a["Tags"])
        .collect();
    ensure!(
        tags.len() == 2 && tags.iter().all(|t| t["type"] == "Command Service"),
        "{status:#}"
    );

    // Interactive: the command sees a terminal, answers a line, exits; the stream ends.
    let mut client = UnixStream::connect(&socket).await?;
    let mut seen = String::new();
    read_until(&mut client, &mut seen, "Receptor Control, node cmd\n").await?;
    client.write_all(b"connect cmd shell\n").await?;
    read_until(&mut client, &mut seen, "Connecting\n").await?;
    read_until(&mut client, &mut seen, "/dev/pts/").await?;
    client.write_all(b"abc\n").await?;
    read_until(&mut client, &mut seen, "got:abc").await?;
    let mut rest = Vec::new();
    tokio::time::timeout(LONG, client.read_to_end(&mut rest))
        .await
        .with_context(|| {
            format!(
                "the stream did not end after the command exited: {seen:?}\n{}",
                daemon.log()
            )
        })??;

    // Input then end of input: cat gets every line (the last without a newline too), then
    // end-of-file, and exits.
    let mut client = UnixStream::connect(&socket).await?;
    let mut seen = String::new();
    read_until(&mut client, &mut seen, "Receptor Control, node cmd\n").await?;
    client.write_all(b"connect cmd cat\n").await?;
    read_until(&mut client, &mut seen, "Connecting\n").await?;
    client.write_all(b"first line\nsecond").await?;
    client.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(LONG, client.read_to_end(&mut out))
        .await
        .with_context(|| format!("cat did not exit at the end of input\n{}", daemon.log()))??;
    let out = String::from_utf8_lossy(&out);
    // The terminal echoes input and cat repeats it: each line at least twice.
    ensure!(
        out.matches("first line").count() >= 2 && out.matches("second").count() >= 2,
        "{out:?}"
    );
    Ok(())
}
