//! The coordinator's part of the tick: the plan into each snapshot (and the off-plan fix),
//! declarations registered through the API, `enforce`, and the engine's own CPUs kept off
//! the exclusive agents'.

use std::sync::Arc;

use tokio::sync::watch;

use super::Ticker;
use crate::coordinator::rebalance::{self, Adjustments, Imbalance, Watch};
use crate::eliminator::proposals::ProposalBook;
use crate::model::{Bottleneck, CoordinatorSnapshot, Fix, ProposalStatus, Snapshot, Verdict};

/// Rebalancing by load: the adjustments in force (from the last step applied and not
/// rolled back since) and the step proposed last. The proposal's status is the truth: a
/// step the validation or the operator rolled back takes its adjustment with it.
#[derive(Debug, Default)]
pub(super) struct Rebalancing {
    kept: Adjustments,
    step: Option<Step>,
    watch: Watch,
    /// An operator rolled a step back: the declared plan is not pushed back on its own
    /// (an operator's rollback sticks until the plan changes). `Some(None)` until the
    /// declared plan's changes are known, then those changes.
    held: Option<Option<Vec<crate::model::Intent>>>,
}

#[derive(Debug)]
struct Step {
    /// Known once the book took the offer.
    proposal: Option<u64>,
    imbalance: Imbalance,
    /// In force before it, and with it.
    previous: Adjustments,
    adjust: Adjustments,
    applied: bool,
    /// When it was offered (snapshot clock, and the tick).
    at_ms: u64,
    since_seq: u64,
}

impl Rebalancing {
    /// The adjustments in force, after following the last step's proposal.
    fn in_force(&mut self, proposals: &ProposalBook) -> Adjustments {
        if let Some(step) = &mut self.step {
            let status = step
                .proposal
                .and_then(|id| proposals.get(id))
                .map(|p| &p.status);
            match status {
                Some(ProposalStatus::Proposed | ProposalStatus::Applying) => {}
                Some(ProposalStatus::Applied { .. }) => {
                    step.applied = true;
                    self.kept = step.adjust.clone();
                }
                // Superseded by a later plan, which was made with it and carried it.
                Some(ProposalStatus::Stale { .. }) if step.applied => {}
                Some(ProposalStatus::RolledBack { .. }) => {
                    // Validation rolled it back (a verdict against it): the declared plan
                    // comes back. Anyone else did: that rollback sticks.
                    let judged_bad =
                        step.proposal
                            .and_then(|id| proposals.get(id))
                            .is_some_and(|p| {
                                matches!(
                                    p.validation.verdict,
                                    Some(Verdict::DidNotHelp { .. } | Verdict::Regressed { .. })
                                )
                            });
                    if !judged_bad {
                        self.held = Some(None);
                    }
                    self.kept = step.previous.clone();
                    self.step = None;
                    self.watch.reset();
                }
                _ => {
                    // Rolled back, failed, dismissed, gone stale unapplied, or forgotten.
                    self.kept = step.previous.clone();
                    self.step = None;
                    self.watch.reset();
                }
            }
        }
        self.kept.clone()
    }

    /// Whether `fix` (the declared plan's) waits because an operator rolled a step back: the
    /// first fix after that rollback is held, and so is every same one after it.
    fn holds(&mut self, fix: &Fix) -> bool {
        match &mut self.held {
            None => false,
            Some(held @ None) => {
                *held = Some(fix.intents.clone());
                true
            }
            Some(Some(intents)) if *intents == fix.intents => true,
            Some(Some(_)) => {
                self.held = None; // the plan changed
                false
            }
        }
    }

    /// After the book took an offer: which proposal a new step became (none: the book
    /// refused it, and the step is dropped).
    pub(super) fn note_offered(&mut self, proposals: &ProposalBook) {
        if let Some(step) = &mut self.step
            && step.proposal.is_none()
        {
            step.proposal = proposals.open_of(rebalance::STRATEGY).map(|p| p.id);
            if step.proposal.is_none() {
                self.step = None;
            }
        }
    }

    /// The step waiting for the operator, if any.
    fn open(&self, proposals: &ProposalBook) -> Option<&Step> {
        self.step.as_ref().filter(|s| {
            s.proposal
                .and_then(|id| proposals.get(id))
                .is_some_and(|p| p.status.is_open())
        })
    }
}

impl Ticker {
    /// The coordinator's plan for this tick into the snapshot, and, while the host is not as
    /// planned, the bottleneck saying so and the fix that would make it so. The off-plan
    /// bottleneck needs no run of ticks: a declaration is not noise.
    pub(super) fn coordinate(&mut self, snap: &mut Snapshot) -> Option<(Bottleneck, Fix)> {
        if !self.coordinator.enabled {
            return None;
        }
        crate::coordinator::registry::overlay(&mut snap.containers.agents, &self.declarations);
        let adjust = self.rebalancing.in_force(&self.proposals);
        let view = self.plan(snap, &adjust);
        // While a plan is being applied the host is between two plans: nothing to offer.
        let applying = self.proposals.list().iter().any(|p| {
            p.status == ProposalStatus::Applying && crate::coordinator::is_plan(&p.fix.strategy)
        });
        if applying {
            self.keep_off_exclusive_cpus(&view);
            snap.coordinator = Some(view);
            return None;
        }
        // A plan a rebalance carried (the host not read since it applied) is not offered again.
        let carried = |fix: &Fix| self.proposals.carried(fix, crate::coordinator::is_plan);
        let fix = crate::coordinator::fix(&view, snap);
        if fix.is_none() {
            self.rebalancing.held = None; // in place: nothing held any more
        }
        let fix = fix.filter(|fix| !carried(fix) && !self.rebalancing.holds(fix));
        let mut offer = fix.and_then(|fix| {
            let since = *self.off_plan_since.get_or_insert(snap.seq);
            crate::coordinator::off_plan(&view, since).map(|b| (b, fix))
        });
        if offer.is_none() {
            self.off_plan_since = None;
            offer = self.rebalance(snap, &view, &adjust);
        }
        self.keep_off_exclusive_cpus(&view);
        snap.coordinator = Some(view);
        offer
    }

    fn plan(&self, snap: &Snapshot, adjust: &Adjustments) -> CoordinatorSnapshot {
        let inputs = crate::coordinator::Inputs {
            declared: &self.declarations,
            adjustments: adjust.clone(),
            parent: self.shared_parent_read(),
        };
        crate::coordinator::plan_from(snap, &self.coordinator, &inputs)
    }

    /// The shared parent's CPUs as the host has them now (one small file); `None` when
    /// there is none, or it cannot be read (removed under us: the plan leaves it out).
    fn shared_parent_read(&self) -> Option<crate::model::SharedParent> {
        let (cgroup, target) = self.shared_parent.as_ref()?;
        let file = self.roots.sys.join(target).join("cpuset.cpus");
        let text = std::fs::read_to_string(&file)
            .map_err(|err| tracing::debug!(file = %file.display(), %err, "shared parent unread"))
            .ok()?;
        Some(crate::model::SharedParent {
            cgroup: cgroup.clone(),
            target: target.clone(),
            cpus_read: crate::host::parse_cpu_list(text.trim()),
            cpus: Vec::new(),
        })
    }

    /// While the plan is in place: a step of rebalancing once an imbalance has held its
    /// window (and the last step's window has passed), or the open step again while its
    /// imbalance holds (so it does not go stale).
    fn rebalance(
        &mut self,
        snap: &Snapshot,
        view: &CoordinatorSnapshot,
        adjust: &Adjustments,
    ) -> Option<(Bottleneck, Fix)> {
        // A step departs from what was declared: medium risk, which the mode may rule out.
        let allowed = crate::model::Risk::Medium.allowed_in(snap.mode);
        if !self.coordinator.rebalance || !self.manages_host || !allowed {
            return None;
        }
        let window_ms = self.coordinator.rebalance_window_secs.saturating_mul(1000);
        let found = rebalance::assess(snap, view, self.coordinator.min_shared_cpus);
        if let Some(step) = self.rebalancing.open(&self.proposals) {
            let same = found
                .as_ref()
                .is_some_and(|f| f.id == step.imbalance.id && f.delta == step.imbalance.delta);
            if !same {
                return None; // it goes stale with its bottleneck
            }
            let candidate = self.plan(snap, &step.adjust);
            let fix = rebalance::fix(&candidate, snap, &step.imbalance)?;
            return Some((step.imbalance.bottleneck(step.since_seq), fix));
        }
        let settling = self
            .rebalancing
            .step
            .as_ref()
            .is_some_and(|s| snap.taken_at_ms.saturating_sub(s.at_ms) < window_ms);
        if settling {
            self.rebalancing.watch.reset();
            return None;
        }
        let imbalance = self
            .rebalancing
            .watch
            .sustained(snap.taken_at_ms, found, window_ms)?;
        let mut next = adjust.clone();
        *next.entry(imbalance.id.clone()).or_default() += imbalance.delta;
        next.retain(|_, delta| *delta != 0);
        let candidate = self.plan(snap, &next);
        if !rebalance::took(&candidate, view, &imbalance) {
            return None;
        }
        let fix = rebalance::fix(&candidate, snap, &imbalance)?;
        tracing::info!(agent = %imbalance.name, delta = imbalance.delta, "the coordinator proposes a rebalance");
        let bottleneck = imbalance.bottleneck(snap.seq);
        self.rebalancing.step = Some(Step {
            proposal: None,
            imbalance,
            previous: adjust.clone(),
            adjust: next,
            applied: false,
            at_ms: snap.taken_at_ms,
            since_seq: snap.seq,
        });
        Some((bottleneck, fix))
    }

    /// The engine's own threads stay off the CPUs exclusive agents hold (once the host shows
    /// the grant), and get the CPUs they started with back when none does.
    fn keep_off_exclusive_cpus(&mut self, view: &crate::model::CoordinatorSnapshot) {
        let held: Vec<u32> = view
            .agents
            .iter()
            .filter(|a| a.in_place && a.state == crate::model::AllocationState::Exclusive)
            .flat_map(|a| a.cpus.iter().copied())
            .collect();
        let Some(started_with) = self
            .own_cpus
            .as_ref()
            .map(|(start, _)| start.clone())
            .or_else(|| {
                (!held.is_empty())
                    .then(crate::host::own_affinity::current)
                    .flatten()
            })
        else {
            return; // never moved, and nothing to keep off
        };
        let mut ours: Vec<u32> = started_with
            .iter()
            .copied()
            .filter(|c| !held.contains(c))
            .collect();
        if ours.is_empty() {
            ours = started_with.clone(); // better shared than nowhere to run
        }
        if self.own_cpus.as_ref().is_some_and(|(_, now)| *now == ours) {
            return;
        }
        match crate::host::own_affinity::confine_self(&ours) {
            Ok(threads) => {
                tracing::info!(
                    cpus = %crate::host::format_cpu_list(&ours),
                    threads,
                    "the engine's own CPUs (kept off the exclusive agents')"
                );
                self.own_cpus = Some((started_with, ours));
            }
            Err(err) => tracing::warn!(%err, "the engine could not move off the exclusive CPUs"),
        }
    }

    /// Register a declaration (replacing one for the same agent) and save the list; on a
    /// failed save nothing changes and the notice says why.
    pub(super) fn declare(&mut self, declaration: crate::model::Declaration) {
        if !self.coordinator.enabled || !self.manages_host {
            self.set_notice(
                "declarations need the coordinator on an engine that runs for the host".to_string(),
                true,
            );
            return;
        }
        let mut next = self.declarations.clone();
        next.retain(|d| d.agent != declaration.agent);
        let text = format!(
            "declared for {}: {}",
            declaration.agent,
            declaration.need.describe()
        );
        next.push(declaration);
        self.save_declarations(next, text);
    }

    pub(super) fn undeclare(&mut self, agent: &str) {
        let mut next = self.declarations.clone();
        next.retain(|d| d.agent != agent);
        if next.len() == self.declarations.len() {
            self.set_notice(format!("nothing was declared for {agent}"), true);
            return;
        }
        self.save_declarations(next, format!("declaration for {agent} removed"));
    }

    fn save_declarations(&mut self, next: Vec<crate::model::Declaration>, text: String) {
        match crate::coordinator::registry::save(&self.optimizer.state_dir, &next) {
            Ok(()) => {
                self.declarations = next;
                tracing::info!("{text}");
                self.set_notice(text, false);
            }
            Err(err) => self.set_notice(format!("declarations not saved: {err}"), true),
        }
    }

    /// With `[coordinator] enforce`: apply the plan's open proposal at once (no baseline
    /// wait, no cooldown), so an agent that starts has its allocation by the next tick.
    pub(super) fn enforce_plan(&mut self, snapshots: &watch::Sender<Arc<Snapshot>>) {
        if !self.coordinator.enforce || !self.manages_host {
            return;
        }
        if let Some(id) = self
            .proposals
            .open_of(crate::coordinator::STRATEGY)
            .map(|p| p.id)
        {
            tracing::info!(id, "the coordinator enforces its plan");
            self.start_apply(id, snapshots);
        }
    }
}
