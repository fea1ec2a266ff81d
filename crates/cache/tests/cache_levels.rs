//! The cache's three levels: promotion and demotion, priority, values too large for a
//! level, private entries, L3 durability (restart, corrupt and truncated files, a full disk)
//! and many threads at once.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sutazai_cache::CacheConfig;
use sutazai_cache::{Cache, CacheError, Level, Priority};

/// Levels of the given sizes, one policy for all, L3 in `dir`.
fn config(l1: u64, l2: u64, l3: u64, policy: &str) -> CacheConfig {
    CacheConfig {
        l1_bytes: l1,
        l2_bytes: l2,
        l3_bytes: l3,
        l1_policy: policy.parse().expect("a known policy"),
        l2_policy: policy.parse().expect("a known policy"),
        l3_policy: policy.parse().expect("a known policy"),
        ..CacheConfig::default()
    }
}

/// A temp dir closed to others, as L3 requires of its directory.
fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

fn one_shard(config: &CacheConfig, dir: &Path) -> Cache {
    Cache::with_shards(config, dir, 1).expect("cache")
}

/// `len` bytes lz4 cannot shrink, different for every key.
fn noise(key: &[u8], len: usize) -> Vec<u8> {
    let mut state = key.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn level_of(cache: &Cache, key: &str) -> Option<Level> {
    cache.contains(key.as_bytes(), "t")
}

fn put(cache: &Cache, key: &str, value: Vec<u8>) -> Level {
    cache
        .put(key.as_bytes(), value, "t", Priority::Normal, true)
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
}

fn l3_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "l3"));
    files.sort();
    files
}

#[test]
fn entries_move_down_on_eviction_and_up_on_a_hit() {
    let dir = private_tempdir();
    // Stored weight of each entry: 1 namespace byte + 2 key bytes + 100 value bytes.
    let cache = one_shard(&config(250, 250, 10_000, "lru"), dir.path());
    for i in 0..6 {
        assert_eq!(
            put(
                &cache,
                &format!("k{i}"),
                noise(format!("k{i}").as_bytes(), 100)
            ),
            Level::L1
        );
    }
    let where_ = |i: usize| level_of(&cache, &format!("k{i}"));
    assert_eq!(
        (0..6).map(where_).collect::<Vec<_>>(),
        [
            Level::L3,
            Level::L3,
            Level::L2,
            Level::L2,
            Level::L1,
            Level::L1
        ]
        .map(Some)
    );
    let snap = cache.snapshot();
    let l = |level: Level| snap.level(level).cloned().expect("level");
    assert_eq!((l(Level::L1).evictions, l(Level::L2).demotions), (4, 4));
    assert_eq!((l(Level::L2).evictions, l(Level::L3).demotions), (2, 2));
    assert_eq!(l(Level::L3).entries, 2);

    // A hit in L3 brings the entry to L1; L1's oldest goes down to L2, L2's to L3.
    let (value, found) = cache.get(b"k0", "t").expect("hit");
    assert_eq!((found, &value[..]), (Level::L3, &noise(b"k0", 100)[..]));
    assert_eq!(where_(0), Some(Level::L1));
    assert_eq!(where_(4), Some(Level::L2));
    assert_eq!(where_(2), Some(Level::L3));
    // A hit in L2 likewise.
    let (value, found) = cache.get(b"k3", "t").expect("hit");
    assert_eq!((found, &value[..]), (Level::L2, &noise(b"k3", 100)[..]));
    assert_eq!(where_(3), Some(Level::L1));
    let (_, found) = cache.get(b"k3", "t").expect("hit");
    assert_eq!(found, Level::L1);

    let snap = cache.snapshot();
    let l = |level: Level| snap.level(level).cloned().expect("level");
    assert_eq!((l(Level::L3).promotions, l(Level::L2).promotions), (1, 1));
    assert_eq!(
        (l(Level::L1).hits, l(Level::L2).hits, l(Level::L3).hits),
        (1, 1, 1)
    );
    assert_eq!(snap.total.gets, 3);
    assert_eq!(snap.total.hits, 3);
    assert!(l(Level::L1).used_bytes <= 250 && l(Level::L2).used_bytes <= 250);
    assert_eq!(cache.get(b"nothing", "t"), None);
    assert_eq!(cache.snapshot().total.misses, 1);
    // The absent key was looked for in every level; L3 had no other miss.
    let snap = cache.snapshot();
    assert_eq!(snap.level(Level::L3).map(|l| l.misses), Some(1));
    assert!(
        snap.levels.iter().all(|l| l.misses >= 1),
        "{:?}",
        snap.levels
    );
}

#[test]
fn a_high_priority_entry_outlasts_newer_normal_ones() {
    let dir = private_tempdir();
    // Room for three entries; the fourth put evicts one, and with no L2 or L3 it is gone.
    let run = |policy: &str, vip: Priority| {
        let cache = one_shard(&config(330, 0, 0, policy), dir.path());
        cache
            .put(b"vip", noise(b"vip", 100), "t", vip, true)
            .expect("put");
        for i in 0..3 {
            let key = format!("n{i}");
            let _ = cache.put(
                key.as_bytes(),
                noise(key.as_bytes(), 100),
                "t",
                Priority::Normal,
                true,
            );
        }
        let snap = cache.snapshot();
        assert!(
            snap.level(Level::L1)
                .is_some_and(|l| l.entries == 3 && l.evictions == 1),
            "{policy}"
        );
        level_of(&cache, "vip")
    };
    for policy in sutazai_cache::policy::POLICY_NAMES {
        assert_eq!(run(policy, Priority::High), Some(Level::L1), "{policy}");
    }
    // The control: the same entry at normal priority is the one LRU evicts.
    assert_eq!(run("lru", Priority::Normal), None);
}

#[test]
fn a_value_goes_to_the_first_level_that_can_hold_it_or_is_refused() {
    let dir = private_tempdir();
    let cache = one_shard(&config(1_000, 1_000, 20_000, "lru"), dir.path());
    // Too large for L1, but lz4 shrinks it below L2's size.
    assert_eq!(put(&cache, "zeros", vec![0u8; 5_000]), Level::L2);
    // Too large for L1 and, incompressible, for L2: L3.
    assert_eq!(put(&cache, "noise", noise(b"noise", 5_000)), Level::L3);
    let (value, level) = cache.get(b"zeros", "t").expect("hit");
    assert_eq!((level, value.len()), (Level::L2, 5_000));
    assert!(value.iter().all(|b| *b == 0));
    let (value, level) = cache.get(b"noise", "t").expect("hit");
    assert_eq!(
        (level, &value[..]),
        (Level::L3, &noise(b"noise", 5_000)[..])
    );
    // Still too large for L1 after the hits: it stays where it is.
    assert_eq!(level_of(&cache, "noise"), Some(Level::L3));

    let err = cache
        .put(b"huge", noise(b"huge", 30_000), "t", Priority::Normal, true)
        .expect_err("fits nowhere");
    let text = err.to_string();
    assert!(
        matches!(err, CacheError::Refused { len: 30_000, .. }),
        "{text}"
    );
    for part in [
        "l1 holds entries of at most 1000 bytes",
        "l2",
        "l3 holds entries of at most 20000",
    ] {
        assert!(text.contains(part), "{text}");
    }
    assert_eq!(level_of(&cache, "huge"), None);
    assert_eq!(cache.snapshot().total.refused, 1);
    // A refused overwrite leaves no stale value behind.
    put(&cache, "k", b"small".to_vec());
    assert!(
        cache
            .put(b"k", noise(b"k", 30_000), "t", Priority::Normal, true)
            .is_err()
    );
    assert_eq!(cache.get(b"k", "t"), None);
}

#[test]
fn private_entries_are_seen_only_by_their_agent() {
    let dir = private_tempdir();
    let cache = one_shard(&config(10_000, 10_000, 0, "adaptive"), dir.path());
    let key: &[u8] = b"\x00same/key\xff";
    cache
        .put(key, &b"alice's"[..], "alice", Priority::Normal, false)
        .expect("put");
    assert_eq!(cache.get(key, "bob"), None);
    assert_eq!(
        cache.get(key, "alice").map(|(v, _)| v),
        Some(b"alice's"[..].into())
    );
    cache
        .put(key, &b"shared"[..], "bob", Priority::Normal, true)
        .expect("put");
    assert_eq!(
        cache.get(key, "bob").map(|(v, _)| v),
        Some(b"shared"[..].into())
    );
    assert_eq!(
        cache.get(key, "carol").map(|(v, _)| v),
        Some(b"shared"[..].into())
    );
    assert_eq!(
        cache.get(key, "alice").map(|(v, _)| v),
        Some(b"alice's"[..].into())
    );
    // Bob's delete removes the shared entry, not Alice's private one.
    assert!(cache.delete(key, "bob"));
    assert_eq!(cache.get(key, "carol"), None);
    assert_eq!(
        cache.get(key, "alice").map(|(v, _)| v),
        Some(b"alice's"[..].into())
    );
    assert!(cache.delete(key, "alice"));
    assert_eq!(cache.get(key, "alice"), None);
    assert!(!cache.delete(key, "alice"));

    let snap = cache.snapshot();
    let agent = |name: &str| {
        snap.agents
            .iter()
            .find(|a| a.agent == name)
            .expect(name)
            .clone()
    };
    assert_eq!(
        (agent("alice").counts.gets, agent("alice").counts.hits),
        (4, 3)
    );
    assert_eq!(
        (agent("bob").counts.puts, agent("bob").counts.deletes),
        (1, 1)
    );
    assert_eq!(agent("carol").counts.misses, 1);
    assert!(matches!(
        cache.put(b"k", &b"v"[..], "", Priority::Normal, true),
        Err(CacheError::BadAgent(0))
    ));
}

#[test]
fn l3_survives_a_restart_with_safe_permissions() {
    let dir = private_tempdir();
    let l3 = dir.path().join("state/cache");
    let cfg = config(0, 0, 100_000, "lru");
    {
        let cache = one_shard(&cfg, &l3);
        assert_eq!(put(&cache, "a", noise(b"a", 1_000)), Level::L3);
        assert_eq!(
            put(&cache, "b\0/\u{0}binary", noise(b"b", 2_000)),
            Level::L3
        );
        cache
            .put(b"p", &b"private"[..], "alice", Priority::High, false)
            .expect("put");
    }
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&l3), 0o700);
    let files = l3_files(&l3);
    assert_eq!(files.len(), 3);
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    let cache = one_shard(&cfg, &l3);
    let snap = cache.snapshot();
    assert_eq!(snap.level(Level::L3).map(|l| l.entries), Some(3));
    assert_eq!(
        cache.get(b"a", "t"),
        Some((noise(b"a", 1_000).into(), Level::L3))
    );
    assert_eq!(
        cache.get(b"b\0/\0binary", "t"),
        Some((noise(b"b", 2_000).into(), Level::L3))
    );
    assert_eq!(cache.get(b"p", "bob"), None);
    assert_eq!(
        cache.get(b"p", "alice"),
        Some((b"private"[..].into(), Level::L3))
    );
    // Shrunk below what is on disk: the oldest go at start.
    drop(cache);
    let cache = one_shard(&config(0, 0, 2_200, "lru"), &l3);
    let snap = cache.snapshot();
    let l3_snap = snap.level(Level::L3).expect("l3");
    assert!(
        l3_snap.entries < 3 && l3_snap.used_bytes <= 2_200,
        "{l3_snap:?}"
    );
    assert_eq!(l3_files(&l3).len() as u64, l3_snap.entries);
}

#[test]
fn a_corrupt_or_truncated_l3_file_is_dropped_never_returned() {
    let dir = private_tempdir();
    let cfg = config(0, 0, 100_000, "lru");
    let cache = one_shard(&cfg, dir.path());
    put(&cache, "flipped", noise(b"flipped", 500));
    let file = l3_files(dir.path()).pop().expect("a file");
    let mut bytes = std::fs::read(&file).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).expect("write");
    assert_eq!(cache.get(b"flipped", "t"), None);
    assert!(!file.exists(), "the damaged file is deleted");
    assert_eq!(level_of(&cache, "flipped"), None);

    put(&cache, "cut", noise(b"cut", 500));
    let file = l3_files(dir.path()).pop().expect("a file");
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("write");
    assert_eq!(cache.get(b"cut", "t"), None);
    assert!(!file.exists());
    let snap = cache.snapshot();
    assert_eq!(
        snap.level(Level::L3)
            .map(|l| (l.dropped_corrupt, l.entries)),
        Some((2, 0))
    );
    assert_eq!(snap.total.misses, 2);

    // Found truncated at start: dropped by the scan.
    put(&cache, "later", noise(b"later", 500));
    put(&cache, "kept", noise(b"kept", 500));
    drop(cache);
    let later = l3_files(dir.path())
        .into_iter()
        .find(|f| std::fs::read(f).is_ok_and(|b| b.windows(5).any(|w| w == b"later")))
        .expect("later's file");
    let bytes = std::fs::read(&later).expect("read");
    std::fs::write(&later, &bytes[..40]).expect("write");
    let cache = one_shard(&cfg, dir.path());
    assert_eq!(cache.get(b"later", "t"), None);
    assert_eq!(cache.get(b"kept", "t").map(|(v, _)| v.len()), Some(500));
    assert_eq!(
        cache.snapshot().level(Level::L3).map(|l| l.dropped_corrupt),
        Some(1)
    );
}

/// A small tmpfs, unmounted (and its mount point removed) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs and needs root"
        );
        let dir = private_tempdir();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs failed: {status}");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_disables_l3_while_l1_and_l2_go_on() {
    let disk = Tmpfs::mount("64k");
    let l3 = disk.path().join("cache");
    let cache = one_shard(&config(2_000, 2_000, 10 << 20, "lru"), &l3);
    let mut stored = Vec::new();
    let mut refusal = None;
    for i in 0..10 {
        let key = format!("big{i}");
        match cache.put(
            key.as_bytes(),
            noise(key.as_bytes(), 20_000),
            "t",
            Priority::Normal,
            true,
        ) {
            Ok(level) => {
                assert_eq!(level, Level::L3);
                stored.push(key);
            }
            Err(err) => {
                refusal = Some(err.to_string());
                break;
            }
        }
    }
    let refusal = refusal.expect("64 KiB fill up");
    assert!(!stored.is_empty(), "some fit before the disk filled");
    assert!(
        refusal.contains("l3 is disabled") && refusal.contains("No space"),
        "{refusal}"
    );
    let snap = cache.snapshot();
    let l3_snap = snap.level(Level::L3).expect("l3");
    assert!(
        l3_snap
            .disabled
            .as_deref()
            .is_some_and(|r| r.contains("No space")),
        "{l3_snap:?}"
    );
    assert_eq!(cache.l3_disabled(), l3_snap.disabled);
    // No half-written file is left behind.
    assert_eq!(l3_files(&l3).len(), stored.len());
    assert!(
        std::fs::read_dir(&l3)
            .expect("ls")
            .flatten()
            .all(|e| e.path().extension().is_some())
    );
    // L1 and L2 go on; what L3 already held is still served.
    assert_eq!(put(&cache, "small", b"still works".to_vec()), Level::L1);
    assert_eq!(
        cache.get(b"small", "t").map(|(v, l)| (v.to_vec(), l)),
        Some((b"still works".to_vec(), Level::L1))
    );
    assert_eq!(put(&cache, "packed", vec![1u8; 4_000]), Level::L2);
    let first = &stored[0];
    assert_eq!(
        cache.get(first.as_bytes(), "t").map(|(v, _)| v.to_vec()),
        Some(noise(first.as_bytes(), 20_000))
    );
    // A value only L3 could hold is refused, naming why.
    let err = cache
        .put(b"more", noise(b"more", 20_000), "t", Priority::Normal, true)
        .expect_err("L3 is off");
    assert!(err.to_string().contains("disabled"), "{err}");
}

/// The value a stress writer puts under `key` (version `n`): the key at both ends, so a
/// reader can tell whether a value belongs to the key it asked for.
fn tagged(key: &str, n: usize, len: usize) -> Vec<u8> {
    let mut v = format!("{key}|{n}|").into_bytes();
    v.extend(noise(format!("{key}{n}").as_bytes(), len));
    v.extend_from_slice(format!("|{key}").as_bytes());
    v
}

fn check_tagged(key: &str, value: &[u8]) {
    let head = format!("{key}|");
    let tail = format!("|{key}");
    assert!(
        value.starts_with(head.as_bytes()) && value.ends_with(tail.as_bytes()),
        "get({key}) returned another key's value: {:?}",
        String::from_utf8_lossy(&value[..value.len().min(40)])
    );
}

#[test]
fn many_threads_never_see_another_keys_value() {
    let dir = private_tempdir();
    // Small levels so entries move between them all the time, L3 included.
    let cache = Arc::new(
        Cache::with_shards(&config(16_000, 16_000, 400_000, "adaptive"), dir.path(), 4)
            .expect("cache"),
    );
    let threads = 8;
    let ops = 3_000;
    let keys = 300;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let cache = cache.clone();
            scope.spawn(move || {
                let mut seed = 0x2545_f491_4f6c_dd1du64 ^ (t as u64 + 1);
                for i in 0..ops {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Key and operation from different bits, so every key sees every operation.
                    let key = format!("key-{}", (seed >> 20) % keys);
                    let agent = format!("agent{}", t % 3);
                    match seed % 10 {
                        0..=3 => {
                            let len = (seed % 700) as usize;
                            let _ = cache.put(
                                key.as_bytes(),
                                tagged(&key, i, len),
                                &agent,
                                Priority::Normal,
                                true,
                            );
                        }
                        4 => {
                            cache.delete(key.as_bytes(), &agent);
                        }
                        5 => {
                            // Private entries under the same keys: never seen by another agent.
                            let mine = format!("{key}@{agent}");
                            let _ = cache.put(
                                key.as_bytes(),
                                tagged(&mine, i, 50),
                                &agent,
                                Priority::Low,
                                false,
                            );
                        }
                        _ => {
                            if let Some((value, _)) = cache.get(key.as_bytes(), &agent) {
                                let mine = format!("{key}@{agent}");
                                if value.starts_with(mine.as_bytes()) {
                                    check_tagged(&mine, &value);
                                } else {
                                    check_tagged(&key, &value);
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    let snap = cache.snapshot();
    assert!(
        snap.total.hits > 0 && snap.total.misses > 0,
        "{:?}",
        snap.total
    );
    let moved: u64 = snap.levels.iter().map(|l| l.promotions + l.demotions).sum();
    assert!(moved > 100, "the levels were exercised: {moved}");
    for level in &snap.levels {
        assert!(level.used_bytes <= level.capacity_bytes, "{level:?}");
    }
    assert_eq!(snap.level(Level::L3).map(|l| l.dropped_corrupt), Some(0));
    // The L3 index and the directory agree.
    assert_eq!(
        snap.level(Level::L3).map(|l| l.entries as usize),
        Some(l3_files(dir.path()).len())
    );
}

#[test]
fn concurrent_writers_lose_no_update() {
    let dir = private_tempdir();
    // Room for every key: nothing is evicted, so every last write must be found.
    let cache = Arc::new(
        Cache::with_shards(&config(4 << 20, 4 << 20, 0, "lru"), dir.path(), 8).expect("cache"),
    );
    let threads = 8;
    let versions = 200;
    let keys_per_thread = 20;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let cache = cache.clone();
            scope.spawn(move || {
                for n in 0..versions {
                    for k in 0..keys_per_thread {
                        let own = format!("own-{t}-{k}");
                        cache
                            .put(
                                own.as_bytes(),
                                tagged(&own, n, 64),
                                "w",
                                Priority::Normal,
                                true,
                            )
                            .expect("fits");
                        // A key every thread fights over: put and delete race.
                        let common = format!("common-{k}");
                        if n % 2 == 0 {
                            let _ = cache.put(
                                common.as_bytes(),
                                tagged(&common, n, 64),
                                "w",
                                Priority::Normal,
                                true,
                            );
                        } else {
                            cache.delete(common.as_bytes(), "w");
                        }
                        if let Some((v, _)) = cache.get(common.as_bytes(), "w") {
                            check_tagged(&common, &v);
                        }
                    }
                }
            });
        }
    });
    for t in 0..threads {
        for k in 0..keys_per_thread {
            let own = format!("own-{t}-{k}");
            let (value, _) = cache
                .get(own.as_bytes(), "w")
                .unwrap_or_else(|| panic!("{own} lost"));
            assert_eq!(
                &value[..],
                &tagged(&own, versions - 1, 64)[..],
                "{own}: not the last write"
            );
        }
    }
    let snap = cache.snapshot();
    let own_puts = (threads * versions * keys_per_thread) as u64;
    let common_puts = own_puts / 2;
    assert_eq!(
        snap.total.puts,
        own_puts + common_puts,
        "every put counted once"
    );
    assert_eq!(snap.level(Level::L1).map(|l| l.evictions), Some(0));
}

/// Records every get and prefetches "next:<key>" from inside the callback, as a
/// prefetcher would.
struct Recorder {
    seen: std::sync::Mutex<Vec<(Vec<u8>, Option<Level>)>>,
}

impl sutazai_cache::GetObserver for Recorder {
    fn on_get(&self, cache: &Cache, get: &sutazai_cache::Get<'_>) {
        let key = get.key;
        self.seen
            .lock()
            .expect("lock")
            .push((key.to_vec(), get.found));
        if !key.starts_with(b"next:") {
            let mut next = b"next:".to_vec();
            next.extend_from_slice(key);
            cache.prefetch(&next, "prefetcher");
        }
    }
}

#[test]
fn prefetch_loads_at_low_priority_promotes_and_counts_accuracy() {
    let dir = private_tempdir();
    let cache = Arc::new(one_shard(&config(250, 250, 10_000, "lru"), dir.path()));
    // Without a loader, an absent key cannot be prefetched.
    assert_eq!(cache.prefetch(b"next:a", "t"), None);
    cache
        .set_loader(Arc::new(|key: &[u8]| {
            key.starts_with(b"next:").then(|| noise(key, 100).into())
        }))
        .expect("first loader");
    assert!(matches!(
        cache.set_loader(Arc::new(|_: &[u8]| None)),
        Err(CacheError::AlreadySet("loader"))
    ));
    let recorder = Arc::new(Recorder {
        seen: std::sync::Mutex::new(Vec::new()),
    });
    cache.set_observer(recorder.clone()).expect("observer");
    assert!(
        cache.snapshot().prefetch.is_none(),
        "nothing prefetched yet"
    );

    put(&cache, "a", noise(b"a", 100));
    assert_eq!(cache.get(b"a", "t").map(|(_, l)| l), Some(Level::L1));
    // The observer saw the get and prefetched next:a through the loader.
    assert_eq!(
        recorder.seen.lock().expect("lock")[0],
        (b"a".to_vec(), Some(Level::L1))
    );
    assert_eq!(level_of(&cache, "next:a"), Some(Level::L1));
    let (value, _) = cache.get(b"next:a", "t").expect("prefetched");
    assert_eq!(&value[..], &noise(b"next:a", 100)[..]);
    let p = cache.snapshot().prefetch.expect("prefetch stats");
    assert_eq!((p.prefetched, p.used, p.accuracy, p.depth), (1, 1, 1.0, 3));

    // A key down in L3 is promoted by a prefetch, and counted.
    for key in ["b", "c", "d", "e", "f", "g"] {
        put(&cache, key, noise(key.as_bytes(), 100));
    }
    assert_eq!(level_of(&cache, "b"), Some(Level::L3));
    assert_eq!(cache.prefetch(b"b", "t"), Some(Level::L1));
    let p = cache.snapshot().prefetch.expect("prefetch stats");
    assert_eq!((p.prefetched, p.used), (2, 1));
    assert_eq!(
        cache.snapshot().level(Level::L3).map(|l| l.promotions),
        Some(1)
    );
    // Unused prefetches lower the accuracy.
    assert_eq!(p.accuracy, 0.5);
}

#[test]
fn an_l3_directory_open_to_others_or_a_symlink_is_refused_not_used() {
    let dir = private_tempdir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cache = one_shard(&config(0, 0, 100_000, "lru"), &open);
    let reason = cache.l3_disabled().expect("refused");
    assert!(reason.contains("open to other users"), "{reason}");
    let err = cache
        .put(b"k", &b"v"[..], "t", Priority::Normal, true)
        .expect_err("no level");
    assert!(err.to_string().contains("l3 is disabled"), "{err}");
    // Left as it was found.
    let mode = std::fs::metadata(&open).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);

    let target = dir.path().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let cache = one_shard(&config(0, 0, 100_000, "lru"), &link);
    assert!(cache.l3_disabled().is_some_and(|r| r.contains("symlink")));
    assert!(
        cache
            .put(b"k", &b"v"[..], "t", Priority::Normal, true)
            .is_err()
    );
    assert_eq!(
        std::fs::read_dir(&target).expect("ls").count(),
        0,
        "nothing written through the link"
    );
}
