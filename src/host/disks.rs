//! Block device I/O from /proc/diskstats: rates, utilisation, queue depth and await, the
//! figures `iostat -x` shows. Each line is parsed by procfs-core's `DiskStat::from_line`, so
//! a line it refuses is skipped alone.

use std::path::PathBuf;
use std::time::Duration;

use crate::host::counter_rate;
use crate::host::{HostError, HostRoots, NamedReading, rates_by_name, read_to_string};
use crate::model::DiskStat;

/// Bytes per sector in /proc/diskstats, whatever the device's real sector size.
const SECTOR_BYTES: f64 = 512.0;

/// The diskstats counters we use for one device, since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    pub reads: u64,
    pub read_sectors: u64,
    pub read_ms: u64,
    pub writes: u64,
    pub write_sectors: u64,
    pub write_ms: u64,
    /// Milliseconds with at least one request in flight.
    pub io_ticks_ms: u64,
    /// Sum over requests of their time in flight, milliseconds.
    pub weighted_ms: u64,
}

/// Parse /proc/diskstats into (device name, counters) in file order. Lines with fewer than
/// the 14 classic fields or a garbage number are skipped.
pub fn parse_diskstats(text: &str) -> Vec<(String, DiskCounters)> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let parsed = parse_diskstats_line(line);
            if parsed.is_none() {
                tracing::debug!("skipping malformed diskstats line");
            }
            parsed
        })
        .collect()
}

fn parse_diskstats_line(line: &str) -> Option<(String, DiskCounters)> {
    let disk = procfs_core::DiskStat::from_line(line).ok()?;
    Some((
        disk.name,
        DiskCounters {
            reads: disk.reads,
            read_sectors: disk.sectors_read,
            read_ms: disk.time_reading,
            writes: disk.writes,
            write_sectors: disk.sectors_written,
            write_ms: disk.time_writing,
            io_ticks_ms: disk.time_in_progress,
            weighted_ms: disk.weighted_time_in_progress,
        },
    ))
}

/// Virtual devices that would only add noise: loop mounts, ram disks, compressed swap.
fn is_virtual(name: &str) -> bool {
    ["loop", "ram", "zram"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Figures for one device between two readings `elapsed` apart. A counter that went backwards
/// (device replaced under the same name) gives 0 for what depends on it.
pub fn disk_stat_between(
    name: &str,
    prev: &DiskCounters,
    cur: &DiskCounters,
    elapsed: Duration,
) -> DiskStat {
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    let delta = |a: u64, b: u64| b.saturating_sub(a);
    let ios = delta(prev.reads, cur.reads) + delta(prev.writes, cur.writes);
    let io_ms = delta(prev.read_ms, cur.read_ms) + delta(prev.write_ms, cur.write_ms);
    let share_of_interval = |ms: u64| {
        if elapsed_ms > 0.0 {
            ms as f64 / elapsed_ms
        } else {
            0.0
        }
    };
    DiskStat {
        name: name.to_string(),
        reads_per_sec: counter_rate(prev.reads, cur.reads, elapsed),
        writes_per_sec: counter_rate(prev.writes, cur.writes, elapsed),
        read_bytes_per_sec: counter_rate(prev.read_sectors, cur.read_sectors, elapsed)
            * SECTOR_BYTES,
        write_bytes_per_sec: counter_rate(prev.write_sectors, cur.write_sectors, elapsed)
            * SECTOR_BYTES,
        util_pct: (share_of_interval(delta(prev.io_ticks_ms, cur.io_ticks_ms)) * 100.0)
            .clamp(0.0, 100.0) as f32,
        queue_depth: share_of_interval(delta(prev.weighted_ms, cur.weighted_ms)) as f32,
        await_ms: if ios > 0 {
            (io_ms as f64 / ios as f64) as f32
        } else {
            0.0
        },
    }
}

/// Samples whole block devices; keeps the previous reading for rates.
pub struct DiskSampler {
    diskstats_path: PathBuf,
    block_dir: PathBuf,
    prev: NamedReading<DiskCounters>,
}

impl DiskSampler {
    pub fn new(roots: &HostRoots) -> Self {
        DiskSampler {
            diskstats_path: roots.proc.join("diskstats"),
            block_dir: roots.sys.join("block"),
            prev: None,
        }
    }

    /// Whole devices only: partitions have no sys/block/<name> entry. sysfs spells a '/' in
    /// a device name (cciss/c0d0) as '!'.
    fn is_whole_device(&self, name: &str) -> bool {
        !is_virtual(name) && self.block_dir.join(name.replace('/', "!")).exists()
    }

    /// One reading, in file order. Rates are 0 on the first call and for a new device.
    pub fn sample(&mut self) -> Result<Vec<DiskStat>, HostError> {
        let text = read_to_string(&self.diskstats_path)?;
        let current: Vec<(String, DiskCounters)> = parse_diskstats(&text)
            .into_iter()
            .filter(|(name, _)| self.is_whole_device(name))
            .collect();
        let stats = rates_by_name(&mut self.prev, current, disk_stat_between);
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = " 254       0 vda 35272 6621 3780338 15491 9149 24126 3660864 17146 0 4888 33123 4579 34 286032 435 1124 50";

    #[test]
    fn parses_kernel_line_with_extra_fields() {
        let parsed = parse_diskstats(LINE);
        assert_eq!(parsed.len(), 1);
        let (name, c) = &parsed[0];
        assert_eq!(name, "vda");
        assert_eq!(
            *c,
            DiskCounters {
                reads: 35272,
                read_sectors: 3780338,
                read_ms: 15491,
                writes: 9149,
                write_sectors: 3660864,
                write_ms: 17146,
                io_ticks_ms: 4888,
                weighted_ms: 33123,
            }
        );
    }

    #[test]
    fn short_and_garbage_lines_are_skipped() {
        let text = format!(
            "8 0 sda 1 2 3\n8 0 sdb 1 2 x 4 5 6 7 8 9 10 11\nx y sdc 1 2 3 4 5 6 7 8 9 10 11\n\n{LINE}\n"
        );
        let parsed = parse_diskstats(&text);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, "vda");
        assert!(parse_diskstats("").is_empty());
    }

    #[test]
    fn iostat_figures_from_a_delta() {
        let prev = DiskCounters::default();
        let cur = DiskCounters {
            reads: 100,
            read_sectors: 2048,
            read_ms: 300,
            writes: 50,
            write_sectors: 1024,
            write_ms: 150,
            io_ticks_ms: 500,
            weighted_ms: 2000,
        };
        let stat = disk_stat_between("sda", &prev, &cur, Duration::from_secs(1));
        assert_eq!(stat.reads_per_sec, 100.0);
        assert_eq!(stat.writes_per_sec, 50.0);
        assert_eq!(stat.read_bytes_per_sec, 2048.0 * 512.0);
        assert_eq!(stat.write_bytes_per_sec, 1024.0 * 512.0);
        assert_eq!(stat.util_pct, 50.0);
        assert_eq!(stat.queue_depth, 2.0);
        assert_eq!(stat.await_ms, 3.0);
    }

    #[test]
    fn backwards_counters_and_idle_devices_give_zero() {
        let prev = DiskCounters {
            reads: 10,
            io_ticks_ms: 5000,
            ..DiskCounters::default()
        };
        let stat = disk_stat_between(
            "sda",
            &prev,
            &DiskCounters::default(),
            Duration::from_secs(1),
        );
        assert_eq!(stat.reads_per_sec, 0.0);
        assert_eq!(stat.util_pct, 0.0);
        assert_eq!(stat.await_ms, 0.0);
        let stat = disk_stat_between("sda", &prev, &prev, Duration::ZERO);
        assert_eq!(stat.util_pct, 0.0);
        assert_eq!(stat.queue_depth, 0.0);
    }

    #[test]
    fn sampler_keeps_whole_real_devices_only() {
        let dir = tempfile::tempdir().unwrap();
        let roots = HostRoots::under(dir.path());
        std::fs::create_dir_all(&roots.proc).unwrap();
        for dev in ["sda", "loop0", "zram0", "ram0"] {
            std::fs::create_dir_all(roots.sys.join("block").join(dev)).unwrap();
        }
        std::fs::write(
            roots.proc.join("diskstats"),
            "8 0 sda 1 0 8 1 1 0 8 1 0 1 2\n8 1 sda1 1 0 8 1 1 0 8 1 0 1 2\n\
             7 0 loop0 1 0 8 1 1 0 8 1 0 1 2\n252 0 zram0 1 0 8 1 1 0 8 1 0 1 2\n\
             1 0 ram0 1 0 8 1 1 0 8 1 0 1 2\n",
        )
        .unwrap();
        let mut sampler = DiskSampler::new(&roots);
        let first = sampler.sample().unwrap();
        assert_eq!(
            first,
            vec![DiskStat {
                name: "sda".to_string(),
                ..DiskStat::default()
            }]
        );
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(
            roots.proc.join("diskstats"),
            "8 0 sda 11 0 8 1 1 0 8 1 0 1 2\n",
        )
        .unwrap();
        let second = sampler.sample().unwrap();
        assert_eq!(second.len(), 1);
        assert!(second[0].reads_per_sec > 0.0);
    }
}
