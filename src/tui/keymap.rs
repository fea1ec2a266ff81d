//! Keys are data: one table of bindings. The key handler looks actions up here and the help
//! overlay is generated from the same table, so the two cannot drift apart.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::model::Mode;

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ToggleHelp,
    Quit,
    SetMode(Mode),
    ExportReport,
    NextPane,
    PrevPane,
    SelectUp,
    SelectDown,
    PageUp,
    PageDown,
    SelectFirst,
    SelectLast,
    CycleSort,
    StartFilter,
    /// Close the help overlay, or clear the container filter.
    Dismiss,
    /// Roll back the change batch selected in the Proposals pane.
    RollbackSelected,
    /// Apply the fix selected in the Proposals pane.
    ApplySelected,
    /// Dismiss the fix selected in the Proposals pane.
    DismissSelected,
}

/// One key: a code plus the modifiers that must be held (Ctrl, Alt). Shift is ignored
/// because terminals disagree on whether they report it for `?`, `G` or Shift-Tab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub modifiers: KeyModifiers,
}

impl Key {
    const fn plain(code: KeyCode) -> Key {
        Key {
            code,
            modifiers: KeyModifiers::NONE,
        }
    }

    const fn ch(c: char) -> Key {
        Key::plain(KeyCode::Char(c))
    }

    const fn ctrl(c: char) -> Key {
        Key {
            code: KeyCode::Char(c),
            modifiers: KeyModifiers::CONTROL,
        }
    }

    pub fn matches(&self, event: &KeyEvent) -> bool {
        let significant = KeyModifiers::CONTROL | KeyModifiers::ALT;
        let code_matches = match (self.code, event.code) {
            // Ctrl-letters may arrive upper-case when Caps Lock is on.
            (KeyCode::Char(a), KeyCode::Char(b))
                if self.modifiers.contains(KeyModifiers::CONTROL) =>
            {
                a.eq_ignore_ascii_case(&b)
            }
            (a, b) => a == b,
        };
        code_matches && (event.modifiers & significant) == self.modifiers
    }

    /// How the help overlay names this key.
    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::F(n) => format!("F{n}"),
            KeyCode::Tab => "Tab".to_string(),
            KeyCode::BackTab => "Shift-Tab".to_string(),
            KeyCode::Up => "↑".to_string(),
            KeyCode::Down => "↓".to_string(),
            KeyCode::Left => "←".to_string(),
            KeyCode::Right => "→".to_string(),
            KeyCode::PageUp => "PgUp".to_string(),
            KeyCode::PageDown => "PgDn".to_string(),
            KeyCode::Home => "Home".to_string(),
            KeyCode::End => "End".to_string(),
            KeyCode::Esc => "Esc".to_string(),
            KeyCode::Enter => "Enter".to_string(),
            other => format!("{other:?}"),
        };
        if self.modifiers.contains(KeyModifiers::CONTROL) {
            format!("Ctrl-{}", base.to_uppercase())
        } else {
            base
        }
    }
}

pub struct Binding {
    pub keys: &'static [Key],
    pub action: Action,
    pub description: &'static str,
}

impl Binding {
    /// The keys as the help overlay shows them, e.g. "q, Ctrl-C".
    pub fn keys_label(&self) -> String {
        self.keys
            .iter()
            .map(Key::label)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every binding of the dashboard, in the order the help overlay lists them.
pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[Key::ch('?'), Key::plain(KeyCode::F(1))],
        action: Action::ToggleHelp,
        description: "show or hide this help",
    },
    Binding {
        keys: &[Key::ch('q'), Key::ctrl('c')],
        action: Action::Quit,
        description: "quit",
    },
    Binding {
        keys: &[Key::ch('1')],
        action: Action::SetMode(Mode::Conservative),
        description: "mode conservative: low-risk changes only",
    },
    Binding {
        keys: &[Key::ch('2')],
        action: Action::SetMode(Mode::Balanced),
        description: "mode balanced: up to medium risk",
    },
    Binding {
        keys: &[Key::ch('3')],
        action: Action::SetMode(Mode::Aggressive),
        description: "mode aggressive: everything",
    },
    Binding {
        keys: &[Key::ch('e')],
        action: Action::ExportReport,
        description: "export JSON and HTML reports; header says where",
    },
    Binding {
        keys: &[Key::plain(KeyCode::Tab)],
        action: Action::NextPane,
        description: "focus the next pane",
    },
    Binding {
        keys: &[Key::plain(KeyCode::BackTab)],
        action: Action::PrevPane,
        description: "focus the previous pane",
    },
    Binding {
        keys: &[Key::plain(KeyCode::Up), Key::ch('k')],
        action: Action::SelectUp,
        description: "move the selection up",
    },
    Binding {
        keys: &[Key::plain(KeyCode::Down), Key::ch('j')],
        action: Action::SelectDown,
        description: "move the selection down",
    },
    Binding {
        keys: &[Key::plain(KeyCode::PageUp)],
        action: Action::PageUp,
        description: "move the selection a page up",
    },
    Binding {
        keys: &[Key::plain(KeyCode::PageDown)],
        action: Action::PageDown,
        description: "move the selection a page down",
    },
    Binding {
        keys: &[Key::plain(KeyCode::Home), Key::ch('g')],
        action: Action::SelectFirst,
        description: "select the first row",
    },
    Binding {
        keys: &[Key::plain(KeyCode::End), Key::ch('G')],
        action: Action::SelectLast,
        description: "select the last row",
    },
    Binding {
        keys: &[Key::ch('s')],
        action: Action::CycleSort,
        description: "containers: sort by cpu, memory, io, name",
    },
    Binding {
        keys: &[Key::ch('/')],
        action: Action::StartFilter,
        description: "containers: filter by name or image (Enter keeps, Esc clears)",
    },
    Binding {
        keys: &[Key::ch('a')],
        action: Action::ApplySelected,
        description: "proposals: apply the selected fix (high risk: press twice)",
    },
    Binding {
        keys: &[Key::ch('r')],
        action: Action::RollbackSelected,
        description: "proposals: roll back the selected fix or batch",
    },
    Binding {
        keys: &[Key::ch('d')],
        action: Action::DismissSelected,
        description: "proposals: dismiss the selected fix",
    },
    Binding {
        keys: &[Key::plain(KeyCode::Esc)],
        action: Action::Dismiss,
        description: "close the help, or clear the filter",
    },
];

/// The action bound to this key press, if any.
pub fn action_for(event: &KeyEvent) -> Option<Action> {
    BINDINGS
        .iter()
        .find(|binding| binding.keys.iter().any(|key| key.matches(event)))
        .map(|binding| binding.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn shift_is_ignored_but_ctrl_is_not() {
        assert_eq!(
            action_for(&press(KeyCode::Char('?'), KeyModifiers::SHIFT)),
            Some(Action::ToggleHelp)
        );
        assert_eq!(
            action_for(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(
            action_for(&press(KeyCode::Char('c'), KeyModifiers::NONE)),
            None
        );
        assert_eq!(
            action_for(&press(KeyCode::Char('q'), KeyModifiers::CONTROL)),
            None
        );
    }

    #[test]
    fn every_key_is_bound_once() {
        let keys: Vec<Key> = BINDINGS
            .iter()
            .flat_map(|b| b.keys.iter().copied())
            .collect();
        for (i, key) in keys.iter().enumerate() {
            assert!(
                !keys[i + 1..].contains(key),
                "{} is bound twice",
                key.label()
            );
        }
    }

    #[test]
    fn labels_name_keys_plainly() {
        assert_eq!(Key::ctrl('c').label(), "Ctrl-C");
        assert_eq!(Key::plain(KeyCode::BackTab).label(), "Shift-Tab");
        assert_eq!(BINDINGS[0].keys_label(), "?, F1");
    }
}
