//! The mode: how far the engine may go when it fixes things (keys `1` `2` `3`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How far the engine may go when it fixes things (given teeth by the optimizer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Low-risk changes only.
    #[default]
    Conservative,
    /// Up to medium risk.
    Balanced,
    /// Everything.
    Aggressive,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Conservative => "conservative",
            Mode::Balanced => "balanced",
            Mode::Aggressive => "aggressive",
        }
    }

    /// The key that selects this mode in the TUI.
    pub fn key(self) -> char {
        match self {
            Mode::Conservative => '1',
            Mode::Balanced => '2',
            Mode::Aggressive => '3',
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "1" | "conservative" => Ok(Mode::Conservative),
            "2" | "balanced" => Ok(Mode::Balanced),
            "3" | "aggressive" => Ok(Mode::Aggressive),
            other => Err(format!(
                "unknown mode '{other}': expected conservative, balanced or aggressive (or 1, 2, 3)"
            )),
        }
    }
}
