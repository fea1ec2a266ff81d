#!/usr/bin/env python3
"""Sequential GETs to the engine's API over its Unix socket; latency and CPU per request.

Usage: api_client.py SOCKET PID PATH [COUNT]

Each request opens a fresh connection (as `curl --unix-socket` does), so the figure includes
accept and connection setup. CPU per request is the serving process's CPU time
(utime + stime from /proc/PID/stat, all threads, exited ones included) over 3 s of back to
back requests, minus its CPU time over an idle window of the same length right after (the
engine keeps sampling meanwhile), divided by the number of requests in the busy window. Prints one JSON object.
"""
import json
import os
import socket
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
CPU_WINDOW_S = 3.0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def get(sock_path, path):
    """One GET on a fresh connection: (status, body bytes)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    chunks = []
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    s.close()
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def main():
    sock_path, pid, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    for _ in range(5):  # warm-up
        get(sock_path, path)
    latencies, errors, size = [], 0, 0
    for _ in range(count):
        start = time.perf_counter()
        status, body = get(sock_path, path)
        latencies.append((time.perf_counter() - start) * 1000)
        if status != 200:
            errors += 1
        size = len(body)
    # CPU: /proc counts in clock ticks (10 ms), so both windows last CPU_WINDOW_S seconds,
    # long enough that the tick rounding is small next to what they hold.
    cpu0, t0, done = cpu_seconds(pid), time.monotonic(), 0
    while time.monotonic() - t0 < CPU_WINDOW_S:
        get(sock_path, path)
        done += 1
    busy_wall = time.monotonic() - t0
    busy_cpu = cpu_seconds(pid) - cpu0
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    time.sleep(busy_wall)
    idle_cpu = (cpu_seconds(pid) - cpu1) * busy_wall / (time.monotonic() - t1)
    latencies.sort()
    print(json.dumps({
        "path": path,
        "requests": count,
        "errors": errors,
        "body_bytes": size,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1],
        "wall_s": busy_wall,
        "cpu_busy_s": busy_cpu,
        "cpu_idle_s": idle_cpu,
        "cpu_requests": done,
        "cpu_ms_per_request": max(0.0, busy_cpu - idle_cpu) * 1000 / max(done, 1),
    }))


if __name__ == "__main__":
    main()
