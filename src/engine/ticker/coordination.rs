//! The coordinator's part of the tick: the plan into each snapshot (and the off-plan fix),
//! declarations registered through the API, `enforce`, and the engine's own CPUs kept off
//! the exclusive agents'.

use std::sync::Arc;

use tokio::sync::watch;

use super::Ticker;
use crate::model::{Bottleneck, Fix, Snapshot};

impl Ticker {
    /// The coordinator's plan for this tick into the snapshot, and, while the host is not as
    /// planned, the bottleneck saying so and the fix that would make it so. The off-plan
    /// bottleneck needs no run of ticks: a declaration is not noise.
    pub(super) fn coordinate(&mut self, snap: &mut Snapshot) -> Option<(Bottleneck, Fix)> {
        if !self.coordinator.enabled {
            return None;
        }
        crate::coordinator::registry::overlay(&mut snap.containers.agents, &self.declarations);
        let view = crate::coordinator::plan_with(snap, &self.coordinator, &self.declarations);
        let offer = crate::coordinator::fix(&view, snap).and_then(|fix| {
            let since = *self.off_plan_since.get_or_insert(snap.seq);
            crate::coordinator::off_plan(&view, since).map(|b| (b, fix))
        });
        if offer.is_none() {
            self.off_plan_since = None;
        }
        self.keep_off_exclusive_cpus(&view);
        snap.coordinator = Some(view);
        offer
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
