//! Codec tests: the captured Go traffic, the spec's vectors, Go's JSON rules, and properties.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use proptest::prelude::*;
use time::macros::datetime;

use super::*;
use crate::ServiceName;

// === helpers ===

const VECTORS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/");
const SESSION_FILES: [&str; 3] = [
    "go-tcp-session.jsonl",
    "go-udp-session.jsonl",
    "go-ws-session.jsonl",
];

/// One message line of a capture.
#[derive(Debug, Clone)]
struct Captured {
    file: &'static str,
    line: usize,
    record: serde_json::Value,
    bytes: Vec<u8>,
}

/// The message lines of one capture file. A missing file fails the test: the captures are the
/// only Go reference we have, so silently skipping would hide a broken checkout.
fn load_capture(file: &'static str) -> Vec<Captured> {
    let path = format!("{VECTORS_DIR}{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("capture {path} is missing ({e}); the shared/ directory must sit beside the repo")
    });
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{file}:{}: not JSON: {e}", i + 1));
        let Some(hex) = record.get("hex").and_then(|h| h.as_str()) else {
            continue;
        };
        assert!(
            record.get("hex_truncated").is_none(),
            "{file}:{}: truncated capture",
            i + 1
        );
        let bytes = hex::decode(hex).unwrap_or_else(|e| panic!("{file}:{}: bad hex: {e}", i + 1));
        out.push(Captured {
            file,
            line: i + 1,
            record,
            bytes,
        });
    }
    assert!(!out.is_empty(), "{file} holds no message lines");
    out
}

static ALL_CAPTURED: LazyLock<Vec<Captured>> =
    LazyLock::new(|| SESSION_FILES.iter().flat_map(|f| load_capture(f)).collect());

fn unhex(spaced: &str) -> Vec<u8> {
    let compact: String = spaced.split_whitespace().collect();
    hex::decode(compact).expect("test vector is hex")
}

fn svc(name: &str) -> ServiceName {
    ServiceName::try_from(name).expect("test service name fits")
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("record lacks string {key}: {v}"))
}

fn u64_field(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("record lacks integer {key}: {v}"))
}

// === captured Go traffic ===

/// Checks one captured message: it decodes, its fields agree with the capture's own decoding,
/// and re-encoding gives back exactly the bytes the Go node sent.
fn check_captured(c: &Captured) {
    let at = format!("{}:{}", c.file, c.line);
    let len = usize::try_from(u64_field(&c.record, "len")).expect("len fits usize");
    assert_eq!(c.bytes.len(), len, "{at}: len field");
    assert!(len <= MAX_FRAMED_LEN, "{at}: longer than a TCP frame");
    if c.file == "go-tcp-session.jsonl" {
        // On TCP the frame is the u16 LE length, then the message.
        let frame = [
            &u16::try_from(len).expect("fits").to_le_bytes()[..],
            &c.bytes,
        ]
        .concat();
        assert_eq!(
            usize::from(u16::from_le_bytes([frame[0], frame[1]])),
            frame.len() - 2
        );
    }

    let msg = decode(&c.bytes).unwrap_or_else(|e| panic!("{at}: decode failed: {e}"));
    let ty = u8::try_from(u64_field(&c.record, "type")).expect("type fits u8");
    assert_eq!(msg.type_byte(), ty, "{at}: type");
    assert_eq!(
        msg.encode().as_ref(),
        &c.bytes[..],
        "{at}: re-encoding differs from Go's bytes"
    );
    let shared = decode_bytes(Bytes::copy_from_slice(&c.bytes)).expect("decode_bytes agrees");
    assert_eq!(shared, msg, "{at}: decode_bytes");

    match &msg {
        Message::Data(d) => {
            let info = &c.record["data"];
            assert_eq!(u64::from(d.ttl), u64_field(info, "ttl"), "{at}: ttl");
            assert_eq!(d.from_node, node_hash(str_field(info, "from_node")), "{at}");
            assert_eq!(d.to_node, node_hash(str_field(info, "to_node")), "{at}");
            assert_eq!(
                format!("{:016x}", d.from_node),
                str_field(info, "from_hash")
            );
            assert_eq!(format!("{:016x}", d.to_node), str_field(info, "to_hash"));
            assert_eq!(d.from_service.to_string(), str_field(info, "from_service"));
            assert_eq!(d.to_service.to_string(), str_field(info, "to_service"));
            assert_eq!(d.payload.len() as u64, u64_field(info, "payload_len"));
            if let Some(j) = c.record.get("json") {
                let u = Unreachable::decode(&d.payload).expect("unreach payload decodes");
                assert_eq!(u.from_node, str_field(j, "FromNode"), "{at}");
                assert_eq!(u.to_node, str_field(j, "ToNode"), "{at}");
                assert_eq!(u.from_service, str_field(j, "FromService"), "{at}");
                assert_eq!(u.to_service, str_field(j, "ToService"), "{at}");
                assert_eq!(u.problem, str_field(j, "Problem"), "{at}");
                assert_eq!(u.encode(), d.payload, "{at}: unreach payload re-encoding");
            }
        }
        Message::Routing(r) => {
            let j = &c.record["json"];
            assert_eq!(r.node_id, str_field(j, "NodeID"), "{at}");
            assert_eq!(r.update_id, str_field(j, "UpdateID"), "{at}");
            assert_eq!(
                r.update_epoch,
                u64_field(j, "UpdateEpoch"),
                "{at}: epoch exact"
            );
            assert_eq!(r.update_sequence, u64_field(j, "UpdateSequence"), "{at}");
            assert_eq!(r.forwarding_node, str_field(j, "ForwardingNode"), "{at}");
            assert_eq!(r.suspected_duplicate, u64_field(j, "SuspectedDuplicate"));
            let want: Option<BTreeMap<String, f64>> = j["Connections"].as_object().map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_f64().expect("cost is a number")))
                    .collect()
            });
            assert_eq!(r.connections, want, "{at}: connections");
        }
        Message::ServiceAd(a) => {
            let j = &c.record["json"];
            assert_eq!(a.node_id, str_field(j, "NodeID"), "{at}");
            assert_eq!(a.service, str_field(j, "Service"), "{at}");
            assert_eq!(format_go_time(a.time), str_field(j, "Time"), "{at}");
            assert_eq!(u64::from(a.conn_type), u64_field(j, "ConnType"), "{at}");
            assert_eq!(Some(a.cancel), j["Cancel"].as_bool(), "{at}");
        }
        Message::Reject => assert_eq!(c.bytes, REJECT, "{at}"),
    }
}

fn check_capture_file(file: &'static str) -> BTreeMap<u8, usize> {
    let mut counts = BTreeMap::new();
    for c in load_capture(file) {
        check_captured(&c);
        *counts.entry(c.bytes[0]).or_insert(0) += 1;
    }
    counts
}

#[test]
fn tcp_capture_decodes_and_reencodes_byte_identical() {
    let counts = check_capture_file("go-tcp-session.jsonl");
    // Sanity: the capture holds data, routing updates and service ads (237 messages).
    assert_eq!(counts.values().sum::<usize>(), 237, "{counts:?}");
    for ty in [MSG_DATA, MSG_ROUTE, MSG_SERVICE_AD] {
        assert!(counts.get(&ty).copied().unwrap_or(0) > 0, "{counts:?}");
    }
}

#[test]
fn udp_capture_decodes_and_reencodes_byte_identical() {
    let counts = check_capture_file("go-udp-session.jsonl");
    // The UDP run is the only one where Go's rejects reached the wire.
    assert_eq!(counts.get(&MSG_REJECT), Some(&4), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 77, "{counts:?}");
}

#[test]
fn ws_capture_decodes_and_reencodes_byte_identical() {
    let counts = check_capture_file("go-ws-session.jsonl");
    assert_eq!(counts.values().sum::<usize>(), 63, "{counts:?}");
}

#[test]
fn captured_names_hash_as_documented() {
    assert_eq!(node_hash("node-a"), 0x4191_2ad7_c183_c109);
    assert_eq!(node_hash("node-b"), 0xeaf5_beb3_2e62_9a52);
    assert_eq!(node_hash("node-c"), 0xdd32_a869_c564_f416);
}

#[test]
fn reflooded_update_differs_only_in_forwarding_node() {
    // Re-flooding as Go does: decode, set ForwardingNode, re-encode. Same length as the original
    // when the names have equal length (README scenario 2b).
    let original = ALL_CAPTURED
        .iter()
        .find_map(|c| match decode(&c.bytes) {
            Ok(Message::Routing(r)) if r.node_id == "node-c" => Some((c.bytes.clone(), r)),
            _ => None,
        })
        .expect("the TCP capture has node-c updates");
    let (bytes, mut update) = original;
    update.forwarding_node = "node-b".to_owned();
    let reflooded = update.encode();
    assert_eq!(reflooded.len(), bytes.len());
    let want = String::from_utf8(bytes).expect("JSON is UTF-8").replace(
        r#""ForwardingNode":"node-c""#,
        r#""ForwardingNode":"node-b""#,
    );
    assert_eq!(reflooded.as_ref(), want.as_bytes());
}

// === spec/wire.md §13 ===

#[test]
fn spec_13_1_hashes() {
    let table = [
        ("node1", 0x6105_2d2b_582e_b15e_u64),
        ("node2", 0x51bc_c6e1_4eb3_fee1),
        ("node3", 0x2b1e_fdda_ab3b_dbdc),
        ("foo", 0xef7a_78b6_7f92_bdf7),
        ("bar", 0x14ef_88ca_5228_94d1),
        ("controller", 0xbac0_3aa9_a8a9_6ddc),
        ("", 0x7035_da75_b9d5_4469),
        ("localhost", 0x99c4_380a_442a_e062),
    ];
    for (name, want) in table {
        assert_eq!(node_hash(name), want, "hash of {name:?}");
    }
    assert_eq!(
        node_hash("node1").to_be_bytes(),
        [0x61, 0x05, 0x2d, 0x2b, 0x58, 0x2e, 0xb1, 0x5e]
    );
}

#[test]
fn spec_13_2_ping_request() {
    let want = unhex(
        "00 1d 00 00 61 05 2d 2b 58 2e b1 5e 51 bc c6 e1 4e b3 fe e1 41 62 33 64 45 36 67 48 \
         70 69 6e 67 00 00 00 00",
    );
    let msg = Message::Data(Data {
        ttl: 29,
        from_node: node_hash("node1"),
        to_node: node_hash("node2"),
        from_service: svc("Ab3dE6gH"),
        to_service: svc("ping"),
        payload: Bytes::new(),
    });
    assert_eq!(msg.encode().as_ref(), &want[..]);
    assert_eq!(decode(&want).expect("decodes"), msg);
}

#[test]
fn spec_13_3_ping_reply() {
    let want = unhex(
        "00 1d 00 00 51 bc c6 e1 4e b3 fe e1 61 05 2d 2b 58 2e b1 5e 70 69 6e 67 00 00 00 00 \
         41 62 33 64 45 36 67 48",
    );
    let msg = Message::Data(Data {
        ttl: 29,
        from_node: node_hash("node2"),
        to_node: node_hash("node1"),
        from_service: svc("ping"),
        to_service: svc("Ab3dE6gH"),
        payload: Bytes::new(),
    });
    assert_eq!(msg.encode().as_ref(), &want[..]);
    assert_eq!(decode(&want).expect("decodes"), msg);
}

#[test]
fn spec_13_4_unreachable_frame() {
    let frame = unhex(
        "93 00 00 1d 00 00 51 bc c6 e1 4e b3 fe e1 61 05 2d 2b 58 2e b1 5e 75 6e 72 65 61 63 68 00 75 6e
         72 65 61 63 68 00 7b 22 46 72 6f 6d 4e 6f 64 65 22 3a 22 6e 6f 64 65 31 22 2c 22 54 6f 4e 6f 64
         65 22 3a 22 6e 6f 64 65 32 22 2c 22 46 72 6f 6d 53 65 72 76 69 63 65 22 3a 22 41 62 33 64 45 36
         67 48 22 2c 22 54 6f 53 65 72 76 69 63 65 22 3a 22 6e 6f 73 75 63 68 22 2c 22 50 72 6f 62 6c 65
         6d 22 3a 22 73 65 72 76 69 63 65 20 75 6e 6b 6e 6f 77 6e 22 7d",
    );
    let unreach = Unreachable {
        from_node: "node1".into(),
        to_node: "node2".into(),
        from_service: "Ab3dE6gH".into(),
        to_service: "nosuch".into(),
        problem: PROBLEM_SERVICE_UNKNOWN.into(),
    };
    let payload = unreach.encode();
    assert_eq!(
        payload.as_ref(),
        br#"{"FromNode":"node1","ToNode":"node2","FromService":"Ab3dE6gH","ToService":"nosuch","Problem":"service unknown"}"#
    );
    assert_eq!(payload.len(), 111);
    let msg = Message::Data(Data {
        ttl: 29,
        from_node: node_hash("node2"),
        to_node: node_hash("node1"),
        from_service: svc("unreach"),
        to_service: svc("unreach"),
        payload,
    });
    let encoded = msg.encode();
    assert_eq!(encoded.len(), 147);
    let mut tcp = u16::try_from(encoded.len())
        .expect("fits")
        .to_le_bytes()
        .to_vec();
    tcp.extend_from_slice(&encoded);
    assert_eq!(tcp, frame);
    let Ok(Message::Data(d)) = decode(&frame[2..]) else {
        panic!("frame body is a data message");
    };
    assert_eq!(Unreachable::decode(&d.payload).expect("decodes"), unreach);
}

fn spec_update() -> RoutingUpdate {
    RoutingUpdate {
        node_id: "node1".into(),
        update_id: "k3J9aZ0q".into(),
        update_epoch: 1_729_800_000 * (1 << 24) + 0x0ABCDE,
        update_sequence: 7,
        connections: Some(BTreeMap::from([
            ("node2".into(), 1.0),
            ("node3".into(), 2.5),
        ])),
        forwarding_node: "node1".into(),
        suspected_duplicate: 0,
    }
}

#[test]
fn spec_13_5_routing_update() {
    let frame = unhex(
        "b2 00 01 7b 22 4e 6f 64 65 49 44 22 3a 22 6e 6f 64 65 31 22 2c 22 55 70 64 61 74 65 49 44 22 3a 22 6b 33 4a 39 61 5a 30 71 22 2c
         22 55 70 64 61 74 65 45 70 6f 63 68 22 3a 32 39 30 32 31 32 32 38 32 33 37 35 30 33 37 31 30 2c 22 55 70 64 61 74 65 53 65 71 75
         65 6e 63 65 22 3a 37 2c 22 43 6f 6e 6e 65 63 74 69 6f 6e 73 22 3a 7b 22 6e 6f 64 65 32 22 3a 31 2c 22 6e 6f 64 65 33 22 3a 32 2e
         35 7d 2c 22 46 6f 72 77 61 72 64 69 6e 67 4e 6f 64 65 22 3a 22 6e 6f 64 65 31 22 2c 22 53 75 73 70 65 63 74 65 64 44 75 70 6c 69
         63 61 74 65 22 3a 30 7d",
    );
    let update = spec_update();
    assert_eq!(update.update_epoch, 29_021_228_237_503_710);
    let encoded = update.encode();
    assert_eq!(encoded.len(), 178);
    assert_eq!(
        encoded.as_ref(),
        &br#"{"NodeID":"node1","UpdateID":"k3J9aZ0q","UpdateEpoch":29021228237503710,"UpdateSequence":7,"Connections":{"node2":1,"node3":2.5},"ForwardingNode":"node1","SuspectedDuplicate":0}"#[..]
            .iter()
            .fold(vec![MSG_ROUTE], |mut v, b| {
                v.push(*b);
                v
            })[..]
    );
    assert_eq!(&frame[..2], [0xb2, 0x00]);
    assert_eq!(&frame[2..], encoded.as_ref());
    assert_eq!(
        decode(&frame[2..]).expect("decodes"),
        Message::Routing(update.clone())
    );

    // node2 re-floods it with its own ID: same length, one field changed.
    let mut reflood = update;
    reflood.forwarding_node = "node2".into();
    let re = reflood.encode();
    assert_eq!(re.len(), 178);
    let diff: Vec<usize> = (0..178).filter(|&i| re[i] != encoded[i]).collect();
    assert_eq!(
        diff.len(),
        1,
        "only the '1' of node1 in ForwardingNode changes"
    );
}

#[test]
fn spec_13_6_service_ads() {
    let ad = ServiceAdvertisement {
        node_id: "node2".into(),
        service: "control".into(),
        time: datetime!(2024-10-24 20:40:00.123456789 UTC),
        conn_type: 1,
        tags: Some(BTreeMap::from([("type".into(), "Control Service".into())])),
        work_commands: Some(vec![WorkCommand {
            work_type: "echo".into(),
            secure: false,
        }]),
        cancel: false,
    };
    let want = b"\x02{\"NodeID\":\"node2\",\"Service\":\"control\",\"Time\":\"2024-10-24T20:40:00.123456789Z\",\"ConnType\":1,\"Tags\":{\"type\":\"Control Service\"},\"WorkCommands\":[{\"WorkType\":\"echo\",\"Secure\":false}],\"Cancel\":false}";
    assert_eq!(want.len(), 193);
    assert_eq!(ad.encode().as_ref(), want);
    assert_eq!(
        decode(want).expect("decodes"),
        Message::ServiceAd(ad.clone())
    );

    let cancel = ServiceAdvertisement {
        time: datetime!(2024-10-24 20:41:00 UTC),
        tags: None,
        work_commands: None,
        cancel: true,
        ..ad
    };
    let want = b"\x02{\"NodeID\":\"node2\",\"Service\":\"control\",\"Time\":\"2024-10-24T20:41:00Z\",\"ConnType\":1,\"Tags\":null,\"WorkCommands\":null,\"Cancel\":true}";
    assert_eq!(want.len(), 128);
    assert_eq!(cancel.encode().as_ref(), want);
    assert_eq!(decode(want).expect("decodes"), Message::ServiceAd(cancel));
}

#[test]
fn spec_13_7_reject() {
    assert_eq!(Message::Reject.encode().as_ref(), [0x03, 0x5b, 0x5d]);
    assert_eq!(REJECT, [0x03, 0x5b, 0x5d]);
    // Go ignores the payload of a reject entirely.
    for bytes in [&b"\x03"[..], b"\x03[]", b"\x03garbage", b"\x03[\"why\"]"] {
        assert_eq!(decode(bytes).expect("a reject"), Message::Reject);
    }
}

#[test]
fn spec_13_8_quic_datagram_header() {
    let header = unhex(
        "00 1d 00 00 61 05 2d 2b 58 2e b1 5e 51 bc c6 e1 4e b3 fe e1 58 79 31 32 41 62 33 34 \
         63 6f 6e 74 72 6f 6c 00",
    );
    let data = Data {
        ttl: 29,
        from_node: node_hash("node1"),
        to_node: node_hash("node2"),
        from_service: svc("Xy12Ab34"),
        to_service: svc("control"),
        payload: Bytes::from(vec![0xc0; 1200]),
    };
    assert_eq!(data.header()[..], header[..]);
    let encoded = data.encode();
    assert_eq!(encoded.len(), 1236);
    assert_eq!(
        u16::try_from(encoded.len()).expect("fits").to_le_bytes(),
        [0xd4, 0x04]
    );
    let Ok(Message::Data(back)) = decode_bytes(encoded) else {
        panic!("decodes as data");
    };
    assert_eq!(back, data);
}

// === framing-level errors ===

#[test]
fn malformed_messages_are_errors() {
    assert!(matches!(decode(b""), Err(DecodeError::Empty)));
    assert!(matches!(
        decode_bytes(Bytes::new()),
        Err(DecodeError::Empty)
    ));
    assert!(matches!(decode(&[4]), Err(DecodeError::UnknownType(4))));
    assert!(matches!(
        decode(&[0xff, 1, 2]),
        Err(DecodeError::UnknownType(0xff))
    ));
    assert!(matches!(
        decode(&[0]),
        Err(DecodeError::DataTooShort { len: 1 })
    ));
    assert!(matches!(
        decode(&[0; 35]),
        Err(DecodeError::DataTooShort { len: 35 })
    ));
    assert!(matches!(decode(b"\x01"), Err(DecodeError::Json { .. })));
    assert!(matches!(decode(b"\x01{"), Err(DecodeError::Json { .. })));
    assert!(matches!(decode(b"\x01{} x"), Err(DecodeError::Json { .. })));
    assert!(matches!(
        decode(b"\x02[1]"),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn data_header_ignores_reserved_bytes_and_keeps_payload() {
    let mut raw = Data {
        ttl: 0,
        from_node: 1,
        to_node: u64::MAX,
        from_service: svc(""),
        to_service: svc("12345678"),
        payload: Bytes::from_static(b"\x00payload\xff"),
    }
    .encode()
    .to_vec();
    raw[2] = 0xab;
    raw[3] = 0xcd;
    let Ok(Message::Data(d)) = decode(&raw) else {
        panic!("decodes");
    };
    assert_eq!(d.ttl, 0);
    assert_eq!((d.from_node, d.to_node), (1, u64::MAX));
    assert_eq!(d.from_service.as_bytes(), b"");
    assert_eq!(d.to_service.as_bytes(), b"12345678");
    assert_eq!(d.payload.as_ref(), b"\x00payload\xff");
    // Re-encoding zeroes the reserved bytes, as Go does when forwarding.
    let re = d.encode();
    assert_eq!(&re[2..4], [0, 0]);
    assert_eq!(&re[4..], &raw[4..]);
}

// === Go JSON decoding rules ===

fn route(json: &str) -> Result<RoutingUpdate, DecodeError> {
    RoutingUpdate::decode_json(json.as_bytes())
}

fn ad(json: &str) -> Result<ServiceAdvertisement, DecodeError> {
    ServiceAdvertisement::decode_json(json.as_bytes())
}

#[test]
fn keys_match_case_insensitively_and_unknown_keys_are_ignored() {
    let u = route(
        r#"{"nodeid":"a","UPDATEID":"x","updateEpoch":5,"updatesequence":6,"connections":{"b":1},
           "forwardingnode":"a","suspectedduplicate":7,"Extra":[1,{"k":null}],"NodeIDs":"no"}"#,
    )
    .expect("Go accepts this");
    assert_eq!(u.node_id, "a");
    assert_eq!(u.update_id, "x");
    assert_eq!(
        (u.update_epoch, u.update_sequence, u.suspected_duplicate),
        (5, 6, 7)
    );
    assert_eq!(u.connections, Some(BTreeMap::from([("b".into(), 1.0)])));
    assert_eq!(u.forwarding_node, "a");
    // Go folds a few non-ASCII runes onto ASCII letters (ſ → S, K (Kelvin) → K).
    let a = ad(r#"{"ſervice":"svc","wor\u212acommands":[{"worktype":"w","SECURE":true}]}"#)
        .expect("decodes");
    assert_eq!(a.service, "svc");
    assert_eq!(
        a.work_commands,
        Some(vec![WorkCommand {
            work_type: "w".into(),
            secure: true
        }])
    );
}

#[test]
fn missing_fields_are_zero_and_null_leaves_fields_alone() {
    let u = route("{}").expect("empty object");
    assert_eq!(
        u,
        RoutingUpdate {
            node_id: String::new(),
            update_id: String::new(),
            update_epoch: 0,
            update_sequence: 0,
            connections: None,
            forwarding_node: String::new(),
            suspected_duplicate: 0,
        }
    );
    // A top-level null leaves Go's struct zeroed without error.
    assert_eq!(route(" null ").expect("null"), u);
    let u = route(
        r#"{"NodeID":"a","NodeID":null,"UpdateEpoch":3,"UpdateEpoch":null,"Connections":null}"#,
    )
    .expect("nulls");
    assert_eq!(
        (u.node_id.as_str(), u.update_epoch, u.connections),
        ("a", 3, None)
    );
    // Later duplicates win, in document order, whatever their case.
    let u = route(r#"{"NodeID":"a","nodeid":"b","NodeID":"c"}"#).expect("dups");
    assert_eq!(u.node_id, "c");
    // Duplicate map objects merge into one map, as Go decodes into the existing map.
    let u =
        route(r#"{"Connections":{"a":1,"b":2},"Connections":{"b":3,"c":null}}"#).expect("merge");
    assert_eq!(
        u.connections,
        Some(BTreeMap::from([
            ("a".into(), 1.0),
            ("b".into(), 3.0),
            ("c".into(), 0.0)
        ]))
    );
    let u = route(r#"{"Connections":{}}"#).expect("empty map");
    assert_eq!(u.connections, Some(BTreeMap::new()));

    let a = ad("{}").expect("empty ad");
    assert_eq!(a.time, datetime!(0001-01-01 0:00 UTC));
    assert_eq!(format_go_time(a.time), "0001-01-01T00:00:00Z");
    assert_eq!((a.tags, a.work_commands, a.cancel), (None, None, false));
    let a = ad(r#"{"Tags":{"k":null},"WorkCommands":[null],"Time":null,"Cancel":null}"#)
        .expect("nulls inside collections are zero values");
    assert_eq!(a.tags, Some(BTreeMap::from([("k".into(), String::new())])));
    assert_eq!(
        a.work_commands,
        Some(vec![WorkCommand {
            work_type: String::new(),
            secure: false
        }])
    );
}

#[test]
fn integer_fields_accept_only_plain_unsigned_integers() {
    let big =
        route(r#"{"UpdateEpoch":30124362043090275,"SuspectedDuplicate":18446744073709551615}"#)
            .expect("exact u64");
    assert_eq!(big.update_epoch, 30_124_362_043_090_275);
    assert_eq!(big.suspected_duplicate, u64::MAX);
    assert!(
        Message::Routing(big.clone())
            .encode()
            .windows(17)
            .any(|w| w == b"30124362043090275")
    );
    for bad in [
        r#"{"UpdateEpoch":1.0}"#,
        r#"{"UpdateEpoch":1e3}"#,
        r#"{"UpdateEpoch":-1}"#,
        r#"{"UpdateEpoch":-0}"#,
        r#"{"UpdateSequence":18446744073709551616}"#,
        r#"{"SuspectedDuplicate":"5"}"#,
        r#"{"UpdateEpoch":true}"#,
        r#"{"NodeID":5}"#,
        r#"{"Connections":[]}"#,
        r#"{"Connections":{"a":"1"}}"#,
        r#"[]"#,
        r#""str""#,
    ] {
        assert!(
            matches!(route(bad), Err(DecodeError::Invalid { .. })),
            "{bad} must be refused"
        );
    }
    for bad in [
        r#"{"ConnType":256}"#,
        r#"{"ConnType":-1}"#,
        r#"{"ConnType":1.5}"#,
        r#"{"Cancel":0}"#,
        r#"{"Tags":{"a":1}}"#,
        r#"{"WorkCommands":{}}"#,
        r#"{"WorkCommands":[1]}"#,
        r#"{"WorkCommands":[{"Secure":"yes"}]}"#,
        r#"{"Time":12}"#,
        r#"{"Time":"yesterday"}"#,
    ] {
        assert!(
            matches!(ad(bad), Err(DecodeError::Invalid { .. })),
            "{bad} must be refused"
        );
    }
    assert_eq!(ad(r#"{"ConnType":255}"#).expect("u8").conn_type, 255);
}

#[test]
fn costs_decode_as_float64() {
    let u = route(r#"{"Connections":{"a":1,"b":2.5,"c":1e-7,"d":-3,"e":1e400000000000000000000}}"#);
    // Out-of-range numbers are a JSON error, as in Go.
    assert!(matches!(u, Err(DecodeError::Json { .. })));
    let u =
        route(r#"{"Connections":{"a":1,"b":2.5,"c":1e-7,"d":-3,"e":0.1,"f":9007199254740993}}"#)
            .expect("numbers");
    let c = u.connections.expect("map");
    assert_eq!(c["a"], 1.0);
    assert_eq!(c["b"], 2.5);
    assert_eq!(c["c"], 1e-7);
    assert_eq!(c["d"], -3.0);
    assert_eq!(c["e"], 0.1);
    assert_eq!(c["f"], 9_007_199_254_740_992.0);
}

#[test]
fn costs_encode_like_go() {
    let mut u = spec_update();
    u.connections = Some(BTreeMap::from([
        ("a".into(), 1.0),
        ("b".into(), 1.6),
        ("c".into(), 1e-7),
        ("d".into(), 1e21),
        ("e".into(), 1.5e-10),
    ]));
    let encoded = u.encode();
    let text = std::str::from_utf8(&encoded[1..]).expect("UTF-8");
    assert!(
        text.contains(r#""Connections":{"a":1,"b":1.6,"c":1e-7,"d":1e+21,"e":1.5e-10}"#),
        "{text}"
    );
}

#[test]
fn too_many_connections_are_refused() {
    let mut json = String::from(r#"{"Connections":{"#);
    for i in 0..=MAX_CONNECTIONS {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(r#""n{i}":1"#));
    }
    json.push_str("}}");
    assert!(matches!(route(&json), Err(DecodeError::Invalid { .. })));
    // Exactly the limit is fine.
    let at_limit = json.replacen(r#""n0":1,"#, "", 1);
    let u = route(&at_limit).expect("at the limit");
    assert_eq!(u.connections.map(|c| c.len()), Some(MAX_CONNECTIONS));
}

#[test]
fn strings_escape_like_go() {
    let u = RoutingUpdate {
        node_id: "<a&b>\"\\\n\u{1}\u{2028}é".into(),
        update_id: String::new(),
        update_epoch: 0,
        update_sequence: 0,
        connections: Some(BTreeMap::from([("x<y".into(), 1.0)])),
        forwarding_node: String::new(),
        suspected_duplicate: 0,
    };
    let encoded = u.encode();
    assert_eq!(
        &encoded[..],
        "\x01{\"NodeID\":\"\\u003ca\\u0026b\\u003e\\\"\\\\\\n\\u0001\\u2028é\",\"UpdateID\":\"\",\"UpdateEpoch\":0,\"UpdateSequence\":0,\"Connections\":{\"x\\u003cy\":1},\"ForwardingNode\":\"\",\"SuspectedDuplicate\":0}".as_bytes()
    );
    assert_eq!(decode(&encoded).expect("decodes"), Message::Routing(u));
}

// === Go time ===

#[test]
fn go_time_formatting() {
    use time::UtcOffset;
    let cases = [
        (datetime!(2024-10-24 20:40:00 UTC), "2024-10-24T20:40:00Z"),
        (
            datetime!(2026-11-24 20:22:26.66564776 UTC),
            "2026-11-24T20:22:26.66564776Z",
        ),
        (
            datetime!(2024-10-24 20:40:00.1 UTC),
            "2024-10-24T20:40:00.1Z",
        ),
        (
            datetime!(2024-10-24 20:40:00.000000001 UTC),
            "2024-10-24T20:40:00.000000001Z",
        ),
        (
            datetime!(2024-10-24 20:40:00.5 +02:00),
            "2024-10-24T20:40:00.5+02:00",
        ),
        (
            datetime!(2024-10-24 20:40:00 -05:30),
            "2024-10-24T20:40:00-05:30",
        ),
        (datetime!(0001-01-01 0:00 UTC), "0001-01-01T00:00:00Z"),
        (
            datetime!(9999-12-31 23:59:59.999999999 UTC),
            "9999-12-31T23:59:59.999999999Z",
        ),
    ];
    for (t, want) in cases {
        assert_eq!(format_go_time(t), want);
        let back = parse_go_time(want).expect("parses");
        assert_eq!(back, t);
        assert_eq!(back.offset(), t.offset());
    }
    // Go truncates sub-minute offsets towards zero.
    let odd = datetime!(2024-01-01 0:00 UTC)
        .to_offset(UtcOffset::from_whole_seconds(-30).expect("valid offset"));
    assert_eq!(format_go_time(odd), "2023-12-31T23:59:30+00:00");
}

#[test]
fn go_time_parsing() {
    let ok = [
        (
            "2024-10-24T20:40:00+00:00",
            datetime!(2024-10-24 20:40:00 UTC),
        ),
        (
            "2024-10-24T20:40:00-00:00",
            datetime!(2024-10-24 20:40:00 UTC),
        ),
        // More than nine digits are truncated, not rounded.
        (
            "2024-10-24T20:40:00.1234567899Z",
            datetime!(2024-10-24 20:40:00.123456789 UTC),
        ),
        (
            "2024-10-24T20:40:00.000Z",
            datetime!(2024-10-24 20:40:00 UTC),
        ),
        ("2024-02-29T00:00:00Z", datetime!(2024-02-29 0:00 UTC)),
        (
            "0000-01-01T00:00:00+01:00",
            datetime!(0000-01-01 0:00 +01:00),
        ),
    ];
    for (s, want) in ok {
        assert_eq!(parse_go_time(s), Some(want), "{s}");
    }
    let bad = [
        "",
        "2024-10-24",
        "2024-10-24T20:40:00",
        "2024-10-24t20:40:00Z",
        "2024-10-24T20:40:00z",
        "2024-10-24 20:40:00Z",
        "2024-10-24T20:40:60Z",
        "2024-10-24T24:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-00-01T00:00:00Z",
        "2024-10-24T20:40:00.Z",
        "2024-10-24T20:40:00,5Z",
        "2024-10-24T20:40:00+24:00",
        "2024-10-24T20:40:00+01:60",
        "2024-10-24T20:40:00+0100",
        "2024-10-24T20:40:00+01:00:00",
        "+2024-10-24T20:40:00Z",
        "2024-1-24T20:40:00Z",
        "２０２４-10-24T20:40:00Z",
        "2024-10-24T20:40:00ZZ",
        // Its UTC instant would be in year 10000.
        "9999-12-31T23:59:59-01:00",
    ];
    for s in bad {
        assert_eq!(parse_go_time(s), None, "{s:?} must be refused");
    }
}

// === properties ===

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9<>&\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}\u{2029}é😀 -]{0,12}",
        "node-[a-z]{1,3}",
    ]
}

fn any_service() -> impl Strategy<Value = ServiceName> {
    (any::<[u8; 8]>(), 0usize..=8).prop_map(|(mut raw, len)| {
        raw[len..].fill(0);
        ServiceName::from_wire(raw)
    })
}

fn any_cost() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NORMAL, POSITIVE, SUBNORMAL};
    prop_oneof![
        Just(1.0),
        Just(2.5),
        Just(1.6),
        (1u32..1000).prop_map(f64::from),
        POSITIVE | NORMAL | SUBNORMAL,
    ]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), (1u64 << 53)..u64::MAX, 0u64..100]
}

fn any_time() -> impl Strategy<Value = OffsetDateTime> {
    // Go can only marshal years 0 to 9999.
    let min = datetime!(0000-01-01 0:00 UTC).unix_timestamp_nanos();
    let max = datetime!(9999-12-31 23:59:59.999999999 UTC).unix_timestamp_nanos();
    let offset = prop_oneof![
        3 => Just(0i32),
        1 => (-(23 * 60 + 59)..=(23 * 60 + 59)).prop_map(|m: i32| m * 60),
    ];
    (min..=max, offset).prop_filter_map("representable in Go's form", |(ns, off)| {
        let utc = OffsetDateTime::from_unix_timestamp_nanos(ns).ok()?;
        let t = utc.to_offset(UtcOffset::from_whole_seconds(off).ok()?);
        (0..=9999).contains(&t.year()).then_some(t)
    })
}

fn any_data() -> impl Strategy<Value = Data> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any_service(),
        any_service(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(
            |(ttl, from_node, to_node, from_service, to_service, payload)| Data {
                ttl,
                from_node,
                to_node,
                from_service,
                to_service,
                payload: Bytes::from(payload),
            },
        )
}

fn any_update() -> impl Strategy<Value = RoutingUpdate> {
    (
        any_text(),
        any_text(),
        any_u64(),
        any_u64(),
        proptest::option::of(proptest::collection::btree_map(
            any_text(),
            any_cost(),
            0..6,
        )),
        any_text(),
        any_u64(),
    )
        .prop_map(
            |(node_id, update_id, update_epoch, update_sequence, connections, fwd, dup)| {
                RoutingUpdate {
                    node_id,
                    update_id,
                    update_epoch,
                    update_sequence,
                    connections,
                    forwarding_node: fwd,
                    suspected_duplicate: dup,
                }
            },
        )
}

fn any_ad() -> impl Strategy<Value = ServiceAdvertisement> {
    let cmd = (any_text(), any::<bool>())
        .prop_map(|(work_type, secure)| WorkCommand { work_type, secure });
    (
        any_text(),
        "[a-zA-Z0-9]{0,8}",
        any_time(),
        any::<u8>(),
        proptest::option::of(proptest::collection::btree_map(
            any_text(),
            any_text(),
            0..4,
        )),
        proptest::option::of(proptest::collection::vec(cmd, 0..4)),
        any::<bool>(),
    )
        .prop_map(
            |(node_id, service, time, conn_type, tags, work_commands, cancel)| {
                ServiceAdvertisement {
                    node_id,
                    service,
                    time,
                    conn_type,
                    tags,
                    work_commands,
                    cancel,
                }
            },
        )
}

fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any_data().prop_map(Message::Data),
        any_update().prop_map(Message::Routing),
        any_ad().prop_map(Message::ServiceAd),
        Just(Message::Reject),
    ]
}

/// What the fuzz target checks too: whatever decodes re-encodes to something that decodes to
/// the same message and encodes to the same bytes.
fn assert_reencode_stable(msg: &Message) {
    let encoded = msg.encode();
    assert!(!encoded.is_empty());
    let again = decode(&encoded).expect("our own encoding decodes");
    assert_eq!(&again, msg);
    assert_eq!(again.encode(), encoded);
}

proptest! {
    #[test]
    fn messages_round_trip(msg in any_message()) {
        let encoded = msg.encode();
        prop_assert!(!encoded.is_empty());
        let back = decode(&encoded).expect("decodes");
        prop_assert_eq!(&back, &msg);
        // Times compare as instants; the bytes also pin the offset.
        prop_assert_eq!(back.encode(), encoded.clone());
        prop_assert_eq!(decode_bytes(encoded).expect("decodes"), msg);
    }

    #[test]
    fn unreachable_round_trips(
        from_node in any_text(), to_node in any_text(), from_service in any_text(),
        to_service in any_text(), problem in any_text(),
    ) {
        let u = Unreachable { from_node, to_node, from_service, to_service, problem };
        prop_assert_eq!(Unreachable::decode(&u.encode()).expect("decodes"), u);
    }

    #[test]
    fn costs_round_trip_exactly(cost in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let text = json::format_f64(cost);
        let back: f64 = text.parse().expect("Go's float text is valid for Rust");
        prop_assert_eq!(back.to_bits(), cost.to_bits(), "{}", text);
        let mut u = spec_update();
        u.connections = Some(BTreeMap::from([("n".to_owned(), cost)]));
        let Ok(Message::Routing(r)) = decode(&u.encode()) else {
            return Err(TestCaseError::fail("decodes as a routing update"));
        };
        let got = r.connections.and_then(|c| c.get("n").copied()).expect("cost present");
        prop_assert_eq!(got.to_bits(), cost.to_bits());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(msg) = decode(&bytes) {
            assert_reencode_stable(&msg);
        }
    }

    #[test]
    fn random_json_bodies_never_panic(
        ty in 1u8..=2,
        body in "[{}\\[\\]\":,0-9a-zA-Z.eE+ \\-nulltrufas\\\\]{0,80}",
    ) {
        let mut bytes = vec![ty];
        bytes.extend_from_slice(body.as_bytes());
        if let Ok(msg) = decode(&bytes) {
            assert_reencode_stable(&msg);
        }
    }

    #[test]
    fn mutated_captures_never_panic(
        pick in any::<proptest::sample::Index>(),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>(), 0u8..3), 0..6),
        cut in any::<proptest::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let base = &ALL_CAPTURED[pick.index(ALL_CAPTURED.len())];
        let mut bytes = base.bytes.clone();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(msg) = decode(&bytes) {
            assert_reencode_stable(&msg);
        }
    }
}
