#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use super::*;
use crate::Compression;

fn pool(capacity: u64, compression: Compression, agent_quota: u64) -> Pool {
    Pool::new(PoolSpec {
        name: "p".into(),
        capacity,
        compression,
        agent_quota,
    })
}

fn client(client: ClientId, agent: &str) -> Holder {
    Holder {
        client,
        agent: agent.into(),
        max_held: 16,
    }
}

/// Bytes lz4 packs well (a quarter of their size or less).
fn compressible(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i / 64) as u8 % 4))
        .collect()
}

fn read(fd: &OwnedFd, size: u64) -> Vec<u8> {
    ReadMap::new(fd.as_fd(), size as usize)
        .unwrap()
        .as_slice()
        .to_vec()
}

#[test]
fn the_same_bytes_are_stored_once_and_counted_per_holder() {
    let mut pool = pool(1 << 20, Compression::Lz4, 0);
    let (a, existed) = pool.put_bytes(&client(1, "x"), b"weights").unwrap();
    assert!(!existed);
    let (b, existed) = pool.put_bytes(&client(2, "y"), b"weights").unwrap();
    assert!(existed);
    assert_eq!(a, b);
    let (figures, agents) = pool.snapshot();
    assert_eq!(
        (
            figures.objects,
            figures.physical_bytes,
            figures.logical_bytes
        ),
        (1, 7, 14)
    );
    assert_eq!(agents.len(), 2);
    assert_eq!(
        agents[0].saved_bytes,
        7 - 7 / 2,
        "half of it is the other's"
    );
    assert_eq!(pool.refs(&a), Some(2));
    pool.client_gone(1);
    assert_eq!(pool.refs(&a), Some(1));
    pool.release(2, &a).unwrap();
    assert_eq!(pool.refs(&a), Some(0));
    assert!(
        pool.snapshot().1.is_empty(),
        "a client holding nothing has no row"
    );
    assert!(matches!(pool.release(2, &a), Err(StoreError::Unknown(_))));
}

#[test]
fn unreferenced_objects_go_first_and_referenced_ones_never() {
    let mut pool = pool(10, Compression::None, 0);
    let who = client(1, "x");
    let (old, _) = pool.put_bytes(&who, b"aaaa").unwrap();
    let (kept, _) = pool.put_bytes(&who, b"bbbb").unwrap();
    pool.release(1, &old).unwrap();
    // 4 + 4 + 4 > 10: the unreferenced one goes.
    pool.put_bytes(&who, b"cccc").unwrap();
    assert!(pool.refs(&old).is_none());
    assert_eq!(pool.refs(&kept), Some(1));
    let (figures, _) = pool.snapshot();
    assert_eq!((figures.evictions, figures.evicted_bytes), (1, 4));
    // Everything referenced: refused, saying what holds the space.
    let err = pool.put_bytes(&who, b"dddddd").unwrap_err();
    assert!(err.to_string().contains("8 held"), "{err}");
    let (figures, _) = pool.snapshot();
    assert_eq!(
        figures.objects, 2,
        "nothing evicted for a put that cannot fit"
    );
    assert_eq!(figures.refused, 1);
}

#[test]
fn a_full_pool_compresses_before_it_evicts_and_a_get_thaws() {
    let size = 64 * 1024;
    let mut pool = pool(2 * size as u64 + 1000, Compression::Lz4, 0);
    let who = client(1, "x");
    let cold = compressible(size, 1);
    let (cold_id, _) = pool.put_bytes(&who, &cold).unwrap();
    pool.release(1, &cold_id).unwrap();
    pool.put_bytes(&who, &compressible(size, 2)).unwrap();
    // A third does not fit as they are; packed, the first makes room and stays.
    pool.put_bytes(&who, &compressible(size, 3)).unwrap();
    assert!(pool.is_packed(&cold_id), "compressed, not evicted");
    let (figures, _) = pool.snapshot();
    assert_eq!(figures.evictions, 0);
    assert!(figures.packed_bytes * 4 < size as u64, "{figures:?}");
    assert_eq!(figures.compressions, 1);

    // A get finds it packed; thawed, it reads back the same.
    let Found::Packed(packed, len, codec) = pool.get(&client(2, "y"), &cold_id).unwrap() else {
        panic!("packed")
    };
    assert_eq!(
        pool.refs(&cold_id),
        Some(0),
        "no reference until it is ready"
    );
    let bytes = codec.decompress(&packed, len as usize).unwrap();
    let fd = memfd::sealed_with("t", &bytes).unwrap();
    // No room for it whole while the other two are referenced: refused, kept packed.
    assert!(matches!(
        pool.thaw(&cold_id, fd),
        Err(StoreError::Full { .. })
    ));
    assert!(pool.is_packed(&cold_id));
    pool.client_gone(1);
    let fd = memfd::sealed_with("t", &bytes).unwrap();
    pool.thaw(&cold_id, fd).unwrap();
    let Found::Ready(fd, len) = pool.get(&client(2, "y"), &cold_id).unwrap() else {
        panic!("ready")
    };
    assert_eq!(read(&fd, len), cold);
    assert_eq!(pool.snapshot().0.thaws, 1);
}

#[test]
fn cold_objects_are_offered_for_compression_and_a_got_one_is_kept_whole() {
    let mut pool = pool(1 << 20, Compression::Zlib, 0);
    let who = client(1, "x");
    let (id, _) = pool.put_bytes(&who, &compressible(10_000, 0)).unwrap();
    let later = Instant::now() + Duration::from_secs(120);
    assert!(
        pool.cold(later, Duration::from_secs(60)).is_empty(),
        "referenced"
    );
    pool.release(1, &id).unwrap();
    assert!(
        pool.cold(Instant::now(), Duration::from_secs(60))
            .is_empty(),
        "not idle yet"
    );
    let cold = pool.cold(later, Duration::from_secs(60));
    assert_eq!(cold.len(), 1);
    let (_, fd, size) = &cold[0];
    let packed = Compression::Zlib.compress(&read(fd, *size)).unwrap();
    // Got meanwhile: its reader maps the memfd, so it stays whole.
    let Found::Ready(..) = pool.get(&who, &id).unwrap() else {
        panic!()
    };
    pool.packed(&id, packed.clone());
    assert!(!pool.is_packed(&id));
    pool.release(1, &id).unwrap();
    pool.packed(&id, packed);
    assert!(pool.is_packed(&id));
    // Incompressible bytes are left whole and not offered again.
    let mut noise = vec![0u8; 10_000];
    blake3::Hasher::new()
        .update(b"noise")
        .finalize_xof()
        .fill(&mut noise);
    let (noisy, _) = pool.put_bytes(&who, &noise).unwrap();
    pool.release(1, &noisy).unwrap();
    pool.packed(&noisy, Compression::Lz4.compress(&noise).unwrap());
    assert!(!pool.is_packed(&noisy));
    assert!(pool.cold(later, Duration::from_secs(60)).is_empty());
}

#[test]
fn an_agent_quota_counts_each_object_once_across_its_clients() {
    let mut pool = pool(1 << 20, Compression::None, 10);
    pool.put_bytes(&client(1, "a"), b"123456").unwrap();
    // Another connection of the same agent: the same object again is no more.
    pool.put_bytes(&client(2, "a"), b"123456").unwrap();
    let err = pool.put_bytes(&client(2, "a"), b"abcdef").unwrap_err();
    assert!(
        err.to_string()
            .contains("agent a holds 6 bytes in pool p; 6 more would pass its quota of 10"),
        "{err}"
    );
    pool.put_bytes(&client(3, "b"), b"abcdef").unwrap();
    // Getting what another agent put counts too.
    let id = ObjectId::of(b"abcdef");
    assert!(matches!(
        pool.get(&client(1, "a"), &id),
        Err(StoreError::Quota { .. })
    ));
    let err = pool.allocate(&client(1, "a"), 5).err().unwrap();
    assert!(matches!(err, StoreError::Quota { .. }), "{err}");
}

#[test]
fn a_segment_is_written_then_sealed_into_a_shared_object() {
    let mut pool = pool(1 << 20, Compression::Lz4, 0);
    let writer = client(1, "writer");
    let (number, fd) = pool.allocate(&writer, 5).unwrap();
    let mut file = File::from(fd);
    file.write_all(b"hello").unwrap();
    assert!(file.set_len(6).is_err(), "its size is fixed");
    assert_eq!(pool.snapshot().0.segment_bytes, 5);
    assert!(matches!(
        pool.seal_segment(&client(2, "other"), number),
        Err(StoreError::NoSegment(_))
    ));
    {
        // Mapped writable: sealing waits until it is unmapped.
        let map = unsafe_writable_map(&file, 5);
        let err = pool.seal_segment(&writer, number).unwrap_err();
        assert!(err.to_string().contains("unmap"), "{err}");
        drop(map);
    }
    let (id, existed) = pool.seal_segment(&writer, number).unwrap();
    assert!(!existed);
    assert_eq!(id, ObjectId::of(b"hello"));
    assert!(
        file.write_all(b"!").is_err(),
        "sealed: the writer's own fd cannot write"
    );
    let (figures, _) = pool.snapshot();
    assert_eq!(
        (figures.segments, figures.objects, figures.used_bytes),
        (0, 1, 5)
    );
    let Found::Ready(fd, size) = pool.get(&client(2, "reader"), &id).unwrap() else {
        panic!()
    };
    assert_eq!(read(&fd, size), b"hello");
    // A segment its client leaves unsealed is freed with it.
    pool.allocate(&writer, 100).unwrap();
    pool.client_gone(1);
    assert_eq!(pool.snapshot().0.segments, 0);
}

/// A writable shared map of `len` bytes of `file`, unmapped on drop.
fn unsafe_writable_map(file: &File, len: usize) -> impl Drop {
    struct Map(std::ptr::NonNull<libc::c_void>, usize);
    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: the mapping made below, unmapped once.
            unsafe { nix::sys::mman::munmap(self.0, self.1) }.unwrap();
        }
    }
    use nix::sys::mman::{MapFlags, ProtFlags, mmap};
    // SAFETY: a fresh shared mapping of a memfd this test owns; it is never read through.
    let ptr = unsafe {
        mmap(
            None,
            std::num::NonZeroUsize::new(len).unwrap(),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            file,
            0,
        )
    }
    .unwrap();
    Map(ptr, len)
}

#[test]
fn the_memfd_is_sealed_against_change() {
    let mut pool = pool(1 << 20, Compression::Lz4, 0);
    let (id, _) = pool.put_bytes(&client(1, "x"), b"sealed").unwrap();
    let Found::Ready(fd, size) = pool.get(&client(2, "y"), &id).unwrap() else {
        panic!()
    };
    assert_eq!(size, 6);
    let mut file = File::from(fd);
    assert!(file.write_all(b"x").is_err(), "F_SEAL_WRITE");
    assert!(file.set_len(1).is_err(), "F_SEAL_SHRINK");
    assert!(file.set_len(100).is_err(), "F_SEAL_GROW");
}

#[test]
fn a_client_holds_a_bounded_number_of_objects_and_segments() {
    let mut pool = pool(1 << 20, Compression::Lz4, 0);
    let who = Holder {
        max_held: 2,
        ..client(1, "x")
    };
    pool.put_bytes(&who, b"one").unwrap();
    pool.allocate(&who, 3).unwrap();
    assert_eq!(
        pool.put_bytes(&who, b"three"),
        Err(StoreError::TooManyHeld(2))
    );
    assert!(
        pool.put_bytes(&who, b"one").is_ok(),
        "another reference to one it holds"
    );
    assert!(
        pool.put_bytes(&client(2, "x"), b"three").is_ok(),
        "another client"
    );
}

#[test]
fn ids_print_and_parse() {
    let id = ObjectId::of(b"x");
    assert_eq!(ObjectId::parse(&id.hex()), Some(id));
    assert_eq!(ObjectId::parse("zz"), None);
}
