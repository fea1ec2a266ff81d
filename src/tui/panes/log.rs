//! The log pane: recent tracing events, captured by tui-logger's tracing layer
//! (installed by `tui::init_logging`).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use tui_logger::{TuiLoggerLevelOutput, TuiLoggerWidget};

use crate::tui::theme;

pub fn render(frame: &mut Frame, area: Rect, focused: bool) {
    let block = super::pane_block(Line::from(" Log "), focused);
    let widget = TuiLoggerWidget::default()
        .block(block)
        .output_separator(' ')
        .output_timestamp(Some("%H:%M:%S".to_string()))
        .output_level(Some(TuiLoggerLevelOutput::Abbreviated))
        .output_target(true)
        .output_file(false)
        .output_line(false)
        .style_error(theme::error())
        .style_warn(theme::warning())
        .style_debug(theme::dim())
        .style_trace(theme::dim());
    frame.render_widget(widget, area);
}
