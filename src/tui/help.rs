//! The help overlay, generated from the keymap so it lists exactly the keys that work.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::tui::keymap::BINDINGS;
use crate::tui::theme;

/// Width of the key column.
const KEY_COLUMN: usize = 14;

/// The overlay's lines, one per binding.
pub fn lines() -> Vec<Line<'static>> {
    BINDINGS
        .iter()
        .map(|binding| {
            Line::from(vec![
                Span::styled(
                    format!(" {:<KEY_COLUMN$}", binding.keys_label()),
                    theme::key(),
                ),
                Span::raw(binding.description),
            ])
        })
        .collect()
}

pub fn render(frame: &mut Frame, area: Rect) {
    let lines = lines();
    let widest = lines.iter().map(Line::width).max().unwrap_or(0) as u16;
    let popup = centered(area, widest + 3, lines.len() as u16 + 2);
    let block = Block::bordered()
        .border_style(theme::focus_border())
        .title(Line::styled(" Help · keys ", theme::focus_title()))
        .title_bottom(Line::styled(" Esc, ? or F1 closes ", theme::dim()));
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}
