#!/usr/bin/env bash
# The one test command: installs what the tests need when missing (Debian's docker.io,
# busybox-static, zstd, tmux, python3, python3-fusepy, procps, util-linux), starts dockerd if none answers and waits for it, then runs the
# whole suite. Run as root on a fresh Debian machine: `sudo scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v python3 >/dev/null 2>&1 || missing+=(python3)   # multi-threaded test processes
command -v pgrep >/dev/null 2>&1 || missing+=(procps)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)   # decompresses the cache traces (gzip is essential)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)   # verifies the unit file
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || missing+=(python3-prometheus-client)   # parses /metrics
/usr/bin/python3 -c 'import jsonschema' >/dev/null 2>&1 || missing+=(python3-jsonschema)   # checks the JSON report
/usr/bin/python3 -c 'import fusepy' >/dev/null 2>&1 || missing+=(python3-fusepy)   # a hung disk on demand (tests/fixtures/slowfs.py)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)   # renders the HTML report headless
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (no bridge, no iptables: tests use --network none)"
  nohup dockerd --bridge=none --iptables=false >/tmp/sutazai-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not answer; see /tmp/sutazai-dockerd.log"; tail -20 /tmp/sutazai-dockerd.log >&2; exit 1; }
fi
log "docker $(docker version --format '{{.Server.Version}}') answers"

# Leftovers from an interrupted earlier run (tests name their containers sutazai-test-*).
stale=$(docker ps -aq --filter name=sutazai-test- || true)
[ -z "$stale" ] || docker rm -f $stale >/dev/null

# The conventions the compiler keeps ([workspace.lints]: no unwrap or expect outside tests,
# every unsafe block documented), and clippy's own, as errors.
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets --no-fail-fast "$@"
