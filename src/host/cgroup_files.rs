//! One cgroup's usage files, resolved once and kept open: the per-tick path of the containers
//! sampler.
//!
//! Resolving a cgroup's directories walks the mount table and the cgroup path; doing that
//! and building every file path again each tick cost more than the kernel's reads at 131
//! containers. A `CgroupReader` resolves once, keeps each file open, and re-reads with one
//! pread. Limits and cpusets are re-read every `LIMITS_MAX_AGE` (or at once after
//! `expire_readings`), PSI every `PSI_UPDATE_PERIOD`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::HostError;
use super::cgroups::{
    CgroupCounters, CgroupMounts, ProcCgroups, V1_UNLIMITED, cores, flat_keyed_value,
    parse_blkio_service_bytes, parse_cpu_max, parse_io_stat, parse_max, unusable,
};
use super::files::KeptFile;
use super::psi::{PSI_UPDATE_PERIOD, parse_psi};
use crate::model::{Pressure, UsageSource};

/// How stale a limit or placement reading (quota, shares, memory limit, cpuset) may be: they
/// change only when someone updates the container.
pub const LIMITS_MAX_AGE: Duration = Duration::from_secs(10);

/// The three PSI files of one cgroup (v2 dir, or the unified dir on a hybrid host).
#[derive(Debug)]
struct PsiFiles {
    cpu: KeptFile,
    memory: KeptFile,
    io: KeptFile,
}

impl PsiFiles {
    fn new(dir: &Path) -> Self {
        PsiFiles {
            cpu: KeptFile::new(dir.join("cpu.pressure")),
            memory: KeptFile::new(dir.join("memory.pressure")),
            io: KeptFile::new(dir.join("io.pressure")),
        }
    }

    fn read(&mut self, buffer: &mut Vec<u8>, max_age: Duration) -> Pressure {
        let mut one = |file: &mut KeptFile| {
            let text = optional(file.read_within(buffer, max_age))?;
            let parsed = parse_psi(text);
            if parsed.is_none() {
                tracing::debug!(path = %file.path().display(), "PSI file holds no usable line");
            }
            parsed
        };
        let mut pressure = Pressure {
            cpu: one(&mut self.cpu),
            memory: one(&mut self.memory),
            io: one(&mut self.io),
            read_at_ms: 0,
        };
        // Only a fresh read is known to be of now.
        let read_any = pressure.cpu.is_some() || pressure.memory.is_some() || pressure.io.is_some();
        if max_age.is_zero() && read_any {
            pressure.read_at_ms = super::now_ms();
        }
        pressure
    }

    fn expire(&mut self) {
        self.cpu.expire();
        self.memory.expire();
        self.io.expire();
    }
}

#[derive(Debug)]
struct V1Files {
    /// memory.usage_in_bytes: required; its absence means the cgroup is gone.
    usage: KeptFile,
    limit: KeptFile,
    memory_stat: KeptFile,
    /// Pages per NUMA node; read every `LIMITS_MAX_AGE`, since the kernel walks every page
    /// of the cgroup's LRU lists to fill it.
    numa_stat: KeptFile,
    cpuacct_usage: Option<KeptFile>,
    cpu_stat: Option<KeptFile>,
    quota: Option<KeptFile>,
    period: Option<KeptFile>,
    shares: Option<KeptFile>,
    /// The throttle counters count I/O on every block scheduler (the CFQ-only
    /// blkio.io_service_bytes stays empty on modern kernels); the recursive one when present.
    blkio: Option<KeptFile>,
    pids: Option<KeptFile>,
    cpuset_cpus: Option<KeptFile>,
    cpuset_mems: Option<KeptFile>,
    /// Hybrid hosts keep PSI only in the unified tree.
    psi: Option<PsiFiles>,
}

#[derive(Debug)]
struct V2Files {
    /// cpu.stat exists in every v2 cgroup: its absence means the cgroup is gone.
    cpu_stat: KeptFile,
    cpu_max: KeptFile,
    cpu_weight: KeptFile,
    memory_current: KeptFile,
    memory_max: KeptFile,
    memory_stat: KeptFile,
    /// Bytes per NUMA node; read every `LIMITS_MAX_AGE` (costly for the kernel).
    numa_stat: KeptFile,
    io_stat: KeptFile,
    pids: KeptFile,
    cpuset_cpus: KeptFile,
    cpuset_mems: KeptFile,
    psi: PsiFiles,
}

#[derive(Debug)]
enum Files {
    V1(Box<V1Files>),
    V2(Box<V2Files>),
}

/// Reads one cgroup's counters, tick after tick.
#[derive(Debug)]
pub struct CgroupReader {
    /// The cgroup path as the process sees it (memory controller's for v1).
    path: String,
    files: Files,
    buffer: Vec<u8>,
    /// The cgroup's cgroup.procs (memory controller's for v1).
    procs: PathBuf,
    /// How old a PSI reading may be: `PSI_UPDATE_PERIOD` (the averages change no faster),
    /// zero for cgroups whose stall totals are measured tick by tick (latency agents, whose
    /// fixes are validated on them).
    psi_max_age: Duration,
}

/// v1 directories of one process's cgroup, by controller (None where not mounted).
pub(crate) struct V1Dirs {
    pub memory: PathBuf,
    pub cpuacct: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub cpuset: Option<PathBuf>,
    pub unified: Option<PathBuf>,
}

impl CgroupReader {
    pub(crate) fn v1(path: &str, dirs: V1Dirs) -> Self {
        let file =
            |dir: &Option<PathBuf>, name: &str| dir.as_ref().map(|d| KeptFile::new(d.join(name)));
        let blkio = dirs.blkio.as_ref().map(|dir| {
            let recursive = dir.join("blkio.throttle.io_service_bytes_recursive");
            KeptFile::new(if recursive.exists() {
                recursive
            } else {
                dir.join("blkio.throttle.io_service_bytes")
            })
        });
        let files = V1Files {
            usage: KeptFile::new(dirs.memory.join("memory.usage_in_bytes")),
            limit: KeptFile::new(dirs.memory.join("memory.limit_in_bytes")),
            memory_stat: KeptFile::new(dirs.memory.join("memory.stat")),
            numa_stat: KeptFile::new(dirs.memory.join("memory.numa_stat")),
            cpuacct_usage: file(&dirs.cpuacct, "cpuacct.usage"),
            cpu_stat: file(&dirs.cpu, "cpu.stat"),
            quota: file(&dirs.cpu, "cpu.cfs_quota_us"),
            period: file(&dirs.cpu, "cpu.cfs_period_us"),
            shares: file(&dirs.cpu, "cpu.shares"),
            blkio,
            pids: file(&dirs.pids, "pids.current"),
            cpuset_cpus: file(&dirs.cpuset, "cpuset.cpus"),
            cpuset_mems: file(&dirs.cpuset, "cpuset.mems"),
            psi: dirs.unified.as_deref().map(PsiFiles::new),
        };
        CgroupReader {
            path: path.to_string(),
            procs: dirs.memory.join("cgroup.procs"),
            files: Files::V1(Box::new(files)),
            buffer: Vec::new(),
            psi_max_age: PSI_UPDATE_PERIOD,
        }
    }

    pub(crate) fn v2(path: &str, dir: &Path) -> Self {
        let first_present = |names: [&str; 2]| {
            let effective = dir.join(names[0]);
            KeptFile::new(if effective.exists() {
                effective
            } else {
                dir.join(names[1])
            })
        };
        let file = |name: &str| KeptFile::new(dir.join(name));
        let files = V2Files {
            cpu_stat: file("cpu.stat"),
            cpu_max: file("cpu.max"),
            cpu_weight: file("cpu.weight"),
            memory_current: file("memory.current"),
            memory_max: file("memory.max"),
            memory_stat: file("memory.stat"),
            numa_stat: file("memory.numa_stat"),
            io_stat: file("io.stat"),
            pids: file("pids.current"),
            cpuset_cpus: first_present(["cpuset.cpus.effective", "cpuset.cpus"]),
            cpuset_mems: first_present(["cpuset.mems.effective", "cpuset.mems"]),
            psi: PsiFiles::new(dir),
        };
        CgroupReader {
            path: path.to_string(),
            procs: dir.join("cgroup.procs"),
            files: Files::V2(Box::new(files)),
            buffer: Vec::new(),
            psi_max_age: PSI_UPDATE_PERIOD,
        }
    }

    /// Read the counters now. Missing optional files leave their field at its default; the
    /// cgroup gone (its required file unreadable) is an error naming the file.
    pub fn read(&mut self) -> Result<CgroupCounters, HostError> {
        let buffer = &mut self.buffer;
        let psi_max_age = self.psi_max_age;
        let mut c = CgroupCounters {
            path: self.path.clone(),
            ..CgroupCounters::default()
        };
        match &mut self.files {
            Files::V1(f) => {
                c.source = UsageSource::CgroupV1;
                c.memory_usage_bytes = f.usage.read(buffer)?.trim().parse().unwrap_or(0);
                c.memory_limit_bytes =
                    limit_u64(&mut f.limit, buffer).filter(|&limit| limit < V1_UNLIMITED);
                if let Some(text) = optional(f.memory_stat.read(buffer)) {
                    c.inactive_file_bytes = flat_keyed_value(text, "total_inactive_file")
                        .or_else(|| flat_keyed_value(text, "inactive_file"))
                        .unwrap_or(0);
                }
                c.cpu_usage_ns = f.cpuacct_usage.as_mut().and_then(|k| number(k, buffer));
                if let Some(text) = f.cpu_stat.as_mut().and_then(|k| optional(k.read(buffer))) {
                    c.nr_periods = flat_keyed_value(text, "nr_periods").unwrap_or(0);
                    c.nr_throttled = flat_keyed_value(text, "nr_throttled").unwrap_or(0);
                }
                let quota = f.quota.as_mut().and_then(|k| limit(k, buffer));
                let period = f.period.as_mut().and_then(|k| limit_u64(k, buffer));
                c.cpu_limit_cores = match (quota.map(|q| q.parse::<i64>()), period) {
                    (Some(Ok(quota)), Some(period)) => cores(quota, period),
                    _ => None,
                };
                c.cpu_weight = f.shares.as_mut().and_then(|k| limit_u64(k, buffer));
                if let Some(text) = f.blkio.as_mut().and_then(|k| optional(k.read(buffer))) {
                    (c.io_read_bytes, c.io_write_bytes) = parse_blkio_service_bytes(text);
                }
                c.pids = f.pids.as_mut().and_then(|k| number(k, buffer)).unwrap_or(0);
                c.cpuset_cpus = f
                    .cpuset_cpus
                    .as_mut()
                    .and_then(|k| limit(k, buffer))
                    .unwrap_or_default();
                c.cpuset_mems = f
                    .cpuset_mems
                    .as_mut()
                    .and_then(|k| limit(k, buffer))
                    .unwrap_or_default();
                if let Some(psi) = &mut f.psi {
                    c.pressure = psi.read(buffer, psi_max_age);
                }
            }
            Files::V2(f) => {
                c.source = UsageSource::CgroupV2;
                let stat = f.cpu_stat.read(buffer)?;
                c.cpu_usage_ns =
                    flat_keyed_value(stat, "usage_usec").map(|us| us.saturating_mul(1000));
                c.nr_periods = flat_keyed_value(stat, "nr_periods").unwrap_or(0);
                c.nr_throttled = flat_keyed_value(stat, "nr_throttled").unwrap_or(0);
                c.cpu_limit_cores = limit(&mut f.cpu_max, buffer).and_then(|t| parse_cpu_max(&t));
                c.cpu_weight = limit_u64(&mut f.cpu_weight, buffer);
                c.memory_usage_bytes = number(&mut f.memory_current, buffer).unwrap_or(0);
                c.memory_limit_bytes = limit(&mut f.memory_max, buffer).and_then(|t| parse_max(&t));
                if let Some(text) = optional(f.memory_stat.read(buffer)) {
                    c.inactive_file_bytes = flat_keyed_value(text, "inactive_file").unwrap_or(0);
                }
                if let Some(text) = optional(f.io_stat.read(buffer)) {
                    (c.io_read_bytes, c.io_write_bytes) = parse_io_stat(text);
                }
                c.pids = number(&mut f.pids, buffer).unwrap_or(0);
                c.cpuset_cpus = limit(&mut f.cpuset_cpus, buffer).unwrap_or_default();
                c.cpuset_mems = limit(&mut f.cpuset_mems, buffer).unwrap_or_default();
                c.pressure = f.psi.read(buffer, psi_max_age);
            }
        }
        Ok(c)
    }

    /// Bytes of the cgroup's memory on each NUMA node (index = node id), at most
    /// `LIMITS_MAX_AGE` old; empty when the kernel has no memory.numa_stat (no NUMA, or the
    /// file is unreadable).
    pub fn numa_memory_bytes(&mut self) -> Vec<u64> {
        let buffer = &mut self.buffer;
        match &mut self.files {
            Files::V1(f) => optional(f.numa_stat.read_within(buffer, LIMITS_MAX_AGE))
                .map(|text| parse_numa_stat_v1(text, super::page_size()))
                .unwrap_or_default(),
            Files::V2(f) => optional(f.numa_stat.read_within(buffer, LIMITS_MAX_AGE))
                .map(parse_numa_stat_v2)
                .unwrap_or_default(),
        }
    }

    /// The processes in the cgroup now (empty when the list cannot be read).
    pub fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(&self.procs)
            .map(|text| super::schedstat::parse_procs(&text))
            .unwrap_or_default()
    }

    /// Read PSI afresh on every `read` (true) or at most every `PSI_UPDATE_PERIOD` (false).
    pub fn set_psi_every_read(&mut self, every: bool) {
        self.psi_max_age = if every {
            Duration::ZERO
        } else {
            PSI_UPDATE_PERIOD
        };
    }

    /// Make limit, cpuset and PSI readings stale so the next `read` takes them afresh (after
    /// an event that may have changed them, such as `docker update`).
    pub fn expire_readings(&mut self) {
        let kept: Vec<&mut KeptFile> = match &mut self.files {
            Files::V1(f) => [
                Some(&mut f.limit),
                f.quota.as_mut(),
                f.period.as_mut(),
                f.shares.as_mut(),
                f.cpuset_cpus.as_mut(),
                f.cpuset_mems.as_mut(),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Files::V2(f) => vec![
                &mut f.cpu_max,
                &mut f.cpu_weight,
                &mut f.memory_max,
                &mut f.cpuset_cpus,
                &mut f.cpuset_mems,
            ],
        };
        for file in kept {
            file.expire();
        }
        match &mut self.files {
            Files::V1(f) => {
                if let Some(psi) = &mut f.psi {
                    psi.expire();
                }
            }
            Files::V2(f) => f.psi.expire(),
        }
    }
}

/// An optional file's text: `None` (debug log) when absent or unreadable.
fn optional<T>(result: Result<T, HostError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::debug!(%err, "optional cgroup file not readable");
            None
        }
    }
}

fn number(file: &mut KeptFile, buffer: &mut Vec<u8>) -> Option<u64> {
    let parsed = optional(file.read(buffer))?.trim().parse().ok();
    if parsed.is_none() {
        tracing::debug!(path = %file.path().display(), "cgroup file holds no number");
    }
    parsed
}

/// v1 memory.numa_stat as bytes per node: the hierarchical `total=` line (the cgroup and
/// its children, "hierarchical_total=" on kernels that print that instead) else the
/// cgroup's own `total=`, in pages, "N0=a N1=b" after the total. Nodes not named count 0.
pub fn parse_numa_stat_v1(text: &str, page_size: u64) -> Vec<u64> {
    let line = ["hierarchical_total=", "total="]
        .iter()
        .find_map(|prefix| text.lines().find(|line| line.starts_with(prefix)));
    let Some(line) = line else {
        return Vec::new();
    };
    let mut bytes = Vec::new();
    for (node, pages) in line.split_whitespace().skip(1).filter_map(node_field) {
        add_at(&mut bytes, node, pages.saturating_mul(page_size));
    }
    bytes
}

/// v2 memory.numa_stat as bytes per node: the "anon" and "file" lines ("anon N0=bytes
/// N1=bytes"), summed. Other lines (kernel stacks, slab...) are left out, as they are from
/// the usage figure the snapshot shows.
pub fn parse_numa_stat_v2(text: &str) -> Vec<u64> {
    let mut bytes = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if !matches!(words.next(), Some("anon" | "file")) {
            continue;
        }
        for (node, value) in words.filter_map(node_field) {
            add_at(&mut bytes, node, value);
        }
    }
    bytes
}

/// "N<node>=<number>", else `None` (debug log).
fn node_field(word: &str) -> Option<(usize, u64)> {
    let parsed = word.split_once('=').and_then(|(key, value)| {
        let node = key.strip_prefix('N')?.parse::<usize>().ok()?;
        // Node ids index a vector: refuse absurd ones rather than allocate for them.
        (node < 1024).then_some(())?;
        Some((node, value.parse::<u64>().ok()?))
    });
    if parsed.is_none() {
        tracing::debug!(word, "not a per-node field in memory.numa_stat");
    }
    parsed
}

fn add_at(values: &mut Vec<u64>, index: usize, amount: u64) {
    if values.len() <= index {
        values.resize(index + 1, 0);
    }
    values[index] = values[index].saturating_add(amount);
}

fn limit(file: &mut KeptFile, buffer: &mut Vec<u8>) -> Option<String> {
    optional(file.read_within(buffer, LIMITS_MAX_AGE)).map(|t| t.trim().to_string())
}

fn limit_u64(file: &mut KeptFile, buffer: &mut Vec<u8>) -> Option<u64> {
    limit(file, buffer)?.parse().ok()
}

// Made here rather than in `cgroups`, so that the parsers there need not know the reader.
impl CgroupMounts {
    /// A reader for the cgroup(s) a process is in: v1 when the memory controller is a v1
    /// hierarchy holding the process, else v2. Resolved once; read every tick.
    pub fn reader(&self, cg: &ProcCgroups) -> Result<CgroupReader, HostError> {
        if let (Some(_), Some(path)) = (self.v1.get("memory"), cg.v1.get("memory")) {
            let memory = self.v1_dir(cg, "memory").ok_or_else(|| unusable(path))?;
            let dirs = V1Dirs {
                memory,
                cpuacct: self.v1_dir(cg, "cpuacct"),
                cpu: self.v1_dir(cg, "cpu"),
                blkio: self.v1_dir(cg, "blkio"),
                pids: self.v1_dir(cg, "pids"),
                cpuset: self.v1_dir(cg, "cpuset"),
                unified: self.unified_dir(cg),
            };
            return Ok(CgroupReader::v1(path, dirs));
        }
        if let (Some(_), Some(path)) = (&self.unified, &cg.unified) {
            let dir = self.unified_dir(cg).ok_or_else(|| unusable(path))?;
            return Ok(CgroupReader::v2(path, &dir));
        }
        Err(HostError::Parse {
            path: PathBuf::from("/proc/<pid>/cgroup"),
            what: "no memory (v1) or unified (v2) cgroup for this process on a mounted hierarchy"
                .to_string(),
        })
    }

    /// Read the usage counters of the cgroup(s) a process is in, once. Missing optional files
    /// leave their field at its default; a missing cgroup (the container is gone) is an error.
    /// The tick path keeps a `CgroupReader` instead.
    pub fn read_counters(&self, cg: &ProcCgroups) -> Result<CgroupCounters, HostError> {
        self.reader(cg)?.read()
    }
}

#[cfg(test)]
mod numa_stat_tests {
    use super::*;

    #[test]
    fn v1_numa_stat_prefers_the_hierarchical_total_in_pages() {
        let text = "\
total=300 N0=100 N1=200
file=10 N0=10 N1=0
anon=290 N0=90 N1=200
unevictable=0 N0=0 N1=0
hierarchical_total=500 N0=100 N1=400
hierarchical_file=10 N0=10 N1=0
";
        assert_eq!(parse_numa_stat_v1(text, 4096), vec![100 * 4096, 400 * 4096]);
        let own_only = "total=3 N0=1 N2=2\nanon=3 N0=1 N2=2\n";
        assert_eq!(parse_numa_stat_v1(own_only, 4096), vec![4096, 0, 2 * 4096]);
    }

    #[test]
    fn v1_numa_stat_odd_lines_are_skipped() {
        assert!(parse_numa_stat_v1("", 4096).is_empty());
        assert!(parse_numa_stat_v1("anon=1 N0=1\n", 4096).is_empty());
        let odd = "garbage\ntotal=9 N0=x N1=4 Nq=3 N99999=1 =2 N0\n";
        assert_eq!(parse_numa_stat_v1(odd, 1), vec![0, 4]);
    }

    #[test]
    fn v2_numa_stat_sums_anon_and_file_bytes() {
        let text = "\
anon N0=1048576 N1=3145728
file N0=4096 N1=0
kernel_stack N0=16384 N1=16384
shmem N0=0 N1=0
anon_thp N0=0 N1=2097152
";
        assert_eq!(parse_numa_stat_v2(text), vec![1_048_576 + 4096, 3_145_728]);
        assert!(parse_numa_stat_v2("").is_empty());
        assert!(parse_numa_stat_v2("slab N0=5\n").is_empty());
        let odd = "anon\nanon N0=x N1=8 junk\nfileX N0=5\nfile N0=2\n";
        assert_eq!(parse_numa_stat_v2(odd), vec![2, 8]);
    }

    #[test]
    fn readers_give_per_node_bytes_and_empty_without_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("memory.numa_stat"), "anon N0=10 N1=20\n").expect("write");
        let mut v2 = CgroupReader::v2("/x", dir.path());
        assert_eq!(v2.numa_memory_bytes(), vec![10, 20]);
        let mut missing = CgroupReader::v2("/y", &dir.path().join("gone"));
        assert!(missing.numa_memory_bytes().is_empty());
    }
}
