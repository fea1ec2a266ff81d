//! HTTP/1.1 over the API's Unix socket written by hand, so a test sees every header and
//! can call from any thread without a runtime.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sutazai_top::config::Config;

/// An answer as it came over the wire.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One HTTP/1.1 request over the socket, written by hand so the test sees every header.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    exchange(socket, head.as_bytes(), body)
}

/// Send `head` then `body` as given, however malformed, and read the answer.
pub fn exchange(socket: &Path, head: &[u8], body: &[u8]) -> Answer {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(head).expect("write head");
    // A refused body may be cut short by the server: that is its answer, not an error.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    // After refusing a body the server may close with bytes unread: a reset after the
    // answer arrived is expected.
    if let Err(err) = stream.read_to_end(&mut raw) {
        assert!(!raw.is_empty(), "no answer: {err}");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// `len` bytes lz4 cannot shrink.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A cache small enough to fill by hand: L1 holds two 40 kB values, L2 one, L3 a megabyte;
/// LRU everywhere, so every value lands where a test expects it.
pub fn small_cache_config() -> Config {
    let mut config = super::test_config(250);
    config.docker.enabled = false;
    config.cache.l1_bytes = 100_000;
    config.cache.l2_bytes = 50_000;
    config.cache.l3_bytes = 1_000_000;
    for policy in [
        &mut config.cache.l1_policy,
        &mut config.cache.l2_policy,
        &mut config.cache.l3_policy,
    ] {
        *policy = sutazai_cache::PolicyName::Lru;
    }
    config
}
