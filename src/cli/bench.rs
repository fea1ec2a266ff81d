//! `bench-observe`: the engine's own cost per sampling round, for bench/observation.sh.

use std::time::{Duration, Instant};

use super::faces::wait_for_tick;
use sutazai_top::config::Config;
use sutazai_top::engine::{self, Command};

/// CPU time used by this process so far (user + system).
fn own_cpu_time() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    match usage {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// A field of /proc/self/status in kB (VmRSS, VmHWM).
fn own_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub async fn bench_observe(config: Config, seconds: u64) -> anyhow::Result<()> {
    let interval_ms = config.interval_ms;
    let (mut handle, engine) = engine::spawn(config.engine());
    wait_for_tick(&mut handle, 3).await?;
    let seq0 = handle.snapshots.borrow().seq;
    let cpu0 = own_cpu_time();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = own_cpu_time().saturating_sub(cpu0);
    let wall = t0.elapsed();
    let snap = handle.snapshots.borrow().clone();
    let rounds = snap.seq.saturating_sub(seq0).max(1);
    let summary = serde_json::json!({
        "interval_ms": interval_ms,
        "rounds": rounds,
        "agents": snap.containers.agents.len(),
        "containers_seen": snap.containers.total_seen,
        "processes_kept": snap.processes.len(),
        "cpu_ms_total": cpu.as_secs_f64() * 1e3,
        "cpu_ms_per_round": cpu.as_secs_f64() * 1e3 / rounds as f64,
        "cpu_pct_of_one_core": 100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        "rss_kb": own_status_kb("VmRSS"),
        "peak_rss_kb": own_status_kb("VmHWM"),
        // Mean CPU per round of each sampler over the whole run (warm-up included).
        "sampler_mean_cpu_ms": snap
            .samplers
            .iter()
            .map(|s| (s.name.clone(), s.total_cpu_us as f64 / 1e3 / s.rounds.max(1) as f64))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "samplers": snap.samplers,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    let _ = handle.commands.send(Command::Quit).await;
    let _ = engine.await;
    Ok(())
}
