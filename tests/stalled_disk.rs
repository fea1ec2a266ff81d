//! A bad disk under L3, end to end (issue 15): one cache entry replaced by a FIFO and another
//! by a file whose reads hang (a FUSE file system, `fixtures/slowfs.py`, bind-mounted over
//! it). While a GET of the hung entry waits on the disk, `/api/health` must keep answering
//! within 100 ms, the FIFO must be refused at once, L3 must say it is degraded, and the hung
//! GET must be answered 503 instead of holding its client forever.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::Served;
use support::wire::{call, noise, small_cache_config as cache_config};

/// How long each read of the slow file hangs: past the API's 10 s limit on a cache operation.
const HANG_SECONDS: u64 = 30;

/// The FUSE server and the bind mount over a cache entry; both undone when dropped, which
/// also ends the hung read (the kernel fails it once the server is gone).
struct SlowDisk {
    server: Child,
    mountpoint: PathBuf,
    bound: Option<PathBuf>,
}

impl SlowDisk {
    fn mount(mountpoint: &Path) -> SlowDisk {
        std::fs::create_dir_all(mountpoint).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slowfs.py");
        let server = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(mountpoint)
            .arg(HANG_SECONDS.to_string())
            .spawn()
            .expect("python3 runs slowfs.py (scripts/test.sh installs python3-fusepy)");
        let mut disk = SlowDisk {
            server,
            mountpoint: mountpoint.to_path_buf(),
            bound: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !disk.mountpoint.join("slow").exists() {
            if let Ok(Some(status)) = disk.server.try_wait() {
                panic!(
                    "slowfs.py exited ({status}): is FUSE available and python3-fusepy installed?"
                );
            }
            assert!(Instant::now() < deadline, "slowfs.py did not mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        disk
    }

    /// Put the hanging file in place of `target`, which must be a regular file.
    fn bind_over(&mut self, target: &Path) {
        run(
            "mount",
            &[
                "--bind",
                path_str(&self.mountpoint.join("slow")),
                path_str(target),
            ],
        );
        self.bound = Some(target.to_path_buf());
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        if let Some(target) = self.bound.take() {
            let _ = Command::new("umount").arg("-l").arg(&target).status();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// The L3 file that holds shared `key`: an entry stores its key right after its 32-byte
/// header, behind a namespace byte (0 for shared).
fn entry_file(l3_dir: &Path, key: &[u8]) -> PathBuf {
    let stored = [&[0u8][..], key].concat();
    std::fs::read_dir(l3_dir)
        .expect("L3 dir")
        .map(|e| e.expect("dir entry").path())
        .find(|p| std::fs::read(p).is_ok_and(|b| b.get(32..32 + stored.len()) == Some(&stored[..])))
        .unwrap_or_else(|| {
            let names: Vec<_> = std::fs::read_dir(l3_dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            panic!(
                "no L3 file for {} among {names:?}",
                String::from_utf8_lossy(key)
            )
        })
}

#[test]
fn a_fifo_and_a_hung_file_in_l3_leave_the_api_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fuse_dir = dir.path().join("slowfs");
    let served = Served::start(cache_config(), dir);
    let socket = served.socket.clone();
    // 40 kB values lz4 cannot shrink: L1 holds two, L2 one, the first three go down to L3.
    for i in 0..6u64 {
        let put = call(
            &socket,
            "PUT",
            &format!("/api/cache/big{i}"),
            &[],
            &noise(i, 40_000),
        );
        assert_eq!(put.status, 200, "{}", put.error());
    }
    let l3_dir = served.state_dir().join("cache");
    let hung = entry_file(&l3_dir, b"big0");
    let fifo = entry_file(&l3_dir, b"big1");
    std::fs::remove_file(&fifo).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut disk = SlowDisk::mount(&fuse_dir);
    disk.bind_over(&hung);

    let hung_get = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let answer = call(&socket, "GET", "/api/cache/big0", &[], b"");
            (answer.status, started.elapsed())
        })
    };
    // The FIFO is refused at once (a damaged entry is a miss), even with the hung read on.
    let started = Instant::now();
    let from_fifo = call(&socket, "GET", "/api/cache/big1", &[], b"");
    assert_eq!(
        from_fifo.status,
        404,
        "{}",
        String::from_utf8_lossy(&from_fifo.body)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Health answers within 100 ms the whole time the GET hangs, and L3 says it is degraded.
    let mut slowest = Duration::ZERO;
    let mut degraded = None;
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        let started = Instant::now();
        let health = call(&socket, "GET", "/api/health", &[], b"");
        slowest = slowest.max(started.elapsed());
        assert_eq!(health.status, 200);
        let stats = call(&socket, "GET", "/api/cache", &[], b"").json();
        if let Some(why) = stats["levels"][2]["disabled"].as_str() {
            degraded = Some(why.to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        slowest < Duration::from_millis(100),
        "/api/health took {slowest:?} while a disk read hung"
    );
    assert!(
        degraded
            .as_deref()
            .is_some_and(|why| why.contains("degraded")),
        "L3 never said it was degraded: {degraded:?}"
    );
    assert!(
        !hung_get.is_finished(),
        "the hung read ended early: no stall was tested"
    );

    // The hung GET gets its answer at the API's limit, not when the disk wakes up.
    let (status, waited) = hung_get.join().expect("hung GET");
    assert_eq!(status, 503);
    assert!(
        waited < Duration::from_secs(HANG_SECONDS - 5),
        "the hung GET waited {waited:?}"
    );
    drop(disk);
}
