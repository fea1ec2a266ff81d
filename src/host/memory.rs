//! Memory: /proc/meminfo levels, /proc/vmstat rates (swapping, major faults), transparent huge
//! pages and KSM settings, per-NUMA-node totals, and the vm.* sysctls and cpufreq governors
//! the system-knob strategies compare against.

use std::collections::BTreeMap;

use std::time::{Duration, Instant};

use crate::host::{
    HostError, HostRoots, counter_rate, numbered_dirs, read_optional, read_to_string,
};
use crate::model::{CpuGovernor, KsmStats, MemorySnapshot, NodeMemory, Tunables};

/// Parse "Key:   value [kB]" lines (proc/meminfo) into key -> value. Node meminfo lines
/// ("Node 0 MemTotal:  N kB") give the same keys: the key is the last word before the colon.
/// Lines without a numeric value are skipped.
pub fn parse_kb_fields(text: &str) -> BTreeMap<String, u64> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(':') else {
            if !line.trim().is_empty() {
                tracing::debug!("skipping meminfo line without a colon");
            }
            continue;
        };
        let key = left.split_whitespace().last();
        let value = right
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok());
        match (key, value) {
            (Some(key), Some(value)) => {
                fields.insert(key.to_string(), value);
            }
            _ => tracing::debug!("skipping malformed meminfo line"),
        }
    }
    fields
}

/// Parse "name value" lines (proc/vmstat, ksm-style files) into name -> value.
pub fn parse_vmstat(text: &str) -> BTreeMap<String, u64> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some(key), Some(value)) => {
                fields.insert(key.to_string(), value);
            }
            (None, _) => {}
            _ => tracing::debug!("skipping malformed vmstat line"),
        }
    }
    fields
}

/// The selected word of a sysfs choice file: "always [madvise] never" -> "madvise".
pub fn bracketed_word(text: &str) -> Option<String> {
    let (_, after) = text.split_once('[')?;
    let (word, _) = after.split_once(']')?;
    let word = word.trim();
    (!word.is_empty()).then(|| word.to_string())
}

/// The vmstat counters whose rates the snapshot shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmCounters {
    pub pswpin: u64,
    pub pswpout: u64,
    pub pgmajfault: u64,
}

impl VmCounters {
    fn from_fields(fields: &BTreeMap<String, u64>) -> Self {
        let get = |key: &str| fields.get(key).copied().unwrap_or(0);
        VmCounters {
            pswpin: get("pswpin"),
            pswpout: get("pswpout"),
            pgmajfault: get("pgmajfault"),
        }
    }
}

/// Fill the meminfo levels of a snapshot; absent keys stay 0.
pub fn apply_meminfo(fields: &BTreeMap<String, u64>, snapshot: &mut MemorySnapshot) {
    let get = |key: &str| fields.get(key).copied().unwrap_or(0);
    snapshot.total_kb = get("MemTotal");
    snapshot.available_kb = get("MemAvailable");
    snapshot.free_kb = get("MemFree");
    snapshot.cached_kb = get("Cached");
    snapshot.buffers_kb = get("Buffers");
    snapshot.dirty_kb = get("Dirty");
    snapshot.writeback_kb = get("Writeback");
    snapshot.anon_huge_kb = get("AnonHugePages");
    snapshot.swap_total_kb = get("SwapTotal");
    snapshot.swap_free_kb = get("SwapFree");
}

/// Fill the per-second rates from two vmstat readings `elapsed` apart.
pub fn apply_vm_rates(
    prev: &VmCounters,
    cur: &VmCounters,
    elapsed: Duration,
    out: &mut MemorySnapshot,
) {
    out.swap_in_per_sec = counter_rate(prev.pswpin, cur.pswpin, elapsed);
    out.swap_out_per_sec = counter_rate(prev.pswpout, cur.pswpout, elapsed);
    out.major_faults_per_sec = counter_rate(prev.pgmajfault, cur.pgmajfault, elapsed);
}

/// Per-node MemTotal/MemFree from sys/devices/system/node/nodeN/meminfo. Nodes whose meminfo
/// is missing are left out rather than shown as empty.
pub fn read_node_memory(roots: &HostRoots) -> Vec<NodeMemory> {
    numbered_dirs(&roots.sys.join("devices/system/node"), "node")
        .into_iter()
        .filter_map(|(node, dir)| {
            let fields = parse_kb_fields(&read_optional(&dir.join("meminfo"))?);
            Some(NodeMemory {
                node,
                total_kb: fields.get("MemTotal").copied().unwrap_or(0),
                free_kb: fields.get("MemFree").copied().unwrap_or(0),
            })
        })
        .collect()
}

/// KSM counters; `None` when the kernel has no KSM (the directory is absent).
pub fn read_ksm(roots: &HostRoots) -> Option<KsmStats> {
    let dir = roots.sys.join("kernel/mm/ksm");
    if !dir.is_dir() {
        return None;
    }
    let read = |name: &str| -> u64 {
        let value = read_optional(&dir.join(name)).and_then(|t| t.trim().parse::<u64>().ok());
        if value.is_none() {
            tracing::debug!(file = name, "KSM value missing or not a number");
        }
        value.unwrap_or(0)
    };
    Some(KsmStats {
        run: u32::try_from(read("run")).unwrap_or(0),
        pages_shared: read("pages_shared"),
        pages_sharing: read("pages_sharing"),
        pages_unshared: read("pages_unshared"),
        pages_volatile: read("pages_volatile"),
        full_scans: read("full_scans"),
        pages_to_scan: read("pages_to_scan"),
        sleep_millisecs: read("sleep_millisecs"),
    })
}

fn read_thp(roots: &HostRoots, name: &str) -> Option<String> {
    let path = roots.sys.join("kernel/mm/transparent_hugepage").join(name);
    bracketed_word(&read_optional(&path)?)
}

/// A vm sysctl (proc/sys/vm/NAME) as a number; `None` when missing or not a number.
fn read_vm_sysctl(roots: &HostRoots, name: &str) -> Option<u32> {
    let value = read_optional(&roots.proc.join("sys/vm").join(name))?;
    let parsed = value.trim().parse::<u32>().ok();
    if parsed.is_none() {
        tracing::debug!(sysctl = name, "vm sysctl is not a number");
    }
    parsed
}

/// The vm.* sysctls the strategies need (governors are left empty: see `read_governors`).
pub fn read_vm_tunables(roots: &HostRoots) -> Tunables {
    Tunables {
        swappiness: read_vm_sysctl(roots, "swappiness"),
        dirty_ratio: read_vm_sysctl(roots, "dirty_ratio"),
        dirty_background_ratio: read_vm_sysctl(roots, "dirty_background_ratio"),
        dirty_expire_centisecs: read_vm_sysctl(roots, "dirty_expire_centisecs"),
        governors: Vec::new(),
    }
}

/// Each CPU's cpufreq governor and the governors it offers; CPUs without cpufreq (a VM,
/// an offline CPU) are left out, so a host without cpufreq gives an empty list.
pub fn read_governors(roots: &HostRoots) -> Vec<CpuGovernor> {
    numbered_dirs(&roots.sys.join("devices/system/cpu"), "cpu")
        .into_iter()
        .filter_map(|(cpu, dir)| {
            let cpufreq = dir.join("cpufreq");
            let governor = read_optional(&cpufreq.join("scaling_governor"))?;
            let available =
                read_optional(&cpufreq.join("scaling_available_governors")).unwrap_or_default();
            Some(CpuGovernor {
                cpu,
                governor: governor.trim().to_string(),
                available: available.split_whitespace().map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Governors are one or two files per CPU (a hundred on a big host) and change only when
/// someone sets them: read them every this many samples, not every tick.
const GOVERNOR_EVERY_SAMPLES: u64 = 10;

/// Samples memory; keeps the previous vmstat reading for rates.
pub struct MemorySampler {
    roots: HostRoots,
    prev: Option<(VmCounters, Instant)>,
    samples: u64,
    governors: Vec<CpuGovernor>,
}

impl MemorySampler {
    pub fn new(roots: &HostRoots) -> Self {
        MemorySampler {
            roots: roots.clone(),
            prev: None,
            samples: 0,
            governors: Vec::new(),
        }
    }

    fn tunables(&mut self) -> Tunables {
        if self.samples.is_multiple_of(GOVERNOR_EVERY_SAMPLES) {
            self.governors = read_governors(&self.roots);
        }
        self.samples = self.samples.wrapping_add(1);
        Tunables {
            governors: self.governors.clone(),
            ..read_vm_tunables(&self.roots)
        }
    }

    /// One reading. proc/meminfo must exist; everything else is optional. Rates are 0 on the
    /// first call.
    pub fn sample(&mut self) -> Result<MemorySnapshot, HostError> {
        let meminfo_path = self.roots.proc.join("meminfo");
        let fields = parse_kb_fields(&read_to_string(&meminfo_path)?);
        if !fields.contains_key("MemTotal") {
            return Err(HostError::Parse {
                path: meminfo_path,
                what: "no MemTotal".to_string(),
            });
        }
        let mut snapshot = MemorySnapshot::default();
        apply_meminfo(&fields, &mut snapshot);
        self.apply_vmstat(&mut snapshot);
        snapshot.thp_enabled = read_thp(&self.roots, "enabled");
        snapshot.thp_defrag = read_thp(&self.roots, "defrag");
        snapshot.ksm = read_ksm(&self.roots);
        snapshot.nodes = read_node_memory(&self.roots);
        snapshot.tunables = self.tunables();
        Ok(snapshot)
    }

    fn apply_vmstat(&mut self, snapshot: &mut MemorySnapshot) {
        let Some(text) = read_optional(&self.roots.proc.join("vmstat")) else {
            return;
        };
        let cur = VmCounters::from_fields(&parse_vmstat(&text));
        let now = Instant::now();
        if let Some((prev, at)) = &self.prev {
            apply_vm_rates(prev, &cur, now.saturating_duration_since(*at), snapshot);
        }
        self.prev = Some((cur, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn meminfo_and_node_meminfo_share_keys() {
        let text = "MemTotal:        6121676 kB\nMemFree: 5783420 kB\nHugePages_Total:       0\n";
        let fields = parse_kb_fields(text);
        assert_eq!(fields["MemTotal"], 6_121_676);
        assert_eq!(fields["MemFree"], 5_783_420);
        assert_eq!(fields["HugePages_Total"], 0);
        let node = parse_kb_fields("Node 1 MemTotal:  1024 kB\nNode 1 MemFree:   512 kB\n");
        assert_eq!(node["MemTotal"], 1024);
        assert_eq!(node["MemFree"], 512);
    }

    #[test]
    fn meminfo_garbage_lines_are_skipped() {
        let text =
            "MemTotal: 100 kB\nMemFree:\nCached: lots kB\nno colon here\n: 5 kB\n\nBuffers: 7 kB";
        let fields = parse_kb_fields(text);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields["MemTotal"], 100);
        assert_eq!(fields["Buffers"], 7);
        assert!(parse_kb_fields("").is_empty());
    }

    #[test]
    fn vmstat_parses_and_skips_garbage() {
        let fields = parse_vmstat("pswpin 5\npswpout x\npgmajfault\n\npgfault 9 extra\n");
        assert_eq!(fields.len(), 2);
        assert_eq!(fields["pswpin"], 5);
        assert_eq!(fields["pgfault"], 9);
    }

    #[test]
    fn bracketed_word_picks_the_selection() {
        assert_eq!(
            bracketed_word("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(
            bracketed_word("always defer defer+madvise [madvise] never").as_deref(),
            Some("madvise")
        );
        assert_eq!(bracketed_word("always madvise never"), None);
        assert_eq!(bracketed_word("[unclosed"), None);
        assert_eq!(bracketed_word("[]"), None);
        assert_eq!(bracketed_word(""), None);
    }

    #[test]
    fn rates_from_two_readings() {
        let prev = VmCounters {
            pswpin: 10,
            pswpout: 20,
            pgmajfault: 100,
        };
        let cur = VmCounters {
            pswpin: 30,
            pswpout: 20,
            pgmajfault: 50,
        };
        let mut snap = MemorySnapshot::default();
        apply_vm_rates(&prev, &cur, Duration::from_secs(2), &mut snap);
        assert_eq!(snap.swap_in_per_sec, 10.0);
        assert_eq!(snap.swap_out_per_sec, 0.0);
        // pgmajfault went backwards: 0, not an underflow.
        assert_eq!(snap.major_faults_per_sec, 0.0);
    }

    #[test]
    fn sampler_reads_a_tree_and_rates_start_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let roots = HostRoots::under(dir.path());
        std::fs::create_dir_all(&roots.proc).unwrap();
        let mut sampler = MemorySampler::new(&roots);
        assert!(matches!(sampler.sample(), Err(HostError::Io { .. })));
        std::fs::write(roots.proc.join("meminfo"), "MemFree: 5 kB\n").unwrap();
        assert!(matches!(sampler.sample(), Err(HostError::Parse { .. })));
        std::fs::write(
            roots.proc.join("meminfo"),
            "MemTotal: 1000 kB\nMemAvailable: 600 kB\nSwapTotal: 50 kB\nSwapFree: 40 kB\n",
        )
        .unwrap();
        std::fs::write(roots.proc.join("vmstat"), "pswpin 0\npgmajfault 0\n").unwrap();
        let ksm = roots.sys.join("kernel/mm/ksm");
        std::fs::create_dir_all(&ksm).unwrap();
        std::fs::write(ksm.join("run"), "1\n").unwrap();
        std::fs::write(ksm.join("pages_sharing"), "42\n").unwrap();
        std::fs::write(ksm.join("pages_shared"), "junk\n").unwrap();
        let first = sampler.sample().unwrap();
        assert_eq!(first.total_kb, 1000);
        assert_eq!(first.available_kb, 600);
        assert_eq!(first.swap_free_kb, 40);
        assert_eq!(first.major_faults_per_sec, 0.0);
        assert_eq!(first.thp_enabled, None);
        let ksm_stats = first.ksm.unwrap();
        assert_eq!(ksm_stats.run, 1);
        assert_eq!(ksm_stats.pages_sharing, 42);
        assert_eq!(ksm_stats.pages_shared, 0);
        assert!(first.nodes.is_empty());
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(roots.proc.join("vmstat"), "pswpin 0\npgmajfault 1000\n").unwrap();
        let second = sampler.sample().unwrap();
        assert!(second.major_faults_per_sec > 0.0);
        assert_eq!(second.swap_in_per_sec, 0.0);
        assert_eq!(
            second.tunables,
            Tunables::default(),
            "no vm or cpufreq files here"
        );
    }

    fn sysctl(name: &str) -> Option<u32> {
        let text = std::fs::read_to_string(Path::new("/proc/sys/vm").join(name)).ok()?;
        text.trim().parse().ok()
    }

    #[test]
    fn tunables_on_the_real_host_match_proc_sys_vm() {
        assert!(
            Path::new("/proc/sys/vm/swappiness").exists(),
            "every Linux host has vm.swappiness; the test must not pass without it"
        );
        let mut sampler = MemorySampler::new(&HostRoots::default());
        let tunables = sampler.sample().unwrap().tunables;
        assert_eq!(tunables.swappiness, sysctl("swappiness"));
        assert!(tunables.swappiness.is_some());
        assert_eq!(tunables.dirty_ratio, sysctl("dirty_ratio"));
        assert_eq!(
            tunables.dirty_background_ratio,
            sysctl("dirty_background_ratio")
        );
        assert_eq!(
            tunables.dirty_expire_centisecs,
            sysctl("dirty_expire_centisecs")
        );
        let cpufreq = Path::new("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
        if cpufreq.exists() {
            let governor = std::fs::read_to_string(cpufreq).unwrap();
            let cpu0 = tunables.governors.iter().find(|g| g.cpu == 0).unwrap();
            assert_eq!(cpu0.governor, governor.trim());
        } else {
            assert!(tunables.governors.is_empty(), "{:?}", tunables.governors);
        }
    }

    #[test]
    fn tunables_from_a_tree_and_governors_every_tenth_sample() {
        let dir = tempfile::tempdir().unwrap();
        let roots = HostRoots::under(dir.path());
        std::fs::create_dir_all(roots.proc.join("sys/vm")).unwrap();
        std::fs::write(roots.proc.join("meminfo"), "MemTotal: 1000 kB\n").unwrap();
        std::fs::write(roots.proc.join("sys/vm/swappiness"), "60\n").unwrap();
        std::fs::write(roots.proc.join("sys/vm/dirty_ratio"), "junk\n").unwrap();
        std::fs::write(roots.proc.join("sys/vm/dirty_background_ratio"), "10\n").unwrap();
        let cpu = |id: u32| roots.sys.join(format!("devices/system/cpu/cpu{id}"));
        std::fs::create_dir_all(cpu(0).join("cpufreq")).unwrap();
        std::fs::create_dir_all(cpu(1)).unwrap();
        std::fs::create_dir_all(roots.sys.join("devices/system/cpu/cpufreq")).unwrap();
        let governor = cpu(0).join("cpufreq/scaling_governor");
        std::fs::write(&governor, "powersave\n").unwrap();
        std::fs::write(
            cpu(0).join("cpufreq/scaling_available_governors"),
            "performance powersave\n",
        )
        .unwrap();
        let mut sampler = MemorySampler::new(&roots);
        let first = sampler.sample().unwrap().tunables;
        assert_eq!(first.swappiness, Some(60));
        assert_eq!(first.dirty_ratio, None, "not a number");
        assert_eq!(first.dirty_background_ratio, Some(10));
        assert_eq!(first.dirty_expire_centisecs, None, "missing");
        assert_eq!(
            first.governors,
            vec![CpuGovernor {
                cpu: 0,
                governor: "powersave".into(),
                available: vec!["performance".into(), "powersave".into()],
            }]
        );
        std::fs::write(&governor, "performance\n").unwrap();
        std::fs::write(roots.proc.join("sys/vm/swappiness"), "10\n").unwrap();
        for _ in 1..GOVERNOR_EVERY_SAMPLES {
            let tunables = sampler.sample().unwrap().tunables;
            assert_eq!(tunables.swappiness, Some(10), "vm sysctls every sample");
            assert_eq!(
                tunables.governors[0].governor, "powersave",
                "kept between reads"
            );
        }
        let refreshed = sampler.sample().unwrap().tunables;
        assert_eq!(refreshed.governors[0].governor, "performance");
    }
}
