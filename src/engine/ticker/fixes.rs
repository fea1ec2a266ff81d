//! The fix lifecycle of the tick: detection, proposals, applying and rolling back off the
//! tick loop (as jobs that report back), validation, auto-fix, and the journal at start and
//! quit. Only here does the engine reach the optimizer, and through it the host.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::Ticker;
use crate::host::HostRoots;
use crate::model::{ChangesSnapshot, Snapshot};
use crate::model::{ProposalStatus, Verdict};
use crate::optimizer::change::ActuatorError;
use crate::optimizer::master::ApplyError;

/// Run `work` on a plain thread, outside the runtime: actuators that talk to Docker drive their
/// own small runtime and must not be called from within this one (not even from its blocking
/// pool).
pub(super) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sutazai-actuate".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.await
        .map_err(|_| "the actuating thread died".to_string())
}

/// What applying a proposal came to: the batch (None: already in place) and the fresh
/// journal view, or the proposal's new status.
pub(super) type ApplyOutcome = Result<(Option<u64>, Option<ChangesSnapshot>), ProposalStatus>;
/// What a rollback came to: everything restored?, one line per batch, the fresh view.
pub(super) type RollbackOutcome = Result<(bool, Vec<String>, Option<ChangesSnapshot>), String>;

/// Who asked for a rollback, for the notice.
#[derive(Debug, Clone)]
pub(super) enum RollbackOrigin {
    Operator,
    /// Validation rolls back a fix; `why` is the verdict in operator words.
    Validation {
        id: u64,
        why: String,
    },
}

/// Work that ran off the tick loop, reporting back.
pub(super) enum Job {
    Applied {
        id: u64,
        outcome: Result<ApplyOutcome, String>,
    },
    /// New threads were brought under active batches: one line per batch that found some.
    Followed(Result<Vec<String>, String>),
    RolledBack {
        origin: RollbackOrigin,
        outcome: Result<RollbackOutcome, String>,
    },
}

/// Roll back one batch (or all) under the journal lock. Blocking, off the runtime.
fn rollback_blocking(
    dir: &std::path::Path,
    roots: &HostRoots,
    batch: Option<u64>,
) -> RollbackOutcome {
    let (mut optimizer, recovery) = crate::optimizer::view::open_waiting(dir, roots)
        .map_err(|e| format!("cannot open the journal: {e}"))?;
    // Lines the journal could not read may record changes still applied: never "all well".
    let damage = crate::optimizer::view::problems(&recovery);
    let results = match batch {
        Some(b) => vec![optimizer.rollback_following(b)],
        None => optimizer.rollback_all_following(),
    };
    // Failure is decided from the results, never from the words.
    let ok = damage.is_empty()
        && results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|report| report.failed.is_empty()));
    let lines: Vec<String> = results
        .into_iter()
        .map(|r| match r {
            Ok(report) => crate::optimizer::view::summary(&report),
            Err(err) => err.to_string(),
        })
        .chain(damage)
        .collect();
    drop(optimizer);
    Ok((
        ok,
        lines,
        crate::optimizer::view::read_changes(dir, roots).ok(),
    ))
}

/// How often threads that appeared under an active per-thread batch are brought under it.
pub(super) const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);

/// Bring new threads under every active batch, under the journal lock. Blocking.
fn follow_blocking(dir: &std::path::Path, roots: &HostRoots) -> Result<Vec<String>, String> {
    let (mut optimizer, _) = crate::optimizer::view::open_waiting(dir, roots)
        .map_err(|e| format!("cannot open the journal: {e}"))?;
    let lines = crate::optimizer::follow::follow_all(&mut optimizer, roots)
        .into_iter()
        .map(|(batch, report)| match report {
            Ok(r) if r.failed.is_empty() => format!(
                "batch {batch}: {} new threads brought under it ({} gone)",
                r.applied, r.gone
            ),
            Ok(r) => format!(
                "batch {batch}: {} new threads brought under it, {} failed: {}",
                r.applied,
                r.failed.len(),
                r.failed.join("; ")
            ),
            Err(err) => format!("batch {batch}: new threads not followed: {err}"),
        })
        .collect();
    Ok(lines)
}

/// Plan and apply a proposal's intents under the journal lock, replacing the batches it
/// supersedes (a coordinator plan replaces the one before: one plan batch is active at a
/// time, so a rollback always restores the host from before any plan). Blocking, off the
/// runtime.
fn apply_blocking(
    dir: &std::path::Path,
    roots: &HostRoots,
    endpoint: &str,
    label: &str,
    intents: &[crate::model::Intent],
    supersede: &[u64],
) -> ApplyOutcome {
    // Lock the journal first, then read `before`: no other writer can slip a change in
    // between, so a rollback restores what really was there.
    let (mut optimizer, _) =
        crate::optimizer::view::open_waiting(dir, roots).map_err(|e| ProposalStatus::Failed {
            why: format!("journal: {e}"),
        })?;
    let gone_or_failed = |err: ActuatorError| match err {
        ActuatorError::Gone(why) => ProposalStatus::Stale {
            why: format!("target gone: {why}"),
        },
        other => ProposalStatus::Failed {
            why: other.to_string(),
        },
    };
    let planned = if supersede.is_empty() {
        crate::eliminator::plan::plan(intents, roots, endpoint)
    } else {
        crate::eliminator::plan::plan_all(intents, roots, endpoint)
    };
    let changes = planned.map_err(gone_or_failed)?;
    if changes.is_empty() && supersede.is_empty() {
        return Ok((None, None));
    }
    // Two open batches on one knob would undo out of order: refuse the second. (The plan
    // batches it replaces are not in the way: they close as it applies.)
    for open in optimizer.open_batches() {
        if supersede.contains(&open.batch) {
            continue;
        }
        let clash = open.changes.iter().any(|(held, _)| {
            changes.iter().any(|c| {
                c.target == held.target && c.knob == held.knob && c.before.trim() != c.after.trim()
            })
        });
        if clash {
            return Err(ProposalStatus::Stale {
                why: format!(
                    "batch {} already changed this; roll it back first",
                    open.batch
                ),
            });
        }
    }
    // A plan replacing plans goes from their values to its own without passing through
    // the host from before them (where an agent born meanwhile under the shared parent
    // would get every CPU); its rollback restores the host from before all of them.
    let applied = if supersede.is_empty() {
        optimizer.apply(label, &changes)
    } else {
        optimizer.supersede(supersede, label, changes)
    };
    let batch = applied.map_err(|err| match err {
        ApplyError::Undone { error, .. } => gone_or_failed(error),
        other => ProposalStatus::Failed {
            why: other.to_string(),
        },
    })?;
    drop(optimizer);
    Ok((
        Some(batch),
        crate::optimizer::view::read_changes(dir, roots).ok(),
    ))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fix must improve its figure by this fraction to be kept.
const MIN_IMPROVEMENT: f64 = 0.05;

impl Ticker {
    /// One tick of detection: bottlenecks that held, and fixes proposed for them (gated by
    /// the mode). Pure over the snapshot; nothing on the host is read or changed here.
    pub(super) fn detect(&mut self, snap: &mut Snapshot) {
        let mut bottlenecks = self.detector.observe(snap);
        let offer = self.coordinate(snap);
        if let Some(view) = &snap.coordinator {
            let seq = snap.seq;
            // Forget agents no longer pending, so a later wait counts from its own start.
            self.pending_since.retain(|id, _| {
                view.agents.iter().any(|a| {
                    a.id == *id && matches!(a.state, crate::model::AllocationState::Pending { .. })
                })
            });
            bottlenecks.extend(crate::coordinator::pending(view, |id| {
                *self.pending_since.entry(id.to_string()).or_insert(seq)
            }));
        }
        if let Some((bottleneck, _)) = &offer {
            bottlenecks.push(bottleneck.clone());
        }
        self.proposals
            .update(&bottlenecks, snap, &self.strategies, &self.strategy_context);
        if let Some((bottleneck, fix)) = offer {
            self.proposals.offer(&bottleneck, fix, snap);
            self.rebalancing.note_offered(&self.proposals);
        }
        snap.bottlenecks = bottlenecks;
    }

    /// Watch applied fixes: after `validation_secs`, keep what helped and roll back what
    /// did not, on its own, saying so.
    pub(super) fn validate(&mut self, snap: &Snapshot) {
        self.proposals.record_after(snap);
        let window_ms = self.optimizer.validation_secs.saturating_mul(1000);
        for (id, batch, verdict) in
            self.proposals
                .due_verdicts(snap.taken_at_ms, window_ms, MIN_IMPROVEMENT)
        {
            match verdict {
                Verdict::Helped {
                    before,
                    after,
                    improvement_pct,
                } => {
                    let text = format!(
                        "proposal {id} helped: {before:.1} -> {after:.1} ({improvement_pct:.0}% better); kept"
                    );
                    tracing::info!("{text}");
                    self.set_notice(text, false);
                }
                Verdict::Unmeasurable => {
                    tracing::info!(id, "fix kept; its figure could not prove it helped");
                }
                verdict @ (Verdict::DidNotHelp { .. } | Verdict::Regressed { .. }) => {
                    let why = verdict.describe();
                    tracing::warn!(id, why, "fix rolled back by validation");
                    self.start_rollback(Some(batch), RollbackOrigin::Validation { id, why });
                }
            }
        }
    }

    /// With auto-fix on: apply the strongest fix the mode allows for the oldest bottleneck,
    /// one per cooldown.
    pub(super) fn auto_fix(&mut self, snapshots: &watch::Sender<Arc<Snapshot>>) {
        if !self.optimizer.auto_fix || !self.manages_host || Instant::now() < self.cooldown_until {
            return;
        }
        let Some(id) = self.proposals.next_for_auto_fix().map(|p| p.id) else {
            return;
        };
        tracing::info!(id, "auto-fix applies a proposal");
        self.start_apply(id, snapshots);
        self.cooldown_until = Instant::now() + Duration::from_secs(self.optimizer.cooldown_secs);
    }

    /// Apply a proposal: read the real `before` of every change, journal, apply all or
    /// nothing — on a plain thread, so ticks and keys go on meanwhile. The outcome comes back
    /// as a job and becomes the proposal's status and the notice (`finish_apply`).
    pub(super) fn start_apply(&mut self, id: u64, snapshots: &watch::Sender<Arc<Snapshot>>) {
        let Some(proposal) = self.proposals.get(id).cloned() else {
            self.set_notice(format!("no proposal {id}"), true);
            return;
        };
        if !proposal.status.is_open() {
            self.set_notice(
                format!("proposal {id} is {}", proposal.status.label()),
                true,
            );
            return;
        }
        if !self.host_info.is_root {
            self.set_notice("read-only (not root): nothing is applied".to_string(), true);
            return;
        }
        // One plan at a time: a plan replaces the one applied before it, which it can only
        // know once that one is applied (`enforce` tries again at the next tick).
        let plan = crate::coordinator::is_plan(&proposal.fix.strategy);
        let plan_in_flight = self.proposals.list().iter().any(|p| {
            p.status == ProposalStatus::Applying && crate::coordinator::is_plan(&p.fix.strategy)
        });
        if plan && plan_in_flight {
            self.set_notice(
                format!("proposal {id} waits: another plan is being applied"),
                false,
            );
            return;
        }
        self.proposals.applying(id);
        let mut snap = (**snapshots.borrow()).clone();
        snap.proposals = self.proposals.list().to_vec();
        snapshots.send_replace(Arc::new(snap));

        let (dir, roots, endpoint) = (
            self.optimizer.state_dir.clone(),
            self.roots.clone(),
            self.docker_endpoint.clone(),
        );
        let label = format!("proposal {id}: {}", proposal.fix.summary);
        let intents = proposal.fix.intents.clone();
        let supersede = self.superseded_by(&proposal);
        let jobs = self.jobs_tx.clone();
        tokio::spawn(async move {
            let outcome = off_runtime(move || {
                apply_blocking(&dir, &roots, &endpoint, &label, &intents, &supersede)
            })
            .await;
            let _ = jobs.send(Job::Applied { id, outcome });
        });
    }

    /// A coordinator plan supersedes the plans applied before it: their batches are rolled
    /// back first, and their proposals say so.
    fn superseded_by(&mut self, proposal: &crate::model::Proposal) -> Vec<u64> {
        if !crate::coordinator::is_plan(&proposal.fix.strategy) {
            return Vec::new();
        }
        let earlier: Vec<(u64, u64)> = self
            .proposals
            .list()
            .iter()
            .filter(|p| crate::coordinator::is_plan(&p.fix.strategy))
            .filter_map(|p| match p.status {
                ProposalStatus::Applied { batch } => Some((p.id, batch)),
                _ => None,
            })
            .collect();
        for &(id, batch) in &earlier {
            self.proposals.set_status(
                id,
                ProposalStatus::Stale {
                    why: format!(
                        "superseded by proposal {}: batch {batch} replaced by its batch",
                        proposal.id
                    ),
                },
            );
        }
        earlier.into_iter().map(|(_, batch)| batch).collect()
    }

    pub(super) fn finish_apply(&mut self, id: u64, outcome: Result<ApplyOutcome, String>) {
        match outcome {
            Ok(Ok((Some(batch), view))) => {
                self.plan_failed_last = false;
                self.proposals.applied(id, batch, now_ms());
                self.set_notice(
                    format!("proposal {id} applied as batch {batch}; r in Proposals rolls it back"),
                    false,
                );
                if let Some(view) = view {
                    self.changes = view;
                }
            }
            Ok(Ok((None, view))) => {
                if let Some(view) = view {
                    self.changes = view;
                }
                // A plan found in place (its predecessor rolled back to just this) is normal,
                // not a reason to pause the coordinator.
                let planned = self
                    .proposals
                    .get(id)
                    .is_some_and(|p| crate::coordinator::is_plan(&p.fix.strategy));
                if !planned {
                    self.proposals.suppress(id, now_ms());
                }
                self.proposals.set_status(
                    id,
                    ProposalStatus::Stale {
                        why: "already in place".to_string(),
                    },
                );
                self.set_notice(
                    format!("proposal {id}: already in place, nothing changed"),
                    false,
                );
            }
            Ok(Err(status)) => {
                // A plan that failed once is tried again at once: the usual cause is an
                // agent born meanwhile under the shared parent, which the next tick sees.
                let plan = self
                    .proposals
                    .get(id)
                    .is_some_and(|p| crate::coordinator::is_plan(&p.fix.strategy));
                if plan && !self.plan_failed_last {
                    self.plan_failed_last = true;
                } else {
                    self.proposals.suppress(id, now_ms());
                }
                let text = match &status {
                    ProposalStatus::Stale { why } | ProposalStatus::Failed { why } => why.clone(),
                    other => other.label().to_string(),
                };
                self.set_notice(format!("proposal {id} not applied: {text}"), true);
                self.proposals.set_status(id, status);
            }
            Err(err) => {
                self.proposals.suppress(id, now_ms());
                self.set_notice(format!("proposal {id} not applied: {err}"), true);
                self.proposals
                    .set_status(id, ProposalStatus::Failed { why: err });
            }
        }
    }

    /// While a batch that changed threads is active, bring the threads its processes start
    /// under it every `FOLLOW_INTERVAL`, so they get its values and a rollback restores them.
    pub(super) fn follow_threads(&mut self) {
        let per_thread = self.changes.active.iter().any(|b| b.thread_changes > 0);
        if !per_thread
            || !self.manages_host
            || !self.host_info.is_root
            || self.following
            || Instant::now() < self.next_follow
        {
            return;
        }
        self.following = true;
        self.next_follow = Instant::now() + FOLLOW_INTERVAL;
        let (dir, roots) = (self.optimizer.state_dir.clone(), self.roots.clone());
        let jobs = self.jobs_tx.clone();
        tokio::spawn(async move {
            let outcome = off_runtime(move || follow_blocking(&dir, &roots)).await;
            let _ = jobs.send(Job::Followed(outcome.and_then(|r| r)));
        });
    }

    pub(super) fn finish_follow(&mut self, outcome: Result<Vec<String>, String>) {
        self.following = false;
        match outcome {
            Ok(lines) => {
                for line in lines {
                    tracing::info!("{line}");
                }
            }
            Err(err) => tracing::warn!("following new threads: {err}"),
        }
    }

    /// Batches an earlier run left half applied, handled per `on_unclean_exit`.
    pub(super) async fn recover_on_start(&mut self) {
        let (dir, roots, policy) = (
            self.optimizer.state_dir.clone(),
            self.roots.clone(),
            self.optimizer.on_unclean_exit,
        );
        let done =
            off_runtime(move || crate::optimizer::view::recover_on_start(&dir, &roots, policy))
                .await;
        if let Ok(Some(message)) = done {
            tracing::warn!("{message}");
            self.set_notice(message, false);
        }
    }

    /// On quit: roll back what is active if configured, else say what stays.
    pub(super) async fn on_exit(&mut self) {
        if self.optimizer.rollback_on_exit {
            let ok = self.rollback_now(None).await;
            let text = self
                .notice
                .as_ref()
                .map(|n| n.text.clone())
                .unwrap_or_default();
            if ok {
                tracing::info!("rollback on exit: {text}");
            } else {
                tracing::error!("rollback on exit incomplete: {text}");
            }
        } else if !self.changes.active.is_empty() {
            tracing::info!(
                batches = self.changes.active.len(),
                "changes stay active on the host (rollback_on_exit = false); `sutazai-top rollback --all` undoes them"
            );
        }
    }

    /// Roll back one batch, or all, off the tick loop; `finish_rollback` reports it.
    pub(super) fn start_rollback(&mut self, batch: Option<u64>, origin: RollbackOrigin) {
        let (dir, roots) = (self.optimizer.state_dir.clone(), self.roots.clone());
        let jobs = self.jobs_tx.clone();
        tokio::spawn(async move {
            let outcome = off_runtime(move || rollback_blocking(&dir, &roots, batch)).await;
            let _ = jobs.send(Job::RolledBack { origin, outcome });
        });
    }

    /// Roll back and wait (quitting with `rollback_on_exit`).
    pub(super) async fn rollback_now(&mut self, batch: Option<u64>) -> bool {
        let (dir, roots) = (self.optimizer.state_dir.clone(), self.roots.clone());
        let outcome = off_runtime(move || rollback_blocking(&dir, &roots, batch)).await;
        self.finish_rollback(RollbackOrigin::Operator, outcome)
    }

    /// The rollback's result becomes the notice (worded from what really happened) and the
    /// journal view refreshes; true when everything was restored.
    pub(super) fn finish_rollback(
        &mut self,
        origin: RollbackOrigin,
        outcome: Result<RollbackOutcome, String>,
    ) -> bool {
        let (ok, text) = match outcome {
            Ok(Ok((ok, lines, view))) => {
                if let Some(view) = view {
                    self.changes = view;
                    self.sync_proposals_with_journal();
                }
                let text = if lines.is_empty() {
                    "nothing to roll back".to_string()
                } else {
                    lines.join("; ")
                };
                (ok, text)
            }
            Ok(Err(err)) => (false, err),
            Err(err) => (false, format!("rollback failed: {err}")),
        };
        let text = match &origin {
            RollbackOrigin::Operator => text,
            RollbackOrigin::Validation { id, why } if ok => {
                format!("proposal {id} {why}; rolled back on its own")
            }
            RollbackOrigin::Validation { id, why } => {
                format!("proposal {id} {why}; rolling it back FAILED: {text}")
            }
        };
        if ok {
            tracing::info!("{text}");
        } else {
            tracing::error!("{text}");
        }
        let is_error = !ok || !matches!(origin, RollbackOrigin::Operator);
        self.set_notice(text, is_error);
        ok
    }

    /// A proposal whose batch is no longer open in the journal was rolled back, whoever did
    /// it (this dashboard, validation, or `sutazai-top rollback` from another terminal).
    pub(super) fn sync_proposals_with_journal(&mut self) {
        if !self.changes.journal_found {
            return; // no journal read: no conclusion from an empty view
        }
        let open: Vec<u64> = self.changes.active.iter().map(|b| b.batch).collect();
        let closed: Vec<u64> = self
            .proposals
            .list()
            .iter()
            .filter_map(|p| match p.status {
                ProposalStatus::Applied { batch } if !open.contains(&batch) => Some(batch),
                _ => None,
            })
            .collect();
        for batch in closed {
            self.proposals.rolled_back(batch);
        }
    }
}
