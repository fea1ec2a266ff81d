//! The load balancer pane: where the proxy listens and what it does as a whole (requests/s,
//! queue, 503s, retries), then one table per pool with a row per backend: health, circuit,
//! load, latency, errors and outlier ejections. Every number comes from the snapshot; a
//! balancer that is off says so, says how to turn it on, and shows none.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::fmt_count;
use super::table::{TextCell, join_cells};
use crate::model::Snapshot;
use crate::tui::theme;
use sutazai_balancer::{
    BackendSnapshot, BackendSource, BalancerSnapshot, CircuitState, Health, PoolSnapshot,
};

/// What the pane says when the engine runs no balancer.
pub const OFF: &str = "Balancer off: no proxy runs, no numbers to show. To put one in front of \
                       agent replicas, set [balancer] enabled = true (listen, backends, \
                       algorithm) and restart.";
/// The same in the grid's compact row.
pub const OFF_SHORT: &str = "off (set [balancer] enabled = true)";

/// The backend id column never gets narrower than this (a loopback `host:port`)...
const ID_MIN: usize = 15;
/// ...nor wider: the spare width is better left to the other columns.
const ID_MAX: usize = 28;
/// The source column grows up to this on wide panes ("docker:" and a container name).
const SOURCE_MAX: usize = 32;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, focused: bool) {
    let block = super::pane_block(Line::from(" Balancer "), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (width, height) = (usize::from(inner.width), usize::from(inner.height));
    let body = match (&snap.balancer, height) {
        (None, 1) => Paragraph::new(Line::styled(OFF_SHORT, theme::dim())),
        // Only the prose wraps: table rows are laid out to the width already.
        (None, _) => Paragraph::new(Line::styled(OFF, theme::dim())).wrap(Wrap { trim: true }),
        (Some(balancer), 1) => Paragraph::new(summary_line(balancer)),
        (Some(balancer), _) => Paragraph::new(fit_height(full_lines(balancer, width), height)),
    };
    frame.render_widget(body, inner);
}

/// One row of the pane, tagged so that cutting to the height can count hidden backends.
struct Row {
    line: Line<'static>,
    is_backend: bool,
}

impl Row {
    fn other(line: Line<'static>) -> Row {
        Row {
            line,
            is_backend: false,
        }
    }
}

/// The rows that fit; when some do not, the last line says how many backends are hidden.
fn fit_height(rows: Vec<Row>, height: usize) -> Vec<Line<'static>> {
    if rows.len() <= height {
        return rows.into_iter().map(|r| r.line).collect();
    }
    let keep = height.saturating_sub(1);
    let hidden = rows.iter().skip(keep).filter(|r| r.is_backend).count();
    let mut lines: Vec<Line<'static>> = rows.into_iter().take(keep).map(|r| r.line).collect();
    lines.push(Line::styled(
        format!("… {hidden} more backends (a taller terminal shows them)"),
        theme::dim(),
    ));
    lines
}

fn all_backends(b: &BalancerSnapshot) -> impl Iterator<Item = &BackendSnapshot> {
    b.pools.iter().flat_map(|p| p.backends.iter())
}

/// The one line of the grid's compact row.
fn summary_line(b: &BalancerSnapshot) -> Line<'static> {
    let ejected = all_backends(b)
        .filter(|x| x.health == Health::Ejected)
        .count();
    let mut spans = vec![
        Span::raw(format!("{} req/s", fmt_rate(b.requests_per_sec))),
        Span::raw(" · "),
        health_share(all_backends(b)),
    ];
    if ejected > 0 {
        spans.push(Span::styled(
            format!(" · {ejected} ejected"),
            theme::warning(),
        ));
    }
    if b.queued > 0 {
        spans.push(Span::styled(
            format!(" · {} queued", b.queued),
            theme::warning(),
        ));
    }
    Line::from(spans)
}

/// "2/3 up", coloured by the share; backends no check has finished for yet (right after a
/// start) are named apart and not held against the share: they take traffic meanwhile.
fn health_share<'a>(backends: impl Iterator<Item = &'a BackendSnapshot>) -> Span<'static> {
    let (mut total, mut up, mut unchecked) = (0, 0, 0);
    for backend in backends {
        total += 1;
        up += usize::from(backend.health == Health::Up);
        unchecked += usize::from(backend.health == Health::Unknown);
    }
    let style = if total == 0 || up + unchecked == 0 {
        theme::error()
    } else if up + unchecked < total {
        theme::warning()
    } else if unchecked > 0 {
        Style::default()
    } else {
        theme::good()
    };
    let text = match unchecked {
        0 => format!("{up}/{total} up"),
        n => format!("{up}/{total} up, {n} not checked yet"),
    };
    Span::styled(text, style)
}

fn full_lines(b: &BalancerSnapshot, width: usize) -> Vec<Row> {
    let mut rows: Vec<Row> = header_lines(b, width).into_iter().map(Row::other).collect();
    if let Some(first) = b.docker_skipped.first() {
        // A labelled container that is not a backend is an operator's mistake to fix.
        let more = match b.docker_skipped.len() {
            1 => String::new(),
            n => format!(" (+{} more)", n - 1),
        };
        rows.push(Row::other(cut_to_width(
            Line::styled(format!("Docker: {first}{more}"), theme::warning()),
            width,
        )));
    }
    if b.pools.is_empty() {
        rows.push(Row::other(Line::styled(
            "No pools: add [[balancer.backends]] to the config.",
            theme::dim(),
        )));
    }
    let columns = Columns::for_width(b, width);
    for pool in &b.pools {
        rows.push(Row::other(pool_line(pool, width)));
        if pool.backends.is_empty() {
            rows.push(Row::other(cut_to_width(
                Line::styled(
                    "  no backends (config, POST /api/balancer/backends, or a container \
                     labelled sutazai.backend.port)",
                    theme::dim(),
                ),
                width,
            )));
            continue;
        }
        rows.push(Row::other(columns.header()));
        for backend in &pool.backends {
            rows.push(Row {
                line: columns.row(backend),
                is_backend: true,
            });
        }
    }
    rows
}

/// The proxy as a whole: one line when it fits the width, else two.
fn header_lines(b: &BalancerSnapshot, width: usize) -> Vec<Line<'static>> {
    let first = vec![
        Span::styled("Listen ", theme::label()),
        Span::raw(b.listen.clone()),
        Span::raw(format!(
            " · {} req/s · {} requests",
            fmt_rate(b.requests_per_sec),
            fmt_count(b.requests_total as f64)
        )),
    ];
    let over_budget = if b.retries_over_budget_total > 0 {
        format!(" ({} over budget)", b.retries_over_budget_total)
    } else {
        String::new()
    };
    let second = vec![
        Span::styled("Queued ", theme::label()),
        Span::styled(b.queued.to_string(), warn_if_nonzero(b.queued)),
        Span::raw(" · "),
        Span::styled("503s ", theme::label()),
        Span::styled(
            fmt_count(b.rejected_total as f64),
            warn_if_nonzero(b.rejected_total),
        ),
        Span::raw(" · "),
        Span::styled("retries ", theme::label()),
        Span::raw(fmt_count(b.retries_total as f64)),
        Span::styled(over_budget, theme::warning()),
        Span::raw(" · "),
        Span::styled("bad requests ", theme::label()),
        Span::raw(fmt_count(b.bad_requests_total as f64)),
    ];
    let one = Line::from(
        first
            .iter()
            .cloned()
            .chain(std::iter::once(Span::raw(" · ")))
            .chain(second.iter().cloned())
            .collect::<Vec<_>>(),
    );
    if one.width() <= width {
        vec![one]
    } else {
        vec![
            cut_to_width(Line::from(first), width),
            cut_to_width(Line::from(second), width),
        ]
    }
}

fn warn_if_nonzero(value: u64) -> Style {
    if value > 0 {
        theme::warning()
    } else {
        Style::new()
    }
}

/// "Pool compute · least-connections · 1/2 up · rule: header x-type: compute"; the rule,
/// last, is what gets cut when the line is too long.
fn pool_line(pool: &PoolSnapshot, width: usize) -> Line<'static> {
    let mut spans = vec![
        Span::styled(format!("Pool {}", pool.name), theme::label()),
        Span::raw(format!(" · {} · ", pool.algorithm)),
        health_share(pool.backends.iter()),
    ];
    if pool.panic_choices_total > 0 {
        // Every backend was out at some point and traffic went to them anyway: worth red.
        spans.push(Span::raw(" · "));
        spans.push(Span::styled(
            format!("panic mode {}", fmt_count(pool.panic_choices_total as f64)),
            theme::error(),
        ));
    }
    spans.push(Span::raw(format!(" · rule: {}", pool.rule)));
    cut_to_width(Line::from(spans), width)
}

/// `line` cut to `width` cells, ending in "…" when something was cut.
fn cut_to_width(line: Line<'static>, width: usize) -> Line<'static> {
    if line.width() <= width {
        return line;
    }
    let mut room = width.saturating_sub(1);
    let mut spans = Vec::new();
    for span in line.spans {
        let len = span.content.chars().count();
        if len <= room {
            room -= len;
            spans.push(span);
            continue;
        }
        let kept: String = span.content.chars().take(room).collect();
        spans.push(Span::styled(format!("{kept}…"), span.style));
        break;
    }
    Line::from(spans)
}

/// A table column: its title, width and how a backend fills it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Id,
    Source,
    Health,
    Circuit,
    Weight,
    InFlight,
    Rate,
    P50,
    P99,
    Errors,
    Ewma,
    Eject,
}

/// Left to right as shown.
const ORDER: [Column; 12] = [
    Column::Id,
    Column::Source,
    Column::Health,
    Column::Circuit,
    Column::Weight,
    Column::InFlight,
    Column::Rate,
    Column::P50,
    Column::P99,
    Column::Errors,
    Column::Ewma,
    Column::Eject,
];

/// Dropped first to last when the pane is narrow (the id, health and load always stay).
const DROP_ORDER: [Column; 6] = [
    Column::Source,
    Column::Ewma,
    Column::Weight,
    Column::Eject,
    Column::Circuit,
    Column::Errors,
];

impl Column {
    fn title(self) -> &'static str {
        match self {
            Column::Id => "Backend",
            Column::Source => "Source",
            Column::Health => "Health",
            Column::Circuit => "Circuit",
            Column::Weight => "Wt",
            Column::InFlight => "InFl/Max",
            Column::Rate => "Req/s",
            Column::P50 => "p50",
            Column::P99 => "p99",
            Column::Errors => "Errors",
            Column::Ewma => "EWMA",
            Column::Eject => "Eject",
        }
    }

    /// Fixed width; the id column's is decided by the table.
    fn width(self) -> usize {
        match self {
            Column::Id => ID_MIN,
            Column::Source => 14,
            Column::Health => 7,
            Column::Circuit => 9,
            Column::Weight => 3,
            Column::InFlight => 8,
            Column::Rate => 6,
            Column::P50 | Column::P99 | Column::Ewma => 6,
            Column::Errors => 6,
            Column::Eject => 6,
        }
    }

    fn cell(self, b: &BackendSnapshot) -> TextCell {
        match self {
            Column::Id => TextCell::left(b.id.clone(), theme::label()),
            Column::Source => TextCell::left(source_text(&b.source), theme::dim()),
            // Draining is the operator's doing and says more than the check's verdict.
            Column::Health if b.draining => TextCell::left("drain".to_string(), theme::warning()),
            Column::Health => TextCell::left(b.health.name().to_string(), health_style(b.health)),
            Column::Circuit => {
                TextCell::left(b.circuit.name().to_string(), circuit_style(b.circuit))
            }
            Column::Weight => TextCell::right(b.weight.to_string(), Style::new()),
            Column::InFlight => TextCell::right(
                format!("{}/{}", b.in_flight, b.max_connections),
                in_flight_style(b),
            ),
            Column::Rate => TextCell::right(fmt_rate(b.requests_per_sec), Style::new()),
            Column::P50 => latency_cell(b.latency_p50_ms),
            Column::P99 => latency_cell(b.latency_p99_ms),
            Column::Errors => TextCell::right(fmt_count(b.errors_total as f64), Style::new()),
            Column::Ewma => TextCell::right(fmt_ms(b.ewma_ms), Style::new()),
            Column::Eject => TextCell::right(eject_text(b), eject_style(b)),
        }
    }
}

/// The columns shown at one width, and the id column's width.
struct Columns {
    shown: Vec<Column>,
    id_width: usize,
    source_width: usize,
}

impl Columns {
    fn for_width(b: &BalancerSnapshot, width: usize) -> Columns {
        let longest_id = all_backends(b)
            .map(|x| x.id.chars().count())
            .max()
            .unwrap_or(0)
            .max(Column::Id.title().len());
        let mut shown: Vec<Column> = ORDER.to_vec();
        let fixed = |shown: &[Column]| -> usize {
            shown
                .iter()
                .filter(|c| **c != Column::Id)
                .map(|c| c.width() + 1)
                .sum()
        };
        for drop in DROP_ORDER {
            if fixed(&shown) + ID_MIN <= width {
                break;
            }
            shown.retain(|c| *c != drop);
        }
        let room = width.saturating_sub(fixed(&shown));
        let id_width = longest_id.clamp(ID_MIN, ID_MAX).min(room.max(1));
        // What is left widens the source column up to its longest text (container names).
        let longest_source = all_backends(b)
            .map(|x| source_text(&x.source).chars().count())
            .max()
            .unwrap_or(0);
        let spare = room.saturating_sub(id_width);
        let source_width = Column::Source.width()
            + longest_source
                .saturating_sub(Column::Source.width())
                .min(spare)
                .min(SOURCE_MAX - Column::Source.width());
        Columns {
            shown,
            id_width,
            source_width,
        }
    }

    fn width_of(&self, column: Column) -> u16 {
        let width = match column {
            Column::Id => self.id_width,
            Column::Source => self.source_width,
            _ => column.width(),
        };
        u16::try_from(width).unwrap_or(u16::MAX)
    }

    fn header(&self) -> Line<'static> {
        let style = theme::table_header();
        join_cells(self.shown.iter().map(|c| {
            let cell = match c {
                Column::Id | Column::Source | Column::Health | Column::Circuit => {
                    TextCell::left(c.title().to_string(), style)
                }
                _ => TextCell::right(c.title().to_string(), style),
            };
            (cell, self.width_of(*c))
        }))
    }

    fn row(&self, backend: &BackendSnapshot) -> Line<'static> {
        join_cells(
            self.shown
                .iter()
                .map(|c| (c.cell(backend), self.width_of(*c))),
        )
    }
}

fn source_text(source: &BackendSource) -> String {
    match source {
        BackendSource::Config => "config".to_string(),
        BackendSource::Api => "api".to_string(),
        BackendSource::Docker { container } => format!("docker:{container}"),
    }
}

fn health_style(health: Health) -> Style {
    match health {
        Health::Up => theme::good(),
        Health::Unknown => theme::dim(),
        Health::Down => theme::error(),
        Health::Ejected => theme::warning(),
    }
}

fn circuit_style(circuit: CircuitState) -> Style {
    match circuit {
        CircuitState::Closed => Style::new(),
        CircuitState::HalfOpen => theme::warning(),
        CircuitState::Open => theme::error(),
    }
}

fn in_flight_style(b: &BackendSnapshot) -> Style {
    if b.max_connections == 0 {
        return Style::new();
    }
    theme::load((b.in_flight as f64 * 100.0 / f64::from(b.max_connections)) as f32)
}

fn latency_cell(ms: Option<f64>) -> TextCell {
    match ms {
        Some(ms) => TextCell::right(fmt_ms(ms), Style::new()),
        None => TextCell::right("–".to_string(), theme::dim()),
    }
}

/// "2/45s": ejected twice, out for 45 more seconds; "2" when back in; "0" never.
fn eject_text(b: &BackendSnapshot) -> String {
    match b.ejected_for_secs {
        Some(secs) => format!("{}/{secs}s", b.ejections),
        None => b.ejections.to_string(),
    }
}

fn eject_style(b: &BackendSnapshot) -> Style {
    if b.ejected_for_secs.is_some() {
        theme::warning()
    } else {
        Style::new()
    }
}

/// Requests per second for a narrow column: "0.5", "12.3", "950", "12.3k".
fn fmt_rate(rate: f64) -> String {
    if !rate.is_finite() || rate <= 0.0 {
        "0".to_string()
    } else if rate < 100.0 {
        format!("{rate:.1}")
    } else {
        fmt_count(rate)
    }
}

/// A latency in milliseconds for a six-cell column: "850µs", "12.3ms", "123ms", "1.23s".
fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "–".to_string()
    } else if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if ms < 10_000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        format!("{:.0}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fit_six_cells() {
        assert_eq!(fmt_ms(0.85), "850µs");
        assert_eq!(fmt_ms(12.34), "12.3ms");
        assert_eq!(fmt_ms(123.4), "123ms");
        assert_eq!(fmt_ms(1234.0), "1.23s");
        assert_eq!(fmt_ms(123_456.0), "123s");
        assert_eq!(fmt_ms(f64::NAN), "–");
        for ms in [0.0005, 0.999, 99.94, 999.4, 9_999.0, 99_999.0] {
            assert!(fmt_ms(ms).chars().count() <= 6, "{ms}: {}", fmt_ms(ms));
        }
    }

    #[test]
    fn rates_fit_six_cells() {
        assert_eq!(fmt_rate(0.0), "0");
        assert_eq!(fmt_rate(12.34), "12.3");
        assert_eq!(fmt_rate(950.0), "950");
        assert_eq!(fmt_rate(12_345.0), "12.3k");
        assert_eq!(fmt_rate(f64::INFINITY), "0");
    }

    #[test]
    fn backends_not_checked_yet_are_named_and_not_held_against_the_share() {
        let backend = |health| BackendSnapshot {
            health,
            ..BackendSnapshot::default()
        };
        let fresh = [backend(Health::Unknown), backend(Health::Unknown)];
        let share = health_share(fresh.iter());
        assert_eq!(share.content, "0/2 up, 2 not checked yet");
        assert_eq!(share.style, Style::default(), "not an outage");
        let half = [
            backend(Health::Up),
            backend(Health::Unknown),
            backend(Health::Down),
        ];
        let share = health_share(half.iter());
        assert_eq!(share.content, "1/3 up, 1 not checked yet");
        assert_eq!(share.style, theme::warning());
        let down = [backend(Health::Down), backend(Health::Down)];
        assert_eq!(health_share(down.iter()).style, theme::error());
        let up = [backend(Health::Up)];
        assert_eq!(health_share(up.iter()).content, "1/1 up");
        assert_eq!(health_share(up.iter()).style, theme::good());
    }

    #[test]
    fn long_lines_are_cut_with_an_ellipsis() {
        let line = Line::from(vec![Span::raw("abc"), Span::raw("defgh")]);
        assert_eq!(cut_to_width(line.clone(), 8).to_string(), "abcdefgh");
        assert_eq!(cut_to_width(line.clone(), 6).to_string(), "abcde…");
        assert_eq!(cut_to_width(line, 3).to_string(), "ab…");
    }

    #[test]
    fn narrow_panes_drop_the_least_telling_columns_first() {
        let b = BalancerSnapshot {
            pools: vec![PoolSnapshot {
                backends: vec![BackendSnapshot {
                    id: "127.0.0.1:18081".into(),
                    ..BackendSnapshot::default()
                }],
                ..PoolSnapshot::default()
            }],
            ..BalancerSnapshot::default()
        };
        let wide = Columns::for_width(&b, 198);
        assert_eq!(wide.shown.len(), ORDER.len());
        let narrow = Columns::for_width(&b, 78);
        assert!(!narrow.shown.contains(&Column::Source));
        assert!(!narrow.shown.contains(&Column::Ewma));
        assert!(narrow.shown.contains(&Column::Eject));
        assert!(narrow.header().width() <= 78, "{:?}", narrow.header());
        assert_eq!(narrow.id_width, 15);
    }
}
