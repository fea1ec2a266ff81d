//! The memory pools pane: per pool how full it is, its objects, what deduplication and
//! compression save, evictions and refusals; then per agent what it holds and what sharing
//! saves it. Every number comes from the snapshot; a store not served says why.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{bar, fmt_count, pane_block, short_bytes};
use crate::model::Snapshot;
use crate::tui::theme;
use sutazai_pools::{AgentUse, PoolSnapshot, PoolsSnapshot};

/// Width of the fill bar, when the pane is wide enough for it.
const BAR_WIDTH: usize = 8;
/// Inner width from which the fill bar is drawn.
const BAR_MIN_WIDTH: usize = 76;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, focused: bool) {
    let block = pane_block(Line::from(" Pools "), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    let paragraph = match (&snap.pools.serving, inner.height) {
        (None, 1) => Paragraph::new(Line::styled("not served", theme::dim())),
        (None, _) => {
            let mut lines = vec![Line::styled(not_served(snap), theme::dim())];
            lines.extend(ksm_lines(snap));
            Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: true })
        }
        (Some(store), 1) => Paragraph::new(summary_line(store)),
        (Some(store), _) => {
            let mut lines = full_lines(store, width);
            lines.extend(ksm_lines(snap));
            Paragraph::new(lines)
        }
    };
    frame.render_widget(paragraph, inner);
}

fn not_served(snap: &Snapshot) -> String {
    let why = snap
        .pools
        .not_serving
        .as_deref()
        .unwrap_or("no store in this engine");
    format!("Memory pools not served: {why}. Nothing is measured here.")
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |r| format!("{r:.2}x"))
}

/// The one line of the grid's compact row.
fn summary_line(store: &PoolsSnapshot) -> Line<'static> {
    let (used, capacity, physical, logical) = store.pools.iter().fold((0, 0, 0, 0), |t, p| {
        (
            t.0 + p.used_bytes,
            t.1 + p.capacity_bytes,
            t.2 + p.physical_bytes,
            t.3 + p.logical_bytes,
        )
    });
    let dedup = (physical > 0).then(|| logical as f64 / physical as f64);
    Line::from(vec![Span::raw(format!(
        "{} of {} · dedup {} · {} clients",
        short_bytes(used as f64),
        short_bytes(capacity as f64),
        ratio(dedup),
        store.clients
    ))])
}

fn full_lines(store: &PoolsSnapshot, width: usize) -> Vec<Line<'static>> {
    let with_bar = width >= BAR_MIN_WIDTH;
    let mut lines = vec![Line::from(vec![
        Span::styled("Socket ", theme::label()),
        Span::raw(format!("{} · {} clients", store.socket, store.clients)),
    ])];
    lines.push(Line::styled(
        format!(
            "{:<12} {}{:>11} {:>8} {:>7} {:>7} {:>8} {:>7}",
            "POOL",
            if with_bar {
                " ".repeat(BAR_WIDTH + 1)
            } else {
                String::new()
            },
            "USED/SIZE",
            "OBJECTS",
            "DEDUP",
            "PACKED",
            "EVICTED",
            "REFUSED"
        ),
        theme::table_header(),
    ));
    for pool in &store.pools {
        lines.push(pool_line(pool, with_bar));
    }
    if store.agents.is_empty() {
        lines.push(Line::styled(
            "No agent holds anything yet (clients connect to the socket above).",
            theme::dim(),
        ));
        return lines;
    }
    lines.push(Line::styled(
        format!(
            "{:<24} {:<12} {:>7} {:>9} {:>9} {:>9}",
            "AGENT", "POOL", "OBJECTS", "HELD", "SAVED", "SEGMENTS"
        ),
        theme::table_header(),
    ));
    for agent in &store.agents {
        lines.push(agent_line(agent));
    }
    lines
}

fn pool_line(pool: &PoolSnapshot, with_bar: bool) -> Line<'static> {
    let mut spans = vec![Span::raw(format!("{:<12} ", clip(&pool.name, 12)))];
    if with_bar {
        let pct = pool.used_bytes as f32 * 100.0 / pool.capacity_bytes.max(1) as f32;
        spans.extend(bar(pct, BAR_WIDTH));
        spans.push(Span::raw(" "));
    }
    let packed = match pool.packed_objects {
        0 => "–".to_string(),
        _ => ratio(pool.compression_ratio()),
    };
    spans.push(Span::raw(format!(
        "{:>11} {:>8} {:>7} {:>7} {:>8} ",
        format!(
            "{}/{}",
            short_bytes(pool.used_bytes as f64),
            short_bytes(pool.capacity_bytes as f64)
        ),
        fmt_count(pool.objects as f64),
        ratio(pool.dedup_ratio()),
        packed,
        fmt_count(pool.evictions as f64),
    )));
    let refused = format!("{:>7}", fmt_count(pool.refused as f64));
    spans.push(match pool.refused {
        0 => Span::raw(refused),
        _ => Span::styled(refused, theme::warning()),
    });
    Line::from(spans)
}

fn agent_line(agent: &AgentUse) -> Line<'static> {
    Line::from(vec![
        Span::raw(format!(
            "{:<24} {:<12} ",
            clip(&agent.agent, 24),
            clip(&agent.pool, 12)
        )),
        Span::raw(format!(
            "{:>7} {:>9} ",
            fmt_count(agent.objects as f64),
            short_bytes(agent.held_bytes as f64)
        )),
        Span::styled(
            format!("{:>9}", short_bytes(agent.saved_bytes as f64)),
            theme::good(),
        ),
        Span::raw(format!(" {:>9}", short_bytes(agent.segment_bytes as f64))),
    ])
}

/// For agents that do not use the pools: what KSM merges for them.
fn ksm_lines(snap: &Snapshot) -> Vec<Line<'static>> {
    let rows = snap.ksm_outside_pools();
    if rows.is_empty() {
        return vec![Line::styled(
            "KSM: no agent outside the pools has mergeable memory (sutazai-top run --ksm -- CMD \
             starts one whose memory is)",
            theme::dim(),
        )];
    }
    let mut lines = vec![Line::styled(
        format!(
            "{:<24} {:>12} {:>12}  {}",
            "KSM (NOT IN POOLS)", "MERGED", "PROFIT", "MERGEABLE"
        ),
        theme::table_header(),
    )];
    for (name, ksm) in rows {
        let profit = match ksm.profit_bytes {
            p if p < 0 => format!("-{}", short_bytes(p.unsigned_abs() as f64)),
            p => short_bytes(p as f64),
        };
        lines.push(Line::raw(format!(
            "{:<24} {:>12} {:>12}  {}",
            clip(&name, 24),
            short_bytes(ksm.merging_bytes as f64),
            profit,
            if ksm.merge_any {
                "whole process"
            } else {
                "areas (madvise)"
            }
        )));
    }
    lines
}

fn clip(text: &str, width: usize) -> String {
    match text.char_indices().nth(width) {
        Some((at, _)) => format!("{}…", &text[..at.saturating_sub(1)]),
        None => text.to_string(),
    }
}
