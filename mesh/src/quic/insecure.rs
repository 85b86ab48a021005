//! Mode A, the "insecure" TLS of ConnType 1 stream services (spec/wire.md §10.3).
//!
//! The listener presents a throwaway self-signed certificate whose subject CN is
//! [`INSECURE_COMMON_NAME`]; the dialer accepts any chain in which some certificate has that
//! CN, ignoring expiry, issuer and names, but still checks the TLS 1.3 `CertificateVerify`
//! signature with the crypto provider's algorithms. This authenticates nothing; it only
//! matches what Go nodes do.

use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use super::{ALPN, INSECURE_COMMON_NAME};

/// How long a generated listener certificate claims to be valid. Go uses 24 h and never
/// renews; Go and Rust dialers ignore expiry, so a longer span only avoids confusing tools.
const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The crypto provider for mesh TLS: ring (never aws-lc).
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why mode-A TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InsecureTlsError {
    /// Certificate generation failed.
    #[error("generating the listener certificate failed")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("building the TLS configuration failed")]
    Rustls(#[from] rustls::Error),
}

/// A fresh self-signed ECDSA P-256 certificate with CN [`INSECURE_COMMON_NAME`], serial 1,
/// valid from a minute ago.
pub(super) fn generate_certificate()
-> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, INSECURE_COMMON_NAME);
    params.distinguished_name = name;
    params.serial_number = Some(rcgen::SerialNumber::from(1u64));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(60);
    params.not_after = now + CERT_VALIDITY;
    let cert = params.self_signed(&key)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key))
}

/// The listener side: a new certificate, TLS 1.3, ALPN `netceptor`, no client certificates.
pub(super) fn server_config() -> Result<rustls::ServerConfig, InsecureTlsError> {
    let (cert, key) = generate_certificate()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A TLS 1.3 server configuration that fails every handshake (no certificate resolves): the
/// default of endpoints that configure each connection separately.
pub(super) fn refusing_server_config() -> Result<rustls::ServerConfig, InsecureTlsError> {
    #[derive(Debug)]
    struct NoCertificate;
    impl rustls::server::ResolvesServerCert for NoCertificate {
        fn resolve(
            &self,
            _hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The dialer side: TLS 1.3, ALPN `netceptor`, the CN-only verifier.
pub(super) fn client_config() -> Result<rustls::ClientConfig, InsecureTlsError> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(InsecureVerifier { provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Whether the DER certificate parses and its subject has CN exactly `cn`.
pub(super) fn has_common_name(der: &[u8], cn: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    cert.subject()
        .iter_common_name()
        .any(|attr| attr.as_str().is_ok_and(|value| value == cn))
}

/// Accepts a chain with the insecure common name anywhere in it (Go's
/// `verifyPeerCertificate` for insecure streams).
#[derive(Debug)]
struct InsecureVerifier {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for InsecureVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if std::iter::once(end_entity)
            .chain(intermediates)
            .any(|cert| has_common_name(cert, INSECURE_COMMON_NAME))
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "insecure connection to secure service".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_has_the_insecure_cn_only() -> Result<(), rcgen::Error> {
        let (cert, _key) = generate_certificate()?;
        assert!(has_common_name(&cert, INSECURE_COMMON_NAME));
        assert!(!has_common_name(&cert, "netceptor"));
        assert!(!has_common_name(b"not a certificate", INSECURE_COMMON_NAME));
        Ok(())
    }

    #[test]
    fn verifier_rejects_other_common_names() -> Result<(), rcgen::Error> {
        let verifier = InsecureVerifier {
            provider: provider(),
        };
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let other =
            rcgen::CertificateParams::new(vec!["example.com".to_owned()])?.self_signed(&key)?;
        let name = ServerName::try_from("netceptor").expect("valid name");
        let rejected = verifier.verify_server_cert(other.der(), &[], &name, &[], UnixTime::now());
        assert!(rejected.is_err());
        let (ours, _) = generate_certificate()?;
        // The insecure CN anywhere in the chain is enough, expired or not.
        let accepted = verifier.verify_server_cert(
            other.der(),
            &[ours],
            &name,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(4_000_000_000)),
        );
        assert!(accepted.is_ok());
        Ok(())
    }

    /// What our mode-A listener does with the SNI a Go dialer sends (its own node ID), found
    /// by running rustls's QUIC server on a ClientHello whose SNI was patched to `sni`.
    fn server_accepts_sni(sni: &str) -> Result<bool, Box<dyn std::error::Error>> {
        use rustls::quic::{ClientConnection, ServerConnection, Version};
        // A valid placeholder of the same length, then the Go node ID in its place.
        let placeholder = "q".repeat(sni.len());
        let params = vec![0x01, 0x02, 0x75, 0x30]; // max_idle_timeout = 30000
        let mut client = ClientConnection::new(
            Arc::new(client_config()?),
            Version::V1,
            ServerName::try_from(placeholder.clone())?,
            params.clone(),
        )?;
        let mut hello = Vec::new();
        client.write_hs(&mut hello);
        let at: Vec<usize> = hello
            .windows(sni.len())
            .enumerate()
            .filter(|(_, w)| *w == placeholder.as_bytes())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            at.len(),
            1,
            "the placeholder appears once in the ClientHello"
        );
        hello[at[0]..at[0] + sni.len()].copy_from_slice(sni.as_bytes());
        let mut server = ServerConnection::new(Arc::new(server_config()?), Version::V1, params)?;
        match server.read_hs(&hello) {
            Ok(()) => Ok(true),
            Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::ServerNameMustContainOneHostName,
            )) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }

    #[test]
    fn go_dialer_sni_that_is_not_a_dns_name_aborts_the_rustls_handshake()
    -> Result<(), Box<dyn std::error::Error>> {
        for accepted in [
            "node_1",
            "node-a",
            "node1",
            "host.example",
            "Node_B.x",
            "1.2.3.4",
        ] {
            assert!(
                server_accepts_sni(accepted)?,
                "{accepted} should be accepted"
            );
        }
        for refused in [
            "1234", "host.01", "0x1f", "node 1", "a:b", "-node", "node-", "n@de",
        ] {
            assert!(!server_accepts_sni(refused)?, "{refused} should be refused");
        }
        Ok(())
    }
}
