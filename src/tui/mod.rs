//! The terminal dashboard. `draw` is a pure function of (snapshot, view state); `run` owns
//! the terminal, an input thread and the redraw loop, and only talks to the engine through
//! its `EngineHandle`.

pub mod app;
pub mod header;
pub mod help;
pub mod keymap;
pub mod panes;
pub mod theme;

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Once};
use std::thread;
use std::time::Duration;

use crossterm::event::{self, Event};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::{Frame, Terminal};
use tokio::sync::mpsc::error::TrySendError;

use crate::engine::{Command, EngineHandle};
use crate::model::{DockerStatus, Snapshot};
pub use app::{App, Pane, SortKey};

/// From this size on, several panes are shown at once.
pub const GRID_MIN_WIDTH: u16 = 160;
pub const GRID_MIN_HEIGHT: u16 = 45;

/// How long the loop waits for a key before checking for a new snapshot.
const POLL: Duration = Duration::from_millis(50);

/// Draw one frame.
pub fn draw(frame: &mut Frame, snap: &Snapshot, app: &App) {
    let area = frame.area();
    // Fixed rows are cut by hand: the constraint solver would cost more than the panes.
    let mut rest = area;
    let header_area = take_top(&mut rest, 2);
    let tabs_area = take_top(&mut rest, 1);
    let footer_area = take_bottom(&mut rest, 1);
    header::render(frame, header_area, snap);
    frame.render_widget(Paragraph::new(tab_bar(app, tabs_area.width)), tabs_area);
    if area.width >= GRID_MIN_WIDTH && area.height >= GRID_MIN_HEIGHT {
        draw_grid(frame, rest, snap, app);
    } else {
        panes::render(frame, rest, app.focus, snap, app);
    }
    frame.render_widget(Paragraph::new(summary_line(snap)), footer_area);
    if app.help_visible {
        help::render(frame, area);
    }
}

/// Large terminals: cores and memory on top; containers beside processes in the middle;
/// the log beside disks and network below; pools, cache, balancer and proposals in one
/// compact row of one-line summaries. Focusing one of those (Tab) opens it in full in the
/// middle row, in place of containers and processes, until the focus moves on.
fn draw_grid(frame: &mut Frame, area: Rect, snap: &Snapshot, app: &App) {
    let mut rest = area;
    let top = take_top(&mut rest, 16);
    let not_built = take_bottom(&mut rest, 3);
    let bottom = take_bottom(&mut rest, 10);
    let middle = rest;
    let [cores, memory] = split_columns(top, [55, 45]);
    let [containers, processes] = split_columns(middle, [55, 45]);
    let [log, io] = split_columns(bottom, [55, 45]);
    let [pools, cache, balancer, proposals] = split_columns(not_built, [25, 25, 25, 25]);
    let compact = [Pane::Pools, Pane::Cache, Pane::Balancer, Pane::Proposals];
    if compact.contains(&app.focus) {
        panes::render(frame, middle, app.focus, snap, app);
    } else {
        panes::render(frame, containers, Pane::Containers, snap, app);
        panes::render(frame, processes, Pane::Processes, snap, app);
    }
    let placed = [
        (Pane::Cores, cores),
        (Pane::Memory, memory),
        (Pane::Log, log),
        (Pane::Io, io),
        (Pane::Pools, pools),
        (Pane::Cache, cache),
        (Pane::Balancer, balancer),
        (Pane::Proposals, proposals),
    ];
    for (pane, rect) in placed {
        panes::render(frame, rect, pane, snap, app);
    }
}

/// Cut `height` rows off the top of `area` (fewer if it is smaller).
fn take_top(area: &mut Rect, height: u16) -> Rect {
    let height = height.min(area.height);
    let top = Rect { height, ..*area };
    area.y += height;
    area.height -= height;
    top
}

fn take_bottom(area: &mut Rect, height: u16) -> Rect {
    let height = height.min(area.height);
    area.height -= height;
    Rect {
        y: area.y + area.height,
        height,
        ..*area
    }
}

/// Split `area` into columns of the given percentages; the last one takes the rest.
fn split_columns<const N: usize>(area: Rect, percents: [u16; N]) -> [Rect; N] {
    let mut x = area.x;
    let right = area.x + area.width;
    let mut out = [Rect::default(); N];
    for (i, pct) in percents.iter().enumerate() {
        let width = if i + 1 == N {
            right - x
        } else {
            ((u32::from(area.width) * u32::from(*pct) / 100) as u16).min(right - x)
        };
        if let Some(slot) = out.get_mut(i) {
            *slot = Rect { x, width, ..area };
        }
        x += width;
    }
    out
}

/// The tabs, as long as fits in `width`: full names, else short names for all but the
/// focused tab, else without the "Tab" hint.
fn tab_bar(app: &App, width: u16) -> Line<'static> {
    let full = tab_spans(app, false);
    if Line::from(full.clone()).width() <= usize::from(width) {
        return Line::from(full);
    }
    let mut short = tab_spans(app, true);
    if Line::from(short.clone()).width() > usize::from(width) {
        short.pop();
    }
    Line::from(short)
}

/// The tab spans, ending with the "Tab ⇆" hint.
fn tab_spans(app: &App, short: bool) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    for pane in Pane::ALL {
        if pane == app.focus {
            spans.push(Span::styled(
                format!("[{}]", pane.title()),
                theme::tab_active(),
            ));
        } else {
            let name = if short {
                pane.short_title()
            } else {
                pane.title()
            };
            spans.push(Span::styled(format!(" {name} "), theme::tab()));
        }
        spans.push(Span::raw(" "));
    }
    spans.push(Span::styled("Tab ⇆", theme::dim()));
    spans
}

/// The bottom line: the few numbers that matter, whichever pane is focused, and the keys.
fn summary_line(snap: &Snapshot) -> Line<'static> {
    let sep = || Span::styled(" · ", theme::dim());
    let mut spans = Vec::new();
    if snap.cpu.per_cpu.is_empty() {
        spans.push(Span::styled("cpu --", theme::dim()));
    } else {
        let busy = snap.cpu.total.busy();
        spans.push(Span::raw("cpu "));
        spans.push(Span::styled(format!("{busy:.0}%"), theme::load(busy)));
    }
    spans.push(sep());
    if snap.memory.total_kb == 0 {
        spans.push(Span::styled("mem --", theme::dim()));
    } else {
        let used = (snap.memory.used_fraction() * 100.0) as f32;
        spans.push(Span::raw("mem "));
        spans.push(Span::styled(format!("{used:.0}%"), theme::load(used)));
    }
    spans.push(sep());
    spans.push(Span::raw("psi mem "));
    spans.push(psi_span(snap.pressure.memory.map(|p| p.some.avg10)));
    spans.push(Span::raw(" io "));
    spans.push(psi_span(snap.pressure.io.map(|p| p.some.avg10)));
    spans.push(sep());
    spans.push(match snap.containers.status {
        DockerStatus::Connected { .. } => {
            Span::raw(format!("{} agents", snap.containers.agents.len()))
        }
        DockerStatus::Connecting => Span::styled("docker connecting", theme::dim()),
        DockerStatus::Disabled => Span::styled("docker off", theme::dim()),
        DockerStatus::Unreachable { .. } => Span::styled("docker unreachable", theme::error()),
    });
    spans.push(sep());
    spans.extend([
        Span::styled("?", theme::key()),
        Span::raw(" help "),
        Span::styled("q", theme::key()),
        Span::raw(" quit"),
    ]);
    Line::from(spans)
}

fn psi_span(avg10: Option<f32>) -> Span<'static> {
    match avg10 {
        Some(pct) => Span::styled(format!("{pct:.2}"), theme::pressure(pct)),
        None => Span::styled("n/a", theme::dim()),
    }
}

/// Route tracing events to the log pane (tui-logger), filtered by an env-filter string such
/// as "info" or "sutazai_top=debug". Call once, before `run`, in TUI mode only.
pub fn init_logging(filter: &str) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let env_filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|err| format!("invalid log filter {filter:?}: {err}"))?;
    tui_logger::init_logger(tui_logger::LevelFilter::Trace)
        .map_err(|err| format!("cannot start the log pane: {err}"))?;
    tui_logger::set_default_level(tui_logger::LevelFilter::Trace);
    tracing_subscriber::registry()
        .with(env_filter)
        .with(tui_logger::TuiTracingSubscriberLayer)
        .try_init()
        .map_err(|err| format!("cannot install the tracing subscriber: {err}"))
}

/// Run the dashboard until the user quits or the engine stops. Blocking: call it from a
/// plain thread or inside `tokio::task::block_in_place`.
pub fn run(mut handle: EngineHandle) -> io::Result<()> {
    install_panic_hook();
    let _guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    let stop = Arc::new(AtomicBool::new(false));
    let keys = spawn_input_thread(stop.clone());
    let result = event_loop(&mut terminal, &mut handle, &keys);
    stop.store(true, Ordering::Relaxed);
    result
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    handle: &mut EngineHandle,
    keys: &mpsc::Receiver<Event>,
) -> io::Result<()> {
    let mut app = App::default();
    let mut snap = handle.snapshots.borrow_and_update().clone();
    let mut dirty = true;
    loop {
        if dirty {
            terminal.draw(|frame| draw(frame, &snap, &app))?;
            dirty = false;
        }
        match keys.recv_timeout(POLL) {
            Ok(Event::Key(key)) => {
                dirty = true;
                if let Some(command) = app.handle_key(key, &snap) {
                    let quit = command == Command::Quit;
                    send(handle, command);
                    if quit {
                        return Ok(());
                    }
                }
            }
            Ok(Event::Resize(..)) => dirty = true,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // The input thread is gone (terminal closed): nobody can steer us any more.
                tracing::warn!("keyboard input ended; stopping");
                send(handle, Command::Quit);
                return Ok(());
            }
        }
        match handle.snapshots.has_changed() {
            Ok(true) => {
                snap = handle.snapshots.borrow_and_update().clone();
                dirty = true;
            }
            Ok(false) => {}
            // The engine has stopped: nothing more will arrive.
            Err(_) => return Ok(()),
        }
    }
}

/// Send without blocking the UI for long: a full queue is retried briefly, a closed one
/// means the engine is already gone.
fn send(handle: &EngineHandle, command: Command) {
    let mut pending = command;
    for _ in 0..20 {
        match handle.commands.try_send(pending) {
            Ok(()) => return,
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(back)) => {
                pending = back;
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    tracing::warn!(
        ?pending,
        "engine command queue stayed full; command dropped"
    );
}

/// Reads terminal events on its own thread so a slow draw never loses keys.
fn spawn_input_thread(stop: Arc<AtomicBool>) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name("tui-input".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => match event::read() {
                        Ok(ev) => {
                            if tx.send(ev).is_err() {
                                break;
                            }
                        }
                        Err(err) => {
                            tracing::warn!(%err, "cannot read terminal input");
                            break;
                        }
                    },
                    Err(err) => {
                        tracing::warn!(%err, "cannot poll terminal input");
                        break;
                    }
                }
            }
        });
    if let Err(err) = spawned {
        // Without the thread the receiver reports Disconnected and the loop ends cleanly.
        tracing::error!(%err, "cannot start the input thread");
    }
    rx
}

/// Puts the terminal in dashboard mode; dropping it restores the terminal, on every exit path.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        enable_raw_mode()?;
        // From here on the guard exists, so a failure below still restores raw mode.
        let guard = TerminalGuard;
        execute!(io::stdout(), EnterAlternateScreen, crossterm::cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Best effort: each step is tried even if an earlier one failed.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
}

/// A panic restores the terminal first, so the default hook's message is readable.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            default_hook(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_log_filter_is_refused_before_anything_is_installed() {
        let err = init_logging("sutazai_top=loud").unwrap_err();
        assert!(err.contains("invalid log filter"), "{err}");
    }

    #[test]
    fn rows_are_cut_from_top_and_bottom() {
        let mut area = Rect::new(0, 0, 80, 24);
        assert_eq!(take_top(&mut area, 2), Rect::new(0, 0, 80, 2));
        assert_eq!(take_bottom(&mut area, 1), Rect::new(0, 23, 80, 1));
        assert_eq!(area, Rect::new(0, 2, 80, 21));
        let mut tiny = Rect::new(0, 0, 10, 1);
        assert_eq!(take_top(&mut tiny, 2).height, 1);
        assert_eq!(tiny.height, 0);
    }

    #[test]
    fn the_tab_bar_fits_80_columns_and_names_the_focused_pane_in_full() {
        for pane in Pane::ALL {
            let app = App {
                focus: pane,
                ..App::default()
            };
            let line = tab_bar(&app, 80);
            assert!(line.width() <= 80, "{pane:?}: {}", line.width());
            let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
            assert!(text.contains(&format!("[{}]", pane.title())), "{text}");
        }
        let wide: String = tab_bar(&App::default(), 120)
            .spans
            .iter()
            .map(|s| s.content.to_string())
            .collect();
        assert!(
            wide.contains(" Containers ") && wide.contains(" Processes "),
            "{wide}"
        );
    }

    #[test]
    fn columns_cover_the_width_exactly() {
        let [a, b, c] = split_columns(Rect::new(0, 3, 201, 10), [36, 32, 32]);
        assert_eq!((a.x, a.width), (0, 72));
        assert_eq!((b.x, b.width), (72, 64));
        assert_eq!((c.x, c.width), (136, 65));
    }
}
