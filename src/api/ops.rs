//! What the API asks of the engine, each waiting until the outcome shows in a snapshot.
//!
//! Commands are fire-and-forget; their results come back in later snapshots (a proposal's
//! status, the journal's active batches, the notice). Each operation here sends one command
//! and watches the snapshots until its outcome is there, an error notice newer than the
//! command says why it failed, or the time is up.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Command, EngineHandle};
use crate::model::Mode;
use crate::model::Snapshot;
use crate::model::{Declaration, Proposal, ProposalStatus};

/// How long approving waits for the proposal to be applied (or to fail).
pub const APPLY_WAIT: Duration = Duration::from_secs(30);
/// How long a rollback may take (every change restored and verified).
pub const ROLLBACK_WAIT: Duration = Duration::from_secs(60);
/// How long a quick answer (mode, dismiss) may take.
const QUICK_WAIT: Duration = Duration::from_secs(10);

/// An operation that did not succeed: the HTTP status and the message for the JSON error.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

pub type OpResult<T> = Result<T, Failure>;

fn latest(handle: &EngineHandle) -> Arc<Snapshot> {
    handle.snapshots.borrow().clone()
}

fn notice_seq(snap: &Snapshot) -> u64 {
    snap.notice.as_ref().map_or(0, |n| n.seq)
}

/// An error notice the engine published after `since` (the answer to our command).
fn error_notice_after(snap: &Snapshot, since: u64) -> Option<String> {
    snap.notice
        .as_ref()
        .filter(|n| n.seq > since && n.is_error)
        .map(|n| n.text.clone())
}

async fn send(handle: &EngineHandle, command: Command) -> OpResult<()> {
    handle
        .commands
        .send(command)
        .await
        .map_err(|_| Failure::new(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped"))
}

/// Watch the snapshots until `check` gives an answer (or the time is up).
async fn wait_until<T>(
    handle: &EngineHandle,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&Snapshot) -> Option<OpResult<T>>,
) -> OpResult<T> {
    let mut rx: watch::Receiver<Arc<Snapshot>> = handle.snapshots.clone();
    let deadline = Instant::now() + timeout;
    loop {
        let snap = rx.borrow_and_update().clone();
        if let Some(answer) = check(&snap) {
            return answer;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the engine stopped while waiting for {what}"),
                ));
            }
            Err(_) => {
                return Err(Failure::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("timed out after {}s waiting for {what}", timeout.as_secs()),
                ));
            }
        }
    }
}

fn find_proposal(snap: &Snapshot, id: u64) -> Option<&Proposal> {
    snap.proposals.iter().find(|p| p.id == id)
}

/// The proposal `id`, if it is open (404 unknown, 409 not open).
pub fn open_proposal(snap: &Snapshot, id: u64) -> OpResult<Proposal> {
    let proposal = find_proposal(snap, id)
        .ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, format!("no proposal {id}")))?;
    if !proposal.status.is_open() {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            format!("proposal {id} is {}, not open", proposal.status.label()),
        ));
    }
    Ok(proposal.clone())
}

/// Apply proposal `id` and wait until it is applied, failed or stale.
pub async fn approve(handle: &EngineHandle, id: u64) -> OpResult<Proposal> {
    let before = latest(handle);
    open_proposal(&before, id)?;
    let since = notice_seq(&before);
    send(handle, Command::Apply(id)).await?;
    wait_until(
        handle,
        APPLY_WAIT,
        "the proposal to be applied",
        |snap| match find_proposal(snap, id) {
            None => Some(Err(Failure::new(
                StatusCode::CONFLICT,
                format!("proposal {id} is gone (its bottleneck cleared)"),
            ))),
            Some(p) if matches!(p.status, ProposalStatus::Applying) => None,
            Some(p) if p.status.is_open() => error_notice_after(snap, since)
                .map(|text| Err(Failure::new(StatusCode::CONFLICT, text))),
            Some(p) => Some(Ok(p.clone())),
        },
    )
    .await
}

/// Set proposal `id` aside.
pub async fn dismiss(handle: &EngineHandle, id: u64) -> OpResult<Proposal> {
    let before = latest(handle);
    open_proposal(&before, id)?;
    let since = notice_seq(&before);
    send(handle, Command::Dismiss(id)).await?;
    wait_until(
        handle,
        QUICK_WAIT,
        "the proposal to be dismissed",
        |snap| match find_proposal(snap, id) {
            Some(p) if p.status.is_open() => error_notice_after(snap, since)
                .map(|text| Err(Failure::new(StatusCode::CONFLICT, text))),
            Some(p) => Some(Ok(p.clone())),
            None => Some(Err(Failure::new(
                StatusCode::CONFLICT,
                format!("proposal {id} is gone"),
            ))),
        },
    )
    .await
}

/// What a rollback did, for the JSON answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolledBack {
    pub batches: Vec<u64>,
    /// The engine's notice about it (what was restored).
    pub notice: Option<String>,
}

/// Roll back batch `batch` and wait for the engine's answer (its notice) and for the journal
/// view to no longer list it.
pub async fn rollback(handle: &EngineHandle, batch: u64) -> OpResult<RolledBack> {
    let before = latest(handle);
    // The journal view may lag a fresh apply by a moment; the proposal knows its batch.
    let known = before.changes.active.iter().any(|b| b.batch == batch)
        || before
            .proposals
            .iter()
            .any(|p| p.status == (ProposalStatus::Applied { batch }));
    if !known {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("no active batch {batch}"),
        ));
    }
    let since = notice_seq(&before);
    send(handle, Command::Rollback(batch)).await?;
    wait_until(handle, ROLLBACK_WAIT, "the rollback", |snap| {
        if let Some(text) = error_notice_after(snap, since) {
            return Some(Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, text)));
        }
        let answered = notice_seq(snap) > since;
        let listed = snap.changes.active.iter().any(|b| b.batch == batch);
        (answered && !listed).then(|| {
            Ok(RolledBack {
                batches: vec![batch],
                notice: snap.notice.as_ref().map(|n| n.text.clone()),
            })
        })
    })
    .await
}

/// Roll back every active batch and wait until none is left.
pub async fn rollback_all(handle: &EngineHandle) -> OpResult<RolledBack> {
    let before = latest(handle);
    // Always asked of the engine (it answers "nothing to roll back" when so): the journal
    // view may lag a fresh apply by a moment.
    let mut batches: Vec<u64> = before.changes.active.iter().map(|b| b.batch).collect();
    for p in &before.proposals {
        if let ProposalStatus::Applied { batch } = p.status
            && !batches.contains(&batch)
        {
            batches.push(batch);
        }
    }
    let since = notice_seq(&before);
    send(handle, Command::RollbackAll).await?;
    wait_until(handle, ROLLBACK_WAIT, "every rollback", |snap| {
        if let Some(text) = error_notice_after(snap, since) {
            return Some(Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, text)));
        }
        (notice_seq(snap) > since && snap.changes.active.is_empty()).then(|| {
            Ok(RolledBack {
                batches: batches.clone(),
                notice: snap.notice.as_ref().map(|n| n.text.clone()),
            })
        })
    })
    .await
}

/// Change the mode and wait until the snapshots show it.
pub async fn set_mode(handle: &EngineHandle, mode: Mode) -> OpResult<Mode> {
    send(handle, Command::SetMode(mode)).await?;
    wait_until(handle, QUICK_WAIT, "the mode change", |snap| {
        (snap.mode == mode).then_some(Ok(mode))
    })
    .await
}

/// Register a declaration and wait until the coordinator holds it.
pub async fn declare(handle: &EngineHandle, declaration: Declaration) -> OpResult<Declaration> {
    let since = notice_seq(&latest(handle));
    send(handle, Command::Declare(declaration.clone())).await?;
    wait_until(handle, QUICK_WAIT, "the declaration", |snap| {
        if let Some(text) = error_notice_after(snap, since) {
            return Some(Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, text)));
        }
        let held = snap
            .coordinator
            .as_ref()
            .is_some_and(|c| c.declared.contains(&declaration));
        held.then(|| Ok(declaration.clone()))
    })
    .await
}

/// Forget an agent's declaration (404 when there is none) and wait until it is gone.
pub async fn undeclare(handle: &EngineHandle, agent: &str) -> OpResult<()> {
    let declared = |snap: &Snapshot| {
        snap.coordinator
            .as_ref()
            .is_some_and(|c| c.declared.iter().any(|d| d.agent == agent))
    };
    let now = latest(handle);
    if !declared(&now) {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("nothing is declared for {agent}"),
        ));
    }
    let since = notice_seq(&now);
    send(handle, Command::Undeclare(agent.to_string())).await?;
    wait_until(handle, QUICK_WAIT, "the declaration removed", |snap| {
        if let Some(text) = error_notice_after(snap, since) {
            return Some(Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, text)));
        }
        (!declared(snap)).then_some(Ok(()))
    })
    .await
}

/// Wait for the next tick (detection runs on every tick) and return its snapshot.
pub async fn next_tick(handle: &EngineHandle) -> OpResult<Arc<Snapshot>> {
    let before = latest(handle);
    let wait = Duration::from_millis(before.interval_ms.saturating_mul(3)) + QUICK_WAIT;
    let mut rx = handle.snapshots.clone();
    wait_until(handle, wait, "the next tick", |snap| {
        (snap.seq > before.seq).then_some(Ok(()))
    })
    .await?;
    Ok(rx.borrow_and_update().clone())
}
