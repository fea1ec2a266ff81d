//! CPU usage from /proc/stat deltas, plus load averages from /proc/loadavg.
//!
//! /proc/stat holds counters since boot, so a figure needs two readings. The sampler keeps the
//! previous reading; the arithmetic lives in pure functions (`cpu_snapshot`, `times_between`)
//! so it can be tested without a clock or a kernel.
//!
//! /proc/loadavg is parsed by procfs-core's `LoadAverage`. /proc/stat is parsed by hand:
//! procfs-core's `KernelStats` lists the per-CPU lines by position, not by CPU number (wrong
//! once a CPU is offline, since the kernel leaves its line out) and has no `intr` total.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use procfs_core::FromRead;

use crate::host::{HostError, HostRoots, counter_rate, read_optional, read_to_string};
use crate::model::{CpuSnapshot, CpuTimes};

/// One `cpu` line of /proc/stat, in clock ticks since boot. guest and guest_nice are left
/// out on purpose: the kernel already counts them inside user and nice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuCounters {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

/// What one reading of /proc/stat holds; fields the file lacked stay `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcStat {
    /// The aggregate "cpu" line.
    pub total: Option<CpuCounters>,
    /// "cpuN" lines by N.
    pub per_cpu: BTreeMap<u32, CpuCounters>,
    pub ctxt: Option<u64>,
    /// The "processes" line: forks since boot.
    pub forks: Option<u64>,
    /// First number of the "intr" line: all interrupts since boot.
    pub interrupts: Option<u64>,
    pub procs_running: Option<u32>,
    pub procs_blocked: Option<u32>,
}

/// The three load averages of /proc/loadavg.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadAvg {
    pub load1: f32,
    pub load5: f32,
    pub load15: f32,
}

/// Parse /proc/stat. Lines that are short or hold garbage numbers are skipped (debug log).
pub fn parse_proc_stat(text: &str) -> ProcStat {
    let mut stat = ProcStat::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(key) = words.next() else { continue };
        let first_number = || words.clone().next().and_then(|w| w.parse::<u64>().ok());
        match key {
            "ctxt" => stat.ctxt = first_number(),
            "processes" => stat.forks = first_number(),
            "intr" => stat.interrupts = first_number(),
            "procs_running" => stat.procs_running = first_number().and_then(to_u32),
            "procs_blocked" => stat.procs_blocked = first_number().and_then(to_u32),
            _ => {
                if let Some(which) = key.strip_prefix("cpu") {
                    parse_cpu_line(which, words, &mut stat);
                }
            }
        }
    }
    stat
}

fn to_u32(n: u64) -> Option<u32> {
    u32::try_from(n).ok()
}

fn parse_cpu_line<'a>(which: &str, words: impl Iterator<Item = &'a str>, stat: &mut ProcStat) {
    let Some(counters) = parse_cpu_counters(words) else {
        tracing::debug!(cpu = which, "skipping malformed /proc/stat cpu line");
        return;
    };
    if which.is_empty() {
        stat.total = Some(counters);
    } else if let Ok(id) = which.parse::<u32>() {
        stat.per_cpu.insert(id, counters);
    } else {
        tracing::debug!("skipping /proc/stat line with an odd cpu label");
    }
}

/// The counters of a cpu line. Kernels before 2.6 print only the first four, so the rest
/// default to 0; any field that is not a number spoils the whole line.
fn parse_cpu_counters<'a>(words: impl Iterator<Item = &'a str>) -> Option<CpuCounters> {
    let mut values = [0u64; 8];
    let mut count = 0;
    for (slot, word) in values.iter_mut().zip(words) {
        *slot = word.parse().ok()?;
        count += 1;
    }
    if count < 4 {
        return None;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = values;
    Some(CpuCounters {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
    })
}

/// Parse /proc/loadavg ("0.07 0.18 0.14 1/103 7984", all five fields, as every kernel prints
/// them); `None` when it is not that or an average is negative or not finite.
pub fn parse_loadavg(text: &str) -> Option<LoadAvg> {
    let load = procfs_core::LoadAverage::from_read(text.as_bytes()).ok()?;
    // f32 parsing takes "inf" and "NaN", which no kernel prints.
    let sane = |v: f32| (v.is_finite() && v >= 0.0).then_some(v);
    Some(LoadAvg {
        load1: sane(load.one)?,
        load5: sane(load.five)?,
        load15: sane(load.fifteen)?,
    })
}

/// Shares of time between two readings of one CPU, in percent. `None` when there is no data:
/// no tick elapsed, or a counter went backwards because the CPU was unplugged and came back.
/// iowait alone is clamped, since the kernel documents that it may decrease on a live CPU.
pub fn times_between(prev: &CpuCounters, cur: &CpuCounters) -> Option<CpuTimes> {
    let strict = |a: u64, b: u64| b.checked_sub(a);
    let user = strict(prev.user, cur.user)?;
    let nice = strict(prev.nice, cur.nice)?;
    let system = strict(prev.system, cur.system)?;
    let idle = strict(prev.idle, cur.idle)?;
    let iowait = cur.iowait.saturating_sub(prev.iowait);
    let irq = strict(prev.irq, cur.irq)?;
    let softirq = strict(prev.softirq, cur.softirq)?;
    let steal = strict(prev.steal, cur.steal)?;
    let sum = [user, nice, system, idle, iowait, irq, softirq, steal]
        .iter()
        .fold(0u64, |acc, v| acc.saturating_add(*v));
    if sum == 0 {
        return None;
    }
    let pct = |v: u64| (v as f64 * 100.0 / sum as f64) as f32;
    Some(CpuTimes {
        user: pct(user),
        nice: pct(nice),
        system: pct(system),
        iowait: pct(iowait),
        irq: pct(irq),
        softirq: pct(softirq),
        steal: pct(steal),
        idle: pct(idle),
    })
}

/// Build the snapshot from the previous reading (with the time since it) and the current one.
/// Without a previous reading only the instantaneous figures (load, runnable) are filled.
pub fn cpu_snapshot(
    prev: Option<(&ProcStat, Duration)>,
    cur: &ProcStat,
    load: LoadAvg,
) -> CpuSnapshot {
    let mut snapshot = CpuSnapshot {
        load1: load.load1,
        load5: load.load5,
        load15: load.load15,
        runnable: cur.procs_running.unwrap_or(0),
        blocked: cur.procs_blocked.unwrap_or(0),
        ..CpuSnapshot::default()
    };
    let Some((prev, elapsed)) = prev else {
        return snapshot;
    };
    if let (Some(a), Some(b)) = (&prev.total, &cur.total) {
        snapshot.total = times_between(a, b).unwrap_or_default();
    }
    snapshot.per_cpu = cur
        .per_cpu
        .iter()
        .filter_map(|(id, now)| {
            let before = prev.per_cpu.get(id)?;
            Some((*id, times_between(before, now)?))
        })
        .collect();
    let rate = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => counter_rate(a, b, elapsed),
        _ => 0.0,
    };
    snapshot.ctxt_per_sec = rate(prev.ctxt, cur.ctxt);
    snapshot.forks_per_sec = rate(prev.forks, cur.forks);
    snapshot.interrupts_per_sec = rate(prev.interrupts, cur.interrupts);
    snapshot
}

/// Samples /proc/stat, /proc/loadavg and the online CPU list; keeps the previous reading for
/// deltas.
pub struct CpuSampler {
    stat_path: PathBuf,
    loadavg_path: PathBuf,
    online_path: PathBuf,
    prev: Option<(ProcStat, Instant)>,
}

impl CpuSampler {
    pub fn new(roots: &HostRoots) -> Self {
        CpuSampler {
            stat_path: roots.proc.join("stat"),
            loadavg_path: roots.proc.join("loadavg"),
            online_path: roots.sys.join("devices/system/cpu/online"),
            prev: None,
        }
    }

    /// One reading. The first call has no interval: per_cpu is empty, total and rates are 0.
    pub fn sample(&mut self) -> Result<CpuSnapshot, HostError> {
        let cur = parse_proc_stat(&read_to_string(&self.stat_path)?);
        if cur.total.is_none() && cur.per_cpu.is_empty() {
            return Err(HostError::Parse {
                path: self.stat_path.clone(),
                what: "no usable cpu line".to_string(),
            });
        }
        let load = read_optional(&self.loadavg_path)
            .and_then(|text| parse_loadavg(&text))
            .unwrap_or_default();
        let now = Instant::now();
        let prev = self
            .prev
            .as_ref()
            .map(|(stat, at)| (stat, now.saturating_duration_since(*at)));
        let mut snapshot = cpu_snapshot(prev, &cur, load);
        snapshot.online = read_optional(&self.online_path).map(|text| super::parse_cpu_list(&text));
        self.prev = Some((cur, now));
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_A: &str = "cpu  100 0 100 800 0 0 0 0 0 0\n\
cpu0 50 0 50 400 0 0 0 0 0 0\n\
cpu1 50 0 50 400 0 0 0 0 0 0\n\
intr 1000 0 0 5\n\
ctxt 5000\n\
btime 1795757948\n\
processes 300\n\
procs_running 3\n\
procs_blocked 1\n";

    const STAT_B: &str = "cpu  200 0 120 880 0 0 0 0 0 0\n\
cpu0 100 0 50 450 0 0 0 0 0 0\n\
cpu1 100 0 70 430 0 0 0 0 0 0\n\
intr 3000 0 0 5\n\
ctxt 7000\n\
processes 310\n\
procs_running 5\n\
procs_blocked 0\n";

    #[test]
    fn parses_every_field() {
        let stat = parse_proc_stat(STAT_A);
        assert_eq!(
            stat.total,
            Some(CpuCounters {
                user: 100,
                system: 100,
                idle: 800,
                ..CpuCounters::default()
            })
        );
        assert_eq!(stat.per_cpu.len(), 2);
        assert_eq!(stat.per_cpu[&1].idle, 400);
        assert_eq!(stat.ctxt, Some(5000));
        assert_eq!(stat.forks, Some(300));
        assert_eq!(stat.interrupts, Some(1000));
        assert_eq!(stat.procs_running, Some(3));
        assert_eq!(stat.procs_blocked, Some(1));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "cpu0 1 2\ncpu1 1 2 x 4\ncpuX 1 2 3 4\ncpu2 1 2 3 4\ncpu\nctxt abc\nprocesses\n\n   \nintr\n";
        let stat = parse_proc_stat(text);
        assert_eq!(stat.total, None);
        assert_eq!(stat.per_cpu.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(
            stat.per_cpu[&2],
            CpuCounters {
                user: 1,
                nice: 2,
                system: 3,
                idle: 4,
                ..CpuCounters::default()
            }
        );
        assert_eq!(stat.ctxt, None);
        assert_eq!(stat.forks, None);
        assert_eq!(stat.interrupts, None);
        assert_eq!(parse_proc_stat(""), ProcStat::default());
    }

    #[test]
    fn loadavg_parses_and_rejects_garbage() {
        assert_eq!(
            parse_loadavg("0.07 0.18 1.50 1/103 7984\n"),
            Some(LoadAvg {
                load1: 0.07,
                load5: 0.18,
                load15: 1.5
            })
        );
        assert_eq!(parse_loadavg("0.07 0.18"), None);
        assert_eq!(parse_loadavg("a b c"), None);
        assert_eq!(parse_loadavg("a b c 1/2 3"), None);
        assert_eq!(parse_loadavg("inf 0.1 0.1 1/2 3"), None);
        assert_eq!(parse_loadavg("-1 0.1 0.1 1/2 3"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn first_snapshot_has_no_interval_but_has_load() {
        let cur = parse_proc_stat(STAT_A);
        let load = LoadAvg {
            load1: 1.0,
            load5: 2.0,
            load15: 3.0,
        };
        let snap = cpu_snapshot(None, &cur, load);
        assert!(snap.per_cpu.is_empty());
        assert_eq!(snap.total, CpuTimes::default());
        assert_eq!(snap.ctxt_per_sec, 0.0);
        assert_eq!(snap.load5, 2.0);
        assert_eq!(snap.runnable, 3);
        assert_eq!(snap.blocked, 1);
    }

    #[test]
    fn deltas_give_percent_and_rates() {
        let a = parse_proc_stat(STAT_A);
        let b = parse_proc_stat(STAT_B);
        let snap = cpu_snapshot(Some((&a, Duration::from_secs(2))), &b, LoadAvg::default());
        // Total: user +100, system +20, idle +80 of 200 ticks.
        assert_eq!(snap.total.user, 50.0);
        assert_eq!(snap.total.system, 10.0);
        assert_eq!(snap.total.idle, 40.0);
        assert_eq!(snap.per_cpu.len(), 2);
        let (id0, cpu0) = snap.per_cpu[0];
        assert_eq!(id0, 0);
        assert_eq!(cpu0.user, 50.0);
        assert_eq!(cpu0.idle, 50.0);
        let (_, cpu1) = snap.per_cpu[1];
        assert_eq!(cpu1.user, 50.0);
        assert_eq!(cpu1.system, 20.0);
        assert_eq!(cpu1.idle, 30.0);
        assert_eq!(snap.ctxt_per_sec, 1000.0);
        assert_eq!(snap.forks_per_sec, 5.0);
        assert_eq!(snap.interrupts_per_sec, 1000.0);
        assert_eq!(snap.runnable, 5);
    }

    #[test]
    fn counter_going_backwards_is_no_data_not_underflow() {
        let a = parse_proc_stat(STAT_A);
        // cpu1 was unplugged and came back: its counters restarted.
        let b = parse_proc_stat("cpu0 60 0 50 490 0 0 0 0\ncpu1 1 0 1 10 0 0 0 0\nctxt 10\n");
        let snap = cpu_snapshot(Some((&a, Duration::from_secs(1))), &b, LoadAvg::default());
        assert_eq!(snap.per_cpu.len(), 1);
        assert_eq!(snap.per_cpu[0].0, 0);
        assert_eq!(snap.per_cpu[0].1.user, 10.0);
        assert_eq!(snap.ctxt_per_sec, 0.0);
        assert_eq!(snap.total, CpuTimes::default());
    }

    #[test]
    fn iowait_decrease_is_clamped_and_zero_interval_is_no_data() {
        let a = CpuCounters {
            user: 10,
            idle: 10,
            iowait: 5,
            ..CpuCounters::default()
        };
        let b = CpuCounters {
            user: 20,
            idle: 20,
            iowait: 4,
            ..CpuCounters::default()
        };
        let times = times_between(&a, &b).unwrap();
        assert_eq!(times.user, 50.0);
        assert_eq!(times.iowait, 0.0);
        assert_eq!(times_between(&a, &a), None);
    }

    #[test]
    fn rate_is_zero_on_reset_or_zero_interval() {
        assert_eq!(counter_rate(10, 30, Duration::from_millis(500)), 40.0);
        assert_eq!(counter_rate(30, 10, Duration::from_secs(1)), 0.0);
        assert_eq!(counter_rate(10, 30, Duration::ZERO), 0.0);
    }

    #[test]
    fn sampler_errors_on_missing_or_cpu_less_stat() {
        let dir = tempfile::tempdir().unwrap();
        let roots = HostRoots::under(dir.path());
        let mut sampler = CpuSampler::new(&roots);
        assert!(matches!(sampler.sample(), Err(HostError::Io { .. })));
        std::fs::create_dir_all(&roots.proc).unwrap();
        std::fs::write(roots.proc.join("stat"), "ctxt 5\n").unwrap();
        assert!(matches!(sampler.sample(), Err(HostError::Parse { .. })));
        std::fs::write(roots.proc.join("stat"), STAT_A).unwrap();
        let first = sampler.sample().unwrap();
        assert!(first.per_cpu.is_empty());
        assert_eq!(first.load1, 0.0);
        std::fs::write(roots.proc.join("stat"), STAT_B).unwrap();
        let second = sampler.sample().unwrap();
        assert_eq!(second.per_cpu.len(), 2);
        assert_eq!(second.total.user, 50.0);
        assert!(second.ctxt_per_sec > 0.0);
    }
}
