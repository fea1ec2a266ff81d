//! sutazai-top: `top` for many-agent AI hosts, and the thing that fixes what it finds.
//!
//! Data flows one way: samplers (`host`, `containers`) feed the `engine`, which publishes an
//! immutable [`snapshot::Snapshot`] every tick; faces (`tui`, `report`) render it and talk back
//! only through [`engine::Command`]s.

pub mod alerts;
pub mod api;
pub mod config;
pub mod containers;
pub mod eliminator;
pub mod engine;
pub mod host;
pub mod metrics;
pub mod model;
pub mod optimizer;
pub mod report;
pub mod tui;
