//! Cores / NUMA: one busy bar per logical CPU, grouped by NUMA node. SMT siblings share a
//! cell ("0/32" is CPU 0 and its sibling 32) so a busy core is visible as one; isolated CPUs
//! carry an "i". Bars shrink and flow into columns so 2 CPUs and 64 CPUs both fit.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{bar, fmt_count, fmt_kb, pane_block};
use crate::host::format_cpu_list;
use crate::model::{NumaNode, Snapshot, Topology};
use crate::tui::theme;

/// Widest bar per CPU; more width goes to columns instead.
const MAX_BAR: usize = 24;
const MIN_BAR: usize = 2;
/// Per CPU: " " + "100" + marker after the bar.
const CPU_SUFFIX: usize = 5;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, focused: bool) {
    let title = match snap.topology.cpus.len() {
        0 => Line::from(" Cores "),
        n => Line::from(format!(
            " Cores · {n} CPUs · {} nodes ",
            snap.topology.nodes.len().max(1)
        )),
    };
    let block = pane_block(title, focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let lines = body(snap, inner.width as usize, inner.height as usize);
    frame.render_widget(Paragraph::new(lines), inner);
}

fn body(snap: &Snapshot, width: usize, height: usize) -> Vec<Line<'static>> {
    if snap.seq == 0 {
        return vec![Line::styled("Waiting for the first sample.", theme::dim())];
    }
    let mut lines = vec![load_line(snap), times_line(snap)];
    if snap.topology.cpus.is_empty() {
        lines.push(Line::styled(
            "CPU topology could not be read.",
            theme::dim(),
        ));
        return lines;
    }
    let nodes = node_groups(&snap.topology);
    let legend = legend(&nodes, &snap.topology);
    let room = height.saturating_sub(lines.len() + usize::from(legend.is_some()));
    let grid = GridShape::choose(&nodes, width, room);
    for node in &nodes {
        lines.push(node_header(snap, node));
        lines.extend(node_rows(snap, node, &grid));
    }
    if lines.len() + usize::from(legend.is_some()) > height {
        let hidden = lines.len().saturating_sub(height.saturating_sub(1));
        lines.truncate(height.saturating_sub(1));
        lines.push(Line::styled(
            format!("… {hidden} more lines: enlarge the terminal to see every CPU"),
            theme::warning(),
        ));
    } else {
        lines.extend(legend);
        // Who owns which CPU by the coordinator's plan, then who is pinned where, in the
        // rows left.
        let room = height.saturating_sub(lines.len());
        lines.extend(ownership_lines(snap, width).into_iter().take(room));
        let room = height.saturating_sub(lines.len());
        lines.extend(pinned_lines(snap, width).into_iter().take(room));
    }
    lines
}

/// Per node, the coordinator's owners: "node 0: reserved 0 · llm 1,9 · shared 2-7"; only
/// when something is reserved or exclusive.
fn ownership_lines(snap: &Snapshot, width: usize) -> Vec<Line<'static>> {
    let Some(view) = snap.coordinator.as_ref() else {
        return Vec::new();
    };
    let exclusive = view
        .agents
        .iter()
        .any(|a| a.state == crate::model::AllocationState::Exclusive);
    if view.reserved.is_empty() && !exclusive {
        return Vec::new();
    }
    let mut lines = vec![Line::styled(
        "cores by owner (coordinator):",
        theme::label(),
    )];
    for node in &snap.topology.nodes {
        let mut owners: Vec<(String, Vec<u32>)> = Vec::new();
        for &cpu in &node.cpus {
            let owner = view.owner_of(cpu).to_string();
            match owners.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, cpus)) => cpus.push(cpu),
                None => owners.push((owner, vec![cpu])),
            }
        }
        let parts: Vec<String> = owners
            .iter()
            .map(|(owner, cpus)| format!("{owner} {}", format_cpu_list(cpus)))
            .collect();
        lines.push(Line::from(clip(
            format!("  node {}: {}", node.id, parts.join(" · ")),
            width,
        )));
    }
    lines
}

fn clip(text: String, width: usize) -> String {
    if text.chars().count() <= width {
        return text;
    }
    text.chars()
        .take(width.saturating_sub(1))
        .collect::<String>()
        + "…"
}

/// Agents confined to fewer CPUs than the host has (a cpuset, ours or anyone's), as
/// "cpus ← agents" lines, so an operator sees who shares which cores.
fn pinned_lines(snap: &Snapshot, width: usize) -> Vec<Line<'static>> {
    let all = crate::host::format_cpu_list(
        &snap
            .topology
            .cpus
            .iter()
            .filter(|c| c.online)
            .map(|c| c.id)
            .collect::<Vec<_>>(),
    );
    let mut by_set: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for c in &snap.containers.agents {
        if c.state == "running" && !c.cpuset_cpus.is_empty() && c.cpuset_cpus != all {
            by_set
                .entry(c.cpuset_cpus.clone())
                .or_default()
                .push(c.name.as_str());
        }
    }
    if by_set.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![Line::styled("pinned agents:", theme::label())];
    for (cpus, mut names) in by_set {
        names.sort_unstable();
        let text = format!("  cpus {cpus} ← {}", names.join(", "));
        lines.push(Line::from(clip(text, width)));
    }
    lines
}

/// Explains the marks that appear, and only those.
fn legend(nodes: &[NodeCores], topology: &Topology) -> Option<Line<'static>> {
    let mut parts = Vec::new();
    if nodes
        .iter()
        .flat_map(|n| n.cores.iter())
        .any(|core| core.len() > 1)
    {
        parts.push("a/b = SMT siblings of one core");
    }
    if !topology.isolated.is_empty() {
        parts.push("i = isolated (isolcpus)");
    }
    (!parts.is_empty()).then(|| Line::styled(parts.join(" · "), theme::dim()))
}

/// Where the time went, all CPUs together.
fn times_line(snap: &Snapshot) -> Line<'static> {
    if snap.cpu.per_cpu.is_empty() {
        return Line::styled(
            "per-CPU figures arrive with the second sample",
            theme::dim(),
        );
    }
    let t = &snap.cpu.total;
    let part = |name: &str, pct: f32| {
        [
            Span::styled(format!("{name} "), theme::dim()),
            Span::raw(format!("{pct:.1} ")),
        ]
    };
    let mut spans = Vec::new();
    for (name, pct) in [
        ("usr", t.user),
        ("nice", t.nice),
        ("sys", t.system),
        ("iowait", t.iowait),
        ("irq", t.irq),
        ("soft", t.softirq),
        ("steal", t.steal),
    ] {
        spans.extend(part(name, pct));
    }
    Line::from(spans)
}

fn load_line(snap: &Snapshot) -> Line<'static> {
    let cpu = &snap.cpu;
    let total = cpu.total.busy();
    let mut spans = vec![Span::styled("all ", theme::label())];
    if cpu.per_cpu.is_empty() {
        spans.push(Span::styled("--% ", theme::dim()));
    } else {
        spans.push(Span::styled(format!("{total:.0}% "), theme::load(total)));
    }
    spans.extend([
        Span::styled("load ", theme::label()),
        Span::raw(format!(
            "{:.2} {:.2} {:.2} ",
            cpu.load1, cpu.load5, cpu.load15
        )),
        Span::styled("run ", theme::label()),
        Span::raw(format!("{} ", cpu.runnable)),
        Span::styled("blk ", theme::label()),
        Span::styled(
            format!("{} ", cpu.blocked),
            super::zero_is_good(cpu.blocked as f64),
        ),
        Span::styled("ctxt ", theme::label()),
        Span::raw(format!("{}/s", fmt_count(cpu.ctxt_per_sec))),
    ]);
    Line::from(spans)
}

/// A node and its cores, each core being the sorted ids of its SMT siblings on this node.
struct NodeCores {
    node: NumaNode,
    cores: Vec<Vec<u32>>,
}

fn node_groups(topology: &Topology) -> Vec<NodeCores> {
    let nodes = if topology.nodes.is_empty() {
        // No NUMA information at all: show every CPU under one node 0.
        vec![NumaNode {
            cpus: topology.cpus.iter().map(|cpu| cpu.id).collect(),
            ..NumaNode::default()
        }]
    } else {
        topology.nodes.clone()
    };
    nodes
        .into_iter()
        .map(|node| NodeCores {
            cores: cores_of(topology, &node.cpus),
            node,
        })
        .collect()
}

fn cores_of(topology: &Topology, cpus: &[u32]) -> Vec<Vec<u32>> {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    let mut cores: Vec<Vec<u32>> = Vec::new();
    for id in sorted {
        if cores.iter().any(|core| core.contains(&id)) {
            continue;
        }
        let mut core: Vec<u32> = topology
            .cpus
            .iter()
            .find(|cpu| cpu.id == id)
            .map(|cpu| cpu.siblings.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|sib| cpus.contains(sib))
            .collect();
        if !core.contains(&id) {
            core.push(id);
        }
        core.sort_unstable();
        core.dedup();
        cores.push(core);
    }
    cores
}

/// How cells are laid out: bar width, cell width and columns per node.
struct GridShape {
    bar: usize,
    label_width: usize,
    cell_width: usize,
    columns: usize,
}

impl GridShape {
    /// The widest bar at which every node fits in `room` lines (falls back to the narrowest).
    fn choose(nodes: &[NodeCores], width: usize, room: usize) -> GridShape {
        let label_width = nodes
            .iter()
            .flat_map(|n| n.cores.iter())
            .map(|core| core_label(core).chars().count())
            .max()
            .unwrap_or(1);
        let threads = nodes
            .iter()
            .flat_map(|n| n.cores.iter())
            .map(Vec::len)
            .max()
            .unwrap_or(1);
        let most_cores = nodes
            .iter()
            .map(|n| n.cores.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let shape = |bar: usize| {
            let cell_width = label_width + 1 + threads * (bar + CPU_SUFFIX) + 1;
            let columns = (width / cell_width).clamp(1, most_cores);
            GridShape {
                bar,
                label_width,
                cell_width,
                columns,
            }
        };
        (MIN_BAR..=MAX_BAR)
            .rev()
            .map(shape)
            .find(|shape| shape.lines_needed(nodes) <= room && shape.cell_width <= width)
            .unwrap_or_else(|| shape(MIN_BAR))
    }

    fn rows(&self, cores: usize) -> usize {
        cores.div_ceil(self.columns.max(1))
    }

    fn lines_needed(&self, nodes: &[NodeCores]) -> usize {
        nodes.iter().map(|n| 1 + self.rows(n.cores.len())).sum()
    }
}

fn core_label(core: &[u32]) -> String {
    core.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

fn node_header(snap: &Snapshot, nodes: &NodeCores) -> Line<'static> {
    let node = &nodes.node;
    let memory = snap.memory.nodes.iter().find(|m| m.node == node.id);
    let total_kb = memory
        .map(|m| m.total_kb)
        .filter(|kb| *kb > 0)
        .unwrap_or(node.mem_total_kb);
    let mem_text = match memory {
        Some(m) if total_kb > 0 => {
            format!("mem free {} of {}", fmt_kb(m.free_kb), fmt_kb(total_kb))
        }
        _ if total_kb > 0 => format!("mem {} (free not sampled yet)", fmt_kb(total_kb)),
        _ => "mem not reported".to_string(),
    };
    Line::from(vec![
        Span::styled(format!("node {}", node.id), theme::label().fg(theme::FOCUS)),
        Span::styled(
            format!(" · cpus {} · ", format_cpu_list(&node.cpus)),
            theme::dim(),
        ),
        Span::raw(mem_text),
    ])
}

/// Cores flow down the columns, like `top`'s CPU list, so neighbours stay near each other.
fn node_rows(snap: &Snapshot, node: &NodeCores, grid: &GridShape) -> Vec<Line<'static>> {
    let rows = grid.rows(node.cores.len());
    (0..rows)
        .map(|row| {
            let mut spans = Vec::new();
            for column in 0..grid.columns {
                if let Some(core) = node.cores.get(column * rows + row) {
                    spans.extend(core_cell(snap, core, grid));
                }
            }
            Line::from(spans)
        })
        .collect()
}

fn core_cell(snap: &Snapshot, core: &[u32], grid: &GridShape) -> Vec<Span<'static>> {
    let label = format!("{:>width$} ", core_label(core), width = grid.label_width);
    let mut spans = vec![Span::styled(label, theme::label())];
    let mut used = grid.label_width + 1;
    for id in core {
        spans.extend(cpu_segment(snap, *id, grid.bar));
        used += grid.bar + CPU_SUFFIX;
    }
    spans.push(Span::raw(" ".repeat(grid.cell_width.saturating_sub(used))));
    spans
}

fn cpu_segment(snap: &Snapshot, id: u32, width: usize) -> Vec<Span<'static>> {
    let online = snap
        .topology
        .cpus
        .iter()
        .find(|cpu| cpu.id == id)
        .is_none_or(|cpu| cpu.online);
    let busy = snap
        .cpu
        .per_cpu
        .iter()
        .find(|(cpu, _)| *cpu == id)
        .map(|(_, times)| times.busy());
    let mut spans = match busy {
        Some(pct) if online => bar(pct, width),
        _ => vec![Span::styled("░".repeat(width), theme::empty_bar())],
    };
    spans.push(match (online, busy) {
        (false, _) => Span::styled(" off", theme::dim()),
        (true, Some(pct)) => Span::styled(format!("{pct:>4.0}"), theme::load(pct)),
        (true, None) => Span::styled("  --", theme::dim()),
    });
    let isolated = snap.topology.isolated.contains(&id);
    spans.push(if isolated {
        Span::styled("i", theme::isolated())
    } else {
        Span::raw(" ")
    });
    spans
}
