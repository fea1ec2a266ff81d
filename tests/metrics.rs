//! Prometheus exposition (`sutazai_top::metrics::render`) checked with a real parser: the
//! OpenMetrics parser of the Python prometheus_client (Debian's python3-prometheus-client).
//!
//! The crate writes OpenMetrics 1.0 text, so the OpenMetrics parser is the one that applies
//! (it is also the strict one: it refuses a missing `# EOF`, a counter without `_total`, a
//! unit that is not the name's suffix, bad escapes and interleaved families). The classic
//! 0.0.4 text parser would read our counters as untyped. Needs python3-prometheus-client
//! (scripts/test.sh installs it) and a running dockerd for the real-engine test; both fail,
//! never skip, when missing.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Container, RunningEngine, test_config, unique};
use sutazai_top::model::Risk;
use sutazai_top::model::{DockerStatus, Snapshot};

/// Parses stdin with the OpenMetrics parser; prints {family: {type, unit, samples}} as JSON,
/// and every (name, labels) that occurs twice.
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = sys.stdin.read()
families, seen, duplicates = {}, set(), []
for fam in text_string_to_metric_families(text):
    if fam.name in families:
        duplicates.append(["family", fam.name])
    samples = []
    for s in fam.samples:
        key = (s.name, tuple(sorted(s.labels.items())))
        if key in seen:
            duplicates.append([s.name, s.labels])
        seen.add(key)
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
    families[fam.name] = {"type": fam.type, "unit": fam.unit, "help": fam.documentation,
                          "samples": samples}
print(json.dumps({"families": families, "duplicates": duplicates}))
"#;

fn python() -> &'static str {
    // Debian's interpreter is the one python3-prometheus-client installs into (a pyenv or
    // venv python3 earlier on PATH would not see it).
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// The parsed exposition; panics with the parser's message when it refuses the text.
fn parse(text: &str) -> Parsed {
    let mut child = Command::new(python())
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition: {}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let duplicates = json["duplicates"].as_array().unwrap();
    assert!(duplicates.is_empty(), "duplicate series: {duplicates:?}");
    Parsed(json["families"].as_object().unwrap().clone())
}

struct Parsed(serde_json::Map<String, Value>);

impl Parsed {
    fn family(&self, name: &str, kind: &str) -> &Value {
        let family = self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no family {name}; have {:?}", self.0.keys()));
        assert_eq!(family["type"], kind, "type of {name}");
        assert!(
            !family["help"].as_str().unwrap_or("").is_empty(),
            "{name} has no HELP"
        );
        family
    }

    fn samples(&self, name: &str, kind: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.family(name, kind)["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (labels, s["value"].as_f64().unwrap())
            })
            .collect()
    }

    /// The value of the one sample of `name` whose labels include `with`.
    fn value(&self, name: &str, kind: &str, with: &[(&str, &str)]) -> f64 {
        let hits: Vec<f64> = self
            .samples(name, kind)
            .into_iter()
            .filter(|(labels, _)| {
                with.iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .collect();
        assert_eq!(hits.len(), 1, "{name} {with:?}: {hits:?}");
        hits[0]
    }

    fn unit(&self, name: &str) -> &str {
        self.0[name]["unit"].as_str().unwrap_or("")
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1e-3)
}

/// The checks that hold for any snapshot: families, types, units, and values equal to the
/// snapshot's.
fn check_against_snapshot(snap: &Snapshot, parsed: &Parsed) {
    let mem = &snap.memory;
    assert_eq!(
        parsed.value("sutazai_memory_total_bytes", "gauge", &[]),
        (mem.total_kb * 1024) as f64
    );
    assert_eq!(parsed.unit("sutazai_memory_total_bytes"), "bytes");
    assert_eq!(
        parsed.value("sutazai_memory_available_bytes", "gauge", &[]),
        (mem.available_kb * 1024) as f64
    );
    assert_eq!(
        parsed.value("sutazai_memory_used_bytes", "gauge", &[]),
        ((mem.total_kb - mem.available_kb) * 1024) as f64
    );
    assert_eq!(
        parsed.value("sutazai_swap_total_bytes", "gauge", &[]),
        (mem.swap_total_kb * 1024) as f64
    );
    assert!(close(
        parsed.value("sutazai_load1", "gauge", &[]),
        f64::from(snap.cpu.load1)
    ));

    let per_cpu = parsed.samples("sutazai_cpu_busy_ratio", "gauge");
    let with_data = snap
        .cpu
        .per_cpu
        .iter()
        .filter(|(_, t)| t.has_data())
        .count();
    assert_eq!(per_cpu.len(), with_data);
    for (id, times) in snap.cpu.per_cpu.iter().filter(|(_, t)| t.has_data()) {
        let v = parsed.value(
            "sutazai_cpu_busy_ratio",
            "gauge",
            &[("cpu", &id.to_string())],
        );
        assert!(close(v, f64::from(times.busy() / 100.0)), "cpu {id}: {v}");
        assert!((0.0..=1.0).contains(&v));
    }

    if let Some(psi) = snap.pressure.memory {
        let v = parsed.value(
            "sutazai_pressure_some_stall_seconds",
            "counter",
            &[("resource", "memory")],
        );
        assert!(close(v, psi.some.total_us as f64 / 1e6));
        assert_eq!(
            parsed.unit("sutazai_pressure_some_stall_seconds"),
            "seconds"
        );
        let v = parsed.value(
            "sutazai_pressure_some_avg10_ratio",
            "gauge",
            &[("resource", "memory")],
        );
        assert!(close(v, f64::from(psi.some.avg10 / 100.0)));
    }

    // Agents: the count, one sample per agent per family, and each agent's figures.
    let agents = &snap.containers.agents;
    assert_eq!(
        parsed.value("sutazai_agents", "gauge", &[]),
        agents.len() as f64
    );
    if !agents.is_empty() {
        assert_eq!(
            parsed.samples("sutazai_agent_up", "gauge").len(),
            agents.len()
        );
        assert_eq!(
            parsed.samples("sutazai_agent_memory_bytes", "gauge").len(),
            agents.len()
        );
        let limited = agents
            .iter()
            .filter(|a| a.mem_limit_bytes.is_some())
            .count();
        if limited > 0 {
            assert_eq!(
                parsed
                    .samples("sutazai_agent_memory_limit_bytes", "gauge")
                    .len(),
                limited
            );
        }
    }
    for agent in agents {
        let who = [("name", agent.name.as_str()), ("id", &agent.id[..12])];
        assert_eq!(
            parsed.value("sutazai_agent_memory_bytes", "gauge", &who),
            agent.mem_bytes as f64,
            "{}",
            agent.name
        );
        assert!(close(
            parsed.value("sutazai_agent_cpu_ratio", "gauge", &who),
            f64::from(agent.cpu_pct / 100.0)
        ));
        assert_eq!(
            parsed.value("sutazai_agent_cpu_throttled_periods", "counter", &who),
            agent.throttled_periods_total as f64
        );
        let up = if agent.state == "running" { 1.0 } else { 0.0 };
        assert_eq!(parsed.value("sutazai_agent_up", "gauge", &who), up);
        if let Some(limit) = agent.mem_limit_bytes {
            assert_eq!(
                parsed.value("sutazai_agent_memory_limit_bytes", "gauge", &who),
                limit as f64
            );
        }
    }

    // Engine: tick, sampling cost per sampler, mode, counts.
    assert_eq!(
        parsed.value("sutazai_engine_ticks", "counter", &[]),
        snap.seq as f64
    );
    for sampler in &snap.samplers {
        let v = parsed.value(
            "sutazai_sampler_cpu_seconds",
            "counter",
            &[("sampler", &sampler.name)],
        );
        assert!(
            close(v, sampler.total_cpu_us as f64 / 1e6),
            "{}",
            sampler.name
        );
        let v = parsed.value(
            "sutazai_sampler_last_round_duration_seconds",
            "gauge",
            &[("sampler", &sampler.name)],
        );
        assert!(close(v, sampler.last_duration_us as f64 / 1e6));
    }
    for mode in ["conservative", "balanced", "aggressive"] {
        let expected = if snap.mode.label() == mode { 1.0 } else { 0.0 };
        assert_eq!(
            parsed.value("sutazai_engine_mode", "gauge", &[("mode", mode)]),
            expected
        );
    }
    assert_eq!(
        parsed.value("sutazai_engine_auto_fix", "gauge", &[]),
        f64::from(u8::from(snap.auto_fix))
    );
    let bottlenecks: f64 = parsed
        .samples("sutazai_bottlenecks", "gauge")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(bottlenecks, snap.bottlenecks.len() as f64);
    let proposals: f64 = parsed
        .samples("sutazai_proposals", "gauge")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(proposals, snap.proposals.len() as f64);
    assert_eq!(
        parsed.value("sutazai_change_batches_active", "gauge", &[]),
        snap.changes.active.len() as f64
    );
    parsed.family("sutazai_alerts_dropped", "counter");
}

#[test]
fn synthetic_131_agents_parse_and_match_the_snapshot() {
    let snap = common::with_active_changes(common::with_proposal(
        common::with_containers(131),
        Risk::Low,
    ));
    let text = sutazai_top::metrics::render(&snap);
    let parsed = parse(&text);
    check_against_snapshot(&snap, &parsed);

    // Figures this builder fixes.
    assert_eq!(parsed.samples("sutazai_agent_up", "gauge").len(), 131);
    assert_eq!(
        parsed
            .samples("sutazai_agent_memory_limit_bytes", "gauge")
            .len(),
        33,
        "every 4th of 131 agents is limited"
    );
    assert_eq!(
        parsed.value(
            "sutazai_bottlenecks",
            "gauge",
            &[("kind", "noisy_neighbour")]
        ),
        1.0
    );
    assert_eq!(
        parsed.value(
            "sutazai_bottlenecks",
            "gauge",
            &[("kind", "cpu_saturation")]
        ),
        0.0
    );
    assert_eq!(
        parsed.value("sutazai_proposals", "gauge", &[("status", "proposed")]),
        1.0
    );
    assert_eq!(
        parsed.value("sutazai_change_batches_active", "gauge", &[]),
        2.0
    );
    let agent = common::container(4);
    let labels = [
        ("name", "agent-004"),
        ("class", "batch"),
        ("priority", "4"),
        ("id", &agent.id[..12]),
    ];
    assert_eq!(
        parsed.value("sutazai_agent_cpu_weight", "gauge", &labels),
        512.0
    );
    assert_eq!(
        parsed.value(
            "sutazai_transparent_hugepage_enabled",
            "gauge",
            &[("mode", "madvise")]
        ),
        1.0
    );
    assert_eq!(
        parsed.value("sutazai_disk_busy_ratio", "gauge", &[("device", "nvme0n1")]),
        0.92
    );
    assert_eq!(
        parsed.value(
            "sutazai_network_receive_bytes_per_second",
            "gauge",
            &[("device", "eth0")]
        ),
        12.0 * 1024.0 * 1024.0
    );
}

#[test]
fn a_balancer_exports_proxy_and_per_backend_figures() {
    let snap = common::with_balancer(common::with_containers(3));
    let parsed = parse(&sutazai_top::metrics::render(&snap));
    check_against_snapshot(&snap, &parsed);
    let b = snap.balancer.as_ref().unwrap();
    assert_eq!(parsed.value("sutazai_balancer_enabled", "gauge", &[]), 1.0);
    for (family, expected) in [
        ("sutazai_balancer_requests", b.requests_total),
        ("sutazai_balancer_rejected", b.rejected_total),
        ("sutazai_balancer_retries", b.retries_total),
        (
            "sutazai_balancer_retries_over_budget",
            b.retries_over_budget_total,
        ),
        ("sutazai_balancer_bad_requests", b.bad_requests_total),
        (
            "sutazai_balancer_general_path_connections",
            b.general_path_connections_total,
        ),
    ] {
        assert_eq!(
            parsed.value(family, "counter", &[]),
            expected as f64,
            "{family}"
        );
    }
    assert_eq!(parsed.value("sutazai_balancer_queued", "gauge", &[]), 3.0);
    assert_eq!(
        parsed.value("sutazai_balancer_busy_poll_window_seconds", "gauge", &[]),
        b.busy_poll.window_us as f64 / 1e6
    );
    for (outcome, count) in [
        ("paid", b.busy_poll.paid_total),
        ("wasted", b.busy_poll.wasted_total),
    ] {
        assert_eq!(
            parsed.value(
                "sutazai_balancer_busy_poll_stretches",
                "counter",
                &[("outcome", outcome)]
            ),
            count as f64
        );
    }
    assert_eq!(
        parsed.value("sutazai_balancer_busy_poll_seconds", "counter", &[]),
        b.busy_poll.polling_ns_total as f64 / 1e9
    );
    assert_eq!(
        parsed.value("sutazai_balancer_docker_skipped", "gauge", &[]),
        b.docker_skipped.len() as f64
    );
    for pool in &b.pools {
        assert_eq!(
            parsed.value(
                "sutazai_balancer_pool_panic_choices",
                "counter",
                &[("pool", pool.name.as_str())]
            ),
            pool.panic_choices_total as f64,
            "{}",
            pool.name
        );
    }

    // One series per backend per family, labelled with its pool and id.
    assert_eq!(
        parsed
            .samples("sutazai_balancer_backend_requests", "counter")
            .len(),
        5
    );
    for pool in &b.pools {
        for x in &pool.backends {
            let who = [("pool", pool.name.as_str()), ("backend", x.id.as_str())];
            assert_eq!(
                parsed.value("sutazai_balancer_backend_requests", "counter", &who),
                x.requests_total as f64
            );
            assert_eq!(
                parsed.value("sutazai_balancer_backend_errors", "counter", &who),
                x.errors_total as f64
            );
            assert_eq!(
                parsed.value("sutazai_balancer_backend_in_flight", "gauge", &who),
                x.in_flight as f64
            );
            assert_eq!(
                parsed.value("sutazai_balancer_backend_ejections", "counter", &who),
                f64::from(x.ejections)
            );
            assert!(close(
                parsed.value("sutazai_balancer_backend_ewma_seconds", "gauge", &who),
                x.ewma_ms / 1000.0
            ));
            // One-hot: exactly the backend's own state is 1.
            let health: Vec<(String, f64)> = parsed
                .samples("sutazai_balancer_backend_health", "gauge")
                .into_iter()
                .filter(|(l, _)| l["pool"] == pool.name && l["backend"] == x.id)
                .map(|(l, v)| (l["state"].clone(), v))
                .collect();
            assert_eq!(health.len(), 4, "{health:?}");
            for (state, v) in health {
                assert_eq!(v == 1.0, state == x.health.name(), "{} {state}", x.id);
            }
        }
    }
    let p99 = [("pool", "compute"), ("backend", "127.0.0.1:19001")];
    assert!(close(
        parsed.value(
            "sutazai_balancer_backend_latency_p99_seconds",
            "gauge",
            &p99
        ),
        0.85
    ));
    assert_eq!(
        parsed.unit("sutazai_balancer_backend_latency_p99_seconds"),
        "seconds"
    );
    // The ejected backend had no requests this tick: no latency, but its time left out.
    let out = [("pool", "default"), ("backend", "10.0.0.7:8000")];
    assert_eq!(
        parsed
            .samples("sutazai_balancer_backend_latency_p50_seconds", "gauge")
            .len(),
        4
    );
    assert_eq!(
        parsed.value(
            "sutazai_balancer_backend_ejected_remaining_seconds",
            "gauge",
            &out
        ),
        45.0
    );
    assert_eq!(
        parsed.value(
            "sutazai_balancer_backend_circuit",
            "gauge",
            &[("backend", "127.0.0.1:19002"), ("state", "half_open")]
        ),
        1.0
    );
    assert_eq!(
        parsed.value(
            "sutazai_balancer_backend_circuit",
            "gauge",
            &[("backend", "10.0.0.7:8000"), ("state", "open")]
        ),
        1.0
    );

    // Off: only the flag, no figure invented.
    let off = parse(&sutazai_top::metrics::render(&common::with_containers(3)));
    assert_eq!(off.value("sutazai_balancer_enabled", "gauge", &[]), 0.0);
    assert!(!off.0.contains_key("sutazai_balancer_requests"));
    assert!(!off.0.contains_key("sutazai_balancer_backend_in_flight"));
}

#[test]
fn odd_label_values_survive_the_real_parser() {
    let mut snap = common::with_containers(2);
    snap.containers.agents[0].name = "quote\" back\\slash\nnewline".into();
    snap.cpu.load1 = f32::NAN;
    snap.containers.agents[1].cpu_pct = f32::INFINITY;
    let parsed = parse(&sutazai_top::metrics::render(&snap));
    let names: Vec<String> = parsed
        .samples("sutazai_agent_up", "gauge")
        .into_iter()
        .map(|(labels, _)| labels["name"].clone())
        .collect();
    assert!(
        names.contains(&"quote\" back\\slash\nnewline".to_string()),
        "{names:?}"
    );
    assert!(!parsed.0.contains_key("sutazai_load1"));
    assert_eq!(parsed.samples("sutazai_agent_cpu_ratio", "gauge").len(), 1);
}

#[test]
fn a_running_engine_with_a_docker_agent_parses_and_matches() {
    let mut engine = RunningEngine::start(test_config(250));
    engine.wait_for(Duration::from_secs(10), "docker connection", |s| {
        matches!(s.containers.status, DockerStatus::Connected { .. })
    });
    let name = unique("metrics-agent");
    let _agent = Container::run(
        &name,
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=latency",
            "--memory",
            "64m",
        ],
        &["sleep", "600"],
    );
    let snap = engine.wait_for(Duration::from_secs(10), "the agent with usage", |s| {
        s.seq >= 3
            && s.containers
                .agents
                .iter()
                .any(|a| a.name == name && a.mem_bytes > 0)
            && s.samplers.iter().all(|x| x.rounds > 0)
    });
    let text = sutazai_top::metrics::render(&snap);
    let parsed = parse(&text);
    check_against_snapshot(&snap, &parsed);

    let ours = snap
        .containers
        .agents
        .iter()
        .find(|a| a.name == name)
        .unwrap();
    let who = [("name", name.as_str()), ("class", "latency")];
    assert_eq!(
        parsed.value("sutazai_agent_memory_limit_bytes", "gauge", &who),
        (64 * 1024 * 1024) as f64
    );
    assert_eq!(
        parsed.value("sutazai_agent_memory_bytes", "gauge", &who),
        ours.mem_bytes as f64
    );
    assert_eq!(parsed.value("sutazai_docker_up", "gauge", &[]), 1.0);
    // The real host has every sampler and PSI on this kernel.
    assert!(
        parsed
            .samples("sutazai_sampler_cpu_seconds", "counter")
            .len()
            >= 5,
        "{:?}",
        parsed.samples("sutazai_sampler_cpu_seconds", "counter")
    );
    let total: f64 = parsed
        .samples("sutazai_sampler_cpu_seconds", "counter")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert!(total > 0.0, "sampling cost is reported");
}
