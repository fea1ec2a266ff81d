//! The cache over the API, end to end: the real engine and server on a Unix socket in a
//! temp dir; binary keys and values, the agent, priority and private headers, the level
//! header, 404, 413, 400, the statistics route and a disabled cache.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::Served;
use support::wire::{call, noise, small_cache_config as cache_config};
use sutazai_top::api::cache::percent_encode;

#[test]
fn binary_values_go_in_and_come_back_with_their_level() {
    let served = Served::start(cache_config(), tempfile::tempdir().expect("tempdir"));
    let socket = served.socket.as_path();
    // Every byte value in the key, '/' and '%' included.
    let key: Vec<u8> = (0..=255u8).rev().collect();
    let path = format!("/api/cache/{}", percent_encode(&key));
    let value = noise(1, 5_000);
    let put = call(
        socket,
        "PUT",
        &path,
        &[
            ("content-type", "application/octet-stream"),
            ("x-agent", "alice"),
        ],
        &value,
    );
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(put.json()["level"], "l1");
    assert_eq!(put.json()["bytes"], 5_000);
    let got = call(socket, "GET", &path, &[("x-agent", "bob")], b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, value, "the value comes back byte for byte");
    assert_eq!(got.header("x-cache-level"), Some("l1"));
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));

    let missing = call(socket, "GET", "/api/cache/nothing%00here", &[], b"");
    assert_eq!(missing.status, 404);
    assert!(
        missing.error().contains("no cache entry"),
        "{}",
        missing.error()
    );

    // Private: only alice sees it; bob's delete cannot touch it.
    let private = [
        ("x-agent", "alice"),
        ("x-private", "1"),
        ("x-priority", "high"),
    ];
    assert_eq!(
        call(socket, "PUT", "/api/cache/secret", &private, b"alice only").status,
        200
    );
    assert_eq!(
        call(
            socket,
            "GET",
            "/api/cache/secret",
            &[("x-agent", "bob")],
            b""
        )
        .status,
        404
    );
    assert_eq!(
        call(socket, "GET", "/api/cache/secret", &[], b"").status,
        404
    );
    assert_eq!(
        call(
            socket,
            "DELETE",
            "/api/cache/secret",
            &[("x-agent", "bob")],
            b""
        )
        .status,
        404
    );
    let mine = call(
        socket,
        "GET",
        "/api/cache/secret",
        &[("x-agent", "alice")],
        b"",
    );
    assert_eq!(
        (mine.status, mine.body.as_slice()),
        (200, &b"alice only"[..])
    );
    assert_eq!(
        call(
            socket,
            "DELETE",
            "/api/cache/secret",
            &[("x-agent", "alice")],
            b""
        )
        .status,
        200
    );
    assert_eq!(
        call(
            socket,
            "GET",
            "/api/cache/secret",
            &[("x-agent", "alice")],
            b""
        )
        .status,
        404
    );

    // Filling L1 pushes the oldest down: L1 → L2 → L3, and a GET says where it was found.
    for i in 0..4 {
        let r = call(
            socket,
            "PUT",
            &format!("/api/cache/big{i}"),
            &[],
            &noise(10 + i, 40_000),
        );
        assert_eq!(r.status, 200, "{}", r.error());
    }
    let from_l3 = call(socket, "GET", "/api/cache/big0", &[], b"");
    assert_eq!(
        (from_l3.status, from_l3.header("x-cache-level")),
        (200, Some("l3"))
    );
    assert_eq!(from_l3.body, noise(10, 40_000));
    let l3_files = std::fs::read_dir(served.state_dir().join("cache"))
        .expect("L3 dir")
        .count();
    assert!(l3_files >= 1);

    let stats = call(socket, "GET", "/api/cache", &[], b"");
    assert_eq!(stats.status, 200);
    let stats = stats.json();
    assert_eq!(stats["levels"].as_array().map(Vec::len), Some(3));
    assert_eq!(stats["levels"][0]["capacity_bytes"], 100_000);
    assert!(
        stats["levels"][2]["promotions"].as_u64() >= Some(1),
        "{stats}"
    );
    let agents: Vec<&str> = stats["agents"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["agent"].as_str()).collect())
        .unwrap_or_default();
    for agent in ["alice", "bob", "anonymous"] {
        assert!(agents.contains(&agent), "{agents:?}");
    }
    // And the engine's snapshot carries the same statistics on the next tick.
    let mut engine = served.engine.handle.clone();
    let gets = stats["total"]["gets"].as_u64().unwrap_or(0);
    let snap = served.engine.runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let snap = engine.snapshots.borrow_and_update().clone();
                if snap.cache.as_ref().is_some_and(|c| c.total.gets >= gets) {
                    return snap;
                }
                let _ = engine.snapshots.changed().await;
            }
        })
        .await
        .expect("a snapshot with the cache's statistics")
    });
    let cache = snap.cache.as_ref().expect("cache stats");
    assert!(
        cache.total.hits >= 3 && cache.total.misses >= 3,
        "{:?}",
        cache.total
    );
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let served = Served::start(cache_config(), tempfile::tempdir().expect("tempdir"));
    let socket = served.socket.as_path();
    let too_big = call(socket, "PUT", "/api/cache/k", &[], &noise(2, 100_001));
    assert_eq!(too_big.status, 413);
    assert!(
        too_big.error().contains("100000 bytes"),
        "{}",
        too_big.error()
    );
    // At the limit it is taken (the stored key's bytes count too: a shade less fits L1).
    let at_limit = call(socket, "PUT", "/api/cache/k", &[], &noise(2, 99_990));
    assert_eq!(at_limit.status, 200, "{}", at_limit.error());
    for (headers, needle) in [
        (vec![("x-priority", "urgent")], "x-priority"),
        (vec![("x-private", "yes")], "x-private"),
        (vec![("x-agent", "two words")], "x-agent"),
    ] {
        let r = call(socket, "PUT", "/api/cache/k", &headers, b"v");
        assert_eq!(r.status, 400, "{headers:?}");
        assert!(r.error().contains(needle), "{}", r.error());
    }
    let r = call(socket, "GET", "/api/cache/bad%zzescape", &[], b"");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("percent"), "{}", r.error());
    let r = call(socket, "POST", "/api/cache/k", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, PUT, DELETE"));
}

#[test]
fn a_disabled_cache_answers_503() {
    let mut config = cache_config();
    config.cache.enabled = false;
    let served = Served::start(config, tempfile::tempdir().expect("tempdir"));
    let socket = served.socket.as_path();
    for (method, path) in [
        ("GET", "/api/cache"),
        ("GET", "/api/cache/k"),
        ("PUT", "/api/cache/k"),
    ] {
        let r = call(socket, method, path, &[], b"v");
        assert_eq!(r.status, 503, "{method} {path}");
        assert!(r.error().contains("enabled = false"), "{}", r.error());
    }
    assert!(served.engine.latest().cache.is_none());
}
