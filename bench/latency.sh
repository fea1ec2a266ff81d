#!/usr/bin/env bash
# Does it help? A latency-class agent (busybox httpd with a CGI doing a few ms of CPU work,
# --network host on 127.0.0.1) under four CPU-burning batch-class agents, on this host's CPUs.
#
# Measures the latency agent's p50 and p99 at a fixed request rate in three phases, in the
# same run:
#   quiet  – no batch agents;
#   noisy  – four batch agents burning CPU;
#   fixed  – the same noise, after sutazai-top (dashboard in tmux, balanced mode, --auto-fix)
#            has detected, applied, validated (and rolled back what did not help);
# and prints all three and the ratios, plus what the engine kept. Everything it changed is
# rolled back at the end. Run as root: `sudo bench/latency.sh [RATE] [SECONDS] [SETTLE]`.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-20}
SECONDS_PER_PHASE=${2:-20}
SETTLE=${3:-60}
PORT=18080
URL="http://127.0.0.1:$PORT/cgi-bin/work"
PREFIX=sutazai-bench-latency
STATE=$(mktemp -d)
BIN=./target/release/sutazai-top

docker info >/dev/null 2>&1 || { echo "Docker is not answering: run scripts/test.sh once or start dockerd" >&2; exit 1; }
command -v tmux >/dev/null || { echo "tmux is needed (apt-get install tmux)" >&2; exit 1; }
IMAGE=$(scripts/busybox-image.sh)   # the tests' image too: busybox with every applet

cleanup() {
  tmux kill-session -t "$PREFIX" 2>/dev/null || true
  [ -x "$BIN" ] && "$BIN" --state-dir "$STATE" --log-level warn rollback --all >/dev/null 2>&1 || true
  docker ps -aq --filter "name=$PREFIX" | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$STATE"
}
trap cleanup EXIT
cleanup_containers() { docker ps -aq --filter "name=$PREFIX" | xargs -r docker rm -f >/dev/null 2>&1 || true; }
cleanup_containers

echo "building the release binary..." >&2
cargo build --release --quiet

# The CGI burns a few milliseconds of CPU per request, as an agent's handler would.
docker run -d --network host --name "$PREFIX-agent" \
  --label sutazai.agent=1 --label sutazai.class=latency "$IMAGE" sh -c '
    mkdir -p /www/cgi-bin
    printf "#!/bin/sh\necho Content-Type: text/plain\necho\ni=0; while [ \$i -lt 3000 ]; do i=\$((i+1)); done; echo ok\n" > /www/cgi-bin/work
    chmod +x /www/cgi-bin/work
    exec httpd -f -p 127.0.0.1:'"$PORT"' -h /www' >/dev/null
sleep 2

phase() {
  python3 bench/latency_client.py "$URL" "$RATE" "$SECONDS_PER_PHASE"
}
field() { printf '%s' "$1" | python3 -c "import json,sys; v=json.load(sys.stdin)['$2']; print('%.1f' % v if v is not None else 'nan')"; }

echo "phase quiet: ${SECONDS_PER_PHASE}s at ${RATE} req/s..." >&2
quiet=$(phase)

echo "starting four batch agents burning CPU..." >&2
for i in 1 2 3 4; do
  docker run -d --network none --name "$PREFIX-batch-$i" \
    --label sutazai.agent=1 --label sutazai.class=batch "$IMAGE" sh -c 'while :; do :; done' >/dev/null
done
sleep 3
echo "phase noisy..." >&2
noisy=$(phase)

echo "starting sutazai-top (balanced, auto-fix) and letting it act for ${SETTLE}s..." >&2
tmux new-session -d -s "$PREFIX" -x 200 -y 50 \
  "$BIN --mode balanced --auto-fix --state-dir $STATE --interval 1000"
sleep "$SETTLE"
echo "phase fixed..." >&2
fixed=$(phase)
kept=$("$BIN" --state-dir "$STATE" --log-level warn journal 2>&1 || true)
tmux send-keys -t "$PREFIX" q
sleep 2

printf '\n== latency agent under four CPU-burning batch agents (%s req/s, %ss per phase) ==\n' "$RATE" "$SECONDS_PER_PHASE"
printf '%-7s p50 %8s ms   p99 %8s ms   errors %s\n' quiet "$(field "$quiet" p50_ms)" "$(field "$quiet" p99_ms)" "$(field "$quiet" errors)"
printf '%-7s p50 %8s ms   p99 %8s ms   errors %s\n' noisy "$(field "$noisy" p50_ms)" "$(field "$noisy" p99_ms)" "$(field "$noisy" errors)"
printf '%-7s p50 %8s ms   p99 %8s ms   errors %s\n' fixed "$(field "$fixed" p50_ms)" "$(field "$fixed" p99_ms)" "$(field "$fixed" errors)"
python3 - "$quiet" "$noisy" "$fixed" <<'PY'
import json, sys
q, n, f = (json.loads(a) for a in sys.argv[1:4])
def ratio(a, b):
    return a / b if a and b else float("nan")
print(f"p99 noisy/quiet {ratio(n['p99_ms'], q['p99_ms']):.2f}x, fixed/quiet {ratio(f['p99_ms'], q['p99_ms']):.2f}x, "
      f"noisy/fixed {ratio(n['p99_ms'], f['p99_ms']):.2f}x (target: noisy/fixed >= 2, fixed/quiet <= 1.5)")
print(f"p50 noisy/quiet {ratio(n['p50_ms'], q['p50_ms']):.2f}x, fixed/quiet {ratio(f['p50_ms'], q['p50_ms']):.2f}x")
PY
printf '\nwhat the engine kept active (its validation rolled back what did not help):\n%s\n' "$kept"
