//! The proposals pane: bottlenecks the engine found, the fixes it proposes (risk, evidence,
//! exact changes), what is applied, and every batch of ours active on the host. `a` applies
//! the selected fix (high risk asks twice), `r` rolls back, `d` dismisses.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::table::{highlighted, visible_window};
use crate::model::{ActiveBatch, Snapshot};
use crate::model::{IntentTarget, Risk};
use crate::model::{Proposal, ProposalStatus, Verdict};
use crate::tui::app::{App, Pane, ProposalRow, proposal_rows};
use crate::tui::theme;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, app: &App, focused: bool) {
    let open = snap.proposals.iter().filter(|p| p.status.is_open()).count();
    let title = format!(
        " {} · {} bottlenecks · {} proposed · {} active ",
        Pane::Proposals.title(),
        snap.bottlenecks.len(),
        open,
        snap.changes.active.len()
    );
    let block = super::pane_block(Line::from(title), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let rows = proposal_rows(snap);
    let selected = app.selected_proposal_index(snap, &rows);
    let mut lines = Vec::new();
    if inner.height <= 2 {
        lines.push(summary(snap, open));
    } else {
        for problem in &snap.changes.problems {
            lines.push(Line::from(Span::styled(problem.clone(), theme::error())));
        }
        if rows.is_empty() {
            let journal = if snap.changes.journal_found {
                String::new()
            } else {
                format!(" (no journal yet in {})", snap.changes.state_dir)
            };
            // A bottleneck can hold with no fix for it (a busy host with no agent to act
            // on, or one above the mode): say which, rather than that none held.
            let held = match snap.bottlenecks.len() {
                0 => "No bottleneck held for the configured ticks".to_string(),
                n => format!(
                    "{n} bottleneck{} held ({}), no fix for {} in this mode",
                    if n == 1 { "" } else { "s" },
                    snap.bottlenecks
                        .iter()
                        .map(|b| format!("{} on {}", b.kind.name(), b.subject.label()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if n == 1 { "it" } else { "them" },
                ),
            };
            lines.push(Line::from(format!(
                "{held}; nothing proposed; no change of ours is active{journal}."
            )));
        } else {
            // One row per entry, plus the selected proposal's details underneath.
            let detail = rows
                .get(selected)
                .and_then(|row| match row {
                    ProposalRow::Proposal(i) => snap.proposals.get(*i),
                    ProposalRow::Batch(_) => None,
                })
                .map(|p| details(p, app))
                .unwrap_or_default();
            let room = inner
                .height
                .saturating_sub(lines.len() as u16 + detail.len() as u16);
            let (window, selected_in_window) = visible_window(rows.len(), selected, room + 1);
            for (n, row) in rows[window].iter().enumerate() {
                let line = match row {
                    ProposalRow::Proposal(i) => {
                        snap.proposals.get(*i).map(|p| proposal_line(p, snap.mode))
                    }
                    ProposalRow::Batch(i) => snap
                        .changes
                        .active
                        .get(*i)
                        .map(|b| batch_line(b, snap.taken_at_ms)),
                }
                .unwrap_or_default();
                lines.push(if focused && n == selected_in_window {
                    highlighted(line, theme::selected_row())
                } else {
                    line
                });
            }
            lines.extend(detail);
        }
    }
    // One row per line (no wrapping), so the selection window lines up with the rows.
    frame.render_widget(Paragraph::new(lines), inner);
}

fn summary(snap: &Snapshot, open: usize) -> Line<'static> {
    // Active changes first: in the grid's narrow strip they matter most.
    let interrupted = snap.changes.active.iter().filter(|b| b.interrupted).count();
    let mut spans = vec![Span::raw(format!("{} active", snap.changes.active.len()))];
    if interrupted > 0 {
        spans.push(Span::styled(
            format!(" · {interrupted} half applied"),
            theme::error(),
        ));
    }
    spans.push(Span::raw(format!(
        " · {open} proposed · {} bottlenecks",
        snap.bottlenecks.len()
    )));
    Line::from(spans)
}

fn risk_style(risk: Risk) -> Style {
    match risk {
        Risk::Low => theme::good(),
        Risk::Medium => theme::warning(),
        Risk::High => theme::error(),
    }
}

fn risk_name(risk: Risk) -> &'static str {
    match risk {
        Risk::Low => "low",
        Risk::Medium => "medium",
        Risk::High => "high",
    }
}

fn status_style(status: &ProposalStatus) -> Style {
    match status {
        ProposalStatus::Proposed => theme::label(),
        ProposalStatus::Applied { .. } | ProposalStatus::Applying => theme::good(),
        ProposalStatus::Failed { .. } => theme::error(),
        _ => theme::dim(),
    }
}

fn proposal_line(p: &Proposal, mode: crate::model::Mode) -> Line<'static> {
    let status = match &p.status {
        ProposalStatus::Applied { batch } => format!("applied #{batch}"),
        ProposalStatus::RolledBack { batch } => format!("rolled back #{batch}"),
        other => other.label().to_string(),
    };
    let mut spans = vec![
        Span::styled(format!("P{:<3} ", p.id), theme::label()),
        Span::styled(format!("{status:<15} "), status_style(&p.status)),
        Span::styled(
            format!("{:<6} ", risk_name(p.fix.risk)),
            risk_style(p.fix.risk),
        ),
    ];
    if let Some(text) = validation_tag(p) {
        spans.push(Span::styled(format!("{text} "), validation_style(p)));
    }
    // Applied under a higher mode than the one in force now: offer to roll it back.
    if matches!(p.status, ProposalStatus::Applied { .. }) && !p.fix.risk.allowed_in(mode) {
        spans.push(Span::styled("ABOVE MODE, r rolls back ", theme::warning()));
    }
    spans.push(Span::raw(p.fix.summary.clone()));
    Line::from(spans)
}

/// The selected proposal: why (evidence as numbers), what exactly changes, what should
/// improve.
fn details(p: &Proposal, app: &App) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let evidence: Vec<String> = p
        .bottleneck
        .evidence
        .iter()
        .map(|e| {
            format!(
                "{} {:.1}{} (threshold {:.1})",
                e.metric, e.value, e.unit, e.threshold
            )
        })
        .collect();
    lines.push(Line::from(vec![
        Span::styled(" why: ", theme::dim()),
        Span::raw(format!("{:?}: {}", p.bottleneck.kind, evidence.join("; "))),
    ]));
    for intent in &p.fix.intents {
        let target = match &intent.target {
            IntentTarget::ContainerProcess { name, pid, .. } => {
                format!("{name} pid {pid} (all threads)")
            }
            IntentTarget::Container { name, .. } => name.clone(),
            IntentTarget::ProcessAgent { name, .. } => name.clone(),
            IntentTarget::Cgroup { path } => path.display().to_string(),
            IntentTarget::HostFile { path } => path.clone(),
        };
        // A plan restates what it keeps (it replaces the plan before it): say so, not "0 -> 0".
        let values = if intent.expected_before == intent.after {
            format!("stays {}", intent.after)
        } else if intent.expected_before.is_empty() {
            format!("? -> {}", intent.after)
        } else {
            format!("{} -> {}", intent.expected_before, intent.after)
        };
        lines.push(Line::from(vec![
            Span::styled(" change: ", theme::dim()),
            Span::raw(format!("{target} {:?} {values}", intent.knob)),
        ]));
    }
    lines.push(Line::from(vec![
        Span::styled(" should improve: ", theme::dim()),
        Span::raw(p.fix.metric.clone()),
    ]));
    if let Some(line) = validation_line(p) {
        lines.push(line);
    }
    match &p.status {
        ProposalStatus::Stale { why } | ProposalStatus::Failed { why } => lines.push(Line::from(
            Span::styled(format!(" {why}"), theme::warning()),
        )),
        ProposalStatus::Proposed if app.confirm_apply == Some(p.id) => lines.push(Line::from(
            Span::styled(" high risk: press a again to apply", theme::error()),
        )),
        _ => {}
    }
    lines
}

/// What validation says, in the list: how much it helped, or why it was rolled back.
fn validation_tag(p: &Proposal) -> Option<String> {
    match (&p.validation.verdict, &p.status) {
        (
            Some(Verdict::Helped {
                improvement_pct, ..
            }),
            _,
        ) => Some(format!("-{improvement_pct:.0}%")),
        (Some(Verdict::DidNotHelp { .. }), _) => Some("did not help".to_string()),
        (Some(Verdict::Regressed { .. }), _) => Some("regressed".to_string()),
        (Some(Verdict::Unmeasurable), _) => Some("unproven".to_string()),
        (None, ProposalStatus::Applied { .. }) => Some("validating".to_string()),
        (None, _) => None,
    }
}

fn validation_style(p: &Proposal) -> Style {
    match &p.validation.verdict {
        Some(Verdict::Helped { .. }) => theme::good(),
        Some(verdict) if verdict.rolls_back() => theme::warning(),
        _ => theme::dim(),
    }
}

/// The validation figures: baseline and window readings, the verdict, the guards.
fn validation_line(p: &Proposal) -> Option<Line<'static>> {
    let v = &p.validation;
    v.applied_at_ms?;
    let mean = |values: &[f64]| {
        if values.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", values.iter().sum::<f64>() / values.len() as f64)
        }
    };
    let verdict = v
        .verdict
        .as_ref()
        .map(Verdict::describe)
        .unwrap_or_else(|| "watching".to_string());
    let guards: Vec<String> = v
        .guards
        .iter()
        .filter(|g| !g.after.is_empty())
        .map(|g| format!("{} {} -> {}", g.figure, mean(&g.before), mean(&g.after)))
        .collect();
    let mut text = format!(
        "{verdict}; mean of {} readings before {}, of {} after {}",
        v.before.len(),
        mean(&v.before),
        v.after.len(),
        mean(&v.after)
    );
    if !guards.is_empty() {
        text.push_str(&format!("; guards: {}", guards.join(", ")));
    }
    Some(Line::from(vec![
        Span::styled(" validation: ", theme::dim()),
        Span::raw(text),
    ]))
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
