//! Hand-laid tables shared by the container and process panes. Fixed widths need no
//! constraint solver, which would cost more than the rest of the frame together.

use std::ops::Range;

use ratatui::style::Style;
use ratatui::text::{Line, Span};

/// Blank cells between two columns.
pub const COLUMN_SPACING: u16 = 1;

/// One table cell before layout.
pub struct TextCell {
    pub text: String,
    pub style: Style,
    pub right: bool,
    /// Cut from the left ("…tail") rather than the right: for paths, whose end says most.
    pub keep_tail: bool,
}

impl TextCell {
    pub fn left(text: String, style: Style) -> TextCell {
        TextCell {
            text,
            style,
            right: false,
            keep_tail: false,
        }
    }

    pub fn right(text: String, style: Style) -> TextCell {
        TextCell {
            right: true,
            ..TextCell::left(text, style)
        }
    }

    /// Left-aligned, and cut from the left when too long.
    pub fn tail(text: String, style: Style) -> TextCell {
        TextCell {
            keep_tail: true,
            ..TextCell::left(text, style)
        }
    }

    /// Pad to `width`, or cut with "…" when too long (at the end, or for a tail cell at the
    /// start, from a path separator if the kept part holds one).
    pub fn fit(self, width: usize) -> Span<'static> {
        let len = self.text.chars().count();
        let text = if len > width {
            let keep = width.saturating_sub(1);
            if self.keep_tail {
                let kept: String = self.text.chars().skip(len - keep).collect();
                // Start at a path separator when there is one: "…/a1b2" over "…er/a1b2".
                let from = kept.find('/').unwrap_or(0);
                format!("…{:<rest$}", kept.get(from..).unwrap_or(&kept), rest = keep)
            } else {
                let kept: String = self.text.chars().take(keep).collect();
                format!("{kept}…")
            }
        } else if self.right {
            format!("{:>width$}", self.text)
        } else {
            format!("{:<width$}", self.text)
        };
        Span::styled(text, self.style)
    }
}

/// One line of cells, each fitted to its width, separated by `COLUMN_SPACING`.
pub fn join_cells(cells: impl Iterator<Item = (TextCell, u16)>) -> Line<'static> {
    let mut spans = Vec::new();
    for (cell, width) in cells {
        if !spans.is_empty() {
            spans.push(Span::raw(" ".repeat(COLUMN_SPACING as usize)));
        }
        spans.push(cell.fit(width as usize));
    }
    Line::from(spans)
}

/// The selected row drops its per-cell colours so the highlight reads as one bar.
pub fn highlighted(line: Line<'static>, style: Style) -> Line<'static> {
    let spans = line
        .spans
        .into_iter()
        .map(|span| Span::styled(span.content, style))
        .collect::<Vec<_>>();
    Line::from(spans).style(style)
}

/// The rows that fit under the header with the selection in view (at the bottom once it
/// passes the first screen, as a scrolling list does), and the selection's index in them.
pub fn visible_window(len: usize, selected: usize, height: u16) -> (Range<usize>, usize) {
    let fits = usize::from(height.saturating_sub(1)).max(1);
    let selected = selected.min(len.saturating_sub(1));
    let start = (selected + 1).saturating_sub(fits);
    let end = (start + fits).min(len);
    (start..end, selected - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_the_selection_in_view() {
        assert_eq!(visible_window(131, 0, 18), (0..17, 0));
        assert_eq!(visible_window(131, 16, 18), (0..17, 16));
        assert_eq!(visible_window(131, 17, 18), (1..18, 16));
        assert_eq!(visible_window(131, 130, 18), (114..131, 16));
        assert_eq!(visible_window(3, 1, 18), (0..3, 1));
        assert_eq!(visible_window(0, 0, 18), (0..0, 0));
    }

    #[test]
    fn long_text_is_cut_at_the_chosen_end() {
        let cut = |cell: TextCell| cell.fit(6).content.to_string();
        assert_eq!(
            cut(TextCell::left("abcdefgh".into(), Style::new())),
            "abcde…"
        );
        assert_eq!(
            cut(TextCell::tail("/a/b/cdefgh".into(), Style::new())),
            "…defgh"
        );
        assert_eq!(cut(TextCell::right("42".into(), Style::new())), "    42");
        assert_eq!(cut(TextCell::tail("/a".into(), Style::new())), "/a    ");
        assert_eq!(
            cut(TextCell::tail("/dock/a1b".into(), Style::new())),
            "…/a1b "
        );
    }
}
