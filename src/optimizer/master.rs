//! The optimization master: applies batches of changes all or nothing, journaled, and rolls
//! them back — the one path by which the host is changed.
//!
//! Order of work for a batch: journal `Begin` (synced) → for each change: apply through the
//! actuator (which verifies by reading back) → journal `Applied`. If change *k* fails, it is
//! marked `Failed`, put back if it was half written, and changes *k-1 … 0* are undone in
//! reverse order and marked `Undone`; then the batch is closed. A batch that applied fully
//! stays open in the journal: it is active on the host and can be rolled back later, by the
//! operator or after a crash.

use std::path::Path;
use std::time::Duration;

use super::actuators::Actuator;
use super::change::ActuatorError;
use super::journal::{BatchState, ChangeState, Journal, JournalError, Recovery};
use crate::model::Change;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("batch {0} is not open in the journal")]
    NotOpen(u64),
    /// Nothing of the batch is left on the host.
    #[error("change {index} of {total} failed: {error}; the batch was undone")]
    Undone {
        index: usize,
        total: usize,
        error: ActuatorError,
    },
    /// The batch failed and could not be fully undone; it stays open in the journal so a
    /// later rollback can finish the job.
    #[error(
        "change {index} of {total} failed: {error}; undoing the rest failed too ({}); batch {batch} stays open",
        undo_errors.join("; ")
    )]
    Partial {
        batch: u64,
        index: usize,
        total: usize,
        error: ActuatorError,
        undo_errors: Vec<String>,
    },
}

/// What a rollback did to one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackReport {
    pub batch: u64,
    pub label: String,
    /// Changes whose `before` was written back.
    pub restored: usize,
    /// Changes whose target no longer exists (the process exited): nothing to restore.
    pub gone: usize,
    /// Changes that could not be restored, with why; when not empty the batch stays open.
    pub failed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("no open batch {0} in the journal")]
    NoSuchBatch(u64),
}

/// What extending a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtendReport {
    pub applied: usize,
    /// Targets that were gone by the time they were reached.
    pub gone: usize,
    pub failed: Vec<String>,
}

/// Journal plus actuators: the only writer to the host.
pub struct Optimizer<A: Actuator> {
    journal: Journal,
    actuator: A,
}

impl<A: Actuator> Optimizer<A> {
    /// Open the journal in `state_dir`; the recovery says what an earlier run left.
    pub fn open(state_dir: &Path, actuator: A) -> Result<(Self, Recovery), JournalError> {
        let (journal, recovery) = Journal::open(state_dir)?;
        Ok((Optimizer { journal, actuator }, recovery))
    }

    pub fn actuator(&self) -> &A {
        &self.actuator
    }

    /// Batches active on the host (applied, not rolled back) or left open by a crash.
    pub fn open_batches(&self) -> Vec<BatchState> {
        self.journal.open_batches()
    }

    /// Apply `changes` all or nothing; returns the batch id, open (active) on success.
    pub fn apply(&mut self, label: &str, changes: &[Change]) -> Result<u64, ApplyError> {
        self.apply_paced(label, changes, Duration::ZERO)
    }

    /// `apply` with a pause between changes (to watch a batch being applied, or to test a
    /// crash in its middle).
    pub fn apply_paced(
        &mut self,
        label: &str,
        changes: &[Change],
        pause: Duration,
    ) -> Result<u64, ApplyError> {
        let batch = self.journal.begin(label, changes)?;
        for (index, change) in changes.iter().enumerate() {
            if index > 0 && !pause.is_zero() {
                std::thread::sleep(pause);
            }
            match self.actuator.apply(change) {
                Ok(()) => self.journal.applied(batch, index)?,
                Err(error) => {
                    self.journal.failed(batch, index, &error.to_string())?;
                    return Err(self.unwind(batch, index, changes.len(), error));
                }
            }
        }
        Ok(batch)
    }

    /// Apply more changes to the open `batch`, each on its own: one that fails is marked
    /// failed and the others go on, since the batch's earlier changes were verified and stay
    /// useful. For threads that appear while a per-thread batch is active (`follow`). A
    /// thread that exited meanwhile is counted as gone, not as an error.
    pub fn extend(&mut self, batch: u64, changes: &[Change]) -> Result<ExtendReport, ApplyError> {
        if self.find(batch).is_none() {
            return Err(ApplyError::NotOpen(batch));
        }
        let mut report = ExtendReport::default();
        if changes.is_empty() {
            return Ok(report);
        }
        let first = self.journal.extend(batch, changes)?;
        for (offset, change) in changes.iter().enumerate() {
            let index = first + offset;
            match self.actuator.apply(change) {
                Ok(()) => {
                    self.journal.applied(batch, index)?;
                    report.applied += 1;
                }
                Err(error) => {
                    self.journal.failed(batch, index, &error.to_string())?;
                    match error {
                        ActuatorError::Gone(_) => report.gone += 1,
                        error => report.failed.push(format!("change {index}: {error}")),
                    }
                }
            }
        }
        Ok(report)
    }

    /// Change `index` failed: put it back if it was half written, undo the earlier ones in
    /// reverse, and close the batch when everything is restored.
    fn unwind(
        &mut self,
        batch: u64,
        index: usize,
        total: usize,
        error: ActuatorError,
    ) -> ApplyError {
        let mut undo_errors = Vec::new();
        let Some(state) = self.find(batch) else {
            return ApplyError::NotOpen(batch);
        };
        // A write that did not verify may have left the new value (or a part of it).
        if matches!(error, ActuatorError::NotVerified { .. })
            && let Some((change, _)) = state.changes.get(index)
        {
            match self.restore(change) {
                Ok(()) => {
                    if let Err(err) = self.journal.undone(batch, index) {
                        undo_errors.push(err.to_string());
                    }
                }
                Err(err) => undo_errors.push(format!("change {index}: {err}")),
            }
        }
        for (i, change) in state.to_undo() {
            match self.restore(&change) {
                Ok(()) => {
                    if let Err(err) = self.journal.undone(batch, i) {
                        undo_errors.push(err.to_string());
                    }
                }
                Err(err) => undo_errors.push(format!("change {i}: {err}")),
            }
        }
        if undo_errors.is_empty() {
            if let Err(err) = self.journal.close(batch) {
                return ApplyError::Journal(err);
            }
            ApplyError::Undone {
                index,
                total,
                error,
            }
        } else {
            ApplyError::Partial {
                batch,
                index,
                total,
                error,
                undo_errors,
            }
        }
    }

    /// Write `before` back; a target that is gone needs nothing.
    fn restore(&self, change: &Change) -> Result<(), ActuatorError> {
        match self.actuator.undo(change) {
            Ok(()) | Err(ActuatorError::Gone(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn find(&self, batch: u64) -> Option<BatchState> {
        self.journal
            .open_batches()
            .into_iter()
            .find(|b| b.batch == batch)
    }

    /// Replace the open batches `old` (oldest first) by one applying `changes`, without
    /// passing through the values from before them: a knob they changed that `changes`
    /// sets again starts, in the new batch, from the value they found, so rolling the new
    /// batch back restores the host from before all of them; every other knob they changed
    /// is undone now, last first. Changes already in place are then left out, `changes` are
    /// applied as `apply` does (an empty batch stands for a plan that needed nothing more),
    /// and the old batches are closed. If the new batch fails, the old ones are rolled back,
    /// as if they had been undone first.
    pub fn supersede(
        &mut self,
        old: &[u64],
        label: &str,
        mut changes: Vec<Change>,
    ) -> Result<u64, ApplyError> {
        let states: Vec<BatchState> = old
            .iter()
            .map(|&b| self.find(b).ok_or(ApplyError::NotOpen(b)))
            .collect::<Result<_, _>>()?;
        let key = |c: &Change| (c.target.clone(), c.knob.clone());
        // The value each knob had before the oldest batch that changed it.
        let mut found: std::collections::HashMap<_, String> = std::collections::HashMap::new();
        for state in &states {
            let applied = state
                .changes
                .iter()
                .filter(|(_, s)| *s == ChangeState::Applied);
            for (change, _) in applied {
                found
                    .entry(key(change))
                    .or_insert_with(|| change.before.clone());
            }
        }
        // Only a knob's first change in the new batch starts from there.
        let mut seen = std::collections::HashSet::new();
        for change in &mut changes {
            if seen.insert(key(change))
                && let Some(before) = found.get(&key(change))
            {
                change.before = before.clone();
            }
        }
        changes.retain(|c| c.before.trim() != c.after.trim());
        let kept: std::collections::HashSet<_> = changes.iter().map(key).collect();
        for state in states.iter().rev() {
            for (index, change) in state.to_undo() {
                if kept.contains(&key(&change)) {
                    continue;
                }
                match self.actuator.undo(&change) {
                    Ok(()) | Err(ActuatorError::Gone(_)) => {
                        self.journal.undone(state.batch, index)?
                    }
                    Err(error) => {
                        return Err(self.give_up_superseding(old, index, error));
                    }
                }
            }
        }
        match self.apply(label, &changes) {
            Ok(batch) => {
                for &b in old {
                    self.journal.close(b)?;
                }
                Ok(batch)
            }
            Err(err) => {
                for &b in old.iter().rev() {
                    if let Err(undo) = self.rollback(b) {
                        tracing::error!(batch = b, %undo, "rolling back a replaced plan failed");
                    }
                }
                Err(err)
            }
        }
    }

    /// A knob of a batch being replaced could not be undone: roll the old batches back as
    /// far as they go, and say why.
    fn give_up_superseding(
        &mut self,
        old: &[u64],
        index: usize,
        error: ActuatorError,
    ) -> ApplyError {
        for &b in old.iter().rev() {
            if let Err(undo) = self.rollback(b) {
                tracing::error!(batch = b, %undo, "rolling back a replaced plan failed");
            }
        }
        ApplyError::Undone {
            index,
            total: 0,
            error,
        }
    }

    /// Undo one open batch, last change first. Also restores the change that may have been
    /// in flight when an earlier run crashed (harmless if it never landed). The batch is
    /// closed when nothing of it is left on the host.
    pub fn rollback(&mut self, batch: u64) -> Result<RollbackReport, RollbackError> {
        let state = self.find(batch).ok_or(RollbackError::NoSuchBatch(batch))?;
        let mut report = RollbackReport {
            batch,
            label: state.label.clone(),
            restored: 0,
            gone: 0,
            failed: Vec::new(),
        };
        let mut work = state.to_undo();
        if let Some(in_flight) = state.in_flight() {
            // It comes after every applied change, so it is undone first.
            work.insert(0, in_flight);
        }
        for (index, change) in work {
            match self.actuator.undo(&change) {
                Ok(()) => report.restored += 1,
                Err(ActuatorError::Gone(why)) => {
                    tracing::debug!(batch, index, why, "target gone; nothing to restore");
                    report.gone += 1;
                }
                Err(err) => {
                    report.failed.push(format!("change {index}: {err}"));
                    continue;
                }
            }
            self.journal.undone(batch, index)?;
        }
        if report.failed.is_empty() {
            self.journal.close(batch)?;
        }
        Ok(report)
    }

    /// Roll back every open batch, newest first.
    pub fn rollback_all(&mut self) -> Vec<Result<RollbackReport, RollbackError>> {
        let mut batches: Vec<u64> = self.open_batches().iter().map(|b| b.batch).collect();
        batches.sort_unstable_by(|a, b| b.cmp(a));
        batches.into_iter().map(|b| self.rollback(b)).collect()
    }
}
