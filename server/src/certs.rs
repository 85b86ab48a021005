//! The certificate utilities `cert-init`, `cert-makereq` and `cert-signreq`
//! (spec/wire.md §8.4, spec/control-work-config.md §3.3), made to produce what Go receptor's
//! `pkg/certificates` produces:
//!
//! - **CA** (`cert-init`): a new RSA key, self-signed, serial = unix time, valid from now for
//!   10 years unless `notbefore`/`notafter` say otherwise, subject `CN=<commonname>` only.
//!   Extensions in Go's order: KeyUsage (critical) digitalSignature + keyCertSign,
//!   ExtKeyUsage clientAuth + serverAuth, BasicConstraints (critical) CA, SubjectKeyIdentifier
//!   (SHA-1 of the public key, as Go computes it).
//! - **Request** (`cert-makereq`): `CN=<commonname>`, a new or given RSA key, and a
//!   SubjectAltName built like Go's `MakeReceptorSAN`: DNS names, then IP addresses (IPv4 as 4
//!   bytes), then node IDs as otherName 1.3.6.1.4.1.2312.19.1 holding a UTF8String
//!   (the bytes of spec/wire.md §13.9). Signed with SHA256-RSA.
//! - **Certificate** (`cert-signreq`): the request's subject and public key, issuer = the CA's
//!   subject, serial = unix time, valid from now for 1 year by default; KeyUsage (critical)
//!   digitalSignature, ExtKeyUsage clientAuth + serverAuth, AuthorityKeyIdentifier (the CA's
//!   SubjectKeyIdentifier), and the request's SubjectAltName extension copied verbatim. The
//!   request's signature is checked first (Go does not).
//!
//! Keys are written as PKCS#1 `RSA PRIVATE KEY`; every file is written with mode 0600.
//! Signing uses ring for 2048–4096-bit keys and the `rsa` crate for other sizes (ring signs
//! nothing else); all of it runs offline, so no timing side channel is observable.

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, Issuer, KeyPair,
    PKCS_RSA_SHA256, PublicKeyData, SerialNumber, SignatureAlgorithm, SigningKey,
};
use receptor_mesh::tls::{RECEPTOR_NAME_OID_DER, other_name_string};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use sha2::Digest;
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::config::{
    CertCommand, CertInitConfig, CertMakeReqConfig, CertReqKey, CertSignReqConfig,
};

/// Key size when none is given (Go's library default).
pub const DEFAULT_BITS: u32 = 2048;
/// OID of the SubjectAltName extension.
const SAN_OID: &[u64] = &[2, 5, 29, 17];
const KEY_USAGE_OID: &[u64] = &[2, 5, 29, 15];
const EXT_KEY_USAGE_OID: &[u64] = &[2, 5, 29, 37];
const BASIC_CONSTRAINTS_OID: &[u64] = &[2, 5, 29, 19];
const SUBJECT_KEY_ID_OID: &[u64] = &[2, 5, 29, 14];
const AUTHORITY_KEY_ID_OID: &[u64] = &[2, 5, 29, 35];
const SAN_OID_DER: &[u8] = &[0x55, 0x1d, 0x11];

/// A certificate utility failed. Messages follow Go's where it has them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM input holds the wrong things ("certificate file should contain exactly one item").
    #[error("{what}: {problem}")]
    Pem {
        /// The file or input.
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A certificate, request or key inside a PEM block does not parse.
    #[error("{what}: {problem}")]
    Parse {
        /// The thing being parsed.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The common name is empty.
    #[error("must provide CommonName")]
    NoCommonName,
    /// RSA key generation failed (for example: a size under 1024 bits).
    #[error("cannot generate a {bits}-bit RSA key")]
    KeyGeneration {
        /// The requested size.
        bits: u32,
        /// Why.
        #[source]
        source: rsa::Error,
    },
    /// A key could not be encoded.
    #[error("cannot encode the private key: {0}")]
    KeyEncoding(String),
    /// rcgen refused to build the certificate or request.
    #[error("cannot build the certificate")]
    Build(#[source] rcgen::Error),
    /// The request's signature does not verify.
    #[error("the certificate request's signature is invalid")]
    BadRequestSignature,
    /// The request names nothing.
    #[error("cannot sign: no names found in certificate")]
    NoNames,
    /// The CA's subject could not be written back as the issuer name byte for byte.
    #[error("cannot reproduce the CA certificate's subject as the issuer name ({0})")]
    Issuer(String),
    /// The interactive confirmation could not be read.
    #[error("cannot read the answer")]
    Prompt(#[source] std::io::Error),
    /// The user did not answer yes.
    #[error("user declined")]
    Declined,
}

fn parse_error(what: &'static str, problem: impl ToString) -> CertError {
    CertError::Parse {
        what,
        problem: problem.to_string(),
    }
}

// === DER ===

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        // Checked: fits in 7 bits.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

// === names ===

/// The subjectAltName entries of a request or certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// DNS names.
    pub dns_names: Vec<String>,
    /// IP addresses.
    pub ip_addresses: Vec<IpAddr>,
    /// Receptor node IDs.
    pub node_ids: Vec<String>,
}

impl Names {
    /// Whether there are no names at all.
    pub fn is_empty(&self) -> bool {
        self.dns_names.is_empty() && self.ip_addresses.is_empty() && self.node_ids.is_empty()
    }
}

/// The SubjectAltName extension value (the DER inside the extension's OCTET STRING), laid out as
/// Go's `MakeReceptorSAN` does: DNS `[2]`, then IP `[7]` (IPv4 and IPv4-mapped addresses as 4
/// bytes), then node IDs as `[0] { OID 1.3.6.1.4.1.2312.19.1, [0] { UTF8String } }`.
pub fn san_extension_value(names: &Names) -> Vec<u8> {
    let mut items = Vec::new();
    for dns in &names.dns_names {
        items.extend(tlv(0x82, dns.as_bytes()));
    }
    for ip in &names.ip_addresses {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.octets().to_vec(),
                None => v6.octets().to_vec(),
            },
        };
        items.extend(tlv(0x87, &bytes));
    }
    for node in &names.node_ids {
        let mut other = tlv(0x06, RECEPTOR_NAME_OID_DER);
        other.extend(tlv(0xa0, &tlv(0x0c, node.as_bytes())));
        items.extend(tlv(0xa0, &other));
    }
    tlv(0x30, &items)
}

fn names_from_san(names: &[GeneralName<'_>]) -> Names {
    let mut out = Names::default();
    for name in names {
        match name {
            GeneralName::DNSName(dns) => out.dns_names.push((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                    out.ip_addresses.push(IpAddr::from(v4));
                } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    out.ip_addresses.push(IpAddr::from(v6));
                }
            }
            GeneralName::OtherName(oid, value) if oid.as_bytes() == RECEPTOR_NAME_OID_DER => {
                out.node_ids.extend(other_name_string(value));
            }
            _ => {}
        }
    }
    out
}

/// A subject `CN=<common_name>`; PrintableString when the name allows it, as Go encodes it.
fn common_name_dn(common_name: &str) -> Result<DistinguishedName, CertError> {
    if common_name.is_empty() {
        return Err(CertError::NoCommonName);
    }
    let printable = common_name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
    let value = if printable {
        rcgen::string::PrintableString::try_from(common_name)
            .map(DnValue::PrintableString)
            .unwrap_or_else(|_| DnValue::Utf8String(common_name.to_owned()))
    } else {
        DnValue::Utf8String(common_name.to_owned())
    };
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, value);
    Ok(dn)
}

/// An x509 name as rcgen's distinguished name, keeping each attribute's string type.
fn dn_from_x509(name: &X509Name<'_>) -> Result<DistinguishedName, CertError> {
    let bad = |problem: &str| parse_error("distinguished name", problem);
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let attr = attrs.next().ok_or_else(|| bad("empty RDN"))?;
        if attrs.next().is_some() {
            return Err(bad("multi-valued RDNs are not supported"));
        }
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| bad("attribute OID too large"))?
            .collect();
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            return Err(bad("repeated attribute types are not supported"));
        }
        let data = attr.attr_value().data;
        let text = || {
            std::str::from_utf8(data)
                .map(str::to_owned)
                .map_err(|_| bad("attribute is not valid text"))
        };
        let invalid = |_| bad("attribute has characters its string type forbids");
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(invalid)?),
            Tag::Utf8String => DnValue::Utf8String(text()?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(invalid)?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(invalid)?),
            Tag::BmpString => DnValue::BmpString(
                rcgen::string::BmpString::from_utf16be(data.to_vec())
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            Tag::UniversalString => DnValue::UniversalString(
                rcgen::string::UniversalString::from_utf32be(data.to_vec())
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            _ => return Err(bad("unsupported attribute string type")),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

// === keys ===

/// An RSA key that signs with SHA256-RSA (PKCS#1 v1.5): through ring when ring accepts the key
/// size (2048–4096 bits), otherwise with the `rsa` crate.
enum Signer {
    Ring(Box<KeyPair>),
    Rsa {
        key: Box<rsa::PrivateKey>,
        public_pkcs1: Vec<u8>,
    },
}

impl Signer {
    fn new(key: &rsa::PrivateKey) -> Result<Self, CertError> {
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|e| CertError::KeyEncoding(e.to_string()))?;
        let der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes());
        if let Ok(pair) = KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_RSA_SHA256) {
            return Ok(Self::Ring(Box::new(pair)));
        }
        let public_pkcs1 = key
            .to_public_key()
            .to_pkcs1_der()
            .map_err(|e| CertError::KeyEncoding(e.to_string()))?
            .into_vec();
        Ok(Self::Rsa {
            key: Box::new(key.clone()),
            public_pkcs1,
        })
    }
}

impl PublicKeyData for Signer {
    fn der_bytes(&self) -> &[u8] {
        match self {
            Self::Ring(pair) => pair.der_bytes(),
            Self::Rsa { public_pkcs1, .. } => public_pkcs1,
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_RSA_SHA256
    }
}

impl SigningKey for Signer {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            Self::Ring(pair) => pair.sign(msg),
            Self::Rsa { key, .. } => {
                let digest = sha2::Sha256::digest(msg);
                key.sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
                    .map_err(|_| rcgen::Error::RingUnspecified)
            }
        }
    }
}

/// A new RSA key of `bits`.
///
/// # Errors
/// Fewer than 1024 bits, or the system RNG failed.
pub fn generate_key(bits: u32) -> Result<rsa::PrivateKey, CertError> {
    let size = usize::try_from(bits).unwrap_or(usize::MAX);
    rsa::PrivateKey::new(&mut getrandom::SysRng, size)
        .map_err(|source| CertError::KeyGeneration { bits, source })
}

/// `key` as a PKCS#1 `RSA PRIVATE KEY` PEM (what Go writes).
///
/// # Errors
/// Encoding failed.
pub fn key_to_pem(key: &rsa::PrivateKey) -> Result<String, CertError> {
    key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| CertError::KeyEncoding(e.to_string()))
}

/// PEM sections of `pem`, with `what` naming it in errors (Go's "failed to decode PEM block").
fn pem_sections(pem: &[u8], what: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, CertError> {
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what: what.to_owned(),
            problem: format!("failed to decode PEM block: {e}"),
        })?;
    Ok(sections)
}

fn single_section(
    pem: &[u8],
    what: &str,
    item: &str,
    kinds: &[SectionKind],
) -> Result<(SectionKind, Vec<u8>), CertError> {
    let mut sections = pem_sections(pem, what)?;
    let problem = match sections.len() {
        1 => None,
        _ => Some(format!("{item} file should contain exactly one item")),
    };
    if let Some(problem) = problem {
        return Err(CertError::Pem {
            what: what.to_owned(),
            problem,
        });
    }
    let (kind, der) = sections.remove(0);
    if !kinds.contains(&kind) {
        return Err(CertError::Pem {
            what: what.to_owned(),
            problem: format!("{item} file does not contain {item} data"),
        });
    }
    Ok((kind, der))
}

/// The one RSA private key in `pem` (`RSA PRIVATE KEY` or an RSA `PRIVATE KEY`).
///
/// # Errors
/// Not exactly one key, or not RSA.
pub fn key_from_pem(pem: &[u8], what: &str) -> Result<rsa::PrivateKey, CertError> {
    let (kind, der) = single_section(
        pem,
        what,
        "private key",
        &[SectionKind::RsaPrivateKey, SectionKind::PrivateKey],
    )?;
    let parsed = if kind == SectionKind::RsaPrivateKey {
        rsa::PrivateKey::from_pkcs1_der(&der).map_err(|e| e.to_string())
    } else {
        rsa::PrivateKey::from_pkcs8_der(&der).map_err(|e| e.to_string())
    };
    parsed.map_err(|problem| CertError::Pem {
        what: what.to_owned(),
        problem: format!("not an RSA private key: {problem}"),
    })
}

/// A PEM block with LF line endings and 64-column base64, as Go's `pem.Encode` writes.
fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

// === CA ===

/// A new CA: certificate and PKCS#1 key, both PEM.
#[derive(Debug, Clone)]
pub struct NewCa {
    /// The self-signed certificate (`CERTIFICATE`).
    pub cert_pem: String,
    /// Its key (`RSA PRIVATE KEY`).
    pub key_pem: String,
}

fn unix_serial(now: OffsetDateTime) -> SerialNumber {
    let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let bytes = secs.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    SerialNumber::from_slice(&bytes[skip..])
}

/// Go's SubjectKeyIdentifier: SHA-1 of the subjectPublicKey BIT STRING contents.
fn key_identifier(public_key_bits: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, public_key_bits)
        .as_ref()
        .to_vec()
}

fn extension(oid: &[u64], critical: bool, content: Vec<u8>) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(oid, content);
    ext.set_criticality(critical);
    ext
}

/// KeyUsage BIT STRING values, encoded as Go encodes them.
const KU_DIGITAL_SIGNATURE: &[u8] = &[0x03, 0x02, 0x07, 0x80];
const KU_DIGITAL_SIGNATURE_CERT_SIGN: &[u8] = &[0x03, 0x02, 0x02, 0x84];
/// ExtKeyUsage: clientAuth, serverAuth (Go's order).
const EKU_CLIENT_SERVER: &[u8] = &[
    0x30, 0x14, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02, 0x06, 0x08, 0x2b, 0x06,
    0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
];
/// BasicConstraints cA TRUE, no path length.
const BC_CA: &[u8] = &[0x30, 0x03, 0x01, 0x01, 0xff];

/// `cert-init`: a new self-signed CA with an RSA key of `bits`.
///
/// # Errors
/// An empty common name, key generation or signing failed.
pub fn create_ca(
    common_name: &str,
    bits: u32,
    not_before: Option<OffsetDateTime>,
    not_after: Option<OffsetDateTime>,
) -> Result<NewCa, CertError> {
    let dn = common_name_dn(common_name)?;
    let bits = if bits == 0 { DEFAULT_BITS } else { bits };
    let key = generate_key(bits)?;
    let signer = Signer::new(&key)?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.serial_number = Some(unix_serial(now));
    params.not_before = not_before.unwrap_or(now);
    params.not_after = not_after.unwrap_or_else(|| add_years(now, 10));
    params.custom_extensions = vec![
        extension(KEY_USAGE_OID, true, KU_DIGITAL_SIGNATURE_CERT_SIGN.to_vec()),
        extension(EXT_KEY_USAGE_OID, false, EKU_CLIENT_SERVER.to_vec()),
        extension(BASIC_CONSTRAINTS_OID, true, BC_CA.to_vec()),
        extension(
            SUBJECT_KEY_ID_OID,
            false,
            tlv(0x04, &key_identifier(signer.der_bytes())),
        ),
    ];
    let cert = params.self_signed(&signer).map_err(CertError::Build)?;
    Ok(NewCa {
        cert_pem: pem_block("CERTIFICATE", cert.der()),
        key_pem: key_to_pem(&key)?,
    })
}

/// `now` plus `years` calendar years (Go's `AddDate(years, 0, 0)`; 29 February moves to
/// 1 March).
fn add_years(now: OffsetDateTime, years: i32) -> OffsetDateTime {
    let date = now.date();
    let year = date.year() + years;
    let target = time::Date::from_calendar_date(year, date.month(), date.day())
        .or_else(|_| time::Date::from_calendar_date(year, time::Month::March, 1));
    match target {
        Ok(target) => now.replace_date(target),
        Err(_) => now + time::Duration::days(365 * i64::from(years)),
    }
}

// === requests ===

/// `cert-makereq`: a PEM certificate request for `key` with `CN=<common_name>` and `names` in a
/// Receptor SubjectAltName. With no names at all the request has no SubjectAltName (Go writes an
/// empty one; neither can be signed).
///
/// # Errors
/// An empty common name or signing failed.
pub fn create_request(
    common_name: &str,
    names: &Names,
    key: &rsa::PrivateKey,
) -> Result<String, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_dn(common_name)?;
    if !names.is_empty() {
        params.custom_extensions = vec![extension(SAN_OID, false, san_extension_value(names))];
    }
    let signer = Signer::new(key)?;
    let csr = params
        .serialize_request(&signer)
        .map_err(CertError::Build)?;
    Ok(pem_block("CERTIFICATE REQUEST", csr.der()))
}

/// What a certificate request asks for (shown before `cert-signreq` signs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    /// The subject, as Go prints it (`CN=node1`).
    pub subject: String,
    /// `RSA (2048 bits)`, `ECDSA`, ...
    pub key_algorithm: String,
    /// `SHA256-RSA`, ...
    pub signature_algorithm: String,
    /// The names of its SubjectAltName.
    pub names: Names,
}

impl RequestSummary {
    /// The block Go prints before `Sign certificate (yes/no)?`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Requested certificate:");
        let _ = writeln!(out, "  Subject: {}", self.subject);
        let _ = writeln!(out, "  Encryption Algorithm: {}", self.key_algorithm);
        let _ = writeln!(out, "  Signature Algorithm: {}", self.signature_algorithm);
        let _ = writeln!(out, "  Names:");
        for dns in &self.names.dns_names {
            let _ = writeln!(out, "    DNS Name: {dns}");
        }
        for ip in &self.names.ip_addresses {
            let _ = writeln!(out, "    IP Address: {ip}");
        }
        for node in &self.names.node_ids {
            let _ = writeln!(out, "    Receptor Node ID: {node}");
        }
        out
    }
}

/// A parsed request, checked.
struct Request {
    der: Vec<u8>,
}

impl Request {
    fn from_pem(pem: &[u8], what: &str) -> Result<Self, CertError> {
        let (_, der) = single_section(pem, what, "certificate request", &[SectionKind::Csr])?;
        let request = Self { der };
        request.with(|_| Ok(()))?;
        Ok(request)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&X509CertificationRequest<'_>) -> Result<T, CertError>,
    ) -> Result<T, CertError> {
        let (_, csr) = X509CertificationRequest::from_der(&self.der)
            .map_err(|e| parse_error("certificate request", e))?;
        f(&csr)
    }
}

/// The raw SubjectAltName extension of a request, if it has one.
fn request_san<'a>(csr: &'a X509CertificationRequest<'_>) -> Option<&'a X509Extension<'a>> {
    csr.certification_request_info
        .iter_attributes()
        .find_map(|attr| match attr.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(req) => req
                .extensions
                .iter()
                .find(|ext| ext.oid.as_bytes() == SAN_OID_DER),
            _ => None,
        })
}

fn summarize(csr: &X509CertificationRequest<'_>) -> RequestSummary {
    let info = &csr.certification_request_info;
    let names = match request_san(csr).map(X509Extension::parsed_extension) {
        Some(ParsedExtension::SubjectAlternativeName(san)) => names_from_san(&san.general_names),
        _ => Names::default(),
    };
    let key_algorithm = match info.subject_pki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            let modulus = rsa.modulus.iter().skip_while(|b| **b == 0).count();
            format!("RSA ({} bits)", modulus * 8)
        }
        Ok(x509_parser::public_key::PublicKey::EC(_)) => "ECDSA".to_owned(),
        Ok(_) | Err(_) => info.subject_pki.algorithm.algorithm.to_id_string(),
    };
    let signature_algorithm = match csr.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.11" => "SHA256-RSA".to_owned(),
        "1.2.840.113549.1.1.12" => "SHA384-RSA".to_owned(),
        "1.2.840.113549.1.1.13" => "SHA512-RSA".to_owned(),
        "1.2.840.10045.4.3.2" => "ECDSA-SHA256".to_owned(),
        "1.2.840.10045.4.3.3" => "ECDSA-SHA384".to_owned(),
        other => other.to_owned(),
    };
    RequestSummary {
        subject: go_name_string(&info.subject),
        key_algorithm,
        signature_algorithm,
        names,
    }
}

/// A name the way Go's `pkix.Name.String` prints it: RFC 2253 order (last RDN first).
fn go_name_string(name: &X509Name<'_>) -> String {
    let mut parts: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = match attr.attr_type().to_id_string().as_str() {
                        "2.5.4.3" => "CN".to_owned(),
                        "2.5.4.6" => "C".to_owned(),
                        "2.5.4.7" => "L".to_owned(),
                        "2.5.4.8" => "ST".to_owned(),
                        "2.5.4.10" => "O".to_owned(),
                        "2.5.4.11" => "OU".to_owned(),
                        "2.5.4.9" => "STREET".to_owned(),
                        "2.5.4.17" => "POSTALCODE".to_owned(),
                        "2.5.4.5" => "SERIALNUMBER".to_owned(),
                        other => other.to_owned(),
                    };
                    let value = attr.as_str().map(str::to_owned).unwrap_or_default();
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

/// Checks the request's self-signature: RSA PKCS#1 v1.5 of any key size with the `rsa` crate
/// (ring verifies only 2048 bits and up), anything else through x509-parser.
fn verify_request_signature(csr: &X509CertificationRequest<'_>) -> Result<(), CertError> {
    let info = &csr.certification_request_info;
    let signature = csr.signature_value.data.as_ref();
    let message = info.raw;
    let rsa_key = || {
        use rsa::pkcs1::DecodeRsaPublicKey;
        rsa::PublicKey::from_pkcs1_der(info.subject_pki.subject_public_key.data.as_ref())
            .map_err(|_| CertError::BadRequestSignature)
    };
    let verified = match csr.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.11" => rsa_key()?.verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(message),
            signature,
        ),
        "1.2.840.113549.1.1.12" => rsa_key()?.verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
            &sha2::Sha384::digest(message),
            signature,
        ),
        "1.2.840.113549.1.1.13" => rsa_key()?.verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            &sha2::Sha512::digest(message),
            signature,
        ),
        _ => {
            return csr
                .verify_signature()
                .map_err(|_| CertError::BadRequestSignature);
        }
    };
    verified.map_err(|_| CertError::BadRequestSignature)
}

/// What a request asks for.
///
/// # Errors
/// The PEM does not hold exactly one parseable request.
pub fn inspect_request(pem: &[u8], what: &str) -> Result<RequestSummary, CertError> {
    Request::from_pem(pem, what)?.with(|csr| Ok(summarize(csr)))
}

/// `cert-signreq` without the prompt: signs the request in `request_pem` with the CA in
/// `ca_cert_pem` / `ca_key_pem` and returns the certificate as PEM.
///
/// # Errors
/// Unreadable inputs, a bad request signature, a request without names, or signing failed.
pub fn sign_request(
    request_pem: &[u8],
    ca_cert_pem: &[u8],
    ca_key_pem: &[u8],
    not_before: Option<OffsetDateTime>,
    not_after: Option<OffsetDateTime>,
) -> Result<String, CertError> {
    let (_, ca_der) = single_section(
        ca_cert_pem,
        "CA certificate",
        "certificate",
        &[SectionKind::Certificate],
    )?;
    let ca_key = key_from_pem(ca_key_pem, "CA key")?;
    let request = Request::from_pem(request_pem, "certificate request")?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|e| parse_error("CA certificate", e))?;
    let signer = Signer::new(&ca_key)?;
    let now = OffsetDateTime::now_utc();

    let der = request.with(|csr| {
        verify_request_signature(csr)?;
        if summarize(csr).names.is_empty() {
            return Err(CertError::NoNames);
        }
        let info = &csr.certification_request_info;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
            .map_err(|e| parse_error("request public key", e))?;

        let mut params = CertificateParams::default();
        params.distinguished_name = dn_from_x509(&info.subject)?;
        params.serial_number = Some(unix_serial(now));
        params.not_before = not_before.unwrap_or(now);
        params.not_after = not_after.unwrap_or_else(|| add_years(now, 1));
        let mut extensions = vec![
            extension(KEY_USAGE_OID, true, KU_DIGITAL_SIGNATURE.to_vec()),
            extension(EXT_KEY_USAGE_OID, false, EKU_CLIENT_SERVER.to_vec()),
        ];
        let ca_key_id = ca
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        if let Some(id) = ca_key_id {
            extensions.push(extension(
                AUTHORITY_KEY_ID_OID,
                false,
                tlv(0x30, &tlv(0x80, &id)),
            ));
        }
        if let Some(san) = request_san(csr) {
            extensions.push(extension(SAN_OID, san.critical, san.value.to_vec()));
        }
        params.custom_extensions = extensions;

        let mut issuer_params = CertificateParams::default();
        issuer_params.distinguished_name = dn_from_x509(ca.subject())?;
        let issuer = Issuer::new(issuer_params, &signer);
        let cert = params
            .signed_by(&public_key, &issuer)
            .map_err(CertError::Build)?;
        Ok(cert.der().to_vec())
    })?;

    // Chains are matched on the exact bytes of issuer and subject.
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| parse_error("certificate", e))?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(CertError::Issuer(
            "its string types or attribute order did not survive".to_owned(),
        ));
    }
    Ok(pem_block("CERTIFICATE", &der))
}

/// The leaf certificate of a PEM file as DER (for callers that check what they made).
///
/// # Errors
/// The PEM holds no certificate.
pub fn first_certificate(pem: &[u8]) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem).map_err(|e| CertError::Pem {
        what: "certificate".to_owned(),
        problem: e.to_string(),
    })
}

// === files ===

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` with mode 0600 (also when the file already existed).
///
/// # Errors
/// The file cannot be created or written.
pub fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let wrap = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(wrap)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(wrap)?;
    file.write_all(contents.as_bytes()).map_err(wrap)?;
    file.sync_all().map_err(wrap)
}

fn run_init(config: &CertInitConfig) -> Result<(), CertError> {
    let ca = create_ca(
        &config.common_name,
        config.bits,
        config.not_before,
        config.not_after,
    )?;
    write_private(&config.out_cert, &ca.cert_pem)?;
    write_private(&config.out_key, &ca.key_pem)
}

fn run_make_req(config: &CertMakeReqConfig) -> Result<(), CertError> {
    let names = Names {
        dns_names: config.dns_names.clone(),
        ip_addresses: config.ip_addresses.clone(),
        node_ids: config.node_ids.clone(),
    };
    let (key, new_key_path) = match &config.key {
        CertReqKey::Existing(path) => (
            key_from_pem(&read(path)?, &path.display().to_string())?,
            None,
        ),
        CertReqKey::New { path, bits } => (generate_key(*bits)?, Some(path)),
    };
    let request = create_request(&config.common_name, &names, &key)?;
    write_private(&config.out_req, &request)?;
    if let Some(path) = new_key_path {
        write_private(path, &key_to_pem(&key)?)?;
    }
    Ok(())
}

fn run_sign_req(
    config: &CertSignReqConfig,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<(), CertError> {
    let request = read(&config.req)?;
    let ca_cert = read(&config.ca_cert)?;
    let ca_key = read(&config.ca_key)?;
    let summary = inspect_request(&request, &config.req.display().to_string())?;
    if summary.names.is_empty() {
        return Err(CertError::NoNames);
    }
    if !config.verify {
        let _ = write!(output, "{}Sign certificate (yes/no)? ", summary.render());
        let _ = output.flush();
        let mut answer = String::new();
        input.read_line(&mut answer).map_err(CertError::Prompt)?;
        let answer = answer.trim().to_lowercase();
        if answer != "y" && answer != "yes" {
            return Err(CertError::Declined);
        }
    }
    let cert = sign_request(
        &request,
        &ca_cert,
        &ca_key,
        config.not_before,
        config.not_after,
    )?;
    write_private(&config.out_cert, &cert)
}

/// Runs a certificate utility; `input`/`output` carry the `cert-signreq` prompt.
///
/// # Errors
/// See [`CertError`].
pub fn run(
    command: &CertCommand,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<(), CertError> {
    match command {
        CertCommand::Init(config) => run_init(config),
        CertCommand::MakeReq(config) => run_make_req(config),
        CertCommand::SignReq(config) => run_sign_req(config, input, output),
    }
}

#[cfg(test)]
mod tests;
