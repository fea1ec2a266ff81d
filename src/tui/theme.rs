//! The palette. Every colour the dashboard uses lives here, so a pane never picks its own.

use ratatui::style::{Color, Modifier, Style};

use crate::model::Mode;

/// Below this busy percent a bar is calm.
pub const WARN_AT_PCT: f32 = 60.0;
/// At or above this busy percent a bar is hot.
pub const HOT_AT_PCT: f32 = 85.0;

pub const OK: Color = Color::Green;
pub const WARN: Color = Color::Yellow;
pub const HOT: Color = Color::Red;
pub const FOCUS: Color = Color::Cyan;
pub const MUTED: Color = Color::DarkGray;
pub const ISOLATED: Color = Color::Magenta;

/// Colour of a load figure (CPU busy, memory used...) given in percent.
pub fn load_color(pct: f32) -> Color {
    if pct >= HOT_AT_PCT {
        HOT
    } else if pct >= WARN_AT_PCT {
        WARN
    } else {
        OK
    }
}

pub fn load(pct: f32) -> Style {
    Style::new().fg(load_color(pct))
}

pub fn border() -> Style {
    Style::new().fg(MUTED)
}

pub fn focus_border() -> Style {
    Style::new().fg(FOCUS).add_modifier(Modifier::BOLD)
}

pub fn title() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

pub fn focus_title() -> Style {
    Style::new()
        .fg(Color::Black)
        .bg(FOCUS)
        .add_modifier(Modifier::BOLD)
}

pub fn label() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

pub fn dim() -> Style {
    Style::new().fg(MUTED)
}

pub fn empty_bar() -> Style {
    Style::new().fg(MUTED)
}

pub fn error() -> Style {
    Style::new().fg(HOT).add_modifier(Modifier::BOLD)
}

pub fn warning() -> Style {
    Style::new().fg(WARN)
}

pub fn good() -> Style {
    Style::new().fg(OK)
}

pub fn isolated() -> Style {
    Style::new().fg(ISOLATED).add_modifier(Modifier::BOLD)
}

pub fn selected_row() -> Style {
    Style::new()
        .fg(Color::Black)
        .bg(FOCUS)
        .add_modifier(Modifier::BOLD)
}

pub fn table_header() -> Style {
    Style::new()
        .add_modifier(Modifier::BOLD)
        .add_modifier(Modifier::UNDERLINED)
}

pub fn tab() -> Style {
    Style::new().fg(Color::Gray)
}

pub fn tab_active() -> Style {
    focus_title()
}

pub fn key() -> Style {
    Style::new().fg(FOCUS).add_modifier(Modifier::BOLD)
}

/// Modes go from calm to bold so the operator sees at a glance how much may change.
pub fn mode(mode: Mode) -> Style {
    let color = match mode {
        Mode::Conservative => OK,
        Mode::Balanced => WARN,
        Mode::Aggressive => HOT,
    };
    Style::new().fg(color).add_modifier(Modifier::BOLD)
}

pub fn read_only() -> Style {
    Style::new().fg(WARN).add_modifier(Modifier::BOLD)
}

/// Pressure (PSI, percent of time stalled) is bad far sooner than CPU load.
pub fn pressure(pct: f32) -> Style {
    if pct >= 20.0 {
        Style::new().fg(HOT).add_modifier(Modifier::BOLD)
    } else if pct >= 5.0 {
        Style::new().fg(WARN)
    } else {
        Style::new()
    }
}
