"""The Python client against a real store: run by tests/pools.rs with SUTAZAI_POOLS_SOCKET set
to the socket of an engine it started (`python3 test_sutazai_pools.py`)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sutazai_pools  # noqa: E402

SOCKET = os.environ.get("SUTAZAI_POOLS_SOCKET", sutazai_pools.DEFAULT_SOCKET)


def maps_of():
    with open("/proc/self/maps") as f:
        return f.read()


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.a = sutazai_pools.Client(SOCKET)
        self.b = sutazai_pools.Client(SOCKET)

    def tearDown(self):
        self.a.close()
        self.b.close()

    def test_the_same_bytes_are_one_object_read_in_place(self):
        for size in (0, 10, 1 << 20):  # on the socket, and through a memfd
            data = os.urandom(size)
            first = self.a.put(data)
            second = self.b.put(data)
            self.assertEqual(first.id, second.id)
            self.assertEqual(first.size, size)
            self.assertTrue(second.deduplicated)
            view = self.b.get(first.id)
            self.assertEqual(bytes(view), data)
            self.assertTrue(view.readonly)
            if size:
                self.assertIn("/memfd:sutazai-pool-", maps_of())
            view.release()
            self.b.release(first.id)

    def test_a_view_cannot_be_written(self):
        put = self.a.put(b"immutable" * 100)
        view = self.b.get(put.id)
        with self.assertRaises(TypeError):
            view[0] = 0
        self.assertEqual(bytes(view[:9]), b"immutable")

    def test_a_file_is_put_from_its_descriptor(self):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sutazai-pools-test-%d" % os.getpid())
        with open(path, "wb") as f:
            f.write(b"tokenizer" * 1000)
        try:
            with open(path, "rb") as f:
                put = self.a.put_fd(f.fileno())
        finally:
            os.unlink(path)
        self.assertEqual(bytes(self.b.get(put.id)), b"tokenizer" * 1000)

    def test_a_segment_is_filled_sealed_and_shared(self):
        self.assertTrue(self.a.create_pool("py-shared", 1 << 20, "zlib"))
        self.assertFalse(self.a.create_pool("py-shared", 1 << 20, "zlib"))
        segment = self.a.allocate(4096, "py-shared")
        segment.view[:5] = b"hello"
        put = self.a.seal(segment)
        self.assertEqual(put.size, 4096)
        view = self.b.get(put.id)
        self.assertEqual(bytes(view[:5]), b"hello")
        pools = {p["pool"]: p for p in self.b.stats()}
        self.assertEqual(pools["py-shared"]["compression"], "zlib")
        self.assertEqual(pools["py-shared"]["objects"], "1")

    def test_refusals_say_why_and_the_connection_stays(self):
        with self.assertRaisesRegex(sutazai_pools.Refused, "no object 00"):
            self.a.get("00" * 32)
        with self.assertRaisesRegex(sutazai_pools.Refused, "no pool"):
            self.a.put(b"x", pool="nowhere")
        with self.assertRaisesRegex(sutazai_pools.Refused, "cannot fit"):
            self.a.allocate(1 << 40)
        with self.assertRaisesRegex(sutazai_pools.Refused, "no segment 999"):
            self.a.seal(sutazai_pools.Segment(999, "", os.memfd_create("x"), 0))
        self.assertEqual(bytes(self.a.get(self.a.put(b"still here").id)), b"still here")


if __name__ == "__main__":
    unittest.main(verbosity=2)
