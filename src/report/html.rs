//! The HTML report: one self-contained page (inline CSS and SVG; no scripts, no fonts or
//! images to fetch), readable printed or on screen. Container names, labels and command
//! lines are user data: every text goes through [`esc`].

use std::fmt::Write;

use serde::Serialize;

use super::escape::esc;
use super::json::{AgentProfile, Outcome, ProposalEntry, Report};
use super::svg::{self, Line};
use crate::model::PsiResource;

/// Agents shown in the CPU bar chart.
const TOP_AGENTS: usize = 15;

const CPU_COLOR: &str = "#2563eb";
const MEM_COLOR: &str = "#059669";
const IO_COLOR: &str = "#d97706";

const STYLE: &str = r#"
:root{color-scheme:light}
body{margin:0;background:#f8fafc;color:#111827;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid #e5e7eb}
h3{font-size:14px;margin:14px 0 6px}
.sub{color:#4b5563;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px}
.card h3{margin:0 0 6px;color:#374151;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card dl{display:grid;grid-template-columns:auto 1fr;gap:2px 12px;margin:0}
.card dt{color:#6b7280}.card dd{margin:0;font-variant-numeric:tabular-nums}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px}
figure{background:#fff;border:1px solid #e5e7eb;border-radius:8px;margin:0;padding:10px 12px}
figcaption{font-weight:600;margin-bottom:4px}
.legend span{display:inline-block;margin-right:14px;color:#374151;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
svg.chart text{font:11px system-ui,sans-serif;fill:#374151}
svg.chart text.axis{fill:#6b7280}
svg.chart text.empty{fill:#9ca3af;font-style:italic}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e5e7eb;font-size:12.5px}
th,td{padding:4px 8px;border-bottom:1px solid #f1f5f9;text-align:left;vertical-align:middle}
th{background:#f1f5f9;color:#374151;font-weight:600;position:sticky;top:0}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fafafa}
.muted{color:#6b7280}
.pill{display:inline-block;padding:0 7px;border-radius:9px;font-size:11.5px;background:#e5e7eb}
.risk-low{background:#dcfce7}.risk-medium{background:#fef3c7}.risk-high{background:#fee2e2}
.st-applied{background:#dbeafe}.st-failed,.st-rolled{background:#fee2e2}
.proposal{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px 14px;margin:10px 0}
.notbuilt{color:#6b7280;font-style:italic}
footer{margin-top:36px;color:#6b7280;font-size:12px}
"#;

/// The whole page.
pub fn page(r: &Report) -> String {
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>sutazai-top report: {host} at {at}</title><style>{STYLE}</style></head><body><main>"#,
        host = esc(&r.host.hostname),
        at = esc(&r.taken_at),
    );
    header(&mut html, r);
    charts(&mut html, r);
    // What needs the reader's attention first; the long agent table last.
    bottlenecks(&mut html, r);
    proposals(&mut html, &r.proposals);
    changes(&mut html, r);
    agents(&mut html, &r.agents);
    parts(&mut html, r);
    let _ = write!(
        html,
        r#"<footer>Written by {} {} (report format {}). Self-contained: no scripts, no network. The JSON report holds every figure of the snapshot.</footer></main></body></html>"#,
        esc(r.tool),
        esc(r.version),
        r.format
    );
    html
}

/// serde's spelling of a unit enum ("noisy_neighbour"), as words.
fn word<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s.replace('_', " "),
        _ => "?".into(),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn uptime(secs: u64) -> String {
    format!(
        "{}d {}h {}m",
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60
    )
}

fn card(html: &mut String, title: &str, rows: &[(&str, String)]) {
    let _ = write!(html, r#"<div class="card"><h3>{}</h3><dl>"#, esc(title));
    for (key, value) in rows {
        let _ = write!(html, "<dt>{}</dt><dd>{}</dd>", esc(key), esc(value));
    }
    html.push_str("</dl></div>");
}

fn header(html: &mut String, r: &Report) {
    let h = &r.host;
    let w = &r.window;
    let _ = write!(
        html,
        r#"<h1>sutazai-top report: {}</h1><p class="sub">Snapshot {} · mode <b>{}</b> · auto-fix {}</p><div class="cards">"#,
        esc(&h.hostname),
        esc(&r.taken_at),
        esc(&word(&r.mode)),
        if r.auto_fix { "on" } else { "off" }
    );
    let nodes = h
        .numa_nodes
        .iter()
        .map(|n| {
            format!(
                "node {}: {} CPUs, {}",
                n.id,
                n.cpus,
                bytes(n.mem_total_kb * 1024)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    card(
        html,
        "Host",
        &[
            ("kernel", h.kernel.clone()),
            ("uptime", uptime(h.uptime_secs)),
            ("cgroups", word(&h.cgroup_layout)),
            (
                "running as",
                if h.is_root {
                    "root".into()
                } else {
                    "non-root (read-only)".into()
                },
            ),
        ],
    );
    card(
        html,
        "Topology",
        &[
            (
                "CPUs",
                format!(
                    "{} logical ({} online), {} cores, {} package(s)",
                    h.logical_cpus, h.online_cpus, h.physical_cores, h.packages
                ),
            ),
            (
                "NUMA",
                if nodes.is_empty() {
                    "none reported".into()
                } else {
                    nodes
                },
            ),
            (
                "caches",
                if h.caches.is_empty() {
                    "none reported".into()
                } else {
                    h.caches.join(", ")
                },
            ),
            (
                "isolated",
                if h.isolated_cpus.is_empty() {
                    "none".into()
                } else {
                    format!("{:?}", h.isolated_cpus)
                },
            ),
        ],
    );
    card(
        html,
        "Memory and agents",
        &[
            ("memory", bytes(h.memory_total_kb * 1024)),
            ("swap", bytes(h.swap_total_kb * 1024)),
            (
                "agents",
                format!("{} (of {} containers)", r.agents.len(), h.containers_seen),
            ),
            ("docker", h.docker.clone()),
        ],
    );
    card(
        html,
        "Window",
        &[
            (
                "from",
                w.first_sample_at
                    .clone()
                    .unwrap_or_else(|| "no samples".into()),
            ),
            (
                "to",
                w.last_sample_at
                    .clone()
                    .unwrap_or_else(|| "no samples".into()),
            ),
            (
                "span",
                format!(
                    "{:.0} s, {} points every {} ms",
                    w.span_secs, w.points, w.interval_ms
                ),
            ),
            (
                "findings",
                format!(
                    "{} bottleneck(s), {} proposal(s), {} active batch(es)",
                    r.bottlenecks.len(),
                    r.proposals.len(),
                    r.changes.active.len()
                ),
            ),
        ],
    );
    html.push_str("</div>");
}

fn legend(html: &mut String, items: &[(&str, &str)]) {
    html.push_str(r#"<div class="legend">"#);
    for (label, color) in items {
        let _ = write!(
            html,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            esc(color),
            esc(label)
        );
    }
    html.push_str("</div>");
}

fn charts(html: &mut String, r: &Report) {
    let s = &r.window.series;
    let span = r.window.span_secs;
    html.push_str(r#"<h2>Host over the window</h2><div class="charts">"#);
    let usage = [
        Line {
            label: "CPU busy %",
            color: CPU_COLOR,
            points: &s.cpu_busy_pct,
        },
        Line {
            label: "memory used %",
            color: MEM_COLOR,
            points: &s.mem_used_pct,
        },
    ];
    html.push_str("<figure><figcaption>CPU busy and memory used (%)</figcaption>");
    html.push_str(&svg::line_chart(
        "CPU busy and memory used",
        &usage,
        100.0,
        "%",
        span,
    ));
    legend(html, &[("CPU busy", CPU_COLOR), ("memory used", MEM_COLOR)]);
    html.push_str("</figure>");
    let psi = [
        Line {
            label: "PSI cpu some",
            color: CPU_COLOR,
            points: &s.psi_cpu_some,
        },
        Line {
            label: "PSI memory some",
            color: MEM_COLOR,
            points: &s.psi_memory_some,
        },
        Line {
            label: "PSI io some",
            color: IO_COLOR,
            points: &s.psi_io_some,
        },
    ];
    let peak = psi
        .iter()
        .flat_map(|l| l.points.iter())
        .fold(0.0f32, |a, b| a.max(*b));
    html.push_str("<figure><figcaption>Pressure stall, some (% of time, avg10)</figcaption>");
    html.push_str(&svg::line_chart(
        "Pressure stall information",
        &psi,
        svg::nice_ceiling(peak.into()),
        "%",
        span,
    ));
    legend(
        html,
        &[("cpu", CPU_COLOR), ("memory", MEM_COLOR), ("io", IO_COLOR)],
    );
    html.push_str("</figure></div>");
}

fn psi_cell(resource: Option<&PsiResource>) -> String {
    resource.map_or_else(|| "—".into(), |r| format!("{:.1}", r.some.avg10))
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "—".into(), |v| v.to_string())
}

fn agents(html: &mut String, agents: &[AgentProfile]) {
    let mut sorted: Vec<&AgentProfile> = agents.iter().collect();
    sorted.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct).then(a.name.cmp(b.name)));
    let _ = write!(html, "<h2>Agents ({})</h2>", agents.len());
    if agents.is_empty() {
        html.push_str(r#"<p class="muted">No agent containers were seen.</p>"#);
        return;
    }
    let top: Vec<(String, f64)> = sorted
        .iter()
        .take(TOP_AGENTS)
        .map(|a| (a.name.to_string(), f64::from(a.cpu_pct)))
        .collect();
    let max = svg::nice_ceiling(top.first().map_or(1.0, |t| t.1));
    let _ = write!(
        html,
        "<figure><figcaption>Top {} agents by CPU (% of one CPU)</figcaption>",
        top.len()
    );
    html.push_str(&svg::bar_chart("Top agents by CPU", &top, max, "%"));
    html.push_str("</figure><h3>Profiles</h3><table><thead><tr><th>Agent</th><th>Class</th><th class=n>Prio</th><th class=n>CPU %</th><th>History</th><th class=n>Mean / max</th><th class=n>Memory</th><th class=n>Limit</th><th class=n>Throttled (tick / all)</th><th class=n>CPU limit</th><th>Cpuset</th><th class=n>Weight</th><th class=n>PSI cpu / mem / io</th></tr></thead><tbody>");
    for a in sorted {
        let limit = match (a.mem_limit_bytes, a.mem_of_limit_pct) {
            (Some(l), Some(pct)) => format!("{} ({pct:.0}%)", bytes(l)),
            (Some(l), None) => bytes(l),
            _ => "none".into(),
        };
        let mean_max = match (a.cpu_mean_pct, a.cpu_max_pct) {
            (Some(mean), Some(max)) => format!("{mean:.1} / {max:.1}"),
            _ => "—".into(),
        };
        let cpuset = match (a.cpuset_cpus, a.cpuset_mems) {
            ("", "") => "all".to_string(),
            (cpus, "") => cpus.to_string(),
            (cpus, mems) => format!(
                "{} / mems {mems}",
                if cpus.is_empty() { "all" } else { cpus }
            ),
        };
        let _ = write!(
            html,
            "<tr><td title=\"{}\">{}</td><td>{}</td><td class=n>{}</td><td class=n>{:.1}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{} / {}</td><td class=n>{}</td><td>{}</td><td class=n>{}</td><td class=n>{} / {} / {}</td></tr>",
            esc(a.id),
            esc(a.name),
            a.class.map_or_else(|| "—".into(), |c| esc(&word(&c))),
            opt(a.priority),
            a.cpu_pct,
            svg::sparkline(&a.cpu_history),
            esc(&mean_max),
            esc(&bytes(a.mem_bytes)),
            esc(&limit),
            a.throttled_periods_delta,
            a.throttled_periods_total,
            a.cpu_limit_cores
                .map_or_else(|| "none".into(), |c| format!("{c:.2} cores")),
            esc(&cpuset),
            opt(a.cpu_weight),
            psi_cell(a.pressure.cpu.as_ref()),
            psi_cell(a.pressure.memory.as_ref()),
            psi_cell(a.pressure.io.as_ref()),
        );
    }
    html.push_str("</tbody></table>");
}

fn bottlenecks(html: &mut String, r: &Report) {
    let _ = write!(html, "<h2>Bottlenecks ({})</h2>", r.bottlenecks.len());
    if r.bottlenecks.is_empty() {
        html.push_str(r#"<p class="muted">None held at the time of the snapshot.</p>"#);
        return;
    }
    html.push_str("<table><thead><tr><th>Kind</th><th>Subject</th><th class=n>Since tick</th><th>Evidence</th></tr></thead><tbody>");
    for b in &r.bottlenecks {
        let evidence = b
            .evidence
            .iter()
            .map(|e| {
                format!(
                    "{} {:.2} {} (threshold {:.2})",
                    e.metric, e.value, e.unit, e.threshold
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td>{}</td></tr>",
            esc(&word(&b.kind)),
            esc(&b.subject),
            b.since_seq,
            esc(&evidence)
        );
    }
    html.push_str("</tbody></table>");
}

fn status_class(status: &str) -> &'static str {
    match status {
        "applied" => "st-applied",
        "failed" => "st-failed",
        "rolled back" => "st-rolled",
        _ => "",
    }
}

fn proposals(html: &mut String, proposals: &[ProposalEntry]) {
    let _ = write!(
        html,
        "<h2>Proposals and outcomes ({})</h2>",
        proposals.len()
    );
    if proposals.is_empty() {
        html.push_str(r#"<p class="muted">No fixes were proposed.</p>"#);
        return;
    }
    html.push_str("<table><thead><tr><th class=n>#</th><th>Fix</th><th>Risk</th><th>For</th><th>Status</th><th>Changes</th><th>Verdict</th></tr></thead><tbody>");
    for p in proposals {
        let changes = p
            .changes
            .iter()
            .map(|c| format!("{}: {} {} → {}", c.target, c.knob, c.before, c.after))
            .collect::<Vec<_>>()
            .join("; ");
        let status = match &p.status_detail {
            Some(detail) => format!("{} ({detail})", p.status),
            None => p.status.to_string(),
        };
        let risk = word(&p.risk);
        let _ = write!(
            html,
            r#"<tr><td class=n>{}</td><td>{}<div class="muted">{}</div></td><td><span class="pill risk-{}">{}</span></td><td>{}: {}</td><td><span class="pill {}">{}</span></td><td>{}</td><td>{}</td></tr>"#,
            p.id,
            esc(p.summary),
            esc(p.strategy),
            esc(&risk),
            esc(&risk),
            esc(&word(&p.bottleneck)),
            esc(&p.subject),
            status_class(p.status),
            esc(&status),
            esc(&changes),
            esc(p.outcome.verdict_text.as_deref().unwrap_or("—")),
        );
    }
    html.push_str("</tbody></table>");
    for p in proposals {
        outcome(html, p.id, p.summary, &p.outcome);
    }
}

fn outcome(html: &mut String, id: u64, summary: &str, o: &Outcome) {
    let _ = write!(
        html,
        r#"<div class="proposal"><h3>#{id} {}: {}</h3>"#,
        esc(summary),
        esc(&o.metric)
    );
    html.push_str(&svg::before_after(
        &format!("#{id} before and after"),
        o.baseline_mean,
        o.window_mean,
        "",
    ));
    let _ = write!(
        html,
        r#"<p class="muted">Baseline: {} reading(s); after: {} reading(s){}. Verdict: {}.</p>"#,
        o.baseline_readings,
        o.window_readings,
        o.applied_at
            .as_ref()
            .map_or_else(String::new, |at| format!(", applied {}", esc(at))),
        esc(o.verdict_text.as_deref().unwrap_or("not judged yet"))
    );
    if !o.guards.is_empty() {
        html.push_str("<table><thead><tr><th>Guard figure</th><th class=n>Before</th><th class=n>After</th></tr></thead><tbody>");
        for g in &o.guards {
            let fmt = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.2}"));
            let _ = write!(
                html,
                "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                esc(&g.figure),
                fmt(g.baseline_mean),
                fmt(g.window_mean)
            );
        }
        html.push_str("</tbody></table>");
    }
    html.push_str("</div>");
}

fn changes(html: &mut String, r: &Report) {
    let c = &r.changes;
    let _ = write!(html, "<h2>Active changes ({})</h2>", c.active.len());
    if c.active.is_empty() {
        let _ = write!(
            html,
            r#"<p class="muted">No change of ours is active on the host (journal in {}{}).</p>"#,
            esc(c.state_dir),
            if c.journal_found { "" } else { ", not found" }
        );
    } else {
        html.push_str("<table><thead><tr><th class=n>Batch</th><th>What</th><th>Began</th><th class=n>Applied</th><th>State</th></tr></thead><tbody>");
        for b in &c.active {
            let _ = write!(
                html,
                "<tr><td class=n>{}</td><td>{}</td><td>{}</td><td class=n>{} / {}</td><td>{}</td></tr>",
                b.batch,
                esc(b.label),
                esc(&b.at),
                b.applied,
                b.total,
                if b.interrupted {
                    "interrupted: roll it back"
                } else {
                    "applied"
                }
            );
        }
        html.push_str("</tbody></table>");
    }
    for problem in c.problems {
        let _ = write!(html, r#"<p class="muted">Journal: {}</p>"#, esc(problem));
    }
}

/// A part's heading, and its figures; when it has none, the line saying why (never invented
/// numbers).
fn heading<T>(
    html: &mut String,
    title: &str,
    figures: Option<T>,
    status: &str,
    note: &str,
) -> Option<T> {
    let _ = write!(html, "<h2>{}</h2>", esc(title));
    if figures.is_none() {
        let _ = write!(
            html,
            r#"<p class="notbuilt">{}: {}</p>"#,
            esc(status),
            esc(note)
        );
    }
    figures
}

/// The cache: a row per level, or why there is none.
fn cache(html: &mut String, r: &Report) {
    let Some(stats) = heading(html, "Cache", r.cache.stats, r.cache.status, r.cache.note) else {
        return;
    };
    let _ = write!(
        html,
        "<p>hit ratio {:.1}% over {} gets{}</p>",
        stats.hit_ratio * 100.0,
        stats.total.hits + stats.total.misses,
        match &stats.prefetch {
            Some(p) => format!(" · prefetch accuracy {:.1}%", p.accuracy * 100.0),
            None => String::new(),
        }
    );
    html.push_str(
        "<table><thead><tr><th>Level</th><th>Used</th><th>Capacity</th><th>Entries</th>\
         <th>Hit %</th><th>Evictions</th><th>Promotions</th><th>Policy</th></tr></thead><tbody>",
    );
    for level in stats.levels.iter().filter(|l| l.present) {
        let _ = write!(
            html,
            "<tr><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            level.level,
            level.used_bytes,
            level.capacity_bytes,
            level.entries,
            level.hit_ratio * 100.0,
            level.evictions,
            level.promotions,
            esc(&format!("{} ({})", level.policy, level.chosen))
        );
    }
    html.push_str("</tbody></table>");
}

/// The coordinator: who owns which CPUs, and a row per agent, or why there is no plan.
fn coordinator(html: &mut String, r: &Report) {
    let c = &r.coordinator;
    let Some(plan) = heading(html, "Coordinator", c.plan, c.status, c.note) else {
        return;
    };
    let list = |cpus: &[u32]| match cpus {
        [] => "every".to_string(),
        cpus => crate::host::format_cpu_list(cpus),
    };
    let _ = write!(
        html,
        "<p>reserved CPUs {} · shared pool {} · {} · planned in {} µs</p>",
        esc(&list(&plan.reserved)),
        esc(&list(&plan.shared)),
        if plan.enforce {
            "enforcing"
        } else {
            "proposing"
        },
        plan.plan_us
    );
    if plan.agents.is_empty() {
        html.push_str(r#"<p class="muted">no running agent</p>"#);
        return;
    }
    html.push_str(
        "<table><thead><tr><th>Agent</th><th>Priority</th><th>Declared</th><th>State</th>\
         <th>CPUs</th><th>Memory nodes</th><th>Shares</th><th>Memory limit</th>\
         <th>In place</th><th>Why</th></tr></thead><tbody>",
    );
    for a in &plan.agents {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.name),
            a.priority,
            esc(&a.need.as_ref().map_or("-".to_string(), |n| n.describe())),
            esc(&match a.rebalanced {
                0 => a.state.label().to_string(),
                delta => format!("{} (rebalanced {delta:+} CPU)", a.state.label()),
            }),
            esc(&list(&a.cpus)),
            esc(&list(&a.mems)),
            a.cpu_shares.map_or("-".to_string(), |s| s.to_string()),
            a.memory_limit_bytes.map_or("-".to_string(), bytes),
            match (a.waiting, a.in_place) {
                (true, _) => "not running",
                (false, true) => "yes",
                (false, false) => "not yet",
            },
            esc(a.state.why().unwrap_or(""))
        );
    }
    html.push_str("</tbody></table>");
}

/// The load balancer: its totals and a row per backend of each pool, or why there is none.
fn balancer(html: &mut String, r: &Report) {
    let lb = &r.balancer;
    let Some(b) = heading(html, "Load balancer", lb.stats, lb.status, lb.note) else {
        return;
    };
    let _ = write!(
        html,
        "<p>listening on {} · {:.1} requests/s · {} requests · {} queued · {} answered 503 · \
         {} retries ({} over budget) · {} bad requests</p>",
        esc(&b.listen),
        b.requests_per_sec,
        b.requests_total,
        b.queued,
        b.rejected_total,
        b.retries_total,
        b.retries_over_budget_total,
        b.bad_requests_total
    );
    for pool in &b.pools {
        let _ = write!(
            html,
            "<h3>Pool {} · {} · rule: {}</h3>",
            esc(&pool.name),
            esc(&pool.algorithm),
            esc(&pool.rule)
        );
        if pool.backends.is_empty() {
            html.push_str(r#"<p class="muted">no backends</p>"#);
            continue;
        }
        html.push_str(
            "<table><thead><tr><th>Backend</th><th>Source</th><th>Health</th><th>Circuit</th>\
             <th>Weight</th><th>In flight / max</th><th>Requests/s</th><th>Requests</th>\
             <th>p50 ms</th><th>p99 ms</th><th>Errors</th><th>EWMA ms</th><th>Ejections</th>\
             </tr></thead><tbody>",
        );
        for x in &pool.backends {
            balancer_row(html, x);
        }
        html.push_str("</tbody></table>");
    }
}

fn balancer_row(html: &mut String, x: &sutazai_balancer::BackendSnapshot) {
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |ms| format!("{ms:.2}"));
    let source = match &x.source {
        sutazai_balancer::BackendSource::Config => "config".to_string(),
        sutazai_balancer::BackendSource::Api => "api".to_string(),
        sutazai_balancer::BackendSource::Docker { container } => format!("docker {container}"),
    };
    let ejections = match x.ejected_for_secs {
        Some(secs) => format!("{} (out for {secs} s more)", x.ejections),
        None => x.ejections.to_string(),
    };
    let _ = write!(
        html,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td>\
         <td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
        esc(&x.id),
        esc(&source),
        x.health.name(),
        x.circuit.name(),
        x.weight,
        x.in_flight,
        x.max_connections,
        x.requests_per_sec,
        x.requests_total,
        ms(x.latency_p50_ms),
        ms(x.latency_p99_ms),
        x.errors_total,
        x.ewma_ms,
        esc(&ejections)
    );
}

/// The engine's serving parts: the coordinator, the cache, the balancer and the pools.
fn parts(html: &mut String, r: &Report) {
    coordinator(html, r);
    cache(html, r);
    balancer(html, r);
    pools(html, r);
}

/// The memory pools: a row per pool and per agent, or why they are not served.
fn pools(html: &mut String, r: &Report) {
    let section = &r.pools;
    let served = heading(
        html,
        "Memory pools",
        section.stats,
        section.status,
        &section.note,
    );
    if let Some(store) = served {
        pool_tables(html, store);
    }
    ksm_table(html, &r.snapshot.ksm_outside_pools());
}

/// What KSM merges for agents that hold nothing in the pools.
fn ksm_table(html: &mut String, rows: &[(String, crate::model::AgentKsm)]) {
    if rows.is_empty() {
        html.push_str(
            r#"<p class="muted">KSM: no agent outside the pools has mergeable memory</p>"#,
        );
        return;
    }
    html.push_str(
        "<h3>KSM, for agents outside the pools</h3><table><thead><tr><th>Agent</th>\
         <th>Merged</th><th>Profit</th><th>Mergeable</th></tr></thead><tbody>",
    );
    for (agent, ksm) in rows {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            esc(agent),
            bytes(ksm.merging_bytes),
            if ksm.profit_bytes < 0 { "-" } else { "" },
            bytes(ksm.profit_bytes.unsigned_abs()),
            if ksm.merge_any {
                "whole process"
            } else {
                "areas (madvise)"
            }
        );
    }
    html.push_str("</tbody></table>");
}

fn pool_tables(html: &mut String, store: &sutazai_pools::PoolsSnapshot) {
    let _ = write!(
        html,
        "<p>socket {} · {} clients</p><table><thead><tr><th>Pool</th><th>Codec</th>\
         <th>Used / capacity</th><th>Objects</th><th>Physical</th><th>Logical</th>\
         <th>Dedup</th><th>Compressed</th><th>Evicted</th><th>Refused</th></tr></thead><tbody>",
        esc(&store.socket),
        store.clients
    );
    let ratio = |r: Option<f64>| r.map_or_else(|| "–".to_string(), |r| format!("{r:.2}x"));
    for p in &store.pools {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{} ({})</td><td>{} ({})</td><td>{}</td></tr>",
            esc(&p.name),
            esc(&p.compression),
            bytes(p.used_bytes),
            bytes(p.capacity_bytes),
            p.objects,
            bytes(p.physical_bytes),
            bytes(p.logical_bytes),
            ratio(p.dedup_ratio()),
            p.packed_objects,
            ratio(p.compression_ratio()),
            p.evictions,
            bytes(p.evicted_bytes),
            p.refused
        );
    }
    html.push_str("</tbody></table>");
    if store.agents.is_empty() {
        html.push_str(r#"<p class="muted">no agent holds anything</p>"#);
        return;
    }
    html.push_str(
        "<table><thead><tr><th>Agent</th><th>Pool</th><th>Objects</th><th>Held</th>\
         <th>Saved by sharing</th><th>Segments</th></tr></thead><tbody>",
    );
    for a in &store.agents {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.agent),
            esc(&a.pool),
            a.objects,
            bytes(a.held_bytes),
            bytes(a.saved_bytes),
            bytes(a.segment_bytes)
        );
    }
    html.push_str("</tbody></table>");
}
