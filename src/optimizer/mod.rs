//! The optimization master: the only code that changes the host.
//!
//! A change is a value — target, knob, value before, value after — written and synced to the
//! journal before it is applied, verified by reading it back, and undone by applying `before`.
//! This module holds the change model (`change`), the journal (`journal`) and the actuators
//! that read and write each knob (`actuators`). Detection, proposals and validation build on
//! it (issue 3).

pub mod actuators;
pub mod config;
pub use config::{OptimizerConfig, SchedulerPolicy, UncleanExit};
pub mod change;
pub mod follow;
pub mod journal;
pub mod master;
pub mod view;
