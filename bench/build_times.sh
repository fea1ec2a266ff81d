#!/usr/bin/env bash
# What the workspace split buys in build time: a release build from clean, the release
# rebuild after touching one TUI pane, and the debug test targets rebuilt after touching it,
# for a base revision and HEAD, one after the other in the same run (each in a worktree of
# its own, with its own target dir). Takes about 20 minutes on 2 cores.
#   bench/build_times.sh [BASE]   (default a4f27ae: the single crate before the workspace)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-a4f27ae}
work=$(mktemp -d)
cleanup() {
  git worktree remove --force "$work/base" 2>/dev/null || true
  git worktree remove --force "$work/head" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
git worktree add -q --detach "$work/base" "$base"
git worktree add -q --detach "$work/head" HEAD

# Seconds a command takes (its output dropped).
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }'
}

pane=src/tui/panes/memory.rs
printf '%-6s %14s %16s %20s\n' side "clean release" "pane, release" "pane, test targets"
for side in base head; do
  cd "$work/$side"
  # The workspace's tests are the app's and the crates'; the single crate's, its own.
  scope=()
  grep -q '^\[workspace\]' Cargo.toml && scope=(--workspace)
  clean=$(seconds cargo build --release)
  touch "$pane"
  rebuilt=$(seconds cargo build --release)
  cargo test "${scope[@]}" --all-targets --no-run >/dev/null 2>&1
  touch "$pane"
  tests=$(seconds cargo test "${scope[@]}" --all-targets --no-run)
  printf '%-6s %13ss %15ss %19ss\n' "$side" "$clean" "$rebuilt" "$tests"
done
