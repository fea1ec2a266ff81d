//! The local REST API: the engine's face for scripts, the service commands and a dashboard
//! attached to a running service.
//!
//! HTTP/1.1 on hyper, on a Unix socket by default (root-only permissions are the guard) and
//! on TCP when configured (then every request needs the bearer token). Like every face it
//! reads snapshots and sends `Command`s; an endpoint that changes something waits for the
//! change to show in a later snapshot, so a caller gets the outcome, not just "sent".
//!
//! - [`routes`]: the one table of routes (the OpenAPI test compares it with the document)
//!   and their handlers;
//! - [`server`]: listeners, limits, authentication; `head` checks each request head first,
//!   so even a head hyper cannot parse gets a JSON error;
//! - [`client`]: a small client for the CLI, the attached dashboard and tests;
//! - [`remote`]: an `EngineHandle` backed by the API, so the TUI runs unchanged on it.

pub mod cache;
pub mod config;
mod head;
pub use config::ApiConfig;
pub mod client;
pub mod ops;
pub mod remote;
pub mod routes;
pub mod server;

pub use client::{ApiResponse, Client, ClientError, Endpoint};
pub use server::ApiServer;

/// The OpenAPI 3 document describing every route (served at `/api/openapi.json`).
pub const OPENAPI: &str = include_str!("../../assets/openapi.json");

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// `POST /api/stop`: the service should stop, rolling its changes back or not.
#[derive(Debug, Clone, PartialEq)]
pub struct StopRequest {
    pub rollback: bool,
}

/// How a service is stopped through the API: where the request goes, and what it does
/// about rollback when the caller does not say (its `rollback_on_exit`).
#[derive(Debug, Clone)]
pub struct StopChannel {
    pub sender: tokio::sync::mpsc::Sender<StopRequest>,
    pub rollback_on_exit: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A path the API owns (the token, the socket's directory) broke the rule.
    #[error("{0}")]
    Path(#[from] sutazai_owned_paths::PathError),
    #[error("{path}: {what}: {source}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("another engine already serves the API at {0} (it answers there)")]
    SocketInUse(String),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(String),
    #[error(
        "token file {path} is readable by others (mode {mode:o}): chmod 0600 it, or remove it for a new one"
    )]
    TokenReadable { path: String, mode: u32 },
    #[error("token file {0} is empty or not a token")]
    BadToken(String),
}

impl ApiError {
    fn io(path: &std::path::Path, what: &'static str, source: std::io::Error) -> ApiError {
        ApiError::Io {
            path: path.display().to_string(),
            what,
            source,
        }
    }
}
