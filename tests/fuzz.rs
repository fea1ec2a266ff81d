//! Fuzzing on stable Rust (proptest) for the parsers that take outside input and are public:
//! the config file, the /proc line parsers. The journal's line parser, the API's request
//! bodies, the proxy's heads, the L3 file header and the trace readers are fuzzed beside
//! their code (`fuzz_*` unit tests). The test command runs each briefly (proptest's 256
//! cases); `scripts/fuzz.sh` runs them long. A find becomes a regression test next to it.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use proptest::prelude::*;
use sutazai_top::config::Config;
use sutazai_top::host::memory::{parse_meminfo, parse_vmstat};
use sutazai_top::host::processes::{parse_stat, parse_status};
use sutazai_top::host::psi::parse_psi;

/// `base` with some bytes changed, inserted or cut, as text.
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..12).prop_map(move |edits| {
        let mut bytes = base.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let at = at % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => drop(bytes.remove(at)),
                _ => {}
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

const EXAMPLE: &str = include_str!("../config.toml.example");

proptest! {
    /// The config: parsed or refused with an error naming where, never a panic.
    #[test]
    fn fuzz_config(text in mutated(EXAMPLE)) {
        if let Err(err) = Config::parse(&text, Path::new("fuzz.toml")) {
            prop_assert!(err.to_string().contains("fuzz.toml"), "{err}");
        }
    }

    #[test]
    fn fuzz_config_sections(text in "(\\[[a-z.]{0,12}\\]\n|[a-z_]{0,16} = (\"[ -~]{0,12}\"|-?[0-9]{0,22}|true|\\[\\]|1e309)\n){0,8}") {
        let _ = Config::parse(&text, Path::new("fuzz.toml"));
    }

    /// The API's routing of any method and target: a route or a refusal, never a panic.
    #[test]
    fn fuzz_api_targets(method in "(GET|PUT|POST|DELETE|[A-Z]{0,7})", path in "/[ -~]{0,80}") {
        let _ = sutazai_top::api::routes::find(&method, &path);
    }

    /// A cache key in a target: decoded or refused, and what is encoded decodes back.
    #[test]
    fn fuzz_cache_keys(text in "[ -~]{0,60}", key in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = sutazai_top::api::cache::percent_decode(&text);
        let encoded = sutazai_top::api::cache::percent_encode(&key);
        prop_assert_eq!(sutazai_top::api::cache::percent_decode(&encoded), Ok(key));
    }

    /// /proc lines as the kernel writes them, damaged: parsed or skipped, never a panic.
    #[test]
    fn fuzz_proc_stat(text in mutated("4242 (my (odd) comm) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 40 0 0 20 0 3 0 123456 10000000 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0")) {
        let _ = parse_stat(&text);
    }

    #[test]
    fn fuzz_proc_status(text in mutated("Name:\tagent\nState:\tS (sleeping)\nThreads:\t3\nCpus_allowed_list:\t0-3\nVmRSS:\t  1024 kB\nvoluntary_ctxt_switches:\t10\n")) {
        let _ = parse_status(&text);
    }

    #[test]
    fn fuzz_psi(text in mutated("some avg10=1.50 avg60=0.80 avg300=0.20 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")) {
        let _ = parse_psi(&text);
    }

    #[test]
    fn fuzz_meminfo_and_vmstat(text in mutated("MemTotal:       16384000 kB\nMemFree:         8000000 kB\nMemAvailable:   12000000 kB\nBuffers:          100000 kB\nCached:          2000000 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\npswpin 5\npswpout 7\npgmajfault 9\n")) {
        let _ = parse_meminfo(&text);
        let _ = parse_vmstat(&text);
    }
}
