#!/usr/bin/env bash
# The memory pools against their peers, in one run, on a `sutazai-top serve` of its own:
#   memory  – 8 processes that each need the same 256 MiB blob: private copies vs through
#             the pool; the sum of their PSS and the host's anonymous + shared memory (the
#             store's copy included), in copies of the blob (target: <= 1.05 through the pool);
#   latency – get p50/p99 at 4 KiB, 1 MiB and 256 MiB (target p99 <= 200 us at every size):
#             the pools' get from Python and from Rust, multiprocessing.shared_memory
#             attaching by name, and the engine's cache GET /api/cache/{key} for the same bytes;
#   put     – put throughput of 256 MiB, hashing included (target >= 1 GB/s), from bytes (one
#             copy into a memfd) and from a memfd (adopted: hashing only), beside a memcpy.
# Run as root: `sudo bench/pools.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

work=$(mktemp -d)
chmod 700 "$work"
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "building the release binary and the Rust client's bench..." >&2
cargo build --release --quiet
cargo build --release --quiet -p sutazai-pools --example pools_bench

# Its own sockets, runtime dir and journal: never touches an installed service's.
mkdir -m 700 "$work/run" "$work/state"
cat >"$work/config.toml" <<CONF
[api]
socket = "$work/run/api.sock"
token_file = "$work/state/api.token"
[service]
runtime_dir = "$work/run"
[optimizer]
state_dir = "$work/state"
[log]
level = "warn"
[docker]
enabled = false
[object_store]
shared_memory_size_mb = 2048
CONF
./target/release/sutazai-top --config "$work/config.toml" serve 2>"$work/serve.log" &
serve_pid=$!
pools="$work/run/pools.sock"
api="$work/run/api.sock"
for _ in $(seq 1 100); do [ -S "$pools" ] && [ -S "$api" ] && break; sleep 0.1; done
[ -S "$pools" ] || { echo "serve did not open $pools:" >&2; cat "$work/serve.log" >&2; exit 1; }

echo "memory: 8 processes x 256 MiB, private then through the pool..." >&2
memory=$("$PY" bench/pools_bench.py memory "$pools" "$work")
echo "latency: Python clients..." >&2
latency=$("$PY" bench/pools_bench.py latency "$pools" "$api")
echo "latency and put: the Rust client..." >&2
rust_get=$(./target/release/examples/pools_bench "$pools" get)
rust_put=$(./target/release/examples/pools_bench "$pools" put)

"$PY" - "$memory" "$latency" "$rust_get" "$rust_put" <<'EOF'
import json, sys
memory, latency = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rust = {}
for line in (sys.argv[3] + "\n" + sys.argv[4]).splitlines():
    what, *pairs = line.split()
    fields = dict(p.split("=") for p in pairs)
    rust[(what, fields.get("size"))] = fields

print("## 8 processes x the same 256 MiB blob (in copies of the blob; target <= 1.05 pooled)")
print("| | sum of PSS | host anon + shmem |")
print("|---|---|---|")
for mode in ("private", "pool"):
    m = memory[mode]
    print(f"| {mode} | {m['pss_mib']:.0f} MiB = {m['pss_copies']:.2f} | {m['used_mib']:.0f} MiB = {m['used_copies']:.2f} |")
p, q = memory["private"], memory["pool"]
print(f"pooled / private: PSS {q['pss_copies'] / p['pss_copies']:.3f}x, host anon + shmem {q['used_copies'] / p['used_copies']:.3f}x")

print()
print("## Making the bytes readable: p50 / p99 in microseconds (target p99 <= 200 at every size)")
print("| size | pools get, Rust | pools get, Python | shared_memory attach, Python | cache GET (HTTP), Python |")
print("|---|---|---|---|---|")
def cell(r):
    if "refused" in r:
        return "refused: " + r["refused"].split("\n")[0][:60]
    return f"{r['p50_us']:.1f} / {r['p99_us']:.1f}"
for size in ("4KiB", "1MiB", "256MiB"):
    row = latency[size]
    r = rust[("get", size)]
    print(f"| {size} | {float(r['p50_us']):.1f} / {float(r['p99_us']):.1f} | {cell(row['pool_get'])} | "
          f"{cell(row['shm_attach'])} | {cell(row['cache_get'])} |")
print("ratios, pools get (Python) p99 over the peer's:")
for size in ("4KiB", "1MiB", "256MiB"):
    row = latency[size]
    ours = row["pool_get"]["p99_us"]
    shm = row["shm_attach"]["p99_us"]
    cache = row["cache_get"].get("p99_us")
    cache_text = f"{ours / cache:.3f}x cache GET" if cache else "cache refused it"
    print(f"  {size}: {ours / shm:.2f}x shared_memory attach, {cache_text}")

print()
print("## Put of 256 MiB, hashing included (target >= 1 GB/s): median / best GB/s")
for what, label in (("put_bytes", "put from bytes (copied into a memfd)"),
                    ("put_memfd", "put from a memfd (adopted, hashed)"),
                    ("memcpy", "memcpy of the same bytes (peer)")):
    r = rust[(what, "256MiB")]
    print(f"- {label}: {float(r['median_gb_s']):.2f} / {float(r['best_gb_s']):.2f}")
print(f"- BLAKE3 alone, one thread: {float(rust[('blake3', '256MiB')]['gb_s']):.2f}")
mc = float(rust[("memcpy", "256MiB")]["median_gb_s"])
print(f"ratios to memcpy: from bytes {float(rust[('put_bytes', '256MiB')]['median_gb_s']) / mc:.2f}x, "
      f"from a memfd {float(rust[('put_memfd', '256MiB')]['median_gb_s']) / mc:.2f}x")
EOF
