//! Where a process's memory lives: the NUMA nodes holding its pages, moved with
//! migrate_pages(2).
//!
//! The value is a node list ("0", "0-1"): reading sums the `N<node>=<pages>` fields of
//! /proc/<pid>/numa_maps and lists the nodes that hold any page; writing moves the pages on
//! every online node onto the listed nodes. A migration is verified as "the pages now sit
//! within the written nodes" (read ⊆ wrote), since a list of nodes says nothing about how the
//! pages spread over them; pages the kernel could not move make it `NotVerified`.
//!
//! Undo moves the pages back onto the `before` nodes. Only the node set is restored, not the
//! exact placement: pages that sat on node 1 before may land on node 0 when both were in
//! `before`, because migrate_pages maps source nodes onto the target set, not page by page.
//! If the process's cpuset no longer allows a `before` node (its container was confined
//! first), the kernel leaves the pages where they are, which still verifies as a subset.

use std::collections::BTreeMap;
use std::io::ErrorKind;

use nix::errno::Errno;

use super::thread::process_start_time;
use super::{Actuator, errno_error, invalid, parse_strict_list, unsupported};
use crate::host::{HostRoots, format_cpu_list, parse_cpu_list, read_optional};
use crate::model::{Change, Knob, Target};
use crate::optimizer::change::ActuatorError;

/// Node ids above this are refused before any syscall: the kernel's nodemask is never this
/// large, and the mask we build stays small.
const MAX_NODE_ID: u32 = 1023;
const BITS_PER_WORD: usize = u64::BITS as usize;

/// Reads and migrates the pages of whole processes, identified by (pid, start time). The
/// roots locate /proc (numa_maps, stat) and /sys (online nodes); the syscall acts on the
/// running kernel.
#[derive(Debug, Clone)]
pub struct NumaActuator {
    pub roots: HostRoots,
}

impl NumaActuator {
    pub fn new(roots: HostRoots) -> Self {
        NumaActuator { roots }
    }

    /// The pid of a `Process` target once its start time is confirmed, else `Gone`.
    fn live_pid(&self, target: &Target, knob: &Knob) -> Result<i32, ActuatorError> {
        let (pid, start_time) = match *target {
            Target::Process { pid, start_time } if pid > 0 => (pid, start_time),
            // pid 0 would make migrate_pages act on this very process.
            Target::Process { pid, .. } => {
                return Err(invalid(knob, &format!("pid {pid}"), "pid must be positive"));
            }
            _ => return Err(unsupported(target, knob)),
        };
        if process_start_time(&self.roots, pid)? != start_time {
            return Err(ActuatorError::Gone(format!(
                "process {pid} was replaced (start time differs)"
            )));
        }
        Ok(pid)
    }

    /// The online nodes: sysfs's list, or node 0 alone on a kernel without NUMA in sysfs.
    fn online_nodes(&self) -> Vec<u32> {
        read_optional(&self.roots.sys.join("devices/system/node/online"))
            .map(|text| parse_cpu_list(&text))
            .filter(|nodes| !nodes.is_empty())
            .unwrap_or_else(|| vec![0])
    }

    /// Parse `value` and check every node is online; nothing is touched.
    fn validate(&self, value: &str) -> Result<Vec<u32>, ActuatorError> {
        let nodes = parse_node_list(value)?;
        let online = self.online_nodes();
        if let Some(offline) = nodes.iter().find(|node| !online.contains(node)) {
            return Err(invalid(
                &Knob::MemoryNodes,
                value,
                format!(
                    "node {offline} is not online (online: {})",
                    format_cpu_list(&online)
                ),
            ));
        }
        Ok(nodes)
    }

    /// Pages per node of process `pid`, from its numa_maps.
    fn pages_per_node(&self, pid: i32) -> Result<BTreeMap<u32, u64>, ActuatorError> {
        let path = self.roots.proc.join(pid.to_string()).join("numa_maps");
        let bytes = std::fs::read(&path).map_err(|err| match err.kind() {
            ErrorKind::NotFound => ActuatorError::Gone(format!("process {pid} has exited")),
            _ if err.raw_os_error() == Some(libc::ESRCH) => {
                ActuatorError::Gone(format!("process {pid} has exited"))
            }
            ErrorKind::PermissionDenied => {
                ActuatorError::Denied(format!("cannot read {}", path.display()))
            }
            _ => ActuatorError::Io(format!("cannot read {}: {err}", path.display())),
        })?;
        Ok(parse_numa_maps(&String::from_utf8_lossy(&bytes)))
    }
}

impl Actuator for NumaActuator {
    fn read(&self, target: &Target, knob: &Knob) -> Result<String, ActuatorError> {
        if *knob != Knob::MemoryNodes {
            return Err(unsupported(target, knob));
        }
        let pid = self.live_pid(target, knob)?;
        let pages = self.pages_per_node(pid)?;
        Ok(nodes_holding_pages(&pages))
    }

    fn write(&self, target: &Target, knob: &Knob, value: &str) -> Result<(), ActuatorError> {
        if *knob != Knob::MemoryNodes {
            return Err(unsupported(target, knob));
        }
        // The value is checked before the identity so a bad value never depends on the target.
        let to = self.validate(value)?;
        let pid = self.live_pid(target, knob)?;
        let from = self.online_nodes();
        migrate_pages(pid, &from, &to, value)
    }

    /// Verified when every node read holds back is one of those written.
    fn same_value(&self, _: &Knob, wrote: &str, read: &str) -> bool {
        match (parse_node_list(wrote), parse_any_node_list(read)) {
            (Ok(wrote), Some(read)) => read.iter().all(|node| wrote.contains(node)),
            _ => false,
        }
    }
}

/// The one change that moves process `pid`'s pages onto `after`, with the nodes holding its
/// pages now as `before`. `after` is validated (online nodes) and stored canonical ("1,0"
/// becomes "0-1"). A process holding no pages at all (a kernel thread) is `Refused`: there
/// would be no node set to restore.
pub fn plan_memory_nodes(
    roots: &HostRoots,
    pid: i32,
    after: &str,
) -> Result<Change, ActuatorError> {
    let actuator = NumaActuator::new(roots.clone());
    let after = format_cpu_list(&actuator.validate(after)?);
    let start_time = process_start_time(roots, pid)?;
    let target = Target::Process { pid, start_time };
    let before = actuator.read(&target, &Knob::MemoryNodes)?;
    if before.is_empty() {
        return Err(ActuatorError::Refused(format!(
            "process {pid} holds no pages on any node"
        )));
    }
    Ok(Change {
        target,
        knob: Knob::MemoryNodes,
        before,
        after,
    })
}

/// migrate_pages(pid, maxnode, from, to). The kernel moves pages on each node of `from` to
/// the node at the same position in `to` (wrapping), so every page ends up within `to`.
fn migrate_pages(pid: i32, from: &[u32], to: &[u32], value: &str) -> Result<(), ActuatorError> {
    let highest = from.iter().chain(to).copied().max().unwrap_or(0);
    let words = usize::try_from(highest).unwrap_or(usize::MAX) / BITS_PER_WORD + 1;
    let old_mask = node_mask(from, words);
    let new_mask = node_mask(to, words);
    // The kernel reads maxnode - 1 bits (as libnuma passes them): one more than the mask.
    let maxnode = (words * BITS_PER_WORD + 1) as libc::c_ulong;
    // SAFETY: both masks are live arrays of `words` u64s, which is the (maxnode - 1) bits the
    // kernel reads from each; the kernel does not write to them or keep them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            libc::c_long::from(pid),
            maxnode,
            old_mask.as_ptr(),
            new_mask.as_ptr(),
        )
    };
    if rc < 0 {
        return Err(match Errno::last() {
            Errno::EINVAL => invalid(&Knob::MemoryNodes, value, "rejected by the kernel"),
            Errno::ENOSYS => {
                ActuatorError::Unsupported("migrate_pages (kernel without NUMA)".into())
            }
            errno => errno_error(errno, &format!("migrate_pages({pid})")),
        });
    }
    if rc > 0 {
        // Read-back verification reports it; this says how many.
        tracing::debug!(pid, pages = rc, "pages that could not be moved");
    }
    Ok(())
}

/// A nodemask of `words` 64-bit words with the bits of `nodes` set.
fn node_mask(nodes: &[u32], words: usize) -> Vec<u64> {
    let mut mask = vec![0u64; words];
    for &node in nodes {
        let node = usize::try_from(node).unwrap_or(usize::MAX);
        if let Some(word) = mask.get_mut(node / BITS_PER_WORD) {
            *word |= 1 << (node % BITS_PER_WORD);
        }
    }
    mask
}

/// A node list to write, strictly: every part "N" or "A-B" with A <= B <= `MAX_NODE_ID`,
/// and at least one node.
fn parse_node_list(value: &str) -> Result<Vec<u32>, ActuatorError> {
    parse_strict_list(&Knob::MemoryNodes, value, MAX_NODE_ID, "node")
}

/// A node list as read back: empty (no pages anywhere) is a valid reading.
fn parse_any_node_list(value: &str) -> Option<Vec<u32>> {
    if value.trim().is_empty() {
        return Some(Vec::new());
    }
    parse_node_list(value).ok()
}

/// Pages per node summed over every mapping of a numa_maps text: the `N<node>=<pages>`
/// fields. Odd fields and lines are skipped; huge pages count as one page each, which is
/// enough to say which nodes hold memory.
pub fn parse_numa_maps(text: &str) -> BTreeMap<u32, u64> {
    let mut pages: BTreeMap<u32, u64> = BTreeMap::new();
    for field in text.lines().flat_map(str::split_whitespace) {
        let Some((key, count)) = field.split_once('=') else {
            continue;
        };
        let node = key.strip_prefix('N').and_then(|n| n.parse::<u32>().ok());
        if let (Some(node), Ok(count)) = (node, count.parse::<u64>()) {
            let total = pages.entry(node).or_default();
            *total = total.saturating_add(count);
        }
    }
    pages
}

/// The nodes holding at least one page, as a node list ("" when none).
fn nodes_holding_pages(pages: &BTreeMap<u32, u64>) -> String {
    let nodes: Vec<u32> = pages
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(node, _)| *node)
        .collect();
    format_cpu_list(&nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_invalid<T: std::fmt::Debug>(result: Result<T, ActuatorError>) -> bool {
        matches!(result, Err(ActuatorError::InvalidValue { .. }))
    }

    #[test]
    fn numa_maps_fields_are_summed_per_node() {
        let text = "\
55f4e54a7000 default file=/usr/bin/head mapped=2 N0=2 kernelpagesize_kB=4
7f0000000000 interleave:0-1 anon=300 dirty=300 N0=100 N1=200 kernelpagesize_kB=4
7f1000000000 default anon=5 dirty=5 N1=5 kernelpagesize_kB=2048
7ffd0000000 default stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4
garbage line without fields
7ff00000 default N=4 Nx=3 N2=abc N3= =5 N4=0 N-1=9
";
        let pages = parse_numa_maps(text);
        assert_eq!(pages, BTreeMap::from([(0, 105), (1, 205), (4, 0)]));
        assert_eq!(nodes_holding_pages(&pages), "0-1");
        assert_eq!(nodes_holding_pages(&parse_numa_maps("")), "");
        assert_eq!(
            nodes_holding_pages(&parse_numa_maps("1000 default N2=1\n2000 default N0=7")),
            "0,2"
        );
    }

    #[test]
    fn node_lists_are_parsed_strictly() {
        assert_eq!(parse_node_list("1,0").ok(), Some(vec![0, 1]));
        assert_eq!(parse_node_list(" 0-2 ").ok(), Some(vec![0, 1, 2]));
        for bad in ["", " ", "x", "0,", "2-1", "-1", "1024", "0,,1"] {
            assert!(is_invalid(parse_node_list(bad)), "{bad:?} accepted");
        }
        assert_eq!(parse_any_node_list(""), Some(Vec::new()));
        assert_eq!(parse_any_node_list("x"), None);
    }

    #[test]
    fn masks_hold_exactly_the_named_nodes() {
        assert_eq!(node_mask(&[0, 1], 1), vec![0b11]);
        assert_eq!(node_mask(&[0, 65], 2), vec![1, 0b10]);
        assert_eq!(node_mask(&[200], 1), vec![0]);
    }

    #[test]
    fn verification_is_read_within_wrote() {
        let actuator = NumaActuator::new(HostRoots::default());
        let same = |wrote: &str, read: &str| actuator.same_value(&Knob::MemoryNodes, wrote, read);
        assert!(same("0", "0"));
        assert!(same("0-1", "1"));
        assert!(same("0,1", "0-1"));
        assert!(same("1", ""));
        assert!(!same("1", "0-1"));
        assert!(!same("0", "1"));
        assert!(!same("x", "0"));
        assert!(!same("0", "garbage"));
    }

    #[test]
    fn bad_values_and_zero_pids_never_reach_the_syscall() {
        let actuator = NumaActuator::new(HostRoots::default());
        let me = Target::Process {
            pid: 0,
            start_time: 0,
        };
        assert!(is_invalid(actuator.write(&me, &Knob::MemoryNodes, "0")));
        assert!(is_invalid(actuator.write(&me, &Knob::MemoryNodes, "")));
        assert!(is_invalid(actuator.read(&me, &Knob::MemoryNodes)));
        assert!(matches!(
            actuator.read(&me, &Knob::Nice),
            Err(ActuatorError::Unsupported(_))
        ));
    }

    #[test]
    fn only_online_nodes_validate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node_dir = dir.path().join("sys/devices/system/node");
        std::fs::create_dir_all(&node_dir).expect("mkdir");
        std::fs::write(node_dir.join("online"), "0-1\n").expect("write");
        let actuator = NumaActuator::new(HostRoots::under(dir.path()));
        assert_eq!(actuator.validate("1").ok(), Some(vec![1]));
        assert!(is_invalid(actuator.validate("2")));
        // Without a node directory the kernel has one node, 0.
        let bare = NumaActuator::new(HostRoots::under(&dir.path().join("none")));
        assert_eq!(bare.online_nodes(), vec![0]);
        assert!(is_invalid(bare.validate("1")));
    }
}
