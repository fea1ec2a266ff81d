//! The L3 file format: a 32-byte header (magic "SZC3", version, flags, priority, key
//! length, stored length, decompressed length, CRC-32), the full key, the value. The CRC
//! covers the header's fields, the key and the value; the file's length must match the
//! header. Files are opened never through a symlink.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;

use super::disk::DiskEntry;
use super::level::Stored;
use super::policy::Priority;

const MAGIC: &[u8; 4] = b"SZC3";
const VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 32;
const FLAG_COMPRESSED: u8 = 1;
const FLAG_PREFETCHED: u8 = 2;
/// Longest key a file may hold (the API's request head is far smaller).
pub(crate) const MAX_KEY_LEN: usize = 64 * 1024;

/// Create `path` (never following a symlink, never reusing a file) 0600 and write `bytes`.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)
}

pub(crate) fn remove_quietly(path: &Path) {
    if let Err(err) = fs::remove_file(path)
        && err.kind() != ErrorKind::NotFound
    {
        tracing::debug!(target: "sutazai_top::cache", path = %path.display(), %err, "cannot remove");
    }
}

fn priority_byte(p: Priority) -> u8 {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
    }
}

fn priority_of(b: u8) -> Option<Priority> {
    match b {
        0 => Some(Priority::Low),
        1 => Some(Priority::Normal),
        2 => Some(Priority::High),
        _ => None,
    }
}

/// The file's bytes: header, key, value.
pub(crate) fn encode(entry: &Stored) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + entry.key.len() + entry.data.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    let mut flags = 0;
    if entry.compressed {
        flags |= FLAG_COMPRESSED;
    }
    if entry.prefetched {
        flags |= FLAG_PREFETCHED;
    }
    out.push(flags);
    out.push(priority_byte(entry.priority));
    out.push(0);
    out.extend_from_slice(&(entry.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(entry.data.len() as u64).to_le_bytes());
    out.extend_from_slice(&(entry.raw_len as u64).to_le_bytes());
    let crc = crc_of(&out, &entry.key, &entry.data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&entry.key);
    out.extend_from_slice(&entry.data);
    out
}

fn crc_of(fields: &[u8], key: &[u8], data: &[u8]) -> u32 {
    // One running CRC over the three parts: no copy of the value to checksum it.
    let mut crc = crc32fast::Hasher::new();
    crc.update(fields);
    crc.update(key);
    crc.update(data);
    crc.finalize()
}

/// A header's fields.
struct Header {
    flags: u8,
    priority: Priority,
    key_len: usize,
    data_len: u64,
    raw_len: u64,
    crc: u32,
}

impl Header {
    fn parse(bytes: &[u8]) -> Result<Header, String> {
        let field = |range: std::ops::Range<usize>| bytes.get(range).ok_or("short header");
        if field(0..4)? != MAGIC {
            return Err("not a cache file (bad magic)".to_string());
        }
        if field(4..5)? != [VERSION] {
            return Err("unknown file version".to_string());
        }
        let u32_at = |at: usize| -> Result<u32, String> {
            let b = field(at..at + 4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let u64_at = |at: usize| -> Result<u64, String> {
            let mut b = [0u8; 8];
            b.copy_from_slice(field(at..at + 8)?);
            Ok(u64::from_le_bytes(b))
        };
        let flags = field(5..6)?[0];
        let priority = priority_of(field(6..7)?[0]).ok_or("bad priority byte")?;
        let key_len = u32_at(8)? as usize;
        if key_len > MAX_KEY_LEN {
            return Err("key length out of range".to_string());
        }
        Ok(Header {
            flags,
            priority,
            key_len,
            data_len: u64_at(12)?,
            raw_len: u64_at(20)?,
            crc: u32_at(28)?,
        })
    }

    fn file_len(&self) -> u64 {
        (HEADER_LEN + self.key_len) as u64 + self.data_len
    }
}

/// Open a file of ours for reading, never through a symlink. Non-blocking, so that a FIFO
/// planted in its place opens at once (and is refused below) instead of waiting for a writer
/// while a shard lock is held; on a regular file the flag changes nothing.
pub(crate) fn open_entry(path: &Path) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    Ok(file)
}

/// The whole entry, checked: length against the header, checksum over everything.
pub(crate) fn read_file(path: &Path) -> Result<Stored, String> {
    let mut file = open_entry(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    let header = Header::parse(&bytes)?;
    if bytes.len() as u64 != header.file_len() {
        return Err(format!(
            "truncated or padded: {} bytes, the header says {}",
            bytes.len(),
            header.file_len()
        ));
    }
    let key_end = HEADER_LEN + header.key_len;
    let (fields, key, data) = (&bytes[..28], &bytes[HEADER_LEN..key_end], &bytes[key_end..]);
    if crc_of(fields, key, data) != header.crc {
        return Err("checksum mismatch".to_string());
    }
    let compressed = header.flags & FLAG_COMPRESSED != 0;
    let raw_len = usize::try_from(header.raw_len).map_err(|_| "length out of range")?;
    if !compressed && raw_len != data.len() {
        return Err("length fields disagree".to_string());
    }
    Ok(Stored {
        key: key.into(),
        data: Bytes::copy_from_slice(data),
        raw_len,
        compressed,
        priority: header.priority,
        prefetched: header.flags & FLAG_PREFETCHED != 0,
    })
}

/// Only the header and key, for rebuilding the index at start; the checksum is checked
/// when the entry is read (reading every value at start would cost minutes on a full L3).
pub(crate) fn read_index_entry(path: &Path) -> Result<DiskEntry, String> {
    let mut file = open_entry(path)?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let mut head = [0u8; HEADER_LEN];
    file.read_exact(&mut head)
        .map_err(|_| "shorter than a header".to_string())?;
    let header = Header::parse(&head)?;
    if len != header.file_len() {
        return Err(format!(
            "truncated or padded: {len} bytes, the header says {}",
            header.file_len()
        ));
    }
    let mut key = vec![0u8; header.key_len];
    file.read_exact(&mut key)
        .map_err(|e| format!("cannot read the key: {e}"))?;
    Ok(DiskEntry {
        key: key.into(),
        size: len,
        priority: header.priority,
        generation: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &[u8], value: &[u8]) -> Stored {
        Stored {
            key: key.into(),
            data: Bytes::copy_from_slice(value),
            raw_len: value.len(),
            compressed: false,
            priority: Priority::High,
            prefetched: true,
        }
    }

    #[test]
    fn a_file_roundtrips_and_any_damage_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.l3");
        let bytes = encode(&entry(b"\0key", b"value bytes"));
        fs::write(&path, &bytes).expect("write");
        let back = read_file(&path).expect("reads");
        assert_eq!(
            (&*back.key, &back.data[..]),
            (&b"\0key"[..], &b"value bytes"[..])
        );
        assert_eq!((back.priority, back.prefetched), (Priority::High, true));
        for at in [0, 6, 9, 13, 21, 29, HEADER_LEN + 1, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            fs::write(&path, &bad).expect("write");
            assert!(read_file(&path).is_err(), "flip at {at} not caught");
        }
        fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        assert!(read_file(&path).unwrap_err().contains("truncated"));
        fs::write(&path, &bytes[..10]).expect("write");
        assert!(read_file(&path).is_err());
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target.l3");
        fs::write(&target, encode(&entry(b"k", b"v"))).expect("write");
        let link = dir.path().join("link.l3");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(read_file(&link).is_err());
        assert!(write_new(&link, b"x").is_err());
        assert_eq!(fs::read(&target).expect("intact").len(), HEADER_LEN + 2);
    }

    #[test]
    fn a_fifo_in_place_of_an_entry_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("planted.l3");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // On a thread: a blocking open would hang this test, not fail it.
        let (tx, rx) = std::sync::mpsc::channel();
        let fifo = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_file(&fifo).map(|_| ()));
        });
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading a FIFO entry must not block");
        assert_eq!(refused, Err("not a regular file".to_string()));
    }

    proptest::proptest! {
        /// Any bytes, and a real file's bytes with some changed: a header or an error,
        /// never a panic (L3 files are read back after a restart, from a disk anyone with
        /// root could have touched).
        #[test]
        fn fuzz_headers(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
            edits in proptest::collection::vec((0usize..256, proptest::prelude::any::<u8>()), 0..8),
        ) {
            let _ = Header::parse(&bytes);
            let mut real = encode(&entry(b"key", b"value"));
            for (at, byte) in edits {
                let len = real.len();
                real[at % len] = byte;
            }
            let _ = Header::parse(&real);
        }
    }
}
