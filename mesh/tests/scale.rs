//! Scale tests: simulated meshes converge, and a peer flooding the mesh with fake nodes is
//! contained. The figures (time, traffic, memory) come from `benches/scale.rs`.

mod sim;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use receptor_mesh::routing::MAX_KNOWN_NODES;
use receptor_mesh::wire::RoutingUpdate;
use receptor_mesh::{Node, NodeConfig};
use sim::{Mesh, Shape, Traffic};
use tokio_util::sync::CancellationToken;

/// Every shape of the benchmark, at 100 nodes, converges; afterwards the mesh falls quiet, and
/// the routing traffic it took stays within three floods of every node's update.
#[tokio::test(start_paused = true)]
async fn hundred_node_meshes_converge() -> Result<()> {
    for kind in sim::SHAPES {
        let shape = Shape::build(kind, 100, 1)?;
        let mesh = Mesh::start(&shape)?;
        mesh.converge(Duration::from_secs(60))
            .await
            .with_context(|| format!("{kind} mesh"))?;
        let counts = mesh
            .quiet(Duration::from_secs(1), Duration::from_secs(60))
            .await?;
        // Flooding one update costs 2E - (N - 1) messages: the originator sends on each of its
        // links, every other node forwards the first copy on all links but the arrival one.
        // Converging takes the initial message of each link end, a flood of every node's
        // update when its links come up and one more when it has learnt the other nodes;
        // anything beyond a third round would be a flooding storm.
        let (n, e) = (shape.len() as u64, shape.links.len() as u64);
        let round = n * (2 * e - (n - 1));
        let routing = counts.routing_messages();
        assert!(
            routing <= 3 * round + 2 * e,
            "{kind}: {routing} routing messages to converge, {:.1} rounds of floods",
            routing as f64 / round as f64
        );
        for node in &mesh.nodes {
            let status = node.status().await?;
            assert_eq!(status.known_connection_costs.len(), shape.len(), "{kind}");
        }
        mesh.shutdown().await;
    }
    Ok(())
}

fn fake_update(node: &str, id: usize, sequence: u64, links: &[&str]) -> Bytes {
    RoutingUpdate {
        node_id: node.to_owned(),
        update_id: format!("f{id:x}"),
        update_epoch: 7 << 24,
        update_sequence: sequence,
        connections: Some(links.iter().map(|n| ((*n).to_owned(), 1.0)).collect()),
        forwarding_node: "evil".to_owned(),
        suspected_duplicate: 0,
    }
    .encode()
}

/// `RssAnon` of this process in kB.
fn anon_kb() -> Result<u64> {
    Ok(sim::rss_kb()?.1)
}

/// A peer announcing 100,000 fake nodes (each listing the peer and the next fake, so all are
/// reachable) fills the database of the node it is linked to, and of that node's neighbour,
/// only up to [`MAX_KNOWN_NODES`]; memory stays bounded; and pings between the two honest
/// nodes are answered while the flood goes on. Once the peer is gone, a new node is admitted
/// and routed (the fakes, unreachable, are evicted). Real time on purpose: a ping that waited
/// for the flood to be processed would hit its 10 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_announcing_100k_fake_nodes_is_contained() -> Result<()> {
    const FAKES: usize = 100_000;
    let traffic = Arc::new(Traffic::default());
    let a = Node::spawn(NodeConfig::new("a"))?;
    let b = Node::spawn(NodeConfig::new("b"))?;
    sim::link(&a, &b, &traffic);
    let stop = CancellationToken::new();
    let evil = sim::link_raw(&a, "evil", &traffic, &stop);
    let ping_ok = |node: &Node| {
        let node = node.clone();
        async move { node.ping("b", 30).await.map(|reply| reply.from == "b") }
    };
    // a and b see each other before the flood starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !matches!(ping_ok(&a).await, Ok(true)) {
        if tokio::time::Instant::now() > deadline {
            bail!("a never reached b");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let anon_before = anon_kb()?;

    // The flood: the handshake, then one update per fake node, then (until told to stop)
    // the same nodes again with newer sequence numbers, so the flood lasts as long as needed.
    let outbound = evil.outbound.clone();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = {
        let stop = stop.clone();
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let names: Vec<String> = (0..FAKES).map(|i| format!("fake{i}")).collect();
            // The handshake, then evil's own links: a and the first 1,000 fakes.
            let mut evil_links = vec!["a"];
            evil_links.extend(names.iter().take(1000).map(String::as_str));
            outbound
                .send(fake_update("evil", usize::MAX - 1, 1, &["a"]))
                .await?;
            outbound
                .send(fake_update("evil", usize::MAX, 2, &evil_links))
                .await?;
            let mut id = 0;
            for round in 1u64.. {
                for i in 0..FAKES {
                    // Each fake lists its neighbours in a ring, so every fake is reachable.
                    let prev = &names[(i + FAKES - 1) % FAKES];
                    let next = &names[(i + 1) % FAKES];
                    let message = fake_update(&names[i], id, round, &["evil", prev, next]);
                    id += 1;
                    tokio::select! {
                        () = stop.cancelled() => return Ok::<_, anyhow::Error>(()),
                        sent_ok = outbound.send(message) => {
                            // Stopping ends the link's pump too, which may close the channel
                            // before this task sees the cancellation.
                            if sent_ok.is_err() && stop.is_cancelled() {
                                return Ok(());
                            }
                            sent_ok?;
                        }
                    }
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok(())
        })
    };
    let _events = evil.inbound; // drained by nobody: a's queue to evil fills and a drops.

    // Wait until a's database is full, pinging b all along.
    let mut pings = 0;
    let full_at = loop {
        let reply = ping_ok(&a).await;
        assert!(
            matches!(reply, Ok(true)),
            "ping a -> b failed during the flood: {reply:?}"
        );
        pings += 1;
        let known = a.status().await?.known_connection_costs.len();
        assert!(known <= MAX_KNOWN_NODES, "a knows {known} nodes");
        if known == MAX_KNOWN_NODES {
            break sent.load(std::sync::atomic::Ordering::Relaxed);
        }
        if flood.is_finished() {
            bail!("the flood ended early: {:?}", flood.await);
        }
    };
    // Keep flooding through all 100,000 fakes, then through them all again with newer
    // sequence numbers, still pinging. Once the database and the remembered update IDs are
    // full, memory must stop growing.
    let mut anon_first_round = 0;
    for target in [FAKES, 2 * FAKES] {
        while sent.load(std::sync::atomic::Ordering::Relaxed) < target {
            let reply = ping_ok(&a).await;
            assert!(
                matches!(reply, Ok(true)),
                "ping a -> b failed during the flood: {reply:?}"
            );
            pings += 1;
            if flood.is_finished() {
                bail!("the flood ended early: {:?}", flood.await);
            }
        }
        if target == FAKES {
            anon_first_round = anon_kb()?;
        }
    }
    let reply = b.ping("a", 30).await?;
    assert_eq!(reply.from, "a");
    stop.cancel();
    flood.await??;

    for node in [&a, &b] {
        let status = node.status().await?;
        let known = status.known_connection_costs.len();
        assert!(
            known <= MAX_KNOWN_NODES,
            "{} knows {known} nodes",
            node.id()
        );
    }
    assert_eq!(
        a.status().await?.known_connection_costs.len(),
        MAX_KNOWN_NODES
    );
    let anon_after = anon_kb()?;
    let grown_mib = anon_after.saturating_sub(anon_before) / 1024;
    eprintln!(
        "database full after {full_at} fake updates; {pings} pings answered during the flood; \
         anonymous memory {anon_before} kB -> {anon_first_round} kB after the first 100,000 \
         -> {anon_after} kB after the second"
    );
    // Two nodes holding 10,000 nodes each plus 100,000 remembered update IDs: tens of MiB.
    assert!(grown_mib < 128, "memory grew by {grown_mib} MiB");
    let second_round_mib = anon_after.saturating_sub(anon_first_round) / 1024;
    assert!(
        second_round_mib < 16,
        "memory still grew by {second_round_mib} MiB over the second 100,000 updates"
    );

    // The hostile peer is gone (`stop` ended its link). A well-behaved node joining behind b
    // is new to a's full database: a evicts the fakes, unreachable now, admits it and routes
    // to it.
    let c = Node::spawn(NodeConfig::new("c"))?;
    sim::link(&c, &b, &traffic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = a.ping("c", 30).await;
        if matches!(&reply, Ok(reply) if reply.from == "c") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("a never reached c after the flood: {reply:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = a.status().await?;
    assert_eq!(status.routes.get("c").map(String::as_str), Some("b"));
    let known: Vec<&str> = status
        .known_connection_costs
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(known, ["a", "b", "c"], "the fakes were not evicted");
    Ok(())
}
