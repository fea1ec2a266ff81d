//! An `EngineHandle` for an engine in another process, reached through its API: a dashboard
//! started while the service runs attaches to it instead of starting a second optimizer.
//!
//! One task polls `GET /api/metrics` every tick into the watch channel; another turns each
//! `Command` into its API call. Answers the API gives to a command (an error, the report's
//! path) are laid over the service's snapshots as a local notice, as the engine would. `e`
//! writes the reports of the service's latest snapshot here, with the writer the engine
//! would use (so by the same path rule).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::client::{Client, ClientError};
use crate::engine::{Command, EngineHandle, ReportWriter};
use crate::model::{Notice, Snapshot};

/// Polling failures in a row after which the service counts as gone.
const GIVE_UP_AFTER: u32 = 5;

/// A notice of this face's own (the answer to one of its commands), shown until the service
/// publishes a newer notice of its own.
#[derive(Debug, Clone, Default)]
struct LocalNote {
    text: String,
    is_error: bool,
    /// The service's notice seq when this note was made.
    over: u64,
}

/// The latest local note and the service's latest notice seq.
#[derive(Debug, Default)]
struct Notes {
    mine: Option<LocalNote>,
    service_seq: u64,
}

type LocalNotice = Arc<Mutex<Notes>>;

/// Why the remote handle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// The face quit; the service keeps running.
    Quit,
    /// The service stopped answering (the snapshot channel is closed).
    ServiceGone,
}

/// Attach to the engine behind `client`. The returned task ends on `Command::Quit` (the
/// service keeps running) or when the service stops answering.
pub async fn attach(
    client: Client,
    reports: (PathBuf, ReportWriter),
) -> Result<(EngineHandle, JoinHandle<Detached>), ClientError> {
    let mut first: Snapshot = client.get("/api/metrics").await?.json()?;
    let service_seq = first.notice.as_ref().map_or(0, |n| n.seq);
    let note = LocalNote {
        text: format!("attached to the running service at {}", client.endpoint),
        is_error: false,
        over: service_seq,
    };
    overlay_notice(&mut first, Some(&note));
    let notice: LocalNotice = Arc::new(Mutex::new(Notes {
        mine: Some(note),
        service_seq,
    }));
    let (snap_tx, snap_rx) = watch::channel(Arc::new(first));
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let mut poller = tokio::spawn(poll(client.clone(), snap_tx, notice.clone()));
    let exports = Exports {
        dir: reports.0,
        write: reports.1,
        snapshots: snap_rx.clone(),
    };
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = commands(client, cmd_rx, exports, notice) => {
                poller.abort();
                Detached::Quit
            }
            _ = &mut poller => Detached::ServiceGone,
        }
    });
    Ok((
        EngineHandle {
            snapshots: snap_rx,
            commands: cmd_tx,
            cache: None,
            balancer: None,
        },
        task,
    ))
}

/// Fetch the service's snapshot every tick; drop the sender (closing the channel, which
/// ends the dashboard) when it stops answering.
async fn poll(client: Client, tx: watch::Sender<Arc<Snapshot>>, notice: LocalNotice) {
    let mut failures = 0;
    loop {
        let interval = tx.borrow().interval_ms.max(250);
        tokio::time::sleep(Duration::from_millis(interval)).await;
        match client
            .get("/api/metrics")
            .await
            .and_then(|r| r.json::<Snapshot>())
        {
            Ok(mut snap) => {
                failures = 0;
                if let Ok(mut notes) = notice.lock() {
                    notes.service_seq = snap.notice.as_ref().map_or(0, |n| n.seq);
                    overlay_notice(&mut snap, notes.mine.as_ref());
                }
                if tx.send(Arc::new(snap)).is_err() {
                    return; // the dashboard is gone
                }
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(target: "sutazai_top::api", %err, "the service did not answer");
                if failures >= GIVE_UP_AFTER {
                    tracing::error!(target: "sutazai_top::api", "the service is gone; detaching");
                    return;
                }
            }
        }
    }
}

/// Our note is shown until the service publishes a notice newer than the one it replaced.
fn overlay_notice(snap: &mut Snapshot, mine: Option<&LocalNote>) {
    let theirs = snap.notice.as_ref().map_or(0, |n| n.seq);
    if let Some(note) = mine.filter(|note| theirs <= note.over) {
        snap.notice = Some(Notice {
            seq: theirs + 1,
            text: note.text.clone(),
            is_error: note.is_error,
        });
    }
}

/// What `e` needs: where reports go, the writer, and the latest snapshot.
#[derive(Clone)]
struct Exports {
    dir: PathBuf,
    write: ReportWriter,
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

async fn commands(
    client: Client,
    mut rx: mpsc::Receiver<Command>,
    exports: Exports,
    notice: LocalNotice,
) {
    while let Some(command) = rx.recv().await {
        if command == Command::Quit {
            return;
        }
        // Each call on its own task: an approval waits up to 30 s and must not hold up the
        // next key.
        let (client, exports, notice) = (client.clone(), exports.clone(), notice.clone());
        tokio::spawn(async move {
            let answer = call(&client, &command, &exports).await;
            let text = match answer {
                Ok(Some(text)) => Some((text, false)),
                Ok(None) => None,
                Err(err) => Some((format!("{command:?} failed: {err}"), true)),
            };
            if let (Some((text, is_error)), Ok(mut notes)) = (text, notice.lock()) {
                let over = notes.service_seq;
                notes.mine = Some(LocalNote {
                    text,
                    is_error,
                    over,
                });
            }
        });
    }
}

/// One command as an API call; `Some(text)` is a notice to show.
async fn call(
    client: &Client,
    command: &Command,
    exports: &Exports,
) -> Result<Option<String>, ClientError> {
    let empty = json!({});
    match command {
        Command::SetMode(mode) => {
            client
                .put("/api/mode", &json!({ "mode": mode.label() }))
                .await?
                .json::<serde_json::Value>()?;
            Ok(None)
        }
        Command::Apply(id) => {
            client
                .post(&format!("/api/proposals/{id}/approve"), &empty)
                .await?
                .json::<serde_json::Value>()?;
            Ok(None)
        }
        Command::Dismiss(id) => {
            client
                .post(&format!("/api/proposals/{id}/dismiss"), &empty)
                .await?
                .json::<serde_json::Value>()?;
            Ok(None)
        }
        Command::Rollback(batch) => {
            client
                .post(&format!("/api/changes/{batch}/rollback"), &empty)
                .await?
                .json::<serde_json::Value>()?;
            Ok(None)
        }
        Command::RollbackAll => {
            client
                .post("/api/changes/rollback-all", &empty)
                .await?
                .json::<serde_json::Value>()?;
            Ok(None)
        }
        Command::Declare(declaration) => {
            let body = serde_json::json!({
                "agent_id": declaration.agent,
                "cpu_cores": declaration.need.cpus,
                "exclusive": declaration.need.exclusive,
                "memory_mb": declaration.need.memory_bytes.map(|b| b >> 20),
                "numa": declaration.need.numa,
                "priority": declaration.priority,
                "gpu_memory_mb": declaration.need.gpu_memory_bytes.map(|b| b >> 20),
            });
            client
                .post("/api/agents", &body)
                .await?
                .json::<serde_json::Value>()?;
            Ok(None)
        }
        Command::Undeclare(agent) => {
            let path = format!(
                "/api/agents/{}",
                super::cache::percent_encode(agent.as_bytes())
            );
            client.delete(&path).await?.json::<serde_json::Value>()?;
            Ok(None)
        }
        Command::ExportReport => export_report(exports).await.map(Some),
        Command::Quit => Ok(None),
    }
}

/// Write both reports of the service's latest snapshot here, as `e` does in a local
/// dashboard.
async fn export_report(exports: &Exports) -> Result<String, ClientError> {
    let current = exports.snapshots.borrow().clone();
    let (write, dir) = (exports.write.clone(), exports.dir.clone());
    let written = tokio::task::spawn_blocking(move || write(&current, &dir))
        .await
        .map_err(|e| e.to_string())
        .and_then(|written| written);
    match written {
        Ok(files) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            Ok(format!("report written to {}", names.join(" and ")))
        }
        Err(err) => Err(ClientError::Local(format!("report failed: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_notice(seq: u64, text: &str) -> Snapshot {
        Snapshot {
            notice: Some(Notice {
                seq,
                text: text.to_string(),
                is_error: false,
            }),
            ..Snapshot::default()
        }
    }

    #[test]
    fn our_note_shows_until_the_service_says_something_newer() {
        let note = LocalNote {
            text: "proposal 9 not applied".into(),
            is_error: true,
            over: 4,
        };
        let mut snap = with_notice(4, "old service notice");
        overlay_notice(&mut snap, Some(&note));
        let shown = snap.notice.unwrap();
        assert_eq!(
            (shown.text.as_str(), shown.is_error),
            ("proposal 9 not applied", true)
        );

        let mut snap = with_notice(5, "rolled back on its own");
        overlay_notice(&mut snap, Some(&note));
        assert_eq!(snap.notice.unwrap().text, "rolled back on its own");

        let mut snap = Snapshot::default();
        overlay_notice(&mut snap, None);
        assert!(snap.notice.is_none());
    }
}
