//! What the faces see of the journal: the batches active on the host, and startup and exit
//! handling of them. Reading never creates the state dir or the journal: a host we never
//! changed stays untouched.

use std::path::Path;
use std::time::Duration;

use super::actuators::HostActuators;
use super::config::UncleanExit;
use super::journal::{BatchState, ChangeState, JOURNAL_FILE, JournalError, Recovery};
use super::master::{Optimizer, RollbackReport};
use crate::host::HostRoots;
use crate::model::Target;
use crate::model::{ActiveBatch, ChangesSnapshot};

/// How long to wait for another sutazai-top holding the journal: a writer may hold it across
/// one Docker call (up to 10 s).
const LOCK_WAIT: Duration = Duration::from_secs(12);

/// Open the journal, waiting briefly while another instance holds it.
pub fn open_waiting(
    state_dir: &Path,
    roots: &HostRoots,
) -> Result<(Optimizer<HostActuators>, Recovery), JournalError> {
    open_within(state_dir, roots, LOCK_WAIT)
}

fn open_within(
    state_dir: &Path,
    roots: &HostRoots,
    wait: Duration,
) -> Result<(Optimizer<HostActuators>, Recovery), JournalError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match Optimizer::open(state_dir, HostActuators::new(roots.clone())) {
            Err(JournalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// The journal's view for a snapshot; an absent journal is an empty view, not an error.
pub fn read_changes(state_dir: &Path, roots: &HostRoots) -> Result<ChangesSnapshot, JournalError> {
    let mut view = ChangesSnapshot {
        state_dir: state_dir.display().to_string(),
        ..ChangesSnapshot::default()
    };
    if !state_dir.join(JOURNAL_FILE).exists() {
        return Ok(view);
    }
    // A view never waits long: a busy journal is read again at the next round.
    let (optimizer, recovery) = open_within(state_dir, roots, Duration::from_millis(200))?;
    view.journal_found = true;
    view.active = optimizer.open_batches().iter().map(active_batch).collect();
    view.problems = problems(&recovery);
    Ok(view)
}

fn active_batch(state: &BatchState) -> ActiveBatch {
    ActiveBatch {
        batch: state.batch,
        label: state.label.clone(),
        at_ms: state.at_ms,
        applied: state
            .changes
            .iter()
            .filter(|(_, s)| *s == ChangeState::Applied)
            .count(),
        total: state.changes.len(),
        interrupted: state.in_flight().is_some(),
        thread_changes: state
            .changes
            .iter()
            .filter(|(c, _)| matches!(c.target, Target::Thread { .. }))
            .count(),
    }
}

/// Journal damage in words (line numbers and reasons, never content).
pub fn problems(recovery: &Recovery) -> Vec<String> {
    let mut out: Vec<String> = recovery
        .corrupt_lines
        .iter()
        .map(|(line, why)| format!("journal line {line} unusable ({why}); not trusted"))
        .collect();
    if recovery.truncated_tail {
        out.push("the journal's last line was cut short (a crash while writing)".to_string());
    }
    out
}

/// At start: handle batches an earlier run left half applied, per `policy`. Returns what was
/// done, for the operator; `None` when there was nothing to handle.
pub fn recover_on_start(
    state_dir: &Path,
    roots: &HostRoots,
    policy: UncleanExit,
) -> Option<String> {
    if !state_dir.join(JOURNAL_FILE).exists() {
        return None;
    }
    let (mut optimizer, _) = match open_waiting(state_dir, roots) {
        Ok(opened) => opened,
        Err(err) => return Some(format!("cannot read the journal: {err}")),
    };
    let interrupted: Vec<u64> = optimizer
        .open_batches()
        .iter()
        .filter(|b| b.in_flight().is_some())
        .map(|b| b.batch)
        .collect();
    if interrupted.is_empty() {
        return None;
    }
    let list = interrupted
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Some(match policy {
        UncleanExit::Restore => {
            let reports: Vec<String> = interrupted
                .iter()
                .map(|&b| match optimizer.rollback_following(b) {
                    Ok(report) => summary(&report),
                    Err(err) => format!("batch {b}: {err}"),
                })
                .collect();
            format!(
                "restored changes an earlier run left half applied: {}",
                reports.join("; ")
            )
        }
        UncleanExit::Keep => format!("kept batches an earlier run left half applied: {list}"),
        UncleanExit::Ask => format!(
            "batches {list} were left half applied by an earlier run: r in Proposals rolls one back"
        ),
    })
}

/// One line about a rollback.
pub fn summary(report: &RollbackReport) -> String {
    let mut line = format!(
        "batch {} rolled back: {} restored, {} already gone",
        report.batch, report.restored, report.gone
    );
    if !report.failed.is_empty() {
        line.push_str(&format!("; NOT restored: {}", report.failed.join("; ")));
    }
    line
}
