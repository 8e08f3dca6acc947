"""Decompress in a thread while the caller writes files: `tar --zstd -x` runs zstd as a second process.

Unpacking a Kata release one thread at a time decompresses, then writes, then decompresses:
half the time one core idles. Prefetch reads the decompressed stream ahead in its own thread
(zstandard releases the GIL while it decompresses) through a bounded queue, so memory stays at
most DEPTH blocks of CHUNK bytes, and hands it to tarfile as a plain read-only stream.
"""

from __future__ import annotations

import queue
import threading

CHUNK = 1 << 20
DEPTH = 8


class Prefetch:
    """A read-only stream over `raw` (anything with read(n)), read ahead in a daemon thread."""

    def __init__(self, raw, chunk: int = CHUNK, depth: int = DEPTH):
        self._raw = raw
        self._chunk = chunk
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._buf = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._run, name="nodeagent-decompress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                block = self._raw.read(self._chunk)
                self._put(block)
                if not block:
                    return
        except BaseException as exc:  # a corrupt stream: raised in the reader, where tarfile sees it
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (all that is left for n < 0); b"" at the end.

        Like a raw stream it may return fewer than `n` bytes (tarfile reads on until it has what
        it asked for), so a whole decompressed block is handed over without another copy.
        """
        if n < 0:
            return b"".join(iter(lambda: self.read(1 << 30), b""))
        if not self._buf:
            if self._done:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
                return b""
            if len(item) <= n:
                return item
            self._buf = memoryview(item)
        out, self._buf = self._buf[:n], self._buf[n:]
        return bytes(out)

    def close(self) -> None:
        """Stop the thread (an early exit, e.g. a refused member, leaves it blocked otherwise)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def __del__(self) -> None:
        self._stop.set()
