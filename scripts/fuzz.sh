#!/usr/bin/env bash
# The long fuzzing run: every `fuzz_*` property test of the workspace (the config, the /proc
# line parsers, the API's targets, request bodies and cache keys, the journal's lines, the
# proxy's request and response heads, the L3 file header, the trace lines) with many more
# cases than the test command's 256. A find prints the smallest input proptest could shrink
# it to: add it as a regression test beside the target, then fix the parser.
#   scripts/fuzz.sh [CASES]   (default 100000 per target)
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES=${1:-100000}
echo "fuzzing every fuzz_* target with $PROPTEST_CASES cases each (release build)..." >&2
cargo test --release --workspace --lib --test fuzz -- fuzz_
