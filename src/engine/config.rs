//! What the engine is started with: its own settings and the sections of the parts it wires
//! (the app's `Config` hands these out; the engine never sees the faces' sections), and the
//! report writer a face lends it, since writing a report is a face's work.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sutazai_balancer::BalancerConfig;
use sutazai_cache::CacheConfig;

use crate::containers::{AgentEntry, DockerConfig};
use crate::coordinator::CoordinatorConfig;
use crate::eliminator::DetectConfig;
use crate::host::HostConfig;
use crate::model::{Mode, Snapshot};
use crate::optimizer::OptimizerConfig;

/// Writes the report of a snapshot into a directory; the files written, or why not.
pub type ReportWriter = Arc<dyn Fn(&Snapshot, &Path) -> Result<Vec<PathBuf>, String> + Send + Sync>;

#[derive(Clone)]
pub struct EngineConfig {
    pub interval_ms: u64,
    /// Points of history kept for sparklines and trends.
    pub history_points: usize,
    pub mode: Mode,
    pub top_processes: usize,
    /// Where `Command::ExportReport` writes.
    pub report_dir: PathBuf,
    /// How it writes; `None` answers an export with a notice that this engine cannot.
    pub report_writer: Option<ReportWriter>,
    pub host: HostConfig,
    pub docker: DockerConfig,
    /// `[[agents]]`: plain processes that count as agents.
    pub agents: Vec<AgentEntry>,
    pub optimizer: OptimizerConfig,
    pub detect: DetectConfig,
    pub cache: CacheConfig,
    pub balancer: BalancerConfig,
    pub coordinator: CoordinatorConfig,
    pub object_store: sutazai_pools::ObjectStoreConfig,
    pub pools: Vec<sutazai_pools::PoolConfig>,
    /// Where the pools' socket goes when `[object_store] socket` is empty.
    pub runtime_dir: PathBuf,
}
