#!/usr/bin/env bash
# API cost at the reference scale: 131 labelled agent containers, `sutazai-top serve`.
#
# Measures, in the same run, for `GET /api/metrics` (the snapshot as JSON) and `GET /metrics`
# (Prometheus text), over the Unix socket, 500 sequential requests each on fresh connections:
#   - latency p50 / p99 / max (target: p99 under 5 ms);
#   - the serve process's CPU time per request: its CPU over 3 s of back-to-back requests
#     minus its CPU over an idle window of the same length (the engine keeps sampling in both), divided by the
#     count; compared with one sampling round, the mean CPU of every sampler's round as the
#     engine itself reports it in the snapshot (target: a scrape costs less than a round).
# Run as root: `sudo bench/api.sh [AGENTS] [REQUESTS]`.
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS=${1:-131}
REQUESTS=${2:-500}
PREFIX=sutazai-bench-api
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

docker info >/dev/null 2>&1 || { echo "Docker is not answering: run scripts/test.sh once or start dockerd" >&2; exit 1; }
IMAGE=$(scripts/busybox-image.sh)   # the tests' image too: busybox with every applet

work=$(mktemp -d)
chmod 700 "$work"
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  docker ps -aq --filter "name=$PREFIX" | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
docker ps -aq --filter "name=$PREFIX" | xargs -r docker rm -f >/dev/null 2>&1 || true

echo "building the release binary..." >&2
cargo build --release --quiet

echo "starting $AGENTS agent containers..." >&2
seq 1 "$AGENTS" | xargs -P 4 -I{} docker run -d --network none --name "$PREFIX-{}" \
  --label sutazai.agent=1 --label sutazai.class=batch "$IMAGE" sleep 36000 >/dev/null
running=$(docker ps -q --filter "name=$PREFIX" | wc -l)
echo "running: $running" >&2

# Its own socket, runtime dir and journal: never touches an installed service's.
mkdir -m 700 "$work/run" "$work/state"
cat >"$work/config.toml" <<EOF
interval_ms = 1000
[api]
socket = "$work/run/api.sock"
token_file = "$work/state/api.token"
[service]
runtime_dir = "$work/run"
[optimizer]
state_dir = "$work/state"
[log]
level = "warn"
EOF
./target/release/sutazai-top --config "$work/config.toml" serve 2>"$work/serve.log" &
serve_pid=$!
sock="$work/run/api.sock"
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "serve did not open $sock:" >&2; cat "$work/serve.log" >&2; exit 1; }

# Wait until the engine sees every agent and a few rounds have run.
for _ in $(seq 1 60); do
  seen=$("$PY" - "$sock" <<'EOF' 2>/dev/null || echo 0
import json, sys
sys.path.insert(0, "bench")
from api_client import get
status, body = get(sys.argv[1], "/api/metrics")
snap = json.loads(body)
print(len(snap["containers"]["agents"]) if snap["seq"] >= 5 else 0)
EOF
)
  [ "$seen" -ge "$running" ] && break
  sleep 1
done
echo "engine sees $seen agents" >&2

results=()
for path in /api/metrics /metrics; do
  echo "measuring GET $path, $REQUESTS requests..." >&2
  results+=("$("$PY" bench/api_client.py "$sock" "$serve_pid" "$path" "$REQUESTS")")
done
round_json=$("$PY" - "$sock" <<'EOF'
import json, sys
sys.path.insert(0, "bench")
from api_client import get
snap = json.loads(get(sys.argv[1], "/api/metrics")[1])
per = {s["name"]: s["total_cpu_us"] / s["rounds"] / 1000 for s in snap["samplers"] if s["rounds"]}
print(json.dumps({"round_ms": sum(per.values()), "samplers": per, "agents": len(snap["containers"]["agents"])}))
EOF
)

printf '\n== API cost, %s agent containers (engine sees %s) ==\n' "$running" "$seen"
"$PY" - "$round_json" "${results[@]}" <<'EOF'
import json, sys
round_ = json.loads(sys.argv[1])
round_ms = round_["round_ms"]
print(f"one sampling round (every sampler, mean CPU as the engine reports it): {round_ms:.2f} ms")
ok = True
for raw in sys.argv[2:]:
    r = json.loads(raw)
    p99_ok = r["p99_ms"] < 5.0 and r["errors"] == 0
    cpu_ok = r["cpu_ms_per_request"] < round_ms
    ok = ok and p99_ok and cpu_ok
    print(f"GET {r['path']:<13} {r['requests']} requests, {r['errors']} errors, {r['body_bytes'] / 1024:.0f} KiB each")
    print(f"  latency p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.2f} ms"
          f"   (target p99 < 5 ms: {'met' if p99_ok else 'MISSED'})")
    print(f"  engine CPU {r['cpu_ms_per_request']:.3f} ms per request"
          f" ({r['cpu_requests']} requests: {r['cpu_busy_s'] * 1000:.0f} ms in {r['wall_s']:.1f} s, idle {r['cpu_idle_s'] * 1000:.0f} ms)"
          f"   = {r['cpu_ms_per_request'] / round_ms:.2f} of a sampling round"
          f"   (target < 1: {'met' if cpu_ok else 'MISSED'})")
print("all targets met" if ok else "some targets MISSED")
EOF
