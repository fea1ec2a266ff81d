//! What the health checks, outlier detection and circuit breaker are configured with.

use std::time::Duration;

/// Active health checking of one pool's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Path requested with GET; a 2xx or 3xx answer is healthy.
    pub path: String,
    /// Time between two checks of a backend.
    pub interval: Duration,
    /// Connect + answer deadline of one check.
    pub timeout: Duration,
    /// Consecutive good checks that bring a backend up (0 counts as 1).
    pub rise: u32,
    /// Consecutive failed checks that take it down (0 counts as 1).
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/health".to_string(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// Passive outlier detection, as Envoy's `consecutive_5xx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive failed requests (5xx, connect failure, timeout) that eject; 0 disables.
    pub consecutive_failures: u32,
    /// The n-th ejection lasts `base_ejection × n`, at most `max_ejection`: a backend that
    /// keeps failing stays out longer each time instead of flapping every 30 s.
    pub base_ejection: Duration,
    /// Cap on one ejection's length.
    pub max_ejection: Duration,
    /// At most this percentage of the pool ejected at once (at least one backend may be):
    /// if many fail together the cause is likely shared, and ejecting them all would only
    /// overload the rest.
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 10,
        }
    }
}

/// The per-backend circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive gateway errors (connect failure, timeout, broken connection; not 5xx
    /// answers) that open the circuit; 0 disables the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one probe request is let through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::test_support::*;

    #[test]
    fn defaults_match_the_issue() {
        let h = HealthConfig::default();
        assert_eq!(
            (h.path.as_str(), h.interval, h.timeout, h.rise, h.fall),
            ("/health", 2 * SEC, SEC, 2, 3)
        );
        let o = OutlierConfig::default();
        assert_eq!(
            (
                o.consecutive_failures,
                o.base_ejection,
                o.max_ejection,
                o.max_ejected_percent
            ),
            (5, 30 * SEC, 300 * SEC, 10)
        );
    }
}
