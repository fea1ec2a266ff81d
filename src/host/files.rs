//! Kept-open kernel files, re-read with one `pread` at offset 0.
//!
//! At the reference load the engine reads about two thousand small /proc and cgroup files per
//! tick. Opening each by path costs a path walk plus open, fstat, read, read-to-EOF and close;
//! a kept file costs one pread. procfs, sysfs and cgroupfs files are generated on read from
//! offset 0, so the content is always current (procps keeps /proc/stat open the same way).
//!
//! A kept /proc/<pid>/... descriptor stays bound to the process it was opened for: once that
//! process exits, reads through it fail (ESRCH) even if the pid is reused. The path is then
//! opened afresh, which reaches whatever process holds the pid now, so callers that care
//! about identity compare the start time (the process sampler does).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::HostError;

/// Read buffer start size; kernel files of interest fit, larger ones grow it.
const START_BUFFER: usize = 8 * 1024;

/// One kernel file, opened on first read and kept open; optionally with its last reading.
#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    file: Option<File>,
    memo: Option<(Instant, Vec<u8>)>,
}

impl KeptFile {
    pub fn new(path: PathBuf) -> Self {
        KeptFile {
            path,
            file: None,
            memo: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's current content, in `buffer`. When the kept descriptor fails (its process
    /// or cgroup is gone) the path is opened afresh once, so a recreated cgroup, or a pid now
    /// held by another process, is read as what it now is (callers that care about identity,
    /// like the process sampler, check the start time).
    pub fn read_bytes<'b>(&mut self, buffer: &'b mut Vec<u8>) -> Result<&'b [u8], HostError> {
        let filled = self.fill(buffer)?;
        Ok(&buffer[..filled])
    }

    /// Read into `buffer`; returns how many bytes are valid.
    fn fill(&mut self, buffer: &mut Vec<u8>) -> Result<usize, HostError> {
        if let Some(file) = &self.file {
            if let Ok(filled) = read_whole_at_zero(file, buffer) {
                return Ok(filled);
            }
            self.file = None;
        }
        let io_err = |source| HostError::Io {
            path: self.path.clone(),
            source,
        };
        let file = File::open(&self.path).map_err(io_err)?;
        let filled = read_whole_at_zero(&file, buffer).map_err(io_err)?;
        self.file = Some(file);
        Ok(filled)
    }

    /// The file's current content as text.
    pub fn read<'b>(&mut self, buffer: &'b mut Vec<u8>) -> Result<&'b str, HostError> {
        let bytes = self.read_bytes(buffer)?;
        as_text(bytes, &self.path)
    }

    /// Content no older than `max_age`: the last reading when recent enough, else a fresh
    /// one. For files that change slowly (limits) or that the kernel itself updates only
    /// every few seconds (PSI averages, every 2 s).
    pub fn read_within(
        &mut self,
        buffer: &mut Vec<u8>,
        max_age: Duration,
    ) -> Result<&str, HostError> {
        let fresh = self
            .memo
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < max_age);
        if !fresh {
            let bytes = self.read_bytes(buffer)?.to_vec();
            self.memo = Some((Instant::now(), bytes));
        }
        match &self.memo {
            Some((_, bytes)) => as_text(bytes, &self.path),
            None => Err(HostError::Parse {
                path: self.path.clone(),
                what: "no reading kept".to_string(),
            }),
        }
    }

    /// Close the descriptor; the next read opens the path again.
    pub fn close(&mut self) {
        self.file = None;
    }

    /// Forget the last reading, so the next `read_within` reads afresh.
    pub fn expire(&mut self) {
        self.memo = None;
    }
}

/// Kept files by path, for sets of files that come and go (one stat file per process).
#[derive(Debug, Default)]
pub struct FileCache {
    // Keyed by the raw path bytes: hashing a `Path` walks its components, which showed in
    // profiles at hundreds of lookups a tick.
    files: HashMap<OsString, KeptFile>,
    buffer: Vec<u8>,
    /// Most files kept open at once; past it, files are read and closed as usual.
    keep_limit: Option<usize>,
}

impl FileCache {
    pub fn new() -> Self {
        FileCache::default()
    }

    /// A cache that keeps at most `limit` files open (for caches that grow with the host,
    /// such as one file per process).
    pub fn with_limit(limit: usize) -> Self {
        FileCache {
            keep_limit: Some(limit),
            ..FileCache::default()
        }
    }

    /// The file's current content (see `KeptFile::read_bytes`). A file that fails is dropped.
    pub fn read_bytes(&mut self, path: &Path) -> Result<&[u8], HostError> {
        let key = path.as_os_str();
        let filled = match self.files.get_mut(key) {
            Some(kept) => kept.fill(&mut self.buffer),
            None => {
                let mut kept = KeptFile::new(path.to_path_buf());
                let filled = kept.fill(&mut self.buffer);
                let room = self.keep_limit.is_none_or(|limit| self.files.len() < limit);
                if filled.is_ok() && room {
                    self.files.insert(key.to_owned(), kept);
                }
                filled
            }
        };
        match filled {
            Ok(filled) => Ok(&self.buffer[..filled]),
            Err(err) => {
                self.files.remove(key);
                Err(err)
            }
        }
    }

    /// The file's current content as text (UTF-8 required).
    pub fn read(&mut self, path: &Path) -> Result<&str, HostError> {
        let bytes = self.read_bytes(path)?;
        as_text(bytes, path)
    }

    /// Forget every kept file whose path does not satisfy `keep` (closing it).
    pub fn retain(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        self.files.retain(|path, _| keep(Path::new(path)));
    }

    /// How many files are kept open.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Read the whole file from offset 0 into `buffer` with as few preads as possible; returns
/// the length read. The buffer keeps its size between reads (no zero-filling per read).
fn read_whole_at_zero(file: &File, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    if buffer.len() < START_BUFFER {
        buffer.resize(START_BUFFER, 0);
    }
    let mut filled = 0;
    loop {
        let n = file.read_at(&mut buffer[filled..], filled as u64)?;
        filled += n;
        // Short read: the kernel generated all it had (seq_file fills the buffer until
        // done); a zero read is the end too.
        if n == 0 || filled < buffer.len() {
            return Ok(filled);
        }
        let grown = buffer.len() * 2;
        buffer.resize(grown, 0);
    }
}

fn as_text<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str, HostError> {
    std::str::from_utf8(bytes).map_err(|_| HostError::Parse {
        path: path.to_path_buf(),
        what: "not UTF-8 text".to_string(),
    })
}

/// Raise the soft open-file limit to the hard limit, since kept files need one descriptor
/// each (a few per agent container). Returns the new soft limit.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(err) => {
                tracing::debug!(%err, "could not raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_proc_file_follows_changes_and_fails_when_its_process_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let path = PathBuf::from(format!("/proc/{}/stat", child.id()));
        let mut cache = FileCache::new();
        let first = cache.read(&path).unwrap().to_string();
        assert!(
            first.starts_with(&format!("{} (sleep)", child.id())),
            "{first}"
        );
        assert_eq!(cache.len(), 1);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(cache.read(&path).is_err());
        assert_eq!(cache.len(), 0, "a failed file is dropped");
        assert!(cache.read(&path).is_err(), "and not resurrected");
    }

    #[test]
    fn regular_files_larger_than_the_buffer_are_read_whole_and_rewrites_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let big = "x".repeat(3 * START_BUFFER + 5);
        std::fs::write(&path, &big).unwrap();
        let mut cache = FileCache::new();
        assert_eq!(cache.read(&path).unwrap(), big);
        std::fs::write(&path, "short").unwrap();
        assert_eq!(cache.read(&path).unwrap(), "short");
        assert!(cache.read(&dir.path().join("absent")).is_err());
        assert_eq!(cache.len(), 1, "a file that failed is not kept");
        cache.retain(|_| false);
        assert!(cache.is_empty());
    }

    #[test]
    fn readings_within_their_age_are_reused_then_refreshed_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limit");
        std::fs::write(&path, "1").unwrap();
        let mut kept = KeptFile::new(path.clone());
        let mut buffer = Vec::new();
        let long = Duration::from_secs(3600);
        assert_eq!(kept.read_within(&mut buffer, long).unwrap(), "1");
        std::fs::write(&path, "2").unwrap();
        assert_eq!(
            kept.read_within(&mut buffer, long).unwrap(),
            "1",
            "still within its age"
        );
        assert_eq!(kept.read_within(&mut buffer, Duration::ZERO).unwrap(), "2");
        std::fs::write(&path, "3").unwrap();
        kept.expire();
        assert_eq!(kept.read_within(&mut buffer, long).unwrap(), "3");
    }

    #[test]
    fn a_limited_cache_still_reads_past_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = FileCache::with_limit(1);
        for name in ["a", "b"] {
            std::fs::write(dir.path().join(name), name).unwrap();
            assert_eq!(cache.read(&dir.path().join(name)).unwrap(), name);
        }
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn kernel_counters_are_current_on_every_read() {
        let mut cache = FileCache::new();
        let path = Path::new("/proc/self/stat");
        let field = |text: &str| -> u64 {
            let after = &text[text.rfind(')').unwrap() + 2..];
            after.split(' ').nth(11).unwrap().parse().unwrap() // utime
        };
        let before = field(cache.read(path).unwrap());
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(150) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let after = field(cache.read(path).unwrap());
        assert!(after > before, "utime {before} -> {after}");
    }
}
