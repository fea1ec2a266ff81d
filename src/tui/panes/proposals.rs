//! The proposals pane. Detection and proposals are not built yet (issue #3) and the pane says
//! so; what it does show is real: the batches of changes the journal says are active on the
//! host, any batch an earlier run left half applied, and journal damage. `r` rolls back the
//! selected batch.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::table::{highlighted, visible_window};
use crate::snapshot::{ActiveBatch, Snapshot};
use crate::tui::app::{App, Pane};
use crate::tui::theme;

pub const NOT_BUILT: &str = "Detection and proposals: not built yet (issue #3).";

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, app: &App, focused: bool) {
    let changes = &snap.changes;
    let title = format!(
        " {} · {} active ",
        Pane::Proposals.title(),
        changes.active.len()
    );
    let block = super::pane_block(Line::from(title), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let mut lines = Vec::new();
    if inner.height <= 2 {
        // The grid's compact strip: one summary line.
        lines.push(summary(snap));
    } else {
        lines.push(Line::from(Span::styled(NOT_BUILT, theme::dim())));
        for problem in &changes.problems {
            lines.push(Line::from(Span::styled(problem.clone(), theme::error())));
        }
        if changes.active.is_empty() {
            let where_ = if changes.journal_found {
                format!("journal {}/journal.jsonl", changes.state_dir)
            } else {
                format!("no journal yet in {}", changes.state_dir)
            };
            lines.push(Line::from(format!(
                "No change of ours is active on the host ({where_})."
            )));
        } else {
            lines.push(Line::from(Span::styled(
                "Active changes (r rolls back the selected batch):",
                theme::label(),
            )));
            let room = inner.height.saturating_sub(lines.len() as u16);
            let selected = app.selected_batch_index(&changes.active);
            let (window, selected_row) = visible_window(changes.active.len(), selected, room + 1);
            for (row, batch) in changes.active[window].iter().enumerate() {
                let line = batch_line(batch, snap.taken_at_ms);
                lines.push(if focused && row == selected_row {
                    highlighted(line, theme::selected_row())
                } else {
                    line
                });
            }
        }
    }
    // One row per line (no wrapping), so the selection window lines up with the batches.
    frame.render_widget(Paragraph::new(lines), inner);
}

fn summary(snap: &Snapshot) -> Line<'static> {
    let changes = &snap.changes;
    let interrupted = changes.active.iter().filter(|b| b.interrupted).count();
    let mut spans = vec![Span::raw(format!("{} active", changes.active.len()))];
    if interrupted > 0 {
        spans.push(Span::styled(
            format!(" · {interrupted} half applied"),
            theme::error(),
        ));
    }
    spans.push(Span::styled(" · detection: not built (#3)", theme::dim()));
    Line::from(spans)
}

fn batch_line(batch: &ActiveBatch, now_ms: u64) -> Line<'static> {
    let age_s = now_ms.saturating_sub(batch.at_ms) / 1000;
    let mut spans = vec![
        Span::styled(format!("#{:<4}", batch.batch), theme::label()),
        Span::raw(format!(
            "{}/{} applied {:>5}  ",
            batch.applied,
            batch.total,
            short_age(age_s)
        )),
    ];
    // Before the label, so a narrow pane never cuts it off.
    if batch.interrupted {
        spans.push(Span::styled("HALF APPLIED ", theme::error()));
    }
    spans.push(Span::raw(batch.label.clone()));
    Line::from(spans)
}

fn short_age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}
