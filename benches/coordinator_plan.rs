//! Planning time: the allocator for 131 agents on the 2-socket, 64-CPU fixture host
//! (issue 16's target: under 1 ms), and the whole per-tick plan from a snapshot (the
//! allocator plus checking each agent against what the host shows).

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sutazai_top::coordinator::allocate::{Request, allocate};
use sutazai_top::coordinator::{CoordinatorConfig, plan};
use sutazai_top::host::HostRoots;
use sutazai_top::host::topology::read_topology;
use sutazai_top::model::{ContainerStat, Need, Snapshot};

/// 131 agents: 24 latency agents asking for 1 or 2 exclusive CPUs (some on a given node),
/// the rest shared with priorities and memory needs.
fn requests() -> Vec<Request> {
    (0..131usize)
        .map(|i| {
            let exclusive = i < 24;
            Request {
                id: format!("{i:064x}"),
                name: format!("agent-{i:03}"),
                priority: i32::try_from(i % 10).ok(),
                need: Some(Need {
                    cpus: Some(if exclusive { 1.0 + (i % 2) as f64 } else { 0.5 }),
                    exclusive,
                    memory_bytes: Some((1 + (i % 4) as u64) << 30),
                    numa: (exclusive && i % 3 == 0).then_some((i % 2) as u32),
                    gpu_memory_bytes: None,
                }),
                need_error: None,
            }
        })
        .collect()
}

fn planning(c: &mut Criterion) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/numa64");
    let topology = read_topology(&HostRoots::under(&fixture)).unwrap();
    assert_eq!(topology.cpus.len(), 64);
    let config = CoordinatorConfig {
        reserved_cpus: "0,32".to_string(),
        ..CoordinatorConfig::default()
    };
    let requests = requests();
    c.bench_function("allocate_131_agents_64_cpus", |b| {
        b.iter(|| {
            black_box(allocate(
                black_box(&topology),
                black_box(&requests),
                &config,
            ))
        })
    });

    let mut snap = Snapshot {
        topology: Arc::new(topology),
        ..Snapshot::default()
    };
    snap.containers.agents = requests
        .iter()
        .map(|r| ContainerStat {
            id: r.id.clone(),
            name: r.name.clone(),
            state: "running".to_string(),
            priority: r.priority,
            need: r.need.clone(),
            ..ContainerStat::default()
        })
        .collect();
    c.bench_function("plan_from_snapshot_131_agents_64_cpus", |b| {
        b.iter(|| black_box(plan(black_box(&snap), &config)))
    });
}

criterion_group!(benches, planning);
criterion_main!(benches);
