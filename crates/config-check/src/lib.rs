//! Checks shared by every component's config section, used from `#[serde(deserialize_with)]`
//! so a bad value is refused while the TOML is parsed: toml's error then shows the key's line
//! and column, and the message names the key and the allowed range.
//!
//! A section keeps one line per checked key, naming the key and its range:
//!
//! ```
//! # use serde::Deserializer;
//! fn hold_ticks<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
//!     sutazai_config_check::in_range(d, "hold_ticks", 1..)
//! }
//! ```

use std::fmt::Display;
use std::ops::{Bound, RangeBounds};

use serde::{Deserialize, Deserializer};

/// The number at this key, refused with "`key` = v must be ..." when it is outside `range`.
pub fn in_range<'de, D, T, R>(d: D, key: &str, range: R) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + Display,
    R: RangeBounds<T>,
{
    let value = T::deserialize(d)?;
    match range_problem(key, &value, &range) {
        None => Ok(value),
        Some(message) => Err(serde::de::Error::custom(message)),
    }
}

/// Why `value` is not in `range`, naming the key, or `None` when it is. NaN is never in a
/// range, since it fails every comparison.
pub fn range_problem<T, R>(key: &str, value: &T, range: &R) -> Option<String>
where
    T: PartialOrd + Display,
    R: RangeBounds<T>,
{
    if range.contains(value) {
        return None;
    }
    let low = match range.start_bound() {
        Bound::Included(low) => Some(format!("at least {low}")),
        Bound::Excluded(low) => Some(format!("above {low}")),
        Bound::Unbounded => None,
    };
    let high = match range.end_bound() {
        Bound::Included(high) => Some(format!("at most {high}")),
        Bound::Excluded(high) => Some(format!("below {high}")),
        Bound::Unbounded => None,
    };
    let allowed = match (low, high) {
        (Some(low), Some(high)) => format!("{low} and {high}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => "a number".to_string(),
    };
    Some(format!("{key} = {value} must be {allowed}"))
}

/// A socket address such as "127.0.0.1:8080" (parsed while the config is read, kept typed).
pub fn socket_addr<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
) -> Result<std::net::SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{key} = {text:?}: expected an address and port such as \"127.0.0.1:8080\""
        ))
    })
}

/// A path that must be given: an empty one is refused naming the key (it would otherwise
/// fail later, far from the file, with a muddled message).
pub fn non_empty_path<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
) -> Result<std::path::PathBuf, D::Error> {
    let path = std::path::PathBuf::deserialize(d)?;
    if path.as_os_str().is_empty() {
        return Err(serde::de::Error::custom(format!(
            "{key} is empty: give a path"
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_range_says_what_is_allowed() {
        assert_eq!(
            range_problem("a", &5u32, &(1..=4)).as_deref(),
            Some("a = 5 must be at least 1 and at most 4")
        );
        assert_eq!(
            range_problem("b", &0u64, &(1..)).as_deref(),
            Some("b = 0 must be at least 1")
        );
        assert_eq!(
            range_problem("c", &17u32, &(..=16)).as_deref(),
            Some("c = 17 must be at most 16")
        );
        assert_eq!(
            range_problem("d", &0.0f64, &(Bound::Excluded(0.0), Bound::Included(1.0))).as_deref(),
            Some("d = 0 must be above 0 and at most 1")
        );
        assert_eq!(
            range_problem("e", &f64::NAN, &(0.0..=1.0)).as_deref(),
            Some("e = NaN must be at least 0 and at most 1")
        );
        assert_eq!(range_problem("f", &3usize, &(1..=4)), None);
        assert_eq!(range_problem("g", &4usize, &(1..=4)), None);
    }
}
