//! Readers for the block-access traces used to measure the policies (../shared/traces):
//! the ARC paper's format (zstd text, `start_block block_count ignored request_no`, every
//! block of the range one access) and the LIRS format (gzip text, one block per line).
//! Decompression goes through the system `zstd` and `gzip` tools rather than extra crates.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(
        "cannot run `{tool}` to decompress {path}: {source} (install the Debian package `{tool}`)"
    )]
    Spawn {
        tool: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{tool}` failed on {path}: {stderr}")]
    Decompress {
        tool: &'static str,
        path: PathBuf,
        stderr: String,
    },
    #[error(
        "{path} line {line}: expected `start_block block_count ignored request_no`, got {text:?}"
    )]
    BadArcLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

/// Where the shared traces are: `$SUTAZAI_TRACES` if set, else `../shared/traces` beside the
/// repository (the workplace's layout), else `/work/shared/traces` (a checkout elsewhere on the same
/// machine, as CI's clean clone may be). The first that exists; else the crate-relative path,
/// so the error names where they were expected.
pub fn traces_dir() -> std::path::PathBuf {
    let beside_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces");
    let candidates = [
        std::env::var_os("SUTAZAI_TRACES").map(std::path::PathBuf::from),
        Some(beside_crate.clone()),
        Some(std::path::PathBuf::from("/work/shared/traces")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.is_dir())
        .unwrap_or(beside_crate)
}

/// Reads an ARC-format trace (`*.lis.zst`): one access per block of every request's range.
pub fn read_arc(path: &Path) -> Result<Vec<u64>, TraceError> {
    let mut accesses = Vec::new();
    decompress_lines("zstd", path, |number, line| {
        let text = line.trim();
        if text.is_empty() {
            return Ok(());
        }
        let blocks = arc_request(text).ok_or_else(|| TraceError::BadArcLine {
            path: path.to_path_buf(),
            line: number,
            text: text.to_string(),
        })?;
        accesses.extend(blocks);
        Ok(())
    })?;
    Ok(accesses)
}

/// Most blocks one ARC request may span; the real traces' largest is in the hundreds. A
/// line claiming more would make the reader try to hold them all (found by fuzzing).
const MAX_BLOCKS_PER_REQUEST: u64 = 1 << 20;

/// The blocks of one ARC line ("start count [...]"), or `None` when it is not one.
fn arc_request(text: &str) -> Option<std::ops::Range<u64>> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    let (Some(Ok(start)), Some(Ok(count))) = (fields.next(), fields.next()) else {
        return None;
    };
    if count > MAX_BLOCKS_PER_REQUEST {
        return None;
    }
    Some(start..start.checked_add(count)?)
}

/// Reads a LIRS-format trace (`*.trace.gz`): one block per line; lines that are not an
/// integer (headers, `*` separators, blanks) are skipped.
pub fn read_lirs(path: &Path) -> Result<Vec<u64>, TraceError> {
    let mut accesses = Vec::new();
    decompress_lines("gzip", path, |_, line| {
        if let Ok(block) = line.trim().parse::<u64>() {
            accesses.push(block);
        }
        Ok(())
    })?;
    Ok(accesses)
}

/// Runs `tool -dc path` and hands each output line (numbered from 1) to `each`.
fn decompress_lines(
    tool: &'static str,
    path: &Path,
    mut each: impl FnMut(usize, &str) -> Result<(), TraceError>,
) -> Result<(), TraceError> {
    let read_error = |source| TraceError::Read {
        path: path.to_path_buf(),
        source,
    };
    std::fs::metadata(path).map_err(read_error)?;
    let mut child = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TraceError::Spawn {
            tool,
            path: path.to_path_buf(),
            source,
        })?;
    let parsed = match child.stdout.take() {
        Some(stdout) => parse_lines(BufReader::with_capacity(1 << 16, stdout), &mut each, path),
        None => Ok(()),
    };
    let output = child.wait_with_output().map_err(read_error)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(TraceError::Decompress {
            tool,
            path: path.to_path_buf(),
            stderr,
        });
    }
    parsed
}

fn parse_lines(
    reader: impl BufRead,
    each: &mut impl FnMut(usize, &str) -> Result<(), TraceError>,
    path: &Path,
) -> Result<(), TraceError> {
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| TraceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        each(index + 1, &line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn compressed(tool: &str, suffix: &str, text: &str) -> tempfile::TempPath {
        let mut plain = tempfile::Builder::new()
            .suffix(".txt")
            .tempfile()
            .expect("temp file");
        plain.write_all(text.as_bytes()).expect("write");
        let output = Command::new(tool)
            .arg("-c")
            .arg(plain.path())
            .output()
            .expect(tool);
        assert!(output.status.success(), "{tool} failed");
        let mut packed = tempfile::Builder::new()
            .suffix(suffix)
            .tempfile()
            .expect("temp file");
        packed.write_all(&output.stdout).expect("write");
        packed.into_temp_path()
    }

    #[test]
    fn arc_format_expands_block_ranges() {
        let path = compressed("zstd", ".lis.zst", "10 3 0 0\n7 1 0 1\r\n\n20 0 0 2\n");
        assert_eq!(read_arc(&path).expect("trace"), vec![10, 11, 12, 7]);
    }

    #[test]
    fn arc_format_names_a_bad_line() {
        let path = compressed("zstd", ".lis.zst", "1 1 0 0\nnot a request\n");
        let error = read_arc(&path).expect_err("bad line").to_string();
        assert!(
            error.contains("line 2") && error.contains("not a request"),
            "{error}"
        );
    }

    #[test]
    fn lirs_format_skips_non_integers() {
        let path = compressed("gzip", ".trace.gz", "5\r\n*\n6\n\nheader\n5\n");
        assert_eq!(read_lirs(&path).expect("trace"), vec![5, 6, 5]);
    }

    #[test]
    fn a_missing_or_corrupt_file_is_an_error() {
        assert!(read_lirs(Path::new("/nonexistent/x.trace.gz")).is_err());
        let mut junk = tempfile::Builder::new()
            .suffix(".gz")
            .tempfile()
            .expect("temp file");
        junk.write_all(b"not gzip").expect("write");
        let error = read_lirs(junk.path()).expect_err("corrupt").to_string();
        assert!(error.contains("gzip"), "{error}");
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any line: a range no longer than the cap, or refused; never a panic.
        #[test]
        fn fuzz_arc_lines(line in "[0-9 \\-x]{0,60}") {
            if let Some(blocks) = arc_request(&line) {
                prop_assert!(blocks.end - blocks.start <= MAX_BLOCKS_PER_REQUEST);
            }
        }
    }

    /// The find: a count of 2^64 - 1 made the reader try to allocate every block.
    #[test]
    fn a_huge_count_is_refused_not_allocated() {
        assert_eq!(arc_request("0 18446744073709551615 0 0"), None);
        assert_eq!(arc_request("7 3 0 0"), Some(7..10));
    }
}
