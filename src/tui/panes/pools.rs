//! The shared memory pools pane. No engine part exists yet, so the pane says so and shows no numbers.

use ratatui::Frame;
use ratatui::layout::Rect;

use crate::tui::app::Pane;

pub const TEXT: &str = "Pools: memory pools are not built yet — shared pools with deduplication and compression are planned; nothing is measured here.";

/// The one line shown in the grid's compact row.
pub const SHORT: &str = "not built yet (planned)";

pub fn render(frame: &mut Frame, area: Rect, focused: bool) {
    super::render_not_built(frame, area, Pane::Pools, focused, (TEXT, SHORT));
}
