//! Memory and pressure: usage, swap traffic, faults, THP and KSM, then PSI for cpu, memory
//! and io with a trend drawn from the snapshot's history rings.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{bar, fmt_count, fmt_kb, pane_block, spark_text};
use crate::model::{MemorySnapshot, PsiResource, Ring, Snapshot};
use crate::tui::theme;

/// Width of the text before a PSI trend.
const PSI_TEXT_WIDTH: usize = 40;
/// A quiet system still gets a visible scale: trends are drawn against at least 10 %.
const PSI_MIN_SCALE: f32 = 10.0;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, focused: bool) {
    let block = pane_block(Line::from(" Memory & pressure "), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let mut lines = memory_lines(&snap.memory, width);
    lines.extend(pressure_lines(snap, width));
    lines.extend(history_lines(snap, width));
    frame.render_widget(Paragraph::new(lines), inner);
}

fn memory_lines(mem: &MemorySnapshot, width: usize) -> Vec<Line<'static>> {
    if mem.total_kb == 0 {
        return vec![Line::styled(
            "Memory: waiting for the first sample.",
            theme::dim(),
        )];
    }
    let used_pct = (mem.used_fraction() * 100.0) as f32;
    let used_kb = mem.total_kb.saturating_sub(mem.available_kb);
    let bar_width = (width / 5).clamp(4, 20);
    let mut first = vec![Span::styled("Mem   ", theme::label())];
    first.extend(bar(used_pct, bar_width));
    first.extend([
        Span::styled(format!(" {used_pct:>3.0}% "), theme::load(used_pct)),
        Span::raw(format!(
            "used {} of {} · avail {}",
            fmt_kb(used_kb),
            fmt_kb(mem.total_kb),
            fmt_kb(mem.available_kb)
        )),
    ]);
    vec![
        Line::from(first),
        Line::from(format!(
            "      cached {} · buffers {} · dirty {} · writeback {}",
            fmt_kb(mem.cached_kb),
            fmt_kb(mem.buffers_kb),
            fmt_kb(mem.dirty_kb),
            fmt_kb(mem.writeback_kb)
        )),
        swap_line(mem),
        Line::from(vec![
            Span::styled("THP   ", theme::label()),
            Span::raw(format!(
                "enabled {} · defrag {} · anon huge {}",
                mem.thp_enabled.as_deref().unwrap_or("n/a"),
                mem.thp_defrag.as_deref().unwrap_or("n/a"),
                fmt_kb(mem.anon_huge_kb)
            )),
        ]),
        ksm_line(mem),
    ]
}

fn swap_line(mem: &MemorySnapshot) -> Line<'static> {
    let mut spans = vec![Span::styled("Swap  ", theme::label())];
    if mem.swap_total_kb == 0 {
        spans.push(Span::raw("none configured · "));
    } else {
        let used = mem.swap_total_kb.saturating_sub(mem.swap_free_kb);
        spans.push(Span::raw(format!(
            "used {} of {} · ",
            fmt_kb(used),
            fmt_kb(mem.swap_total_kb)
        )));
    }
    let paging = mem.swap_in_per_sec + mem.swap_out_per_sec;
    spans.extend([
        Span::styled(
            format!(
                "in {}/s out {}/s",
                fmt_count(mem.swap_in_per_sec),
                fmt_count(mem.swap_out_per_sec)
            ),
            if paging > 0.0 {
                theme::warning()
            } else {
                theme::good()
            },
        ),
        Span::raw(" · major faults "),
        Span::styled(
            format!("{}/s", fmt_count(mem.major_faults_per_sec)),
            if mem.major_faults_per_sec > 0.0 {
                theme::warning()
            } else {
                theme::good()
            },
        ),
    ]);
    Line::from(spans)
}

fn ksm_line(mem: &MemorySnapshot) -> Line<'static> {
    let text = match &mem.ksm {
        None => "not available".to_string(),
        Some(ksm) => format!(
            "{} · shared {} · sharing {} · unshared {} · volatile {} · scans {}",
            if ksm.run == 1 { "on" } else { "off" },
            ksm.pages_shared,
            ksm.pages_sharing,
            ksm.pages_unshared,
            ksm.pages_volatile,
            ksm.full_scans
        ),
    };
    Line::from(vec![
        Span::styled("KSM   ", theme::label()),
        Span::raw(text),
    ])
}

fn pressure_lines(snap: &Snapshot, width: usize) -> Vec<Line<'static>> {
    let trend_width = width.saturating_sub(PSI_TEXT_WIDTH);
    let mut header = format!(
        "{:<8}{:>7}{:>7}  {:>7}{:>7}  ",
        "PSI %", "some10", "some60", "full10", "full60"
    );
    if trend_width >= 4 {
        header.push_str("some avg10 trend");
    }
    let history = &snap.history;
    vec![
        Line::styled(header, theme::label()),
        psi_line("cpu", snap.pressure.cpu, &history.psi_cpu_some, trend_width),
        psi_line(
            "memory",
            snap.pressure.memory,
            &history.psi_memory_some,
            trend_width,
        ),
        psi_line("io", snap.pressure.io, &history.psi_io_some, trend_width),
    ]
}

fn psi_line(
    name: &str,
    psi: Option<PsiResource>,
    ring: &Ring,
    trend_width: usize,
) -> Line<'static> {
    let Some(psi) = psi else {
        return Line::from(vec![
            Span::raw(format!("{name:<8}")),
            Span::styled("not available", theme::dim()),
        ]);
    };
    let mut spans = vec![
        Span::raw(format!("{name:<8}")),
        psi_value(psi.some.avg10),
        psi_value(psi.some.avg60),
        Span::raw("  "),
    ];
    match psi.full {
        Some(full) => spans.extend([psi_value(full.avg10), psi_value(full.avg60)]),
        None => spans.push(Span::styled(format!("{:>7}{:>7}", "-", "-"), theme::dim())),
    }
    spans.push(Span::raw("  "));
    if trend_width >= 4 {
        let latest = ring.last().unwrap_or(0.0);
        spans.push(trend(
            ring,
            trend_width,
            PSI_MIN_SCALE,
            theme::pressure(latest),
        ));
    }
    Line::from(spans)
}

fn psi_value(pct: f32) -> Span<'static> {
    Span::styled(format!("{pct:>7.2}"), theme::pressure(pct))
}

fn trend(ring: &Ring, width: usize, min_scale: f32, style: Style) -> Span<'static> {
    let max = ring.points.iter().copied().fold(min_scale, f32::max);
    Span::styled(spark_text(ring.points.iter(), width, max), style)
}

fn history_lines(snap: &Snapshot, width: usize) -> Vec<Line<'static>> {
    let trend_width = width.saturating_sub(PSI_TEXT_WIDTH);
    if trend_width < 4 || snap.history.cpu_busy_pct.points.is_empty() {
        return Vec::new();
    }
    let row = |label: &str, ring: &Ring| {
        Line::from(vec![
            Span::styled(format!("{label:<PSI_TEXT_WIDTH$}"), theme::dim()),
            trend(
                ring,
                trend_width,
                100.0,
                theme::load(ring.last().unwrap_or(0.0)),
            ),
        ])
    };
    vec![
        row("history: cpu busy %", &snap.history.cpu_busy_pct),
        row("history: memory used %", &snap.history.mem_used_pct),
    ]
}
