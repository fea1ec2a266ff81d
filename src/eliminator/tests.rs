//! Detector tests over synthetic snapshots: each kind fires after exactly `hold_ticks`,
//! never on a single spike, and clears only after `hold_ticks` of absence.

use std::sync::Arc;

use super::detect::{Series, Thresholds, exhaustion_eta_secs};
use super::*;
use crate::model::{
    AgentClass, ContainerStat, CpuTimes, DiskStat, LogicalCpu, PsiLine, PsiResource, Topology,
};

const MIB: f64 = 1024.0 * 1024.0;

/// A change made to a quiet snapshot.
type Tweak = fn(&mut Snapshot);

fn psi(some: f32, full: Option<f32>) -> Option<PsiResource> {
    let line = |avg10| PsiLine {
        avg10,
        ..PsiLine::default()
    };
    Some(PsiResource {
        some: line(some),
        full: full.map(line),
    })
}

fn busy_times(busy: f32) -> CpuTimes {
    CpuTimes {
        user: busy,
        idle: 100.0 - busy,
        ..CpuTimes::default()
    }
}

/// A quiet 2-CPU host with 8 GiB, 2 GiB used, one tick per second.
fn quiet(seq: u64) -> Snapshot {
    let cpus = (0..2)
        .map(|id| LogicalCpu {
            id,
            online: true,
            ..LogicalCpu::default()
        })
        .collect();
    let mut snap = Snapshot {
        seq,
        taken_at_ms: 1_000_000 + seq * 1000,
        interval_ms: 1000,
        topology: Arc::new(Topology {
            cpus,
            ..Topology::default()
        }),
        ..Snapshot::default()
    };
    snap.cpu.total = busy_times(10.0);
    snap.cpu.runnable = 1;
    snap.memory.total_kb = 8 * 1024 * 1024;
    snap.memory.available_kb = 6 * 1024 * 1024;
    snap.pressure.cpu = psi(1.0, None);
    snap.pressure.memory = psi(0.0, Some(0.0));
    snap.pressure.io = psi(0.0, Some(0.0));
    snap
}

fn busy(seq: u64) -> Snapshot {
    let mut snap = quiet(seq);
    snap.cpu.total = busy_times(95.0);
    snap
}

fn container(id: &str, class: Option<AgentClass>, cpu_pct: f32) -> ContainerStat {
    ContainerStat {
        id: id.to_string(),
        name: format!("agent-{id}"),
        state: "running".to_string(),
        class,
        cpu_pct,
        ..ContainerStat::default()
    }
}

fn detector() -> Detector {
    Detector::new(DetectConfig::default())
}

fn kinds(found: &[Bottleneck]) -> Vec<BottleneckKind> {
    found.iter().map(|b| b.kind).collect()
}

fn has(found: &[Bottleneck], kind: BottleneckKind) -> bool {
    found.iter().any(|b| b.kind == kind)
}

/// Feed snapshots made by `make(seq)` for seq in `range`; returns the last report.
fn feed(
    d: &mut Detector,
    range: std::ops::RangeInclusive<u64>,
    make: impl Fn(u64) -> Snapshot,
) -> Vec<Bottleneck> {
    let mut last = Vec::new();
    for seq in range {
        last = d.observe(&make(seq));
    }
    last
}

/// Run `make` for hold_ticks (3) ticks, asserting `kind` is absent before the third and
/// present on it.
fn fires_on_third_tick(kind: BottleneckKind, make: impl Fn(u64) -> Snapshot) -> Bottleneck {
    let mut d = detector();
    for seq in 1..=2 {
        let found = d.observe(&make(seq));
        assert!(
            !has(&found, kind),
            "{kind:?} fired early at tick {seq}: {found:?}"
        );
    }
    let found = d.observe(&make(3));
    let hit = found.iter().find(|b| b.kind == kind);
    hit.cloned()
        .unwrap_or_else(|| panic!("{kind:?} did not fire on tick 3: {found:?}"))
}

fn evidence_of<'a>(b: &'a Bottleneck, metric: &str) -> &'a Evidence {
    b.evidence
        .iter()
        .find(|e| e.metric == metric)
        .unwrap_or_else(|| panic!("no {metric} in {:?}", b.evidence))
}

// --- hysteresis ----------------------------------------------------------------------------

#[test]
fn cpu_saturation_fires_after_exactly_hold_ticks() {
    let b = fires_on_third_tick(BottleneckKind::CpuSaturation, busy);
    assert_eq!(b.subject, Subject::Host);
    assert_eq!(b.since_seq, 1);
    let e = evidence_of(&b, "cpu_busy_pct");
    assert_eq!((e.value, e.threshold, e.unit.as_str()), (95.0, 85.0, "%"));
}

#[test]
fn hold_ticks_comes_from_the_config() {
    let config = DetectConfig {
        hold_ticks: 5,
        ..DetectConfig::default()
    };
    let mut d = Detector::new(config);
    assert!(feed(&mut d, 1..=4, busy).is_empty());
    assert_eq!(kinds(&d.observe(&busy(5))), [BottleneckKind::CpuSaturation]);
}

#[test]
fn a_single_spike_or_a_broken_run_does_not_fire() {
    let mut d = detector();
    for seq in 1..=12 {
        let snap = if seq % 2 == 0 { busy(seq) } else { quiet(seq) };
        assert!(d.observe(&snap).is_empty(), "fired at {seq}");
    }
    // Two busy, one quiet, two busy: never three in a row.
    let mut d = detector();
    let pattern = [true, true, false, true, true, false];
    for (i, &is_busy) in pattern.iter().enumerate() {
        let seq = i as u64 + 1;
        let snap = if is_busy { busy(seq) } else { quiet(seq) };
        assert!(d.observe(&snap).is_empty(), "fired at {seq}");
    }
}

#[test]
fn clearing_needs_hold_ticks_of_absence_and_a_dip_resets_it() {
    let mut d = detector();
    assert!(has(
        &feed(&mut d, 1..=3, busy),
        BottleneckKind::CpuSaturation
    ));
    // One quiet tick, then busy again: the dip does not clear it.
    assert!(has(&d.observe(&quiet(4)), BottleneckKind::CpuSaturation));
    assert!(has(&d.observe(&busy(5)), BottleneckKind::CpuSaturation));
    // Two quiet ticks: still raised, with the last evidence; the third clears it.
    for seq in 6..=7 {
        let found = d.observe(&quiet(seq));
        assert_eq!(kinds(&found), [BottleneckKind::CpuSaturation], "tick {seq}");
        assert_eq!(found[0].since_seq, 1);
        assert_eq!(evidence_of(&found[0], "cpu_busy_pct").value, 95.0);
    }
    assert!(d.observe(&quiet(8)).is_empty());
    // Raised again later, it counts from its new run.
    assert!(feed(&mut d, 9..=10, busy).is_empty());
    assert_eq!(d.observe(&busy(11))[0].since_seq, 9);
}

#[test]
fn the_same_snapshot_twice_is_one_tick() {
    let mut d = detector();
    let snap = busy(1);
    for _ in 0..5 {
        assert!(d.observe(&snap).is_empty());
    }
    assert!(d.observe(&busy(2)).is_empty());
    assert_eq!(kinds(&d.observe(&busy(3))), [BottleneckKind::CpuSaturation]);
    assert_eq!(kinds(d.current()), [BottleneckKind::CpuSaturation]);
}

#[test]
fn bottlenecks_serialize_as_numbers() {
    let b = fires_on_third_tick(BottleneckKind::CpuSaturation, busy);
    let json = serde_json::to_value(&b).unwrap();
    assert_eq!(json["kind"], "cpu_saturation");
    assert_eq!(json["subject"]["type"], "host");
    assert_eq!(json["evidence"][0]["value"], 95.0);
    assert_eq!(json["since_seq"], 1);
}

// --- CPU, memory, I/O -----------------------------------------------------------------------

#[test]
fn cpu_saturation_from_psi_or_run_queue_alone() {
    let b = fires_on_third_tick(BottleneckKind::CpuSaturation, |seq| {
        let mut s = quiet(seq);
        s.pressure.cpu = psi(25.0, None);
        s
    });
    assert_eq!(evidence_of(&b, "psi_cpu_some_avg10").threshold, 20.0);
    assert_eq!(b.evidence.len(), 1);
    let b = fires_on_third_tick(BottleneckKind::CpuSaturation, |seq| {
        let mut s = quiet(seq);
        s.cpu.runnable = 5;
        s
    });
    let e = evidence_of(&b, "runnable_tasks");
    assert_eq!((e.value, e.threshold), (5.0, 4.0));
    // Exactly twice the CPUs is not above it; no interval measured is not busy.
    let mut d = detector();
    let at_limit = feed(&mut d, 1..=5, |seq| {
        let mut s = quiet(seq);
        s.cpu.runnable = 4;
        s.pressure.cpu = psi(19.9, None);
        s.cpu.total = CpuTimes::default();
        s
    });
    assert!(at_limit.is_empty(), "{at_limit:?}");
}

#[test]
fn cpu_threshold_follows_max_cpu_usage() {
    let config = DetectConfig {
        max_cpu_usage: 0.97,
        ..DetectConfig::default()
    };
    let mut d = Detector::new(config);
    assert!(feed(&mut d, 1..=5, busy).is_empty());
}

#[test]
fn memory_pressure_from_each_signal() {
    let used = fires_on_third_tick(BottleneckKind::MemoryPressure, |seq| {
        let mut s = quiet(seq);
        s.memory.available_kb = s.memory.total_kb / 10;
        s
    });
    let e = evidence_of(&used, "mem_used_pct");
    assert!(
        (e.value - 90.0).abs() < 1e-3 && e.threshold == 80.0,
        "{e:?}"
    );
    let cases: [(&str, Tweak); 3] = [
        ("psi_memory_some_avg10", |s| {
            s.pressure.memory = psi(12.0, None)
        }),
        ("swap_pages_per_sec", |s| {
            s.memory.swap_in_per_sec = 60.0;
            s.memory.swap_out_per_sec = 50.0;
        }),
        ("major_faults_per_sec", |s| {
            s.memory.major_faults_per_sec = 1500.0
        }),
    ];
    for (metric, change) in cases {
        let b = fires_on_third_tick(BottleneckKind::MemoryPressure, |seq| {
            let mut s = quiet(seq);
            change(&mut s);
            s
        });
        assert_eq!(b.evidence.len(), 1, "{metric}: {:?}", b.evidence);
        assert_eq!(b.evidence[0].metric, metric);
    }
    assert_eq!(
        evidence_of(
            &fires_on_third_tick(BottleneckKind::MemoryPressure, |seq| {
                let mut s = quiet(seq);
                s.memory.swap_in_per_sec = 110.0;
                s
            }),
            "swap_pages_per_sec"
        )
        .value,
        110.0
    );
    // 85% used is under a max_memory_usage of 0.9.
    let config = DetectConfig {
        max_memory_usage: 0.9,
        ..DetectConfig::default()
    };
    let mut d = Detector::new(config);
    let found = feed(&mut d, 1..=5, |seq| {
        let mut s = quiet(seq);
        s.memory.available_kb = s.memory.total_kb * 15 / 100;
        s
    });
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn io_saturation_from_psi_full_or_a_slow_busy_disk() {
    let b = fires_on_third_tick(BottleneckKind::IoSaturation, |seq| {
        let mut s = quiet(seq);
        s.pressure.io = psi(40.0, Some(15.0));
        s
    });
    assert_eq!(evidence_of(&b, "psi_io_full_avg10").value, 15.0);
    let slow_disk = |util: f32, await_ms: f32| DiskStat {
        name: "sda".to_string(),
        util_pct: util,
        await_ms,
        ..DiskStat::default()
    };
    let b = fires_on_third_tick(BottleneckKind::IoSaturation, |seq| {
        let mut s = quiet(seq);
        s.disks = vec![slow_disk(95.0, 60.0)];
        s
    });
    assert_eq!(evidence_of(&b, "disk.sda.util_pct").value, 95.0);
    assert_eq!(evidence_of(&b, "disk.sda.await_ms").value, 60.0);
    // Busy but fast, or slow but idle, is not saturation; nor is PSI "some" alone.
    let mut d = detector();
    let found = feed(&mut d, 1..=5, |seq| {
        let mut s = quiet(seq);
        s.disks = vec![slow_disk(95.0, 10.0), slow_disk(30.0, 200.0)];
        s.pressure.io = psi(40.0, Some(5.0));
        s
    });
    assert!(found.is_empty(), "{found:?}");
}

// --- containers ----------------------------------------------------------------------------

#[test]
fn throttled_container_needs_throttling_on_every_held_tick() {
    let throttled = |delta: u64| {
        move |seq| {
            let mut s = quiet(seq);
            let mut c = container("a1", Some(AgentClass::Batch), 50.0);
            c.throttled_periods_delta = delta;
            c.cpu_limit_cores = Some(0.5);
            s.containers.agents = vec![c, container("b2", None, 5.0)];
            s
        }
    };
    let b = fires_on_third_tick(BottleneckKind::ThrottledContainer, throttled(7));
    assert_eq!(
        b.subject,
        Subject::Container {
            id: "a1".to_string(),
            name: "agent-a1".to_string()
        }
    );
    assert_eq!(evidence_of(&b, "throttled_periods_delta").value, 7.0);
    assert_eq!(evidence_of(&b, "cpu_pct").threshold, 50.0);
    let mut d = detector();
    d.observe(&throttled(3)(1));
    d.observe(&throttled(0)(2));
    assert!(d.observe(&throttled(3)(3)).is_empty());
}

fn noisy_host(batch_cpu: f32, latency_psi: Option<f32>, host_psi: f32) -> impl Fn(u64) -> Snapshot {
    move |seq| {
        let mut s = quiet(seq);
        s.pressure.cpu = psi(host_psi, None);
        let mut latency = container("lat", Some(AgentClass::Latency), 10.0);
        latency.pressure.cpu = latency_psi.and_then(|v| psi(v, None));
        s.containers.agents = vec![
            container("bat", Some(AgentClass::Batch), batch_cpu),
            latency,
            container("calm", Some(AgentClass::Batch), 20.0),
        ];
        s
    }
}

#[test]
fn noisy_neighbour_is_about_the_starved_latency_agent_and_names_the_batch_burners() {
    let b = fires_on_third_tick(
        BottleneckKind::NoisyNeighbour,
        noisy_host(80.0, Some(15.0), 5.0),
    );
    assert_eq!(
        b.subject,
        Subject::Container {
            id: "lat".to_string(),
            name: "agent-lat".to_string()
        }
    );
    assert_eq!(evidence_of(&b, "agent-bat.cpu_pct").value, 80.0);
    // A calm batch agent (20% CPU) is no culprit.
    assert!(
        b.evidence.iter().all(|e| !e.metric.contains("calm")),
        "{b:?}"
    );
    assert_eq!(evidence_of(&b, "agent-lat.psi_cpu_some_avg10").value, 15.0);
    // Without container PSI, the host's PSI stands in (at its own, higher threshold).
    let b = fires_on_third_tick(BottleneckKind::NoisyNeighbour, noisy_host(80.0, None, 25.0));
    assert_eq!(
        evidence_of(&b, "agent-lat.host_psi_cpu_some_avg10").threshold,
        20.0
    );
    // A mostly idle latency agent (10% CPU) stalled 5% of the time waits half a second for
    // every second it runs: slowed 1.5x though its PSI is under 10%.
    let b = fires_on_third_tick(
        BottleneckKind::NoisyNeighbour,
        noisy_host(80.0, Some(5.0), 30.0),
    );
    let stall = evidence_of(&b, "agent-lat.stall_per_cpu");
    assert!(
        (stall.value - 0.5).abs() < 1e-6 && stall.threshold == 0.25,
        "{stall:?}"
    );
    for quiet_case in [
        noisy_host(40.0, Some(15.0), 30.0),
        // Under the 2% floor: an idle agent's rounding never counts as starving.
        noisy_host(80.0, Some(1.5), 30.0),
        // 2% stall for 10% CPU: 0.2 per unit of CPU, under 0.25.
        noisy_host(80.0, Some(2.0), 30.0),
        noisy_host(80.0, None, 15.0),
    ] {
        let mut d = detector();
        let found = feed(&mut d, 1..=5, quiet_case);
        assert!(!has(&found, BottleneckKind::NoisyNeighbour), "{found:?}");
    }
}

#[test]
fn runaway_agent_is_above_three_fair_shares() {
    // 2 CPUs, 4 running agents: fair share 50%, runaway above 150%.
    let host = |hog: f32| {
        move |seq| {
            let mut s = quiet(seq);
            let mut stopped = container("gone", None, 0.0);
            stopped.state = "exited".to_string();
            s.containers.agents = vec![
                container("hog", None, hog),
                container("b", None, 5.0),
                container("c", None, 5.0),
                container("d", None, 5.0),
                stopped,
            ];
            s
        }
    };
    let b = fires_on_third_tick(BottleneckKind::RunawayAgent, host(160.0));
    let e = evidence_of(&b, "cpu_pct");
    assert_eq!((e.value, e.threshold), (160.0, 150.0));
    let shares = evidence_of(&b, "fair_shares");
    assert_eq!((shares.value, shares.threshold), (3.2, 3.0));
    let mut d = detector();
    assert!(!has(
        &feed(&mut d, 1..=5, host(140.0)),
        BottleneckKind::RunawayAgent
    ));
}

// --- prediction ----------------------------------------------------------------------------

/// Deterministic noise in [-1, 1) (a linear congruential generator).
fn noise(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    ((*state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

fn with_memory_container(seq: u64, mem: f64, limit: f64) -> Snapshot {
    let mut s = quiet(seq);
    let mut c = container("grow", Some(AgentClass::Batch), 10.0);
    c.mem_bytes = mem as u64;
    c.mem_limit_bytes = Some(limit as u64);
    s.containers.agents = vec![c];
    s
}

#[test]
fn holt_forecasts_a_linear_growers_eta_within_ten_percent() {
    let limit = 1024.0 * MIB;
    let rate = 2.0 * MIB; // per one-second tick
    let mut rng = 42;
    let mut d = detector();
    let mut first_fire = None;
    for seq in 1..=40u64 {
        let mem = 420.0 * MIB + rate * (seq - 1) as f64 + 0.3 * MIB * noise(&mut rng);
        let found = d.observe(&with_memory_container(seq, mem, limit));
        let Some(b) = found
            .iter()
            .find(|b| b.kind == BottleneckKind::PredictedExhaustion)
        else {
            continue;
        };
        first_fire.get_or_insert(seq);
        let true_eta = (limit - (420.0 * MIB + rate * (seq - 1) as f64)) / rate;
        let eta = evidence_of(b, "eta_secs").value;
        assert!(
            (eta - true_eta).abs() <= 0.1 * true_eta,
            "tick {seq}: eta {eta} vs {true_eta}"
        );
        assert!(matches!(&b.subject, Subject::Container { id, .. } if id == "grow"));
    }
    // 10 points to forecast, then 3 ticks to hold: first report on tick 12.
    assert_eq!(first_fire, Some(12));
}

#[test]
fn prediction_needs_ten_points_and_respects_the_horizon() {
    let t = Thresholds::default();
    let mut series = Series::default();
    for i in 0..9u64 {
        series.push(i * 1000, 100.0 + i as f64, 60);
    }
    assert_eq!(exhaustion_eta_secs(&series, 120.0, 1.0, &t), None);
    series.push(9000, 109.0, 60);
    let eta = exhaustion_eta_secs(&series, 120.0, 1.0, &t).unwrap();
    assert!((eta - 11.0).abs() < 1e-6, "{eta}");
    // 1000 s away is beyond the 300 s horizon.
    assert_eq!(exhaustion_eta_secs(&series, 1109.0, 1.0, &t), None);
    // The step comes from the clocks: 2 s per point doubles the ETA.
    let mut slow = Series::default();
    for i in 0..10u64 {
        slow.push(i * 2000, 100.0 + i as f64, 60);
    }
    let eta = exhaustion_eta_secs(&slow, 120.0, 1.0, &t).unwrap();
    assert!((eta - 22.0).abs() < 1e-6, "{eta}");
}

#[test]
fn flat_noisy_memory_never_predicts_exhaustion() {
    let limit = 560.0 * MIB;
    let mut rng = 7;
    let mut d = detector();
    for seq in 1..=400u64 {
        let mem = 500.0 * MIB + 30.0 * MIB * noise(&mut rng);
        let mut snap = with_memory_container(seq, mem, limit);
        // Host memory flat and noisy too, near its own total.
        let total = snap.memory.total_kb as f64;
        snap.memory.available_kb = (total * (0.25 + 0.02 * noise(&mut rng))) as u64;
        let found = d.observe(&snap);
        assert!(
            !has(&found, BottleneckKind::PredictedExhaustion),
            "tick {seq}: {found:?}"
        );
    }
}

#[test]
fn without_the_slope_guard_holt_alone_would_cry_wolf_on_noise() {
    // The same kind of flat noisy series: Holt's trend alone does forecast exhaustion now
    // and then, which is exactly what the significance guard is for.
    let unguarded = Thresholds {
        trend_min_t: f64::NEG_INFINITY,
        ..Thresholds::default()
    };
    let guarded = Thresholds::default();
    let limit = 560.0 * MIB;
    let mut rng = 7;
    let mut series = Series::default();
    let (mut false_alarms, mut guarded_alarms) = (0, 0);
    for i in 0..400u64 {
        series.push(i * 1000, 500.0 * MIB + 30.0 * MIB * noise(&mut rng), 60);
        false_alarms += usize::from(exhaustion_eta_secs(&series, limit, 1.0, &unguarded).is_some());
        guarded_alarms += usize::from(exhaustion_eta_secs(&series, limit, 1.0, &guarded).is_some());
    }
    assert!(false_alarms > 10, "{false_alarms}");
    assert_eq!(guarded_alarms, 0);
}

#[test]
fn host_memory_exhaustion_is_predicted() {
    let mut d = detector();
    let mut found = Vec::new();
    for seq in 1..=15u64 {
        let mut s = quiet(seq);
        // 8 GiB total; used grows 20 MiB/s from 6.5 GiB: about 63 s left at tick 15.
        let used_kb = (6.5 * 1024.0 * 1024.0) as u64 + 20 * 1024 * (seq - 1);
        s.memory.available_kb = s.memory.total_kb - used_kb;
        found = d.observe(&s);
    }
    let b = found
        .iter()
        .find(|b| b.kind == BottleneckKind::PredictedExhaustion)
        .unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!(b.subject, Subject::Host);
    let eta = evidence_of(b, "eta_secs").value;
    let true_eta = (1.5 * 1024.0 - 20.0 * 14.0) / 20.0;
    assert!(
        (eta - true_eta).abs() <= 0.1 * true_eta,
        "{eta} vs {true_eta}"
    );
}

#[test]
fn a_container_that_leaves_loses_its_series() {
    let limit = 1024.0 * MIB;
    let mut d = detector();
    for seq in 1..=8u64 {
        d.observe(&with_memory_container(
            seq,
            900.0 * MIB + 10.0 * MIB * seq as f64,
            limit,
        ));
    }
    d.observe(&quiet(9));
    // Back with 8 fresh points: still under the 10 needed, so nothing is forecast.
    let mut found = Vec::new();
    for seq in 10..=17u64 {
        found = d.observe(&with_memory_container(
            seq,
            900.0 * MIB + 10.0 * MIB * seq as f64,
            limit,
        ));
    }
    assert!(
        !has(&found, BottleneckKind::PredictedExhaustion),
        "{found:?}"
    );
}

#[test]
fn without_cgroup_psi_a_latency_agents_run_delay_says_it_is_starved() {
    use crate::model::RunDelay;
    let host = |wait_per_run: f64, wait_ms_per_sec: f64| {
        move |seq| {
            let mut s = noisy_host(80.0, None, 30.0)(seq);
            if let Some(latency) = s.containers.agents.iter_mut().find(|c| c.id == "lat") {
                latency.run_delay = Some(RunDelay {
                    wait_ms_per_sec,
                    wait_per_run,
                });
            }
            s
        }
    };
    let b = fires_on_third_tick(BottleneckKind::NoisyNeighbour, host(0.6, 60.0));
    let delay = evidence_of(&b, "agent-lat.run_delay_per_cpu");
    assert!(
        (delay.value - 0.6).abs() < 1e-9 && delay.threshold == 0.25,
        "{delay:?}"
    );
    // Its own figure says it is fine: the busy host's PSI does not overrule it.
    for calm in [host(0.1, 60.0), host(0.6, 10.0)] {
        let mut d = detector();
        let found = feed(&mut d, 1..=5, calm);
        assert!(!has(&found, BottleneckKind::NoisyNeighbour), "{found:?}");
    }
}
