"""prefetch.py: the read-ahead stream gives back exactly the bytes, errors where they are read, and stops."""

from __future__ import annotations

import io
import os
import threading

import pytest

from nodeagent.artifacts.prefetch import Prefetch


def test_reads_of_any_size_give_back_exactly_the_stream():
    data = os.urandom(3 * (1 << 20) + 12345)
    ahead = Prefetch(io.BytesIO(data), chunk=1 << 16, depth=2)
    got = bytearray()
    sizes = [10240, 1, 70000, 5, (1 << 20) + 3]
    i = 0
    while True:
        block = ahead.read(sizes[i % len(sizes)])
        if not block:
            break
        got += block
        i += 1
    assert bytes(got) == data
    assert ahead.read(10) == b"" and ahead.read() == b""
    ahead.close()


class _Broken(io.RawIOBase):
    def __init__(self):
        self.calls = 0

    def read(self, n=-1):
        self.calls += 1
        if self.calls > 2:
            raise ValueError("corrupt frame")
        return b"x" * n


def test_read_all_and_short_reads():
    data = os.urandom(300_000)
    ahead = Prefetch(io.BytesIO(data), chunk=1 << 16, depth=2)
    first = ahead.read(1 << 20)  # at most one block: a short read, like a raw stream
    assert 0 < len(first) <= 1 << 16 and data.startswith(first)
    assert first + ahead.read() == data
    ahead.close()


def test_a_failure_in_the_stream_is_raised_to_the_reader():
    ahead = Prefetch(_Broken(), chunk=100, depth=1)
    with pytest.raises(ValueError, match="corrupt frame"):
        while ahead.read(1000):
            pass
    ahead.close()


def test_close_stops_the_thread_of_a_reader_that_gave_up_early():
    before = threading.active_count()
    ahead = Prefetch(io.BytesIO(os.urandom(8 << 20)), chunk=1 << 16, depth=1)
    ahead.read(100)
    ahead.close()
    assert threading.active_count() == before
