//! Memory pool families: per pool its space, objects, deduplication and compression, and
//! per agent what it holds and what sharing saves it.

use super::{Families, Labels, bytes, labels, ratio, unique_by};
use crate::model::Snapshot;
use sutazai_pools::{AgentUse, PoolSnapshot};

pub(super) fn pools_families(snap: &Snapshot, f: &mut Families) {
    ksm_families(snap, f);
    f.gauge(
        "pools_serving",
        None,
        "1 while this engine serves the memory pools' socket, else 0 (GET /api/pools says why).",
    )
    .push(Labels::none(), snap.pools.serving.is_some());
    let Some(store) = &snap.pools.serving else {
        return;
    };
    f.gauge(
        "pools_clients",
        None,
        "Client connections to the pools now.",
    )
    .push(Labels::none(), store.clients);
    let pools = unique_by(&store.pools, |p| &p.name);
    let gauges: [(&'static str, bool, &'static str, Pick); 8] = [
        ("pools_capacity", true, "Size of the pool.", |p| {
            p.capacity_bytes
        }),
        (
            "pools_used",
            true,
            "Objects as stored (compressed ones at their compressed size) plus writable segments.",
            |p| p.used_bytes,
        ),
        (
            "pools_physical",
            true,
            "Each object once, as stored.",
            |p| p.physical_bytes,
        ),
        (
            "pools_logical",
            true,
            "Each object once per client holding it: what private copies would take.",
            |p| p.logical_bytes,
        ),
        (
            "pools_unreferenced",
            true,
            "Objects no one references: what eviction may free.",
            |p| p.unreferenced_bytes,
        ),
        (
            "pools_segment",
            true,
            "Writable segments not sealed yet.",
            |p| p.segment_bytes,
        ),
        ("pools_objects", false, "Objects in the pool.", |p| {
            p.objects as u64
        }),
        (
            "pools_packed_objects",
            false,
            "Objects compressed now (cold, unreferenced).",
            |p| p.packed_objects as u64,
        ),
    ];
    per_pool(f, &pools, false, &gauges);
    let counters: [(&'static str, bool, &'static str, Pick); 6] = [
        (
            "pools_evictions",
            false,
            "Unreferenced objects evicted (garbage collected) since start.",
            |p| p.evictions,
        ),
        (
            "pools_evicted",
            true,
            "Bytes of the objects evicted since start.",
            |p| p.evicted_bytes,
        ),
        (
            "pools_compressions",
            false,
            "Cold objects compressed since start.",
            |p| p.compressions,
        ),
        (
            "pools_thaws",
            false,
            "Compressed objects decompressed for a get since start.",
            |p| p.thaws,
        ),
        (
            "pools_refused",
            false,
            "Puts, gets and allocations refused since start (full, quota, a client's bound).",
            |p| p.refused,
        ),
        (
            "pools_compressed_from",
            true,
            "Bytes compressed since start, before compression.",
            |p| p.compressed_from_bytes,
        ),
    ];
    per_pool(f, &pools, true, &counters);
    let dedup = f.gauge(
        "pools_dedup",
        ratio(),
        "Logical over physical bytes: copies saved by deduplication (1: none).",
    );
    for pool in &pools {
        if let Some(value) = pool.dedup_ratio() {
            dedup.push(labels([("pool", &pool.name)]), value);
        }
    }
    agent_families(&store.agents, f);
}

type Pick = fn(&PoolSnapshot) -> u64;

/// One family per figure (its name, whether in bytes, its help), a series per pool.
fn per_pool(
    f: &mut Families,
    pools: &[&PoolSnapshot],
    counter: bool,
    figures: &[(&'static str, bool, &'static str, Pick)],
) {
    for &(name, in_bytes, help, pick) in figures {
        let unit = if in_bytes { bytes() } else { None };
        let family = match counter {
            true => f.counter(name, unit, help),
            false => f.gauge(name, unit, help),
        };
        for pool in pools {
            family.push(labels([("pool", &pool.name)]), pick(pool));
        }
    }
}

fn agent_families(agents: &[AgentUse], f: &mut Families) {
    let agents = unique_by(agents, |a| (&a.agent, &a.pool));
    type Pick = fn(&AgentUse) -> u64;
    let figures: [(&'static str, &'static str, Pick); 3] = [
        (
            "pools_agent_held",
            "What the agent maps from the pool (each object it holds, whole).",
            |a| a.held_bytes,
        ),
        (
            "pools_agent_saved",
            "What sharing saves the agent: (1 - 1/k) of each object held by k clients.",
            |a| a.saved_bytes,
        ),
        (
            "pools_agent_segment",
            "The agent's writable segments not sealed yet.",
            |a| a.segment_bytes,
        ),
    ];
    for (name, help, pick) in figures {
        let family = f.gauge(name, bytes(), help);
        for a in &agents {
            family.push(labels([("agent", &a.agent), ("pool", &a.pool)]), pick(a));
        }
    }
}

/// What KSM merges for agents that hold nothing in the pools.
fn ksm_families(snap: &Snapshot, f: &mut Families) {
    let all = snap.ksm_outside_pools();
    let rows = unique_by(&all, |(agent, _)| agent);
    let merged = f.gauge(
        "agent_ksm_merging",
        bytes(),
        "Memory of an agent outside the pools that KSM merged with identical pages (/proc/<pid>/ksm_stat).",
    );
    for (agent, ksm) in rows.iter().copied() {
        merged.push(labels([("agent", agent)]), ksm.merging_bytes);
    }
    let profit = f.gauge(
        "agent_ksm_profit",
        bytes(),
        "What KSM merging saves the agent less its metadata (may be negative).",
    );
    for (agent, ksm) in rows.iter().copied() {
        profit.push(labels([("agent", agent)]), ksm.profit_bytes as f64);
    }
}
