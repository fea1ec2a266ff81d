//! The proposals pane (detected bottlenecks and reversible fixes). No engine part exists yet, so the pane says so and shows no numbers.

use ratatui::Frame;
use ratatui::layout::Rect;

use crate::tui::app::Pane;

pub const TEXT: &str =
    "Proposals: not built yet — detection and fixes arrive with the optimizer (issue #3).";

/// The one line shown in the grid's compact row.
pub const SHORT: &str = "not built yet (issue #3)";

pub fn render(frame: &mut Frame, area: Rect, focused: bool) {
    super::render_not_built(frame, area, Pane::Proposals, focused, (TEXT, SHORT));
}
