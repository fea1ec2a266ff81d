//! How an actuator fails. What a change is lives in `model::change`.

#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    /// The target is gone (process exited, tid reused, container removed): nothing applied.
    #[error("target is gone: {0}")]
    Gone(String),
    #[error("permission denied: {0}")]
    Denied(String),
    /// The knob does not exist here (no such file, unsupported kernel feature).
    #[error("not supported here: {0}")]
    Unsupported(String),
    #[error("invalid value {value:?} for {knob}: {why}")]
    InvalidValue {
        knob: String,
        value: String,
        why: String,
    },
    /// Written, but reading back gave something else.
    #[error("verification failed: wrote {wrote:?}, read back {read:?}")]
    NotVerified { wrote: String, read: String },
    /// Refused by our own safety rules (symlink, world-writable path...).
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
}
