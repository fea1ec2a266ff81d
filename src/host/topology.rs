//! CPU topology: logical CPUs, SMT siblings, packages, caches and NUMA nodes, from sysfs.
//! Read once at start; the engine shares it between snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::host::memory::{parse_kb_fields, parse_meminfo};
use crate::host::numbered_dirs;
use crate::host::{HostError, HostRoots, parse_cpu_list, read_optional};
use crate::model::{CacheInfo, LogicalCpu, NumaNode, Topology};

/// Read the topology. Files the kernel may lack (caches, nodes, isolated, offline CPUs'
/// topology) are skipped or defaulted; the only error is finding no CPU at all.
pub fn read_topology(roots: &HostRoots) -> Result<Topology, HostError> {
    let cpu_dir = roots.sys.join("devices/system/cpu");
    let ids = present_cpus(&cpu_dir);
    if ids.is_empty() {
        return Err(HostError::Parse {
            path: cpu_dir,
            what: "no CPU found (neither present list nor cpuN directories)".to_string(),
        });
    }
    let online: Option<BTreeSet<u32>> = read_optional(&cpu_dir.join("online"))
        .map(|text| parse_cpu_list(&text).into_iter().collect());
    let mut cpus: Vec<LogicalCpu> = ids
        .iter()
        .map(|&id| read_logical_cpu(&cpu_dir, id, online.as_ref()))
        .collect();
    let caches = read_caches(&cpu_dir, &ids);
    let isolated = read_optional(&cpu_dir.join("isolated"))
        .map(|text| parse_cpu_list(&text))
        .unwrap_or_default();
    let nodes = read_nodes(roots, &ids);
    assign_nodes(&mut cpus, &nodes);
    let packages = cpus
        .iter()
        .map(|c| c.package)
        .collect::<BTreeSet<_>>()
        .len();
    let physical_cores = cpus
        .iter()
        .map(|c| (c.package, c.core))
        .collect::<BTreeSet<_>>()
        .len();
    Ok(Topology {
        cpus,
        nodes,
        caches,
        isolated,
        packages: u32::try_from(packages).unwrap_or(u32::MAX),
        physical_cores: u32::try_from(physical_cores).unwrap_or(u32::MAX),
    })
}

/// Present CPU ids, sorted: the kernel's `present` list, else the cpuN directories.
fn present_cpus(cpu_dir: &Path) -> Vec<u32> {
    let mut ids = read_optional(&cpu_dir.join("present"))
        .map(|text| parse_cpu_list(&text))
        .unwrap_or_default();
    if ids.is_empty() {
        ids = numbered_dirs(cpu_dir, "cpu")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn read_u32(path: &Path) -> Option<u32> {
    let value = read_optional(path)?.trim().parse::<u32>().ok();
    if value.is_none() {
        tracing::debug!(path = %path.display(), "not a number");
    }
    value
}

/// One CPU. An offline CPU may have no topology directory; it then counts as its own core in
/// package 0, which keeps physical_cores from undercounting.
fn read_logical_cpu(cpu_dir: &Path, id: u32, online: Option<&BTreeSet<u32>>) -> LogicalCpu {
    let topo = cpu_dir.join(format!("cpu{id}")).join("topology");
    let mut siblings = read_optional(&topo.join("thread_siblings_list"))
        .map(|text| parse_cpu_list(&text))
        .unwrap_or_default();
    if !siblings.contains(&id) {
        siblings.push(id);
    }
    siblings.sort_unstable();
    siblings.dedup();
    LogicalCpu {
        id,
        // Without an online list every present CPU is taken as online (old kernels).
        online: online.is_none_or(|set| set.contains(&id)),
        package: read_u32(&topo.join("physical_package_id")).unwrap_or(0),
        core: read_u32(&topo.join("core_id")).unwrap_or(id),
        node: 0,
        siblings,
    }
}

/// Every cache of every CPU, one entry per (level, kind, sharing set), ordered by level, kind
/// and first sharing CPU.
fn read_caches(cpu_dir: &Path, ids: &[u32]) -> Vec<CacheInfo> {
    let mut unique: BTreeMap<(u32, String, Vec<u32>), u64> = BTreeMap::new();
    for &id in ids {
        let cache_dir = cpu_dir.join(format!("cpu{id}")).join("cache");
        for (_, index_dir) in numbered_dirs(&cache_dir, "index") {
            if let Some(cache) = read_cache_index(&index_dir, id) {
                unique
                    .entry((cache.level, cache.kind, cache.shared_cpus))
                    .or_insert(cache.size_kb);
            }
        }
    }
    unique
        .into_iter()
        .map(|((level, kind, shared_cpus), size_kb)| CacheInfo {
            level,
            kind,
            size_kb,
            shared_cpus,
        })
        .collect()
}

fn read_cache_index(dir: &Path, owner: u32) -> Option<CacheInfo> {
    let level = read_u32(&dir.join("level"))?;
    let kind = read_optional(&dir.join("type"))?.trim().to_string();
    if kind.is_empty() {
        return None;
    }
    let size_kb = read_optional(&dir.join("size"))
        .and_then(|text| parse_size_kb(&text))
        .unwrap_or(0);
    let mut shared_cpus = read_optional(&dir.join("shared_cpu_list"))
        .map(|text| parse_cpu_list(&text))
        .unwrap_or_default();
    if shared_cpus.is_empty() {
        shared_cpus.push(owner);
    }
    shared_cpus.sort_unstable();
    shared_cpus.dedup();
    Some(CacheInfo {
        level,
        kind,
        size_kb,
        shared_cpus,
    })
}

/// Cache size as sysfs prints it: "48K", "32768K", "2M", or plain bytes.
pub fn parse_size_kb(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, factor_kb) = match text.char_indices().last()? {
        (at, 'K' | 'k') => (&text[..at], Some(1)),
        (at, 'M' | 'm') => (&text[..at], Some(1024)),
        (at, 'G' | 'g') => (&text[..at], Some(1024 * 1024)),
        _ => (text, None),
    };
    let n = digits.trim().parse::<u64>().ok()?;
    match factor_kb {
        Some(factor) => n.checked_mul(factor),
        None => Some(n / 1024),
    }
}

/// NUMA nodes from sysfs; without any node directory, one node 0 holding every CPU with
/// proc/meminfo's MemTotal.
fn read_nodes(roots: &HostRoots, ids: &[u32]) -> Vec<NumaNode> {
    let node_dirs = numbered_dirs(&roots.sys.join("devices/system/node"), "node");
    if node_dirs.is_empty() {
        return vec![single_node(roots, ids)];
    }
    node_dirs
        .into_iter()
        .map(|(id, dir)| read_node(id, &dir))
        .collect()
}

fn read_node(id: u32, dir: &Path) -> NumaNode {
    let cpus = read_optional(&dir.join("cpulist"))
        .map(|text| parse_cpu_list(&text))
        .unwrap_or_default();
    let mem_total_kb = read_optional(&dir.join("meminfo"))
        .and_then(|text| parse_kb_fields(&text).get("MemTotal").copied())
        .unwrap_or(0);
    let distances = read_optional(&dir.join("distance"))
        .map(|text| parse_distances(&text))
        .unwrap_or_default();
    NumaNode {
        id,
        cpus,
        mem_total_kb,
        distances,
    }
}

fn single_node(roots: &HostRoots, ids: &[u32]) -> NumaNode {
    let mem_total_kb = read_optional(&roots.proc.join("meminfo"))
        .and_then(|text| parse_meminfo(&text).get("MemTotal").copied())
        .unwrap_or(0);
    NumaNode {
        id: 0,
        cpus: ids.to_vec(),
        mem_total_kb,
        distances: vec![10],
    }
}

/// A node's distance row ("10 21"). A garbage entry drops the whole row: a shifted row
/// would attribute distances to the wrong nodes.
pub fn parse_distances(text: &str) -> Vec<u32> {
    let parsed: Option<Vec<u32>> = text.split_whitespace().map(|w| w.parse().ok()).collect();
    parsed.unwrap_or_else(|| {
        tracing::debug!("skipping malformed node distance row");
        Vec::new()
    })
}

fn assign_nodes(cpus: &mut [LogicalCpu], nodes: &[NumaNode]) {
    for node in nodes {
        for cpu in cpus.iter_mut().filter(|c| node.cpus.contains(&c.id)) {
            cpu.node = node.id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size_kb("48K\n"), Some(48));
        assert_eq!(parse_size_kb("2M"), Some(2048));
        assert_eq!(parse_size_kb("1G"), Some(1024 * 1024));
        assert_eq!(parse_size_kb("65536"), Some(64));
        assert_eq!(parse_size_kb(""), None);
        assert_eq!(parse_size_kb("K"), None);
        assert_eq!(parse_size_kb("12Q"), None);
        assert_eq!(parse_size_kb("99999999999999999999M"), None);
    }

    #[test]
    fn distances_reject_garbage_rows() {
        assert_eq!(parse_distances("10 21\n"), vec![10, 21]);
        assert_eq!(parse_distances("10 x"), Vec::<u32>::new());
        assert_eq!(parse_distances(""), Vec::<u32>::new());
    }

    #[test]
    fn no_cpu_at_all_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let roots = HostRoots::under(dir.path());
        assert!(matches!(
            read_topology(&roots),
            Err(HostError::Parse { .. })
        ));
    }

    #[test]
    fn minimal_tree_without_nodes_gets_one_node_from_meminfo() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // No present file: CPUs come from cpuN directories; cpu1 has no topology (offline).
        write(root, "sys/devices/system/cpu/cpu0/topology/core_id", "0\n");
        write(
            root,
            "sys/devices/system/cpu/cpu0/topology/physical_package_id",
            "0\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
            "0\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu0/cache/index0/level",
            "1\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu0/cache/index0/type",
            "Data\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu0/cache/index0/size",
            "32K\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu0/cache/index0/shared_cpu_list",
            "0\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu0/cache/index1/level",
            "garbage\n",
        );
        std::fs::create_dir_all(root.join("sys/devices/system/cpu/cpu1")).unwrap();
        write(root, "sys/devices/system/cpu/online", "0\n");
        write(root, "proc/meminfo", "MemTotal: 4096 kB\n");
        let topo = read_topology(&HostRoots::under(root)).unwrap();
        assert_eq!(topo.cpus.len(), 2);
        assert!(topo.cpus[0].online);
        assert!(!topo.cpus[1].online);
        assert_eq!(topo.cpus[1].siblings, vec![1]);
        assert_eq!(topo.physical_cores, 2);
        assert_eq!(topo.packages, 1);
        assert_eq!(
            topo.nodes,
            vec![NumaNode {
                id: 0,
                cpus: vec![0, 1],
                mem_total_kb: 4096,
                distances: vec![10],
            }]
        );
        assert_eq!(
            topo.caches,
            vec![CacheInfo {
                level: 1,
                kind: "Data".to_string(),
                size_kb: 32,
                shared_cpus: vec![0],
            }]
        );
        assert!(topo.isolated.is_empty());
    }
}
