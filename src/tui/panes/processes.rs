//! Processes: the busiest processes of the tick (the engine sorts them), with how the
//! scheduler treats each one (nice, policy, allowed CPUs) and the cgroup it runs in. A
//! cgroup that belongs to an agent container shows as the container's name; other paths
//! show their end, with 64-hex container ids shortened to Docker's 12.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::short_bytes;
use super::table::{COLUMN_SPACING, TextCell, highlighted, join_cells, visible_window};
use crate::model::{ContainerStat, ProcessStat, Snapshot};
use crate::tui::app::App;
use crate::tui::theme;

/// The command line is the elastic column: it gets what is left, but never less than this.
const CMDLINE_MIN_WIDTH: u16 = 12;
/// The cgroup column on a wide pane: most systemd and Docker paths whole.
const CGROUP_WIDE: u16 = 32;
/// ... when the command line keeps at least this much beside it.
const CMDLINE_ROOMY: u16 = 40;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, app: &App, focused: bool) {
    let title = if snap.processes.is_empty() {
        " Processes ".to_string()
    } else {
        format!(" Processes · {} busiest ", snap.processes.len())
    };
    let block = super::pane_block(Line::from(title), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if snap.processes.is_empty() {
        let empty = Line::styled("no process data yet (first tick)", theme::dim());
        frame.render_widget(Paragraph::new(empty), inner);
        return;
    }
    let columns = fit_columns(inner.width);
    let mut lines = vec![join_cells(columns.iter().map(|c| {
        let title = c.kind.title().to_string();
        let cell = if c.kind.is_numeric() {
            TextCell::right(title, theme::table_header())
        } else {
            TextCell::left(title, theme::table_header())
        };
        (cell, c.width)
    }))];
    // Build only the rows that can show.
    let rows = &snap.processes;
    let (window, selected) =
        visible_window(rows.len(), app.selected_process_index(rows), inner.height);
    let highlight = if focused {
        theme::selected_row()
    } else {
        theme::label()
    };
    for (index, process) in rows.get(window).unwrap_or_default().iter().enumerate() {
        let agents = &snap.containers.agents;
        let line = join_cells(
            columns
                .iter()
                .map(|c| (c.kind.cell(process, agents), c.width)),
        );
        lines.push(if index == selected {
            highlighted(line, highlight)
        } else {
            line
        });
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    Pid,
    Comm,
    Cpu,
    Rss,
    Threads,
    Nice,
    Policy,
    Cpus,
    Cgroup,
    Cmdline,
}

/// Kept first-to-last while the width lasts; the command line is placed after these.
const BY_PRIORITY: [ColumnKind; 9] = [
    ColumnKind::Pid,
    ColumnKind::Comm,
    ColumnKind::Cpu,
    ColumnKind::Rss,
    ColumnKind::Threads,
    ColumnKind::Cgroup,
    ColumnKind::Policy,
    ColumnKind::Nice,
    ColumnKind::Cpus,
];

const DISPLAY_ORDER: [ColumnKind; 10] = [
    ColumnKind::Pid,
    ColumnKind::Comm,
    ColumnKind::Cpu,
    ColumnKind::Rss,
    ColumnKind::Threads,
    ColumnKind::Nice,
    ColumnKind::Policy,
    ColumnKind::Cpus,
    ColumnKind::Cgroup,
    ColumnKind::Cmdline,
];

struct Column {
    kind: ColumnKind,
    width: u16,
}

/// The columns that fit in `width`: the most important fixed ones, then the command line
/// in the rest (dropped only when not even the PID and name fit beside it).
fn fit_columns(width: u16) -> Vec<Column> {
    let mut kept = Vec::new();
    let mut used: u16 = 0;
    let cmdline_need = COLUMN_SPACING + CMDLINE_MIN_WIDTH;
    for kind in BY_PRIORITY {
        let extra = kind.width() + if kept.is_empty() { 0 } else { COLUMN_SPACING };
        if used + extra + cmdline_need <= width {
            used += extra;
            kept.push(kind);
        }
    }
    let mut cmdline_width = width.saturating_sub(used + COLUMN_SPACING);
    // With room to spare, whole cgroup paths beat a longer tail of the command line.
    let cgroup_extra = CGROUP_WIDE - ColumnKind::Cgroup.width();
    let widen_cgroup =
        kept.contains(&ColumnKind::Cgroup) && cmdline_width >= CMDLINE_ROOMY + cgroup_extra;
    if widen_cgroup {
        cmdline_width -= cgroup_extra;
    }
    if cmdline_width >= CMDLINE_MIN_WIDTH {
        kept.push(ColumnKind::Cmdline);
    }
    DISPLAY_ORDER
        .iter()
        .filter(|kind| kept.contains(kind))
        .map(|&kind| Column {
            kind,
            width: match kind {
                ColumnKind::Cmdline => cmdline_width,
                ColumnKind::Cgroup if widen_cgroup => CGROUP_WIDE,
                _ => kind.width(),
            },
        })
        .collect()
}

impl ColumnKind {
    fn width(self) -> u16 {
        match self {
            // pid_max is at most 4194304: seven digits.
            ColumnKind::Pid => 7,
            // The kernel's comm holds at most 15 characters.
            ColumnKind::Comm => 15,
            ColumnKind::Cpu => 6,
            ColumnKind::Rss => 5,
            ColumnKind::Threads => 4,
            ColumnKind::Nice => 4,
            ColumnKind::Policy => 6,
            ColumnKind::Cpus => 7,
            ColumnKind::Cgroup => 16,
            ColumnKind::Cmdline => CMDLINE_MIN_WIDTH,
        }
    }

    fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnKind::Pid
                | ColumnKind::Cpu
                | ColumnKind::Rss
                | ColumnKind::Threads
                | ColumnKind::Nice
        )
    }

    fn title(self) -> &'static str {
        match self {
            ColumnKind::Pid => "PID",
            ColumnKind::Comm => "COMM",
            ColumnKind::Cpu => "CPU%▼",
            ColumnKind::Rss => "RSS",
            ColumnKind::Threads => "THR",
            ColumnKind::Nice => "NICE",
            ColumnKind::Policy => "POLICY",
            ColumnKind::Cpus => "CPUS",
            ColumnKind::Cgroup => "CGROUP",
            ColumnKind::Cmdline => "CMDLINE",
        }
    }

    fn cell(self, p: &ProcessStat, agents: &[ContainerStat]) -> TextCell {
        let plain = Style::new();
        match self {
            ColumnKind::Pid => TextCell::right(p.id.pid.to_string(), plain),
            ColumnKind::Comm => TextCell::left(p.comm.clone(), plain),
            ColumnKind::Cpu => TextCell::right(
                format!("{:.1}", p.cpu_pct),
                theme::load(p.cpu_pct.min(100.0)),
            ),
            ColumnKind::Rss => TextCell::right(short_bytes(p.rss_kb as f64 * 1024.0), plain),
            ColumnKind::Threads => TextCell::right(p.threads.to_string(), plain),
            ColumnKind::Nice => TextCell::right(p.nice.to_string(), plain),
            ColumnKind::Policy => TextCell::left(short_policy(&p.policy).to_string(), plain),
            ColumnKind::Cpus => TextCell::left(or_dash(&p.allowed_cpus), plain),
            ColumnKind::Cgroup => match container_of(&p.cgroup, agents) {
                Some(container) => TextCell::left(container.name.clone(), theme::key()),
                None => TextCell::tail(or_dash(&short_ids(&p.cgroup)), plain),
            },
            // Kernel threads have no command line: their comm in brackets, as ps shows them.
            ColumnKind::Cmdline if p.cmdline.is_empty() => {
                TextCell::left(format!("[{}]", p.comm), theme::dim())
            }
            ColumnKind::Cmdline => TextCell::left(p.cmdline.clone(), plain),
        }
    }
}

/// "SCHED_OTHER" → "OTHER", "SCHED_DEADLINE" → "DL"; anything else as given.
fn short_policy(policy: &str) -> &str {
    match policy.strip_prefix("SCHED_").unwrap_or(policy) {
        "DEADLINE" => "DL",
        "" => "-",
        short => short,
    }
}

/// Docker's full container ids are 64 hex digits.
const CONTAINER_ID_LEN: usize = 64;
/// ... and it shows the first 12.
const SHORT_ID_LEN: usize = 12;

/// The agent container whose cgroup holds `cgroup` (the same path or one below it). Only
/// the visible rows ask, so a linear scan of the agents costs less than building a map.
fn container_of<'a>(cgroup: &str, agents: &'a [ContainerStat]) -> Option<&'a ContainerStat> {
    if cgroup.is_empty() || cgroup == "/" {
        return None;
    }
    agents.iter().find(|c| {
        c.cgroup.as_deref().is_some_and(|own| {
            cgroup
                .strip_prefix(own)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    })
}

/// Every run of 64 hex digits in `path` cut to its first 12, as `docker ps` shows ids:
/// "/docker/4f3a…(64)" → "/docker/4f3a5b6c7d8e", "docker-<64>.scope" → "docker-<12>.scope".
fn short_ids(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut run = String::new();
    for c in path.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        push_run(&mut out, &run);
        run.clear();
        out.push(c);
    }
    push_run(&mut out, &run);
    out
}

fn push_run(out: &mut String, run: &str) {
    if run.len() == CONTAINER_ID_LEN {
        out.push_str(run.get(..SHORT_ID_LEN).unwrap_or(run));
    } else {
        out.push_str(run);
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_in_cgroup_paths_are_shortened() {
        let id = "4f3a5b6c7d8e".repeat(5) + "9a0b";
        assert_eq!(short_ids(&format!("/docker/{id}")), "/docker/4f3a5b6c7d8e");
        assert_eq!(
            short_ids(&format!("/system.slice/docker-{id}.scope")),
            "/system.slice/docker-4f3a5b6c7d8e.scope"
        );
        assert_eq!(short_ids("/user.slice/abc"), "/user.slice/abc");
    }

    #[test]
    fn a_process_in_an_agent_cgroup_is_found_but_not_a_neighbour() {
        let agent = ContainerStat {
            name: "agent-007".into(),
            cgroup: Some("/docker/abc".into()),
            ..ContainerStat::default()
        };
        let agents = [agent];
        let name = |path| container_of(path, &agents).map(|c| c.name.as_str());
        assert_eq!(name("/docker/abc"), Some("agent-007"));
        assert_eq!(name("/docker/abc/worker"), Some("agent-007"));
        assert_eq!(name("/docker/abcd"), None);
        assert_eq!(name("/"), None);
    }

    #[test]
    fn policies_are_shortened() {
        assert_eq!(short_policy("SCHED_OTHER"), "OTHER");
        assert_eq!(short_policy("SCHED_DEADLINE"), "DL");
        assert_eq!(short_policy("SCHED_RR"), "RR");
        assert_eq!(short_policy(""), "-");
        assert_eq!(short_policy("weird"), "weird");
    }

    #[test]
    fn the_command_line_takes_the_rest_of_the_width() {
        let kinds = |width| -> Vec<(ColumnKind, u16)> {
            fit_columns(width)
                .iter()
                .map(|c| (c.kind, c.width))
                .collect()
        };
        let wide = kinds(198);
        assert_eq!(wide.len(), 10, "every column at 198: {wide:?}");
        let total: u16 = wide.iter().map(|(_, w)| w).sum::<u16>() + 9 * COLUMN_SPACING;
        assert_eq!(total, 198);
        let narrow = kinds(78);
        assert!(
            narrow.iter().any(|(k, _)| *k == ColumnKind::Cmdline),
            "{narrow:?}"
        );
        assert!(
            !narrow.iter().any(|(k, _)| *k == ColumnKind::Cpus),
            "{narrow:?}"
        );
        let tiny = kinds(20);
        assert_eq!(tiny.first().map(|c| c.0), Some(ColumnKind::Pid));
    }
}
