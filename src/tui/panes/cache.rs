//! The cache pane: per level how full it is, its hit ratio, evictions and promotions, the
//! policy deciding (and what `adaptive` follows); prefetch accuracy; the hit-ratio trend.
//! Every number comes from the snapshot; a cache that is off says so and shows none.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{bar, fmt_count, pane_block, short_bytes, spark_text};
use crate::model::Snapshot;
use crate::tui::theme;
use sutazai_cache::{CacheSnapshot, LevelSnapshot};

/// What the pane says when the engine runs no cache.
pub const OFF: &str = "Cache off ([cache] enabled = false): nothing is cached, no numbers to show.";
const OFF_SHORT: &str = "off ([cache] enabled = false)";
/// Width of the fill bar, when the pane is wide enough for it.
const BAR_WIDTH: usize = 8;
/// Inner width from which the fill bar is drawn.
const BAR_MIN_WIDTH: usize = 76;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, focused: bool) {
    let block = pane_block(Line::from(" Cache "), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    let lines = match (&snap.cache, inner.height) {
        (None, 1) => vec![Line::styled(OFF_SHORT, theme::dim())],
        (None, _) => vec![Line::styled(OFF, theme::dim())],
        (Some(cache), 1) => vec![summary_line(cache)],
        (Some(cache), _) => full_lines(cache, width),
    };
    frame.render_widget(Paragraph::new(lines), inner);
}

fn pct(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// The one line of the grid's compact row.
fn summary_line(cache: &CacheSnapshot) -> Line<'static> {
    let mut spans = vec![Span::styled("hit ", theme::label())];
    if cache.total.gets == 0 {
        spans.push(Span::styled("– (no gets yet)", theme::dim()));
    } else {
        spans.push(Span::raw(pct(cache.hit_ratio)));
    }
    for level in cache.levels.iter().filter(|l| l.present) {
        spans.push(Span::raw(format!(
            " · {} {}",
            level.level,
            short_bytes(level.used_bytes as f64)
        )));
        if level.disabled.is_some() {
            spans.push(Span::styled(" off!", theme::error()));
        }
    }
    Line::from(spans)
}

fn full_lines(cache: &CacheSnapshot, width: usize) -> Vec<Line<'static>> {
    let with_bar = width >= BAR_MIN_WIDTH;
    let mut lines = vec![total_line(cache, width), header_line(with_bar)];
    for level in &cache.levels {
        lines.push(level_line(level, with_bar));
    }
    for level in &cache.levels {
        if let Some(reason) = &level.disabled {
            lines.push(Line::from(vec![
                Span::styled(format!("{} disabled: ", level.level), theme::error()),
                Span::raw(reason.clone()),
            ]));
        }
        if level.dropped_corrupt > 0 {
            lines.push(Line::styled(
                format!(
                    "{}: {} damaged entries dropped (checksum or length)",
                    level.level, level.dropped_corrupt
                ),
                theme::warning(),
            ));
        }
    }
    lines.push(prefetch_line(cache));
    lines.push(agents_line(cache));
    lines
}

fn total_line(cache: &CacheSnapshot, width: usize) -> Line<'static> {
    let t = &cache.total;
    let mut spans = vec![Span::styled("Hit ratio ", theme::label())];
    if t.gets == 0 {
        spans.push(Span::styled("– no gets yet", theme::dim()));
    } else {
        spans.push(Span::raw(format!(
            "{} of {} gets · {} puts",
            pct(cache.hit_ratio),
            fmt_count(t.gets as f64),
            fmt_count(t.puts as f64)
        )));
    }
    if t.refused > 0 {
        spans.push(Span::styled(
            format!(" · {} refused", fmt_count(t.refused as f64)),
            theme::warning(),
        ));
    }
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let room = width.saturating_sub(used + 3);
    if !cache.hit_ratio_history.is_empty() && room >= 4 {
        spans.push(Span::raw("  "));
        spans.push(Span::styled(
            spark_text(cache.hit_ratio_history.iter(), room.min(40), 100.0),
            theme::good(),
        ));
    }
    Line::from(spans)
}

fn header_line(with_bar: bool) -> Line<'static> {
    let fill = if with_bar {
        format!(" {:<BAR_WIDTH$}", "Fill")
    } else {
        String::new()
    };
    Line::styled(
        format!(
            "{:<3} {:>13}{fill} {:>8} {:>6} {:>7} {:>7} Policy",
            "Lvl", "Used/capacity", "Entries", "Hit", "Evict", "Promo"
        ),
        theme::table_header(),
    )
}

fn level_line(level: &LevelSnapshot, with_bar: bool) -> Line<'static> {
    let name = Span::styled(
        format!("{:<3} ", level.level.label().to_uppercase()),
        theme::label(),
    );
    if !level.present {
        return Line::from(vec![
            name,
            Span::styled(
                format!("off ({}_bytes = 0)", level.level.label()),
                theme::dim(),
            ),
        ]);
    }
    let fill_pct = if level.capacity_bytes == 0 {
        0.0
    } else {
        (level.used_bytes as f64 * 100.0 / level.capacity_bytes as f64) as f32
    };
    let mut spans = vec![
        name,
        Span::raw(format!(
            "{:>13}",
            format!(
                "{}/{}",
                short_bytes(level.used_bytes as f64),
                short_bytes(level.capacity_bytes as f64)
            )
        )),
    ];
    if with_bar {
        spans.push(Span::raw(" "));
        spans.extend(bar(fill_pct, BAR_WIDTH));
    }
    let lookups = level.hits + level.misses;
    let hit = if lookups == 0 {
        "–".to_string()
    } else {
        format!("{:.0}%", level.hit_ratio * 100.0)
    };
    spans.push(Span::raw(format!(
        " {:>8} {:>6} {:>7} {:>7} ",
        fmt_count(level.entries as f64),
        hit,
        fmt_count(level.evictions as f64),
        fmt_count(level.promotions as f64),
    )));
    spans.push(Span::styled(policy_text(level), policy_style(level)));
    Line::from(spans)
}

/// "lru", or "adaptive→arc" when adaptive follows another policy.
fn policy_text(level: &LevelSnapshot) -> String {
    if level.chosen.is_empty() || level.chosen == level.policy {
        level.policy.clone()
    } else {
        format!("{}→{}", level.policy, level.chosen)
    }
}

fn policy_style(level: &LevelSnapshot) -> Style {
    if level.disabled.is_some() {
        theme::error()
    } else {
        Style::new()
    }
}

fn prefetch_line(cache: &CacheSnapshot) -> Line<'static> {
    let label = Span::styled("Prefetch ", theme::label());
    match &cache.prefetch {
        None => Line::from(vec![label, Span::styled("no prefetch yet", theme::dim())]),
        Some(p) => Line::from(vec![
            label,
            Span::raw(format!(
                "accuracy {} ({} used of {} prefetched, depth {})",
                pct(p.accuracy),
                fmt_count(p.used as f64),
                fmt_count(p.prefetched as f64),
                p.depth
            )),
        ]),
    }
}

fn agents_line(cache: &CacheSnapshot) -> Line<'static> {
    let label = Span::styled("Agents ", theme::label());
    if cache.agents.is_empty() {
        return Line::from(vec![label, Span::styled("none yet", theme::dim())]);
    }
    let busiest: Vec<String> = cache
        .agents
        .iter()
        .take(4)
        .map(|a| {
            if a.counts.gets == 0 {
                format!("{} {} puts", a.agent, fmt_count(a.counts.puts as f64))
            } else {
                format!(
                    "{} {} of {}",
                    a.agent,
                    pct(a.hit_ratio),
                    fmt_count(a.counts.gets as f64)
                )
            }
        })
        .collect();
    let more = cache.agents.len().saturating_sub(busiest.len());
    let mut text = busiest.join(" · ");
    if more > 0 {
        text.push_str(&format!(" · +{more} more"));
    }
    Line::from(vec![label, Span::raw(text)])
}
