//! The store on a real Unix socket with real memfds: deduplication across clients, zero-copy
//! reads (the reader maps the store's own memfd), references released when a client goes,
//! and bad input contained (garbage frames, a put cut short, unknown ids, a put larger than
//! the pool). The seals themselves are tested on the store (`store::tests`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use sutazai_pools::{Client, ClientError, ObjectId, Server, ServerConfig};

fn server(dir: &tempfile::TempDir, capacity: u64) -> Server {
    Server::start(&ServerConfig {
        socket: dir.path().join("pools.sock"),
        mode: 0o600,
        pool: "default".into(),
        capacity,
        max_held_per_client: 64,
    })
    .unwrap()
}

fn refs(server: &Server, id: &ObjectId) -> Option<u64> {
    server.store.lock().unwrap().refs(id)
}

/// Wait (a client's end is seen by the server's thread a moment later).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_agents_putting_the_same_weights_share_one_copy_read_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 64 << 20);
    let weights: Vec<u8> = (0..(4 << 20)).map(|i| (i * 31 % 251) as u8).collect();

    let mut a = Client::connect(server.socket()).unwrap();
    let mut b = Client::connect(server.socket()).unwrap();
    let first = a.put(&weights).unwrap();
    let second = b.put(&weights).unwrap();
    assert!(!first.deduplicated && second.deduplicated);
    assert_eq!(first.id, second.id);
    assert_eq!(first.id, ObjectId::of(&weights));
    let stats = b.stats().unwrap();
    assert!(
        stats.contains("objects=1 physical_bytes=4194304 logical_bytes=8388608"),
        "{stats}"
    );

    // A third agent reads it: the store's memfd, mapped read-only, the same bytes.
    let mut reader = Client::connect(server.socket()).unwrap();
    let mapped = reader.get(&first.id).unwrap();
    assert_eq!(mapped.as_slice(), weights.as_slice());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", mapped.address())))
        .expect("the mapping is listed");
    assert!(line.contains("/memfd:sutazai-pool-"), "{line}");
    assert!(line.contains(" r--s "), "read-only and shared: {line}");
    assert_eq!(refs(&server, &first.id), Some(3));

    // Agents that go (closed or crashed alike) release what they held.
    drop(a);
    drop(reader);
    eventually("two references released", || {
        refs(&server, &first.id) == Some(1)
    });
    drop(mapped); // a mapping outlives its connection: the pages stay until unmapped
    b.release(&first.id).unwrap();
    assert_eq!(refs(&server, &first.id), Some(0));
    assert!(matches!(b.release(&first.id), Err(ClientError::Refused(_))));
}

#[test]
fn bad_input_is_refused_and_contained() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1 << 20);
    let mut good = Client::connect(server.socket()).unwrap();
    let kept = good.put(b"kept").unwrap();

    // An unknown id, a put that cannot fit: refused with the reason, the connection lives.
    let unknown = good.get(&ObjectId([7; 32])).err().unwrap();
    assert!(unknown.to_string().contains("no object 0707"), "{unknown}");
    let big = vec![1u8; 2 << 20];
    let full = good.put(&big).err().unwrap();
    assert!(
        full.to_string().contains("cannot fit 2097152 bytes"),
        "{full}"
    );
    assert_eq!(good.get(&kept.id).unwrap().as_slice(), b"kept");

    // Garbage: a get of 4 GiB, an unknown op; answered, then closed.
    let huge_get = [
        u32::MAX.to_le_bytes().as_slice(),
        &[sutazai_pools::wire::OP_GET],
    ]
    .concat();
    for garbage in [&huge_get[..], &[2, 0, 0, 0, 99, 0][..]] {
        let mut raw = UnixStream::connect(server.socket()).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        raw.write_all(garbage).unwrap();
        let (status, body) = sutazai_pools::wire::read_frame(&mut raw, 1024)
            .unwrap()
            .unwrap();
        assert_eq!(status, sutazai_pools::wire::STATUS_ERROR);
        assert!(!body.is_empty());
        // Closed: at the end of the stream, or reset when our bytes were left unread.
        match sutazai_pools::wire::read_frame(&mut raw, 1024) {
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("still open: {other:?}"),
        }
    }

    // A put cut short by a client that dies: no object appears.
    let before = good.stats().unwrap();
    let mut dying = UnixStream::connect(server.socket()).unwrap();
    dying.write_all(&1001u32.to_le_bytes()).unwrap();
    dying.write_all(&[sutazai_pools::wire::OP_PUT]).unwrap();
    dying.write_all(&[5u8; 100]).unwrap();
    drop(dying);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(good.stats().unwrap(), before);

    // After all that, what the good client holds is intact.
    assert_eq!(good.get(&kept.id).unwrap().as_slice(), b"kept");
}
