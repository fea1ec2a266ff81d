//! Memory: /proc/meminfo levels, /proc/vmstat rates (swapping, major faults), transparent huge
//! pages and KSM settings, per-NUMA-node totals, and the vm.* sysctls and cpufreq governors
//! the system-knob strategies compare against.
//!
//! /proc/meminfo and /proc/vmstat are parsed by procfs-core (`Meminfo`, `VmStat`). By hand:
//! the per-node meminfo and every other file here live in sysfs or are single numbers, which
//! procfs-core does not cover; and /proc/meminfo falls back to the same line scan when
//! procfs-core refuses it, since `Meminfo` insists on a dozen lines we never read (a
//! sandbox's emulated /proc may leave some out) while the snapshot needs only MemTotal.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use procfs_core::FromBufRead;

use crate::host::{
    HostError, HostRoots, counter_rate, numbered_dirs, read_optional, read_to_string,
};
use crate::model::{CpuGovernor, KsmStats, MemorySnapshot, NodeMemory, Tunables};

/// Parse "Key:   value [kB]" lines into key -> value: sysfs node meminfo ("Node 0 MemTotal:
/// N kB", the key is the last word before the colon), and proc/meminfo when procfs-core
/// refuses it (see `parse_meminfo`). Lines without a numeric value are skipped.
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

/// procfs-core's value (bytes) for one meminfo key.
type MeminfoField = fn(&procfs_core::Meminfo) -> Option<u64>;

/// The meminfo keys the snapshot and topology read, with procfs-core's field for each.
const MEMINFO_KEYS: [(&str, MeminfoField); 10] = [
    ("MemTotal", |m| Some(m.mem_total)),
    ("MemFree", |m| Some(m.mem_free)),
    ("MemAvailable", |m| m.mem_available),
    ("Buffers", |m| Some(m.buffers)),
    ("Cached", |m| Some(m.cached)),
    ("Dirty", |m| Some(m.dirty)),
    ("Writeback", |m| Some(m.writeback)),
    ("AnonHugePages", |m| m.anon_hugepages),
    ("SwapTotal", |m| Some(m.swap_total)),
    ("SwapFree", |m| Some(m.swap_free)),
];

/// Parse proc/meminfo into key -> kB for the keys `apply_meminfo` reads. procfs-core parses
/// it; when procfs-core refuses the file (a line it requires is missing, or a line is not
/// what a kernel prints), the tolerant line scan of `parse_kb_fields` reads it instead.
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    match meminfo_from_procfs(text) {
        // procfs-core turns "N kB" into bytes; the snapshot keeps kB, so this is exact.
        Some(meminfo) => MEMINFO_KEYS
            .iter()
            .filter_map(|(key, field)| Some((key.to_string(), field(&meminfo)? / 1024)))
            .collect(),
        None => {
            tracing::debug!("procfs-core refused /proc/meminfo; reading it line by line");
            parse_kb_fields(text)
        }
    }
}

fn meminfo_from_procfs(text: &str) -> Option<procfs_core::Meminfo> {
    // procfs-core slices each key's last byte off (a panic if it is part of a multi-byte
    // character) and multiplies values by their unit unchecked (a panic on overflow in debug
    // builds). Kernel text is ASCII "N kB" with values far below 2^50; anything else is left
    // to the line scan.
    let plain = text.is_ascii()
        && text.lines().all(|line| {
            let mut words = line.split_whitespace().skip(1);
            words.next().is_none_or(|value| value.len() <= 15)
                && words.next().is_none_or(|unit| unit == "kB")
        });
    if !plain {
        return None;
    }
    procfs_core::Meminfo::from_buf_read(text.as_bytes()).ok()
}

/// Parse proc/vmstat ("name value" lines) into name -> value with procfs-core's `VmStat`.
/// procfs-core reads the file whole: one line that is not "name number" (which no kernel
/// prints) gives an empty map, logged. Negative values (none is a counter) are left out.
/// The sampler reads only the lines it needs (`VmCounters::from_vmstat`).
pub fn parse_vmstat(text: &str) -> BTreeMap<String, u64> {
    vmstat_from_procfs(text)
        .map(|fields| {
            fields
                .into_iter()
                .filter_map(|(key, value)| Some((key, u64::try_from(value).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn vmstat_from_procfs(text: &str) -> Option<HashMap<String, i64>> {
    match procfs_core::VmStat::from_buf_read(text.as_bytes()) {
        Ok(procfs_core::VmStat(fields)) => Some(fields),
        Err(_) => {
            tracing::debug!("procfs-core refused /proc/vmstat");
            None
        }
    }
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

/// The vmstat lines `VmCounters` reads.
const VM_KEYS: [&str; 3] = ["pswpin", "pswpout", "pgmajfault"];

impl VmCounters {
    /// The counters from proc/vmstat text. vmstat has about 180 lines and we read 3, so only
    /// those go to procfs-core: 2.6 µs a reading with the picking, where procfs-core on the
    /// whole file took 48 µs (`cargo bench --bench proc_parsers`). `None` when procfs-core
    /// refuses them.
    fn from_vmstat(text: &str) -> Option<Self> {
        let wanted: String = text
            .lines()
            .filter(|line| {
                line.split_once(' ')
                    .is_some_and(|(key, _)| VM_KEYS.contains(&key))
            })
            .flat_map(|line| [line, "\n"])
            .collect();
        vmstat_from_procfs(&wanted).map(|fields| Self::from_fields(&fields))
    }

    fn from_fields(fields: &HashMap<String, i64>) -> Self {
        let get = |key: &str| {
            fields
                .get(key)
                .and_then(|v| u64::try_from(*v).ok())
                .unwrap_or(0)
        };
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
        let fields = parse_meminfo(&read_to_string(&meminfo_path)?);
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
        // A refused reading is skipped, not taken as zeros: the next rate would be bogus.
        let Some(cur) = VmCounters::from_vmstat(&text) else {
            return;
        };
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
    fn vmstat_parses_and_a_garbled_file_is_refused_whole() {
        let fields = parse_vmstat("pswpin 5\npswpout 7\npgmajfault 0\n");
        assert_eq!(fields.len(), 3);
        assert_eq!(fields["pswpin"], 5);
        assert_eq!(fields["pswpout"], 7);
        // procfs-core reads the file whole; kernels print nothing but "name number" lines.
        assert!(parse_vmstat("pswpin 5\npswpout x\n").is_empty());
        assert!(parse_vmstat("pswpin 5\npgmajfault\n").is_empty());
        assert!(
            parse_vmstat("pswpin -5\n").is_empty(),
            "no counter is negative"
        );
        assert!(parse_vmstat("").is_empty());
    }

    #[test]
    fn vm_counters_read_their_three_lines_only() {
        let text = "nr_free_pages 5\npswpin 1\nodd line\npswpout 2\npgmajfault 3\npgfault 9\n";
        let counters = VmCounters::from_vmstat(text).unwrap();
        assert_eq!(
            counters,
            VmCounters {
                pswpin: 1,
                pswpout: 2,
                pgmajfault: 3,
            }
        );
        assert_eq!(VmCounters::from_vmstat("pswpin x\n"), None);
        assert_eq!(VmCounters::from_vmstat(""), Some(VmCounters::default()));
        let real = std::fs::read_to_string("/proc/vmstat").unwrap();
        let whole = parse_vmstat(&real);
        let counters = VmCounters::from_vmstat(&real).unwrap();
        assert_eq!(Some(&counters.pgmajfault), whole.get("pgmajfault"));
        assert_eq!(Some(&counters.pswpin), whole.get("pswpin"));
    }

    #[test]
    fn real_meminfo_goes_through_procfs_core_and_agrees_with_the_line_scan() {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        assert!(
            meminfo_from_procfs(&text).is_some(),
            "procfs-core refused this kernel's meminfo"
        );
        let parsed = parse_meminfo(&text);
        let scanned = parse_kb_fields(&text);
        for (key, _) in MEMINFO_KEYS {
            assert_eq!(parsed.get(key), scanned.get(key), "{key}");
        }
        assert!(parsed["MemTotal"] > 0);
    }

    #[test]
    fn meminfo_that_procfs_core_refuses_is_scanned_line_by_line() {
        // Too few lines for procfs-core's Meminfo, as in a sandbox's emulated /proc.
        let partial = "MemTotal: 1000 kB\nMemAvailable: 600 kB\n";
        assert!(meminfo_from_procfs(partial).is_none());
        assert_eq!(parse_meminfo(partial)["MemAvailable"], 600);
        // Text that would make procfs-core panic is never handed to it.
        for odd in [
            "MemTotal: 99999999999999999 kB\n",
            "MemTotal: 5 GB\n",
            "Mé: 5 kB\n",
        ] {
            assert!(meminfo_from_procfs(odd).is_none(), "{odd}");
            let _ = parse_meminfo(odd);
        }
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
