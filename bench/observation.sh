#!/usr/bin/env bash
# Observation overhead at the reference scale: 131 labelled agent containers.
#
# Measures, in the same run:
#   - sutazai-top's engine: CPU time per sampling round (all samplers: cpu, memory, PSI, disks,
#     net, processes, 131 containers from their cgroup files) and its RSS, at 1 Hz for 30 s;
#   - the Docker daemon's CPU time for one `docker stats --no-stream` round over the same
#     containers (the tool operators reach for today), mean of 3 rounds;
# and prints both and the ratio. Run as root: `sudo bench/observation.sh [AGENTS] [SECONDS]`.
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS=${1:-131}
SECONDS_MEASURED=${2:-30}
PREFIX=sutazai-bench-agent

docker info >/dev/null 2>&1 || { echo "Docker is not answering: run scripts/test.sh once or start dockerd" >&2; exit 1; }
IMAGE=$(scripts/busybox-image.sh)   # the tests' image too: busybox with every applet

cleanup() { docker ps -aq --filter "name=$PREFIX" | xargs -r docker rm -f >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

echo "building the release binary..." >&2
cargo build --release --quiet

echo "starting $AGENTS agent containers..." >&2
seq 1 "$AGENTS" | xargs -P 4 -I{} docker run -d --network none --name "$PREFIX-{}" \
  --label sutazai.agent=1 --label sutazai.class=batch "$IMAGE" sleep 36000 >/dev/null
running=$(docker ps -q --filter "name=$PREFIX" | wc -l)
echo "running: $running" >&2
sleep 3

dockerd_pid=$(pidof dockerd | awk '{print $1}')
cpu_ticks() { awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)

stats_total=0
for round in 1 2 3; do
  before=$(cpu_ticks "$dockerd_pid")
  start=$(date +%s%N)
  docker stats --no-stream >/dev/null
  end=$(date +%s%N)
  after=$(cpu_ticks "$dockerd_pid")
  ms=$(( (after - before) * 1000 / clk ))
  echo "docker stats round $round: dockerd CPU ${ms} ms, wall $(( (end - start) / 1000000 )) ms" >&2
  stats_total=$(( stats_total + ms ))
done
stats_ms=$(awk -v t="$stats_total" 'BEGIN { printf "%.1f", t / 3 }')

echo "measuring the engine for ${SECONDS_MEASURED}s at 1 Hz..." >&2
engine_json=$(./target/release/sutazai-top --interval 1000 --log-level warn bench-observe --seconds "$SECONDS_MEASURED")
field() { printf '%s' "$engine_json" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
per_round=$(field cpu_ms_per_round)
pct=$(field cpu_pct_of_one_core)
rss=$(field rss_kb)
agents_seen=$(field agents)

printf '\n== observation overhead, %s agent containers (engine saw %s) ==\n' "$running" "$agents_seen"
printf 'sutazai-top engine: %.2f ms CPU per round, %.2f%% of one core at 1 Hz, RSS %.1f MB\n' \
  "$per_round" "$pct" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
printf 'docker stats --no-stream: %s ms of dockerd CPU per round (mean of 3)\n' "$stats_ms"
printf '%s' "$engine_json" | python3 -c "
import json, sys
for name, ms in json.load(sys.stdin)['sampler_mean_cpu_ms'].items():
    print(f\"  sampler {name:<10} {ms:6.2f} ms CPU per round (mean over the run)\")"
containers_ms=$(printf '%s' "$engine_json" | python3 -c "import json,sys; print(json.load(sys.stdin)['sampler_mean_cpu_ms'].get('containers', 0))")
awk -v e="$per_round" -v c="$containers_ms" -v d="$stats_ms" 'BEGIN {
  if (e > 0) printf "ratio, whole engine round (every sampler) to a docker stats round: 1/%.0f (target: at most 1/50)\n", d / e
  if (c > 0) printf "ratio, containers sampler alone (like for like) to a docker stats round: 1/%.0f\n", d / c }'
