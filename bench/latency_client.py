#!/usr/bin/env python3
"""Fixed-rate HTTP load on one loopback URL; prints latency percentiles as JSON.

Open loop: request i is due at start + i/rate, and its latency is counted from when it was
due, so a stalled server is not hidden by the client waiting for it (no coordinated
omission). Loopback only.
"""
import http.client
import json
import sys
import time
import urllib.parse


def main():
    url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback URLs only")
    latencies, errors = [], 0
    start = time.monotonic()
    total = int(rate * seconds)
    for i in range(total):
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            conn.request("GET", parts.path or "/")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status != 200:
                errors += 1
                continue
        except OSError:
            errors += 1
            continue
        latencies.append((time.monotonic() - due) * 1000.0)
    latencies.sort()

    def pct(p):
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(p / 100.0 * len(latencies)))]

    print(json.dumps({
        "requests": total,
        "errors": errors,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "mean_ms": sum(latencies) / len(latencies) if latencies else None,
    }))


if __name__ == "__main__":
    main()
