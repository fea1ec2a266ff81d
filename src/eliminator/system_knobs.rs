//! Strategies that propose host-wide kernel knobs: transparent huge pages, vm.swappiness,
//! the vm.dirty_* writeback ratios and the cpufreq governor.
//!
//! Each reads the knob's current value from the snapshot (`memory.thp_*`,
//! `memory.tunables`) and proposes nothing when the file is missing on this host or the
//! value is already where it would set it, so a host that is already tuned gets no noise.
//! The changes go through the host-file actuator like any other: journaled, undoable.

use super::strategy::{Context, EliminationStrategy};
use crate::model::Knob;
use crate::model::{Bottleneck, BottleneckKind};
use crate::model::{CpuGovernor, Snapshot};
use crate::model::{Fix, Intent, IntentTarget, Measure, Risk};

pub const THP_ENABLED: &str = "sys/kernel/mm/transparent_hugepage/enabled";
pub const THP_DEFRAG: &str = "sys/kernel/mm/transparent_hugepage/defrag";
pub const SWAPPINESS: &str = "proc/sys/vm/swappiness";
pub const DIRTY_RATIO: &str = "proc/sys/vm/dirty_ratio";
pub const DIRTY_BACKGROUND_RATIO: &str = "proc/sys/vm/dirty_background_ratio";

/// Defrag mode proposed with `madvise`: regions that asked for huge pages may compact
/// directly, everyone else leaves compaction to kcompactd instead of stalling.
const THP_DEFRAG_WITH_MADVISE: &str = "defer+madvise";
/// Low enough that page cache is dropped well before agents' memory is swapped out, not
/// zero so the kernel can still swap truly idle pages instead of OOM-killing.
const LOW_SWAPPINESS: u32 = 10;
const LOW_DIRTY_BACKGROUND_RATIO: u32 = 5;
const LOW_DIRTY_RATIO: u32 = 10;
/// Dirty plus writeback memory above this share of RAM means writes pile up in bursts.
const DIRTY_BACKLOG_PCT: f64 = 5.0;
const PERFORMANCE: &str = "performance";

/// The cpufreq governor file of one CPU.
pub fn governor_path(cpu: u32) -> String {
    format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
}

fn host_file_intent(path: &str, before: impl ToString, after: impl ToString) -> Intent {
    Intent {
        target: IntentTarget::HostFile {
            path: path.to_string(),
        },
        knob: Knob::HostFile { path: path.into() },
        expected_before: before.to_string(),
        after: after.to_string(),
    }
}

/// Transparent huge pages for model serving: weights and KV caches are large, hot, and
/// walked constantly, so 2 MiB pages cut TLB misses while the CPU is saturated. Only when
/// the operator allowed it (`enable_transparent_hugepages`).
pub struct TransparentHugepages;

impl TransparentHugepages {
    fn madvise_fix(&self, enabled: &str, defrag: Option<&str>) -> Option<Fix> {
        if enabled != "never" {
            return None;
        }
        let mut intents = vec![host_file_intent(THP_ENABLED, enabled, "madvise")];
        if let Some(defrag) = defrag.filter(|d| *d != THP_DEFRAG_WITH_MADVISE) {
            intents.push(host_file_intent(
                THP_DEFRAG,
                defrag,
                THP_DEFRAG_WITH_MADVISE,
            ));
        }
        Some(Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "turn transparent huge pages on for programs that ask for them (madvise){}: \
                 fewer TLB misses for model weights while the CPU is saturated",
                if intents.len() > 1 {
                    ", with compaction left to kcompactd for everyone else (defrag defer+madvise)"
                } else {
                    ""
                }
            ),
            risk: Risk::Medium,
            metric: "host PSI cpu some avg10".to_string(),
            measure: Measure::HostPsiCpuSome,
            intents,
        })
    }

    fn always_fix(&self, enabled: &str) -> Option<Fix> {
        if enabled == "always" {
            return None;
        }
        Some(Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "back all anonymous memory with transparent huge pages (now {enabled}): \
                 fewer TLB misses for every agent, at the cost of more memory and \
                 compaction stalls"
            ),
            risk: Risk::High,
            metric: "host PSI cpu some avg10".to_string(),
            measure: Measure::HostPsiCpuSome,
            intents: vec![host_file_intent(THP_ENABLED, enabled, "always")],
        })
    }
}

impl EliminationStrategy for TransparentHugepages {
    fn name(&self) -> &str {
        "transparent-hugepages"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::CpuSaturation
    }
    fn propose(&self, _: &Bottleneck, snap: &Snapshot, context: &Context) -> Vec<Fix> {
        let Some(enabled) = snap.memory.thp_enabled.as_deref() else {
            return Vec::new();
        };
        if !context.thp_allowed {
            return Vec::new();
        }
        let defrag = snap.memory.thp_defrag.as_deref();
        // Two alternatives when THP is off; the mode decides which the operator sees.
        [self.madvise_fix(enabled, defrag), self.always_fix(enabled)]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// A host swapping under memory pressure: make the kernel reclaim page cache first.
pub struct LowerSwappiness;

impl EliminationStrategy for LowerSwappiness {
    fn name(&self) -> &str {
        "lower-swappiness"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::MemoryPressure
    }
    fn propose(&self, _: &Bottleneck, snap: &Snapshot, _: &Context) -> Vec<Fix> {
        let memory = &snap.memory;
        let swapping = memory.swap_in_per_sec + memory.swap_out_per_sec > 0.0;
        let Some(current) = memory.tunables.swappiness else {
            return Vec::new();
        };
        if !swapping || current <= LOW_SWAPPINESS {
            return Vec::new();
        }
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "lower vm.swappiness from {current} to {LOW_SWAPPINESS}: the host is swapping \
                 under memory pressure; drop page cache before swapping agents' memory out"
            ),
            risk: Risk::Medium,
            metric: "host PSI memory some avg10".to_string(),
            measure: Measure::HostPsiMemorySome,
            intents: vec![host_file_intent(SWAPPINESS, current, LOW_SWAPPINESS)],
        }]
    }
}

/// I/O saturated while a large backlog of dirty pages waits: start writeback sooner and
/// throttle writers earlier, so writes flow steadily instead of in stalling bursts.
pub struct LowerDirtyRatios;

impl LowerDirtyRatios {
    /// Dirty plus writeback memory as a percent of RAM; `None` without meminfo.
    fn backlog_pct(snap: &Snapshot) -> Option<f64> {
        let memory = &snap.memory;
        (memory.total_kb > 0).then(|| {
            let backlog = memory.dirty_kb.saturating_add(memory.writeback_kb);
            backlog as f64 * 100.0 / memory.total_kb as f64
        })
    }
}

impl EliminationStrategy for LowerDirtyRatios {
    fn name(&self) -> &str {
        "lower-dirty-ratios"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::IoSaturation
    }
    fn propose(&self, _: &Bottleneck, snap: &Snapshot, _: &Context) -> Vec<Fix> {
        let Some(backlog_pct) = Self::backlog_pct(snap).filter(|&p| p > DIRTY_BACKLOG_PCT) else {
            return Vec::new();
        };
        let tunables = &snap.memory.tunables;
        // A ratio of 0 means the *_bytes sysctl is in force; writing the ratio would clear
        // it and rolling back could not bring it back, so such a host is left alone (0 is
        // never above the targets).
        let Some(background) = tunables
            .dirty_background_ratio
            .filter(|&b| b > LOW_DIRTY_BACKGROUND_RATIO)
        else {
            return Vec::new();
        };
        // Background first: on rollback (reverse order) the hard limit goes back first.
        let mut intents = vec![host_file_intent(
            DIRTY_BACKGROUND_RATIO,
            background,
            LOW_DIRTY_BACKGROUND_RATIO,
        )];
        let mut lowered =
            format!("vm.dirty_background_ratio {background} → {LOW_DIRTY_BACKGROUND_RATIO}");
        if let Some(ratio) = tunables.dirty_ratio.filter(|&r| r > LOW_DIRTY_RATIO) {
            intents.push(host_file_intent(DIRTY_RATIO, ratio, LOW_DIRTY_RATIO));
            lowered.push_str(&format!(", vm.dirty_ratio {ratio} → {LOW_DIRTY_RATIO}"));
        }
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "write dirty pages back sooner ({lowered}): {backlog_pct:.1} % of RAM is \
                 waiting to be written while I/O is saturated"
            ),
            risk: Risk::Medium,
            metric: "host PSI io full avg10".to_string(),
            measure: Measure::HostPsiIoFull,
            intents,
        }]
    }
}

/// CPU saturated while some CPUs scale their clock down: run them at full speed.
pub struct PerformanceGovernor;

impl PerformanceGovernor {
    /// CPUs not on `performance` whose driver offers it.
    fn slow_cpus(snap: &Snapshot) -> Vec<&CpuGovernor> {
        snap.memory
            .tunables
            .governors
            .iter()
            .filter(|g| g.governor != PERFORMANCE && g.available.iter().any(|a| a == PERFORMANCE))
            .collect()
    }
}

impl EliminationStrategy for PerformanceGovernor {
    fn name(&self) -> &str {
        "performance-governor"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::CpuSaturation
    }
    fn propose(&self, _: &Bottleneck, snap: &Snapshot, _: &Context) -> Vec<Fix> {
        let slow = Self::slow_cpus(snap);
        if slow.is_empty() {
            return Vec::new();
        }
        let ids: Vec<u32> = slow.iter().map(|g| g.cpu).collect();
        let mut current: Vec<&str> = slow.iter().map(|g| g.governor.as_str()).collect();
        current.sort_unstable();
        current.dedup();
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "run CPUs {} at full clock (cpufreq governor {} → performance) while the CPU \
                 is saturated",
                crate::host::format_cpu_list(&ids),
                current.join(", ")
            ),
            risk: Risk::Medium,
            metric: "host PSI cpu some avg10".to_string(),
            measure: Measure::HostPsiCpuSome,
            intents: slow
                .iter()
                .map(|g| host_file_intent(&governor_path(g.cpu), &g.governor, PERFORMANCE))
                .collect(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eliminator::built_in;
    use crate::eliminator::strategy::propose_all;
    use crate::model::Mode;
    use crate::model::{Evidence, Subject};

    const GIB_KB: u64 = 1024 * 1024;

    fn bottleneck(kind: BottleneckKind) -> Bottleneck {
        Bottleneck {
            kind,
            subject: Subject::Host,
            evidence: vec![Evidence {
                metric: "x".into(),
                value: 1.0,
                threshold: 0.5,
                unit: "%".into(),
            }],
            since_seq: 1,
        }
    }

    fn thp_allowed() -> Context {
        Context {
            thp_allowed: true,
            ..Context::default()
        }
    }

    /// The fixes of one strategy among everything `mode` allows.
    fn fixes_of(
        strategy: &str,
        kind: BottleneckKind,
        snap: &Snapshot,
        context: &Context,
        mode: Mode,
    ) -> Vec<Fix> {
        propose_all(&built_in(), &bottleneck(kind), snap, context, mode)
            .into_iter()
            .filter(|f| f.strategy == strategy)
            .collect()
    }

    fn intents(fix: &Fix) -> Vec<(&str, &str, &str)> {
        fix.intents
            .iter()
            .map(|i| {
                let IntentTarget::HostFile { path } = &i.target else {
                    panic!("host file intent expected: {i:?}");
                };
                assert_eq!(
                    i.knob,
                    Knob::HostFile {
                        path: path.as_str().into()
                    }
                );
                (path.as_str(), i.expected_before.as_str(), i.after.as_str())
            })
            .collect()
    }

    fn thp(enabled: Option<&str>, defrag: Option<&str>) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.memory.thp_enabled = enabled.map(str::to_string);
        snap.memory.thp_defrag = defrag.map(str::to_string);
        snap
    }

    const THP: &str = "transparent-hugepages";
    const CPU: BottleneckKind = BottleneckKind::CpuSaturation;

    #[test]
    fn thp_off_gets_madvise_when_balanced_and_always_when_aggressive() {
        let snap = thp(Some("never"), Some("madvise"));
        let ctx = thp_allowed();
        assert!(fixes_of(THP, CPU, &snap, &ctx, Mode::Conservative).is_empty());
        let balanced = fixes_of(THP, CPU, &snap, &ctx, Mode::Balanced);
        assert_eq!(balanced.len(), 1);
        assert_eq!(balanced[0].risk, Risk::Medium);
        assert_eq!(balanced[0].measure, Measure::HostPsiCpuSome);
        assert_eq!(
            intents(&balanced[0]),
            [
                (THP_ENABLED, "never", "madvise"),
                (THP_DEFRAG, "madvise", "defer+madvise")
            ]
        );
        let aggressive = fixes_of(THP, CPU, &snap, &ctx, Mode::Aggressive);
        assert_eq!(aggressive.len(), 2);
        assert_eq!(aggressive[0], balanced[0]);
        assert_eq!(aggressive[1].risk, Risk::High);
        assert_eq!(intents(&aggressive[1]), [(THP_ENABLED, "never", "always")]);
    }

    #[test]
    fn thp_madvise_only_goes_further_when_aggressive() {
        let snap = thp(Some("madvise"), Some("madvise"));
        let ctx = thp_allowed();
        assert!(fixes_of(THP, CPU, &snap, &ctx, Mode::Balanced).is_empty());
        let aggressive = fixes_of(THP, CPU, &snap, &ctx, Mode::Aggressive);
        assert_eq!(aggressive.len(), 1);
        assert_eq!(
            intents(&aggressive[0]),
            [(THP_ENABLED, "madvise", "always")]
        );
    }

    #[test]
    fn thp_defrag_is_left_alone_when_missing_or_already_set() {
        let ctx = thp_allowed();
        for defrag in [None, Some("defer+madvise")] {
            let snap = thp(Some("never"), defrag);
            let fixes = fixes_of(THP, CPU, &snap, &ctx, Mode::Balanced);
            assert_eq!(intents(&fixes[0]), [(THP_ENABLED, "never", "madvise")]);
        }
    }

    #[test]
    fn thp_nothing_unless_allowed_present_and_not_yet_always() {
        let never = thp(Some("never"), Some("madvise"));
        assert!(fixes_of(THP, CPU, &never, &Context::default(), Mode::Aggressive).is_empty());
        let ctx = thp_allowed();
        let missing = thp(None, None);
        assert!(fixes_of(THP, CPU, &missing, &ctx, Mode::Aggressive).is_empty());
        let always = thp(Some("always"), Some("madvise"));
        assert!(fixes_of(THP, CPU, &always, &ctx, Mode::Aggressive).is_empty());
        // Memory pressure is not what THP is proposed for.
        let pressure = BottleneckKind::MemoryPressure;
        assert!(fixes_of(THP, pressure, &never, &ctx, Mode::Aggressive).is_empty());
    }

    fn swapping(swappiness: Option<u32>, swap_out: f64) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.memory.swap_out_per_sec = swap_out;
        snap.memory.tunables.swappiness = swappiness;
        snap
    }

    const SWAP: &str = "lower-swappiness";
    const MEM: BottleneckKind = BottleneckKind::MemoryPressure;

    #[test]
    fn swapping_host_gets_swappiness_ten_from_balanced_up() {
        let snap = swapping(Some(60), 12.0);
        let ctx = Context::default();
        assert!(fixes_of(SWAP, MEM, &snap, &ctx, Mode::Conservative).is_empty());
        let fixes = fixes_of(SWAP, MEM, &snap, &ctx, Mode::Balanced);
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].risk, Risk::Medium);
        assert_eq!(fixes[0].measure, Measure::HostPsiMemorySome);
        assert_eq!(intents(&fixes[0]), [(SWAPPINESS, "60", "10")]);
        assert!(
            fixes[0].summary.contains("from 60 to 10"),
            "{}",
            fixes[0].summary
        );
        let mut swap_in = swapping(Some(30), 0.0);
        swap_in.memory.swap_in_per_sec = 3.0;
        let fixes = fixes_of(SWAP, MEM, &swap_in, &ctx, Mode::Balanced);
        assert_eq!(intents(&fixes[0]), [(SWAPPINESS, "30", "10")]);
    }

    #[test]
    fn swappiness_nothing_without_swapping_file_or_room() {
        let ctx = Context::default();
        for snap in [
            swapping(Some(60), 0.0),
            swapping(None, 12.0),
            swapping(Some(10), 12.0),
            swapping(Some(1), 12.0),
        ] {
            assert!(
                fixes_of(SWAP, MEM, &snap, &ctx, Mode::Aggressive).is_empty(),
                "{:?}",
                snap.memory.tunables
            );
        }
        let cpu = swapping(Some(60), 12.0);
        assert!(fixes_of(SWAP, CPU, &cpu, &ctx, Mode::Aggressive).is_empty());
    }

    /// 8 GiB of RAM with `dirty_mib` dirty and the given ratios.
    fn dirty(dirty_mib: u64, background: Option<u32>, ratio: Option<u32>) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.memory.total_kb = 8 * GIB_KB;
        snap.memory.dirty_kb = dirty_mib * 1024 / 2;
        snap.memory.writeback_kb = dirty_mib * 1024 / 2;
        snap.memory.tunables.dirty_background_ratio = background;
        snap.memory.tunables.dirty_ratio = ratio;
        snap
    }

    const DIRTY: &str = "lower-dirty-ratios";
    const IO: BottleneckKind = BottleneckKind::IoSaturation;

    #[test]
    fn dirty_backlog_lowers_both_ratios_background_first() {
        // 600 MiB of 8 GiB is 7.3 %.
        let snap = dirty(600, Some(10), Some(20));
        let ctx = Context::default();
        assert!(fixes_of(DIRTY, IO, &snap, &ctx, Mode::Conservative).is_empty());
        let fixes = fixes_of(DIRTY, IO, &snap, &ctx, Mode::Balanced);
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].risk, Risk::Medium);
        assert_eq!(fixes[0].measure, Measure::HostPsiIoFull);
        assert_eq!(
            intents(&fixes[0]),
            [
                (DIRTY_BACKGROUND_RATIO, "10", "5"),
                (DIRTY_RATIO, "20", "10")
            ]
        );
        assert!(fixes[0].summary.contains("7.3 %"), "{}", fixes[0].summary);
    }

    #[test]
    fn dirty_ratio_is_only_ever_lowered() {
        let ctx = Context::default();
        for ratio in [Some(10), Some(8), Some(0), None] {
            let snap = dirty(600, Some(10), ratio);
            let fixes = fixes_of(DIRTY, IO, &snap, &ctx, Mode::Balanced);
            assert_eq!(
                intents(&fixes[0]),
                [(DIRTY_BACKGROUND_RATIO, "10", "5")],
                "{ratio:?}"
            );
        }
    }

    #[test]
    fn dirty_nothing_without_backlog_file_or_room() {
        let ctx = Context::default();
        for snap in [
            dirty(400, Some(10), Some(20)), // 4.9 %: no backlog
            dirty(600, None, Some(20)),
            dirty(600, Some(5), Some(20)),
            dirty(600, Some(0), Some(20)), // dirty_background_bytes in force
            Snapshot::default(),
        ] {
            assert!(
                fixes_of(DIRTY, IO, &snap, &ctx, Mode::Aggressive).is_empty(),
                "{:?}",
                snap.memory
            );
        }
    }

    fn governors(list: &[(u32, &str, &str)]) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.memory.tunables.governors = list
            .iter()
            .map(|&(cpu, governor, available)| CpuGovernor {
                cpu,
                governor: governor.into(),
                available: available.split_whitespace().map(str::to_string).collect(),
            })
            .collect();
        snap
    }

    const GOVERNOR: &str = "performance-governor";

    #[test]
    fn slow_cpus_that_offer_performance_get_it() {
        let snap = governors(&[
            (0, "powersave", "performance powersave"),
            (1, "performance", "performance powersave"),
            (2, "schedutil", "schedutil ondemand"),
            (3, "ondemand", "performance ondemand"),
        ]);
        let ctx = Context::default();
        assert!(fixes_of(GOVERNOR, CPU, &snap, &ctx, Mode::Conservative).is_empty());
        let fixes = fixes_of(GOVERNOR, CPU, &snap, &ctx, Mode::Balanced);
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].risk, Risk::Medium);
        assert_eq!(fixes[0].measure, Measure::HostPsiCpuSome);
        let cpu0 = governor_path(0);
        let cpu3 = governor_path(3);
        assert_eq!(
            intents(&fixes[0]),
            [
                (cpu0.as_str(), "powersave", "performance"),
                (cpu3.as_str(), "ondemand", "performance")
            ]
        );
        assert!(
            fixes[0].summary.contains("CPUs 0,3"),
            "{}",
            fixes[0].summary
        );
    }

    #[test]
    fn governor_nothing_without_cpufreq_or_when_all_performance() {
        let ctx = Context::default();
        for snap in [
            governors(&[]),
            governors(&[(0, "performance", "performance powersave")]),
            governors(&[(0, "schedutil", "schedutil")]),
        ] {
            assert!(fixes_of(GOVERNOR, CPU, &snap, &ctx, Mode::Aggressive).is_empty());
        }
        let slow = governors(&[(0, "powersave", "performance powersave")]);
        assert!(fixes_of(GOVERNOR, IO, &slow, &ctx, Mode::Aggressive).is_empty());
    }
}
