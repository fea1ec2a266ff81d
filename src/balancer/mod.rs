//! The load balancer (issue 6): an HTTP reverse proxy in front of agent replicas.

pub mod snapshot;

pub use snapshot::{
    BackendSnapshot, BackendSource, BalancerSnapshot, CircuitState, Health, PoolSnapshot,
};
