//! A Go node's captured bytes (vectors/go-tcp-session.jsonl) replayed against our node over real
//! TCP: the handshake completes the way a Go peer needs it to, and the link carries routing,
//! advertisements and pings.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use receptor_mesh::backend::{LinkConfig, framing_codec, tcp};
use receptor_mesh::wire::{self, Data, Message};
use receptor_mesh::{Node, NodeConfig, ServiceName};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(20);

/// The captured messages node-b sent in scenario 1, in order, as raw bytes.
fn node_b_startup_messages() -> Result<Vec<Vec<u8>>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/go-tcp-session.jsonl"
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line)?;
        if record["scenario"] != "1-startup" || record["dir"] != "B->A" {
            continue;
        }
        let Some(hex) = record["hex"].as_str() else {
            continue;
        };
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()?;
        out.push(bytes);
    }
    Ok(out)
}

async fn next_message(
    framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
) -> Result<Message> {
    let frame = tokio::time::timeout(WAIT, framed.next())
        .await
        .context("no message from our node")?
        .context("our node closed the link")??;
    Ok(wire::decode(&frame)?)
}

#[tokio::test]
async fn go_peer_handshake_and_traffic_over_tcp() -> Result<()> {
    let captured = node_b_startup_messages()?;
    assert!(captured.len() >= 4, "capture has node-b's startup messages");

    let node = Node::spawn(NodeConfig::new("node-a"))?;
    let listener = tcp::Listener::bind("127.0.0.1:0", LinkConfig::default()).await?;
    let addr = listener.local_addr();
    node.add_backend(listener);
    let mut go = Framed::new(TcpStream::connect(addr).await?, framing_codec());

    // Our initial connect message: a routing update about ourselves with no links yet.
    let Message::Routing(initial) = next_message(&mut go).await? else {
        bail!("first message is not a routing update")
    };
    assert_eq!(
        (initial.node_id.as_str(), initial.forwarding_node.as_str()),
        ("node-a", "node-a")
    );
    assert_eq!(initial.connections, Some(Default::default()));
    assert!(
        initial.update_epoch >> 24 > 1_700_000_000,
        "epoch carries the start time in its upper bits"
    );

    // Go's initial message, its flood listing us, and its control-service advertisement.
    for message in &captured {
        go.send(Bytes::copy_from_slice(message)).await?;
    }

    // Within the 100 ms flood delay we list node-b at the agreed cost, and never drop it again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if tokio::time::Instant::now() > deadline {
            bail!("our node never listed node-b");
        }
        if let Message::Routing(update) = next_message(&mut go).await? {
            assert_eq!(update.forwarding_node, "node-a");
            if update.connections.as_ref().and_then(|c| c.get("node-b")) == Some(&1.0) {
                assert!(update.update_sequence > initial.update_sequence);
                break;
            }
        }
    }

    let status = node.status().await?;
    assert_eq!(status.connections.len(), 1);
    assert_eq!(
        (
            status.connections[0].node_id.as_str(),
            status.connections[0].cost
        ),
        ("node-b", 1.0)
    );
    assert!(
        status.advertisements.iter().any(|ad| ad.node_id == "node-b"
            && ad.service == "control"
            && ad.work_commands.as_ref().is_some_and(|w| w.len() == 3)),
        "node-b's captured advertisement is stored: {:?}",
        status.advertisements
    );

    // A ping from node-b is answered with TTL 29, as a Go node answers.
    let ping = Data {
        ttl: 29,
        from_node: wire::node_hash("node-b"),
        to_node: wire::node_hash("node-a"),
        from_service: ServiceName::try_from("Ab3dE6gH")?,
        to_service: ServiceName::try_from("ping")?,
        payload: Bytes::new(),
    };
    go.send(ping.encode()).await?;
    loop {
        if let Message::Data(reply) = next_message(&mut go).await? {
            assert_eq!(reply.ttl, 0x1d);
            assert_eq!(reply.from_node, wire::node_hash("node-a"));
            assert_eq!(reply.to_node, wire::node_hash("node-b"));
            assert_eq!(reply.from_service.as_bytes(), b"ping");
            assert_eq!(reply.to_service.as_bytes(), b"Ab3dE6gH");
            assert!(reply.payload.is_empty());
            break;
        }
    }
    node.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test]
async fn hostile_peers_are_disconnected_and_others_keep_working() -> Result<()> {
    let node = Node::spawn(NodeConfig::new("node-a"))?;
    let listener = tcp::Listener::bind("127.0.0.1:0", LinkConfig::default()).await?;
    let addr = listener.local_addr();
    node.add_backend(listener);

    let hello = |id: &str, seq: u64, links: &[(&str, f64)]| {
        wire::RoutingUpdate {
            node_id: id.into(),
            update_id: format!("{id:.4}{seq:04}"),
            update_epoch: 99 << 24,
            update_sequence: seq,
            connections: Some(links.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()),
            forwarding_node: id.into(),
            suspected_duplicate: 0,
        }
        .encode()
    };

    // A well-behaved peer that must keep its link through all of this.
    let mut good = Framed::new(TcpStream::connect(addr).await?, framing_codec());
    good.send(hello("good", 1, &[])).await?;
    good.send(hello("good", 2, &[("node-a", 1.0)])).await?;

    let hostile: Vec<(&str, Vec<Bytes>)> = vec![
        ("non-JSON routing update", vec![Bytes::from_static(b"\x01{not json")]),
        ("truncated data header", vec![hello("evil1", 1, &[]), Bytes::from_static(b"\x00\x1d\x00")]),
        ("negative cost", vec![hello("evil2", 1, &[]), hello("evil2", 2, &[("node-a", 1.0), ("x", -5.0)])]),
        ("NaN cost", vec![hello("evil3", 1, &[]), Bytes::from_static(
            b"\x01{\"NodeID\":\"evil3\",\"UpdateID\":\"abcdefgh\",\"UpdateEpoch\":1,\"UpdateSequence\":2,\"Connections\":{\"node-a\":NaN},\"ForwardingNode\":\"evil3\",\"SuspectedDuplicate\":0}",
        )]),
        ("zero cost", vec![hello("evil4", 1, &[]), hello("evil4", 2, &[("node-a", 0.0)])]),
        ("node ID change", vec![hello("evil5", 1, &[]), hello("evil6", 2, &[("node-a", 1.0)])]),
    ];
    for (what, messages) in hostile {
        let mut evil = Framed::new(TcpStream::connect(addr).await?, framing_codec());
        for message in messages {
            // A huge update can exceed a frame; sending may fail once the node hangs up.
            let _ = evil.send(message).await;
        }
        // The node closes the connection: reads end (after any queued messages).
        let closed =
            tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = evil.next().await {} })
                .await;
        assert!(closed.is_ok(), "{what}: peer was not disconnected");
    }
    // Zero-length frames are dropped without harm.
    let mut quiet = Framed::new(TcpStream::connect(addr).await?, framing_codec());
    quiet.send(Bytes::new()).await?;

    // A flood of updates from thousands of made-up nodes is absorbed (the database is bounded
    // at MAX_KNOWN_NODES; see the routing tests) and the node keeps answering.
    let mut flood = Framed::new(TcpStream::connect(addr).await?, framing_codec());
    flood.send(hello("flood", 1, &[])).await?;
    flood.send(hello("flood", 2, &[("node-a", 1.0)])).await?;
    for i in 0..2000 {
        let fake = format!("fake{i}");
        let mut update = wire::RoutingUpdate {
            node_id: fake.clone(),
            update_id: format!("f{i:07}"),
            update_epoch: 5 << 24,
            update_sequence: 1,
            connections: Some([("flood".to_owned(), 1e308)].into()),
            forwarding_node: "flood".into(),
            suspected_duplicate: 0,
        };
        update.node_id = fake;
        flood.send(update.encode()).await?;
    }
    let a = node.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.status().await?.known_connection_costs.len() < 2000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "flooded updates were not absorbed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let status = node.status().await?;
    assert!(
        status.connections.iter().any(|c| c.node_id == "good"),
        "{:?}",
        status.connections
    );
    assert!(status.connections.iter().any(|c| c.node_id == "flood"));
    let evil2 = status
        .known_connection_costs
        .get("evil2")
        .cloned()
        .unwrap_or_default();
    assert!(
        !evil2.contains_key("x"),
        "a refused update leaves no trace: {evil2:?}"
    );
    assert!(
        !status
            .connections
            .iter()
            .any(|c| c.node_id.starts_with("evil")),
        "{:?}",
        status.connections
    );
    node.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
