//! The proposal book: each fix proposed for a bottleneck, and where it stands.
//!
//! One proposal per (bottleneck, strategy) while the bottleneck holds. A proposal not yet
//! applied goes stale when its bottleneck clears or when the mode no longer allows its risk
//! (lowering the mode never leaves a proposal that could not be applied). Applied ones stay
//! until rolled back; their batch in the journal is the truth of what is on the host.

use super::strategy::{Context, EliminationStrategy, propose_all};
use super::validation::RecentSnapshots;
use crate::model::{Bottleneck, Proposal, ProposalStatus, Snapshot, Subject, Validation};
use crate::model::{Fix, Risk, Verdict};

/// Closed proposals kept for the pane and the report (older ones are dropped).
const KEEP_CLOSED: usize = 50;

#[derive(Default)]
pub struct ProposalBook {
    next_id: u64,
    proposals: Vec<Proposal>,
    /// (strategy, subject) whose fix did not help: not proposed again before the instant
    /// (ms), and how many times that happened (the pause doubles each time).
    suppressed: std::collections::HashMap<(String, String), (u64, u32)>,
    /// The last ticks, for baselines.
    recent: RecentSnapshots,
}

/// The first pause after a fix did not help; it doubles with each repeat.
const FIRST_BACKOFF_MS: u64 = 60_000;

fn subject_key(subject: &Subject) -> String {
    match subject {
        Subject::Host => "host".to_string(),
        Subject::Container { id, .. } => format!("container:{id}"),
        Subject::Process { id, .. } => format!("process:{}:{}", id.pid, id.start_time),
    }
}

fn same_origin(p: &Proposal, b: &Bottleneck, strategy: &str) -> bool {
    p.bottleneck.kind == b.kind
        && subject_key(&p.bottleneck.subject) == subject_key(&b.subject)
        && p.fix.strategy == strategy
}

impl ProposalBook {
    pub fn list(&self) -> &[Proposal] {
        &self.proposals
    }

    pub fn get(&self, id: u64) -> Option<&Proposal> {
        self.proposals.iter().find(|p| p.id == id)
    }

    /// Whether a proposal of a strategy `family` accepts, applying, applied or rolled back,
    /// already carries every change of `fix` (so offering it again would only repeat it).
    pub fn carried(&self, fix: &Fix, family: impl Fn(&str) -> bool) -> bool {
        self.proposals.iter().any(|p| {
            family(&p.fix.strategy)
                && matches!(
                    p.status,
                    ProposalStatus::Applying
                        | ProposalStatus::Applied { .. }
                        | ProposalStatus::RolledBack { .. }
                )
                && carries(&p.fix, fix)
        })
    }

    pub fn set_status(&mut self, id: u64, status: ProposalStatus) {
        if let Some(p) = self.proposals.iter_mut().find(|p| p.id == id) {
            p.status = status;
        }
    }

    /// The operator (or auto-fix) approved it: the baseline is the ticks up to now, before
    /// anything changes.
    pub fn applying(&mut self, id: u64) {
        if let Some(p) = self.proposals.iter_mut().find(|p| p.id == id) {
            p.status = ProposalStatus::Applying;
            p.validation = Validation::baseline(&p.fix.measure, &self.recent);
        }
    }

    /// The proposal was applied as `batch` at `now_ms`: its validation window starts.
    pub fn applied(&mut self, id: u64, batch: u64, now_ms: u64) {
        if let Some(p) = self.proposals.iter_mut().find(|p| p.id == id) {
            p.status = ProposalStatus::Applied { batch };
            p.validation.applied_at_ms = Some(now_ms);
        }
    }

    /// Record this tick's reading of every applied proposal still being validated.
    pub fn record_after(&mut self, snap: &Snapshot) {
        for p in &mut self.proposals {
            if matches!(p.status, ProposalStatus::Applied { .. }) && p.validation.verdict.is_none()
            {
                p.validation
                    .record(&p.fix.measure, self.recent.before(snap), snap);
            }
        }
    }

    /// Verdicts for applied proposals whose window (`window_ms`) has passed at `now_ms`:
    /// (proposal id, batch, verdict). A fix that did not help has its (strategy, subject)
    /// suppressed with a doubling backoff.
    pub fn due_verdicts(
        &mut self,
        now_ms: u64,
        window_ms: u64,
        min_improvement: f64,
    ) -> Vec<(u64, u64, Verdict)> {
        let mut due = Vec::new();
        for p in &mut self.proposals {
            let ProposalStatus::Applied { batch } = p.status else {
                continue;
            };
            let Some(applied_at) = p.validation.applied_at_ms else {
                continue;
            };
            if p.validation.verdict.is_some() || now_ms < applied_at.saturating_add(window_ms) {
                continue;
            }
            let verdict = p.validation.judge(min_improvement);
            p.validation.verdict = Some(verdict.clone());
            due.push((p.id, batch, verdict));
        }
        for (id, _, verdict) in &due {
            if verdict.rolls_back() {
                self.suppress(*id, now_ms);
            }
        }
        due
    }

    /// Do not propose this proposal's (strategy, subject) again for a doubling pause (after
    /// it failed, turned out already in place, or did not help).
    pub fn suppress(&mut self, id: u64, now_ms: u64) {
        let Some(p) = self.proposals.iter().find(|p| p.id == id) else {
            return;
        };
        let key = (p.fix.strategy.clone(), subject_key(&p.bottleneck.subject));
        let entry = self.suppressed.entry(key).or_insert((0, 0));
        entry.1 = entry.1.saturating_add(1);
        entry.0 = now_ms.saturating_add(FIRST_BACKOFF_MS << (entry.1 - 1).min(10));
    }

    /// The oldest proposal still waiting for the operator.
    pub fn oldest_open(&self) -> Option<&Proposal> {
        self.proposals.iter().find(|p| p.status.is_open())
    }

    /// What auto-fix applies next: among open proposals with a baseline of at least
    /// `MIN_BASELINE` readings, for the bottleneck of the oldest, the strongest fix the mode allows — the highest risk among its open proposals (the mode
    /// already capped it), the oldest of those. The operator's mode is their risk appetite:
    /// the fix most likely to remove the bottleneck goes first and validation proves it; the
    /// weaker ones stay proposed, to be tried if the bottleneck holds on.
    pub fn next_for_auto_fix(&self) -> Option<&Proposal> {
        // Only proposals with a baseline worth judging against.
        let ready = |p: &&Proposal| {
            p.status.is_open() && p.validation.before.len() >= super::validation::MIN_BASELINE
        };
        let oldest = self.proposals.iter().find(ready)?;
        let same_bottleneck = |p: &&Proposal| {
            ready(p)
                && p.bottleneck.kind == oldest.bottleneck.kind
                && subject_key(&p.bottleneck.subject) == subject_key(&oldest.bottleneck.subject)
        };
        let strongest = self
            .proposals
            .iter()
            .filter(same_bottleneck)
            .map(|p| p.fix.risk)
            .max()?;
        self.proposals
            .iter()
            .filter(same_bottleneck)
            .find(|p| p.fix.risk == strongest)
    }

    /// The batch `batch` was rolled back: its proposal says so.
    pub fn rolled_back(&mut self, batch: u64) {
        for p in &mut self.proposals {
            if p.status == (ProposalStatus::Applied { batch }) {
                p.status = ProposalStatus::RolledBack { batch };
            }
        }
    }

    /// One tick: propose for new bottlenecks, refresh the evidence of open proposals, and
    /// make stale what no longer applies.
    pub fn update(
        &mut self,
        bottlenecks: &[Bottleneck],
        snap: &Snapshot,
        strategies: &[Box<dyn EliminationStrategy>],
        context: &Context,
    ) {
        let now_ms = snap.taken_at_ms;
        self.recent.push(snap);
        for bottleneck in bottlenecks {
            for fix in propose_all(strategies, bottleneck, snap, context, snap.mode) {
                let key = (fix.strategy.clone(), subject_key(&bottleneck.subject));
                if self
                    .suppressed
                    .get(&key)
                    .is_some_and(|(until, _)| now_ms < *until)
                {
                    continue;
                }
                let existing = self.proposals.iter_mut().find(|p| {
                    same_origin(p, bottleneck, &fix.strategy)
                        && matches!(
                            p.status,
                            ProposalStatus::Proposed
                                | ProposalStatus::Applying
                                | ProposalStatus::Applied { .. }
                        )
                });
                match existing {
                    Some(p) if p.status.is_open() => {
                        p.bottleneck = bottleneck.clone();
                        p.fix = fix;
                        p.validation = Validation::baseline(&p.fix.measure, &self.recent);
                    }
                    Some(_) => {}
                    None => self.push_new(bottleneck, fix, snap.seq),
                }
            }
        }
        for p in &mut self.proposals {
            if !p.status.is_open() {
                continue;
            }
            let still = bottlenecks.iter().any(|b| {
                b.kind == p.bottleneck.kind
                    && subject_key(&b.subject) == subject_key(&p.bottleneck.subject)
            });
            if !still {
                p.status = ProposalStatus::Stale {
                    why: "the bottleneck cleared".to_string(),
                };
            } else if !p.fix.risk.allowed_in(snap.mode) {
                p.status = ProposalStatus::Stale {
                    why: format!("{} risk is above mode {}", risk_name(p), snap.mode),
                };
            }
        }
        self.forget_old();
    }

    /// A fix offered directly rather than found by a strategy (the coordinator's plan). It
    /// replaces the open proposal of its strategy, or becomes a new one, unless a proposal
    /// applying, applied or rolled back already carries the same changes (a plan settling
    /// in, or one the operator undid: it is not pushed back until the plan changes), or its
    /// strategy is paused. Call after `update`, which makes it stale once it is in place.
    pub fn offer(&mut self, bottleneck: &Bottleneck, fix: Fix, snap: &Snapshot) {
        let key = (fix.strategy.clone(), subject_key(&bottleneck.subject));
        if self
            .suppressed
            .get(&key)
            .is_some_and(|(until, _)| snap.taken_at_ms < *until)
        {
            return;
        }
        let settled = self.proposals.iter().any(|p| {
            same_origin(p, bottleneck, &fix.strategy)
                && matches!(
                    p.status,
                    ProposalStatus::Applying
                        | ProposalStatus::Applied { .. }
                        | ProposalStatus::RolledBack { .. }
                )
                && carries(&p.fix, &fix)
        });
        if settled {
            return;
        }
        let open = self
            .proposals
            .iter_mut()
            .find(|p| same_origin(p, bottleneck, &fix.strategy) && p.status.is_open());
        if let Some(p) = open {
            p.bottleneck = bottleneck.clone();
            p.fix = fix;
            p.validation = Validation::baseline(&p.fix.measure, &self.recent);
            return;
        }
        self.push_new(bottleneck, fix, snap.seq);
    }

    /// A new open proposal, its baseline from the recent ticks.
    fn push_new(&mut self, bottleneck: &Bottleneck, fix: Fix, seq: u64) {
        self.next_id += 1;
        let validation = Validation::baseline(&fix.measure, &self.recent);
        self.proposals.push(Proposal {
            id: self.next_id,
            bottleneck: bottleneck.clone(),
            fix,
            status: ProposalStatus::Proposed,
            proposed_seq: seq,
            validation,
        });
    }

    /// The open proposal of `strategy`, if any.
    pub fn open_of(&self, strategy: &str) -> Option<&Proposal> {
        self.proposals
            .iter()
            .find(|p| p.fix.strategy == strategy && p.status.is_open())
    }

    /// Keep every open or applied proposal and the newest closed ones.
    fn forget_old(&mut self) {
        let closed = self
            .proposals
            .iter()
            .filter(|p| {
                !p.status.is_open()
                    && !matches!(
                        p.status,
                        ProposalStatus::Applied { .. } | ProposalStatus::Applying
                    )
            })
            .count();
        let mut to_drop = closed.saturating_sub(KEEP_CLOSED);
        self.proposals.retain(|p| {
            let closed = !p.status.is_open()
                && !matches!(
                    p.status,
                    ProposalStatus::Applied { .. } | ProposalStatus::Applying
                );
            if closed && to_drop > 0 {
                to_drop -= 1;
                return false;
            }
            true
        });
    }
}

/// Every change of `new` is one `done` made (same target, knob and value).
/// Every intent of `new` has its own match in `done` (same target, knob and value): a plan
/// may set one knob twice (a shared parent grown, then shrunk), and one change of `done`
/// cannot stand for two of `new`.
fn carries(done: &Fix, new: &Fix) -> bool {
    let mut unused: Vec<&crate::model::Intent> = done.intents.iter().collect();
    new.intents.iter().all(|i| {
        let found = unused
            .iter()
            .position(|d| d.target == i.target && d.knob == i.knob && d.after == i.after);
        found.map(|at| unused.swap_remove(at)).is_some()
    })
}

fn risk_name(p: &Proposal) -> &'static str {
    match p.fix.risk {
        Risk::Low => "low",
        Risk::Medium => "medium",
        Risk::High => "high",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_change_done_stands_for_one_change_asked() {
        use crate::model::{Intent, IntentTarget, Knob, Measure};
        let set = |path: &str, after: &str| Intent {
            target: IntentTarget::Cgroup { path: path.into() },
            knob: Knob::CgroupFile {
                file: "cpuset.cpus".into(),
            },
            expected_before: String::new(),
            after: after.into(),
        };
        let fix = |intents: Vec<Intent>| Fix {
            strategy: "coordinator".into(),
            summary: String::new(),
            risk: Risk::Low,
            metric: String::new(),
            measure: Measure::HostPsiCpuSome,
            intents,
        };
        // Grown to every CPU, then shrunk: done. Grown twice (back to every CPU): not done.
        let done = fix(vec![set("p", "0-1"), set("c", "1"), set("p", "1")]);
        assert!(!carries(
            &done,
            &fix(vec![set("p", "0-1"), set("p", "0-1")])
        ));
        assert!(carries(&done, &fix(vec![set("p", "0-1"), set("c", "1")])));
        assert!(carries(&done, &fix(vec![set("p", "0-1"), set("p", "1")])));
    }
    use crate::model::{BottleneckKind, Fix, Intent, IntentTarget, Knob, Mode, Risk};

    /// A strategy that proposes one fix of its own name and risk for any bottleneck.
    struct Named(&'static str, Risk);

    impl EliminationStrategy for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn handles(&self, _: &Bottleneck) -> bool {
            true
        }
        fn propose(&self, _: &Bottleneck, _: &Snapshot, _: &Context) -> Vec<Fix> {
            vec![Fix {
                strategy: self.0.into(),
                summary: "do it".into(),
                risk: self.1,
                metric: "m".into(),
                measure: crate::model::Measure::HostPsiCpuSome,
                intents: vec![Intent {
                    target: IntentTarget::HostFile {
                        path: "sys/x".into(),
                    },
                    knob: Knob::HostFile {
                        path: "sys/x".into(),
                    },
                    expected_before: "0".into(),
                    after: "1".into(),
                }],
            }]
        }
    }

    fn cpu() -> Bottleneck {
        Bottleneck {
            kind: BottleneckKind::CpuSaturation,
            subject: Subject::Host,
            evidence: vec![],
            since_seq: 1,
        }
    }

    #[test]
    fn a_custom_strategy_is_proposed_once_then_goes_stale_when_the_bottleneck_clears() {
        let strategies: Vec<Box<dyn EliminationStrategy>> =
            vec![Box::new(Named("fixed", Risk::Low))];
        let mut book = ProposalBook::default();
        let snap = Snapshot::default();
        let ctx = Context::default();
        book.update(&[cpu()], &snap, &strategies, &ctx);
        book.update(&[cpu()], &snap, &strategies, &ctx);
        assert_eq!(
            book.list().len(),
            1,
            "one proposal per bottleneck and strategy"
        );
        assert_eq!(book.list()[0].status, ProposalStatus::Proposed);
        book.update(&[], &snap, &strategies, &ctx);
        assert!(matches!(
            book.list()[0].status,
            ProposalStatus::Stale { .. }
        ));
        // Back again: a new proposal.
        book.update(&[cpu()], &snap, &strategies, &ctx);
        assert_eq!(book.list().len(), 2);
    }

    #[test]
    fn verdicts_compare_means_and_a_useless_fix_is_suppressed_with_backoff() {
        let judge = |before: &[f64], after: &[f64]| {
            Validation {
                before: before.to_vec(),
                after: after.to_vec(),
                ..Validation::default()
            }
            .judge(0.05)
        };
        assert!(
            matches!(judge(&[40.0, 60.0], &[20.0, 30.0]), Verdict::Helped { improvement_pct, .. } if (improvement_pct - 50.0).abs() < 1e-9)
        );
        assert!(matches!(
            judge(&[50.0], &[49.0]),
            Verdict::DidNotHelp { .. }
        ));
        assert_eq!(judge(&[0.1], &[0.0]), Verdict::Unmeasurable);
        assert_eq!(judge(&[50.0], &[]), Verdict::Unmeasurable);

        let strategies: Vec<Box<dyn EliminationStrategy>> =
            vec![Box::new(Named("fixed", Risk::Low))];
        let mut book = ProposalBook::default();
        let ctx = Context::default();
        let mut snap = Snapshot::default();
        snap.pressure.cpu = Some(crate::model::PsiResource {
            some: crate::model::PsiLine {
                avg10: 50.0,
                ..Default::default()
            },
            full: None,
        });
        snap.taken_at_ms = 1_000;
        book.update(&[cpu()], &snap, &strategies, &ctx);
        book.applied(1, 7, 1_000);
        // Still stalled half of the time over the next second.
        snap.taken_at_ms = 2_000;
        if let Some(cpu) = snap.pressure.cpu.as_mut() {
            cpu.some.total_us += 500_000;
        }
        book.record_after(&snap);
        assert!(
            book.due_verdicts(5_000, 10_000, 0.05).is_empty(),
            "window not over"
        );
        let due = book.due_verdicts(11_000, 10_000, 0.05);
        assert!(
            matches!(due.as_slice(), [(1, 7, Verdict::DidNotHelp { .. })]),
            "{due:?}"
        );
        // Rolled back, the same fix is not proposed again during the backoff...
        book.rolled_back(7);
        snap.taken_at_ms = 12_000;
        book.update(&[cpu()], &snap, &strategies, &ctx);
        assert_eq!(book.list().len(), 1);
        // ...and is after it.
        snap.taken_at_ms = 11_000 + FIRST_BACKOFF_MS;
        book.update(&[cpu()], &snap, &strategies, &ctx);
        assert_eq!(book.list().len(), 2);
    }

    #[test]
    fn auto_fix_takes_the_strongest_fix_the_mode_allows_for_the_oldest_bottleneck() {
        let strategies: Vec<Box<dyn EliminationStrategy>> = vec![
            Box::new(Named("weak", Risk::Low)),
            Box::new(Named("strong", Risk::Medium)),
            Box::new(Named("reckless", Risk::High)),
        ];
        let mut book = ProposalBook::default();
        let mut snap = Snapshot {
            mode: Mode::Balanced,
            ..Snapshot::default()
        };
        snap.pressure.cpu = Some(Default::default());
        // Nothing is applied before the baseline has MIN_BASELINE readings.
        for tick in 1..=super::super::validation::MIN_BASELINE as u64 {
            snap.taken_at_ms = tick * 1000;
            book.update(&[cpu()], &snap, &strategies, &Context::default());
            assert!(book.next_for_auto_fix().is_none(), "tick {tick}");
        }
        snap.taken_at_ms += 1000;
        book.update(&[cpu()], &snap, &strategies, &Context::default());
        let next = book.next_for_auto_fix().map(|p| p.fix.strategy.as_str());
        assert_eq!(
            next,
            Some("strong"),
            "high risk is not proposed in balanced"
        );
        // Conservative: only the weak one is left open.
        snap.mode = Mode::Conservative;
        snap.taken_at_ms += 1000;
        book.update(&[cpu()], &snap, &strategies, &Context::default());
        let next = book.next_for_auto_fix().map(|p| p.fix.strategy.as_str());
        assert_eq!(next, Some("weak"));
    }

    #[test]
    fn lowering_the_mode_makes_riskier_proposals_stale_and_applied_ones_stay() {
        let strategies: Vec<Box<dyn EliminationStrategy>> =
            vec![Box::new(Named("fixed", Risk::Medium))];
        let mut book = ProposalBook::default();
        let ctx = Context::default();
        let balanced = Snapshot {
            mode: Mode::Balanced,
            ..Snapshot::default()
        };
        book.update(&[cpu()], &balanced, &strategies, &ctx);
        assert_eq!(book.list().len(), 1);
        let conservative = Snapshot::default();
        book.update(&[cpu()], &conservative, &strategies, &ctx);
        assert!(matches!(
            book.list()[0].status,
            ProposalStatus::Stale { .. }
        ));

        let mut book = ProposalBook::default();
        book.update(&[cpu()], &balanced, &strategies, &ctx);
        book.set_status(1, ProposalStatus::Applied { batch: 9 });
        book.update(&[], &conservative, &strategies, &ctx);
        assert_eq!(book.list()[0].status, ProposalStatus::Applied { batch: 9 });
        book.rolled_back(9);
        assert_eq!(
            book.list()[0].status,
            ProposalStatus::RolledBack { batch: 9 }
        );
    }
}
