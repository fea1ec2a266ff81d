//! How a process is named so that reuse cannot fool us (a container is named by its id).

use serde::{Deserialize, Serialize};

/// A process identity that survives pid reuse: (pid, start time in clock ticks since boot).
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}
