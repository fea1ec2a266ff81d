//! Pressure stall information (PSI): how much wall time tasks spent waiting for CPU, memory
//! or I/O. The kernel's own averages (avg10/60/300) are used as is; recomputing them from
//! `total` would only add noise.
//!
//! Parsed by hand, for /proc/pressure/* and the cgroup *.pressure files alike (one format).
//! procfs-core's `CpuPressure` and kin require a `full` line, which /proc/pressure/cpu lacks
//! before Linux 5.13; its `parse_pressure_record` slices `line[5..]` unchecked (a panic on a
//! bare "some"); and this parser runs on every container's three pressure files every tick,
//! where procfs-core's per-line map took 890 ns a file against 280 ns here
//! (`cargo bench --bench proc_parsers`).

use std::path::Path;
use std::time::Duration;

use crate::host::{HostRoots, read_optional};
use crate::model::{Pressure, PsiLine, PsiResource};

/// Parse one PSI file: a "some ..." line and an optional "full ..." line. `None` when there is
/// no usable "some" line (empty file, garbage); a malformed "full" line only drops `full`.
pub fn parse_psi(text: &str) -> Option<PsiResource> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => {
                if !line.trim().is_empty() {
                    tracing::debug!("skipping PSI line with unknown kind");
                }
                continue;
            }
        };
        match parse_psi_fields(words) {
            Some(parsed) => *slot = Some(parsed),
            None => tracing::debug!("skipping malformed PSI line"),
        }
    }
    some.map(|some| PsiResource { some, full })
}

/// The four `key=value` fields of a PSI line; all of them must be present and numeric, since a
/// half-read line would show a stall figure the kernel never reported.
fn parse_psi_fields<'a>(words: impl Iterator<Item = &'a str>) -> Option<PsiLine> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for word in words {
        let (key, value) = word.split_once('=')?;
        match key {
            "avg10" => avg10 = Some(parse_percent(value)?),
            "avg60" => avg60 = Some(parse_percent(value)?),
            "avg300" => avg300 = Some(parse_percent(value)?),
            "total" => total = Some(value.parse::<u64>().ok()?),
            // Future kernels may add fields; they do not invalidate the ones we know.
            _ => {}
        }
    }
    Some(PsiLine {
        avg10: avg10?,
        avg60: avg60?,
        avg300: avg300?,
        total_us: total?,
    })
}

fn parse_percent(value: &str) -> Option<f32> {
    value
        .parse::<f32>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// System-wide pressure from proc/pressure/{cpu,memory,io}; each is `None` where the kernel
/// lacks PSI (disabled at build or boot) or the file is unreadable.
pub fn read_system_pressure(roots: &HostRoots) -> Pressure {
    let dir = roots.proc.join("pressure");
    let mut pressure = Pressure {
        cpu: read_psi_file(&dir.join("cpu")),
        memory: read_psi_file(&dir.join("memory")),
        io: read_psi_file(&dir.join("io")),
        read_at_ms: 0,
    };
    // A time only for something read: a host without PSI keeps the empty default.
    if pressure.cpu.is_some() || pressure.memory.is_some() || pressure.io.is_some() {
        pressure.read_at_ms = super::now_ms();
    }
    pressure
}

/// The kernel recomputes the PSI averages every 2 seconds; reading more often finds the
/// same avg10/avg60/avg300.
pub const PSI_UPDATE_PERIOD: Duration = Duration::from_secs(2);

fn read_psi_file(path: &Path) -> Option<PsiResource> {
    let parsed = parse_psi(&read_optional(path)?);
    if parsed.is_none() {
        tracing::debug!(path = %path.display(), "PSI file holds no usable \"some\" line");
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let text = "some avg10=1.50 avg60=0.25 avg300=0.01 total=14793950\n\
                    full avg10=0.10 avg60=0.00 avg300=0.00 total=42\n";
        let psi = parse_psi(text).unwrap();
        assert_eq!(psi.some.avg10, 1.5);
        assert_eq!(psi.some.avg60, 0.25);
        assert_eq!(psi.some.avg300, 0.01);
        assert_eq!(psi.some.total_us, 14_793_950);
        let full = psi.full.unwrap();
        assert_eq!(full.avg10, 0.1);
        assert_eq!(full.total_us, 42);
    }

    #[test]
    fn full_line_is_optional() {
        let psi = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=7").unwrap();
        assert_eq!(psi.some.total_us, 7);
        assert_eq!(psi.full, None);
    }

    #[test]
    fn malformed_full_line_keeps_some() {
        let text = "some avg10=2.00 avg60=1.00 avg300=0.50 total=9\nfull avg10=x avg60=0 avg300=0 total=1\n";
        let psi = parse_psi(text).unwrap();
        assert_eq!(psi.some.avg10, 2.0);
        assert_eq!(psi.full, None);
    }

    #[test]
    fn odd_input_gives_none_not_panic() {
        assert_eq!(parse_psi(""), None);
        assert_eq!(parse_psi("\n\n"), None);
        assert_eq!(parse_psi("garbage"), None);
        assert_eq!(parse_psi("some"), None);
        assert_eq!(parse_psi("some avg10=1.00 avg60=1.00 total=3"), None);
        assert_eq!(
            parse_psi("some avg10=1.00 avg60=1.00 avg300=1.00 total=-3"),
            None
        );
        assert_eq!(
            parse_psi("some avg10=NaN avg60=1.00 avg300=1.00 total=3"),
            None
        );
        assert_eq!(parse_psi("some avg10 avg60=1 avg300=1 total=3"), None);
    }

    #[test]
    fn unknown_fields_and_lines_are_ignored() {
        let text = "weird line\nsome avg10=3.00 avg60=2.00 avg300=1.00 total=5 extra=1\n";
        let psi = parse_psi(text).unwrap();
        assert_eq!(psi.some.avg10, 3.0);
        assert_eq!(psi.some.total_us, 5);
    }
}
