//! The allocator on built topologies, its invariants over random ones, and the plan and fix
//! made from a snapshot.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;

use super::allocate::{Plan, Request, allocate, shares_for};
use super::config::CoordinatorConfig;
use super::*;
use crate::model::{AllocationState, LogicalCpu, Need, NumaNode, Topology};

/// `nodes` nodes of `cores` physical cores with `smt` threads each. CPU ids go as Linux
/// numbers them on two-socket hosts: first every core's first thread, then the siblings.
fn topology(nodes: u32, cores: u32, smt: u32) -> Topology {
    let per_thread = nodes * cores;
    let mut cpus = Vec::new();
    for thread in 0..smt {
        for node in 0..nodes {
            for core in 0..cores {
                let id = thread * per_thread + node * cores + core;
                let siblings = (0..smt)
                    .map(|t| t * per_thread + node * cores + core)
                    .collect();
                cpus.push(LogicalCpu {
                    id,
                    online: true,
                    package: node,
                    core,
                    node,
                    siblings,
                });
            }
        }
    }
    cpus.sort_by_key(|c| c.id);
    let node_list = (0..nodes)
        .map(|node| NumaNode {
            id: node,
            cpus: cpus
                .iter()
                .filter(|c| c.node == node)
                .map(|c| c.id)
                .collect(),
            mem_total_kb: 16 << 20,
            distances: vec![],
        })
        .collect();
    Topology {
        cpus,
        nodes: node_list,
        packages: nodes,
        physical_cores: nodes * cores,
        ..Topology::default()
    }
}

fn exclusive(name: &str, priority: i32, cpus: f64) -> Request {
    Request {
        id: format!("id-{name}"),
        name: name.to_string(),
        priority: Some(priority),
        need: Some(Need {
            cpus: Some(cpus),
            exclusive: true,
            ..Need::default()
        }),
        need_error: None,
    }
}

fn plain(name: &str) -> Request {
    Request {
        id: format!("id-{name}"),
        name: name.to_string(),
        priority: None,
        need: None,
        need_error: None,
    }
}

fn config() -> CoordinatorConfig {
    CoordinatorConfig::default()
}

#[test]
fn exclusive_agents_get_whole_cores_on_the_fullest_node_that_fits() {
    // 2 nodes × 4 cores × 2 threads: node 0 = CPUs 0-3 and 8-11, node 1 = 4-7 and 12-15.
    let topo = topology(2, 4, 2);
    let plan = allocate(
        &topo,
        &[
            exclusive("big", 10, 4.0),
            exclusive("small", 5, 2.0),
            plain("batch"),
        ],
        &config(),
    );
    let big = &plan.grants[0];
    assert_eq!(big.state, AllocationState::Exclusive);
    // Two whole cores: each with its SMT sibling.
    assert_eq!(big.cpus, vec![0, 1, 8, 9]);
    assert_eq!(big.mems, vec![0]);
    // Node 0 has 4 free left, node 1 has 8: the fuller node 0 still fits 2.
    let small = &plan.grants[1];
    assert_eq!(small.cpus, vec![2, 10]);
    assert_eq!(small.mems, vec![0]);
    // Everyone else shares the rest.
    assert_eq!(plan.shared, vec![3, 4, 5, 6, 7, 11, 12, 13, 14, 15]);
    assert_eq!(plan.grants[2].state, AllocationState::Shared);
    assert_eq!(plan.grants[2].cpus, plan.shared);
    assert_eq!(
        plan.grants[2].mems,
        Vec::<u32>::new(),
        "shared agents keep every node"
    );
}

#[test]
fn an_odd_count_takes_a_split_core_before_splitting_a_whole_one() {
    let topo = topology(1, 4, 2); // cores {0,4} {1,5} {2,6} {3,7}
    let plan = allocate(
        &topo,
        &[exclusive("a", 9, 1.0), exclusive("b", 8, 3.0)],
        &config(),
    );
    assert_eq!(plan.grants[0].cpus, vec![0]);
    // b takes the whole core {1,5}, then 4 (the sibling of a's CPU), not half of {2,6}.
    assert_eq!(plan.grants[1].cpus, vec![1, 4, 5]);
}

#[test]
fn reserved_cpus_are_never_given_and_the_shared_pool_never_empties() {
    let topo = topology(1, 4, 1);
    let config = CoordinatorConfig {
        reserved_cpus: "0".to_string(),
        min_shared_cpus: 1,
        ..config()
    };
    let plan = allocate(
        &topo,
        &[exclusive("a", 9, 2.0), exclusive("b", 8, 1.0), plain("c")],
        &config,
    );
    assert_eq!(plan.reserved, vec![0]);
    assert_eq!(plan.grants[0].cpus, vec![1, 2]);
    match &plan.grants[1].state {
        AllocationState::Pending { why } => {
            assert!(why.contains("min_shared_cpus = 1"), "{why}");
        }
        other => panic!("b should wait for the shared pool's sake, got {other:?}"),
    }
    assert_eq!(plan.shared, vec![3]);
    // The pending agent runs in the shared pool meanwhile.
    assert_eq!(plan.grants[1].cpus, vec![3]);
}

#[test]
fn what_does_not_fit_on_one_node_is_pending_with_the_free_counts() {
    let topo = topology(2, 2, 1); // node 0: 0,1; node 1: 2,3
    let plan = allocate(
        &topo,
        &[
            exclusive("first", 9, 1.0),
            exclusive("second", 8, 1.0),
            exclusive("wide", 7, 2.0),
        ],
        &config(),
    );
    // first and second both go to the fuller node 0, keeping node 1 whole...
    assert_eq!(plan.grants[0].cpus, vec![0]);
    assert_eq!(plan.grants[1].cpus, vec![1]);
    // ...but then 2 on one node would leave no shared CPU.
    match &plan.grants[2].state {
        AllocationState::Pending { why } => assert!(why.contains("shared pool"), "{why}"),
        other => panic!("{other:?}"),
    }
    let plan = allocate(
        &topo,
        &[exclusive("first", 9, 1.0), {
            let mut r = exclusive("on1", 8, 2.0);
            if let Some(n) = r.need.as_mut() {
                n.numa = Some(0);
            }
            r
        }],
        &CoordinatorConfig {
            min_shared_cpus: 1,
            ..config()
        },
    );
    match &plan.grants[1].state {
        AllocationState::Pending { why } => {
            assert_eq!(why, "wants 2 exclusive CPUs on node 0; 1 free there");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn higher_priority_is_served_first_whatever_the_order() {
    let topo = topology(1, 3, 1);
    let plan = allocate(
        &topo,
        &[exclusive("low", 1, 2.0), exclusive("high", 9, 2.0)],
        &config(),
    );
    assert!(matches!(
        plan.grants[0].state,
        AllocationState::Pending { .. }
    ));
    assert_eq!(plan.grants[1].state, AllocationState::Exclusive);
}

#[test]
fn impossible_declarations_are_misdeclared_naming_the_label() {
    let topo = topology(2, 2, 1);
    let mut on_node_7 = exclusive("n7", 1, 1.0);
    if let Some(n) = on_node_7.need.as_mut() {
        n.numa = Some(7);
    }
    let mut huge_memory = plain("mem");
    huge_memory.need = Some(Need {
        memory_bytes: Some(1 << 50),
        ..Need::default()
    });
    let mut refused = plain("typo");
    refused.need_error = Some("sutazai.memory = \"4x\": not a size".to_string());
    let plan = allocate(
        &topo,
        &[
            exclusive("greedy", 1, 80.0),
            on_node_7,
            huge_memory,
            refused,
        ],
        &config(),
    );
    let why = |i: usize| match &plan.grants[i].state {
        AllocationState::Misdeclared { why } => why.clone(),
        other => panic!("{i}: {other:?}"),
    };
    assert!(why(0).contains("sutazai.cpus = 80"), "{}", why(0));
    assert!(
        why(1).contains("sutazai.numa = 7: the host has nodes 0-1"),
        "{}",
        why(1)
    );
    assert!(why(2).contains("sutazai.memory"), "{}", why(2));
    assert!(why(3).contains("4x"), "{}", why(3));
    // Misdeclared agents still run, in the shared pool.
    assert_eq!(
        plan.grants[0].cpus,
        Vec::<u32>::new(),
        "nothing exclusive: every CPU"
    );
}

#[test]
fn memory_is_claimed_by_priority_and_limited_with_headroom() {
    let mut topo = topology(1, 4, 1);
    topo.nodes[0].mem_total_kb = 8 << 20; // 8 GiB
    let with_memory = |name: &str, priority: i32, gib: u64| Request {
        need: Some(Need {
            memory_bytes: Some(gib << 30),
            ..Need::default()
        }),
        priority: Some(priority),
        ..plain(name)
    };
    let plan = allocate(
        &topo,
        &[with_memory("a", 1, 4), with_memory("b", 9, 6)],
        &config(),
    );
    assert_eq!(
        plan.grants[1].memory_limit_bytes,
        Some((6u64 << 30) * 110 / 100)
    );
    match &plan.grants[0].state {
        AllocationState::Pending { why } => assert!(why.contains("2.0 GiB is left"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.grants[0].memory_limit_bytes, None);
}

#[test]
fn an_unread_topology_plans_nothing_and_says_so() {
    let plan = allocate(&Topology::default(), &[exclusive("a", 1, 1.0)], &config());
    match &plan.grants[0].state {
        AllocationState::Pending { why } => assert!(why.contains("topology"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(plan.grants[0].cpus.is_empty() && plan.grants[0].cpu_shares.is_none());
}

#[test]
fn weights_are_proportional_to_priority() {
    assert_eq!(shares_for(5), 1024);
    assert_eq!(shares_for(10), 2048);
    assert_eq!(shares_for(1), 204);
    assert_eq!(shares_for(-4), 204);
    assert_eq!(shares_for(i32::MAX), 262_144);
}

#[test]
fn with_nothing_declared_or_reserved_the_host_is_left_as_it_is() {
    let mut a = plain("a");
    a.priority = Some(9);
    let plan = allocate(&topology(2, 2, 2), &[a.clone(), plain("b")], &config());
    assert!(
        plan.grants
            .iter()
            .all(|g| g.cpus.is_empty() && g.mems.is_empty())
    );
    assert_eq!(plan.grants[0].cpu_shares, None, "no weights either");
    assert_eq!(plan.shared.len(), 8);
    // Once something is reserved, weights follow priority.
    let reserved = CoordinatorConfig {
        reserved_cpus: "0".to_string(),
        ..config()
    };
    let plan = allocate(&topology(2, 2, 2), &[a, plain("b")], &reserved);
    assert_eq!(plan.grants[0].cpu_shares, Some(shares_for(9)));
}

// ---------------------------------------------------------------------------------------
// Invariants over random topologies and registries
// ---------------------------------------------------------------------------------------

fn any_request() -> impl Strategy<Value = Request> {
    (
        0u32..1000,
        -2i32..12,
        prop_oneof![Just(None), (0.5f64..12.0).prop_map(Some)],
        any::<bool>(),
        prop_oneof![Just(None), (0u32..5).prop_map(Some)],
        prop_oneof![Just(None), (1u64..64).prop_map(|g| Some(g << 30))],
    )
        .prop_map(|(n, priority, cpus, excl, numa, memory)| {
            let cpus = cpus.map(|c: f64| if excl { c.ceil() } else { c });
            Request {
                id: format!("id-{n}"),
                name: format!("agent-{n}"),
                priority: Some(priority),
                need: Some(Need {
                    cpus,
                    exclusive: excl && cpus.is_some(),
                    memory_bytes: memory,
                    numa,
                    gpu_memory_bytes: None,
                }),
                need_error: None,
            }
        })
}

fn any_case() -> impl Strategy<Value = (Topology, Vec<Request>, CoordinatorConfig)> {
    (
        1u32..=4,
        1u32..=8,
        1u32..=2,
        proptest::collection::vec(any_request(), 0..24),
        proptest::collection::vec(0u32..64, 0..4),
        1usize..4,
        proptest::collection::vec(0u32..64, 0..3),
    )
        .prop_map(
            |(nodes, cores, smt, mut requests, reserved, min_shared, offline)| {
                // Agents are told apart by id (a container's, a process agent's name): two
                // requests with one id are one agent, not a case to plan.
                let mut ids = std::collections::HashSet::new();
                requests.retain(|r: &Request| ids.insert(r.id.clone()));
                let mut topo = topology(nodes, cores, smt);
                for cpu in &mut topo.cpus {
                    if offline.contains(&cpu.id) && cpu.id != 0 {
                        cpu.online = false;
                    }
                }
                let reserved: Vec<String> = reserved.iter().map(u32::to_string).collect();
                let config = CoordinatorConfig {
                    reserved_cpus: reserved.join(","),
                    min_shared_cpus: min_shared,
                    ..CoordinatorConfig::default()
                };
                (topo, requests, config)
            },
        )
}

fn check_invariants(
    topo: &Topology,
    requests: &[Request],
    config: &CoordinatorConfig,
    plan: &Plan,
) {
    let online: BTreeSet<u32> = topo
        .cpus
        .iter()
        .filter(|c| c.online)
        .map(|c| c.id)
        .collect();
    let reserved: BTreeSet<u32> = plan.reserved.iter().copied().collect();
    assert_eq!(plan.grants.len(), requests.len());
    assert!(!plan.shared.is_empty(), "the shared pool is never empty");
    let shared: BTreeSet<u32> = plan.shared.iter().copied().collect();
    let mut owned = BTreeSet::new();
    for (request, grant) in requests.iter().zip(&plan.grants) {
        if grant.state != AllocationState::Exclusive {
            continue;
        }
        let n = request
            .need
            .as_ref()
            .and_then(Need::exclusive_cpus)
            .unwrap_or(0);
        assert_eq!(
            grant.cpus.len(),
            n,
            "{}: exactly what it asked",
            request.name
        );
        for cpu in &grant.cpus {
            assert!(online.contains(cpu), "an offline CPU {cpu} was given");
            assert!(!reserved.contains(cpu), "reserved CPU {cpu} was given");
            assert!(
                !shared.contains(cpu),
                "CPU {cpu} is both exclusive and shared"
            );
            assert!(owned.insert(*cpu), "CPU {cpu} went to two exclusive agents");
        }
        let nodes: BTreeSet<u32> = grant
            .cpus
            .iter()
            .filter_map(|c| topo.cpus.iter().find(|x| x.id == *c))
            .map(|c| c.node)
            .collect();
        assert_eq!(
            grant.mems,
            nodes.iter().copied().collect::<Vec<_>>(),
            "mems follow CPUs"
        );
        let biggest_node = topo
            .nodes
            .iter()
            .map(|node| {
                topo.cpus
                    .iter()
                    .filter(|c| c.online && c.node == node.id)
                    .count()
            })
            .max()
            .unwrap_or(0);
        if n <= biggest_node {
            assert_eq!(
                nodes.len(),
                1,
                "{} fits one node, so it is on one",
                request.name
            );
        }
        if let Some(node) = request.need.as_ref().and_then(|n| n.numa) {
            assert_eq!(nodes.into_iter().collect::<Vec<_>>(), vec![node]);
        }
    }
    if owned.len() + reserved.len() < online.len() {
        assert!(
            shared.len() >= config.min_shared_cpus.min(online.len() - reserved.len()),
            "the shared pool fell under min_shared_cpus"
        );
    }
    let everything: BTreeSet<u32> = owned
        .union(&shared)
        .chain(reserved.iter())
        .copied()
        .collect();
    assert_eq!(everything, online, "every online CPU is somebody's");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn no_cpu_twice_and_never_an_empty_shared_pool((topo, requests, config) in any_case()) {
        let plan = allocate(&topo, &requests, &config);
        check_invariants(&topo, &requests, &config, &plan);
        // The same registry in another order gives every agent the same grant.
        let mut reversed = requests.clone();
        reversed.reverse();
        let again = allocate(&topo, &reversed, &config);
        let mut back = again.grants.clone();
        back.reverse();
        prop_assert_eq!(back, plan.grants);
    }
}

// ---------------------------------------------------------------------------------------
// From a snapshot: the plan, what is in place, and the fix
// ---------------------------------------------------------------------------------------

fn agent(name: &str, labels: &[(&str, &str)], cpuset: &str) -> ContainerStat {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let class = crate::containers::agent::class_of(&labels);
    let need = crate::model::need::need_from_labels(
        &labels,
        class == Some(crate::model::AgentClass::Latency),
    );
    ContainerStat {
        id: format!("{name}-id"),
        name: name.to_string(),
        state: "running".to_string(),
        class,
        priority: crate::containers::agent::priority_of(&labels),
        need: need.clone().ok().flatten(),
        need_error: need.err(),
        labels,
        cpuset_cpus: cpuset.to_string(),
        source: UsageSource::CgroupV2,
        ..ContainerStat::default()
    }
}

#[test]
fn a_snapshot_becomes_a_plan_and_one_fix_for_what_differs() {
    let mut snap = Snapshot {
        topology: Arc::new(topology(1, 4, 1)),
        seq: 3,
        ..Snapshot::default()
    };
    snap.containers.agents = vec![
        agent(
            "llm",
            &[("sutazai.class", "latency"), ("sutazai.cpus", "2")],
            "",
        ),
        agent("batch", &[("sutazai.class", "batch")], "2-3"),
        agent("typo", &[("sutazai.cpus", "two")], ""),
    ];
    let view = plan(&snap, &CoordinatorConfig::default());
    let by_name = |n: &str| view.agents.iter().find(|a| a.name == n).unwrap();
    assert_eq!(by_name("llm").state, AllocationState::Exclusive);
    assert_eq!(by_name("llm").cpus, vec![0, 1]);
    assert!(!by_name("llm").in_place);
    assert!(by_name("batch").in_place, "already on the shared pool 2-3");
    assert_eq!(by_name("typo").state.label(), "misdeclared");
    assert_eq!(view.owner_of(0), "llm");
    assert_eq!(view.owner_of(3), "shared");

    let off = off_plan(&view, 3).expect("llm and typo are not in place");
    assert_eq!(off.kind, BottleneckKind::OffPlan);
    let fix = fix(&view, &snap).expect("a fix");
    assert_eq!(fix.strategy, STRATEGY);
    let llm: Vec<_> = fix
        .intents
        .iter()
        .filter(|i| matches!(&i.target, IntentTarget::Container { name, .. } if name == "llm"))
        .map(|i| (i.knob.clone(), i.after.clone()))
        .collect();
    // Its memory node follows its CPUs (on one node that is every node, but the plan says
    // it all the same).
    assert_eq!(
        llm,
        vec![
            (Knob::ContainerCpusetCpus, "0-1".to_string()),
            (Knob::ContainerCpusetMems, "0".to_string()),
        ]
    );
    // The whole plan rides along: batch is in place, but its shared cpuset is part of the
    // plan, so a rollback of the plan before this one cannot leave it behind.
    let batch: Vec<_> = fix
        .intents
        .iter()
        .filter(|i| matches!(&i.target, IntentTarget::Container { name, .. } if name == "batch"))
        .map(|i| (i.knob.clone(), i.after.clone()))
        .collect();
    assert_eq!(batch, vec![(Knob::ContainerCpusetCpus, "2-3".to_string())]);
    assert!(
        fix.summary
            .starts_with("allocate as declared: 2 agents to change"),
        "{}",
        fix.summary
    );

    // Once the host shows the plan, nothing is off plan for llm.
    snap.containers.agents[0].cpuset_cpus = "0-1".to_string();
    snap.containers.agents[0].cpuset_mems = "0".to_string();
    snap.containers.agents[2].cpuset_cpus = "2-3".to_string();
    let view = plan(&snap, &CoordinatorConfig::default());
    assert!(view.out_of_place().next().is_none(), "{view:?}");
    assert!(off_plan(&view, 4).is_none());
}

/// A need registered through the API for an agent not running yet holds its CPUs: the
/// agents that share are moved off them before it starts.
#[test]
fn a_registered_agent_not_yet_running_holds_its_cpus() {
    let mut snap = Snapshot {
        topology: Arc::new(topology(1, 4, 1)),
        ..Snapshot::default()
    };
    snap.containers.agents = vec![agent("batch", &[("sutazai.class", "batch")], "")];
    let declared = vec![crate::model::Declaration {
        agent: "llm".to_string(),
        need: Need {
            cpus: Some(1.0),
            exclusive: true,
            ..Need::default()
        },
        priority: Some(9),
    }];
    let view = plan_with(&snap, &CoordinatorConfig::default(), &declared);
    let llm = view.agents.iter().find(|a| a.name == "llm").unwrap();
    assert!(llm.waiting && llm.in_place);
    assert_eq!(
        (llm.state.label(), llm.cpus.clone()),
        ("exclusive", vec![0])
    );
    assert_eq!(view.owner_of(0), "llm");
    assert_eq!(view.shared, vec![1, 2, 3]);
    assert_eq!(view.declared, declared);
    let fix = fix(&view, &snap).expect("batch moves off CPU 0");
    let afters: Vec<_> = fix
        .intents
        .iter()
        .map(|i| (i.knob.clone(), i.after.clone()))
        .collect();
    assert_eq!(afters, vec![(Knob::ContainerCpusetCpus, "1-3".to_string())]);
}

// ---------------------------------------------------------------------------------------
// Rebalancing by load
// ---------------------------------------------------------------------------------------

/// Four CPUs with the given busy percents, host CPU pressure `waiting`, and agents whose
/// cpusets already show the plan (`exclusive`'s CPUs for each exclusive agent).
fn loaded(busy: [f32; 4], waiting: f32, agents: Vec<ContainerStat>) -> Snapshot {
    let mut snap = Snapshot {
        topology: Arc::new(topology(1, 4, 1)),
        ..Snapshot::default()
    };
    snap.cpu.per_cpu = busy
        .iter()
        .enumerate()
        .map(|(id, busy)| {
            let times = crate::model::CpuTimes {
                user: *busy,
                idle: 100.0 - busy,
                ..Default::default()
            };
            (id as u32, times)
        })
        .collect();
    snap.pressure.cpu = Some(crate::model::PsiResource {
        some: crate::model::PsiLine {
            avg10: waiting,
            ..Default::default()
        },
        full: None,
    });
    snap.containers.agents = agents;
    // Settle the host on the plan, so the plan is in place.
    let view = plan(&snap, &CoordinatorConfig::default());
    for a in &mut snap.containers.agents {
        let planned = view.agents.iter().find(|p| p.id == a.id).unwrap();
        a.cpuset_cpus = crate::host::format_cpu_list(&planned.cpus);
        a.cpuset_mems = crate::host::format_cpu_list(&planned.mems);
        a.cpu_weight = planned.cpu_shares.map(|s| weight_as_read(s, a.source));
    }
    assert!(
        plan(&snap, &CoordinatorConfig::default())
            .out_of_place()
            .next()
            .is_none()
    );
    snap
}

#[test]
fn an_idle_exclusive_agent_lends_a_cpu_to_a_saturated_pool_and_a_latency_agent_keeps_one() {
    let embed = agent(
        "embed",
        &[
            ("sutazai.class", "batch"),
            ("sutazai.cpus", "2"),
            ("sutazai.exclusive", "true"),
        ],
        "",
    );
    let llm = agent(
        "llm",
        &[("sutazai.class", "latency"), ("sutazai.cpus", "1")],
        "",
    );
    let batch = agent("batch", &[("sutazai.class", "batch")], "");
    let snap = loaded([3.0, 2.0, 1.0, 99.0], 45.0, vec![embed, llm, batch]);
    let config = CoordinatorConfig::default();
    let view = plan(&snap, &config);
    let by_name =
        |v: &CoordinatorSnapshot, n: &str| v.agents.iter().find(|a| a.name == n).unwrap().clone();
    assert_eq!(by_name(&view, "embed").cpus, vec![0, 1]);
    assert_eq!(by_name(&view, "llm").cpus, vec![2]);
    assert_eq!(view.shared, vec![3]);

    let found = rebalance::assess(&snap, &view, 1).expect("the pool is saturated");
    assert_eq!((found.name.as_str(), found.delta), ("embed", -1));
    let adjust: rebalance::Adjustments = [(found.id.clone(), -1)].into();
    let next = plan_from(
        &snap,
        &config,
        &Inputs {
            adjustments: adjust.clone(),
            ..Inputs::default()
        },
    );
    assert_eq!(by_name(&next, "embed").cpus.len(), 1);
    assert_eq!(next.shared.len(), 2, "one CPU more in the pool: {next:?}");
    assert!(rebalance::took(&next, &view, &found));
    let fix = rebalance::fix(&next, &snap, &found).unwrap();
    assert_eq!(fix.strategy, rebalance::STRATEGY);
    assert_eq!(fix.risk, Risk::Medium);
    assert_eq!(fix.measure, Measure::HostPsiCpuSome);
    assert_eq!(by_name(&next, "embed").rebalanced, -1);
    assert!(next.rebalanced() && !view.rebalanced());

    // Lent down to one CPU, embed lends its last one too (it is batch); a latency agent
    // alone never lends its only core.
    let lent = plan_from(
        &snap,
        &config,
        &Inputs {
            adjustments: [(found.id.clone(), -2)].into(),
            ..Inputs::default()
        },
    );
    assert_eq!(by_name(&lent, "embed").state, AllocationState::Shared);
    let only_llm = loaded(
        [99.0, 99.0, 1.0, 99.0],
        45.0,
        vec![
            agent(
                "llm",
                &[("sutazai.class", "latency"), ("sutazai.cpus", "1")],
                "",
            ),
            agent("batch", &[("sutazai.class", "batch")], ""),
        ],
    );
    let view = plan(&only_llm, &config);
    assert!(rebalance::assess(&only_llm, &view, 1).is_none(), "{view:?}");

    // No pressure, no rebalance: a busy pool whose tasks do not wait is fine.
    let calm = loaded([3.0, 2.0, 1.0, 99.0], 2.0, snap.containers.agents.clone());
    assert!(rebalance::assess(&calm, &plan(&calm, &config), 1).is_none());
}

#[test]
fn a_saturated_exclusive_agent_gets_a_cpu_more_from_an_idle_pool_never_below_the_minimum() {
    let mut embed = agent(
        "embed",
        &[
            ("sutazai.class", "batch"),
            ("sutazai.cpus", "1"),
            ("sutazai.exclusive", "true"),
        ],
        "",
    );
    embed.cpu_pct = 100.0;
    embed.pressure.cpu = Some(crate::model::PsiResource {
        some: crate::model::PsiLine {
            avg10: 40.0,
            ..Default::default()
        },
        full: None,
    });
    let snap = loaded(
        [100.0, 5.0, 5.0, 5.0],
        0.0,
        vec![embed.clone(), agent("batch", &[], "")],
    );
    let config = CoordinatorConfig::default();
    let view = plan(&snap, &config);
    let found = rebalance::assess(&snap, &view, 1).expect("embed is saturated");
    assert_eq!((found.name.as_str(), found.delta), ("embed", 1));
    let next = plan_from(
        &snap,
        &config,
        &Inputs {
            adjustments: [(found.id.clone(), 1)].into(),
            ..Inputs::default()
        },
    );
    assert!(rebalance::took(&next, &view, &found), "{next:?}");
    assert_eq!(next.shared.len(), 2);
    // The pool at its minimum gives nothing.
    assert!(rebalance::assess(&snap, &view, 3).is_none());
    // An agent that does not use its CPU itself is not starved by the plan.
    let mut idle_embed = snap.clone();
    idle_embed.containers.agents[0].cpu_pct = 10.0;
    assert!(rebalance::assess(&idle_embed, &view, 1).is_none());
}

#[test]
fn an_imbalance_is_proposed_only_once_it_has_held_its_window() {
    let imbalance = |id: &str, delta| rebalance::Imbalance {
        id: id.to_string(),
        name: id.to_string(),
        delta,
        evidence: vec![],
    };
    let mut watch = rebalance::Watch::default();
    assert!(
        watch
            .sustained(0, Some(imbalance("a", -1)), 30_000)
            .is_none()
    );
    assert!(
        watch
            .sustained(29_000, Some(imbalance("a", -1)), 30_000)
            .is_none()
    );
    assert!(
        watch
            .sustained(30_000, Some(imbalance("a", -1)), 30_000)
            .is_some()
    );
    // Another agent or direction starts again; a tick without it forgets it.
    assert!(
        watch
            .sustained(31_000, Some(imbalance("b", -1)), 30_000)
            .is_none()
    );
    assert!(
        watch
            .sustained(62_000, Some(imbalance("b", 1)), 30_000)
            .is_none()
    );
    assert!(watch.sustained(63_000, None, 30_000).is_none());
    assert!(
        watch
            .sustained(94_000, Some(imbalance("b", 1)), 30_000)
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------
// The shared parent
// ---------------------------------------------------------------------------------------

#[test]
fn the_shared_parent_follows_the_pool_around_the_agents_inside_it() {
    let mut snap = Snapshot {
        topology: Arc::new(topology(1, 4, 1)),
        ..Snapshot::default()
    };
    let mut batch = agent("batch", &[("sutazai.class", "batch")], "0-3");
    batch.cgroup = Some("/sutazai-shared/batch-id".to_string());
    let mut greedy = agent(
        "greedy",
        &[("sutazai.cpus", "1"), ("sutazai.exclusive", "true")],
        "0-3",
    );
    greedy.cgroup = Some("/sutazai-shared/greedy-id".to_string());
    snap.containers.agents = vec![
        agent(
            "llm",
            &[("sutazai.class", "latency"), ("sutazai.cpus", "2")],
            "",
        ),
        batch,
        greedy,
    ];
    let inputs = Inputs {
        parent: Some(SharedParent {
            cgroup: "/sutazai-shared".to_string(),
            target: "fs/cgroup/cpuset/sutazai-shared".into(),
            cpus_read: vec![0, 1, 2, 3],
            cpus: vec![],
        }),
        ..Inputs::default()
    };
    let view = plan_from(&snap, &CoordinatorConfig::default(), &inputs);
    assert_eq!(view.shared, vec![2, 3]);
    let parent = view.parent.as_ref().unwrap();
    assert_eq!(parent.cpus, vec![2, 3]);
    assert!(view.parent_out_of_place());
    // Under the shared parent, no CPU of its own: pending, saying why.
    let greedy = view.agents.iter().find(|a| a.name == "greedy").unwrap();
    match &greedy.state {
        AllocationState::Pending { why } => assert!(why.contains("--cgroup-parent"), "{why}"),
        other => panic!("{other:?}"),
    }

    let planned = fix(&view, &snap).unwrap();
    let parent_steps: Vec<(usize, &str)> = planned
        .intents
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i.target, IntentTarget::Cgroup { .. }))
        .map(|(at, i)| (at, i.after.as_str()))
        .collect();
    // Grown to every CPU first, shrunk to the pool last, the agents in between.
    assert_eq!(
        parent_steps,
        vec![(0, "0-3"), (planned.intents.len() - 1, "2-3")]
    );
    let batch_at = planned
        .intents
        .iter()
        .position(|i| matches!(&i.target, IntentTarget::Container { name, .. } if name == "batch"))
        .unwrap();
    assert!(batch_at > 0 && batch_at < planned.intents.len() - 1);

    // In place once the host shows it; nothing to do, parent included.
    for a in &mut snap.containers.agents {
        let planned = view.agents.iter().find(|p| p.id == a.id).unwrap();
        a.cpuset_cpus = crate::host::format_cpu_list(&planned.cpus);
        a.cpuset_mems = crate::host::format_cpu_list(&planned.mems);
        a.cpu_weight = planned.cpu_shares.map(|s| weight_as_read(s, a.source));
    }
    let settled = Inputs {
        parent: Some(SharedParent {
            cpus_read: vec![2, 3],
            ..view.parent.clone().unwrap()
        }),
        ..Inputs::default()
    };
    let view = plan_from(&snap, &CoordinatorConfig::default(), &settled);
    assert!(!view.parent_out_of_place());
    assert!(fix(&view, &snap).is_none(), "{view:?}");
}
