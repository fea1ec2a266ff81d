//! Per-thread changes follow threads that appear while their batch is active.
//!
//! A batch that set a process's affinity, policy, nice or I/O priority names the threads
//! that existed when it was applied. Threads started later usually inherit the new value
//! from their creator, and would keep it after a rollback, since the batch does not name
//! them; a thread that sets its own affinity would escape the change. So, while the batch is
//! active, every new thread of the process gets the batch's value through a journaled change
//! added to the batch: rolling the batch back then restores it too.
//!
//! A new thread's `before` is what it would have had without us: the value the process's
//! main thread had before the batch, unless the thread already holds something else of its
//! own choosing, which is then what a rollback gives back.

use std::collections::{BTreeMap, BTreeSet};

use super::actuators::{Actuator, HostActuators, plan_process};
use super::change::ActuatorError;
use super::journal::{BatchState, ChangeState};
use super::master::{ApplyError, ExtendReport, Optimizer, RollbackError, RollbackReport};
use crate::host::HostRoots;
use crate::model::{Change, Knob, Target};

/// One process and knob a batch acts on: the value set, the value to restore on threads
/// that inherited it, and the threads the batch already names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FollowedKnob {
    pid: i32,
    start_time: u64,
    knob: Knob,
    after: String,
    original: String,
    known_tids: BTreeSet<i32>,
}

/// The per-thread knobs of `batch`, grouped by process and knob. Only changes still in
/// force count: a batch half undone is not followed.
fn followed_knobs(batch: &BatchState) -> Vec<FollowedKnob> {
    let mut groups: BTreeMap<(i32, u64, String), FollowedKnob> = BTreeMap::new();
    for (change, state) in &batch.changes {
        let Target::Thread {
            pid,
            tid,
            start_time,
        } = change.target
        else {
            continue;
        };
        if matches!(state, ChangeState::Undone) {
            return Vec::new();
        }
        let key = (pid, start_time, format!("{:?}", change.knob));
        let group = groups.entry(key).or_insert_with(|| FollowedKnob {
            pid,
            start_time,
            knob: change.knob.clone(),
            after: change.after.clone(),
            original: change.before.clone(),
            known_tids: BTreeSet::new(),
        });
        group.known_tids.insert(tid);
        // The main thread's value is the process's own; prefer it as the original.
        if tid == pid {
            group.original = change.before.clone();
        }
    }
    groups.into_values().collect()
}

/// The changes that bring the new threads of `knob`'s process under the batch.
fn new_thread_changes(
    roots: &HostRoots,
    followed: &FollowedKnob,
) -> Result<Vec<Change>, ActuatorError> {
    let current = plan_process(roots, followed.pid, followed.knob.clone(), &followed.after)?;
    Ok(current
        .into_iter()
        .filter(|change| match change.target {
            Target::Thread {
                tid, start_time, ..
            } => start_time == followed.start_time && !followed.known_tids.contains(&tid),
            _ => false,
        })
        .map(|mut change| {
            // Inherited from a thread we changed: restore what the process had.
            if change.before.trim() == followed.after.trim() {
                change.before = followed.original.clone();
            }
            change
        })
        .collect())
}

/// Add every new thread of the batch's processes to the batch, with the batch's value.
/// A process that exited or was replaced is skipped: nothing of it is left to follow.
pub fn follow_new_threads<A: Actuator>(
    optimizer: &mut Optimizer<A>,
    roots: &HostRoots,
    batch: &BatchState,
) -> Result<ExtendReport, ApplyError> {
    let mut changes = Vec::new();
    for followed in followed_knobs(batch) {
        match new_thread_changes(roots, &followed) {
            Ok(found) => changes.extend(found),
            Err(ActuatorError::Gone(_)) => {}
            Err(err) => {
                tracing::warn!(pid = followed.pid, %err, "cannot list the process's threads");
            }
        }
    }
    optimizer.extend(batch.batch, &changes)
}

/// `follow_new_threads` for every open batch; the reports of those that found threads.
pub fn follow_all<A: Actuator>(
    optimizer: &mut Optimizer<A>,
    roots: &HostRoots,
) -> Vec<(u64, Result<ExtendReport, ApplyError>)> {
    optimizer
        .open_batches()
        .iter()
        .map(|batch| (batch.batch, follow_new_threads(optimizer, roots, batch)))
        .filter(|(_, report)| match report {
            Ok(r) => r.applied + r.gone + r.failed.len() > 0,
            Err(_) => true,
        })
        .collect()
}

impl Optimizer<HostActuators> {
    /// Roll back `batch` after bringing the threads that appeared since under it, so they
    /// get their original values back too (no thread keeps a rolled-back value).
    pub fn rollback_following(&mut self, batch: u64) -> Result<RollbackReport, RollbackError> {
        let roots = self.actuator().thread.roots.clone();
        if let Some(state) = self.open_batches().into_iter().find(|b| b.batch == batch)
            && let Err(err) = follow_new_threads(self, &roots, &state)
        {
            tracing::warn!(batch, %err, "new threads not brought under the batch before rollback");
        }
        self.rollback(batch)
    }

    /// `rollback_following` for every open batch, newest first.
    pub fn rollback_all_following(&mut self) -> Vec<Result<RollbackReport, RollbackError>> {
        let mut batches: Vec<u64> = self.open_batches().iter().map(|b| b.batch).collect();
        batches.sort_unstable_by(|a, b| b.cmp(a));
        batches
            .into_iter()
            .map(|b| self.rollback_following(b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_change(pid: i32, tid: i32, knob: Knob, before: &str, after: &str) -> Change {
        Change {
            target: Target::Thread {
                pid,
                tid,
                start_time: 77,
            },
            knob,
            before: before.into(),
            after: after.into(),
        }
    }

    fn batch(changes: Vec<(Change, ChangeState)>) -> BatchState {
        BatchState {
            batch: 1,
            label: "t".into(),
            at_ms: 0,
            changes,
        }
    }

    #[test]
    fn knobs_group_by_process_and_take_the_main_threads_before() {
        let b = batch(vec![
            (
                thread_change(10, 11, Knob::Affinity, "0", "1"),
                ChangeState::Applied,
            ),
            (
                thread_change(10, 10, Knob::Affinity, "0-1", "1"),
                ChangeState::Applied,
            ),
            (
                thread_change(10, 10, Knob::Policy, "SCHED_OTHER", "SCHED_BATCH"),
                ChangeState::Applied,
            ),
        ]);
        let knobs = followed_knobs(&b);
        assert_eq!(knobs.len(), 2);
        let affinity = knobs.iter().find(|k| k.knob == Knob::Affinity);
        assert_eq!(affinity.map(|k| k.original.as_str()), Some("0-1"));
        assert_eq!(
            affinity.map(|k| k.known_tids.iter().copied().collect::<Vec<_>>()),
            Some(vec![10, 11])
        );
    }

    #[test]
    fn a_batch_being_undone_or_without_threads_is_not_followed() {
        let undone = batch(vec![(
            thread_change(10, 10, Knob::Nice, "0", "5"),
            ChangeState::Undone,
        )]);
        assert!(followed_knobs(&undone).is_empty());
        let host = batch(vec![(
            Change {
                target: Target::Host,
                knob: Knob::HostFile {
                    path: "sys/kernel/mm/ksm/run".into(),
                },
                before: "0".into(),
                after: "1".into(),
            },
            ChangeState::Applied,
        )]);
        assert!(followed_knobs(&host).is_empty());
    }
}
