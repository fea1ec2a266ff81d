//! View state and the pure key handler. `App` never holds host data: everything shown comes
//! from the snapshot, so the mode in the header is the engine's, never a local guess.

use std::cmp::Ordering;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::engine::Command;
use crate::model::{ContainerStat, ProcessId, ProcessStat, Snapshot};
use crate::tui::keymap::{self, Action};

/// Rows moved by PageUp / PageDown.
const PAGE_ROWS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pane {
    #[default]
    Cores,
    Memory,
    Containers,
    Processes,
    Io,
    Pools,
    Cache,
    Balancer,
    Proposals,
    Log,
}

impl Pane {
    /// Tab order.
    pub const ALL: [Pane; 10] = [
        Pane::Cores,
        Pane::Memory,
        Pane::Containers,
        Pane::Processes,
        Pane::Io,
        Pane::Pools,
        Pane::Cache,
        Pane::Balancer,
        Pane::Proposals,
        Pane::Log,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Cores => "Cores",
            Pane::Memory => "Memory",
            Pane::Containers => "Containers",
            Pane::Processes => "Processes",
            Pane::Io => "I/O",
            Pane::Pools => "Pools",
            Pane::Cache => "Cache",
            Pane::Balancer => "Balancer",
            Pane::Proposals => "Proposals",
            Pane::Log => "Log",
        }
    }

    /// For the tab bar on narrow terminals.
    pub fn short_title(self) -> &'static str {
        match self {
            Pane::Cores => "Cores",
            Pane::Memory => "Mem",
            Pane::Containers => "Ctrs",
            Pane::Processes => "Procs",
            Pane::Io => "I/O",
            Pane::Pools => "Pools",
            Pane::Cache => "Cache",
            Pane::Balancer => "Bal",
            Pane::Proposals => "Props",
            Pane::Log => "Log",
        }
    }

    fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    pub fn next(self) -> Pane {
        Pane::ALL[(self.index() + 1) % Pane::ALL.len()]
    }

    pub fn prev(self) -> Pane {
        Pane::ALL[(self.index() + Pane::ALL.len() - 1) % Pane::ALL.len()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Cpu,
    Memory,
    Io,
    Name,
}

impl SortKey {
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Cpu => SortKey::Memory,
            SortKey::Memory => SortKey::Io,
            SortKey::Io => SortKey::Name,
            SortKey::Name => SortKey::Cpu,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Cpu => "cpu",
            SortKey::Memory => "memory",
            SortKey::Io => "io",
            SortKey::Name => "name",
        }
    }
}

/// The dashboard's view state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct App {
    pub focus: Pane,
    /// The selected container, by id, so the selection follows it when the order changes.
    pub selected_container: Option<String>,
    pub sort: SortKey,
    pub filter: String,
    /// True while the filter is being typed: letters go to the filter, not to actions.
    pub filter_typing: bool,
    pub help_visible: bool,
    /// The selected process, by identity, so the selection follows it as the order changes.
    pub selected_process: Option<ProcessId>,
    /// The selected row of the Proposals pane, by what it shows (a proposal id or a batch
    /// id), so a new proposal arriving above never moves `a` or `r` onto another row.
    pub selected_proposal: Option<RowKey>,
    /// A high-risk proposal waiting for its second `a`.
    pub confirm_apply: Option<u64>,
}

/// A row of the Proposals pane: a proposal (index into `snap.proposals`) or an active batch
/// that no shown proposal accounts for (index into `snap.changes.active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalRow {
    Proposal(usize),
    Batch(usize),
}

/// What a Proposals row shows, stable across ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKey {
    Proposal(u64),
    Batch(u64),
}

fn row_key(snap: &Snapshot, row: ProposalRow) -> Option<RowKey> {
    match row {
        ProposalRow::Proposal(i) => snap.proposals.get(i).map(|p| RowKey::Proposal(p.id)),
        ProposalRow::Batch(i) => snap.changes.active.get(i).map(|b| RowKey::Batch(b.batch)),
    }
}

/// Most closed (stale, failed, rolled back, dismissed) proposals listed.
const CLOSED_SHOWN: usize = 10;

/// The Proposals pane's rows, in order: open proposals (newest first), applying and applied
/// ones, active batches no proposal accounts for (changes made with `sutazai-top set`, or
/// left by an earlier run), then the latest closed proposals.
pub fn proposal_rows(snap: &Snapshot) -> Vec<ProposalRow> {
    use crate::model::ProposalStatus as S;
    let newest_first = |pred: &dyn Fn(&S) -> bool| -> Vec<ProposalRow> {
        let mut rows: Vec<ProposalRow> = snap
            .proposals
            .iter()
            .enumerate()
            .filter(|(_, p)| pred(&p.status))
            .map(|(i, _)| ProposalRow::Proposal(i))
            .collect();
        rows.reverse();
        rows
    };
    let mut rows = newest_first(&|s| matches!(s, S::Proposed));
    rows.extend(newest_first(&|s| {
        matches!(s, S::Applying | S::Applied { .. })
    }));
    let covered: Vec<u64> = snap
        .proposals
        .iter()
        .filter_map(|p| match p.status {
            S::Applied { batch } => Some(batch),
            _ => None,
        })
        .collect();
    rows.extend(
        snap.changes
            .active
            .iter()
            .enumerate()
            .filter(|(_, b)| !covered.contains(&b.batch))
            .map(|(i, _)| ProposalRow::Batch(i)),
    );
    let closed = newest_first(&|s| {
        matches!(
            s,
            S::Stale { .. } | S::Failed { .. } | S::RolledBack { .. } | S::Dismissed
        )
    });
    rows.extend(closed.into_iter().take(CLOSED_SHOWN));
    rows
}

impl App {
    /// Handle one key event; returns the command to send to the engine, if any.
    /// Only presses count: release and repeat events (kitty protocol, Windows) are ignored.
    pub fn handle_key(&mut self, key: KeyEvent, snap: &Snapshot) -> Option<Command> {
        if key.kind != KeyEventKind::Press {
            return None;
        }
        if self.filter_typing && self.type_into_filter(&key) {
            return None;
        }
        let action = keymap::action_for(&key)?;
        self.apply(action, snap)
    }

    /// While typing, printable keys edit the filter. Returns false for keys that keep their
    /// normal meaning (arrows, Tab, Ctrl-C).
    fn type_into_filter(&mut self, key: &KeyEvent) -> bool {
        let ctrl_or_alt = key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
        match key.code {
            KeyCode::Char(c) if !ctrl_or_alt => self.filter.push(c),
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Enter => self.filter_typing = false,
            KeyCode::Esc => {
                self.filter.clear();
                self.filter_typing = false;
            }
            _ => return false,
        }
        true
    }

    fn apply(&mut self, action: Action, snap: &Snapshot) -> Option<Command> {
        match action {
            Action::Quit => return Some(Command::Quit),
            Action::SetMode(mode) => return Some(Command::SetMode(mode)),
            Action::ExportReport => return Some(Command::ExportReport),
            Action::ToggleHelp => self.help_visible = !self.help_visible,
            Action::Dismiss => {
                if self.help_visible {
                    self.help_visible = false;
                } else {
                    self.filter.clear();
                }
            }
            Action::NextPane => self.focus = self.focus.next(),
            Action::PrevPane => self.focus = self.focus.prev(),
            Action::CycleSort => self.sort = self.sort.next(),
            Action::StartFilter => {
                self.focus = Pane::Containers;
                self.filter_typing = true;
            }
            Action::SelectUp => self.move_selection(snap, -1),
            Action::SelectDown => self.move_selection(snap, 1),
            Action::PageUp => self.move_selection(snap, -(PAGE_ROWS as isize)),
            Action::PageDown => self.move_selection(snap, PAGE_ROWS as isize),
            Action::SelectFirst => self.move_selection(snap, isize::MIN),
            Action::SelectLast => self.move_selection(snap, isize::MAX),
            Action::RollbackSelected | Action::ApplySelected | Action::DismissSelected => {
                if self.focus != Pane::Proposals {
                    return None;
                }
                return self.proposal_action(action, snap);
            }
        }
        None
    }

    /// Only the containers and processes panes have rows to select; others ignore movement.
    fn move_selection(&mut self, snap: &Snapshot, delta: isize) {
        match self.focus {
            Pane::Containers => {
                let rows = visible_containers(snap, self);
                let current = self.selected_index(&rows);
                if let Some(target) = moved(current, delta, rows.len()) {
                    self.selected_container = rows.get(target).map(|c| c.id.clone());
                }
            }
            Pane::Processes => {
                let current = self.selected_process_index(&snap.processes);
                if let Some(target) = moved(current, delta, snap.processes.len()) {
                    self.selected_process = snap.processes.get(target).map(|p| p.id);
                }
            }
            Pane::Proposals => {
                let rows = proposal_rows(snap);
                let current = self.selected_proposal_index(snap, &rows);
                if let Some(target) = moved(current, delta, rows.len()) {
                    self.selected_proposal = rows.get(target).and_then(|r| row_key(snap, *r));
                    self.confirm_apply = None;
                }
            }
            _ => {}
        }
    }

    /// Index of the selected process among `rows`; the first row when none is selected or
    /// the selected one has left the list.
    pub fn selected_process_index(&self, rows: &[ProcessStat]) -> usize {
        self.selected_process
            .and_then(|id| rows.iter().position(|p| p.id == id))
            .unwrap_or(0)
    }

    /// Index of the selected row among `rows`; the first when none is selected or the
    /// selected one left the list.
    pub fn selected_proposal_index(&self, snap: &Snapshot, rows: &[ProposalRow]) -> usize {
        self.selected_proposal
            .and_then(|key| rows.iter().position(|r| row_key(snap, *r) == Some(key)))
            .unwrap_or(0)
    }

    /// `a`, `d` or `r` on the selected row of the Proposals pane.
    fn proposal_action(&mut self, action: Action, snap: &Snapshot) -> Option<Command> {
        use crate::model::ProposalStatus as S;
        use crate::model::Risk;
        let rows = proposal_rows(snap);
        let row = *rows.get(self.selected_proposal_index(snap, &rows))?;
        match (action, row) {
            (Action::RollbackSelected, ProposalRow::Batch(i)) => snap
                .changes
                .active
                .get(i)
                .map(|b| Command::Rollback(b.batch)),
            (Action::RollbackSelected, ProposalRow::Proposal(i)) => {
                match snap.proposals.get(i)?.status {
                    S::Applied { batch } => Some(Command::Rollback(batch)),
                    _ => None,
                }
            }
            (Action::DismissSelected, ProposalRow::Proposal(i)) => {
                let p = snap.proposals.get(i)?;
                p.status.is_open().then_some(Command::Dismiss(p.id))
            }
            (Action::ApplySelected, ProposalRow::Proposal(i)) => {
                let p = snap.proposals.get(i)?;
                if !p.status.is_open() {
                    return None;
                }
                if p.fix.risk == Risk::High && self.confirm_apply != Some(p.id) {
                    self.confirm_apply = Some(p.id);
                    return None;
                }
                self.confirm_apply = None;
                Some(Command::Apply(p.id))
            }
            _ => None,
        }
    }

    /// Index of the selected container among `rows`; the first row when none is selected
    /// or the selected one is gone.
    pub fn selected_index(&self, rows: &[&ContainerStat]) -> usize {
        self.selected_container
            .as_ref()
            .and_then(|id| rows.iter().position(|c| &c.id == id))
            .unwrap_or(0)
    }
}

/// The row `delta` away from `current`, kept inside `len` rows; `None` for an empty list.
fn moved(current: usize, delta: isize, len: usize) -> Option<usize> {
    let last = len.checked_sub(1)?;
    Some(
        (current as isize)
            .saturating_add(delta)
            .clamp(0, last as isize) as usize,
    )
}

/// The agent containers the table shows: filtered, then sorted by the chosen key
/// (largest first, names A-Z), ties broken by name so the order is stable.
pub fn visible_containers<'a>(snap: &'a Snapshot, app: &App) -> Vec<&'a ContainerStat> {
    let needle = app.filter.to_lowercase();
    let mut rows: Vec<&ContainerStat> = snap
        .containers
        .agents
        .iter()
        .filter(|c| {
            needle.is_empty()
                || c.name.to_lowercase().contains(&needle)
                || c.image.to_lowercase().contains(&needle)
        })
        .collect();
    rows.sort_by(|a, b| compare(a, b, app.sort).then_with(|| a.name.cmp(&b.name)));
    rows
}

fn compare(a: &ContainerStat, b: &ContainerStat, key: SortKey) -> Ordering {
    match key {
        SortKey::Cpu => b.cpu_pct.total_cmp(&a.cpu_pct),
        SortKey::Memory => b.mem_bytes.cmp(&a.mem_bytes),
        SortKey::Io => io_rate(b).total_cmp(&io_rate(a)),
        SortKey::Name => Ordering::Equal,
    }
}

fn io_rate(c: &ContainerStat) -> f64 {
    c.io_read_bytes_per_sec + c.io_write_bytes_per_sec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;

    fn press(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    fn snap_with(names: &[(&str, f32, u64)]) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.containers.agents = names
            .iter()
            .map(|(name, cpu, mem)| ContainerStat {
                id: format!("id-{name}"),
                name: name.to_string(),
                cpu_pct: *cpu,
                mem_bytes: *mem,
                ..ContainerStat::default()
            })
            .collect();
        snap
    }

    #[test]
    fn selection_follows_the_container_not_the_row() {
        let snap = snap_with(&[("a", 10.0, 1), ("b", 50.0, 3), ("c", 30.0, 2)]);
        let mut app = App {
            focus: Pane::Containers,
            ..App::default()
        };
        app.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE), &snap);
        assert_eq!(app.selected_container.as_deref(), Some("id-c"));
        app.sort = SortKey::Name;
        let rows = visible_containers(&snap, &app);
        assert_eq!(app.selected_index(&rows), 2);
        app.handle_key(KeyEvent::new(KeyCode::End, KeyModifiers::NONE), &snap);
        assert_eq!(app.selected_container.as_deref(), Some("id-c"));
        app.handle_key(press('g'), &snap);
        assert_eq!(app.selected_container.as_deref(), Some("id-a"));
    }

    #[test]
    fn sort_orders_largest_first_and_names_alphabetically() {
        let snap = snap_with(&[("a", 10.0, 1), ("b", 50.0, 3), ("c", 30.0, 2)]);
        let mut app = App::default();
        let names = |app: &App| -> Vec<String> {
            visible_containers(&snap, app)
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names(&app), ["b", "c", "a"]);
        app.sort = SortKey::Name;
        assert_eq!(names(&app), ["a", "b", "c"]);
    }

    #[test]
    fn escape_clears_the_filter_after_it_was_kept() {
        let snap = Snapshot::default();
        let mut app = App::default();
        for c in ['/', 'x', 'y'] {
            app.handle_key(press(c), &snap);
        }
        app.handle_key(KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE), &snap);
        app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), &snap);
        assert_eq!(app.filter, "x");
        assert!(!app.filter_typing);
        assert_eq!(
            app.handle_key(press('3'), &snap),
            Some(Command::SetMode(Mode::Aggressive))
        );
        app.handle_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE), &snap);
        assert_eq!(app.filter, "");
    }

    #[test]
    fn ctrl_c_quits_even_while_typing() {
        let mut app = App {
            filter_typing: true,
            ..App::default()
        };
        let key = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(
            app.handle_key(key, &Snapshot::default()),
            Some(Command::Quit)
        );
    }
}
