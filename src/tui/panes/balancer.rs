//! The load balancer pane. No engine part exists yet, so the pane says so and shows no numbers.

use ratatui::Frame;
use ratatui::layout::Rect;

use crate::tui::app::Pane;

pub const TEXT: &str =
    "Balancer: not built yet — the load balancer in front of agent replicas arrives with issue #6.";

/// The one line shown in the grid's compact row.
pub const SHORT: &str = "not built yet (issue #6)";

pub fn render(frame: &mut Frame, area: Rect, focused: bool) {
    super::render_not_built(frame, area, Pane::Balancer, focused, (TEXT, SHORT));
}
