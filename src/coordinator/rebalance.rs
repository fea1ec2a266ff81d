//! Rebalancing by load (the original design's `rebalance_resources("load_based")`). The plan
//! gives what was declared; the load may say it is wrong:
//!
//! - the shared pool is saturated and tasks wait for a CPU (host PSI) while an exclusive
//!   agent's CPUs sit idle: that agent lends one CPU to the pool (a latency agent keeps at
//!   least one: its quiet core is the point of declaring);
//! - an exclusive agent is saturated and its tasks wait while the shared pool idles: it gets
//!   one CPU more, never leaving the pool below `min_shared_cpus`.
//!
//! Either must hold for `rebalance_window_secs` before the changed plan is proposed, one CPU
//! at a time, as a medium-risk fix judged on host CPU pressure like any other: kept if it
//! fell, rolled back if not. Everything here is pure over the snapshot.

use std::collections::{BTreeMap, HashMap};

use crate::model::{
    AgentClass, AllocationState, Bottleneck, BottleneckKind, CoordinatorSnapshot, Evidence, Fix,
    Measure, Need, Risk, Snapshot, Subject,
};

/// The strategy name on rebalancing fixes.
pub const STRATEGY: &str = "coordinator-rebalance";

/// Changes to the exclusive CPUs declared, by agent id: -1 lends one to the shared pool,
/// +1 gives one more.
pub type Adjustments = BTreeMap<String, i32>;

/// The shared pool is under pressure above this busy share of its CPUs...
const POOL_BUSY_PCT: f64 = 90.0;
/// ...with tasks waiting for a CPU this share of the time (host PSI cpu some avg10).
const WAITING_PCT: f64 = 20.0;
/// An exclusive agent's CPUs sit idle below this busy share.
const IDLE_PCT: f64 = 20.0;
/// An exclusive agent is saturated above this busy share of its CPUs...
const SATURATED_PCT: f64 = 95.0;
/// ...and its own tasks wait this share of the time (its cgroup PSI), or this long per
/// second run (its run-queue delay).
const AGENT_WAITING_PCT: f64 = 10.0;
const AGENT_WAIT_PER_RUN: f64 = 0.1;
/// The shared pool idles below this busy share.
const POOL_IDLE_PCT: f64 = 30.0;

/// A plan that does not fit the load: whose grant to change, by how many CPUs, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Imbalance {
    pub id: String,
    pub name: String,
    pub delta: i32,
    pub evidence: Vec<Evidence>,
}

impl Imbalance {
    pub fn describe(&self) -> String {
        if self.delta < 0 {
            format!(
                "rebalance: {} lends one of its idle exclusive CPUs to the saturated shared pool",
                self.name
            )
        } else {
            format!(
                "rebalance: {} gets one more exclusive CPU from the idle shared pool",
                self.name
            )
        }
    }

    pub fn bottleneck(&self, since_seq: u64) -> Bottleneck {
        Bottleneck {
            kind: BottleneckKind::LoadImbalance,
            subject: Subject::Host,
            evidence: self.evidence.clone(),
            since_seq,
        }
    }
}

/// The declaration with its adjustment: exclusive CPUs `delta` more (a need lent down to no
/// CPU is shared instead). Only exclusive needs change.
pub fn adjusted(need: Option<Need>, delta: i32) -> Option<Need> {
    let mut need = need?;
    let Some(cpus) = need.exclusive_cpus() else {
        return Some(need);
    };
    let cpus = cpus as i64 + i64::from(delta);
    if cpus <= 0 {
        need.exclusive = false;
    } else {
        need.cpus = Some(cpus as f64);
    }
    Some(need)
}

fn evidence(metric: String, value: f64, threshold: f64) -> Evidence {
    Evidence {
        metric,
        value,
        threshold,
        unit: "%".to_string(),
    }
}

/// What the load says of the plan in `view` this tick; `None` when it fits, or when there
/// are no per-CPU figures yet.
pub fn assess(snap: &Snapshot, view: &CoordinatorSnapshot, min_shared: usize) -> Option<Imbalance> {
    let busy: HashMap<u32, f64> = snap
        .cpu
        .per_cpu
        .iter()
        .filter(|(_, times)| times.has_data())
        .map(|(id, times)| (*id, f64::from(times.busy())))
        .collect();
    let mean = |cpus: &[u32]| -> Option<f64> {
        let values: Vec<f64> = cpus.iter().filter_map(|c| busy.get(c).copied()).collect();
        (!values.is_empty() && values.len() == cpus.len())
            .then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let pool = mean(&view.shared)?;
    let host_waiting = snap.pressure.cpu.map_or(0.0, |p| f64::from(p.some.avg10));
    let exclusive = view
        .agents
        .iter()
        .filter(|a| a.state == AllocationState::Exclusive && a.in_place && !a.waiting)
        .filter_map(|a| Some((a, mean(&a.cpus)?)));
    let stat = |id: &str| snap.containers.agents.iter().find(|c| c.id == id);
    let pool_evidence = |threshold| evidence("shared pool CPUs busy".into(), pool, threshold);

    if pool >= POOL_BUSY_PCT && host_waiting >= WAITING_PCT {
        let lender = exclusive
            .clone()
            .filter(|(a, busy)| {
                let latency = stat(&a.id).is_some_and(|s| s.class == Some(AgentClass::Latency));
                *busy <= IDLE_PCT && (a.cpus.len() > 1 || !latency)
            })
            .min_by(|(_, x), (_, y)| x.total_cmp(y));
        if let Some((a, idle)) = lender {
            return Some(Imbalance {
                id: a.id.clone(),
                name: a.name.clone(),
                delta: -1,
                evidence: vec![
                    pool_evidence(POOL_BUSY_PCT),
                    evidence("host PSI cpu some avg10".into(), host_waiting, WAITING_PCT),
                    evidence(format!("{}'s exclusive CPUs busy", a.name), idle, IDLE_PCT),
                ],
            });
        }
    }
    if pool <= POOL_IDLE_PCT && view.shared.len() > min_shared {
        let starved = exclusive
            .filter(|(a, busy)| {
                let Some(s) = stat(&a.id) else {
                    return false;
                };
                let own_pct = f64::from(s.cpu_pct) / a.cpus.len().max(1) as f64;
                let waits = s
                    .pressure
                    .cpu
                    .is_some_and(|p| f64::from(p.some.avg10) >= AGENT_WAITING_PCT)
                    || s.run_delay
                        .is_some_and(|d| d.wait_per_run >= AGENT_WAIT_PER_RUN)
                    || host_waiting >= WAITING_PCT;
                *busy >= SATURATED_PCT && own_pct >= SATURATED_PCT && waits
            })
            .max_by(|(_, x), (_, y)| x.total_cmp(y));
        if let Some((a, saturated)) = starved {
            return Some(Imbalance {
                id: a.id.clone(),
                name: a.name.clone(),
                delta: 1,
                evidence: vec![
                    evidence(
                        format!("{}'s exclusive CPUs busy", a.name),
                        saturated,
                        SATURATED_PCT,
                    ),
                    pool_evidence(POOL_IDLE_PCT),
                ],
            });
        }
    }
    None
}

/// Whether the plan made with an imbalance's adjustment really changes that agent's grant
/// the way asked (a CPU more that does not fit would leave it pending instead).
pub fn took(
    view: &CoordinatorSnapshot,
    before: &CoordinatorSnapshot,
    imbalance: &Imbalance,
) -> bool {
    let cpus_of = |v: &CoordinatorSnapshot| {
        v.agents
            .iter()
            .find(|a| a.id == imbalance.id)
            .map(|a| (a.state.clone(), a.cpus.len()))
    };
    match (cpus_of(before), cpus_of(view)) {
        (Some((_, had)), Some((AllocationState::Exclusive, has))) if imbalance.delta > 0 => {
            has > had
        }
        (Some((_, had)), Some((AllocationState::Exclusive, has))) => has < had,
        (Some(_), Some((AllocationState::Shared, _))) => imbalance.delta < 0,
        _ => false,
    }
}

/// The fix that puts the rebalanced plan `view` in place: the whole plan, as the
/// coordinator's own fix carries it, judged on host CPU pressure.
pub fn fix(view: &CoordinatorSnapshot, snap: &Snapshot, imbalance: &Imbalance) -> Option<Fix> {
    let mut fix = super::fix(view, snap)?;
    fix.strategy = STRATEGY.to_string();
    fix.summary = imbalance.describe();
    // It departs from what was declared: the operator (or the mode) decides.
    fix.risk = Risk::Medium;
    fix.metric = "host PSI cpu some avg10".to_string();
    fix.measure = Measure::HostPsiCpuSome;
    Some(fix)
}

/// Holds an imbalance until it has lasted a window: the same agent, the same direction.
#[derive(Debug, Default)]
pub struct Watch {
    held: Option<(String, i32, u64)>,
}

impl Watch {
    /// The imbalance once it has held `window_ms` (by the snapshots' clock), else `None`.
    pub fn sustained(
        &mut self,
        now_ms: u64,
        found: Option<Imbalance>,
        window_ms: u64,
    ) -> Option<Imbalance> {
        let Some(found) = found else {
            self.held = None;
            return None;
        };
        match &self.held {
            Some((id, delta, since)) if *id == found.id && *delta == found.delta => {
                (now_ms.saturating_sub(*since) >= window_ms).then_some(found)
            }
            _ => {
                self.held = Some((found.id.clone(), found.delta, now_ms));
                None
            }
        }
    }

    /// Start counting again (a step was just proposed or applied).
    pub fn reset(&mut self) {
        self.held = None;
    }
}
