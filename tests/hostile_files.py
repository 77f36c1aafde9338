"""Small hostile image files built byte by byte: thin strips, bombs, bad chunks."""

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


# The security audit's files, which used to take the server's memory or time (each builder
# takes a size, so the tests use small ones and benchmarks/hostile.py the audit's).

def png16(w: int, h: int) -> bytes:
    """A 16-bit grey PNG of zeros (the audit's 6324 x 6324 is 78 KB)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + 2 * w)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def truncated_png(w: int, h: int) -> bytes:
    """An RGBA PNG cut in the middle of its pixel data (no IEND)."""
    data = png(w, h, colour=6)
    return data[: len(data) // 2]


def chunk_flood(n: int) -> bytes:
    """A 4x4 PNG after n unknown ancillary chunks, and its pixels in n one-byte IDAT chunks."""
    comp = zlib.compress(b"\0" * (1 + 4 * 3) * 4, 9)
    idats = b"".join(chunk(b"IDAT", comp[i: i + 1]) for i in range(len(comp)))
    idats += b"".join(chunk(b"IDAT", b"") for _ in range(n))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"prIv", b"x") * n + idats + chunk(b"IEND", b""))


def ico_wrapping(png_bytes: bytes) -> bytes:
    """An ICO file whose one image is the given PNG (Pillow decodes it inside Image.open)."""
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png_bytes), 22)
    return struct.pack("<HHH", 0, 1, 1) + entry + png_bytes


def bmp_rle8(w: int, h: int) -> bytes:
    """An 8-bit RLE BMP: every row one run of w/255 runs, then end of bitmap."""
    runs = bytearray()
    for _ in range(h):
        left = w
        while left:
            n = min(255, left)
            runs += bytes([n, 1])
            left -= n
        runs += b"\0\0"  # end of line
    runs += b"\0\1"  # end of bitmap
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(runs), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(runs), 0, 0, offset)
    return head + info + palette + bytes(runs)


def _jpeg(img: object, **kw: object) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)  # type: ignore[attr-defined]
    return buf.getvalue()


def many_scan_jpeg(side: int, scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has `scans` scans (libjpeg warns
    about the bogus progression and decodes every one: time grows with scans x pixels)."""
    from PIL import Image

    data = _jpeg(Image.new("RGB", (side, side), (150, 110, 90)), progressive=True, quality=90)
    sos = data.rfind(b"\xff\xda")
    last = data[sos:-2]  # the last scan: its SOS header and entropy-coded data, before EOI
    have = data.count(b"\xff\xda")
    return data[:-2] + last * max(0, scans - have) + b"\xff\xd9"


def marker_flood(n: int, fill: int = 0) -> bytes:
    """A small JPEG with n COM segments and `fill` 0xFF fill bytes before its first marker
    after SOI (both are parsed byte by byte by Pillow's JPEG plugin)."""
    from PIL import Image

    data = _jpeg(Image.new("RGB", (64, 64), (150, 110, 90)))
    com = b"\xff\xfe\x00\x03x"
    return data[:2] + b"\xff" * fill + com * n + data[2:]


def cmyk_progressive_jpeg(side: int) -> bytes:
    """A progressive CMYK JPEG (libjpeg keeps every coefficient of a progressive file: 8 bytes a
    pixel for four components, whatever the draft scale)."""
    from PIL import Image

    return _jpeg(Image.new("CMYK", (side, side), (10, 40, 60, 5)), progressive=True, quality=50)


def webp_lossless(side: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (150, 110, 90)).save(buf, "WEBP", lossless=True, method=0)
    return buf.getvalue()


def webp_animated(side: int, frames: int = 2) -> bytes:
    import io

    from PIL import Image

    imgs = [Image.new("RGB", (side, side), (150, 110 + i, 90)) for i in range(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, "WEBP", save_all=True, append_images=imgs[1:], lossless=True, method=0)
    return buf.getvalue()
