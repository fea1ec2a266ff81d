//! The engine: sampler tasks, the tick, the snapshot channel, commands.
//!
//! Each sampler (cpu, memory, disks, net, processes, containers, journal view) runs as its
//! own tokio task and publishes its latest reading on a watch channel. The tick never waits
//! for a sampler: every interval it composes the latest readings into an immutable
//! `Snapshot`, pushes the host history rings, runs detection (bottlenecks, proposals,
//! validation of applied fixes, auto-fix) and publishes the snapshot as an `Arc`. Faces send
//! `Command`s; their results come back in the next snapshot. Only the optimizer's actuators,
//! called from here on a plain thread, change the host.

pub mod config;
pub mod pools;
pub mod sampler;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::model::Mode;
use crate::model::Snapshot;

mod ticker;
pub use config::{EngineConfig, ReportWriter};
pub use ticker::{spawn, spawn_managing};

/// What a face may ask of the engine. Results come back in a later snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SetMode(Mode),
    /// Write the JSON and the HTML report of the current snapshot and history side by side;
    /// the paths (or the error) come back as the snapshot's notice.
    ExportReport,
    /// Apply a proposal (by id): plan its changes, journal and apply them all or nothing.
    Apply(u64),
    /// Set a proposal aside.
    Dismiss(u64),
    /// Roll back one batch of changes (by journal id); the result comes back as the notice.
    Rollback(u64),
    /// Roll back every active batch.
    RollbackAll,
    /// Register what an agent needs (it takes the place of its labels), kept in the state
    /// dir; the coordinator plans for it from the next tick.
    Declare(crate::model::Declaration),
    /// Forget the declaration registered for this agent (its labels count again).
    Undeclare(String),
    Quit,
}

/// A face's connection to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub commands: mpsc::Sender<Command>,
    /// The agents' cache the engine owns (`None` when disabled, or for a face attached to
    /// a service through the API, which reaches the cache over HTTP).
    pub cache: Option<Arc<sutazai_cache::Cache>>,
    /// The load balancer the engine runs (`None` when disabled, or for a face attached to a
    /// service through the API).
    pub balancer: Option<Arc<sutazai_balancer::Balancer>>,
}
