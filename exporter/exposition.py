"""Exposition bodies assembled from pieces, some cached across scrapes, plain or gzipped.

A scrape body is a sequence of parts: fresh bytes (live counters, headers) and :class:`Chunk` s that
stay the same for many scrapes (a monitor's settings, an evaluation's scores). Gzip compresses each
chunk once into a raw deflate segment ended by a sync flush (byte-aligned, not final), so a body is
one valid gzip member: header, the segments in order (fresh runs compressed per scrape), an empty
final block, and the CRC-32 and length of the whole text (RFC 1951 3.2.3, RFC 1952 2.3). The cost of
a gzipped scrape then follows the live part of the text, not its whole size.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""Magic, deflate, no flags, no mtime, no extra flags, unknown OS."""
FINAL_BLOCK = b"\x03\x00"
"""An empty final block with fixed Huffman codes: what a raw deflate stream of nothing is."""
MIN_CACHED = 1024
"""Chunks smaller than this go into the fresh run: a segment of their own compresses worse."""


def deflate_segment(data: bytes, level: int) -> bytes:
    """``data`` as raw deflate blocks, byte-aligned and not final, so segments concatenate."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)


class Chunk:
    """Encoded exposition text reused across scrapes; its deflate segment is made on first use."""

    __slots__ = ("_deflated", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._deflated: tuple[int, bytes] | None = None

    def deflated(self, level: int) -> bytes:
        cached = self._deflated
        if cached is None or cached[0] != level:
            cached = self._deflated = (level, deflate_segment(self.data, level))
        return cached[1]


Part = bytes | Chunk


def plain(parts: Iterable[Part]) -> bytes:
    return b"".join(p.data if isinstance(p, Chunk) else p for p in parts)


def gzipped(parts: Iterable[Part], level: int, fresh_level: int) -> bytes:
    """One gzip member of the parts' text; chunks reuse their deflate segments made at ``level``,
    and the text new in this scrape is compressed at ``fresh_level``."""
    out = [GZIP_HEADER]
    fresh: list[bytes] = []
    crc = size = 0
    for part in parts:
        data = part.data if isinstance(part, Chunk) else part
        crc = zlib.crc32(data, crc)
        size += len(data)
        if isinstance(part, Chunk) and len(data) >= MIN_CACHED:
            if fresh:
                out.append(deflate_segment(b"".join(fresh), fresh_level))
                fresh.clear()
            out.append(part.deflated(level))
        else:
            fresh.append(data)
    if fresh:
        out.append(deflate_segment(b"".join(fresh), fresh_level))
    out.append(FINAL_BLOCK)
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(out)
