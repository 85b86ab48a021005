//! TLS for backends and mesh streams, built from already-loaded material (spec/wire.md §1.2, §8,
//! §10.4; spec/control-work-config.md §3.5). This module reads no files: the daemon loads PEM
//! files and system roots and hands DER here.
//!
//! # Parameters (Go's `baseTLS`)
//! [`provider`] is ring with the TLS 1.3 suites plus only the TLS 1.2 ECDHE-GCM suites Go offers,
//! and the groups ring has (X25519, P-256, P-384; Go's P-521 is missing, so a Go peer gets a
//! HelloRetryRequest, which works). TLS 1.2 is allowed unless `min_tls13`.
//!
//! # Verification modes
//! - **(a) backend dialers** ([`client_config`]): chain to the roots with serverAuth, the DNS name
//!   or IP of the dialed host, then the pins. No node-ID check.
//! - **(b) backend listeners** ([`server_config`]): client chain to the client CAs with
//!   clientAuth, then the pins. No node-ID check.
//! - **(c) receptor mode** for mesh streams ([`receptor_client_config`],
//!   [`receptor_server_config`]): chain and EKU, no DNS check, and the expected node ID must be a
//!   Receptor otherName SAN (OID 1.3.6.1.4.1.2312.19.1) of the leaf. ALPN `netceptor`, TLS 1.3.
//!
//! `insecure_skip_verify` turns off every server-certificate check, pins included, but the
//! handshake signatures are still verified.
//!
//! Verification failures carry a [`rustls::Error`]; [`describe`] and [`describe_io`] turn one
//! into the sentence a log line needs ("certificate expired ...", "certificate signed by an
//! unknown authority", "does not match any pinned fingerprint", "valid for Receptor node ID a, not
//! b", "peer sent no certificate").

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    OtherError, RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use rustls;
pub use tokio_rustls::{self, TlsAcceptor, TlsConnector};

/// The Receptor node-ID otherName OID, 1.3.6.1.4.1.2312.19.1, as text.
pub const RECEPTOR_NAME_OID: &str = "1.3.6.1.4.1.2312.19.1";
/// The same OID's DER content bytes (without tag and length).
pub const RECEPTOR_NAME_OID_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x92, 0x08, 0x13, 0x01];
/// ALPN of mesh streams (QUIC over the mesh, spec §10.4).
pub const ALPN_NETCEPTOR: &[u8] = b"netceptor";

// === parameters ===

/// The ring provider restricted to Go receptor's parameters (spec §8.1).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::ring::{cipher_suite as cs, default_provider, kx_group};
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    cs::TLS13_AES_128_GCM_SHA256,
                    cs::TLS13_AES_256_GCM_SHA384,
                    cs::TLS13_CHACHA20_POLY1305_SHA256,
                    // Go's TLS 1.2 list, minus TLS_RSA_WITH_AES_256_GCM_SHA384 (no forward
                    // secrecy; rustls has no such suite).
                    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                ],
                kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
                ..default_provider()
            })
        })
        .clone()
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12_AND_13: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(min_tls13: bool) -> &'static [&'static SupportedProtocolVersion] {
    if min_tls13 { TLS13_ONLY } else { TLS12_AND_13 }
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

// === material ===

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#1, PKCS#8 or SEC1).
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Checks that the key is usable and belongs to the leaf certificate.
    ///
    /// # Errors
    /// [`TlsConfigError::Identity`].
    pub fn check(&self) -> Result<(), TlsConfigError> {
        rustls::sign::CertifiedKey::from_der(self.chain.clone(), self.key.clone_key(), &provider())
            .map(drop)
            .map_err(TlsConfigError::Identity)
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Which client certificates a server asks for (Go's `ClientAuth` of a `tls-server`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// None are requested (neither `requireclientcert` nor `clientcas`).
    #[default]
    None,
    /// `clientcas` without `requireclientcert` (Go's `VerifyClientCertIfGiven`). Go's verify
    /// callback also runs on an empty certificate list and refuses it ("peer certificate
    /// missing"), so in practice a certificate is required; we behave the same. The difference
    /// from [`ClientAuth::Required`] is only that mode (c) does not check the node ID.
    IfGiven(Arc<RootCertStore>),
    /// `requireclientcert`: required and verified.
    Required(Arc<RootCertStore>),
}

/// A `tls-server` configuration in loaded form.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The server's certificate and key.
    pub identity: Identity,
    /// Client certificate policy.
    pub client_auth: ClientAuth,
    /// Pinned client certificates; checked whenever a client certificate is verified.
    pub pinned_client_certs: Pins,
    /// TLS 1.3 only.
    pub min_tls13: bool,
}

/// A `tls-client` configuration in loaded form.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The client certificate, if any.
    pub identity: Option<Identity>,
    /// Trusted roots: `rootcas`, or the system roots when it is not given.
    pub roots: Arc<RootCertStore>,
    /// Accept any server certificate (pins are then ignored too, as in Go).
    pub insecure_skip_verify: bool,
    /// Pinned server certificates.
    pub pinned_server_certs: Pins,
    /// TLS 1.3 only.
    pub min_tls13: bool,
}

// === pins ===

/// A fingerprint that is not hex, or not 28, 32, 48 or 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// Not hexadecimal (colons allowed).
    #[error("fingerprint {0:?} is not hexadecimal")]
    NotHex(String),
    /// Wrong length.
    #[error(
        "fingerprint is {0} bytes: expected 28, 32, 48 or 64 (sha224, sha256, sha384 or sha512)"
    )]
    Length(usize),
}

/// Parses a hex fingerprint with optional `:` separators; 28, 32, 48 or 64 bytes.
///
/// # Errors
/// Not hex, or a length that is no SHA-2 digest length.
pub fn parse_fingerprint(text: &str) -> Result<Vec<u8>, PinError> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if !hex.is_ascii() || !hex.len().is_multiple_of(2) {
        return Err(PinError::NotHex(text.to_owned()));
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| PinError::NotHex(text.to_owned()))?;
    check_pin_len(bytes.len())?;
    Ok(bytes)
}

fn check_pin_len(len: usize) -> Result<(), PinError> {
    match len {
        28 | 32 | 48 | 64 => Ok(()),
        other => Err(PinError::Length(other)),
    }
}

/// The SHA-2 digest of `der` with `len` bytes (28, 32, 48 or 64); `None` for other lengths.
pub fn fingerprint(der: &[u8], len: usize) -> Option<Vec<u8>> {
    Some(match len {
        28 => sha2::Sha224::digest(der).to_vec(),
        32 => sha2::Sha256::digest(der).to_vec(),
        48 => sha2::Sha384::digest(der).to_vec(),
        64 => sha2::Sha512::digest(der).to_vec(),
        _ => return None,
    })
}

/// Pinned leaf-certificate digests (SHA-224/256/384/512 of the DER). A certificate passes if
/// it matches any pin; an empty set pins nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins(Vec<Vec<u8>>);

impl Pins {
    /// Pins from raw digests.
    ///
    /// # Errors
    /// A digest is not 28, 32, 48 or 64 bytes long.
    pub fn new(digests: Vec<Vec<u8>>) -> Result<Self, PinError> {
        for digest in &digests {
            check_pin_len(digest.len())?;
        }
        Ok(Self(digests))
    }

    /// Pins from hex texts (see [`parse_fingerprint`]).
    ///
    /// # Errors
    /// The first text that does not parse.
    pub fn parse<I, S>(texts: I) -> Result<Self, PinError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        texts
            .into_iter()
            .map(|t| parse_fingerprint(t.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `leaf_der` matches a pin (always true when nothing is pinned).
    pub fn matches(&self, leaf_der: &[u8]) -> bool {
        self.is_empty()
            || self
                .0
                .iter()
                .any(|pin| fingerprint(leaf_der, pin.len()).is_some_and(|d| d == *pin))
    }

    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.matches(leaf) {
            Ok(())
        } else {
            Err(PeerCertError::PinMismatch.into())
        }
    }
}

// === Receptor names ===

/// Node IDs a certificate names as Receptor otherName SANs (OID 1.3.6.1.4.1.2312.19.1), in
/// order. Any ASN.1 string type is accepted inside the `[0]`, as Go does. Empty if the
/// certificate does not parse or names none.
pub fn receptor_names(cert_der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::OtherName(oid, value) if oid.as_bytes() == RECEPTOR_NAME_OID_DER => {
                other_name_string(value)
            }
            _ => None,
        })
        .collect()
}

/// One DER element: (tag, content, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The string in an otherName's value: the `[0] EXPLICIT` element that follows the type OID
/// (as x509-parser's `GeneralName::OtherName` hands it over), holding any ASN.1 string type.
pub fn other_name_string(value: &[u8]) -> Option<String> {
    let (tag, explicit, _) = der_element(value)?;
    if tag != 0xa0 {
        return None;
    }
    let (tag, content, _) = der_element(explicit)?;
    match tag {
        // UTF8String, NumericString, PrintableString, T61String, IA5String, VisibleString,
        // GeneralString: byte strings.
        0x0c | 0x12 | 0x13 | 0x14 | 0x16 | 0x1a | 0x1b => String::from_utf8(content.to_vec()).ok(),
        // UniversalString: UTF-32BE.
        0x1c if content.len().is_multiple_of(4) => content
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        // BMPString: UTF-16BE.
        0x1e if content.len().is_multiple_of(2) => {
            let units: Vec<u16> = content
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// A certificate the chain check accepted but Receptor's own checks refuse. Carried inside
/// [`rustls::Error::InvalidCertificate`] as [`CertificateError::Other`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerCertError {
    /// No pin matches the leaf.
    #[error("presented certificate does not match any pinned fingerprint")]
    PinMismatch,
    /// The leaf does not name the expected node (Go's `ReceptorCertNameError` wording).
    #[error("{}", wrong_node_message(.expected, .found))]
    WrongNodeId {
        /// The node ID that had to be present.
        expected: String,
        /// The Receptor names the certificate has.
        found: Vec<String>,
    },
}

fn wrong_node_message(expected: &str, found: &[String]) -> String {
    match found {
        [] => format!(
            "certificate is not valid for any Receptor node IDs, but wanted to match {expected}"
        ),
        [_] => format!(
            "certificate is valid for Receptor node ID {}, not {expected}",
            found.join(", ")
        ),
        _ => format!(
            "certificate is valid for Receptor node IDs {}, not {expected}",
            found.join(", ")
        ),
    }
}

impl From<PeerCertError> for rustls::Error {
    fn from(error: PeerCertError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
    }
}

/// Checks that `leaf` names `node_id` as a Receptor otherName (exact, case-sensitive).
///
/// # Errors
/// [`PeerCertError::WrongNodeId`] with the names found.
pub fn check_node_id(leaf: &[u8], node_id: &str) -> Result<(), PeerCertError> {
    let found = receptor_names(leaf);
    if found.iter().any(|n| n == node_id) {
        Ok(())
    } else {
        Err(PeerCertError::WrongNodeId {
            expected: node_id.to_owned(),
            found,
        })
    }
}

// === verifiers ===

/// Mode (a): WebPKI chain + DNS/IP name, then pins.
#[derive(Debug)]
pub struct DnsServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Pins,
}

impl ServerCertVerifier for DnsServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.pins.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Mode (c), dialing side: chain to the roots with serverAuth, pins, and the target node ID as
/// a Receptor name. The DNS name is not checked.
#[derive(Debug)]
pub struct ReceptorServerVerifier {
    roots: Arc<RootCertStore>,
    pins: Pins,
    node_id: String,
}

impl ReceptorServerVerifier {
    /// A verifier that wants `node_id` in the server's certificate.
    pub fn new(roots: Arc<RootCertStore>, pins: Pins, node_id: impl Into<String>) -> Self {
        Self {
            roots,
            pins,
            node_id: node_id.into(),
        }
    }
}

impl ServerCertVerifier for ReceptorServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            algorithms().all,
        )?;
        self.pins.check(end_entity)?;
        check_node_id(end_entity, &self.node_id)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// `insecureskipverify`: any server certificate is accepted; handshake signatures are still
/// checked.
#[derive(Debug, Default)]
pub struct InsecureServerVerifier;

impl ServerCertVerifier for InsecureServerVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// Modes (b) and (c), listening side: WebPKI client verification (chain to the client CAs with
/// clientAuth), then pins, then (mode c) the dialing node's ID as a Receptor name.
#[derive(Debug)]
pub struct CheckedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    pins: Pins,
    node_id: Option<String>,
}

impl ClientCertVerifier for CheckedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.pins.check(end_entity)?;
        if let Some(node_id) = &self.node_id {
            check_node_id(end_entity, node_id)?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// === config builders ===

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The protocol versions were refused by the provider.
    #[error("unsupported TLS protocol versions")]
    Versions(#[source] rustls::Error),
    /// The certificate chain or private key is unusable (bad encoding, unsupported key type,
    /// key does not match the certificate).
    #[error("unusable certificate or private key")]
    Identity(#[source] rustls::Error),
    /// A certificate verifier could not be built (for example: no trusted roots).
    #[error("cannot build the certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// No trusted roots to verify against.
    #[error("no trusted root certificates")]
    NoRoots,
}

fn client_verifier(
    client_auth: &ClientAuth,
    pins: &Pins,
    node_id: Option<&str>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsConfigError> {
    let roots = match client_auth {
        ClientAuth::None => return Ok(WebPkiClientVerifier::no_client_auth()),
        ClientAuth::IfGiven(roots) | ClientAuth::Required(roots) => roots,
    };
    // No `allow_unauthenticated()` even for `IfGiven`: see there.
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider())
        .build()
        .map_err(TlsConfigError::Verifier)?;
    Ok(Arc::new(CheckedClientVerifier {
        inner,
        pins: pins.clone(),
        node_id: node_id.map(str::to_owned),
    }))
}

fn build_server_config(
    settings: &ServerSettings,
    verifier: Arc<dyn ClientCertVerifier>,
    min_tls13: bool,
) -> Result<ServerConfig, TlsConfigError> {
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min_tls13))
        .map_err(TlsConfigError::Versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            settings.identity.chain.clone(),
            settings.identity.key.clone_key(),
        )
        .map_err(TlsConfigError::Identity)
}

/// Mode (b): a backend listener (`tcp-listener tls=`, `ws-listener tls=`). No ALPN.
///
/// # Errors
/// See [`TlsConfigError`].
pub fn server_config(settings: &ServerSettings) -> Result<ServerConfig, TlsConfigError> {
    let verifier = client_verifier(&settings.client_auth, &settings.pinned_client_certs, None)?;
    build_server_config(settings, verifier, settings.min_tls13)
}

/// Mode (c), listening side, for one incoming mesh stream from `client_node_id` (spec §10.4):
/// with a required client certificate, it must chain to the client CAs (clientAuth) and name
/// `client_node_id`, and pins are not checked (as in Go); with [`ClientAuth::IfGiven`] the
/// certificate is verified with pins and no node-ID check. ALPN `netceptor`, TLS 1.3.
///
/// # Errors
/// See [`TlsConfigError`].
pub fn receptor_server_config(
    settings: &ServerSettings,
    client_node_id: &str,
) -> Result<ServerConfig, TlsConfigError> {
    let verifier = match &settings.client_auth {
        ClientAuth::Required(_) => client_verifier(
            &settings.client_auth,
            &Pins::default(),
            Some(client_node_id),
        )?,
        other => client_verifier(other, &settings.pinned_client_certs, None)?,
    };
    let mut config = build_server_config(settings, verifier, true)?;
    config.alpn_protocols = vec![ALPN_NETCEPTOR.to_vec()];
    Ok(config)
}

fn build_client_config(
    settings: &ClientSettings,
    verifier: Arc<dyn ServerCertVerifier>,
    min_tls13: bool,
) -> Result<ClientConfig, TlsConfigError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min_tls13))
        .map_err(TlsConfigError::Versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &settings.identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(TlsConfigError::Identity),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Mode (a): a backend dialer (`tcp-peer tls=`, `ws-peer tls=`). The connection's
/// [`ServerName`] (see [`server_name_for_address`]) is the name checked. No ALPN is set: a
/// `wss` dialer must keep it that way or offer only `http/1.1`, never `h2` (spec §1.4).
///
/// # Errors
/// See [`TlsConfigError`].
pub fn client_config(settings: &ClientSettings) -> Result<ClientConfig, TlsConfigError> {
    let verifier: Arc<dyn ServerCertVerifier> = if settings.insecure_skip_verify {
        Arc::new(InsecureServerVerifier)
    } else {
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&settings.roots), provider())
                .build()
                .map_err(TlsConfigError::Verifier)?;
        Arc::new(DnsServerVerifier {
            inner,
            pins: settings.pinned_server_certs.clone(),
        })
    };
    build_client_config(settings, verifier, settings.min_tls13)
}

/// Mode (c), dialing side: a mesh stream to `server_node_id` (spec §10.4). Chain, serverAuth,
/// pins and the node ID; no DNS check. ALPN `netceptor`, TLS 1.3. Any [`ServerName`] will do
/// for the connection (Go sends no SNI).
///
/// # Errors
/// See [`TlsConfigError`].
pub fn receptor_client_config(
    settings: &ClientSettings,
    server_node_id: &str,
) -> Result<ClientConfig, TlsConfigError> {
    let verifier: Arc<dyn ServerCertVerifier> = if settings.insecure_skip_verify {
        Arc::new(InsecureServerVerifier)
    } else {
        if settings.roots.is_empty() {
            return Err(TlsConfigError::NoRoots);
        }
        Arc::new(ReceptorServerVerifier::new(
            Arc::clone(&settings.roots),
            settings.pinned_server_certs.clone(),
            server_node_id,
        ))
    };
    let mut config = build_client_config(settings, verifier, true)?;
    config.alpn_protocols = vec![ALPN_NETCEPTOR.to_vec()];
    Ok(config)
}

/// An address whose host is neither a DNS name nor an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address:?} has no valid host name for TLS")]
pub struct InvalidServerName {
    /// The address.
    pub address: String,
}

/// The host of `host:port` (IPv6 literals in brackets) as the name a mode (a) dialer checks.
/// An IP literal gives an IP name (and no SNI is sent), as in Go.
///
/// # Errors
/// The host is empty or not a valid DNS name or IP address.
pub fn server_name_for_address(address: &str) -> Result<ServerName<'static>, InvalidServerName> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => address,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|_| InvalidServerName {
        address: address.to_owned(),
    })
}

// === errors for humans ===

/// One sentence saying why a handshake or TLS session failed, for logs.
pub fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::NoCertificatesPresented => {
            "peer sent no certificate, but one is required".to_owned()
        }
        rustls::Error::InvalidCertificate(cert) => {
            format!("peer certificate refused: {}", describe_certificate(cert))
        }
        rustls::Error::AlertReceived(alert) => describe_alert(*alert),
        other => other.to_string(),
    }
}

fn describe_certificate(error: &CertificateError) -> String {
    match error {
        CertificateError::Expired => "certificate expired".to_owned(),
        CertificateError::NotValidYet => "certificate is not valid yet".to_owned(),
        CertificateError::UnknownIssuer => {
            "certificate signed by an unknown authority (not issued by a trusted CA)".to_owned()
        }
        CertificateError::BadSignature => "certificate has a bad signature".to_owned(),
        CertificateError::BadEncoding => "certificate is malformed".to_owned(),
        CertificateError::NotValidForName => "certificate is not valid for the name".to_owned(),
        CertificateError::InvalidPurpose => {
            "certificate is not valid for this purpose (extended key usage)".to_owned()
        }
        CertificateError::UnhandledCriticalExtension => {
            "certificate has an unsupported critical extension".to_owned()
        }
        CertificateError::Other(other) => other.0.to_string(),
        other => other.to_string(),
    }
}

fn describe_alert(alert: AlertDescription) -> String {
    let what = match alert {
        AlertDescription::CertificateRequired => "peer requires a client certificate",
        AlertDescription::BadCertificate => "peer rejected our certificate",
        AlertDescription::UnknownCA => "peer does not trust the CA of our certificate",
        AlertDescription::CertificateExpired => "peer says our certificate expired",
        AlertDescription::CertificateUnknown => "peer could not verify our certificate",
        AlertDescription::UnsupportedCertificate => "peer does not support our certificate",
        AlertDescription::AccessDenied => "peer denied access",
        AlertDescription::HandshakeFailure => {
            "peer aborted the handshake (no common protocol version, cipher suite or group?)"
        }
        AlertDescription::ProtocolVersion => "peer does not support our TLS versions",
        AlertDescription::DecryptError => "peer could not verify the handshake",
        AlertDescription::NoApplicationProtocol => "no common ALPN protocol",
        _ => "peer sent a fatal alert",
    };
    format!("{what} ({alert:?} alert)")
}

/// Like [`describe`] for the I/O errors tokio-rustls returns.
pub fn describe_io(error: &io::Error) -> String {
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return describe(tls);
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof => "connection closed during the TLS handshake".to_owned(),
        _ => error.to_string(),
    }
}

/// Whether `error` came from TLS (as opposed to the socket).
pub fn is_tls_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

// === sessions ===

/// A TLS stream as a backend session needs it: a peer that closes without `close_notify`
/// (rustls' `UnexpectedEof`) reads as a plain end of stream, and a TLS failure on an
/// established session (for example the alert a TLS 1.3 server sends after rejecting our client
/// certificate) is logged with its reason before the error is passed on.
pub struct SessionStream<S> {
    inner: S,
    peer: String,
}

impl<S> fmt::Debug for SessionStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStream")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl<S> SessionStream<S> {
    /// Wraps `inner`; `peer` names the remote in logs.
    pub fn new(inner: S, peer: impl Into<String>) -> Self {
        Self {
            inner,
            peer: peer.into(),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SessionStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!(peer = %self.peer, "peer closed the TLS session without close_notify");
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) if is_tls_error(&error) => {
                tracing::warn!(peer = %self.peer, reason = %describe_io(&error), "tls session failed");
                Poll::Ready(Err(error))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SessionStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
