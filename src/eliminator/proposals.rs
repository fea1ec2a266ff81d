//! The proposal book: each fix proposed for a bottleneck, and where it stands.
//!
//! One proposal per (bottleneck, strategy) while the bottleneck holds. A proposal not yet
//! applied goes stale when its bottleneck clears or when the mode no longer allows its risk
//! (lowering the mode never leaves a proposal that could not be applied). Applied ones stay
//! until rolled back; their batch in the journal is the truth of what is on the host.

use serde::Serialize;

use super::strategy::{Context, EliminationStrategy, Fix, propose_all};
use super::{Bottleneck, Subject};
use crate::snapshot::Snapshot;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProposalStatus {
    Proposed,
    /// Approved; the changes are being planned and applied.
    Applying,
    Applied {
        batch: u64,
    },
    RolledBack {
        batch: u64,
    },
    /// No longer applicable (bottleneck cleared, mode lowered, target gone).
    Stale {
        why: String,
    },
    /// Applying failed; nothing of it is left on the host (the batch was undone).
    Failed {
        why: String,
    },
    Dismissed,
}

impl ProposalStatus {
    pub fn label(&self) -> &'static str {
        match self {
            ProposalStatus::Proposed => "proposed",
            ProposalStatus::Applying => "applying",
            ProposalStatus::Applied { .. } => "applied",
            ProposalStatus::RolledBack { .. } => "rolled back",
            ProposalStatus::Stale { .. } => "stale",
            ProposalStatus::Failed { .. } => "failed",
            ProposalStatus::Dismissed => "dismissed",
        }
    }

    /// Still waiting for the operator.
    pub fn is_open(&self) -> bool {
        matches!(self, ProposalStatus::Proposed)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Proposal {
    pub id: u64,
    pub bottleneck: Bottleneck,
    pub fix: Fix,
    pub status: ProposalStatus,
    /// Snapshot seq when it was proposed.
    pub proposed_seq: u64,
}

/// Closed proposals kept for the pane and the report (older ones are dropped).
const KEEP_CLOSED: usize = 50;

#[derive(Default)]
pub struct ProposalBook {
    next_id: u64,
    proposals: Vec<Proposal>,
}

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

    pub fn set_status(&mut self, id: u64, status: ProposalStatus) {
        if let Some(p) = self.proposals.iter_mut().find(|p| p.id == id) {
            p.status = status;
        }
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
        for bottleneck in bottlenecks {
            for fix in propose_all(strategies, bottleneck, snap, context, snap.mode) {
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
                    }
                    Some(_) => {}
                    None => {
                        self.next_id += 1;
                        self.proposals.push(Proposal {
                            id: self.next_id,
                            bottleneck: bottleneck.clone(),
                            fix,
                            status: ProposalStatus::Proposed,
                            proposed_seq: snap.seq,
                        });
                    }
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

fn risk_name(p: &Proposal) -> &'static str {
    match p.fix.risk {
        super::strategy::Risk::Low => "low",
        super::strategy::Risk::Medium => "medium",
        super::strategy::Risk::High => "high",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::eliminator::BottleneckKind;
    use crate::eliminator::strategy::{Intent, IntentTarget, Risk};
    use crate::optimizer::change::Knob;

    struct Fixed(Risk);

    impl EliminationStrategy for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn handles(&self, _: &Bottleneck) -> bool {
            true
        }
        fn propose(&self, _: &Bottleneck, _: &Snapshot, _: &Context) -> Vec<Fix> {
            vec![Fix {
                strategy: "fixed".into(),
                summary: "do it".into(),
                risk: self.0,
                metric: "m".into(),
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
        let strategies: Vec<Box<dyn EliminationStrategy>> = vec![Box::new(Fixed(Risk::Low))];
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
    fn lowering_the_mode_makes_riskier_proposals_stale_and_applied_ones_stay() {
        let strategies: Vec<Box<dyn EliminationStrategy>> = vec![Box::new(Fixed(Risk::Medium))];
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
