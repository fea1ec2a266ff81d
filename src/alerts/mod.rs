//! Bottleneck alerts posted to a webhook in Alertmanager's webhook JSON shape.
//!
//! A face that runs the engine (the dashboard, `serve`) calls [`spawn_alerts`] with the
//! engine's snapshot channel. One task compares consecutive snapshots' bottlenecks and queues
//! an alert when one is raised ("firing") or cleared ("resolved"); another posts the queue to
//! the receiver, retrying with exponential backoff. The engine never waits for either: the
//! watch channel never blocks its sender, and the queue is bounded, dropping its oldest alert
//! (counted in `sutazai_alerts_dropped_total`) rather than growing while a receiver is down.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub mod config;
use crate::model::Snapshot;
use crate::model::{Bottleneck, BottleneckKind, Subject};
pub use config::AlertsConfig;

const LOG: &str = "sutazai_top::alerts";
/// One delivery attempt (connect, send, response head) may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// After the engine stops, the queue gets this long to be delivered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Go's zero time: what Alertmanager puts in `endsAt` of an alert still firing.
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

static SENT: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Alert delivery figures of this process, for the metrics face.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounts {
    /// Accepted by the receiver (2xx).
    pub sent: u64,
    /// Given up on after every retry failed.
    pub failed: u64,
    /// Dropped from a full queue.
    pub dropped: u64,
}

pub fn counts() -> AlertCounts {
    AlertCounts {
        sent: SENT.load(Ordering::Relaxed),
        failed: FAILED.load(Ordering::Relaxed),
        dropped: DROPPED.load(Ordering::Relaxed),
    }
}

/// Start the alert tasks on the current Tokio runtime; `None` when no webhook is configured
/// (or its URL is unusable, which config validation normally rules out). The handle ends
/// when the snapshot channel closes and the queue is delivered (at most `DRAIN_TIMEOUT`).
pub fn spawn_alerts(
    config: &AlertsConfig,
    snapshots: watch::Receiver<Arc<Snapshot>>,
) -> Option<JoinHandle<()>> {
    if config.webhook_url.is_empty() {
        return None;
    }
    let target = match Target::parse(&config.webhook_url) {
        Ok(target) => target,
        Err(problem) => {
            tracing::error!(target: LOG, "alerts are off: {problem}");
            return None;
        }
    };
    tracing::info!(target: LOG, "posting bottleneck alerts to {}", config.webhook_url);
    let queue = Arc::new(Queue::new(config.queue));
    let sender = tokio::spawn(send_loop(target, queue.clone(), config.retries));
    Some(tokio::spawn(watch_loop(snapshots, queue, sender)))
}

async fn watch_loop(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    queue: Arc<Queue>,
    mut sender: JoinHandle<()>,
) {
    let mut tracker = Tracker::default();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        for alert in tracker.update(&snap) {
            queue.push(alert);
        }
        if snapshots.changed().await.is_err() {
            break;
        }
    }
    // The engine stopped. Open alerts stay open: the bottleneck did not clear, we just
    // stopped looking.
    queue.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut sender)
        .await
        .is_err()
    {
        sender.abort();
        tracing::warn!(target: LOG, "engine stopped; undelivered alerts abandoned");
    }
}

// ---------------------------------------------------------------------------------------------
// Raised and cleared bottlenecks
// ---------------------------------------------------------------------------------------------

/// One alert, ready to post.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub firing: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at_ms: u64,
    pub ends_at_ms: Option<u64>,
    pub fingerprint: String,
}

#[derive(Debug, Default)]
struct Tracker {
    /// Firing alerts by fingerprint.
    open: HashMap<String, Alert>,
}

impl Tracker {
    /// The alerts that `snap` raises or clears compared with the snapshots seen before.
    fn update(&mut self, snap: &Snapshot) -> Vec<Alert> {
        let now_ms = if snap.taken_at_ms > 0 {
            snap.taken_at_ms
        } else {
            wall_clock_ms()
        };
        let mut current = HashMap::new();
        let mut out = Vec::new();
        for bottleneck in &snap.bottlenecks {
            let alert = firing_alert(snap, bottleneck, now_ms);
            if !self.open.contains_key(&alert.fingerprint) {
                out.push(alert.clone());
            }
            current.insert(alert.fingerprint.clone(), alert);
        }
        let mut cleared: Vec<Alert> = self
            .open
            .drain()
            .filter(|(fp, _)| !current.contains_key(fp))
            .map(|(_, alert)| Alert {
                firing: false,
                ends_at_ms: Some(now_ms),
                ..alert
            })
            .collect();
        cleared.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        out.extend(cleared);
        self.open = current;
        out
    }
}

fn firing_alert(snap: &Snapshot, bottleneck: &Bottleneck, now_ms: u64) -> Alert {
    let kind = bottleneck.kind.name();
    let subject = subject_label(&bottleneck.subject);
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), kind.to_string());
    labels.insert("subject".to_string(), subject.clone());
    labels.insert(
        "severity".to_string(),
        severity(bottleneck.kind).to_string(),
    );
    if !snap.host.hostname.is_empty() {
        labels.insert("instance".to_string(), snap.host.hostname.clone());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary".to_string(),
        format!("{} on {subject}", kind.replace('_', " ")),
    );
    annotations.insert("evidence".to_string(), evidence_text(bottleneck));
    // The condition began `since_seq` ticks ago, not when we noticed it was held.
    let ticks_ago = snap.seq.saturating_sub(bottleneck.since_seq);
    let starts_at_ms = now_ms.saturating_sub(ticks_ago.saturating_mul(snap.interval_ms));
    Alert {
        firing: true,
        fingerprint: fingerprint(&labels),
        labels,
        annotations,
        starts_at_ms,
        ends_at_ms: None,
    }
}

fn subject_label(subject: &Subject) -> String {
    match subject {
        Subject::Host => "host".to_string(),
        Subject::Container { name, .. } => format!("container/{name}"),
        Subject::Process { id, comm } => format!("process/{comm}/{}", id.pid),
    }
}

/// Memory running out ends in the OOM killer; everything else slows agents down.
fn severity(kind: BottleneckKind) -> &'static str {
    match kind {
        BottleneckKind::MemoryPressure | BottleneckKind::PredictedExhaustion => "critical",
        _ => "warning",
    }
}

fn evidence_text(bottleneck: &Bottleneck) -> String {
    bottleneck
        .evidence
        .iter()
        .map(|e| {
            format!(
                "{} {} {} (threshold {} {})",
                e.metric,
                short_number(e.value),
                e.unit,
                short_number(e.threshold),
                e.unit
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn short_number(v: f64) -> String {
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// Alertmanager's fingerprint: FNV-1a 64 over the sorted label names and values, each
/// followed by a 0xff separator, as 16 hex digits.
fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, value) in labels {
        feed(name.as_bytes());
        feed(&[0xff]);
        feed(value.as_bytes());
        feed(&[0xff]);
    }
    format!("{hash:016x}")
}

/// The webhook body for one alert, as Alertmanager's webhook receiver sends it (version 4).
pub fn webhook_message(alert: &Alert) -> serde_json::Value {
    let status = if alert.firing { "firing" } else { "resolved" };
    let group_labels: BTreeMap<&str, &str> = ["alertname", "subject"]
        .into_iter()
        .filter_map(|k| alert.labels.get(k).map(|v| (k, v.as_str())))
        .collect();
    let group_key = format!(
        "{{}}:{{{}}}",
        group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "sutazai-top",
        "groupLabels": group_labels,
        "commonLabels": alert.labels,
        "commonAnnotations": alert.annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": rfc3339(alert.starts_at_ms),
            "endsAt": alert.ends_at_ms.map_or_else(|| NOT_ENDED.to_string(), rfc3339),
            "generatorURL": "",
            "fingerprint": alert.fingerprint,
        }],
    })
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, e.g. "2026-11-27T08:47:26.123Z".
pub fn rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The bounded queue
// ---------------------------------------------------------------------------------------------

struct Queue {
    items: Mutex<VecDeque<Alert>>,
    capacity: usize,
    ready: Notify,
    closed: AtomicBool,
}

impl Queue {
    fn new(capacity: usize) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Alert>> {
        // The lock is held only for a push or a pop, which cannot leave the deque half done.
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, alert: Alert) {
        {
            let mut items = self.lock();
            while items.len() >= self.capacity {
                items.pop_front();
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            items.push_back(alert);
        }
        self.ready.notify_one();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// The next alert, or `None` once closed and empty.
    async fn pop(&self) -> Option<Alert> {
        loop {
            if let Some(alert) = self.lock().pop_front() {
                return Some(alert);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            self.ready.notified().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------------------------

/// Where the webhook lives, parsed once.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        if let Some(problem) = config::webhook_url_problem(url) {
            return Err(problem);
        }
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| format!("webhook_url = {url:?} is not a URL"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("webhook_url = {url:?} names no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        Ok(Target {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }
}

async fn send_loop(target: Target, queue: Arc<Queue>, retries: u32) {
    while let Some(alert) = queue.pop().await {
        deliver(&target, &alert, retries).await;
    }
}

async fn deliver(target: &Target, alert: &Alert, retries: u32) {
    let body = match serde_json::to_vec(&webhook_message(alert)) {
        Ok(body) => Bytes::from(body),
        Err(err) => {
            tracing::error!(target: LOG, "cannot encode alert: {err}");
            FAILED.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut backoff = FIRST_BACKOFF;
    for attempt in 0..=retries {
        match post(target, body.clone()).await {
            Ok(status) if status.is_success() => {
                SENT.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(status) => {
                tracing::warn!(target: LOG, "webhook answered {status} (attempt {})", attempt + 1)
            }
            Err(err) => {
                tracing::warn!(target: LOG, "webhook unreachable: {err} (attempt {})", attempt + 1)
            }
        }
        if attempt < retries {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    FAILED.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        target: LOG,
        "alert {} ({}) not delivered after {} attempts",
        alert.labels.get("alertname").map_or("?", String::as_str),
        if alert.firing { "firing" } else { "resolved" },
        retries + 1
    );
}

/// One POST over a fresh connection; the status, or why there is none.
async fn post(target: &Target, body: Bytes) -> Result<hyper::StatusCode, String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect to {}: {e}", target.authority))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let connection = tokio::spawn(connection);
        let request = Request::post(target.path.as_str())
            .header(hyper::header::HOST, target.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "sutazai-top")
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender.send_request(request).await;
        connection.abort();
        response
            .map(|r| r.status())
            .map_err(|e| format!("POST {}: {e}", target.path))
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Evidence;

    fn bottleneck(kind: BottleneckKind, name: &str) -> Bottleneck {
        Bottleneck {
            kind,
            subject: Subject::Container {
                id: format!("{name}-id"),
                name: name.to_string(),
            },
            evidence: vec![Evidence {
                metric: format!("{name} cpu"),
                value: 96.5,
                threshold: 50.0,
                unit: "%".into(),
            }],
            since_seq: 8,
        }
    }

    fn snap(seq: u64, bottlenecks: Vec<Bottleneck>) -> Snapshot {
        Snapshot {
            seq,
            taken_at_ms: 1_700_000_000_000 + seq * 1000,
            interval_ms: 1000,
            bottlenecks,
            ..Snapshot::default()
        }
    }

    #[test]
    fn raised_then_cleared_once_each() {
        let mut tracker = Tracker::default();
        assert!(tracker.update(&snap(9, vec![])).is_empty());
        let b = bottleneck(BottleneckKind::NoisyNeighbour, "agent-1");
        let raised = tracker.update(&snap(10, vec![b.clone()]));
        assert_eq!(raised.len(), 1);
        assert!(raised[0].firing);
        // Began at tick 8, two ticks before tick 10.
        assert_eq!(raised[0].starts_at_ms, 1_700_000_008_000);
        assert!(tracker.update(&snap(11, vec![b.clone()])).is_empty());
        let cleared = tracker.update(&snap(12, vec![]));
        assert_eq!(cleared.len(), 1);
        assert!(!cleared[0].firing);
        assert_eq!(cleared[0].fingerprint, raised[0].fingerprint);
        assert_eq!(cleared[0].ends_at_ms, Some(1_700_000_012_000));
        assert!(tracker.update(&snap(13, vec![])).is_empty());
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn fingerprint_depends_on_every_label() {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "test".to_string());
        let fp = fingerprint(&labels);
        assert_eq!(fp.len(), 16);
        let mut other = labels.clone();
        other.insert("severity".to_string(), "warning".to_string());
        assert_ne!(fp, fingerprint(&other));
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let queue = Queue::new(2);
        let before = counts().dropped;
        let mut alert = firing_alert(
            &snap(1, vec![]),
            &bottleneck(BottleneckKind::CpuSaturation, "a"),
            1,
        );
        for i in 0..5 {
            alert.fingerprint = format!("{i}");
            queue.push(alert.clone());
        }
        assert!(counts().dropped >= before + 3);
        let left: Vec<String> = queue.lock().iter().map(|a| a.fingerprint.clone()).collect();
        assert_eq!(left, ["3", "4"]);
    }
}
