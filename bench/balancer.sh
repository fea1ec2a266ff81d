#!/usr/bin/env bash
# The load balancer against nginx and haproxy, each configured the same way, on loopback.
#
# Two backends: one nginx instance (1 worker, keep-alive) on 127.0.0.1:18081 and :18082
# answering a tiny "ok\n". Three proxies, each with one worker / one thread, keep-alive to
# both backends, round-robin. HAProxy and ours also run a second way, the other way about
# polling for work before sleeping (our default polls while it pays; HAProxy's
# `busy-polling` always polls; nginx has no such setting):
#   nginx           127.0.0.1:18090  (upstream keepalive 64, proxy_http_version 1.1, Connection "")
#   haproxy         127.0.0.1:18091  (nbthread 1, mode http, http-reuse always)
#   haproxy-busy    127.0.0.1:18094  (the same plus `busy-polling`)
#   sutazai         127.0.0.1:18092  (`sutazai-top serve --no-docker`, [balancer]
#                                     worker_threads = 1, busy_poll_us at its default, 50)
#   sutazai-nopoll  127.0.0.1:18093  (the same with busy_poll_us = 0)
# In alternating rounds (every target once per round, so drift hits all alike), with wrk:
#   - requests/s at 50 connections (wrk -t1 -c50), and each proxy's CPU time per request
#     (its processes' utime+stime over the run, and the user/system split; ours includes the
#     engine's own sampling, every 5 s here);
#   - latency p50/p99 at 1 connection (wrk -t1 -c1 --latency), and the p50 each proxy adds
#     over hitting a backend directly, and the proxy's CPU meanwhile (percent of one CPU: what
#     polling costs where a sleeping proxy would idle; ours: the proxy's threads only);
#   - how often each proxy went to sleep for want of work (voluntary context switches per
#     1000 requests at 50 connections; ours: the proxy's threads only).
# Prints the medians of the rounds and the ratios to nginx. Targets (issue 6): at least 1.0x
# nginx's requests/s, and no more added p50 than nginx.
# Run as root: `sudo bench/balancer.sh [ROUNDS] [SECONDS]` (defaults 3 and 10). Installs
# nginx, haproxy and wrk with apt-get when missing. Never touches a running service's
# sockets, runtime dir or journal: everything lives in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-10}
BIN=./target/release/sutazai-top
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
BACKEND_PORTS=(18081 18082)
declare -A PORT=([backend]=18081 [nginx]=18090 [haproxy]=18091 [haproxy-busy]=18094
  [sutazai]=18092 [sutazai-nopoll]=18093)
TARGETS=(backend nginx haproxy haproxy-busy sutazai sutazai-nopoll)
# WITHOUT_SUTAZAI=1: only the backend, nginx and haproxy (to check the setup without a build).
[ "${WITHOUT_SUTAZAI:-0}" = 1 ] && TARGETS=(backend nginx haproxy haproxy-busy)
# ONLY="backend nginx sutazai": only those targets (the ratios need backend and nginx), e.g.
# to profile one proxy under load.
[ -n "${ONLY:-}" ] && read -r -a TARGETS <<<"$ONLY"

[ "$(id -u)" -eq 0 ] || { echo "run as root (it installs packages and binds ports)" >&2; exit 1; }
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi
for port in "${BACKEND_PORTS[@]}" "${PORT[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "127.0.0.1:$port is taken: stop what listens there first" >&2
    exit 1
  fi
done

work=$(mktemp -d)
chmod 700 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    # A stopped process (see POLLS_WHEN_IDLE) must run to act on the TERM.
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

if [ "${SKIP_BUILD:-0}" != 1 ] && [ "${WITHOUT_SUTAZAI:-0}" != 1 ]; then
  echo "building the release binary..." >&2
  cargo build --release --quiet
fi

# nginx refuses to start without its temp paths; keep them all in the instance's prefix.
nginx_common() {
  cat <<EOF
worker_processes 1;
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
EOF
}

mkdir -p "$work/backend" "$work/nginx"
{
  nginx_common "$work/backend"
  for port in "${BACKEND_PORTS[@]}"; do
    echo "  server { listen 127.0.0.1:$port; location / { default_type text/plain; return 200 \"ok\\n\"; } }"
  done
  echo "}"
} >"$work/backend/nginx.conf"
{
  nginx_common "$work/nginx"
  cat <<EOF
  upstream backends {
    server 127.0.0.1:${BACKEND_PORTS[0]};
    server 127.0.0.1:${BACKEND_PORTS[1]};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${PORT[nginx]};
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$work/nginx/nginx.conf"
# $1: the port; $2: a line more for the global section.
haproxy_config() {
  cat <<EOF
global
  nbthread 1
  maxconn 4096
$2
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend proxy
  bind 127.0.0.1:$1
  default_backend backends
backend backends
  balance roundrobin
  server b1 127.0.0.1:${BACKEND_PORTS[0]}
  server b2 127.0.0.1:${BACKEND_PORTS[1]}
EOF
}
haproxy_config "${PORT[haproxy]}" "" >"$work/haproxy.cfg"
haproxy_config "${PORT[haproxy-busy]}" "  busy-polling" >"$work/haproxy-busy.cfg"
# $1: the target's name (its socket, runtime dir and journal are its own, never an installed
# service's); $2: a line more for the [balancer] section.
sutazai_config() {
  mkdir -m 700 "$work/$1-run" "$work/$1-state"
  cat <<EOF
interval_ms = 5000
[api]
socket = "$work/$1-run/api.sock"
token_file = "$work/$1-state/api.token"
[service]
runtime_dir = "$work/$1-run"
[optimizer]
state_dir = "$work/$1-state"
[log]
level = "warn"
[cache]
enabled = false
[balancer]
enabled = true
listen = "127.0.0.1:${PORT[$1]}"
worker_threads = 1
algorithm = "round-robin"
$2
[[balancer.backends]]
host = "127.0.0.1"
port = ${BACKEND_PORTS[0]}
[[balancer.backends]]
host = "127.0.0.1"
port = ${BACKEND_PORTS[1]}
EOF
}
sutazai_config sutazai "" >"$work/sutazai.toml"
sutazai_config sutazai-nopoll "busy_poll_us = 0" >"$work/sutazai-nopoll.toml"

nginx -p "$work/backend" -c "$work/backend/nginx.conf" -g 'daemon off;' 2>"$work/backend.log" &
pids+=($!)
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' 2>"$work/nginx.log" &
pids+=($!)
declare -A PID=([nginx]=$!)
# Whose sleeps count: nginx's and haproxy's processes whole, our proxy's threads only.
declare -A THREADS=([sutazai]=sutazai-balanc [sutazai-nopoll]=sutazai-balanc)
for name in haproxy haproxy-busy; do
  haproxy -db -f "$work/$name.cfg" 2>"$work/$name.log" &
  pids+=($!)
  PID[$name]=$!
done
if [ "${WITHOUT_SUTAZAI:-0}" != 1 ]; then
  for name in sutazai sutazai-nopoll; do
    "$BIN" --no-docker --config "$work/$name.toml" serve 2>"$work/$name.log" &
    pids+=($!)
    PID[$name]=$!
  done
fi

# Every target answers "ok" before anything is measured.
for target in "${TARGETS[@]}"; do
  url="http://127.0.0.1:${PORT[$target]}/"
  for _ in $(seq 1 100); do
    [ "$(curl -fsS --max-time 1 "$url" 2>/dev/null)" = ok ] && break
    sleep 0.1
  done
  if [ "$(curl -fsS --max-time 1 "$url" 2>/dev/null)" != ok ]; then
    echo "$target does not answer on $url; its log:" >&2
    cat "$work/$target.log" >&2 2>/dev/null || true
    exit 1
  fi
done
echo "all targets answer; $ROUNDS rounds of ${SECONDS_PER_RUN} s per target and load" >&2
# HAProxy with busy-polling polls even when idle, a whole CPU of this machine: it is
# stopped (SIGSTOP) except while it is measured, so it never weighs on the other targets.
POLLS_WHEN_IDLE=(haproxy-busy)
for target in "${POLLS_WHEN_IDLE[@]}"; do
  [ -n "${PID[$target]:-}" ] && kill -STOP "${PID[$target]}"
done

# utime+stime in clock ticks of a process and its children (nginx's master and worker);
# with $2 = user or system, only that part.
cpu_ticks() {
  local total=0 pid stat
  for pid in "$1" $(pgrep -P "$1" || true); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    total=$((total + $(stat_ticks "$stat" "${2:-both}")))
  done
  echo "$total"
}

# The same for the threads of process $1 whose name starts with $2: our proxy runs on its
# own threads ("sutazai-balancer"), apart from the engine's samplers.
thread_ticks() {
  local total=0 task stat comm
  for task in /proc/"$1"/task/*; do
    stat=$(cat "$task/stat" 2>/dev/null) || continue
    comm=${stat#*(}
    comm=${comm%%)*}
    [[ $comm == "$2"* ]] || continue
    total=$((total + $(stat_ticks "$stat")))
  done
  echo "$total"
}

# Voluntary context switches (the thread went to sleep: nothing to do) of process $1, its
# children and their threads; with $2, only threads whose name starts with it.
sleeps() {
  local total=0 task comm n
  for task in /proc/"$1"/task/* $(for c in $(pgrep -P "$1" || true); do echo /proc/"$c"/task/*; done); do
    comm=$(cat "$task/comm" 2>/dev/null) || continue
    [ -z "${2:-}" ] || [[ $comm == "$2"* ]] || continue
    n=$(awk '/^voluntary_ctxt_switches/{print $2}' "$task/status" 2>/dev/null) || continue
    total=$((total + ${n:-0}))
  done
  echo "$total"
}

# utime + stime: fields 14 and 15 of a stat line, counted after the ")" ending the name;
# $2 = user or system for one of them.
stat_ticks() {
  local part=${2:-both}
  # shellcheck disable=SC2086
  set -- ${1##*) }
  case $part in
    user) echo "${12}" ;;
    system) echo "${13}" ;;
    *) echo $((${12} + ${13})) ;;
  esac
}

polls_when_idle() {
  [ -n "${PID[$1]:-}" ] && [[ " ${POLLS_WHEN_IDLE[*]} " == *" $1 "* ]]
}

results="$work/results.tsv"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    url="http://127.0.0.1:${PORT[$target]}/"
    polls_when_idle "$target" && kill -CONT "${PID[$target]}"
    before=0 after=0 proxy_before=0 proxy_after=0 user_before=0 user_after=0
    sleeps_before=0 sleeps_after=0 one_before=0 one_after=0
    [ -n "${PID[$target]:-}" ] && sleeps_before=$(sleeps "${PID[$target]}" "${THREADS[$target]:-}")
    [ -n "${PID[$target]:-}" ] && before=$(cpu_ticks "${PID[$target]}")
    [ -n "${PID[$target]:-}" ] && user_before=$(cpu_ticks "${PID[$target]}" user)
    [[ $target == sutazai* ]] && proxy_before=$(thread_ticks "${PID[$target]}" sutazai-balanc)
    wrk -t1 -c50 -d"${SECONDS_PER_RUN}s" "$url" >"$work/wrk50.txt"
    [ -n "${PID[$target]:-}" ] && after=$(cpu_ticks "${PID[$target]}")
    [ -n "${PID[$target]:-}" ] && user_after=$(cpu_ticks "${PID[$target]}" user)
    [[ $target == sutazai* ]] && proxy_after=$(thread_ticks "${PID[$target]}" sutazai-balanc)
    [ -n "${PID[$target]:-}" ] && sleeps_after=$(sleeps "${PID[$target]}" "${THREADS[$target]:-}")
    # Our proxies: their own threads, without the engine's sampling.
    if [[ $target == sutazai* ]]; then
      one_before=$(thread_ticks "${PID[$target]}" sutazai-balanc)
    elif [ -n "${PID[$target]:-}" ]; then
      one_before=$(cpu_ticks "${PID[$target]}")
    fi
    wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" --latency "$url" >"$work/wrk1.txt"
    if [[ $target == sutazai* ]]; then
      one_after=$(thread_ticks "${PID[$target]}" sutazai-balanc)
    elif [ -n "${PID[$target]:-}" ]; then
      one_after=$(cpu_ticks "${PID[$target]}")
    fi
    polls_when_idle "$target" && kill -STOP "${PID[$target]}"
    "$PY" - "$target" "$round" "$((after - before))" "$((proxy_after - proxy_before))" \
      "$(getconf CLK_TCK)" "$work/wrk50.txt" "$work/wrk1.txt" "$((user_after - user_before))" \
      "$((sleeps_after - sleeps_before))" "$((one_after - one_before))" "$SECONDS_PER_RUN" \
      >>"$results" <<'EOF'
import re, sys
target, round_, ticks, proxy_ticks, hz, many, one, user_ticks, sleeps, one_ticks, secs = sys.argv[1:]
def read(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    count = int(re.search(r"(\d+) requests in", text).group(1))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    return text, rps, count, errors
def micros(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]
_, rps, count, errors50 = read(many)
text, _, _, errors1 = read(one)
p50 = micros(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = micros(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
def per_request(ticks):
    return int(ticks) * 1e6 / int(hz) / count if int(ticks) > 0 else float("nan")
# The proxy's CPU during the 1-connection run, in percent of one CPU.
one_cpu = int(one_ticks) * 100 / int(hz) / int(secs) if int(one_ticks) > 0 else float("nan")
print(f"{target}\t{round_}\t{rps:.1f}\t{p50:.1f}\t{p99:.1f}\t{per_request(ticks):.2f}"
      f"\t{per_request(proxy_ticks):.2f}\t{errors50 + errors1}\t{per_request(user_ticks):.2f}"
      f"\t{int(sleeps) * 1000 / count:.2f}\t{one_cpu:.1f}")
EOF
    tail -n1 "$results" | awk -F'\t' '{printf "round %s %-14s %10s req/s  p50 %8s us  p99 %8s us  cpu %s us/req  errors %s\n", $2, $1, $3, $4, $5, $6, $8}' >&2
  done
done

printf '\n== Load balancer vs nginx and haproxy: %s rounds x %s s, loopback, 1 worker each ==\n' \
  "$ROUNDS" "$SECONDS_PER_RUN"
"$PY" - "$results" "$(nproc)" <<'EOF'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
by, per_round = {}, {}
for target, round_, rps, p50, p99, cpu, proxy_cpu, errors, user_cpu, sleeps, one_cpu in rows:
    entry = by.setdefault(target, {"rps": [], "p50": [], "p99": [], "cpu": [], "proxy_cpu": [],
                                   "user_cpu": [], "sleeps": [], "one_cpu": [], "errors": 0})
    per_round.setdefault(round_, {})[target] = float(rps)
    if target != "backend":
        entry["sleeps"].append(float(sleeps))
    for key, value in [("user_cpu", user_cpu), ("proxy_cpu", proxy_cpu), ("cpu", cpu),
                       ("one_cpu", one_cpu)]:
        if value != "nan":
            entry[key].append(float(value))
    entry["rps"].append(float(rps))
    entry["p50"].append(float(p50))
    entry["p99"].append(float(p99))
    entry["errors"] += int(errors)
med = {t: {k: (statistics.median(v) if isinstance(v, list) and v else v) for k, v in e.items()}
       for t, e in by.items()}
direct = med["backend"]["p50"]
nginx = med["nginx"]
added_nginx = nginx["p50"] - direct
order = ["backend", "nginx", "haproxy", "haproxy-busy", "sutazai", "sutazai-nopoll"]
print(f"machine: {sys.argv[2]} CPUs; wrk -t1 -c50 for req/s, wrk -t1 -c1 --latency for p50/p99;"
      " medians of the rounds")
print(f"{'target':<14} {'req/s @50':>10} {'x nginx':>8} {'p50 @1':>9} {'p99 @1':>9}"
      f" {'added p50':>10} {'CPU/req':>9} {'CPU @1':>7} {'errors':>7}")
for target in order:
    if target not in med:
        continue
    m = med[target]
    added = m["p50"] - direct
    added_text = "–" if target == "backend" else f"{added:.1f} us"
    cpu = f"{m['cpu']:.2f} us" if isinstance(m["cpu"], float) else "–"
    one_cpu = f"{m['one_cpu']:.0f} %" if isinstance(m["one_cpu"], float) else "–"
    print(f"{target:<14} {m['rps']:>10.0f} {m['rps'] / nginx['rps']:>8.2f} {m['p50']:>6.1f} us"
          f" {m['p99']:>6.1f} us {added_text:>10} {cpu:>9} {one_cpu:>7} {m['errors']:>7}")
ours = med.get("sutazai")
if ours:
    ratios = sorted(r["sutazai"] / r["nginx"] for r in per_round.values()
                    if "sutazai" in r and "nginx" in r)
    rps_ok = ours["rps"] >= nginx["rps"]
    p50_ok = ours["p50"] - direct <= added_nginx
    print(f"target req/s >= 1.0x nginx: {'met' if rps_ok else 'MISSED'}"
          f" ({ours['rps'] / nginx['rps']:.2f}x; per round {ratios[0]:.2f}x-{ratios[-1]:.2f}x);"
          f" added p50 <= nginx's ({added_nginx:.1f} us): {'met' if p50_ok else 'MISSED'}"
          f" ({ours['p50'] - direct:.1f} us)")
print("CPU/req: the proxy's processes' utime+stime during the 50-connection runs, per request;"
      " CPU @1: the same during the 1-connection run, in percent of one CPU")
for target in order[1:]:
    m = med.get(target)
    if m and isinstance(m["cpu"], float) and isinstance(m["user_cpu"], float):
        print(f"  {target}: user {m['user_cpu']:.2f} us + system {m['cpu'] - m['user_cpu']:.2f} us")
print("Sleeps (voluntary context switches) per 1000 requests at 50 connections: how often the"
      " proxy ran out of work and waited")
for target in order[1:]:
    m = med.get(target)
    if m and isinstance(m["sleeps"], float):
        print(f"  {target}: {m['sleeps']:.1f}")
if ours and isinstance(ours["proxy_cpu"], float):
    print(f"  sutazai: of its {ours['cpu']:.2f} us, {ours['proxy_cpu']:.2f} us on the proxy's own"
          " threads (sutazai-balancer); the rest is the engine (sampling every 5 s) and the"
          " kernel work it is charged for")
EOF
