//! Host families: identity, CPU, memory, pressure stall information, disks, network,
//! transparent huge pages and KSM.

use prometheus_client::registry::Unit;

use super::{
    Families, KB, Labels, Value, bytes, bytes_per_second, labels, ratio, seconds, unique_by,
};
use crate::model::{PsiLine, Snapshot};

pub(super) fn host_families(snap: &Snapshot, f: &mut Families) {
    host_identity(snap, f);
    cpu(snap, f);
    memory(snap, f);
    pressure(snap, f);
    disks(snap, f);
    nets(snap, f);
    hugepages_and_ksm(snap, f);
}

fn host_identity(snap: &Snapshot, f: &mut Families) {
    let layout = match snap.host.cgroup_layout {
        crate::model::CgroupLayout::V1 => "v1",
        crate::model::CgroupLayout::V2 => "v2",
        crate::model::CgroupLayout::Hybrid => "hybrid",
        crate::model::CgroupLayout::None => "none",
    };
    f.gauge("host", None, "The observed host (value 1); labels name it.")
        .push(
            labels([
                ("hostname", &snap.host.hostname),
                ("kernel", &snap.host.kernel),
                ("cgroup_layout", layout),
            ]),
            1u32,
        );
    f.gauge("host_uptime", seconds(), "Time since the host booted.")
        .push(Labels::none(), snap.host.uptime_secs);
    f.gauge("host_cpus", None, "Logical CPUs present.")
        .push(Labels::none(), snap.topology.cpus.len());
}

fn cpu(snap: &Snapshot, f: &mut Families) {
    let total = &snap.cpu.total;
    if total.has_data() {
        f.gauge(
            "host_cpu_busy",
            ratio(),
            "Share of all CPUs' time spent busy (not idle, not iowait) over the last tick.",
        )
        .push(Labels::none(), total.busy() / 100.0);
    }
    let per_cpu = f.gauge(
        "cpu_busy",
        ratio(),
        "Share of one CPU's time spent busy (not idle, not iowait) over the last tick.",
    );
    let usable = snap.cpu.per_cpu.iter().filter(|(_, t)| t.has_data());
    for (id, times) in unique_by(usable, |(id, _)| *id) {
        per_cpu.push(labels([("cpu", &id.to_string())]), times.busy() / 100.0);
    }
    f.gauge("load1", None, "Load average over 1 minute.")
        .push(Labels::none(), snap.cpu.load1);
    f.gauge("load5", None, "Load average over 5 minutes.")
        .push(Labels::none(), snap.cpu.load5);
    f.gauge("load15", None, "Load average over 15 minutes.")
        .push(Labels::none(), snap.cpu.load15);
    f.gauge("procs_running", None, "Runnable tasks (procs_running).")
        .push(Labels::none(), snap.cpu.runnable);
    f.gauge(
        "procs_blocked",
        None,
        "Tasks blocked on I/O (procs_blocked).",
    )
    .push(Labels::none(), snap.cpu.blocked);
}

fn memory(snap: &Snapshot, f: &mut Families) {
    let m = &snap.memory;
    if m.total_kb == 0 {
        // No meminfo read yet: zeros would read as "no memory", not "unknown".
        return;
    }
    f.gauge("memory_total", bytes(), "Usable RAM (MemTotal).")
        .push(Labels::none(), m.total_kb.saturating_mul(KB));
    f.gauge(
        "memory_available",
        bytes(),
        "Memory available for new work without swapping (MemAvailable).",
    )
    .push(Labels::none(), m.available_kb.saturating_mul(KB));
    f.gauge(
        "memory_used",
        bytes(),
        "Memory in use: MemTotal minus MemAvailable (reclaimable cache counts as free).",
    )
    .push(
        Labels::none(),
        m.total_kb.saturating_sub(m.available_kb).saturating_mul(KB),
    );
    f.gauge("memory_cached", bytes(), "Page cache (Cached).")
        .push(Labels::none(), m.cached_kb.saturating_mul(KB));
    f.gauge(
        "memory_dirty",
        bytes(),
        "Dirty pages waiting for writeback.",
    )
    .push(Labels::none(), m.dirty_kb.saturating_mul(KB));
    f.gauge("swap_total", bytes(), "Swap space (SwapTotal).")
        .push(Labels::none(), m.swap_total_kb.saturating_mul(KB));
    f.gauge(
        "swap_used",
        bytes(),
        "Swap in use (SwapTotal minus SwapFree).",
    )
    .push(
        Labels::none(),
        m.swap_total_kb
            .saturating_sub(m.swap_free_kb)
            .saturating_mul(KB),
    );
}

fn pressure(snap: &Snapshot, f: &mut Families) {
    let resources = [
        ("cpu", snap.pressure.cpu),
        ("memory", snap.pressure.memory),
        ("io", snap.pressure.io),
    ];
    let line = |psi: &crate::model::PsiResource, full: bool| -> Option<PsiLine> {
        if full { psi.full } else { Some(psi.some) }
    };
    for (full, avg_name, total_name, avg_help, total_help) in [
        (
            false,
            "pressure_some_avg10",
            "pressure_some_stall",
            "Share of wall time at least one task stalled on the resource, 10 s average (PSI some avg10).",
            "Time at least one task stalled on the resource (PSI some total).",
        ),
        (
            true,
            "pressure_full_avg10",
            "pressure_full_stall",
            "Share of wall time all non-idle tasks stalled on the resource, 10 s average (PSI full avg10).",
            "Time all non-idle tasks stalled on the resource (PSI full total).",
        ),
    ] {
        let lines: Vec<(&str, PsiLine)> = resources
            .iter()
            .filter_map(|(name, psi)| psi.as_ref().and_then(|p| line(p, full)).map(|l| (*name, l)))
            .collect();
        let avg = f.gauge(avg_name, ratio(), avg_help);
        for (resource, l) in &lines {
            avg.push(labels([("resource", resource)]), l.avg10 / 100.0);
        }
        let total = f.counter(total_name, seconds(), total_help);
        for (resource, l) in &lines {
            total.push(labels([("resource", resource)]), l.total_us as f64 / 1e6);
        }
    }
}

fn disks(snap: &Snapshot, f: &mut Families) {
    type Pick = fn(&crate::model::DiskStat) -> Value;
    let figures: [(&'static str, Option<Unit>, &'static str, Pick); 6] = [
        (
            "disk_read",
            bytes_per_second(),
            "Bytes read per second over the last tick.",
            |d| d.read_bytes_per_sec.into(),
        ),
        (
            "disk_written",
            bytes_per_second(),
            "Bytes written per second over the last tick.",
            |d| d.write_bytes_per_sec.into(),
        ),
        (
            "disk_reads_per_second",
            None,
            "Read requests completed per second over the last tick.",
            |d| d.reads_per_sec.into(),
        ),
        (
            "disk_writes_per_second",
            None,
            "Write requests completed per second over the last tick.",
            |d| d.writes_per_sec.into(),
        ),
        (
            "disk_busy",
            ratio(),
            "Share of the last tick the device had I/O in flight.",
            |d| (d.util_pct / 100.0).into(),
        ),
        (
            "disk_await",
            seconds(),
            "Average time per completed request over the last tick.",
            |d| (d.await_ms / 1000.0).into(),
        ),
    ];
    for (name, unit, help, pick) in figures {
        let family = f.gauge(name, unit, help);
        for disk in unique_by(&snap.disks, |d| d.name.as_str()) {
            family.push(labels([("device", &disk.name)]), pick(disk));
        }
    }
    let depth = f.gauge(
        "disk_queue_depth",
        None,
        "Average requests in flight over the last tick.",
    );
    for disk in unique_by(&snap.disks, |d| d.name.as_str()) {
        depth.push(labels([("device", &disk.name)]), disk.queue_depth);
    }
}

fn nets(snap: &Snapshot, f: &mut Families) {
    type Pick = fn(&crate::model::NetStat) -> f64;
    let figures: [(&'static str, Option<Unit>, &'static str, Pick); 3] = [
        (
            "network_receive",
            bytes_per_second(),
            "Bytes received per second over the last tick.",
            |n| n.rx_bytes_per_sec,
        ),
        (
            "network_transmit",
            bytes_per_second(),
            "Bytes sent per second over the last tick.",
            |n| n.tx_bytes_per_sec,
        ),
        (
            "network_errors_per_second",
            None,
            "Errors and drops, both directions, per second over the last tick.",
            |n| n.errors_per_sec,
        ),
    ];
    for (name, unit, help, pick) in figures {
        let family = f.gauge(name, unit, help);
        for net in unique_by(&snap.nets, |n| n.name.as_str()) {
            family.push(labels([("device", &net.name)]), pick(net));
        }
    }
}

fn hugepages_and_ksm(snap: &Snapshot, f: &mut Families) {
    let m = &snap.memory;
    // THP modes as a state set: one series per known mode, 1 on the one in force.
    if let Some(mode) = &m.thp_enabled {
        f.gauge(
            "transparent_hugepage_enabled",
            None,
            "Transparent huge page mode in force (1 on the series whose mode label it is).",
        )
        .push(labels([("mode", mode)]), 1u32);
    }
    if let Some(mode) = &m.thp_defrag {
        f.gauge(
            "transparent_hugepage_defrag",
            None,
            "Transparent huge page defrag mode in force (1 on the series whose mode label it is).",
        )
        .push(labels([("mode", mode)]), 1u32);
    }
    if m.total_kb > 0 {
        f.gauge(
            "anon_hugepages",
            bytes(),
            "Anonymous memory backed by transparent huge pages.",
        )
        .push(Labels::none(), m.anon_huge_kb.saturating_mul(KB));
    }
    if let Some(ksm) = &m.ksm {
        f.gauge(
            "ksm_run",
            None,
            "KSM state: 0 stopped, 1 running, 2 unmerging.",
        )
        .push(Labels::none(), ksm.run);
        f.gauge("ksm_pages_shared", None, "KSM shared pages in use.")
            .push(Labels::none(), ksm.pages_shared);
        f.gauge(
            "ksm_pages_sharing",
            None,
            "Pages deduplicated by KSM (saved pages).",
        )
        .push(Labels::none(), ksm.pages_sharing);
        f.counter(
            "ksm_full_scans",
            None,
            "Full KSM scans of mergeable memory.",
        )
        .push(Labels::none(), ksm.full_scans);
    }
}
