//! Component tests: whole nodes over the in-memory backend, in paused (virtual) time.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use receptor_mesh::backend::memory::MemoryNetwork;
use receptor_mesh::backend::{Backend, LinkConfig, Session};
use receptor_mesh::packet_conn::Incoming;
use receptor_mesh::wire::{self, Data, Message, RoutingUpdate};
use receptor_mesh::{Node, NodeConfig, ServiceName};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(120);

/// Polls `check` until it returns `Some`, in virtual time, failing after [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct TestMesh {
    net: MemoryNetwork,
    nodes: HashMap<String, Node>,
}

impl TestMesh {
    fn new() -> Self {
        Self {
            net: MemoryNetwork::new(),
            nodes: HashMap::new(),
        }
    }

    fn start(&mut self, id: &str, epoch: Option<u64>) -> Result<Node> {
        let mut config = NodeConfig::new(id);
        config.epoch = epoch;
        let node = Node::spawn(config)?;
        node.add_backend(self.net.listener(id, LinkConfig::default()));
        self.nodes.insert(id.to_owned(), node.clone());
        Ok(node)
    }

    fn link(&self, from: &str, to: &str, redial: bool) -> Result<()> {
        let node = self.nodes.get(from).context("no such node")?;
        node.add_backend(self.net.dialer(from, to, redial, LinkConfig::default()));
        Ok(())
    }

    fn node(&self, id: &str) -> &Node {
        &self.nodes[id]
    }

    async fn wait_route(&self, at: &str, dest: &str, via: &str) -> Result<()> {
        let node = self.node(at).clone();
        wait_for(&format!("{at} to route {dest} via {via}"), || {
            let node = node.clone();
            async move {
                let status = node.status().await.ok()?;
                (status.routes.get(dest).map(String::as_str) == Some(via)).then_some(())
            }
        })
        .await
    }
}

#[tokio::test(start_paused = true)]
async fn five_node_line_converges() -> Result<()> {
    let mut mesh = TestMesh::new();
    let ids = ["n1", "n2", "n3", "n4", "n5"];
    for id in ids {
        mesh.start(id, None)?;
    }
    for pair in ids.windows(2) {
        mesh.link(pair[0], pair[1], true)?;
    }
    mesh.wait_route("n1", "n5", "n2").await?;
    mesh.wait_route("n5", "n1", "n4").await?;
    mesh.wait_route("n3", "n1", "n2").await?;
    mesh.wait_route("n3", "n5", "n4").await?;
    let status = mesh.node("n1").status().await?;
    assert_eq!(
        status.routes.len(),
        4,
        "n1 routes to every other node: {:?}",
        status.routes
    );
    assert_eq!(status.connections.len(), 1);
    assert_eq!(status.known_connection_costs.len(), 5);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn killed_link_is_routed_around() -> Result<()> {
    let mut mesh = TestMesh::new();
    for id in ["a", "b", "c", "d"] {
        mesh.start(id, None)?;
    }
    // A ring; the a->b link does not redial, so cutting it keeps it down.
    mesh.link("a", "b", false)?;
    mesh.link("b", "c", true)?;
    mesh.link("c", "d", true)?;
    mesh.link("d", "a", true)?;
    mesh.wait_route("a", "b", "b").await?;
    assert_eq!(mesh.net.cut("a", "b"), 1);
    mesh.wait_route("a", "b", "d").await?;
    mesh.wait_route("b", "a", "c").await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn restarted_node_with_newer_epoch_is_accepted() -> Result<()> {
    let mut mesh = TestMesh::new();
    mesh.start("a", None)?;
    mesh.start("b", None)?;
    let old_c = mesh.start("c", Some(1 << 40))?;
    mesh.link("a", "b", true)?;
    mesh.link("c", "b", true)?;
    mesh.wait_route("a", "c", "b").await?;
    old_c.shutdown(Duration::from_secs(5)).await?;
    let a = mesh.node("a").clone();
    wait_for("a to lose the edge b->c", || {
        let a = a.clone();
        async move {
            let status = a.status().await.ok()?;
            let b_row = status.known_connection_costs.get("b")?;
            (!b_row.contains_key("c")).then_some(())
        }
    })
    .await?;
    // The new incarnation has a larger epoch and starts its sequence at 1 again.
    mesh.start("c", Some((1 << 40) + (1 << 24)))?;
    mesh.link("c", "b", true)?;
    wait_for("a to learn c's new links", || {
        let a = a.clone();
        async move {
            let status = a.status().await.ok()?;
            let c_row = status.known_connection_costs.get("c")?;
            let b_row = status.known_connection_costs.get("b")?;
            (c_row.contains_key("b")
                && b_row.contains_key("c")
                && status.routes.get("c").map(String::as_str) == Some("b"))
            .then_some(())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn datagrams_cross_three_hops_both_ways() -> Result<()> {
    let mut mesh = TestMesh::new();
    for id in ["a", "b", "c", "d"] {
        mesh.start(id, None)?;
    }
    mesh.link("a", "b", true)?;
    mesh.link("b", "c", true)?;
    mesh.link("c", "d", true)?;
    mesh.wait_route("a", "d", "b").await?;
    mesh.wait_route("d", "a", "c").await?;
    let mut echo = mesh.node("d").listen(Some("echo"), None).await?;
    let mut client = mesh.node("a").listen(None, None).await?;
    client
        .send_to("d", "echo", Bytes::from_static(b"hello"))
        .await?;
    let Some(Incoming::Datagram {
        from_node,
        from_service,
        payload,
    }) = echo.recv().await
    else {
        bail!("echo service got no datagram");
    };
    assert_eq!(
        (from_node.as_str(), payload.as_ref()),
        ("a", b"hello".as_ref())
    );
    assert_eq!(from_service, client.local_service());
    echo.send_to(
        &from_node,
        &from_service.to_string_lossy(),
        Bytes::from_static(b"back"),
    )
    .await?;
    let Some(Incoming::Datagram {
        from_node, payload, ..
    }) = client.recv().await
    else {
        bail!("client got no reply");
    };
    assert_eq!(
        (from_node.as_str(), payload.as_ref()),
        ("d", b"back".as_ref())
    );

    // A service nobody listens on is reported by the destination node.
    client
        .send_to("d", "nosuch", Bytes::from_static(b"x"))
        .await?;
    let Some(Incoming::Unreachable(report)) = client.recv().await else {
        bail!("no unreachable report");
    };
    assert_eq!(
        (report.problem.as_str(), report.reported_by.as_str()),
        ("service unknown", "d")
    );

    // Ping across the mesh, and the traceroute view of it.
    let reply = mesh.node("a").ping("d", 30).await?;
    assert_eq!(reply.from, "d");
    let hop = mesh.node("a").ping("d", 2).await.expect_err("expires at c");
    assert!(
        matches!(hop, receptor_mesh::node::PingError::Unreachable { ref problem, ref from, .. } if problem == "message expired" && from == "c"),
        "{hop:?}"
    );
    let hop0 = mesh
        .node("a")
        .ping("d", 0)
        .await
        .expect_err("expires locally");
    assert!(
        matches!(hop0, receptor_mesh::node::PingError::Unreachable { ref from, .. } if from == "a"),
        "{hop0:?}"
    );
    Ok(())
}

/// A scripted peer speaking raw wire messages over an in-memory link.
async fn raw_peer(
    net: &MemoryNetwork,
    name: &str,
) -> Result<(mpsc::Receiver<Session>, CancellationToken)> {
    let (tx, rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let listener = net.listener(name, LinkConfig::default());
    let run = Box::new(listener).run(tx, cancel.clone());
    tokio::spawn(run);
    Ok((rx, cancel))
}

fn update(node: &str, via: &str, seq: u64, links: &[(&str, f64)]) -> Bytes {
    RoutingUpdate {
        node_id: node.into(),
        update_id: format!("u{node}{seq:06}"),
        update_epoch: 7 << 24,
        update_sequence: seq,
        connections: Some(
            links
                .iter()
                .map(|(n, c)| ((*n).to_owned(), *c))
                .collect::<BTreeMap<_, _>>(),
        ),
        forwarding_node: via.into(),
        suspected_duplicate: 0,
    }
    .encode()
}

#[tokio::test(start_paused = true)]
async fn hop_limit_ends_a_routing_loop() -> Result<()> {
    let net = MemoryNetwork::new();
    let a = Node::spawn(NodeConfig::new("a"))?;
    let (mut sessions, _stop) = raw_peer(&net, "x").await?;
    a.add_backend(net.dialer("a", "x", false, LinkConfig::default()));
    let mut session = sessions.recv().await.context("a dialed x")?;

    // Handshake as "x", then claim a link to "z" and speak for z too.
    session.outbound.send(update("x", "x", 1, &[])).await?;
    wait_for("a to list x", || {
        let a = a.clone();
        async move {
            a.status()
                .await
                .ok()?
                .connections
                .iter()
                .any(|c| c.node_id == "x")
                .then_some(())
        }
    })
    .await?;
    session
        .outbound
        .send(update("x", "x", 2, &[("a", 1.0), ("z", 1.0)]))
        .await?;
    session
        .outbound
        .send(update("z", "x", 1, &[("x", 1.0)]))
        .await?;
    wait_for("a to route z via x", || {
        let a = a.clone();
        async move {
            (a.status().await.ok()?.routes.get("z").map(String::as_str) == Some("x")).then_some(())
        }
    })
    .await?;

    // x bounces every data message for z straight back to a: a loop a -> x -> a -> ...
    let mut probe = a.listen(None, None).await?;
    probe
        .send_to("z", "svc", Bytes::from_static(b"loop"))
        .await?;
    let mut bounced = 0;
    let report = loop {
        tokio::select! {
            got = session.inbound.recv() => {
                let raw = got.context("a closed the link")?;
                if let Ok(Message::Data(data)) = wire::decode(&raw)
                    && data.to_node == wire::node_hash("z")
                {
                    {
                        bounced += 1;
                        assert!(bounced <= 30, "the hop limit did not stop the loop");
                        let back = Data { ttl: data.ttl.saturating_sub(1), ..data };
                        session.outbound.send(back.encode()).await?;
                    }
                }
            }
            got = probe.recv() => match got {
                Some(Incoming::Unreachable(report)) => break report,
                other => bail!("unexpected {other:?}"),
            },
        }
    };
    assert_eq!(report.problem, "message expired");
    assert!(
        bounced >= 10,
        "the message looped {bounced} times before expiring"
    );
    assert_eq!(
        ServiceName::try_from("svc")?.to_string_lossy(),
        report.to_service
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn periodic_updates_keep_links_and_silent_peers_time_out() -> Result<()> {
    let mut mesh = TestMesh::new();
    mesh.start("a", None)?;
    mesh.start("b", None)?;
    mesh.link("a", "b", true)?;
    mesh.wait_route("a", "b", "b").await?;
    // Five idle timeouts of quiet: the 10 s routing updates keep the link alive.
    tokio::time::sleep(Duration::from_secs(110)).await;
    let status = mesh.node("a").status().await?;
    assert_eq!(
        status.connections.len(),
        1,
        "link dropped while both nodes were healthy"
    );

    // A peer that completes the handshake and then falls silent is dropped after 21 s.
    let (mut sessions, _stop) = raw_peer(&mesh.net, "silent").await?;
    mesh.node("a")
        .add_backend(mesh.net.dialer("a", "silent", false, LinkConfig::default()));
    let session = sessions.recv().await.context("a dialed the silent peer")?;
    session
        .outbound
        .send(update("silent", "silent", 1, &[]))
        .await?;
    let a = mesh.node("a").clone();
    wait_for("a to establish the silent peer", || {
        let a = a.clone();
        async move {
            a.status()
                .await
                .ok()?
                .connections
                .iter()
                .any(|c| c.node_id == "silent")
                .then_some(())
        }
    })
    .await?;
    let since = tokio::time::Instant::now();
    wait_for("a to drop the silent peer", || {
        let a = a.clone();
        async move {
            (!a.status()
                .await
                .ok()?
                .connections
                .iter()
                .any(|c| c.node_id == "silent"))
            .then_some(())
        }
    })
    .await?;
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_secs(21) && waited <= Duration::from_secs(27),
        "dropped after {waited:?}"
    );
    drop(session);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn firewall_rules_drop_and_reject_data() -> Result<()> {
    use receptor_mesh::firewall::{Firewall, Rule};
    let rule = |pairs: &[(&str, &str)]| {
        Rule::parse(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    };
    let net = MemoryNetwork::new();
    let a = Node::spawn(NodeConfig::new("a"))?;
    let mut b_config = NodeConfig::new("b");
    b_config.firewall = Firewall::new(vec![
        rule(&[
            ("action", "reject"),
            ("fromnode", "a"),
            ("toservice", "ping"),
        ])?,
        rule(&[("action", "drop"), ("toservice", "/sec.*/")])?,
    ]);
    let b = Node::spawn(b_config)?;
    b.add_backend(net.listener("b", LinkConfig::default()));
    a.add_backend(net.dialer("a", "b", true, LinkConfig::default()));
    wait_for("a to route to b", || {
        let a = a.clone();
        async move {
            a.status()
                .await
                .ok()?
                .routes
                .contains_key("b")
                .then_some(())
        }
    })
    .await?;
    let refused = a.ping("b", 30).await.expect_err("b rejects pings from a");
    assert!(
        matches!(&refused, receptor_mesh::node::PingError::Unreachable { problem, from, .. } if problem == "blocked by firewall" && from == "b"),
        "{refused:?}"
    );
    // b's own ping to a is not matched by the rules.
    assert_eq!(b.ping("a", 30).await?.from, "a");
    // Dropped silently: nothing arrives and no report comes back.
    let mut secret = b.listen(Some("secret"), None).await?;
    let mut open = b.listen(Some("open"), None).await?;
    let mut client = a.listen(None, None).await?;
    client
        .send_to("b", "secret", Bytes::from_static(b"x"))
        .await?;
    client
        .send_to("b", "open", Bytes::from_static(b"y"))
        .await?;
    let Some(Incoming::Datagram { payload, .. }) = open.recv().await else {
        bail!("open got nothing")
    };
    assert_eq!(payload.as_ref(), b"y");
    let nothing = tokio::time::timeout(Duration::from_secs(5), secret.recv()).await;
    assert!(
        nothing.is_err(),
        "the dropped datagram arrived: {nothing:?}"
    );
    let no_report = tokio::time::timeout(Duration::from_secs(5), client.recv()).await;
    assert!(no_report.is_err(), "drop must be silent: {no_report:?}");
    Ok(())
}
