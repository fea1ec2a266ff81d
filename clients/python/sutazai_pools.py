"""Client of sutazai-top's memory pools, standard library only (Python 3.9+, Linux).

Objects are immutable and content-addressed: ``put`` returns an id (the BLAKE3 hash, in hex);
an agent that puts the same bytes gets the same id, and the store keeps one copy. ``get``
maps the store's own memory read-only: nothing is copied, whatever the size.

    import sutazai_pools
    pools = sutazai_pools.Client()                  # /run/sutazai-top/pools.sock
    put = pools.put(open("weights.bin", "rb").read())
    view = pools.get(put.id)                        # a read-only memoryview, zero-copy
    print(put.id, put.deduplicated, len(view))
    view.release(); pools.release(put.id)

References belong to the connection: when the process exits, what it held is released.
"""

import mmap
import os
import socket
import struct
from collections import namedtuple

DEFAULT_SOCKET = "/run/sutazai-top/pools.sock"

OP_PUT, OP_GET, OP_RELEASE, OP_STATS = 1, 2, 3, 4
OP_PUT_FD, OP_ALLOCATE, OP_SEAL, OP_CREATE_POOL = 5, 6, 7, 8
STATUS_OK = 0
CODECS = {"lz4": 0, "zlib": 1, "none": 2}
# Puts at least this large go through a memfd the store adopts, not through the socket.
MEMFD_PUT_FROM = 64 * 1024

Put = namedtuple("Put", "id size deduplicated")


class Refused(Exception):
    """The store said no; the message says why (full, quota, unknown id...)."""


class StoreRestarted(ConnectionError):
    """The store's connection ended: it stopped or restarted, and the objects this client
    held are gone from it. Connect again and put them again; views already made stay
    readable."""

    def __init__(self):
        super().__init__(
            "the store restarted or stopped: connect again and put your objects again")


class Segment:
    """A writable segment from ``allocate``: fill ``view`` (or write through ``fd``), then
    ``Client.seal`` it to share it read-only."""

    def __init__(self, number, pool, fd, size):
        self.number, self.pool, self.fd, self.size = number, pool, fd, size
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) if size else None
        self.view = memoryview(self._map) if self._map else memoryview(b"")

    def close(self):
        """Unmap and close: the store seals only what no one maps writable."""
        self.view.release()
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _pool_field(pool):
    name = pool.encode()
    if len(name) > 255:
        raise ValueError("a pool name is at most 255 bytes")
    return bytes([len(name)]) + name


def _put_of(body):
    if len(body) != 41:
        raise Refused("a malformed reply to a put")
    return Put(body[:32].hex(), struct.unpack("<Q", body[32:40])[0], body[40] == 1)


class Client:
    def __init__(self, path=DEFAULT_SOCKET):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def put(self, data, pool=""):
        """Store ``data`` (bytes-like) once per content; returns ``Put(id, size, deduplicated)``."""
        data = memoryview(data)
        if len(data) >= MEMFD_PUT_FROM:
            fd = os.memfd_create("sutazai-pool-put", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                with open(fd, "wb", closefd=False) as f:
                    f.write(data)
                return self.put_fd(fd, pool)
            finally:
                os.close(fd)
        self._send(OP_PUT, _pool_field(pool) + bytes(data))
        return _put_of(self._reply())

    def put_fd(self, fd, pool=""):
        """Store what ``fd`` holds: a memfd the store can seal is kept as it is (no copy, and
        no one can write it after); a file or pipe is read."""
        body = _pool_field(pool)
        self._sendmsg(struct.pack("<IB", len(body) + 1, OP_PUT_FD) + body, [fd])
        return _put_of(self._reply())

    def get(self, object_id):
        """Object ``object_id`` (hex) as a read-only memoryview of the store's memory."""
        self._send(OP_GET, bytes.fromhex(object_id))
        size, fd = self._reply_with_fd()
        try:
            if size == 0:
                return memoryview(b"")
            return memoryview(mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ))
        finally:
            os.close(fd)  # the map keeps the memory

    def release(self, object_id):
        self._send(OP_RELEASE, bytes.fromhex(object_id))
        self._reply()

    def allocate(self, size, pool=""):
        """``allocate_memory``: a writable segment counted against the pool and this agent."""
        self._send(OP_ALLOCATE, struct.pack("<Q", size) + _pool_field(pool))
        number, fd = self._reply_with_fd()
        return Segment(number, pool, fd, size)

    def seal(self, segment):
        """``share_memory``: seal a filled segment into an object any agent can ``get``."""
        segment.close()
        self._send(OP_SEAL, struct.pack("<Q", segment.number) + _pool_field(segment.pool))
        return _put_of(self._reply())

    def create_pool(self, name, size, compression="lz4"):
        """A pool of ``size`` bytes until the store stops; True when created."""
        self._send(OP_CREATE_POOL, struct.pack("<QB", size, CODECS[compression]) + name.encode())
        return self._reply() == b"\x01"

    def stats(self):
        """One dict per pool."""
        self._send(OP_STATS, b"")
        lines = self._reply().decode().splitlines()
        return [dict(kv.split("=", 1) for kv in line.split()) for line in lines]

    def _send(self, op, body):
        try:
            self.sock.sendall(struct.pack("<IB", len(body) + 1, op) + body)
        except (BrokenPipeError, ConnectionResetError):
            raise StoreRestarted() from None

    def _sendmsg(self, frame, fds):
        try:
            sent = socket.send_fds(self.sock, [frame], fds)
            if sent < len(frame):
                self.sock.sendall(frame[sent:])
        except (BrokenPipeError, ConnectionResetError):
            raise StoreRestarted() from None

    def _exact(self, n, have=b""):
        while len(have) < n:
            try:
                chunk = self.sock.recv(n - len(have))
            except ConnectionResetError:
                raise StoreRestarted() from None
            if not chunk:
                raise StoreRestarted()
            have += chunk
        return have

    def _frame(self, first=b""):
        head = self._exact(5, first[:5])
        length, status = struct.unpack("<IB", head)
        body = self._exact(length - 1, first[5:])
        if status != STATUS_OK:
            raise Refused(body.decode(errors="replace"))
        return body

    def _reply(self):
        return self._frame()

    def _reply_with_fd(self):
        try:
            first, fds, _, _ = socket.recv_fds(self.sock, 13, 1)
        except ConnectionResetError:
            raise StoreRestarted() from None
        if not first:
            raise StoreRestarted()
        try:
            body = self._frame(first)
        except Exception:
            for fd in fds:
                os.close(fd)
            raise
        if len(body) != 8 or not fds:
            for fd in fds:
                os.close(fd)
            raise Refused("a malformed reply: a u64 and a descriptor")
        return struct.unpack("<Q", body)[0], fds[0]
