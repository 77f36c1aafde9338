"""Small hostile image files built byte by byte (issue 14): thin strips, bombs, bad chunks."""

from __future__ import annotations

import struct
import zlib


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w: int, h: int, *, before_idat: bytes = b"", after_idat: bytes = b"",
        ihdr_len: int = 13, colour: int = 2) -> bytes:
    """A valid-looking PNG of w x h zero pixels: a few hundred bytes whatever the size (the
    rows are compressed in one stream, so huge sizes stay tiny on disk)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    ihdr = (ihdr + b"\0" * max(0, ihdr_len - 13))[:ihdr_len]
    channels = {0: 1, 2: 3, 6: 4}[colour]
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + w * channels)
    if w * h <= 50_000_000:
        idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    else:  # too big to have pixels decoded anyway: a token stream
        idat = comp.compress(row[: 1 << 16]) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + before_idat + chunk(b"IDAT", idat)
            + after_idat + chunk(b"IEND", b""))


def ztxt_bomb(where: str = "before") -> bytes:
    """A ~3 KB PNG whose compressed text chunk inflates to 3 MB (over Pillow's 1 MB cap)."""
    text = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * 3_000_000, 9))
    return png(4, 4, **{f"{where}_idat": text})


def itxt_bomb() -> bytes:
    text = chunk(b"iTXt", b"Comment\0\1\0\0\0" + zlib.compress(b"b" * 3_000_000, 9))
    return png(4, 4, before_idat=text)


def bad_ihdr() -> bytes:
    """An IHDR chunk whose length is not 13 (found by atheris)."""
    return png(4, 4, ihdr_len=14)


def short_ihdr() -> bytes:
    return png(4, 4, ihdr_len=8)
