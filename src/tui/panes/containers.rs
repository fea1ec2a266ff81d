//! Containers: the agent table (sortable, filterable) or, when Docker is not connected, a
//! screen that says why and what still works.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::table::{COLUMN_SPACING, TextCell, highlighted, join_cells, visible_window};
use super::{pane_block, short_bytes, spark_text};
use crate::model::{
    AgentClass, Allocation, AllocationState, ContainerStat, DockerStatus, Snapshot,
};
use crate::tui::app::{App, SortKey, visible_containers};
use crate::tui::theme;

/// Points in the CPU trend column.
const TREND_WIDTH: u16 = 8;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, app: &App, focused: bool) {
    let containers = &snap.containers;
    let block = pane_block(title(snap, app), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    match &containers.status {
        DockerStatus::Connected { .. } if !containers.agents.is_empty() => {
            render_table(frame, inner, snap, app, focused)
        }
        status => {
            let message = Paragraph::new(status_lines(
                status,
                containers.total_seen,
                containers.agent_label.as_deref(),
            ))
            .wrap(Wrap { trim: false });
            frame.render_widget(message, inner);
        }
    }
}

fn title(snap: &Snapshot, app: &App) -> Line<'static> {
    let containers = &snap.containers;
    let state = match containers.status {
        DockerStatus::Connected { .. } => format!(
            "{} agents of {} seen",
            containers.agents.len(),
            containers.total_seen
        ),
        DockerStatus::Connecting => "connecting".to_string(),
        DockerStatus::Disabled => "docker disabled".to_string(),
        DockerStatus::Unreachable { .. } => "docker unreachable".to_string(),
    };
    let mut text = format!(" Containers · {state} · sort {} (s) ", app.sort.label());
    if let Some(counts) = allocation_counts(snap) {
        text.push_str(&format!("· {counts} "));
    }
    if !app.filter.is_empty() || app.filter_typing {
        text.push_str(&format!("· filter \"{}\" ", app.filter));
    }
    Line::from(text)
}

fn status_lines(
    status: &DockerStatus,
    total_seen: usize,
    agent_label: Option<&str>,
) -> Vec<Line<'static>> {
    let still_works = Line::styled(
        "Everything else still works: cores, memory, pressure and the log stay live.",
        theme::good(),
    );
    match status {
        DockerStatus::Disabled => vec![
            Line::styled("Docker is disabled in the configuration.", theme::label()),
            Line::from("Set [docker] enabled = true to list agent containers."),
            still_works,
        ],
        DockerStatus::Connecting => vec![
            Line::styled("Connecting to Docker…", theme::label()),
            Line::from("Agent containers appear here once the daemon answers."),
            still_works,
        ],
        DockerStatus::Unreachable {
            endpoint,
            error,
            retry_in_ms,
        } => vec![
            Line::styled("Docker is not reachable.", theme::error()),
            Line::from(""),
            Line::from(vec![
                Span::styled("Looked at:  ", theme::label()),
                Span::raw(endpoint.clone()),
            ]),
            Line::from(vec![
                Span::styled("Error:      ", theme::label()),
                Span::styled(error.clone(), theme::error()),
            ]),
            Line::from(vec![
                Span::styled("Retrying:   ", theme::label()),
                Span::raw(format!("in {} s", retry_in_ms.div_ceil(1000))),
            ]),
            Line::from(""),
            still_works,
        ],
        DockerStatus::Connected { endpoint, version } => match agent_label {
            Some(label) => vec![
                Line::styled(
                    format!("No agent containers (label {label})."),
                    theme::label(),
                ),
                Line::from(format!(
                    "Docker {version} at {endpoint} reports {total_seen} containers in all; \
                     none carries the agent label."
                )),
            ],
            None => vec![
                Line::styled(
                    "No containers (every container counts as an agent).",
                    theme::label(),
                ),
                Line::from(format!(
                    "Docker {version} at {endpoint} reports {total_seen} containers in all."
                )),
            ],
        },
    }
}

fn render_table(frame: &mut Frame, area: Rect, snap: &Snapshot, app: &App, focused: bool) {
    let show_filter = app.filter_typing || !app.filter.is_empty();
    let filter_height = u16::from(show_filter).min(area.height);
    let table_area = Rect {
        height: area.height - filter_height,
        ..area
    };
    if show_filter {
        let filter_area = Rect {
            y: area.y + table_area.height,
            height: filter_height,
            ..area
        };
        frame.render_widget(Paragraph::new(filter_line(app)), filter_area);
    }
    let rows = visible_containers(snap, app);
    let columns = fit_columns(&rows, table_area.width, declared(snap));
    let mut lines = vec![header_line(&columns, app.sort)];
    if rows.is_empty() {
        lines.push(Line::styled(
            format!("No agent container matches \"{}\".", app.filter),
            theme::warning(),
        ));
    }
    // Build only the rows that can show: 131 agents should not cost 131 rows of cells.
    let (window, selected) =
        visible_window(rows.len(), app.selected_index(&rows), table_area.height);
    let highlight = if focused {
        theme::selected_row()
    } else {
        theme::label()
    };
    for (index, container) in rows.get(window).unwrap_or_default().iter().enumerate() {
        let line = row_line(&columns, container, allocation_of(snap, container));
        lines.push(if index == selected {
            highlighted(line, highlight)
        } else {
            line
        });
    }
    frame.render_widget(Paragraph::new(lines), table_area);
}

fn header_line(columns: &[Column], sort: SortKey) -> Line<'static> {
    let cells = columns.iter().map(|c| {
        let title = c.kind.title(sort);
        if c.kind.is_numeric() {
            TextCell::right(title, theme::table_header())
        } else {
            TextCell::left(title, theme::table_header())
        }
    });
    join_cells(cells.zip(columns.iter().map(|c| c.width)))
}

fn row_line(
    columns: &[Column],
    container: &ContainerStat,
    allocation: Option<&Allocation>,
) -> Line<'static> {
    join_cells(
        columns
            .iter()
            .map(|c| (c.kind.cell(container, allocation), c.width)),
    )
}

/// Whether any agent declares a need (or misdeclares one): only then the ALLOC column shows.
fn declared(snap: &Snapshot) -> bool {
    snap.coordinator.as_ref().is_some_and(|c| {
        c.agents
            .iter()
            .any(|a| a.need.is_some() || matches!(a.state, AllocationState::Misdeclared { .. }))
    })
}

fn allocation_of<'a>(snap: &'a Snapshot, container: &ContainerStat) -> Option<&'a Allocation> {
    snap.coordinator
        .as_ref()
        .and_then(|c| c.agents.iter().find(|a| a.id == container.id))
}

/// "coordinator: 2 exclusive, 1 pending, 1 misdeclared" when anything is declared.
fn allocation_counts(snap: &Snapshot) -> Option<String> {
    let view = snap.coordinator.as_ref().filter(|_| declared(snap))?;
    let count = |label: &str| {
        view.agents
            .iter()
            .filter(|a| a.state.label() == label)
            .count()
    };
    let mut parts = vec![format!("{} exclusive", count("exclusive"))];
    for label in ["pending", "misdeclared"] {
        if count(label) > 0 {
            parts.push(format!("{} {label}", count(label)));
        }
    }
    let off = view.out_of_place().count();
    if off > 0 {
        parts.push(format!("{off} to apply"));
    }
    Some(format!("coordinator: {}", parts.join(", ")))
}

fn filter_line(app: &App) -> Line<'static> {
    let mut spans = vec![
        Span::styled("/", theme::key()),
        Span::raw(app.filter.clone()),
    ];
    if app.filter_typing {
        spans.push(Span::styled("▏", theme::key()));
        spans.push(Span::styled("  Enter keeps · Esc clears", theme::dim()));
    } else {
        spans.push(Span::styled("  / edits · Esc clears", theme::dim()));
    }
    Line::from(spans)
}

/// Table columns, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    Name,
    Class,
    Alloc,
    Cpu,
    Trend,
    Memory,
    Read,
    Write,
    Pids,
    Throttled,
    CpuLimit,
    Weight,
    Cpuset,
}

/// Dropped last-first when the pane is narrow: name, CPU, memory and throttling stay longest.
const BY_PRIORITY: [ColumnKind; 13] = [
    ColumnKind::Name,
    ColumnKind::Cpu,
    ColumnKind::Memory,
    ColumnKind::Throttled,
    ColumnKind::Alloc,
    ColumnKind::Class,
    ColumnKind::Read,
    ColumnKind::Write,
    ColumnKind::Pids,
    ColumnKind::Trend,
    ColumnKind::CpuLimit,
    ColumnKind::Weight,
    ColumnKind::Cpuset,
];

const DISPLAY_ORDER: [ColumnKind; 13] = [
    ColumnKind::Name,
    ColumnKind::Class,
    ColumnKind::Alloc,
    ColumnKind::Cpu,
    ColumnKind::Trend,
    ColumnKind::Memory,
    ColumnKind::Read,
    ColumnKind::Write,
    ColumnKind::Pids,
    ColumnKind::Throttled,
    ColumnKind::CpuLimit,
    ColumnKind::Weight,
    ColumnKind::Cpuset,
];

struct Column {
    kind: ColumnKind,
    width: u16,
}

/// The columns that fit in `width`, keeping the most important ones.
fn fit_columns(rows: &[&ContainerStat], width: u16, with_alloc: bool) -> Vec<Column> {
    let name_width = rows
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(8, 28) as u16;
    let width_of = |kind: ColumnKind| match kind {
        ColumnKind::Name => name_width,
        ColumnKind::Class => 5,
        ColumnKind::Alloc => 9,
        ColumnKind::Cpu => 6,
        ColumnKind::Trend => TREND_WIDTH,
        ColumnKind::Memory => 11,
        ColumnKind::Read => 7,
        ColumnKind::Write => 8,
        ColumnKind::Pids => 5,
        ColumnKind::Throttled => 6,
        ColumnKind::CpuLimit => 6,
        ColumnKind::Weight => 6,
        ColumnKind::Cpuset => 10,
    };
    let mut kept: Vec<ColumnKind> = Vec::new();
    let mut used: u16 = 0;
    for kind in BY_PRIORITY {
        if kind == ColumnKind::Alloc && !with_alloc {
            continue;
        }
        let extra = width_of(kind) + if kept.is_empty() { 0 } else { COLUMN_SPACING };
        if used + extra <= width {
            used += extra;
            kept.push(kind);
        }
    }
    DISPLAY_ORDER
        .iter()
        .filter(|kind| kept.contains(kind))
        .map(|&kind| Column {
            kind,
            width: width_of(kind),
        })
        .collect()
}

impl ColumnKind {
    /// Numbers are right-aligned, and so are their titles.
    fn is_numeric(self) -> bool {
        !matches!(
            self,
            ColumnKind::Name
                | ColumnKind::Class
                | ColumnKind::Alloc
                | ColumnKind::Trend
                | ColumnKind::Cpuset
        )
    }

    fn title(self, sort: SortKey) -> String {
        let (text, sorted_by) = match self {
            ColumnKind::Name => ("NAME", sort == SortKey::Name),
            ColumnKind::Class => ("CLASS", false),
            ColumnKind::Alloc => ("ALLOC", false),
            ColumnKind::Cpu => ("CPU%", sort == SortKey::Cpu),
            ColumnKind::Trend => ("TREND", false),
            ColumnKind::Memory => ("MEM/LIMIT", sort == SortKey::Memory),
            ColumnKind::Read => ("READ/s", sort == SortKey::Io),
            ColumnKind::Write => ("WRITE/s", sort == SortKey::Io),
            ColumnKind::Pids => ("PIDS", false),
            ColumnKind::Throttled => ("THROT", false),
            ColumnKind::CpuLimit => ("CORES", false),
            ColumnKind::Weight => ("WEIGHT", false),
            ColumnKind::Cpuset => ("CPUSET", false),
        };
        match (sorted_by, sort) {
            (false, _) => text.to_string(),
            (true, SortKey::Name) => format!("{text}▲"),
            (true, _) => format!("{text}▼"),
        }
    }

    fn cell(self, c: &ContainerStat, allocation: Option<&Allocation>) -> TextCell {
        match self {
            ColumnKind::Alloc => alloc_cell(allocation),
            ColumnKind::Name => {
                let style = if c.state == "running" || c.state.is_empty() {
                    Style::new()
                } else {
                    theme::dim()
                };
                TextCell::left(c.name.clone(), style)
            }
            ColumnKind::Class => TextCell::left(
                match c.class {
                    Some(AgentClass::Latency) => "lat",
                    Some(AgentClass::Batch) => "batch",
                    None => "-",
                }
                .to_string(),
                Style::new(),
            ),
            ColumnKind::Cpu => right(format!("{:.1}", c.cpu_pct), theme::load(cpu_load_pct(c))),
            ColumnKind::Trend => {
                let max = c.cpu_history.iter().copied().fold(100.0, f32::max);
                TextCell::left(
                    spark_text(c.cpu_history.iter(), TREND_WIDTH as usize, max),
                    theme::load(cpu_load_pct(c)),
                )
            }
            ColumnKind::Memory => memory_cell(c),
            ColumnKind::Read => right(short_bytes(c.io_read_bytes_per_sec), Style::new()),
            ColumnKind::Write => right(short_bytes(c.io_write_bytes_per_sec), Style::new()),
            ColumnKind::Pids => right(c.pids.to_string(), Style::new()),
            ColumnKind::Throttled => right(
                c.throttled_periods_delta.to_string(),
                super::zero_is_good(c.throttled_periods_delta as f64),
            ),
            ColumnKind::CpuLimit => right(
                c.cpu_limit_cores
                    .map_or_else(|| "-".to_string(), |cores| format!("{cores:.2}")),
                Style::new(),
            ),
            ColumnKind::Weight => right(
                c.cpu_weight
                    .map_or_else(|| "-".to_string(), |w| w.to_string()),
                Style::new(),
            ),
            ColumnKind::Cpuset => TextCell::left(
                if c.cpuset_cpus.is_empty() {
                    "-".to_string()
                } else {
                    c.cpuset_cpus.clone()
                },
                Style::new(),
            ),
        }
    }
}

/// The coordinator's word on an agent: "excl 2", "shared", "pending", "misdecl"; a "*"
/// when the host does not show it yet.
fn alloc_cell(allocation: Option<&Allocation>) -> TextCell {
    let Some(a) = allocation else {
        return TextCell::left("-".to_string(), theme::dim());
    };
    let (text, style) = match &a.state {
        // A grant rebalanced by load says so: "excl 3+" (given one more), "excl 1-" (lent).
        AllocationState::Exclusive => {
            let sign = match a.rebalanced.signum() {
                1 => "+",
                -1 => "-",
                _ => "",
            };
            (format!("excl {}{sign}", a.cpus.len()), theme::good())
        }
        AllocationState::Shared if a.rebalanced < 0 => ("lent".to_string(), Style::new()),
        AllocationState::Shared => ("shared".to_string(), Style::new()),
        AllocationState::Pending { .. } => ("pending".to_string(), theme::warning()),
        AllocationState::Misdeclared { .. } => ("misdecl".to_string(), theme::warning()),
    };
    let mark = if a.in_place { "" } else { "*" };
    TextCell::left(format!("{text}{mark}"), style)
}

/// CPU use as a share of what the container may use: of its quota when limited, else of
/// one CPU (capped), so colour means "close to its ceiling".
fn cpu_load_pct(c: &ContainerStat) -> f32 {
    match c.cpu_limit_cores {
        Some(cores) if cores > 0.0 => (c.cpu_pct as f64 / cores) as f32,
        _ => c.cpu_pct.min(100.0),
    }
}

fn memory_cell(c: &ContainerStat) -> TextCell {
    let used = short_bytes(c.mem_bytes as f64);
    match c.mem_limit_bytes {
        Some(limit) if limit > 0 => {
            let pct = (c.mem_bytes as f64 / limit as f64 * 100.0) as f32;
            right(
                format!("{used}/{}", short_bytes(limit as f64)),
                theme::load(pct),
            )
        }
        _ => right(format!("{used}/-"), Style::new()),
    }
}

fn right(text: String, style: Style) -> TextCell {
    TextCell::right(text, style)
}
