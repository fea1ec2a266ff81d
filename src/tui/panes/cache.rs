//! The cache pane. No engine part exists yet, so the pane says so and shows no numbers.

use ratatui::Frame;
use ratatui::layout::Rect;

use crate::tui::app::Pane;

pub const TEXT: &str = "Cache: not built yet — the multi-level agent cache arrives with issue #5.";

/// The one line shown in the grid's compact row.
pub const SHORT: &str = "not built yet (issue #5)";

pub fn render(frame: &mut Frame, area: Rect, focused: bool) {
    super::render_not_built(frame, area, Pane::Cache, focused, (TEXT, SHORT));
}
