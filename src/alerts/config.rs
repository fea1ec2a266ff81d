//! The `[alerts]` config section: the webhook, its queue and its retries.

use serde::{Deserialize, Deserializer, Serialize};

/// Bottleneck alerts posted to a webhook in Alertmanager's JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Receiver URL ("http://host:port/path"); empty turns alerts off. Only http:// is
    /// accepted: there is no TLS client in the binary, so https would fail at every alert.
    #[serde(deserialize_with = "webhook_url")]
    pub webhook_url: String,
    /// Alerts waiting for delivery; when full, the oldest is dropped (and counted).
    #[serde(deserialize_with = "alert_queue")]
    pub queue: usize,
    /// Extra attempts per alert after the first fails, with exponential backoff.
    #[serde(deserialize_with = "alert_retries")]
    pub retries: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: String::new(),
            queue: 256,
            retries: 5,
        }
    }
}

/// Why a webhook URL cannot be used, or `None` when it can (empty means "off").
pub fn webhook_url_problem(url: &str) -> Option<String> {
    if url.is_empty() {
        return None;
    }
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return Some(format!("webhook_url = {url:?} is not a URL"));
    };
    if uri.scheme_str() != Some("http") {
        return Some(format!(
            "webhook_url = {url:?}: only http:// URLs are supported (no TLS client is built in; \
             put a local relay in front of an https receiver)"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Some(format!("webhook_url = {url:?} names no host"));
    }
    None
}

fn webhook_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    match webhook_url_problem(&v) {
        Some(problem) => Err(serde::de::Error::custom(problem)),
        None => Ok(v),
    }
}

fn alert_queue<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    sutazai_config_check::in_range(d, "queue", 1..=100_000)
}

fn alert_retries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    sutazai_config_check::in_range(d, "retries", ..=20)
}
