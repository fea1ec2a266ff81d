//! Bottleneck alerts to a webhook (`sutazai_top::alerts`), against real HTTP receivers on
//! 127.0.0.1: a hyper server that records what it gets and answers scripted statuses, and
//! a black hole that accepts connections and never answers.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sutazai_top::alerts::{counts, rfc3339, spawn_alerts};
use sutazai_top::config::AlertsConfig;
use sutazai_top::model::Risk;
use sutazai_top::model::Snapshot;
use tokio::sync::watch;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    answered: u16,
    content_type: String,
    body: Value,
}

/// An HTTP receiver answering the statuses of `script` in turn, then 200.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (got2, script2) = (got.clone(), script.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (got, script) = (got2.clone(), script2.clone());
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (got, script) = (got.clone(), script.clone());
                        async move {
                            let content_type = req
                                .headers()
                                .get(hyper::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let answered = script.lock().unwrap().pop_front().unwrap_or(200);
                            got.lock().unwrap().push(Received {
                                answered,
                                content_type,
                                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                            });
                            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *response.status_mut() = StatusCode::from_u16(answered).unwrap();
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/alerts", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until `n` requests arrived; returns them.
    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} of {n} requests: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn config(url: &str, queue: usize, retries: u32) -> AlertsConfig {
    AlertsConfig {
        webhook_url: url.to_string(),
        queue,
        retries,
    }
}

/// The small host at `seq`, with the noisy-neighbour bottleneck (raised at tick 40) or not.
fn snapshot(seq: u64, with_bottleneck: bool) -> Arc<Snapshot> {
    let mut snap = if with_bottleneck {
        common::with_proposal(common::small_host(), Risk::Low)
    } else {
        common::small_host()
    };
    snap.seq = seq;
    snap.taken_at_ms = 1_700_000_000_000 + seq * 1000;
    Arc::new(snap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_then_cleared_bottleneck_posts_firing_then_resolved() {
    let receiver = Receiver::start(&[]).await;
    let (tx, rx) = watch::channel(snapshot(41, false));
    let handle = spawn_alerts(&config(&receiver.url(), 256, 5), rx).expect("alerts on");

    tx.send(snapshot(42, true)).unwrap();
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    tx.send(snapshot(43, true)).unwrap(); // still raised: nothing new
    tx.send(snapshot(44, false)).unwrap();
    let got = {
        let _ = got;
        receiver.wait_for(2, Duration::from_secs(5)).await
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2, "one firing, one resolved");

    let (firing, resolved) = (&got[0], &got[1]);
    assert_eq!(firing.content_type, "application/json");
    for (msg, status) in [(&firing.body, "firing"), (&resolved.body, "resolved")] {
        assert_eq!(msg["version"], "4");
        assert_eq!(msg["status"], status);
        assert_eq!(msg["receiver"], "sutazai-top");
        assert!(
            msg["groupKey"]
                .as_str()
                .unwrap()
                .contains("noisy_neighbour")
        );
        assert_eq!(msg["groupLabels"]["alertname"], "noisy_neighbour");
        let alerts = msg["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert_eq!(alert["status"], status);
        assert_eq!(alert["labels"]["alertname"], "noisy_neighbour");
        assert_eq!(alert["labels"]["subject"], "container/agent-001");
        assert_eq!(alert["labels"]["severity"], "warning");
        assert_eq!(alert["labels"]["instance"], "agents-01");
        assert_eq!(msg["commonLabels"], alert["labels"]);
        assert!(
            alert["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("noisy neighbour on container/agent-001")
        );
        assert_eq!(
            alert["annotations"]["evidence"],
            "agent-001 cpu 96.5 % (threshold 50 %)"
        );
        // The condition began at tick 40: two ticks of 1 s before tick 42.
        assert_eq!(alert["startsAt"], rfc3339(1_700_000_040_000));
        assert_eq!(alert["startsAt"], "2023-11-14T22:14:00.000Z");
        let fp = alert["fingerprint"].as_str().unwrap();
        assert!(
            fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()),
            "{fp}"
        );
    }
    assert_eq!(firing.body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        resolved.body["alerts"][0]["endsAt"],
        rfc3339(1_700_000_044_000)
    );
    assert_eq!(
        firing.body["alerts"][0]["fingerprint"],
        resolved.body["alerts"][0]["fingerprint"]
    );

    // The engine stops: the alert tasks end on their own.
    drop(tx);
    tokio::time::timeout(Duration::from_secs(3), handle)
        .await
        .expect("alert tasks end when the snapshot channel closes")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_alert_on_the_third_try() {
    let receiver = Receiver::start(&[500, 500]).await;
    let (tx, rx) = watch::channel(snapshot(41, false));
    let _handle = spawn_alerts(&config(&receiver.url(), 256, 5), rx).expect("alerts on");
    let sent_before = counts().sent;
    let started = Instant::now();
    tx.send(snapshot(42, true)).unwrap();

    let got = receiver.wait_for(3, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    let statuses: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same alert each time"
    );
    assert_eq!(got[2].body["status"], "firing");
    // Backoff: 0.25 s, then 0.5 s.
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(receiver.received().len(), 3, "no retry after the 200");
    assert!(counts().sent > sent_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded() {
    let receiver = Receiver::start(&[503; 10]).await;
    let (tx, rx) = watch::channel(snapshot(41, false));
    let _handle = spawn_alerts(&config(&receiver.url(), 256, 1), rx).expect("alerts on");
    let failed_before = counts().failed;
    tx.send(snapshot(42, true)).unwrap();
    receiver.wait_for(2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.received().len(), 2, "first try plus one retry");
    assert!(counts().failed > failed_before);
}

/// A receiver that accepts connections and never answers holds the sender on its first
/// alert; snapshots keep flowing, the queue keeps its newest alerts and counts the drops.
#[tokio::test(flavor = "current_thread")]
async fn a_dead_receiver_never_blocks_and_drops_are_counted() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = black_hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in black_hole.incoming().flatten() {
            held.push(stream);
        }
    });
    let (tx, rx) = watch::channel(snapshot(1, false));
    let handle = spawn_alerts(&config(&format!("http://{addr}/"), 4, 5), rx).expect("alerts on");
    let dropped_before = counts().dropped;

    let started = Instant::now();
    for seq in 2..1002 {
        tx.send(snapshot(seq, seq % 2 == 0)).unwrap();
        // Let the alert tasks run between snapshots, as the engine's tick would.
        tokio::task::yield_now().await;
    }
    let fed = started.elapsed();
    assert!(
        fed < Duration::from_secs(2),
        "feeding 1000 snapshots took {fed:?}"
    );

    let dropped = counts().dropped - dropped_before;
    eprintln!("dropped {dropped} of 1000 alerts in {fed:?}");
    assert!(
        dropped >= 500,
        "only {dropped} alerts dropped from a queue of 4"
    );
    let text = sutazai_top::metrics::render(&Snapshot::default());
    let exported: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sutazai_alerts_dropped_total "))
        .and_then(|v| v.parse().ok())
        .expect("the drop counter is exported");
    assert!(exported >= dropped, "{exported} < {dropped}");

    // The engine stops: the stuck delivery is abandoned after the drain timeout.
    drop(tx);
    tokio::time::timeout(Duration::from_secs(8), handle)
        .await
        .expect("alert tasks end despite a dead receiver")
        .unwrap();
}

#[test]
fn no_webhook_means_no_task() {
    let (_tx, rx) = watch::channel(snapshot(1, false));
    assert!(spawn_alerts(&AlertsConfig::default(), rx).is_none());
}
