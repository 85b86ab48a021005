//! `tls-server` / `tls-client` entities: their PEM files loaded into the mesh's TLS settings
//! (spec/control-work-config.md §3.5, spec/wire.md §8).
//!
//! Loading runs once at startup, like Go's `Prepare` phase: every file is read, and unless
//! `skipreceptornamescheck` is set the node's own certificate must name the node ID as a
//! Receptor otherName, or the node refuses to start with Go's message
//! `nodeID=X not found in certificate name(s); names found=[...]; cfg section=...; server cert=...`.
//!
//! Where Go falls back to the system roots (`rootcas` or `clientcas` not given), the roots come
//! from `rustls-native-certs`, read once when first needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use receptor_mesh::tls::rustls::RootCertStore;
use receptor_mesh::tls::{
    ClientAuth, ClientSettings, Identity, Pins, ServerSettings, TlsAcceptor, TlsConfigError,
    TlsConnector, client_config, receptor_names, server_config,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Config, TlsClientConfig, TlsServerConfig};

/// Why a `tls-server` or `tls-client` could not be prepared. Displays as Go's
/// `error preparing tls server config: <reason>`.
#[derive(Debug, thiserror::Error)]
#[error("error preparing tls {kind} config")]
pub struct TlsPrepareError {
    /// `server` or `client`.
    pub kind: &'static str,
    /// The entity's name.
    pub name: String,
    /// What went wrong.
    #[source]
    pub reason: Box<TlsLoadError>,
}

/// What went wrong preparing one TLS entity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsLoadError {
    /// A file could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM, or holds nothing usable.
    #[error("{}: {problem}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The node's own certificate does not carry its node ID (Go's wording).
    #[error(
        "nodeID={node_id} not found in certificate name(s); names found=[{}]; cfg section={section}; server cert={}",
        .names.join(" "),
        .cert.display()
    )]
    NodeIdMissing {
        /// This node's ID.
        node_id: String,
        /// The Receptor names the certificate has.
        names: Vec<String>,
        /// The entity's name.
        section: String,
        /// The certificate file.
        cert: PathBuf,
    },
    /// A pinned fingerprint has the wrong length.
    #[error("error decoding fingerprints")]
    Pins(#[source] receptor_mesh::tls::PinError),
    /// The rustls configuration could not be built (for example: the key does not match the
    /// certificate, or there are no trusted roots).
    #[error("cannot build the TLS configuration")]
    Build(#[source] TlsConfigError),
    /// No tls-server or tls-client has this name.
    #[error("no tls-{kind} named {name} is configured")]
    Unknown {
        /// `server` or `client`.
        kind: &'static str,
        /// The name.
        name: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsLoadError> {
    std::fs::read(path).map_err(|source| TlsLoadError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_problem(path: &Path, problem: impl ToString) -> TlsLoadError {
    TlsLoadError::Pem {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// Every `CERTIFICATE` in a PEM file, in order.
///
/// # Errors
/// Unreadable, not PEM, or no certificate in it.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_problem(path, format!("failed to decode PEM block: {e}")))?;
    if certs.is_empty() {
        return Err(pem_problem(path, "no certificate found"));
    }
    Ok(certs)
}

/// The first private key in a PEM file: `RSA PRIVATE KEY` (PKCS#1), `PRIVATE KEY` (PKCS#8) or
/// `EC PRIVATE KEY` (SEC1).
///
/// # Errors
/// Unreadable, not PEM, or no key in it.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsLoadError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => pem_problem(path, "no private key found"),
        other => pem_problem(path, format!("failed to decode PEM block: {other}")),
    })
}

/// The CA certificates of a bundle as trust anchors (certificates that cannot be anchors are
/// skipped, like Go's `AppendCertsFromPEM`).
///
/// # Errors
/// Unreadable, not PEM, or no usable CA certificate.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsLoadError> {
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(load_certificates(path)?);
    if added == 0 {
        return Err(pem_problem(path, "no usable CA certificate found"));
    }
    Ok(Arc::new(store))
}

/// The system's trusted roots (read once). Possibly empty; problems are logged.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "problem reading the system's trusted root certificates");
            }
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(loaded.certs);
            tracing::debug!(added, ignored, "system root certificates loaded");
            Arc::new(store)
        })
        .clone()
}

/// The startup node-ID check (Go's `checkCertificatesMatchNodeID`).
///
/// # Errors
/// [`TlsLoadError::NodeIdMissing`].
pub fn check_certificate_names(
    leaf: &CertificateDer<'_>,
    node_id: &str,
    section: &str,
    cert_path: &Path,
) -> Result<(), TlsLoadError> {
    let names = receptor_names(leaf);
    if names.iter().any(|n| n == node_id) {
        Ok(())
    } else {
        Err(TlsLoadError::NodeIdMissing {
            node_id: node_id.to_owned(),
            names,
            section: section.to_owned(),
            cert: cert_path.to_owned(),
        })
    }
}

fn identity(
    cert: &Path,
    key: &Path,
    node_id: &str,
    section: &str,
    check_names: bool,
) -> Result<Identity, TlsLoadError> {
    let chain = load_certificates(cert)?;
    let key = load_private_key(key)?;
    if check_names {
        check_certificate_names(&chain[0], node_id, section, cert)?;
    }
    let identity = Identity { chain, key };
    identity.check().map_err(TlsLoadError::Build)?;
    Ok(identity)
}

/// Loads one `tls-server`.
///
/// # Errors
/// See [`TlsLoadError`].
pub fn load_server(
    config: &TlsServerConfig,
    node_id: &str,
) -> Result<ServerSettings, TlsLoadError> {
    let identity = identity(
        &config.cert,
        &config.key,
        node_id,
        &config.name,
        !config.skip_receptor_names_check,
    )?;
    let roots = match &config.client_cas {
        Some(path) => Some(load_roots(path)?),
        None if config.require_client_cert => Some(system_roots()),
        None => None,
    };
    let client_auth = match roots {
        Some(roots) if config.require_client_cert => ClientAuth::Required(roots),
        Some(roots) => ClientAuth::IfGiven(roots),
        None => ClientAuth::None,
    };
    Ok(ServerSettings {
        identity,
        client_auth,
        pinned_client_certs: Pins::new(config.pinned_client_cert.clone())
            .map_err(TlsLoadError::Pins)?,
        min_tls13: config.min_tls13,
    })
}

/// Loads one `tls-client`.
///
/// # Errors
/// See [`TlsLoadError`].
pub fn load_client(
    config: &TlsClientConfig,
    node_id: &str,
) -> Result<ClientSettings, TlsLoadError> {
    let identity = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some(identity(
            cert,
            key,
            node_id,
            &config.name,
            !config.skip_receptor_names_check,
        )?),
        _ => None,
    };
    let roots = match &config.root_cas {
        Some(path) => load_roots(path)?,
        None if config.insecure_skip_verify => Arc::new(RootCertStore::empty()),
        None => system_roots(),
    };
    Ok(ClientSettings {
        identity,
        roots,
        insecure_skip_verify: config.insecure_skip_verify,
        pinned_server_certs: Pins::new(config.pinned_server_cert.clone())
            .map_err(TlsLoadError::Pins)?,
        min_tls13: config.min_tls13,
    })
}

/// Every `tls-server` and `tls-client` of a configuration, loaded.
#[derive(Debug, Clone, Default)]
pub struct TlsConfigs {
    servers: BTreeMap<String, ServerSettings>,
    clients: BTreeMap<String, ClientSettings>,
}

impl TlsConfigs {
    /// Loads and checks every TLS entity of `config`, in order; the first failure stops.
    ///
    /// # Errors
    /// The entity that failed, with why.
    pub fn load(config: &Config) -> Result<Self, TlsPrepareError> {
        let node_id = &config.node.id;
        let mut configs = Self::default();
        for server in &config.tls_servers {
            let settings = load_server(server, node_id).map_err(|reason| TlsPrepareError {
                kind: "server",
                name: server.name.clone(),
                reason: Box::new(reason),
            })?;
            configs.servers.insert(server.name.clone(), settings);
        }
        for client in &config.tls_clients {
            let settings = load_client(client, node_id).map_err(|reason| TlsPrepareError {
                kind: "client",
                name: client.name.clone(),
                reason: Box::new(reason),
            })?;
            configs.clients.insert(client.name.clone(), settings);
        }
        Ok(configs)
    }

    /// When the own certificate of each loaded `tls-server` and `tls-client` expires:
    /// `(kind, name, Unix seconds)`, in name order. A `tls-client` without a certificate has
    /// nothing to expire and is left out.
    pub fn certificate_expiries(&self) -> Vec<(&'static str, &str, i64)> {
        let servers = (self.servers.iter()).map(|(name, s)| ("server", name, Some(&s.identity)));
        let clients = (self.clients.iter()).map(|(name, c)| ("client", name, c.identity.as_ref()));
        servers
            .chain(clients)
            .filter_map(|(kind, name, identity)| {
                let leaf = identity?.chain.first()?;
                let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
                Some((kind, name.as_str(), cert.validity().not_after.timestamp()))
            })
            .collect()
    }

    /// The loaded `tls-server` called `name`.
    pub fn server(&self, name: &str) -> Option<&ServerSettings> {
        self.servers.get(name)
    }

    /// The loaded `tls-client` called `name`.
    pub fn client(&self, name: &str) -> Option<&ClientSettings> {
        self.clients.get(name)
    }

    /// An acceptor for a backend listener (mode b) with `tls-server` `name`.
    ///
    /// # Errors
    /// Unknown name, or the configuration cannot be built.
    pub fn acceptor(&self, name: &str) -> Result<TlsAcceptor, TlsPrepareError> {
        let prepare = |reason| TlsPrepareError {
            kind: "server",
            name: name.to_owned(),
            reason: Box::new(reason),
        };
        let settings = self.server_settings(name)?;
        let config = server_config(settings).map_err(|e| prepare(TlsLoadError::Build(e)))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The loaded `tls-server` called `name`, or the error that names it as unknown.
    ///
    /// # Errors
    /// No `tls-server` has that name.
    pub fn server_settings(&self, name: &str) -> Result<&ServerSettings, TlsPrepareError> {
        self.server(name).ok_or_else(|| TlsPrepareError {
            kind: "server",
            name: name.to_owned(),
            reason: Box::new(TlsLoadError::Unknown {
                kind: "server",
                name: name.to_owned(),
            }),
        })
    }

    /// A connector for a backend dialer (mode a) with `tls-client` `name`.
    ///
    /// # Errors
    /// Unknown name, or the configuration cannot be built (for example: no trusted roots).
    pub fn connector(&self, name: &str) -> Result<TlsConnector, TlsPrepareError> {
        let prepare = |reason| TlsPrepareError {
            kind: "client",
            name: name.to_owned(),
            reason: Box::new(reason),
        };
        let settings = self.client(name).ok_or_else(|| {
            prepare(TlsLoadError::Unknown {
                kind: "client",
                name: name.to_owned(),
            })
        })?;
        let config = client_config(settings).map_err(|e| prepare(TlsLoadError::Build(e)))?;
        Ok(TlsConnector::from(Arc::new(config)))
    }
}
