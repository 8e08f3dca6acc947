"""artifacts.decompress: every compression is recognised by its magic bytes (never the name),
each read returns at most what was asked for, and an xz dictionary or zstd window over the cap is
refused with a hint. Streams are made by the real xz/zstd/bzip2/gzip tools."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import pytest

from nodeagent.artifacts.decompress import Bounds, open_decompressed
from nodeagent.errors import ArtifactError

BOUNDS = Bounds(xz_memory=64 << 20, zstd_window=8 << 20)
DATA = os.urandom(200_000) + b"\0" * 3_000_000  # incompressible, then very compressible


def compress(tool: list[str], data: bytes) -> bytes:
    if not shutil.which(tool[0]):
        pytest.skip(f"{tool[0]} is not installed")
    return subprocess.run([*tool, "-c"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("tool", [["xz", "-6"], ["zstd", "-3", "-q"], ["bzip2", "-9"], ["gzip", "-6"], None])
def test_each_compression_gives_back_the_bytes_in_bounded_reads(tool):
    stream = DATA if tool is None else compress(tool, DATA)
    reader = open_decompressed(io.BytesIO(stream), "a.tar", BOUNDS)
    out, largest = bytearray(), 0
    while True:
        block = reader.read(10240)  # what tarfile asks for
        if not block:
            break
        largest = max(largest, len(block))
        out += block
    assert bytes(out) == DATA and largest <= 10240


def test_an_xz_dictionary_over_the_cap_is_refused_with_a_hint():
    stream = compress(["xz", "--lzma2=preset=6,dict=192MiB"], b"x" * 1000)
    reader = open_decompressed(io.BytesIO(stream), "big.tar.xz", BOUNDS)
    with pytest.raises(ArtifactError, match=r"refusing big.tar.xz: it needs more than 64 MiB .*xz dictionary") as exc:
        reader.read(10240)
    assert "xz -6" in exc.value.hint


def test_a_zstd_window_over_the_cap_is_refused_with_a_hint():
    stream = compress(["zstd", "-q", "--long=27", "--ultra", "-22"], os.urandom(1 << 20) * 20)
    reader = open_decompressed(io.BytesIO(stream), "big.tar.zst", BOUNDS)
    with pytest.raises(ArtifactError, match=r"refusing big.tar.zst: it needs more than 8 MiB .*zstd window"):
        while reader.read(1 << 16):
            pass


def test_a_truncated_xz_stream_is_an_error_not_a_short_file():
    stream = compress(["xz", "-6"], DATA)
    reader = open_decompressed(io.BytesIO(stream[: len(stream) // 2]), "cut.tar.xz", BOUNDS)
    with pytest.raises(EOFError):
        while reader.read(1 << 16):
            pass
