//! Our cert tooling against spec/wire.md §8.4 / §13.9 and the Go-made certificates in
//! shared/vectors/go-certs.

use std::sync::Arc;
use std::time::Duration;

use receptor_mesh::tls::rustls::client::danger::ServerCertVerifier;
use receptor_mesh::tls::rustls::pki_types::{ServerName, UnixTime};
use receptor_mesh::tls::rustls::{RootCertStore, client::WebPkiServerVerifier};
use receptor_mesh::tls::{Pins, ReceptorServerVerifier, provider, receptor_names};
use time::macros::datetime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

use super::*;

const GO_CERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/go-certs/"
);

fn go_file(name: &str) -> Vec<u8> {
    let path = format!("{GO_CERTS}{name}");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{path} is missing ({e}); the shared/ directory must sit beside the repo")
    })
}

fn der(pem: &[u8]) -> Vec<u8> {
    first_certificate(pem).expect("a certificate").to_vec()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der)
        .expect("x509-parser parses it")
        .1
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// (OID, critical) of every extension, in order.
fn extension_layout(cert: &X509Certificate<'_>) -> Vec<(String, bool)> {
    cert.extensions()
        .iter()
        .map(|e| (e.oid.to_id_string(), e.critical))
        .collect()
}

fn node_names(node: &str) -> Names {
    Names {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
        node_ids: vec![node.into()],
    }
}

fn roots(ca_pem: &[u8]) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    store
        .add(first_certificate(ca_pem).expect("ca"))
        .expect("trust anchor");
    Arc::new(store)
}

/// Verifies `leaf` against `ca` both ways a Receptor node does: DNS mode for `localhost` and
/// receptor mode for `node`.
fn verify_both_modes(ca_pem: &[u8], leaf_pem: &[u8], node: &str) {
    let leaf = first_certificate(leaf_pem).expect("leaf");
    let now = UnixTime::now();
    let dns = WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("verifier");
    let localhost = ServerName::try_from("localhost").expect("name");
    dns.verify_server_cert(&leaf, &[], &localhost, &[], now)
        .expect("chain + DNS name");
    let receptor = ReceptorServerVerifier::new(roots(ca_pem), Pins::default(), node);
    receptor
        .verify_server_cert(&leaf, &[], &localhost, &[], now)
        .expect("chain + node ID");
    let other = ReceptorServerVerifier::new(roots(ca_pem), Pins::default(), "someone-else");
    other
        .verify_server_cert(&leaf, &[], &localhost, &[], now)
        .expect_err("wrong node ID");
}

#[test]
fn san_bytes_are_those_of_spec_13_9() {
    let value = san_extension_value(&node_names("foo"));
    assert_eq!(
        hex(&value),
        "302582096c6f63616c686f737487047f000001a01206092b0601040192081301a0050c03666f6f"
    );
    // And the Go certificate's SAN is built the same way.
    let go = go_file("node-a.crt");
    let go_der = der(&go);
    let go_cert = parse(&go_der);
    let go_san = go_cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.17")
        .expect("SAN");
    assert_eq!(go_san.value, san_extension_value(&node_names("node-a")));
    // IPv6 keeps 16 bytes, IPv4-mapped IPv6 becomes 4 (Go's To4).
    let v6 = Names {
        ip_addresses: vec![
            "::1".parse().expect("ip"),
            "::ffff:10.0.0.1".parse().expect("ip"),
        ],
        ..Names::default()
    };
    assert_eq!(
        hex(&san_extension_value(&v6)),
        "301887100000000000000000000000000000000187040a000001"
    );
}

#[test]
fn init_makereq_signreq_make_a_go_shaped_chain() {
    let before = OffsetDateTime::now_utc().unix_timestamp();
    let ca = create_ca("Receptor Test CA", 2048, None, None).expect("cert-init");
    assert!(ca.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    let key = generate_key(2048).expect("key");
    let names = Names {
        dns_names: vec!["localhost".into(), "node1.example".into()],
        ip_addresses: vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")],
        node_ids: vec!["node1".into()],
    };
    let csr = create_request("node1", &names, &key).expect("cert-makereq");
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    let summary = inspect_request(csr.as_bytes(), "csr").expect("inspect");
    assert_eq!(summary.subject, "CN=node1");
    assert_eq!(summary.key_algorithm, "RSA (2048 bits)");
    assert_eq!(summary.signature_algorithm, "SHA256-RSA");
    assert_eq!(summary.names, names);
    let cert = sign_request(
        csr.as_bytes(),
        ca.cert_pem.as_bytes(),
        ca.key_pem.as_bytes(),
        None,
        None,
    )
    .expect("cert-signreq");
    let after = OffsetDateTime::now_utc().unix_timestamp();

    // The CA, next to Go's.
    let ca_der = der(ca.cert_pem.as_bytes());
    let ca_cert = parse(&ca_der);
    let go_ca_pem = go_file("ca.crt");
    let go_ca_der = der(&go_ca_pem);
    let go_ca = parse(&go_ca_der);
    assert_eq!(extension_layout(&ca_cert), extension_layout(&go_ca));
    assert_eq!(
        ca_cert.subject().as_raw(),
        go_ca.subject().as_raw(),
        "CN as PrintableString"
    );
    assert_eq!(ca_cert.issuer().as_raw(), ca_cert.subject().as_raw());
    assert!(ca_cert.is_ca());
    let ku = ca_cert.key_usage().expect("ku").expect("ku present").value;
    assert!(ku.digital_signature() && ku.key_cert_sign() && !ku.crl_sign());
    let eku = ca_cert
        .extended_key_usage()
        .expect("eku")
        .expect("eku present")
        .value;
    assert!(eku.client_auth && eku.server_auth);
    let serial = ca_cert.tbs_certificate.serial.to_u64_digits();
    let serial = i64::try_from(serial[0]).expect("serial");
    assert!(
        (before..=after).contains(&serial),
        "serial is the unix time"
    );
    let validity = ca_cert.validity();
    let years = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
    assert!((3651..=3653).contains(&years), "10 years: {years} days");
    assert_eq!(
        ca_cert.public_key().parsed().map(|k| k.key_size()).ok(),
        Some(2048)
    );

    // The leaf, next to Go's.
    let leaf_der = der(cert.as_bytes());
    let leaf = parse(&leaf_der);
    let go_leaf_pem = go_file("node-a.crt");
    let go_leaf_der = der(&go_leaf_pem);
    let go_leaf = parse(&go_leaf_der);
    assert_eq!(extension_layout(&leaf), extension_layout(&go_leaf));
    assert_eq!(leaf.issuer().as_raw(), ca_cert.subject().as_raw());
    assert_eq!(leaf.subject().to_string(), "CN=node1");
    assert!(!leaf.is_ca());
    let ku = leaf.key_usage().expect("ku").expect("ku present");
    assert!(ku.critical);
    assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());
    let eku = leaf
        .extended_key_usage()
        .expect("eku")
        .expect("eku present")
        .value;
    assert!(eku.client_auth && eku.server_auth);
    let ski = ca_cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    assert!(ski.is_some());
    assert_eq!(aki, ski, "AKI is the CA's SKI");
    let validity = leaf.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
    assert!((365..=366).contains(&days), "1 year: {days} days");
    // The request's SAN went in verbatim, laid out as §13.9.
    let san = leaf
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.17")
        .expect("SAN");
    assert!(!san.critical);
    assert_eq!(san.value, san_extension_value(&names));
    assert_eq!(receptor_names(&leaf_der), ["node1"]);

    verify_both_modes(ca.cert_pem.as_bytes(), cert.as_bytes(), "node1");
}

#[test]
fn go_and_our_tooling_interoperate() {
    // A Go-made request signed by our CA.
    let ca = create_ca("Our CA", 2048, None, None).expect("cert-init");
    let go_csr = go_file("node-b.csr");
    let summary = inspect_request(&go_csr, "node-b.csr").expect("Go request");
    assert_eq!(summary.names, node_names("node-b"));
    let cert = sign_request(
        &go_csr,
        ca.cert_pem.as_bytes(),
        ca.key_pem.as_bytes(),
        None,
        None,
    )
    .expect("sign a Go request");
    verify_both_modes(ca.cert_pem.as_bytes(), cert.as_bytes(), "node-b");

    // Our request signed with Go's CA key (a PKCS#1 file) carries the Go CA's subject bytes.
    let key = generate_key(2048).expect("key");
    let csr = create_request("node-c", &node_names("node-c"), &key).expect("request");
    let go_ca = go_file("ca.crt");
    let cert = sign_request(csr.as_bytes(), &go_ca, &go_file("ca.key"), None, None)
        .expect("signed by the Go CA");
    verify_both_modes(&go_ca, cert.as_bytes(), "node-c");

    // Our request looks like Go's: same subject encoding and attribute layout.
    let ours = first_der(csr.as_bytes());
    let theirs = first_der(&go_file("node-a.csr"));
    let (_, ours) = X509CertificationRequest::from_der(&ours).expect("ours");
    let (_, theirs) = X509CertificationRequest::from_der(&theirs).expect("theirs");
    let oids = |csr: &X509CertificationRequest<'_>| -> Vec<String> {
        csr.certification_request_info
            .iter_attributes()
            .map(|a| a.oid.to_id_string())
            .collect()
    };
    assert_eq!(oids(&ours), oids(&theirs));
    assert_eq!(
        ours.signature_algorithm.algorithm,
        theirs.signature_algorithm.algorithm
    );
}

fn first_der(pem: &[u8]) -> Vec<u8> {
    pem_sections(pem, "test").expect("pem")[0].1.clone()
}

#[test]
fn validity_overrides_and_expired_certificates() {
    let not_before = datetime!(2020-01-01 0:00 UTC);
    let not_after = datetime!(2021-01-01 0:00 UTC);
    let ca = create_ca("Old CA", 2048, Some(not_before), None).expect("ca");
    let ca_der = der(ca.cert_pem.as_bytes());
    let ca_cert = parse(&ca_der);
    assert_eq!(
        ca_cert.validity().not_before.timestamp(),
        not_before.unix_timestamp()
    );
    let key = generate_key(2048).expect("key");
    let csr = create_request("old", &node_names("old"), &key).expect("csr");
    let cert = sign_request(
        csr.as_bytes(),
        ca.cert_pem.as_bytes(),
        ca.key_pem.as_bytes(),
        Some(not_before),
        Some(not_after),
    )
    .expect("sign");
    let leaf_der = der(cert.as_bytes());
    let leaf = parse(&leaf_der);
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        not_after.unix_timestamp()
    );
    let verifier =
        ReceptorServerVerifier::new(roots(ca.cert_pem.as_bytes()), Pins::default(), "old");
    let name = ServerName::try_from("x").expect("name");
    let error = verifier
        .verify_server_cert(
            &first_certificate(cert.as_bytes()).expect("leaf"),
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .expect_err("expired");
    assert!(
        receptor_mesh::tls::describe(&error).contains("expired"),
        "{error}"
    );
    // Still valid at a time inside its validity.
    let in_2020 = UnixTime::since_unix_epoch(Duration::from_secs(1_590_000_000));
    verifier
        .verify_server_cert(
            &first_certificate(cert.as_bytes()).expect("leaf"),
            &[],
            &name,
            &[],
            in_2020,
        )
        .expect("valid in 2020");
}

#[test]
fn key_sizes_outside_rings_range_still_work() {
    // ring signs only 2048..=4096-bit RSA keys; 1024 goes through the rsa crate.
    let ca = create_ca("Small CA", 1024, None, None).expect("1024-bit CA");
    let key = generate_key(1024).expect("key");
    let csr = create_request("small", &node_names("small"), &key).expect("csr");
    let cert = sign_request(
        csr.as_bytes(),
        ca.cert_pem.as_bytes(),
        ca.key_pem.as_bytes(),
        None,
        None,
    )
    .expect("sign");
    let leaf_der = der(cert.as_bytes());
    assert_eq!(receptor_names(&leaf_der), ["small"]);
    // Certificate signature checks out (x509-parser verifies RSA-SHA256 from 1024 bits? use rsa).
    let ca_der = der(ca.cert_pem.as_bytes());
    let ca_cert = parse(&ca_der);
    let leaf = parse(&leaf_der);
    let ca_key = {
        use rsa::pkcs1::DecodeRsaPublicKey;
        rsa::PublicKey::from_pkcs1_der(ca_cert.public_key().subject_public_key.data.as_ref())
            .expect("ca public key")
    };
    ca_key
        .verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(leaf.tbs_certificate.as_ref()),
            leaf.signature_value.data.as_ref(),
        )
        .expect("signature by the CA");
    assert!(matches!(
        create_ca("Tiny CA", 512, None, None),
        Err(CertError::KeyGeneration { bits: 512, .. })
    ));
}

#[test]
fn requests_without_names_or_with_bad_signatures_are_refused() {
    let ca = create_ca("CA", 2048, None, None).expect("ca");
    let key = generate_key(2048).expect("key");
    let csr = create_request("nameless", &Names::default(), &key).expect("csr");
    assert!(matches!(
        sign_request(
            csr.as_bytes(),
            ca.cert_pem.as_bytes(),
            ca.key_pem.as_bytes(),
            None,
            None
        ),
        Err(CertError::NoNames)
    ));
    assert!(matches!(
        create_ca("", 2048, None, None),
        Err(CertError::NoCommonName)
    ));

    // Flip a byte of the subject: the self-signature no longer verifies.
    let csr = create_request("node1", &node_names("node1"), &key).expect("csr");
    let mut der = first_der(csr.as_bytes());
    let at = der
        .windows(5)
        .position(|w| w == b"node1")
        .expect("CN in the request");
    der[at] = b'm';
    let tampered = pem_block("CERTIFICATE REQUEST", &der);
    assert!(matches!(
        sign_request(
            tampered.as_bytes(),
            ca.cert_pem.as_bytes(),
            ca.key_pem.as_bytes(),
            None,
            None
        ),
        Err(CertError::BadRequestSignature)
    ));
    // Wrong kinds of files.
    assert!(matches!(
        sign_request(
            ca.cert_pem.as_bytes(),
            ca.cert_pem.as_bytes(),
            ca.key_pem.as_bytes(),
            None,
            None
        ),
        Err(CertError::Pem { .. })
    ));
    assert!(matches!(
        sign_request(
            csr.as_bytes(),
            ca.key_pem.as_bytes(),
            ca.key_pem.as_bytes(),
            None,
            None
        ),
        Err(CertError::Pem { .. })
    ));
}

#[test]
fn run_writes_private_files_and_prompts() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let mut no_input: &[u8] = b"";
    let mut out = Vec::new();
    run(
        &CertCommand::Init(CertInitConfig {
            common_name: "Run CA".into(),
            bits: 2048,
            not_before: None,
            not_after: None,
            out_cert: path("ca.crt"),
            out_key: path("ca.key"),
        }),
        &mut no_input,
        &mut out,
    )?;
    run(
        &CertCommand::MakeReq(CertMakeReqConfig {
            common_name: "node1".into(),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse()?],
            node_ids: vec!["node1".into()],
            out_req: path("node1.csr"),
            key: CertReqKey::New {
                path: path("node1.key"),
                bits: 2048,
            },
        }),
        &mut no_input,
        &mut out,
    )?;
    // A second request for the existing key.
    run(
        &CertCommand::MakeReq(CertMakeReqConfig {
            common_name: "node1".into(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            node_ids: vec!["node1".into()],
            out_req: path("again.csr"),
            key: CertReqKey::Existing(path("node1.key")),
        }),
        &mut no_input,
        &mut out,
    )?;
    let sign = |verify: bool, out_cert: &str| {
        CertCommand::SignReq(CertSignReqConfig {
            req: path("node1.csr"),
            ca_cert: path("ca.crt"),
            ca_key: path("ca.key"),
            not_before: None,
            not_after: None,
            out_cert: path(out_cert),
            verify,
        })
    };
    let mut no: &[u8] = b"no\n";
    assert!(matches!(
        run(&sign(false, "declined.crt"), &mut no, &mut out),
        Err(CertError::Declined)
    ));
    assert!(!path("declined.crt").exists());
    let prompt = String::from_utf8(std::mem::take(&mut out))?;
    assert_eq!(
        prompt,
        "Requested certificate:\n  Subject: CN=node1\n  Encryption Algorithm: RSA (2048 bits)\n  \
         Signature Algorithm: SHA256-RSA\n  Names:\n    DNS Name: localhost\n    IP Address: \
         127.0.0.1\n    Receptor Node ID: node1\nSign certificate (yes/no)? "
    );
    let mut yes: &[u8] = b"YES\n";
    run(&sign(false, "node1.crt"), &mut yes, &mut out)?;
    run(&sign(true, "quiet.crt"), &mut no_input, &mut out)?;
    for file in [
        "ca.crt",
        "ca.key",
        "node1.csr",
        "node1.key",
        "again.csr",
        "node1.crt",
        "quiet.crt",
    ] {
        let mode = std::fs::metadata(path(file))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let ca = std::fs::read(path("ca.crt"))?;
    let cert = std::fs::read(path("node1.crt"))?;
    verify_both_modes(&ca, &cert, "node1");
    assert!(
        std::fs::read_to_string(path("node1.key"))?.starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    Ok(())
}
