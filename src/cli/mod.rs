//! The subcommands of the binary, one file per group; `main.rs` only parses and dispatches.

pub mod bench;
pub mod changes;
pub mod faces;
pub mod report;
pub mod run;
pub mod service;
