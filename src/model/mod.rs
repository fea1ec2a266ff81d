//! Floor 1: the data every face reads. The snapshot of a tick, the bottlenecks found, the
//! fixes proposed and where they stand, the changes made to the host, the mode.
//!
//! Plain data, `Serialize` throughout, and no I/O: the readers below fill it (`host`,
//! `containers`), the engine's parts compute it (`eliminator`, `optimizer`), and the faces
//! only render it. Nothing here imports another module of the app.

pub mod bottleneck;
pub mod change;
pub mod fix;
pub mod identity;
pub mod mode;
pub mod need;
pub mod process_agent;
pub mod proposal;
pub mod snapshot;

pub use bottleneck::{Bottleneck, BottleneckKind, Evidence, Subject};
pub use change::{Change, Knob, Target};
pub use fix::{Fix, Intent, IntentTarget, Measure, Risk};
pub use identity::ProcessId;
pub use mode::Mode;
pub use need::{Allocation, AllocationState, CoordinatorSnapshot, Declaration, Need, SharedParent};
pub use process_agent::{AgentCgroups, PROCESS_AGENT_PREFIX, ProcessAgent, is_process_agent};
pub use proposal::{Guard, Proposal, ProposalStatus, Validation, Verdict};
pub use snapshot::*;
