//! sutazai-top: `top` for many-agent AI hosts, and the thing that fixes what it finds.
//!
//! Data flows one way: readers (`host`, `containers`) feed the `engine`, which publishes an
//! immutable [`model::Snapshot`] every tick; faces (`tui`, `api`, `metrics`, `report`,
//! `alerts`) render it and talk back only through [`engine::Command`]s. Only the
//! `optimizer`'s actuators, with its journal, change the host.
//!
//! The modules stand on floors, and use only their own or those below (`tests/floors.rs`
//! keeps it so): 1 `model`; 2 `host`, `containers`; 3 `optimizer`, `eliminator`, `coordinator`; 4 `engine`;
//! 5 the faces; 6 `config` (and the binary's `cli`). The agents' cache and the load balancer
//! are crates of their own (`sutazai-cache`, `sutazai-balancer`).

// Floor 1: the data every face reads.
pub mod model;
// Floor 2: readers.
pub mod containers;
pub mod host;
// Floor 3: the writers to the host, and what decides what to write.
pub mod coordinator;
pub mod eliminator;
pub mod optimizer;
// Floor 4.
pub mod engine;
// Floor 5: faces.
pub mod alerts;
pub mod api;
pub mod metrics;
pub mod report;
pub mod tui;
// Floor 6: the whole config, composed of each component's section.
pub mod config;
