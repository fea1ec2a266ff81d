//! The engine: sampler tasks, the tick, the snapshot channel, commands.
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::Mode;
use crate::snapshot::Snapshot;

/// What a face may ask of the engine. Results come back in a later snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SetMode(Mode),
    /// Write a JSON report of the current snapshot and history; the path (or the error)
    /// comes back as the snapshot's notice.
    ExportReport,
    Quit,
}

/// A face's connection to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub commands: mpsc::Sender<Command>,
}
