//! One file per pane, plus the helpers they share: the pane frame, bars and number formats.
//! Every pane is `render(frame, area, snap, app, focused)`: a pure function of its inputs.

pub mod balancer;
pub mod cache;
pub mod containers;
pub mod cores;
pub mod io;
pub mod log;
pub mod memory;
pub mod pools;
pub mod processes;
pub mod proposals;
pub mod table;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Block;

use crate::model::Snapshot;
use crate::tui::app::{App, Pane};
use crate::tui::theme;

/// Draw `pane` into `area`.
pub fn render(frame: &mut Frame, area: Rect, pane: Pane, snap: &Snapshot, app: &App) {
    let focused = app.focus == pane;
    match pane {
        Pane::Cores => cores::render(frame, area, snap, focused),
        Pane::Memory => memory::render(frame, area, snap, focused),
        Pane::Containers => containers::render(frame, area, snap, app, focused),
        Pane::Processes => processes::render(frame, area, snap, app, focused),
        Pane::Io => io::render(frame, area, snap, focused),
        Pane::Pools => pools::render(frame, area, snap, focused),
        Pane::Cache => cache::render(frame, area, snap, focused),
        Pane::Balancer => balancer::render(frame, area, snap, focused),
        Pane::Proposals => proposals::render(frame, area, snap, app, focused),
        Pane::Log => log::render(frame, area, snap, focused),
    }
}

/// The frame around a pane; the focused one gets the focus colour on border and title.
pub fn pane_block(title: Line<'_>, focused: bool) -> Block<'_> {
    // The marker keeps focus visible on terminals without colour.
    let (border, title) = if focused {
        let mut marked = title;
        marked.spans.insert(0, Span::raw(" ▶"));
        (theme::focus_border(), marked.style(theme::focus_title()))
    } else {
        (theme::border(), title.style(theme::title()))
    };
    Block::bordered().border_style(border).title(title)
}

/// A horizontal bar `width` cells wide, filled to `pct` percent, coloured by load.
pub fn bar(pct: f32, width: usize) -> Vec<Span<'static>> {
    let pct = if pct.is_finite() {
        pct.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let filled = ((pct / 100.0) * width as f32).round() as usize;
    let filled = filled.min(width);
    vec![
        Span::styled("█".repeat(filled), theme::load(pct)),
        Span::styled("░".repeat(width - filled), theme::empty_bar()),
    ]
}

const SPARK_LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A one-line sparkline of the last `width` points, scaled to `max`.
pub fn spark_text<'a>(
    points: impl DoubleEndedIterator<Item = &'a f32>,
    width: usize,
    max: f32,
) -> String {
    let mut recent: Vec<f32> = points.rev().take(width).copied().collect();
    recent.reverse();
    let max = if max > 0.0 { max } else { 1.0 };
    recent
        .iter()
        .map(|v| {
            let level = ((v.max(0.0) / max) * (SPARK_LEVELS.len() - 1) as f32).round() as usize;
            SPARK_LEVELS
                .get(level.min(SPARK_LEVELS.len() - 1))
                .copied()
                .unwrap_or(' ')
        })
        .collect()
}

const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// Bytes for reading: "0 B", "512 KiB", "1.5 GiB".
pub fn fmt_bytes(bytes: u64) -> String {
    let (value, unit) = scale(bytes as f64);
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS.get(unit).copied().unwrap_or("?"))
    }
}

pub fn fmt_kb(kb: u64) -> String {
    fmt_bytes(kb.saturating_mul(1024))
}

/// Bytes for a narrow column: "0", "512K", "1.5M", "12G".
pub fn short_bytes(bytes: f64) -> String {
    let bytes = if bytes.is_finite() {
        bytes.max(0.0)
    } else {
        0.0
    };
    let (value, unit) = scale(bytes);
    let suffix = UNITS
        .get(unit)
        .and_then(|u| u.chars().next())
        .unwrap_or('?');
    match unit {
        0 => format!("{}", bytes.round() as u64),
        _ if value < 10.0 => format!("{value:.1}{suffix}"),
        _ => format!("{value:.0}{suffix}"),
    }
}

fn scale(bytes: f64) -> (f64, usize) {
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    (value, unit)
}

/// A rate such as context switches: "950", "12.3k", "4.1M".
pub fn fmt_count(value: f64) -> String {
    let value = if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    };
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// Uptime as "3d 04:05" or "04:05" (hours:minutes).
pub fn fmt_uptime(secs: u64) -> String {
    let days = secs / 86_400;
    let hours = (secs % 86_400) / 3_600;
    let minutes = (secs % 3_600) / 60;
    if days > 0 {
        format!("{days}d {hours:02}:{minutes:02}")
    } else {
        format!("{hours:02}:{minutes:02}")
    }
}

/// A style for a text that is good news when zero and bad news otherwise.
pub fn zero_is_good(value: f64) -> Style {
    if value > 0.0 {
        theme::error()
    } else {
        Style::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_formats() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_kb(8 * 1024 * 1024), "8.0 GiB");
        assert_eq!(short_bytes(0.0), "0");
        assert_eq!(short_bytes(1536.0), "1.5K");
        assert_eq!(short_bytes(64.0 * 1024.0 * 1024.0), "64M");
    }

    #[test]
    fn bar_fills_in_proportion() {
        let spans = bar(50.0, 10);
        assert_eq!(spans[0].content, "█████");
        assert_eq!(spans[1].content, "░░░░░");
        assert_eq!(bar(250.0, 4)[0].content, "████");
        assert_eq!(bar(f32::NAN, 4)[1].content, "░░░░");
    }

    #[test]
    fn sparkline_keeps_the_latest_points() {
        let points = [0.0f32, 100.0, 50.0, 0.0];
        assert_eq!(spark_text(points.iter(), 3, 100.0), "█▅▁");
    }

    #[test]
    fn uptime_and_counts() {
        assert_eq!(fmt_uptime(3 * 86_400 + 4 * 3_600 + 5 * 60), "3d 04:05");
        assert_eq!(fmt_uptime(59), "00:00");
        assert_eq!(fmt_count(12_345.0), "12.3k");
        assert_eq!(fmt_count(950.0), "950");
    }
}
