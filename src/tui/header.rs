//! The two header lines: who and what this host is, then the engine's mode, tick, Docker and
//! the latest notice. The mode shown is `snap.mode`, the engine's truth.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::model::{CgroupLayout, DockerStatus, Snapshot};
use crate::tui::panes::fmt_uptime;
use crate::tui::theme;

const SEP: &str = " │ ";
const SEP_WIDTH: usize = 3;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot) {
    let width = area.width as usize;
    let mut host = host_line(snap, true);
    if host.width() > width {
        host = host_line(snap, false);
    }
    let lines = vec![host, engine_line(snap, width)];
    frame.render_widget(Paragraph::new(lines), area);
}

fn or_unknown(text: &str) -> String {
    if text.is_empty() {
        "?".to_string()
    } else {
        text.to_string()
    }
}

/// `roomy` adds the program name and the word "kernel"; dropped when the line is too wide.
fn host_line(snap: &Snapshot, roomy: bool) -> Line<'static> {
    let host = &snap.host;
    let privilege = if host.is_root {
        Span::styled("root", theme::good())
    } else {
        Span::styled("READ-ONLY (not root)", theme::read_only())
    };
    let layout = match host.cgroup_layout {
        CgroupLayout::V1 => "v1",
        CgroupLayout::V2 => "v2",
        CgroupLayout::Hybrid => "hybrid",
        CgroupLayout::None => "none",
    };
    let mut spans = Vec::new();
    if roomy {
        spans.push(Span::styled("sutazai-top ", theme::key()));
    }
    spans.extend([
        Span::styled(or_unknown(&host.hostname), theme::label()),
        Span::raw(SEP),
        Span::raw(if roomy {
            format!("kernel {}", or_unknown(&host.kernel))
        } else {
            or_unknown(&host.kernel)
        }),
        Span::raw(SEP),
        Span::raw(if host.uptime_secs == 0 {
            "up ?".to_string()
        } else {
            format!("up {}", fmt_uptime(host.uptime_secs))
        }),
        Span::raw(SEP),
        privilege,
        Span::raw(SEP),
        Span::raw(format!("cgroup {layout}")),
    ]);
    Line::from(spans)
}

/// Mode first; then the notice, which matters most right after a command; then tick and
/// Docker, which give way on a narrow terminal (the summary line repeats the agent count).
fn engine_line(snap: &Snapshot, width: usize) -> Line<'static> {
    let tick = if snap.seq == 0 {
        Span::styled("waiting for first tick", theme::dim())
    } else {
        Span::raw(format!(
            "tick {:.1} s #{}",
            snap.interval_ms as f64 / 1000.0,
            snap.seq
        ))
    };
    let mut mode_spans = vec![
        Span::raw("mode "),
        Span::styled(snap.mode.label().to_uppercase(), theme::mode(snap.mode)),
    ];
    if snap.auto_fix {
        mode_spans.push(Span::styled(" +AUTO-FIX", theme::warning()));
    }
    let mode = Line::from(mode_spans);
    let notice = snap.notice.as_ref().map(|notice| {
        let style = if notice.is_error {
            theme::error()
        } else {
            theme::good()
        };
        Span::styled(notice.text.clone(), style)
    });
    let mut optional = vec![tick, docker_span(snap)];
    let fixed_width = mode.width() + notice.as_ref().map_or(0, |n| n.width() + SEP_WIDTH);
    while !optional.is_empty()
        && fixed_width
            + optional
                .iter()
                .map(|s| s.width() + SEP_WIDTH)
                .sum::<usize>()
            > width
        && notice.is_some()
    {
        optional.pop();
    }
    let mut spans = mode.spans;
    for span in optional.into_iter().chain(notice) {
        spans.push(Span::raw(SEP));
        spans.push(span);
    }
    Line::from(spans)
}

fn docker_span(snap: &Snapshot) -> Span<'static> {
    let containers = &snap.containers;
    match containers.status {
        DockerStatus::Connected { .. } => Span::raw(format!(
            "{} agents / {} containers",
            containers.agents.len(),
            containers.total_seen
        )),
        DockerStatus::Connecting => Span::styled("docker connecting…", theme::dim()),
        DockerStatus::Disabled => Span::styled("docker disabled", theme::dim()),
        DockerStatus::Unreachable { .. } => Span::styled("docker unreachable", theme::error()),
    }
}
