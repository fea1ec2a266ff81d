//! The change journal: what was changed on the host, so every change can be undone, even after
//! a crash.
//!
//! `<state_dir>/journal.jsonl` holds one record per line: `<crc32, 8 lowercase hex> <json>\n`,
//! the CRC (IEEE) covering the JSON bytes. A batch (one proposal's changes) is journaled as
//! `Begin` — written and synced before any of its changes is applied — then one `Applied`,
//! `Failed` or `Undone` per change as it happens, and `Closed` once it needs no more work
//! (kept for good, or fully undone). Every append is synced before it returns.
//!
//! On open the whole file is replayed. Each line stands alone: a line whose CRC, JSON or meaning
//! is bad is reported with its number and the reason (never its content) and the lines after it
//! are still read. A last line without its newline is a write cut by a crash: reported, and the
//! next append starts on a fresh line. Batches left open are handed back in [`Recovery`].
//!
//! Whoever can write this file can make a root process "undo" arbitrary values into the host,
//! so the journal refuses symlinks, paths writable by others and files owned by someone else,
//! and holds an exclusive lock so that two instances never interleave their records.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sutazai_owned_paths::{Access, OwnedDir, PathError};

use crate::model::Change;

/// The journal's file name inside the state dir.
pub const JOURNAL_FILE: &str = "journal.jsonl";

const FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// Refused by the safety rules: symlink, writable by others, foreign owner, not a file.
    #[error("journal {}: refused: {why}", path.display())]
    Unsafe { path: PathBuf, why: String },
    #[error("journal {}: in use by another sutazai-top (locked)", path.display())]
    Locked { path: PathBuf },
    /// A mark that does not fit the journal's state (unknown batch, bad index, wrong order).
    #[error("journal {}: {why}", path.display())]
    Rejected { path: PathBuf, why: Rejection },
    #[error("journal {}: cannot encode record: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Why a record does not fit the journal's state. Names numbers only, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("batch {0} is unknown")]
    UnknownBatch(u64),
    #[error("batch {0} is already closed")]
    ClosedBatch(u64),
    #[error("batch {0} begins twice")]
    DuplicateBatch(u64),
    #[error("batch {batch} has {len} changes, no change {index}")]
    NoSuchChange {
        batch: u64,
        index: usize,
        len: usize,
    },
    #[error("batch {batch} change {index}: cannot go from {from} to {to}")]
    BadTransition {
        batch: u64,
        index: usize,
        from: &'static str,
        to: &'static str,
    },
}

/// Where one change of a batch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeState {
    /// Journaled, not (known to be) applied.
    Pending,
    Applied,
    /// Applying failed; the error as the actuator reported it.
    Failed(String),
    /// `before` was written back.
    Undone,
}

impl ChangeState {
    fn name(&self) -> &'static str {
        match self {
            ChangeState::Pending => "pending",
            ChangeState::Applied => "applied",
            ChangeState::Failed(_) => "failed",
            ChangeState::Undone => "undone",
        }
    }
}

/// A batch that is not closed, with each change's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchState {
    pub batch: u64,
    pub label: String,
    pub at_ms: u64,
    pub changes: Vec<(Change, ChangeState)>,
}

impl BatchState {
    /// The applied and not undone changes, last first: undo goes backwards, so a change is
    /// undone on top of the state its later siblings left.
    pub fn to_undo(&self) -> Vec<(usize, Change)> {
        self.changes
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, (_, state))| *state == ChangeState::Applied)
            .map(|(index, (change, _))| (index, change.clone()))
            .collect()
    }

    /// The change that may have been applied without its mark reaching the disk: the first
    /// pending one, as changes are applied in index order and a crash can fall between the
    /// write to the host and the `Applied` record. After a crash, restoring its `before` is
    /// harmless if it was never applied, and needed if it was.
    pub fn in_flight(&self) -> Option<(usize, Change)> {
        self.changes
            .iter()
            .position(|(_, state)| *state == ChangeState::Pending)
            .and_then(|index| {
                let (change, _) = self.changes.get(index)?;
                Some((index, change.clone()))
            })
    }
}

/// What opening the journal found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Batches left open, by an unclean exit or by a run that kept them pending.
    pub open: Vec<BatchState>,
    /// Lines that could not be used: 1-based line number and why (never the line's content).
    pub corrupt_lines: Vec<(usize, String)>,
    /// The last line had no newline: a write cut by a crash.
    pub truncated_tail: bool,
}

impl Recovery {
    /// Nothing to report: no open batch, nothing corrupt or cut.
    pub fn is_clean(&self) -> bool {
        self.open.is_empty() && self.corrupt_lines.is_empty() && !self.truncated_tail
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Record {
    Begin {
        batch: u64,
        label: String,
        at_ms: u64,
        changes: Vec<Change>,
    },
    /// More changes for an open batch, all pending, numbered after its existing ones:
    /// threads that appeared while the batch was active get its per-thread values too.
    Extended {
        batch: u64,
        changes: Vec<Change>,
    },
    Applied {
        batch: u64,
        index: usize,
    },
    Failed {
        batch: u64,
        index: usize,
        error: String,
    },
    Undone {
        batch: u64,
        index: usize,
    },
    Closed {
        batch: u64,
    },
}

impl Record {
    fn batch(&self) -> u64 {
        match self {
            Record::Begin { batch, .. }
            | Record::Extended { batch, .. }
            | Record::Applied { batch, .. }
            | Record::Failed { batch, .. }
            | Record::Undone { batch, .. }
            | Record::Closed { batch } => *batch,
        }
    }
}

/// The state the records build: open batches, closed ids, the highest id seen.
#[derive(Debug, Default)]
struct Ledger {
    open: BTreeMap<u64, BatchState>,
    closed: BTreeSet<u64>,
    highest_batch: u64,
}

impl Ledger {
    /// Checks that `record` fits the current state, without changing it.
    fn validate(&self, record: &Record) -> Result<(), Rejection> {
        let batch = record.batch();
        if let Record::Begin { .. } = record {
            return if self.open.contains_key(&batch) || self.closed.contains(&batch) {
                Err(Rejection::DuplicateBatch(batch))
            } else {
                Ok(())
            };
        }
        let state = self.open_batch(batch)?;
        match record {
            Record::Applied { index, .. } => {
                check_transition(state, *index, "applied", |s| *s == ChangeState::Pending)
            }
            Record::Failed { index, .. } => {
                check_transition(state, *index, "failed", |s| *s == ChangeState::Pending)
            }
            // Undone from pending or failed too: restoring a change whose outcome is unknown
            // (cut by a crash, or failed half-way) writes `before`, which is always safe.
            Record::Undone { index, .. } => {
                check_transition(state, *index, "undone", |s| *s != ChangeState::Undone)
            }
            Record::Closed { .. } | Record::Begin { .. } | Record::Extended { .. } => Ok(()),
        }
    }

    fn open_batch(&self, batch: u64) -> Result<&BatchState, Rejection> {
        match self.open.get(&batch) {
            Some(state) => Ok(state),
            None if self.closed.contains(&batch) => Err(Rejection::ClosedBatch(batch)),
            None => Err(Rejection::UnknownBatch(batch)),
        }
    }

    /// Applies a record that `validate` accepted.
    fn record(&mut self, record: Record) {
        self.note_batch_id(record.batch());
        match record {
            Record::Begin {
                batch,
                label,
                at_ms,
                changes,
            } => {
                let changes = changes
                    .into_iter()
                    .map(|change| (change, ChangeState::Pending))
                    .collect();
                let state = BatchState {
                    batch,
                    label,
                    at_ms,
                    changes,
                };
                self.open.insert(batch, state);
            }
            Record::Extended { batch, changes } => {
                if let Some(state) = self.open.get_mut(&batch) {
                    state
                        .changes
                        .extend(changes.into_iter().map(|c| (c, ChangeState::Pending)));
                }
            }
            Record::Applied { batch, index } => self.set(batch, index, ChangeState::Applied),
            Record::Failed {
                batch,
                index,
                error,
            } => self.set(batch, index, ChangeState::Failed(error)),
            Record::Undone { batch, index } => self.set(batch, index, ChangeState::Undone),
            Record::Closed { batch } => {
                self.open.remove(&batch);
                self.closed.insert(batch);
            }
        }
    }

    fn set(&mut self, batch: u64, index: usize, new_state: ChangeState) {
        let slot = self
            .open
            .get_mut(&batch)
            .and_then(|state| state.changes.get_mut(index));
        if let Some((_, state)) = slot {
            *state = new_state;
        }
    }

    /// Remembers an id so that new batches never reuse it, even one seen only in a record
    /// that was rejected.
    fn note_batch_id(&mut self, batch: u64) {
        self.highest_batch = self.highest_batch.max(batch);
    }

    /// Takes the next batch id. Taken before the Begin is written, so a Begin whose write
    /// failed half-way never shares its id with the next one.
    fn take_batch_id(&mut self) -> u64 {
        self.highest_batch = self.highest_batch.saturating_add(1);
        self.highest_batch
    }
}

fn check_transition(
    state: &BatchState,
    index: usize,
    to: &'static str,
    allowed_from: impl Fn(&ChangeState) -> bool,
) -> Result<(), Rejection> {
    let Some((_, current)) = state.changes.get(index) else {
        return Err(Rejection::NoSuchChange {
            batch: state.batch,
            index,
            len: state.changes.len(),
        });
    };
    if allowed_from(current) {
        Ok(())
    } else {
        Err(Rejection::BadTransition {
            batch: state.batch,
            index,
            from: current.name(),
            to,
        })
    }
}

/// The open journal: appends records and keeps the state they describe.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Locked for the journal's life: one writer per state dir.
    file: Flock<File>,
    ledger: Ledger,
    /// The file ends without a newline (a cut write, or a failed append): the next record
    /// must start on its own line.
    needs_newline: bool,
}

impl Journal {
    /// Opens (creating if needed) `<dir>/journal.jsonl`, replays it and reports what a restart
    /// must handle. `dir` is created with mode 0700 if missing.
    pub fn open(dir: &Path) -> Result<(Journal, Recovery), JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let mut file = lock(open_journal_file(dir)?, &path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|source| JournalError::Io {
                path: path.clone(),
                op: "read",
                source,
            })?;
        let (ledger, corrupt_lines, truncated_tail) = replay(&data);
        for (line, why) in &corrupt_lines {
            tracing::warn!(path = %path.display(), line, why, "journal line not used");
        }
        let recovery = Recovery {
            open: ledger.open.values().cloned().collect(),
            corrupt_lines,
            truncated_tail,
        };
        let journal = Journal {
            path,
            file,
            ledger,
            needs_newline: truncated_tail,
        };
        Ok((journal, recovery))
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Journals a batch of changes, all pending, and returns its id. On `Ok` the record is on
    /// disk; only then may the changes be applied.
    pub fn begin(&mut self, label: &str, changes: &[Change]) -> Result<u64, JournalError> {
        let batch = self.ledger.take_batch_id();
        self.commit(Record::Begin {
            batch,
            label: label.to_owned(),
            at_ms: now_ms(),
            changes: changes.to_vec(),
        })?;
        Ok(batch)
    }

    /// Journals more changes for the open `batch`, all pending, and returns the index of
    /// the first. On `Ok` the record is on disk; only then may they be applied.
    pub fn extend(&mut self, batch: u64, changes: &[Change]) -> Result<usize, JournalError> {
        let first = self
            .ledger
            .open
            .get(&batch)
            .map(|state| state.changes.len())
            .unwrap_or(0);
        self.commit(Record::Extended {
            batch,
            changes: changes.to_vec(),
        })?;
        Ok(first)
    }

    /// Marks change `index` of `batch` applied (verified on the host).
    pub fn applied(&mut self, batch: u64, index: usize) -> Result<(), JournalError> {
        self.commit(Record::Applied { batch, index })
    }

    /// Marks change `index` of `batch` failed to apply, with the actuator's error.
    pub fn failed(&mut self, batch: u64, index: usize, error: &str) -> Result<(), JournalError> {
        self.commit(Record::Failed {
            batch,
            index,
            error: error.to_owned(),
        })
    }

    /// Marks change `index` of `batch` undone (`before` written back).
    pub fn undone(&mut self, batch: u64, index: usize) -> Result<(), JournalError> {
        self.commit(Record::Undone { batch, index })
    }

    /// Closes `batch`: it needs no more work (kept for good, or fully undone).
    pub fn close(&mut self, batch: u64) -> Result<(), JournalError> {
        self.commit(Record::Closed { batch })
    }

    /// The batches not closed, by id.
    pub fn open_batches(&self) -> Vec<BatchState> {
        self.ledger.open.values().cloned().collect()
    }

    fn commit(&mut self, record: Record) -> Result<(), JournalError> {
        self.ledger
            .validate(&record)
            .map_err(|why| JournalError::Rejected {
                path: self.path.clone(),
                why,
            })?;
        self.append(&record)?;
        self.ledger.record(record);
        Ok(())
    }

    /// Writes one line in a single write and syncs it.
    fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let json = serde_json::to_vec(record).map_err(|source| JournalError::Encode {
            path: self.path.clone(),
            source,
        })?;
        let mut line = Vec::with_capacity(json.len() + 11);
        if self.needs_newline {
            line.push(b'\n');
        }
        line.extend_from_slice(format!("{:08x} ", crc32(&json)).as_bytes());
        line.extend_from_slice(&json);
        line.push(b'\n');
        // Until this write is known complete, the file may end mid-line.
        self.needs_newline = true;
        self.file
            .write_all(&line)
            .map_err(|source| self.io("write", source))?;
        self.needs_newline = false;
        self.file
            .sync_data()
            .map_err(|source| self.io("sync", source))
    }

    fn io(&self, op: &'static str, source: io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }
}

/// Replays the file: the state the good lines build, the bad lines, and whether it was cut.
fn replay(data: &[u8]) -> (Ledger, Vec<(usize, String)>, bool) {
    let mut ledger = Ledger::default();
    let mut corrupt = Vec::new();
    let truncated_tail = !data.is_empty() && !data.ends_with(b"\n");
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    if body.is_empty() && !truncated_tail {
        return (ledger, corrupt, false);
    }
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    let last = lines.len();
    for (number, line) in (1..).zip(lines) {
        let cut = truncated_tail && number == last;
        if line.is_empty() {
            // The fresh-line guard after a failed append can leave a blank line; it holds no record.
            tracing::debug!(line = number, "skipping empty journal line");
            continue;
        }
        let outcome = parse_line(line).and_then(|record| {
            ledger.note_batch_id(record.batch());
            ledger.validate(&record).map_err(|why| why.to_string())?;
            Ok(record)
        });
        match outcome {
            // A cut line whose CRC holds is exactly what was written: only its newline was lost.
            Ok(record) => ledger.record(record),
            Err(why) if cut => {
                corrupt.push((number, format!("cut by a crash (no newline): {why}")))
            }
            Err(why) => corrupt.push((number, why)),
        }
    }
    (ledger, corrupt, truncated_tail)
}

/// Parses `<crc32 hex> <json>`; the error says why, never what the line holds.
fn parse_line(line: &[u8]) -> Result<Record, String> {
    let (Some(hex), Some(b' '), Some(json)) = (line.get(..8), line.get(8), line.get(9..)) else {
        return Err("too short or no space after the checksum".to_owned());
    };
    let stored = parse_crc(hex).ok_or("checksum is not 8 lowercase hex digits")?;
    if stored != crc32(json) {
        return Err("checksum mismatch".to_owned());
    }
    serde_json::from_slice(json).map_err(|e| {
        format!(
            "checksum holds but the record does not parse ({:?} error at column {})",
            e.classify(),
            e.column()
        )
    })
}

fn parse_crc(hex: &[u8]) -> Option<u32> {
    hex.iter().try_fold(0u32, |acc, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u32::from(digit))
    })
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib and `cksum -a crc32b` compute it.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn io_error(path: &Path, op: &'static str, source: io::Error) -> JournalError {
    JournalError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The state dir and the journal in it, by the rule every owned path follows
/// (`sutazai_owned_paths`): ours, writable by nobody else, never through a symlink.
fn open_journal_file(dir: &Path) -> Result<File, JournalError> {
    let owned = OwnedDir::ensure(dir).map_err(journal_error)?;
    let (file, _) = owned
        .open(
            JOURNAL_FILE,
            Access::ReadAppend {
                create_mode: FILE_MODE,
            },
        )
        .map_err(journal_error)?;
    Ok(file)
}

fn journal_error(err: PathError) -> JournalError {
    match err {
        PathError::Unsafe { path, why } => JournalError::Unsafe { path, why },
        PathError::Io { path, op, source } => JournalError::Io { path, op, source },
    }
}

/// One writer at a time: a second instance interleaving records would corrupt both stories.
/// The lock lasts as long as the returned file.
fn lock(file: File, path: &Path) -> Result<Flock<File>, JournalError> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(locked),
        Err((_, Errno::EWOULDBLOCK)) => Err(JournalError::Locked {
            path: path.to_path_buf(),
        }),
        Err((_, errno)) => Err(io_error(path, "lock", io::Error::from(errno))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Knob, Target};

    fn change(after: &str) -> Change {
        Change {
            target: Target::Thread {
                pid: 10,
                tid: 11,
                start_time: 12,
            },
            knob: Knob::Nice,
            before: "0".to_owned(),
            after: after.to_owned(),
        }
    }

    fn line(record: &Record) -> Vec<u8> {
        let json = serde_json::to_vec(record).unwrap();
        let mut out = format!("{:08x} ", crc32(&json)).into_bytes();
        out.extend_from_slice(&json);
        out.push(b'\n');
        out
    }

    fn begin(batch: u64, n: usize) -> Record {
        Record::Begin {
            batch,
            label: "secret-label".to_owned(),
            at_ms: 5,
            changes: (0..n).map(|i| change(&i.to_string())).collect(),
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"a"), 0xe8b7_be43);
    }

    #[test]
    fn a_written_line_parses_back_to_the_same_record() {
        let record = Record::Failed {
            batch: 3,
            index: 1,
            error: "denied".to_owned(),
        };
        let bytes = line(&record);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(&format!(
            "{:08x} {{\"record\":\"failed\"",
            crc32(&bytes[9..bytes.len() - 1])
        )));
        assert_eq!(parse_line(&bytes[..bytes.len() - 1]), Ok(record));
    }

    #[test]
    fn bad_lines_say_why_without_echoing_content() {
        let good = line(&begin(1, 1));
        let good = &good[..good.len() - 1];

        let mut flipped = good.to_vec();
        flipped[20] ^= 0x01;
        assert_eq!(parse_line(&flipped), Err("checksum mismatch".to_owned()));

        // The right checksum of "123456789", in upper case.
        assert!(
            parse_line(b"CBF43926 123456789")
                .unwrap_err()
                .contains("lowercase hex")
        );
        assert!(
            parse_line(b"cbf43926 123456789")
                .unwrap_err()
                .contains("does not parse")
        );
        assert!(
            parse_line(b"zzzzzzzz {}")
                .unwrap_err()
                .contains("lowercase hex")
        );
        assert!(parse_line(b"1234").unwrap_err().contains("too short"));
        let mut no_space = good.to_vec();
        no_space[8] = b'x';
        assert!(parse_line(&no_space).unwrap_err().contains("no space"));

        // A valid checksum over JSON that is not a record: the reason names no value.
        let json = br#"{"record":"begin","batch":"secret-value"}"#;
        let mut odd = format!("{:08x} ", crc32(json)).into_bytes();
        odd.extend_from_slice(json);
        let why = parse_line(&odd).unwrap_err();
        assert!(why.contains("does not parse"), "{why}");
        assert!(!why.contains("secret"), "{why}");
    }

    #[test]
    fn replay_reports_semantic_errors_and_keeps_reading() {
        let mut data = Vec::new();
        data.extend(line(&Record::Applied { batch: 9, index: 0 })); // 1: unknown batch
        data.extend(line(&begin(1, 2))); // 2
        data.extend(line(&Record::Applied { batch: 1, index: 5 })); // 3: no such change
        data.extend(line(&Record::Applied { batch: 1, index: 0 })); // 4
        data.extend(line(&Record::Applied { batch: 1, index: 0 })); // 5: applied twice
        data.extend(line(&Record::Failed {
            batch: 1,
            index: 1,
            error: "e".into(),
        })); // 6
        data.extend(line(&begin(1, 1))); // 7: duplicate
        data.extend(line(&begin(2, 1))); // 8
        data.extend(line(&Record::Closed { batch: 2 })); // 9
        data.extend(line(&Record::Undone { batch: 2, index: 0 })); // 10: closed
        let (ledger, corrupt, cut) = replay(&data);
        assert!(!cut);
        let lines: Vec<usize> = corrupt.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![1, 3, 5, 7, 10]);
        assert_eq!(corrupt[0].1, "batch 9 is unknown");
        assert_eq!(corrupt[1].1, "batch 1 has 2 changes, no change 5");
        assert_eq!(
            corrupt[2].1,
            "batch 1 change 0: cannot go from applied to applied"
        );
        assert_eq!(corrupt[3].1, "batch 1 begins twice");
        assert_eq!(corrupt[4].1, "batch 2 is already closed");
        let open: Vec<&BatchState> = ledger.open.values().collect();
        assert_eq!(open.len(), 1);
        let states: Vec<&ChangeState> = open[0].changes.iter().map(|(_, s)| s).collect();
        assert_eq!(
            states,
            vec![&ChangeState::Applied, &ChangeState::Failed("e".into())]
        );
        // The orphan record's id is never reused.
        assert_eq!(ledger.highest_batch, 9);
    }

    #[test]
    fn replay_of_a_cut_tail() {
        let mut data = line(&begin(1, 1));
        let applied = line(&Record::Applied { batch: 1, index: 0 });
        data.extend_from_slice(&applied[..applied.len() - 4]);
        let (ledger, corrupt, cut) = replay(&data);
        assert!(cut);
        assert_eq!(corrupt.len(), 1);
        assert_eq!(corrupt[0].0, 2);
        assert!(
            corrupt[0].1.starts_with("cut by a crash"),
            "{}",
            corrupt[0].1
        );
        assert_eq!(ledger.open[&1].changes[0].1, ChangeState::Pending);

        // Only the newline lost: the checksum proves the record whole, so it is used.
        let mut data = line(&begin(1, 1));
        data.extend_from_slice(&applied[..applied.len() - 1]);
        let (ledger, corrupt, cut) = replay(&data);
        assert!(cut);
        assert!(corrupt.is_empty());
        assert_eq!(ledger.open[&1].changes[0].1, ChangeState::Applied);
    }

    #[test]
    fn replay_of_nothing() {
        let (ledger, corrupt, cut) = replay(b"");
        assert!(ledger.open.is_empty() && corrupt.is_empty() && !cut);
        assert_eq!(ledger.highest_batch, 0);
    }

    #[test]
    fn to_undo_is_applied_changes_last_first() {
        let state = BatchState {
            batch: 1,
            label: String::new(),
            at_ms: 0,
            changes: vec![
                (change("a"), ChangeState::Applied),
                (change("b"), ChangeState::Undone),
                (change("c"), ChangeState::Applied),
                (change("d"), ChangeState::Failed("x".into())),
                (change("e"), ChangeState::Applied),
                (change("f"), ChangeState::Pending),
            ],
        };
        let undo: Vec<(usize, String)> = state
            .to_undo()
            .into_iter()
            .map(|(i, c)| (i, c.after))
            .collect();
        assert_eq!(
            undo,
            vec![(4, "e".into()), (2, "c".into()), (0, "a".into())]
        );
        assert_eq!(
            state.in_flight().map(|(i, c)| (i, c.after)),
            Some((5, "f".into()))
        );
    }

    proptest::proptest! {
        /// Any line, and real lines with bytes changed: a record or a reason, never a panic;
        /// the replay of any bytes never panics either.
        #[test]
        fn fuzz_journal_lines(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..6),
        ) {
            let _ = parse_line(&bytes);
            let _ = replay(&bytes);
            let json = serde_json::to_vec(&Record::Begin {
                batch: 1,
                at_ms: 5,
                label: "fuzz".to_string(),
                changes: vec![change("5")],
            }).unwrap();
            let mut line = format!("{:08x} ", crc32(&json)).into_bytes();
            line.extend_from_slice(&json);
            for (at, byte) in edits {
                let len = line.len();
                line[at % len] = byte;
            }
            let _ = parse_line(&line);
            line.push(b'\n');
            let _ = replay(&line);
        }
    }
}
