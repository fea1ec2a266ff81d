#!/usr/bin/env python3
"""The Python side of bench/pools.sh, against a running `sutazai-top serve`.

    pools_bench.py memory POOLS_SOCKET WORKDIR    8 processes x the same 256 MiB blob
    pools_bench.py latency POOLS_SOCKET API_SOCKET   get p50/p99 against the peers

memory: 8 processes each need the same 256 MiB blob (a file). Private: each reads it into
memory of its own. Pool: one puts the file (the store reads it into a sealed memfd), then
each gets it and touches every page. Measured while they hold it, against the same
processes idle just before: the sum of their PSS (/proc/PID/smaps_rollup) and the host's
anonymous plus shared memory (AnonPages + Shmem in /proc/meminfo: the store's copy included);
each as a multiple of one copy.

latency: p50/p99 of making an object's bytes readable, at 4 KiB, 1 MiB and 256 MiB: the
pools' get (a round trip, a descriptor, a read-only map), multiprocessing.shared_memory
attaching an existing segment by name (open + map, no round trip), and the engine's cache
GET /api/cache/{key} (a connection per request, as the API serves; the bytes are copied
through HTTP).
"""
import json
import mmap
import os
import socket
import subprocess
import sys
import time
from multiprocessing import shared_memory

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
import sutazai_pools  # noqa: E402

BLOB = 256 << 20
PROCESSES = 8
PAGE = mmap.PAGESIZE


def pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def used_kib():
    """The host's anonymous and shared memory (private copies are anonymous pages, the
    pool's objects shmem). MemAvailable would count the page cache coming and going too,
    which on a shared machine swings by more than a copy."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    return info["AnonPages"] + info["Shmem"]


def touch(view):
    """Read one byte per page, so every page is mapped in (no copy)."""
    total = 0
    for offset in range(0, len(view), PAGE):
        total += view[offset]
    return total


def worker(mode, blob, sock):
    """One of the 8: ready, then on a line from stdin load the blob, say so, hold it."""
    client = sutazai_pools.Client(sock) if mode == "pool" else None
    print("ready", flush=True)
    line = sys.stdin.readline().strip()
    if mode == "private":
        held = bytearray(BLOB)
        with open(blob, "rb") as f:
            f.readinto(held)
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        touch(held)
    else:
        if line == "put":
            with open(blob, "rb") as f:
                object_id = client.put_fd(f.fileno()).id
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            print(object_id, flush=True)
            line = sys.stdin.readline().strip()
        held = client.get(line)
        touch(held)
    print("loaded", flush=True)
    sys.stdin.readline()


def memory(sock, workdir):
    blob = os.path.join(workdir, "blob.bin")
    with open(blob, "wb") as f:
        for _ in range(BLOB >> 20):
            f.write(os.urandom(1 << 20))
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    results = {}
    for mode in ("private", "pool"):
        procs = [subprocess.Popen([sys.executable, __file__, "worker", mode, blob, sock],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(PROCESSES)]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        time.sleep(1)
        before_pss = sum(pss_kib(p.pid) for p in procs)
        before_used = used_kib()
        if mode == "pool":
            procs[0].stdin.write("put\n")
            procs[0].stdin.flush()
            object_id = procs[0].stdout.readline().strip()
            for p in procs:
                p.stdin.write(object_id + "\n")
                p.stdin.flush()
        else:
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
        for p in procs:
            assert p.stdout.readline().strip() == "loaded"
        time.sleep(1)
        pss = sum(pss_kib(p.pid) for p in procs) - before_pss
        used = used_kib() - before_used
        results[mode] = {"pss_mib": pss / 1024, "used_mib": used / 1024,
                         "pss_copies": pss * 1024 / BLOB, "used_copies": used * 1024 / BLOB}
        for p in procs:
            p.stdin.write("done\n")
            p.stdin.flush()
            p.wait()
        time.sleep(1)
    os.unlink(blob)
    print(json.dumps(results))


def percentiles(samples):
    samples.sort()
    return {"p50_us": samples[len(samples) // 2] * 1e6, "p99_us": samples[len(samples) * 99 // 100] * 1e6}


class Http:
    """HTTP/1.1 requests on the API's Unix socket. The API closes each connection after one
    request, so each request connects (as curl --unix-socket does): that is its cost."""

    def __init__(self, path):
        self.path = path

    def request(self, method, path, body=b""):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)
        self.buf = b""
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
        try:
            self.sock.sendall(head.encode() + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole body was sent: its answer says why
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return 0, b"connection closed before an answer"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self.buf += self.sock.recv(max(1 << 20, length - len(self.buf)))
        body = self.buf[:length]
        self.sock.close()
        return status, body


def latency(sock, api_sock):
    sizes = [(4 << 10, "4KiB", 3000), (1 << 20, "1MiB", 2000), (256 << 20, "256MiB", 1000)]
    client = sutazai_pools.Client(sock)
    http = Http(api_sock)
    results = {}
    for size, name, rounds in sizes:
        data = os.urandom(size)
        row = {}
        object_id = client.put(data).id
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            view = client.get(object_id)
            view[0]
            samples.append(time.perf_counter() - start)
            view.release()
            client.release(object_id)
        row["pool_get"] = percentiles(samples)

        segment = shared_memory.SharedMemory(create=True, size=size)
        segment.buf[:size] = data
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            attached = shared_memory.SharedMemory(name=segment.name)
            attached.buf[0]
            samples.append(time.perf_counter() - start)
            attached.close()
        segment.close()
        segment.unlink()
        row["shm_attach"] = percentiles(samples)

        status, body = http.request("PUT", f"/api/cache/bench-{name}", data)
        if status // 100 != 2:
            row["cache_get"] = {"refused": f"{status} {body.decode(errors='replace')[:120]}"}
        else:
            samples = []
            for _ in range(rounds):
                start = time.perf_counter()
                status, body = http.request("GET", f"/api/cache/bench-{name}")
                samples.append(time.perf_counter() - start)
                assert status == 200 and len(body) == size, status
            row["cache_get"] = percentiles(samples)
        results[name] = row
    print(json.dumps(results))


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(*sys.argv[2:5])
    elif sys.argv[1] == "memory":
        memory(sys.argv[2], sys.argv[3])
    else:
        latency(sys.argv[2], sys.argv[3])
