//! The cache's `[cache]` config section: three levels, sizes in bytes, a policy per level.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::policy::PolicyName;

/// The agents' cache: three levels, sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Run the cache at all.
    pub enabled: bool,
    /// L1, values in memory as they are; 0 turns the level off.
    pub l1_bytes: u64,
    /// L2, values in memory compressed with lz4 (counted in compressed bytes); 0: off.
    pub l2_bytes: u64,
    /// L3, one file per value on disk; 0: off.
    pub l3_bytes: u64,
    /// Replacement policy per level (a bad name is refused while parsing, listing the names).
    pub l1_policy: PolicyName,
    pub l2_policy: PolicyName,
    pub l3_policy: PolicyName,
    /// How many successors the prefetcher fetches ahead (0 turns prefetch off, at most 16).
    #[serde(deserialize_with = "prefetch_depth")]
    pub prefetch_depth: u32,
    /// L3's directory; empty means the engine's default (`<optimizer.state_dir>/cache`).
    pub dir: PathBuf,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            l1_bytes: 256 << 20,
            l2_bytes: 1 << 30,
            l3_bytes: 4 << 30,
            l1_policy: PolicyName::Adaptive,
            l2_policy: PolicyName::Adaptive,
            l3_policy: PolicyName::Adaptive,
            prefetch_depth: 3,
            dir: PathBuf::new(),
        }
    }
}

fn prefetch_depth<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    sutazai_config_check::in_range(d, "prefetch_depth", ..=16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Root {
        cache: CacheConfig,
    }

    fn parse(text: &str) -> Result<CacheConfig, String> {
        toml::from_str::<Root>(text)
            .map(|r| r.cache)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_bad_policy_is_refused_with_its_line_and_the_names() {
        let err = parse("[cache]\nl1_bytes = 1\nl2_policy = \"fifo\"\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(
            err.contains("fifo") && err.contains("w-tinylfu") && err.contains("s3-fifo"),
            "{err}"
        );
    }

    #[test]
    fn prefetch_depth_past_16_is_refused() {
        let err = parse("[cache]\nprefetch_depth = 17\n").unwrap_err();
        assert!(
            err.contains("prefetch_depth = 17 must be at most 16"),
            "{err}"
        );
        assert_eq!(
            parse("[cache]\nl3_policy = \"arc\"\n").map(|c| c.l3_policy),
            Ok(PolicyName::Arc)
        );
    }
}
