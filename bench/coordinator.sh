#!/usr/bin/env bash
# Prevention, not remedy: the noisy-neighbour scenario with declarations. A latency agent
# (busybox httpd with a CGI doing a few ms of CPU work, --network host on 127.0.0.1,
# labels sutazai.class=latency sutazai.cpus=1) and four CPU-burning batch agents start
# together. The latency agent's p50/p99 at a fixed request rate, measured from the first
# second after they start, in three phases of one run:
#   alone    – the latency agent with no batch agents and no engine;
#   without  – all five started together, no engine;
#   with     – all five started together under `sutazai-top serve` with
#              [coordinator] enforce = true (the engine already running);
#   settled  – the same agents right after, the allocation long in place (what is left
#              once the start-up window is over);
#   prevented – all five started together again, the latency agent's need registered
#              ahead (POST /api/agents: registering reserves its CPU) and the batch agents
#              started under the shared parent (--cgroup-parent, [coordinator]
#              shared_parent), so they are born on the shared pool;
# plus the time from `docker run` returning for the latency agent to its allocation
# showing in `docker inspect` (target: 2 s), and the ratios (target: with/alone p99 <= 1.3).
# Everything the engine changed is rolled back at the end (`stop --rollback`).
# Run as root: `sudo bench/coordinator.sh [RATE] [SECONDS]`.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-20}
SECONDS_PER_PHASE=${2:-20}
PORT=18081
URL="http://127.0.0.1:$PORT/cgi-bin/work"
PREFIX=sutazai-bench-coord
BIN=./target/release/sutazai-top
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

docker info >/dev/null 2>&1 || { echo "Docker is not answering: run scripts/test.sh once or start dockerd" >&2; exit 1; }
IMAGE=$(scripts/busybox-image.sh)   # the tests' image too: busybox with every applet

work=$(mktemp -d)
chmod 700 "$work"
serve_started=""
cleanup() {
  if [ -n "$serve_started" ]; then
    "$BIN" --config "$work/config.toml" stop --rollback >/dev/null 2>&1 || true
  fi
  docker ps -aq --filter "name=$PREFIX" | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$work"
  # The shared parent, in every hierarchy Docker made it in.
  for hierarchy in /sys/fs/cgroup/*/; do rmdir "$hierarchy$PREFIX-shared" 2>/dev/null || true; done
}
trap cleanup EXIT
remove_agents() { docker ps -aq --filter "name=$PREFIX" | xargs -r docker rm -f >/dev/null 2>&1 || true; }
remove_agents

echo "building the release binary..." >&2
cargo build --release --quiet

# The CGI burns a few milliseconds of CPU per request, as an agent's handler would.
start_latency_agent() {
  docker run -d --network host --name "$PREFIX-agent" \
    --label sutazai.agent=1 --label sutazai.class=latency --label sutazai.cpus=1 \
    --label sutazai.priority=9 "$IMAGE" sh -c '
      mkdir -p /www/cgi-bin
      printf "#!/bin/sh\necho Content-Type: text/plain\necho\ni=0; while [ \$i -lt 3000 ]; do i=\$((i+1)); done; echo ok\n" > /www/cgi-bin/work
      chmod +x /www/cgi-bin/work
      exec httpd -f -p 127.0.0.1:'"$PORT"' -h /www' >/dev/null
}
start_batch_agents() {   # [extra docker run args...]
  for i in 1 2 3 4; do
    docker run -d --network none --name "$PREFIX-batch-$i" "$@" \
      --label sutazai.agent=1 --label sutazai.class=batch "$IMAGE" sh -c 'while :; do :; done' >/dev/null
  done
}
wait_for_httpd() {
  for _ in $(seq 1 100); do
    "$PY" -c "import urllib.request; urllib.request.urlopen('$URL', timeout=1)" 2>/dev/null && return 0
    sleep 0.02
  done
  echo "the latency agent did not answer" >&2; exit 1
}
# The client is the measuring instrument, standing in for callers on other hosts: in every
# phase it runs at nice -15 on the last CPU (the coordinator gives the first whole core to
# the agent), so what it measures is the agent, not its own wait behind the batch agents
# for a CPU, nor its own use of the agent's CPU.
CLIENT_CPU=$(sed 's/.*[-,]//' /sys/devices/system/cpu/online)
phase() {
  taskset -c "$CLIENT_CPU" nice -n -15 "$PY" bench/latency_client.py "$URL" "$RATE" "$SECONDS_PER_PHASE"
}
field() { printf '%s' "$1" | "$PY" -c "import json,sys; v=json.load(sys.stdin)['$2']; print('%.1f' % v if v is not None else 'nan')"; }

echo "phase alone: ${SECONDS_PER_PHASE}s at ${RATE} req/s..." >&2
start_latency_agent
wait_for_httpd
alone=$(phase)
remove_agents

echo "phase without: five agents start together, no engine..." >&2
start_latency_agent
start_batch_agents
wait_for_httpd
without=$(phase)
remove_agents
sleep 2

echo "starting sutazai-top serve with [coordinator] enforce = true..." >&2
mkdir -m 700 "$work/run" "$work/state"
cat >"$work/config.toml" <<EOF
interval_ms = 500
[api]
socket = "$work/run/api.sock"
token_file = "$work/state/api.token"
[service]
runtime_dir = "$work/run"
[optimizer]
state_dir = "$work/state"
[coordinator]
enforce = true
shared_parent = "$PREFIX-shared"
[log]
level = "info"
EOF
"$BIN" --config "$work/config.toml" serve 2>"$work/serve.log" &
serve_started=1
for _ in $(seq 1 100); do [ -S "$work/run/api.sock" ] && break; sleep 0.1; done
[ -S "$work/run/api.sock" ] || { echo "serve did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }
sleep 2

echo "phase with: five agents start together under the engine..." >&2
start_latency_agent
started=$(date +%s.%N)
start_batch_agents
# When the latency agent's allocation shows in Docker, in the background.
(
  for _ in $(seq 1 400); do
    set_cpus=$(docker inspect -f '{{.HostConfig.CpusetCpus}}' "$PREFIX-agent" 2>/dev/null || true)
    if [ -n "$set_cpus" ]; then
      echo "$(date +%s.%N) $set_cpus" >"$work/allocated"
      exit 0
    fi
    sleep 0.05
  done
) &
watcher=$!
wait_for_httpd
with=$(phase)
wait "$watcher" || true
echo "phase settled: the same agents, the allocation in place..." >&2
settled=$(phase)
remove_agents
sleep 2

echo "phase prevented: registered ahead, batch agents born under the shared parent..." >&2
curl -sf --unix-socket "$work/run/api.sock" http://localhost/api/agents \
  -d "{\"agent_id\": \"$PREFIX-agent\", \"cpu_cores\": 1, \"priority\": 9}" >/dev/null
for _ in $(seq 1 100); do   # until the plan holding its CPU is applied (the parent shrunk)
  [ "$(cat "/sys/fs/cgroup/cpuset/$PREFIX-shared/cpuset.cpus" 2>/dev/null)" = "$CLIENT_CPU" ] && break
  sleep 0.1
done
start_latency_agent
start_batch_agents --cgroup-parent "/$PREFIX-shared"
wait_for_httpd
prevented=$(phase)
allocation="never (within 20 s)"
if [ -s "$work/allocated" ]; then
  read -r at cpus <"$work/allocated"
  elapsed=$("$PY" -c 'import sys; print("%.2f" % (float(sys.argv[1]) - float(sys.argv[2])))' "$at" "$started")
  allocation="$elapsed s (cpuset $cpus)"
fi
agents=$("$BIN" --config "$work/config.toml" status 2>/dev/null | head -20 || true)
journal=$("$BIN" --config "$work/config.toml" journal 2>&1 | head -20 || true)
cp "$work/serve.log" /tmp/sutazai-bench-coordinator-serve.log 2>/dev/null || true

printf '\n== a latency agent (sutazai.cpus=1) starting with four CPU-burning batch agents (%s req/s, %ss per phase) ==\n' "$RATE" "$SECONDS_PER_PHASE"
printf '%-8s p50 %8s ms   p99 %8s ms   errors %s\n' alone "$(field "$alone" p50_ms)" "$(field "$alone" p99_ms)" "$(field "$alone" errors)"
printf '%-8s p50 %8s ms   p99 %8s ms   errors %s\n' without "$(field "$without" p50_ms)" "$(field "$without" p99_ms)" "$(field "$without" errors)"
printf '%-8s p50 %8s ms   p99 %8s ms   errors %s\n' with "$(field "$with" p50_ms)" "$(field "$with" p99_ms)" "$(field "$with" errors)"
printf '%-8s p50 %8s ms   p99 %8s ms   errors %s\n' settled "$(field "$settled" p50_ms)" "$(field "$settled" p99_ms)" "$(field "$settled" errors)"
printf '%-9s p50 %7s ms   p99 %8s ms   errors %s\n' prevented "$(field "$prevented" p50_ms)" "$(field "$prevented" p99_ms)" "$(field "$prevented" errors)"
"$PY" - "$alone" "$without" "$with" "$settled" "$prevented" <<'PY'
import json, sys
a, n, w, s, p = (json.loads(x) for x in sys.argv[1:6])
def ratio(x, y):
    return x / y if x and y else float("nan")
print(f"p99 with/alone {ratio(w['p99_ms'], a['p99_ms']):.2f}x (target <= 1.3), "
      f"without/alone {ratio(n['p99_ms'], a['p99_ms']):.2f}x, without/with {ratio(n['p99_ms'], w['p99_ms']):.2f}x")
print(f"p50 with/alone {ratio(w['p50_ms'], a['p50_ms']):.2f}x, without/alone {ratio(n['p50_ms'], a['p50_ms']):.2f}x")
print(f"settled: p99 {ratio(s['p99_ms'], a['p99_ms']):.2f}x alone, p50 {ratio(s['p50_ms'], a['p50_ms']):.2f}x alone")
print(f"prevented (registered ahead, batch under the shared parent): p99 {ratio(p['p99_ms'], a['p99_ms']):.2f}x alone "
      f"(target <= 1.3), p50 {ratio(p['p50_ms'], a['p50_ms']):.2f}x alone")
PY
printf 'allocation applied after the latency agent started: %s (target <= 2 s)\n' "$allocation"
printf '\n%s\n\n%s\n(the engine log: /tmp/sutazai-bench-coordinator-serve.log)\n' "$agents" "$journal"
