//! TLS on TCP links, end to end, with certificates made by our own `cert-*` tooling:
//! mutual TLS between two mesh nodes, the refusals (wrong CA, expired certificate, missing
//! client certificate, untrusted server) with the reason in the log, and the whole-system path
//! from a YAML configuration through `Daemon::spawn`, including the startup node-ID check.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use receptor_mesh::backend::{LinkConfig, tcp};
use receptor_mesh::tls::rustls::RootCertStore;
use receptor_mesh::tls::{
    ClientAuth, ClientSettings, Identity, Pins, ServerSettings, TlsAcceptor, TlsConnector,
    client_config, server_config, server_name_for_address,
};
use receptor_mesh::{Node, NodeConfig};
use receptor_server::certs::{self, Names, NewCa};
use receptor_server::config;
use receptor_server::daemon::Daemon;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::macros::datetime;
use tracing_subscriber::fmt::MakeWriter;

const WAIT: Duration = Duration::from_secs(20);

// === log capture ===

/// Everything logged on this thread (tests run on a current-thread runtime, so every task of
/// the test logs here).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Log lines that contain every one of `parts`.
    fn lines_with(&self, parts: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| parts.iter().all(|p| line.contains(p)))
            .map(str::to_owned)
            .collect()
    }

    async fn wait_for(&self, parts: &[&str]) -> Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = self.lines_with(parts).into_iter().next() {
                return Ok(line);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no log line with {parts:?}; log:\n{}", self.text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// === certificates from our tooling ===

struct Issued {
    cert_pem: String,
    key_pem: String,
}

fn issue(
    ca: &NewCa,
    node: &str,
    not_before: Option<time::OffsetDateTime>,
    not_after: Option<time::OffsetDateTime>,
) -> Result<Issued> {
    let key = certs::generate_key(2048)?;
    let names = Names {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse()?],
        node_ids: vec![node.into()],
    };
    let csr = certs::create_request(node, &names, &key)?;
    let cert_pem = certs::sign_request(
        csr.as_bytes(),
        ca.cert_pem.as_bytes(),
        ca.key_pem.as_bytes(),
        not_before,
        not_after,
    )?;
    Ok(Issued {
        cert_pem,
        key_pem: certs::key_to_pem(&key)?,
    })
}

fn identity(issued: &Issued) -> Result<Identity> {
    Ok(Identity {
        chain: vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())?],
        key: PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?,
    })
}

fn roots(ca: &NewCa) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    store.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())?)?;
    Ok(Arc::new(store))
}

fn acceptor(ca: &NewCa, server: &Issued) -> Result<TlsAcceptor> {
    let settings = ServerSettings {
        identity: identity(server)?,
        client_auth: ClientAuth::Required(roots(ca)?),
        pinned_client_certs: Pins::default(),
        min_tls13: false,
    };
    Ok(TlsAcceptor::from(Arc::new(server_config(&settings)?)))
}

fn connector(trusted: &NewCa, client: Option<&Issued>) -> Result<TlsConnector> {
    let settings = ClientSettings {
        identity: client.map(identity).transpose()?,
        roots: roots(trusted)?,
        insecure_skip_verify: false,
        pinned_server_certs: Pins::default(),
        min_tls13: false,
    };
    Ok(TlsConnector::from(Arc::new(client_config(&settings)?)))
}

// === nodes ===

async fn connected_to(node: &Node, peer: &str) -> bool {
    node.status()
        .await
        .is_ok_and(|s| s.connections.iter().any(|c| c.node_id == peer))
}

async fn wait_connected(node: &Node, peer: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !connected_to(node, peer).await {
        if tokio::time::Instant::now() > deadline {
            bail!("{} never connected to {peer}", node.id());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A client node that dials `addr` once (no redial) with `connector`.
fn dial(id: &str, addr: SocketAddr, connector: TlsConnector) -> Result<Node> {
    let node = Node::spawn(NodeConfig::new(id))?;
    let address = format!("localhost:{}", addr.port());
    let server_name = server_name_for_address(&address)?;
    node.add_backend(
        tcp::Dialer::new(address, false, LinkConfig::default()).with_tls(connector, server_name),
    );
    Ok(node)
}

#[tokio::test]
async fn mutual_tls_admits_the_right_node_and_refuses_the_rest() -> Result<()> {
    let logs = Logs::default();
    let _guard = logs.install();

    let ca = certs::create_ca("Mesh CA", 2048, None, None)?;
    let rogue_ca = certs::create_ca("Rogue CA", 2048, None, None)?;
    let server_cert = issue(&ca, "server", None, None)?;
    let good = issue(&ca, "good", None, None)?;
    let rogue = issue(&rogue_ca, "rogue", None, None)?;
    let expired = issue(
        &ca,
        "expired",
        Some(datetime!(2020-01-01 0:00 UTC)),
        Some(datetime!(2021-01-01 0:00 UTC)),
    )?;

    let server = Node::spawn(NodeConfig::new("server"))?;
    let listener = tcp::Listener::bind("127.0.0.1:0", LinkConfig::default())
        .await?
        .with_tls(acceptor(&ca, &server_cert)?);
    let addr = listener.local_addr();
    server.add_backend(listener);
    let refused = "tls handshake with client failed";

    // A client certificate from another CA.
    let client = dial("rogue", addr, connector(&ca, Some(&rogue))?)?;
    let line = logs.wait_for(&[refused, "unknown authority"]).await?;
    assert!(line.contains("WARN"), "{line}");
    let line = logs
        .wait_for(&["tls session failed", "does not trust the CA"])
        .await?;
    assert!(
        line.contains("peer=localhost:"),
        "the client says why too: {line}"
    );
    assert!(!connected_to(&server, "rogue").await);
    client.shutdown(Duration::from_secs(5)).await?;

    // An expired client certificate.
    let client = dial("expired", addr, connector(&ca, Some(&expired))?)?;
    logs.wait_for(&[refused, "certificate expired"]).await?;
    logs.wait_for(&["tls session failed", "our certificate expired"])
        .await?;
    assert!(!connected_to(&server, "expired").await);
    client.shutdown(Duration::from_secs(5)).await?;

    // No client certificate at all.
    let client = dial("anonymous", addr, connector(&ca, None)?)?;
    logs.wait_for(&[refused, "sent no certificate"]).await?;
    logs.wait_for(&["tls session failed", "requires a client certificate"])
        .await?;
    assert!(!connected_to(&server, "anonymous").await);
    client.shutdown(Duration::from_secs(5)).await?;

    // A client that does not trust the server's CA refuses it during the handshake.
    let client = dial("wary", addr, connector(&rogue_ca, Some(&good))?)?;
    logs.wait_for(&["tls handshake with server failed", "unknown authority"])
        .await?;
    client.shutdown(Duration::from_secs(5)).await?;

    // The listener kept serving: the right node gets in, both ways.
    let client = dial("good", addr, connector(&ca, Some(&good))?)?;
    wait_connected(&server, "good").await?;
    wait_connected(&client, "server").await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let reply = loop {
        match client.ping("server", 30).await {
            Ok(reply) => break reply,
            // The route appears once routing updates have been exchanged.
            Err(error) if tokio::time::Instant::now() > deadline => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(reply.from, "server");
    client.shutdown(Duration::from_secs(5)).await?;
    server.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test]
async fn tls_link_works_with_an_ip_address_and_tls13_only() -> Result<()> {
    let ca = certs::create_ca("Mesh CA", 2048, None, None)?;
    let a = issue(&ca, "a", None, None)?;
    let b = issue(&ca, "b", None, None)?;
    let server = Node::spawn(NodeConfig::new("a"))?;
    let settings = ServerSettings {
        identity: identity(&a)?,
        client_auth: ClientAuth::IfGiven(roots(&ca)?),
        pinned_client_certs: Pins::new(vec![certs_sha256(&b)?])?,
        min_tls13: true,
    };
    let listener = tcp::Listener::bind("127.0.0.1:0", LinkConfig::default())
        .await?
        .with_tls(TlsAcceptor::from(Arc::new(server_config(&settings)?)));
    let addr = listener.local_addr();
    server.add_backend(listener);
    let client = Node::spawn(NodeConfig::new("b"))?;
    let address = addr.to_string();
    client.add_backend(
        tcp::Dialer::new(address.clone(), true, LinkConfig::default()).with_tls(
            connector(&ca, Some(&b))?,
            server_name_for_address(&address)?,
        ),
    );
    wait_connected(&server, "b").await?;
    client.shutdown(Duration::from_secs(5)).await?;
    server.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

fn certs_sha256(issued: &Issued) -> Result<Vec<u8>> {
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())?;
    receptor_mesh::tls::fingerprint(&der, 32).context("sha256")
}

// === the whole system: YAML -> Daemon ===

fn write(dir: &Path, name: &str, contents: &str) -> Result<String> {
    let path = dir.join(name);
    certs::write_private(&path, contents)?;
    Ok(path.display().to_string())
}

struct NodeFiles {
    cert: String,
    key: String,
}

fn node_files(dir: &Path, ca: &NewCa, node: &str) -> Result<NodeFiles> {
    let issued = issue(ca, node, None, None)?;
    Ok(NodeFiles {
        cert: write(dir, &format!("{node}.crt"), &issued.cert_pem)?,
        key: write(dir, &format!("{node}.key"), &issued.key_pem)?,
    })
}

fn daemon_config(yaml: &str) -> Result<config::Config> {
    let config = config::from_yaml_str(yaml, "test.yaml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let unsupported = config::unsupported(&config);
    assert!(unsupported.is_empty(), "{unsupported:?}");
    Ok(config)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn yaml_tls_listener_and_peer_link_two_daemons() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = certs::create_ca("Receptor Test CA", 2048, None, None)?;
    let ca_path = write(dir.path(), "ca.crt", &ca.cert_pem)?;
    let a = node_files(dir.path(), &ca, "node-a")?;
    let b = node_files(dir.path(), &ca, "node-b")?;

    let yaml_a = format!(
        "---
- node:
    id: node-a
- tls-server:
    name: srv
    cert: {cert}
    key: {key}
    clientcas: {ca_path}
    requireclientcert: true
- tcp-listener:
    bindaddr: 127.0.0.1
    port: 0
    tls: srv
",
        cert = a.cert,
        key = a.key,
    );
    let daemon_a = Daemon::spawn(&daemon_config(&yaml_a)?).await?;
    let port = daemon_a.tcp_listeners()[0].port();
    let yaml_b = format!(
        "---
- node:
    id: node-b
- tls-client:
    name: cli
    cert: {cert}
    key: {key}
    rootcas: {ca_path}
- tcp-peer:
    address: localhost:{port}
    tls: cli
",
        cert = b.cert,
        key = b.key,
    );
    let daemon_b = Daemon::spawn(&daemon_config(&yaml_b)?).await?;
    assert!(daemon_b.tls().client("cli").is_some());
    wait_connected(daemon_a.node(), "node-b").await?;
    wait_connected(daemon_b.node(), "node-a").await?;
    daemon_b.shutdown(Duration::from_secs(5)).await?;
    daemon_a.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test]
async fn startup_refuses_a_certificate_without_the_node_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = certs::create_ca("Receptor Test CA", 2048, None, None)?;
    let other = node_files(dir.path(), &ca, "node-x")?;
    let yaml = |skip: bool| {
        format!(
            "---
- node:
    id: node-a
- tls-server:
    name: srv
    cert: {cert}
    key: {key}
    skipreceptornamescheck: {skip}
- tcp-listener:
    bindaddr: 127.0.0.1
    port: 0
    tls: srv
",
            cert = other.cert,
            key = other.key,
        )
    };
    let error = Daemon::spawn(&daemon_config(&yaml(false))?)
        .await
        .err()
        .context("node-a must not start with node-x's certificate")?;
    assert_eq!(
        error_chain(&error),
        format!(
            "error preparing tls server config: nodeID=node-a not found in certificate name(s); \
             names found=[node-x]; cfg section=srv; server cert={}",
            other.cert
        )
    );

    // The same for a tls-client's certificate.
    let client_yaml = format!(
        "---
- node:
    id: node-a
- tls-client:
    name: cli
    cert: {cert}
    key: {key}
- local-only
",
        cert = other.cert,
        key = other.key,
    );
    let error = Daemon::spawn(&daemon_config(&client_yaml)?)
        .await
        .err()
        .context("tls-client check")?;
    assert!(
        error_chain(&error).starts_with(
            "error preparing tls client config: nodeID=node-a not found in certificate name(s); \
             names found=[node-x]; cfg section=cli; server cert="
        ),
        "{}",
        error_chain(&error)
    );

    // skipreceptornamescheck lets it start.
    let daemon = Daemon::spawn(&daemon_config(&yaml(true))?).await?;
    daemon.shutdown(Duration::from_secs(5)).await?;

    // A key that is not the certificate's is refused too.
    let mismatched = node_files(dir.path(), &ca, "node-a")?;
    let yaml = format!(
        "---
- node:
    id: node-a
- tls-server:
    name: srv
    cert: {cert}
    key: {key}
- local-only
",
        cert = mismatched.cert,
        key = other.key,
    );
    let error = Daemon::spawn(&daemon_config(&yaml)?)
        .await
        .err()
        .context("mismatched key")?;
    assert!(
        error_chain(&error).starts_with("error preparing tls server config: cannot build"),
        "{}",
        error_chain(&error)
    );
    Ok(())
}
