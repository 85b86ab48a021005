//! Go-made certificates (shared/vectors/go-certs) against our parser and verifiers. Times are
//! fixed so the results do not depend on the day the tests run.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;

use super::*;

const GO_CERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/go-certs/"
);

/// 2027-01-01T00:00:00Z: inside the validity of every Go-made certificate.
fn in_validity() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_798_761_600))
}

/// 2028-01-01T00:00:00Z: the node certificates (one year) have expired, the CA has not.
fn after_expiry() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_830_297_600))
}

fn cert(name: &str) -> CertificateDer<'static> {
    let path = format!("{GO_CERTS}{name}");
    CertificateDer::from_pem_file(&path).unwrap_or_else(|e| {
        panic!("{path} is missing or bad ({e}); the shared/ directory must sit beside the repo")
    })
}

fn key(name: &str) -> PrivateKeyDer<'static> {
    let path = format!("{GO_CERTS}{name}");
    PrivateKeyDer::from_pem_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn roots(anchors: &[&str]) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    for name in anchors {
        store.add(cert(name)).expect("usable trust anchor");
    }
    Arc::new(store)
}

fn identity(node: &str) -> Identity {
    Identity {
        chain: vec![cert(&format!("{node}.crt"))],
        key: key(&format!("{node}.key")),
    }
}

fn client_settings(anchors: &[&str]) -> ClientSettings {
    ClientSettings {
        identity: None,
        roots: roots(anchors),
        insecure_skip_verify: false,
        pinned_server_certs: Pins::default(),
        min_tls13: false,
    }
}

fn dns_verifier(anchors: &[&str], pins: Pins) -> DnsServerVerifier {
    let inner = WebPkiServerVerifier::builder_with_provider(roots(anchors), provider())
        .build()
        .expect("verifier");
    DnsServerVerifier { inner, pins }
}

fn verify_server(
    verifier: &dyn ServerCertVerifier,
    leaf: &str,
    name: &str,
    now: UnixTime,
) -> Result<ServerCertVerified, rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    verifier.verify_server_cert(&cert(leaf), &[], &name, &[], now)
}

fn peer_cert_error(error: &rustls::Error) -> Option<&PeerCertError> {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<PeerCertError>()
        }
        _ => None,
    }
}

#[test]
fn go_certs_carry_their_node_ids() {
    assert_eq!(receptor_names(&cert("node-a.crt")), ["node-a"]);
    assert_eq!(receptor_names(&cert("node-b.crt")), ["node-b"]);
    assert!(receptor_names(&cert("ca.crt")).is_empty());
    assert!(receptor_names(b"not a certificate").is_empty());
}

#[test]
fn go_chain_verifies_in_dns_mode() {
    let verifier = dns_verifier(&["ca.crt"], Pins::default());
    for node in ["node-a.crt", "node-b.crt"] {
        verify_server(&verifier, node, "localhost", in_validity()).expect("localhost");
        verify_server(&verifier, node, "127.0.0.1", in_validity()).expect("127.0.0.1");
    }
    let wrong_name = verify_server(&verifier, "node-a.crt", "example.com", in_validity())
        .expect_err("the certificate names localhost only");
    assert!(
        describe(&wrong_name).contains("not valid for name"),
        "{wrong_name}"
    );
    // Node IDs are not DNS names in mode (a).
    verify_server(&verifier, "node-a.crt", "node-a", in_validity())
        .expect_err("node IDs are not checked as DNS names");
}

#[test]
fn go_chain_expired_and_unknown_ca_are_named() {
    let verifier = dns_verifier(&["ca.crt"], Pins::default());
    let expired = verify_server(&verifier, "node-a.crt", "localhost", after_expiry())
        .expect_err("expired in 2028");
    assert!(
        describe(&expired).contains("certificate expired"),
        "{expired}"
    );

    // A trust store without the issuing CA.
    let verifier = dns_verifier(&["node-b.crt"], Pins::default());
    let unknown =
        verify_server(&verifier, "node-a.crt", "localhost", in_validity()).expect_err("wrong CA");
    assert!(
        describe(&unknown).contains("unknown authority"),
        "{unknown}"
    );
}

#[test]
fn receptor_mode_checks_the_node_id() {
    for (leaf, node) in [("node-a.crt", "node-a"), ("node-b.crt", "node-b")] {
        let verifier = ReceptorServerVerifier::new(roots(&["ca.crt"]), Pins::default(), node);
        // The DNS name is not checked: any server name passes.
        verify_server(&verifier, leaf, "netceptor", in_validity()).expect("right node ID");
    }
    let verifier = ReceptorServerVerifier::new(roots(&["ca.crt"]), Pins::default(), "node-b");
    let error = verify_server(&verifier, "node-a.crt", "netceptor", in_validity())
        .expect_err("node-a's certificate does not name node-b");
    assert_eq!(
        peer_cert_error(&error),
        Some(&PeerCertError::WrongNodeId {
            expected: "node-b".into(),
            found: vec!["node-a".into()],
        })
    );
    assert!(
        describe(&error).contains("valid for Receptor node ID node-a, not node-b"),
        "{}",
        describe(&error)
    );
    // Chain errors still come first.
    let verifier = ReceptorServerVerifier::new(roots(&["node-b.crt"]), Pins::default(), "node-a");
    let error = verify_server(&verifier, "node-a.crt", "netceptor", in_validity())
        .expect_err("untrusted CA");
    assert!(describe(&error).contains("unknown authority"), "{error}");
}

#[test]
fn receptor_mode_client_verifier_checks_the_node_id() {
    let now = in_validity();
    let required = ClientAuth::Required(roots(&["ca.crt"]));
    let verifier = client_verifier(&required, &Pins::default(), Some("node-b")).expect("verifier");
    assert!(verifier.client_auth_mandatory());
    verifier
        .verify_client_cert(&cert("node-b.crt"), &[], now)
        .expect("node-b is node-b");
    let error = verifier
        .verify_client_cert(&cert("node-a.crt"), &[], now)
        .expect_err("node-a is not node-b");
    assert!(matches!(
        peer_cert_error(&error),
        Some(PeerCertError::WrongNodeId { .. })
    ));
    // Mode (b): any client certificate of the CA, no node-ID check.
    let verifier = client_verifier(&required, &Pins::default(), None).expect("verifier");
    verifier
        .verify_client_cert(&cert("node-a.crt"), &[], now)
        .expect("no node-ID check on backends");
    let expired = verifier
        .verify_client_cert(&cert("node-a.crt"), &[], after_expiry())
        .expect_err("expired");
    assert!(
        describe(&expired).contains("certificate expired"),
        "{expired}"
    );
    // Clientcas alone still refuses a client without a certificate, as Go does.
    let verifier = client_verifier(
        &ClientAuth::IfGiven(roots(&["ca.crt"])),
        &Pins::default(),
        None,
    )
    .expect("verifier");
    assert!(verifier.offer_client_auth());
    assert!(verifier.client_auth_mandatory());
}

#[test]
fn pins_match_sha2_digests_of_the_leaf() {
    let leaf = cert("node-a.crt");
    let sha256 = "ed:1b:93:c4:30:73:67:22:72:12:5f:56:c3:2e:88:fd:88:9e:2f:ad:28:92:ac:c0:6c:b6:49:4b:7b:f6:72:0e";
    let sha224 = "9e0ec60214a8a4e606ae620d1303256db73a42a3970a93a75474bde7";
    for pin in [sha256, sha224] {
        let pins = Pins::parse([pin]).expect("valid pin");
        assert!(pins.matches(&leaf), "{pin}");
        assert!(!pins.matches(&cert("node-b.crt")), "{pin}");
    }
    let sha512 = fingerprint(&leaf, 64).expect("sha512");
    let sha384 = fingerprint(&leaf, 48).expect("sha384");
    assert!(Pins::new(vec![sha512]).expect("pin").matches(&leaf));
    assert!(
        Pins::new(vec![vec![0; 32], sha384])
            .expect("pins")
            .matches(&leaf)
    );
    assert!(Pins::default().matches(&leaf), "no pins pin nothing");

    assert_eq!(
        parse_fingerprint("abc"),
        Err(PinError::NotHex("abc".into()))
    );
    assert_eq!(parse_fingerprint("zz"), Err(PinError::NotHex("zz".into())));
    assert_eq!(parse_fingerprint("00112233"), Err(PinError::Length(4)));
    assert!(Pins::new(vec![vec![0; 20]]).is_err());

    // Through the verifiers.
    let pinned = Pins::parse([sha256]).expect("pin");
    let verifier = dns_verifier(&["ca.crt"], pinned.clone());
    verify_server(&verifier, "node-a.crt", "localhost", in_validity()).expect("pinned leaf");
    let error =
        verify_server(&verifier, "node-b.crt", "localhost", in_validity()).expect_err("other leaf");
    assert_eq!(peer_cert_error(&error), Some(&PeerCertError::PinMismatch));
    assert!(describe(&error).contains("pinned fingerprint"), "{error}");
    let verifier = ReceptorServerVerifier::new(roots(&["ca.crt"]), pinned, "node-b");
    let error = verify_server(&verifier, "node-b.crt", "x", in_validity()).expect_err("pin");
    assert_eq!(peer_cert_error(&error), Some(&PeerCertError::PinMismatch));
}

#[test]
fn other_name_values_of_any_string_type() {
    let utf8 = [0xa0, 0x05, 0x0c, 0x03, b'f', b'o', b'o'];
    let printable = [0xa0, 0x05, 0x13, 0x03, b'f', b'o', b'o'];
    let bmp = [0xa0, 0x08, 0x1e, 0x06, 0, b'f', 0, b'o', 0, b'o'];
    let universal = [
        0xa0, 0x0e, 0x1c, 0x0c, 0, 0, 0, b'f', 0, 0, 0, b'o', 0, 0, 0, b'o',
    ];
    for value in [&utf8[..], &printable, &bmp, &universal] {
        assert_eq!(other_name_string(value).as_deref(), Some("foo"));
    }
    // Not a string, not explicitly tagged, truncated.
    assert_eq!(other_name_string(&[0xa0, 0x03, 0x02, 0x01, 0x05]), None);
    assert_eq!(other_name_string(&[0x0c, 0x03, b'f', b'o', b'o']), None);
    assert_eq!(other_name_string(&[0xa0, 0x05, 0x0c, 0x03, b'f']), None);
    // Long-form lengths.
    let long_id = "n".repeat(200);
    let mut value = vec![0xa0, 0x81, 203, 0x0c, 0x81, 200];
    value.extend_from_slice(long_id.as_bytes());
    assert_eq!(other_name_string(&value), Some(long_id));
}

#[test]
fn server_names_from_addresses() {
    let dns = |s: &str| ServerName::try_from(s.to_owned()).expect("name");
    assert_eq!(
        server_name_for_address("localhost:2222"),
        Ok(dns("localhost"))
    );
    assert_eq!(
        server_name_for_address("127.0.0.1:2222"),
        Ok(dns("127.0.0.1"))
    );
    assert!(matches!(
        server_name_for_address("[::1]:2222"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name_for_address("127.0.0.1:1"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(server_name_for_address(":2222").is_err());
    assert!(server_name_for_address("bad host:1").is_err());
}

#[test]
fn configs_build_from_go_material() {
    let server = ServerSettings {
        identity: identity("node-a"),
        client_auth: ClientAuth::Required(roots(&["ca.crt"])),
        pinned_client_certs: Pins::default(),
        min_tls13: false,
    };
    let config = server_config(&server).expect("server config");
    assert!(config.alpn_protocols.is_empty(), "no ALPN on backends");
    let config = receptor_server_config(&server, "node-b").expect("mode c server config");
    assert_eq!(config.alpn_protocols, [ALPN_NETCEPTOR.to_vec()]);

    let mut client = client_settings(&["ca.crt"]);
    client.identity = Some(identity("node-b"));
    let config = client_config(&client).expect("client config");
    assert!(config.alpn_protocols.is_empty(), "no ALPN (and never h2)");
    let config = receptor_client_config(&client, "node-a").expect("mode c client config");
    assert_eq!(config.alpn_protocols, [ALPN_NETCEPTOR.to_vec()]);

    // A key that does not belong to the certificate.
    let mismatched = ServerSettings {
        identity: Identity {
            chain: vec![cert("node-a.crt")],
            key: key("node-b.key"),
        },
        ..server
    };
    assert!(matches!(
        server_config(&mismatched),
        Err(TlsConfigError::Identity(_))
    ));
    // No roots at all.
    let empty = ClientSettings {
        roots: Arc::new(RootCertStore::empty()),
        ..client
    };
    assert!(client_config(&empty).is_err());
    assert!(matches!(
        receptor_client_config(&empty, "node-a"),
        Err(TlsConfigError::NoRoots)
    ));
    let insecure = ClientSettings {
        insecure_skip_verify: true,
        ..empty
    };
    client_config(&insecure).expect("insecure needs no roots");
}

#[test]
fn alerts_and_missing_certificates_are_described() {
    assert!(describe(&rustls::Error::NoCertificatesPresented).contains("no certificate"));
    assert!(
        describe(&rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
        ))
        .contains("requires a client certificate")
    );
    assert!(
        describe(&rustls::Error::AlertReceived(AlertDescription::UnknownCA))
            .contains("does not trust")
    );
    let io = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
    );
    assert!(is_tls_error(&io));
    assert!(describe_io(&io).contains("unknown authority"));
    assert!(!is_tls_error(&io::Error::from(
        io::ErrorKind::ConnectionReset
    )));
}

// === handshakes over an in-memory stream, with certificates made here (ECDSA P-256) ===

mod handshakes {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        OtherNameValue, SanType,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    struct Pki {
        ca_der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Pki {
        fn new() -> Self {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = params.self_signed(&key).expect("ca");
            Self {
                ca_der: ca.der().clone(),
                issuer: Issuer::new(params, key),
            }
        }

        fn roots(&self) -> Arc<RootCertStore> {
            let mut store = RootCertStore::empty();
            store.add(self.ca_der.clone()).expect("anchor");
            Arc::new(store)
        }

        fn leaf(&self, node: &str) -> Identity {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
            params.subject_alt_names.push(SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 2312, 19, 1],
                OtherNameValue::Utf8String(node.to_owned()),
            )));
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
            let cert = params.signed_by(&key, &self.issuer).expect("leaf");
            assert_eq!(receptor_names(cert.der()), [node]);
            Identity {
                chain: vec![cert.der().clone()],
                key: PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
            }
        }
    }

    fn server(pki: &Pki, node: &str) -> ServerSettings {
        ServerSettings {
            identity: pki.leaf(node),
            client_auth: ClientAuth::Required(pki.roots()),
            pinned_client_certs: Pins::default(),
            min_tls13: false,
        }
    }

    fn client(pki: &Pki, node: &str) -> ClientSettings {
        ClientSettings {
            identity: Some(pki.leaf(node)),
            roots: pki.roots(),
            insecure_skip_verify: false,
            pinned_server_certs: Pins::default(),
            min_tls13: false,
        }
    }

    type Handshake = (
        io::Result<tokio_rustls::client::TlsStream<DuplexStream>>,
        io::Result<tokio_rustls::server::TlsStream<DuplexStream>>,
    );

    async fn handshake(client: ClientConfig, server: ServerConfig, name: &str) -> Handshake {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let connector = TlsConnector::from(Arc::new(client));
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let name = ServerName::try_from(name.to_owned()).expect("name");
        tokio::join!(connector.connect(name, near), acceptor.accept(far))
    }

    /// The error a TLS 1.3 server reports after the client finished (the client only learns of
    /// it on its first read).
    async fn server_refusal(handshake: Handshake) -> String {
        let (client, server) = handshake;
        let error = server.expect_err("server must refuse");
        if let Ok(mut client) = client {
            let mut buf = [0u8; 1];
            let read = client.read(&mut buf).await;
            assert!(read.is_err(), "client sees the alert: {read:?}");
        }
        describe_io(&error)
    }

    #[tokio::test]
    async fn receptor_mode_names_the_node_on_both_sides() {
        let pki = Pki::new();
        let server_settings = server(&pki, "node-a");
        let client_settings = client(&pki, "node-b");

        let (client_tls, server_tls) = handshake(
            receptor_client_config(&client_settings, "node-a").expect("client"),
            receptor_server_config(&server_settings, "node-b").expect("server"),
            "netceptor",
        )
        .await;
        let mut client_tls = client_tls.expect("client handshake");
        let mut server_tls = server_tls.expect("server handshake");
        assert_eq!(client_tls.get_ref().1.alpn_protocol(), Some(ALPN_NETCEPTOR));
        assert_eq!(
            client_tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        client_tls.write_all(b"\0hello").await.expect("write");
        client_tls.flush().await.expect("flush");
        let mut buf = [0u8; 6];
        server_tls.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"\0hello");

        // The dialer wants node-c: node-a's certificate is refused by the client.
        let (client_tls, _server) = handshake(
            receptor_client_config(&client_settings, "node-c").expect("client"),
            receptor_server_config(&server_settings, "node-b").expect("server"),
            "netceptor",
        )
        .await;
        let error = client_tls.expect_err("wrong server node");
        assert!(
            describe_io(&error).contains("valid for Receptor node ID node-a, not node-c"),
            "{}",
            describe_io(&error)
        );

        // The listener expects the dialer to be node-c, but node-b's certificate came.
        let refusal = server_refusal(
            handshake(
                receptor_client_config(&client_settings, "node-a").expect("client"),
                receptor_server_config(&server_settings, "node-c").expect("server"),
                "netceptor",
            )
            .await,
        )
        .await;
        assert!(
            refusal.contains("valid for Receptor node ID node-b, not node-c"),
            "{refusal}"
        );

        // Backend mode (b) does not care about node IDs, and mode (a) checks the DNS name.
        let (client_tls, server_tls) = handshake(
            client_config(&client_settings).expect("client"),
            server_config(&server_settings).expect("server"),
            "localhost",
        )
        .await;
        client_tls.expect("mode a client");
        server_tls.expect("mode b server");
        assert_eq!(
            (handshake(
                client_config(&client_settings).expect("client"),
                server_config(&server_settings).expect("server"),
                "elsewhere.example",
            )
            .await)
                .0
                .map(drop)
                .map_err(|e| describe_io(&e).contains("not valid for name")),
            Err(true)
        );
    }

    #[tokio::test]
    async fn pins_and_missing_client_certificates_over_a_handshake() {
        let pki = Pki::new();
        let mut server_settings = server(&pki, "node-a");
        let client_settings = client(&pki, "node-b");

        // A server pin on some other certificate.
        let pinned = ClientSettings {
            pinned_server_certs: Pins::new(vec![vec![7; 32]]).expect("pin"),
            ..client_settings.clone()
        };
        let (client_tls, _) = handshake(
            client_config(&pinned).expect("client"),
            server_config(&server_settings).expect("server"),
            "localhost",
        )
        .await;
        let error = client_tls.expect_err("pin mismatch");
        assert!(
            describe_io(&error).contains("pinned fingerprint"),
            "{}",
            describe_io(&error)
        );

        // The right pin, and insecure mode ignoring a wrong one.
        let leaf = server_settings.identity.chain[0].clone();
        let pinned = ClientSettings {
            pinned_server_certs: Pins::new(vec![fingerprint(&leaf, 64).expect("sha512")])
                .expect("pin"),
            ..client_settings.clone()
        };
        let (client_tls, _) = handshake(
            client_config(&pinned).expect("client"),
            server_config(&server_settings).expect("server"),
            "localhost",
        )
        .await;
        client_tls.expect("pinned server");
        let insecure = ClientSettings {
            roots: Arc::new(RootCertStore::empty()),
            insecure_skip_verify: true,
            pinned_server_certs: Pins::new(vec![vec![7; 32]]).expect("pin"),
            ..client_settings.clone()
        };
        let (client_tls, _) = handshake(
            client_config(&insecure).expect("client"),
            server_config(&server_settings).expect("server"),
            "anything.example",
        )
        .await;
        client_tls.expect("insecure accepts anything");

        // A client pin the client does not match.
        server_settings.pinned_client_certs = Pins::new(vec![vec![7; 48]]).expect("pin");
        let refusal = server_refusal(
            handshake(
                client_config(&client_settings).expect("client"),
                server_config(&server_settings).expect("server"),
                "localhost",
            )
            .await,
        )
        .await;
        assert!(refusal.contains("pinned fingerprint"), "{refusal}");

        // clientcas alone (IfGiven) still refuses a client without a certificate, as Go does.
        server_settings.pinned_client_certs = Pins::default();
        server_settings.client_auth = ClientAuth::IfGiven(pki.roots());
        let anonymous = ClientSettings {
            identity: None,
            ..client_settings.clone()
        };
        let refusal = server_refusal(
            handshake(
                client_config(&anonymous).expect("client"),
                server_config(&server_settings).expect("server"),
                "localhost",
            )
            .await,
        )
        .await;
        assert!(refusal.contains("no certificate"), "{refusal}");

        // No client authentication at all.
        server_settings.client_auth = ClientAuth::None;
        let (client_tls, server_tls) = handshake(
            client_config(&anonymous).expect("client"),
            server_config(&server_settings).expect("server"),
            "localhost",
        )
        .await;
        client_tls.expect("client");
        server_tls.expect("server");
    }

    #[tokio::test]
    async fn a_peer_vanishing_without_close_notify_is_an_end_of_stream() {
        let pki = Pki::new();
        let (near, far) = tokio::io::duplex(64 * 1024);
        let connector =
            TlsConnector::from(Arc::new(client_config(&client(&pki, "b")).expect("client")));
        let acceptor =
            TlsAcceptor::from(Arc::new(server_config(&server(&pki, "a")).expect("server")));
        let name = ServerName::try_from("localhost").expect("name");
        let (client_tls, server_tls) =
            tokio::join!(connector.connect(name, near), acceptor.accept(far));
        let mut client_tls = client_tls.expect("client");
        client_tls.write_all(b"x").await.expect("write");
        client_tls.flush().await.expect("flush");
        // Drop the transport without sending close_notify.
        drop(client_tls.into_inner().0);

        let mut plain = server_tls.expect("server");
        let mut buf = Vec::new();
        let error = plain.read_to_end(&mut buf).await.expect_err("raw rustls");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);

        // Again through SessionStream: the same loss reads as a clean end.
        let (near, far) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("localhost").expect("name");
        let (client_tls, server_tls) =
            tokio::join!(connector.connect(name, near), acceptor.accept(far));
        let mut client_tls = client_tls.expect("client");
        client_tls.write_all(b"x").await.expect("write");
        client_tls.flush().await.expect("flush");
        drop(client_tls.into_inner().0);
        let mut session = SessionStream::new(server_tls.expect("server"), "test");
        let mut buf = Vec::new();
        session.read_to_end(&mut buf).await.expect("clean end");
        assert_eq!(buf, b"x");
    }
}
