//! What KSM merges for a process: /proc/<pid>/ksm_stat (Linux 6.1+; `ksm_merge_any` from
//! 6.4), summed over an agent's processes. KSM only merges memory a process opted into
//! (madvise MADV_MERGEABLE, or the whole process with PR_SET_MEMORY_MERGE).

use std::path::Path;

use crate::model::AgentKsm;

/// One process's counters; `None` when the file is missing (an older kernel, a process gone).
pub fn read_process(proc_root: &Path, pid: i32) -> Option<AgentKsm> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("ksm_stat")).ok()?;
    let mut ksm = parse_ksm_stat(&text);
    ksm.merging_bytes = ksm.merging_pages * page_size();
    Some(ksm)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |size| size as u64)
}

/// Parse `key value` lines; an odd line is skipped.
pub fn parse_ksm_stat(text: &str) -> AgentKsm {
    let mut ksm = AgentKsm::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let value = value.trim().trim_end_matches(':');
        let number = value.parse::<i64>().ok();
        match (key.trim_end_matches(':'), number) {
            ("ksm_merging_pages", Some(n)) => ksm.merging_pages = n.max(0) as u64,
            ("ksm_rmap_items", Some(n)) => ksm.rmap_items = n.max(0) as u64,
            // Negative while the metadata costs more than merging saves.
            ("ksm_process_profit", Some(n)) => ksm.profit_bytes = n,
            ("ksm_merge_any", _) => ksm.merge_any = value == "yes",
            ("ksm_mergeable", _) => ksm.mergeable = value == "yes",
            _ => {}
        }
    }
    ksm
}

/// An agent's processes together (`None` when no process has the file).
pub fn read_agent(proc_root: &Path, pids: &[i32]) -> Option<AgentKsm> {
    let mut total: Option<AgentKsm> = None;
    for pid in pids {
        if let Some(one) = read_process(proc_root, *pid) {
            let sum = total.get_or_insert_with(AgentKsm::default);
            sum.merging_pages += one.merging_pages;
            sum.merging_bytes += one.merging_bytes;
            sum.rmap_items += one.rmap_items;
            sum.profit_bytes += one.profit_bytes;
            sum.merge_any |= one.merge_any;
            sum.mergeable |= one.mergeable;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksm_stat_parses_and_odd_lines_are_skipped() {
        let text = "ksm_rmap_items 12\nksm_zero_pages 0\nksm_merging_pages 7\n\
                    ksm_process_profit -4096\nksm_merge_any: yes\nksm_mergeable: no\nbogus\n\
                    ksm_merging_pages_x 9\n";
        let ksm = parse_ksm_stat(text);
        assert_eq!(
            (ksm.merging_pages, ksm.rmap_items, ksm.profit_bytes),
            (7, 12, -4096)
        );
        assert!(ksm.merge_any && !ksm.mergeable);
        assert_eq!(
            parse_ksm_stat("ksm_merging_pages lots\n"),
            AgentKsm::default()
        );
    }

    #[test]
    fn our_own_process_has_counters_on_this_kernel() {
        // The test machine's kernel (6.x) has ksm_stat; nothing is merged for us.
        let ksm = read_agent(Path::new("/proc"), &[std::process::id() as i32, i32::MAX]);
        let ksm = ksm.expect("ksm_stat on this kernel");
        assert!(!ksm.merge_any);
    }
}
