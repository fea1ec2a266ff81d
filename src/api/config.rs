//! The API's `[api]` config section: the Unix socket, and TCP with a bearer token.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The local REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Unix socket the API listens on (its directory is made 0700, the socket 0600).
    #[serde(deserialize_with = "socket")]
    pub socket: PathBuf,
    /// Also listen on TCP at this address ("127.0.0.1:7878"); empty means no TCP.
    #[serde(deserialize_with = "listen_addr", serialize_with = "write_listen")]
    pub listen: Option<SocketAddr>,
    /// Bearer token required on TCP; created (0600, random) when missing.
    pub token_file: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from("/run/sutazai-top/api.sock"),
            listen: None,
            token_file: PathBuf::from("/var/lib/sutazai-top/api.token"),
        }
    }
}

/// An address and port, or "" for no TCP.
fn listen_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let v = String::deserialize(d)?;
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "listen = {v:?}: expected an address and port such as \"127.0.0.1:7878\", or \"\" for no TCP"
        ))
    })
}

fn write_listen<S: Serializer>(listen: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match listen {
        Some(addr) => s.collect_str(addr),
        None => s.serialize_str(""),
    }
}

fn socket<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    sutazai_config_check::non_empty_path(d, "socket")
}
