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
        max_held_per_client: 64,
        ..ServerConfig::single(dir.path().join("pools.sock"), capacity)
    })
    .unwrap()
}

fn refs(server: &Server, id: &ObjectId) -> Option<u64> {
    server.pools().holding(id).ok()?.refs(id)
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
        stats.contains("objects=1 segments=0 physical_bytes=4194304 logical_bytes=8388608"),
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
    let empty_put = [1, 0, 0, 0, sutazai_pools::wire::OP_PUT];
    let name_past_frame = [3, 0, 0, 0, sutazai_pools::wire::OP_PUT, 200, b'x'];
    for garbage in [
        &huge_get[..],
        &[2, 0, 0, 0, 99, 0][..],
        &empty_put[..],
        &name_past_frame[..],
    ] {
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

#[test]
fn a_memfd_put_is_adopted_without_a_copy_and_a_file_is_read() {
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 64 << 20);
    let mut client = Client::connect(server.socket()).unwrap();

    // A memfd the client wrote: the store seals it and keeps that very file.
    let bytes = vec![3u8; 1 << 20];
    let mut memfd = sutazai_pools::memfd::create("mine").unwrap();
    memfd.write_all(&bytes).unwrap();
    let put = client.put_fd("", memfd.as_fd()).unwrap();
    assert_eq!(put.id, ObjectId::of(&bytes));
    assert!(
        memfd.write_all(b"x").is_err(),
        "sealed: not even its maker can change it"
    );
    let (mine, theirs) = (
        nix::sys::stat::fstat(memfd.as_fd()).unwrap(),
        nix::sys::stat::fstat(raw_get(&server, &put.id).as_fd()).unwrap(),
    );
    assert_eq!(
        mine.st_ino, theirs.st_ino,
        "the same file: adopted, not copied"
    );

    // A regular file is read into a memfd of the store's.
    let path = dir.path().join("weights.bin");
    std::fs::write(&path, b"from a file").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let put = client.put_fd("", file.as_fd()).unwrap();
    assert_eq!(put.id, ObjectId::of(b"from a file"));
    assert_eq!(client.get(&put.id).unwrap().as_slice(), b"from a file");

    // A descriptor of something unreadable (a directory) is refused, the client stays.
    let dir_fd = std::fs::File::open(dir.path()).unwrap();
    let err = client.put_fd("", dir_fd.as_fd()).err().unwrap();
    assert!(err.to_string().contains("reading the descriptor"), "{err}");
    assert!(client.stats().is_ok());
}

/// A get on a raw connection: the descriptor itself (the client maps it; tests look at it).
fn raw_get(server: &Server, id: &ObjectId) -> std::os::fd::OwnedFd {
    let mut raw = UnixStream::connect(server.socket()).unwrap();
    sutazai_pools::wire::write_frame(&mut raw, sutazai_pools::wire::OP_GET, &id.0).unwrap();
    let (status, _, fd) = sutazai_pools::wire::read_frame_with_fd(&mut raw, 1024).unwrap();
    assert_eq!(status, sutazai_pools::wire::STATUS_OK);
    fd.unwrap()
}

#[test]
fn a_reader_cannot_change_what_it_got() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1 << 20);
    let put = Client::connect(server.socket())
        .unwrap()
        .put(b"immutable")
        .unwrap();
    let mut file = std::fs::File::from(raw_get(&server, &put.id));
    assert!(file.write_all(b"X").is_err(), "write");
    assert!(file.set_len(100).is_err(), "grow");
    assert!(file.set_len(1).is_err(), "shrink");
    let mut reader = Client::connect(server.socket()).unwrap();
    assert_eq!(reader.get(&put.id).unwrap().as_slice(), b"immutable");
}

#[test]
fn a_segment_is_filled_by_one_agent_and_read_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1 << 20);
    let mut writer = Client::connect(server.socket()).unwrap();
    assert!(
        writer
            .create_pool("shared", 1 << 16, sutazai_pools::Compression::None)
            .unwrap()
    );
    assert!(
        !writer
            .create_pool("shared", 1 << 16, sutazai_pools::Compression::None)
            .unwrap()
    );
    let differs = writer.create_pool("shared", 1 << 17, sutazai_pools::Compression::None);
    assert!(differs.err().unwrap().to_string().contains("another size"));

    let segment = writer.allocate("shared", 11).unwrap();
    segment.write_at(0, b"hello world").unwrap();
    let too_big = writer.allocate("shared", 1 << 20).err().unwrap();
    assert!(
        too_big.to_string().contains("pool shared cannot fit"),
        "{too_big}"
    );
    let put = writer.seal(segment).unwrap();
    assert_eq!(put.id, ObjectId::of(b"hello world"));

    let mut reader = Client::connect(server.socket()).unwrap();
    assert_eq!(reader.get(&put.id).unwrap().as_slice(), b"hello world");
    let stats = reader.stats().unwrap();
    assert!(
        stats.contains("pool=shared compression=none capacity=65536 used=11 objects=1"),
        "{stats}"
    );
    let unknown = reader.allocate("nowhere", 1).err().unwrap();
    assert!(
        unknown.to_string().contains("no pool \"nowhere\""),
        "{unknown}"
    );
}

#[test]
fn clients_see_the_store_restart_and_can_put_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = server(&dir, 1 << 20);
    let mut client = Client::connect(first.socket()).unwrap();
    let put = client.put(b"before").unwrap();
    let mapped = client.get(&put.id).unwrap();
    // A second store on the same socket is refused while the first answers.
    let again = Server::start(&ServerConfig::single(
        dir.path().join("pools.sock"),
        1 << 20,
    ));
    assert!(
        again
            .err()
            .unwrap()
            .to_string()
            .contains("another store answers")
    );

    first.stop();
    let err = client.put(b"after").err().unwrap();
    assert!(matches!(err, ClientError::StoreRestarted), "{err}");
    assert!(err.to_string().contains("put them again"));
    assert_eq!(
        mapped.as_slice(),
        b"before",
        "a map made before stays readable"
    );

    let second = server(&dir, 1 << 20);
    let mut client = Client::connect(second.socket()).unwrap();
    assert!(
        client.get(&put.id).is_err(),
        "objects do not survive the store"
    );
    assert!(!client.put(b"before").unwrap().deduplicated);
}

#[test]
fn a_client_passing_many_descriptors_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1 << 20); // at most 64 held per client
    let mut client = Client::connect(server.socket()).unwrap();
    for i in 0..64u32 {
        client.put(&i.to_le_bytes()).unwrap();
    }
    let err = client.put(b"one too many").err().unwrap();
    assert!(err.to_string().contains("the most one client may"), "{err}");
    let mut other = Client::connect(server.socket()).unwrap();
    assert!(
        other.put(b"one too many").is_ok(),
        "the bound is per client"
    );
}

#[test]
fn a_cold_object_is_compressed_in_the_background_and_a_get_thaws_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerConfig {
        cold_after: Duration::from_millis(200),
        ..ServerConfig::single(dir.path().join("pools.sock"), 64 << 20)
    })
    .unwrap();
    let mut client = Client::connect(server.socket()).unwrap();
    let text: Vec<u8> = b"the same prompt prefix, again and again. ".repeat(50_000);
    let put = client.put(&text).unwrap();
    client.release(&put.id).unwrap();
    eventually("the object compressed", || {
        server.snapshot().pools[0].packed_objects == 1
    });
    let pool = &server.snapshot().pools[0];
    assert!(pool.compression_ratio().unwrap() > 10.0, "{pool:?}");
    assert!(pool.used_bytes < text.len() as u64 / 10);
    let mapped = client.get(&put.id).unwrap();
    assert!(mapped.as_slice() == text.as_slice());
    let pool = &server.snapshot().pools[0];
    assert_eq!(
        (pool.packed_objects, pool.thaws),
        (0, 1),
        "whole again while referenced"
    );
}

#[test]
fn a_socket_path_that_is_another_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pools.sock");
    std::fs::write(&path, b"precious").unwrap();
    let err = Server::start(&ServerConfig::single(path.clone(), 1 << 20))
        .err()
        .unwrap();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    let missing = dir.path().join("no-such-dir/pools.sock");
    assert!(Server::start(&ServerConfig::single(missing, 1 << 20)).is_err());
}
