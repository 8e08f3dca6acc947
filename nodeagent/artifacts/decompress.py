"""Open a possibly compressed stream with bounded memory, whatever the compression.

tarfile's own "r|*" decompresses each 10 KiB read in one call with no output limit (a
bzip2 block of zeros expands to 45 MB, so a 1 KB .tar.bz2 can ask for gigabytes) and gives
liblzma no memory limit (a .tar.xz can declare a 1.5 GiB dictionary). Here every reader
returns at most what was asked for, xz runs with a memlimit and zstd with a window cap.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from dataclasses import dataclass

from nodeagent.errors import ArtifactError

XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZ2_MAGIC = b"BZh"
GZ_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
MEMORY_HINT = ("no release tarball needs this much; recompress it with a standard preset "
               "(xz -6, zstd -19) or use the upstream artifact")


@dataclass(frozen=True)
class Bounds:
    """Decompression memory caps in bytes."""

    xz_memory: int
    zstd_window: int


def open_decompressed(fh: io.RawIOBase, label: str, bounds: Bounds):
    """A file object yielding the decompressed bytes of `fh` (plain tar passes through)."""
    buffered = io.BufferedReader(fh, CHUNK)
    head = buffered.peek(8)[:8]
    if head.startswith(XZ_MAGIC):
        return io.BufferedReader(_XzReader(buffered, label, bounds.xz_memory), CHUNK)
    if head.startswith(ZSTD_MAGIC):
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=bounds.zstd_window)
        return _ZstdErrors(dctx.stream_reader(buffered, read_size=CHUNK), label, bounds.zstd_window)
    if head.startswith(BZ2_MAGIC):
        return bz2.BZ2File(buffered)  # reads are bounded (max_length); bzip2 itself needs < 4 MiB
    if head.startswith(GZ_MAGIC):
        return gzip.GzipFile(fileobj=buffered)
    return buffered


def _too_big(label: str, what: str, cap: int) -> ArtifactError:
    return ArtifactError(f"refusing {label}: it needs more than {cap >> 20} MiB of memory to decompress ({what})",
                         MEMORY_HINT)


class _XzReader(io.RawIOBase):
    """xz with liblzma's memlimit (lzma.LZMAFile cannot take one); one stream, like tar's."""

    def __init__(self, fh, label: str, memlimit: int):
        self._fh = fh
        self._label = label
        self._memlimit = memlimit
        self._dec = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=memlimit)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self._read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def _read(self, size: int) -> bytes:
        while not self._dec.eof:
            chunk = b""
            if self._dec.needs_input:
                chunk = self._fh.read(CHUNK)
                if not chunk:
                    raise EOFError("the xz stream ended before its end marker")
            try:
                out = self._dec.decompress(chunk, size)
            except lzma.LZMAError as exc:
                if "memory" in str(exc).lower():
                    raise _too_big(self._label, "an xz dictionary over the limit", self._memlimit) from None
                raise
            if out:
                return out
        return b""


class _ZstdErrors(io.RawIOBase):
    """Turns zstd's "too much memory" into a refusal with a hint; other errors pass through."""

    def __init__(self, reader, label: str, window: int):
        self._reader = reader
        self._label = label
        self._window = window

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        try:
            data = self._reader.read(len(buf))
        except Exception as exc:  # zstandard.ZstdError
            if "memory" in str(exc).lower() or "window" in str(exc).lower():
                raise _too_big(self._label, "a zstd window over the limit", self._window) from None
            raise
        buf[: len(data)] = data
        return len(data)
