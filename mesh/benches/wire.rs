//! Codec and routing micro-benchmarks: `cargo bench -p receptor-mesh --bench wire`.

use std::collections::BTreeMap;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use receptor_mesh::ServiceName;
use receptor_mesh::routing::RoutingTable;
use receptor_mesh::wire::{self, Data, RoutingUpdate};

fn data_message(len: usize) -> Data {
    Data {
        ttl: 29,
        from_node: wire::node_hash("node-a"),
        to_node: wire::node_hash("node-b"),
        from_service: ServiceName::try_from("Xy12Ab34").expect("8 bytes"),
        to_service: ServiceName::try_from("control").expect("7 bytes"),
        payload: Bytes::from(vec![0x5a; len]),
    }
}

fn update(node: &str, links: usize) -> RoutingUpdate {
    RoutingUpdate {
        node_id: node.to_owned(),
        update_id: "k3J9aZ0q".to_owned(),
        update_epoch: 29_021_228_237_503_710,
        update_sequence: 7,
        connections: Some(
            (0..links)
                .map(|i| (format!("node{i}"), 1.0))
                .collect::<BTreeMap<_, _>>(),
        ),
        forwarding_node: node.to_owned(),
        suspected_duplicate: 0,
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("data");
    let message = data_message(1416);
    let encoded = message.encode();
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode 1452", |b| b.iter(|| black_box(&message).encode()));
    group.bench_function("decode 1452", |b| {
        b.iter(|| wire::decode(black_box(&encoded)))
    });
    group.finish();

    let routing = update("node1", 20);
    let encoded = routing.encode();
    c.bench_function("routing update encode (20 links)", |b| {
        b.iter(|| black_box(&routing).encode())
    });
    c.bench_function("routing update decode (20 links)", |b| {
        b.iter(|| wire::decode(black_box(&encoded)))
    });
    c.bench_function("node_hash", |b| {
        b.iter(|| wire::node_hash(black_box("controller-node-17")))
    });
}

fn routing(c: &mut Criterion) {
    // A 200-node mesh: a ring with chords, as a mid-size fleet might look.
    let mut table = RoutingTable::new("n0", 1);
    table.link_up("n1", 1.0);
    let now = tokio::time::Instant::now();
    for i in 1..200u64 {
        let links = [(i + 199) % 200, (i + 1) % 200, (i * 7) % 200];
        let connections = links
            .iter()
            .map(|j| (format!("n{j}"), 1.0 + (j % 3) as f64))
            .collect();
        let mut u = update(&format!("n{i}"), 0);
        u.update_id = format!("u{i:07}");
        u.connections = Some(connections);
        table.handle_update(&u, now);
    }
    c.bench_function("recompute routes (200 nodes)", |b| {
        b.iter(|| table.recompute())
    });
}

criterion_group!(benches, codec, routing);
criterion_main!(benches);
