"""Cheap checks on an upload's bytes before a decoder walks them, and the one slot for big
decodes that the sandbox's workers share: what keeps a hostile file from costing seconds or
hundreds of megabytes (`kulit.serving.preprocess.decode_image` calls them)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kulit.errors import ImageError

_take: Callable[[], None] | None = None


def set_big_decode_slot(take: Callable[[], None] | None) -> None:
    """A decode worker's wait for the slot it shares with its siblings (`take()`, held until its
    job ends), called before a decode of more than preprocess.BIG_DECODE_PIXELS; None
    (in-process decoding): no slot."""
    global _take
    _take = take


def take_big_slot() -> None:
    """Wait for the big-decode slot, if this process has one (a sandbox worker)."""
    if _take is not None:
        _take()


# A progressive JPEG's decoding time grows with its scans times its pixels (libjpeg keeps
# decoding a bogus progression): 2,000 scans of 1500x1500 took over a second. Cameras write one
# scan, web encoders about ten; these caps (~0.3 s of one core at most) are far above either.
MAX_JPEG_SCANS = 100
MAX_SCAN_PIXELS = 500_000_000  # scans x width x height: ten scans of 40 MP, 40 of 12 MP


def refuse_many_scans(data: bytes, size: tuple[int, int], name: str = "upload") -> None:
    """ImageError ("unreadable") for a JPEG with more scans than any encoder writes, or with
    more scans x pixels than MAX_SCAN_PIXELS (counts every SOS marker: stuffing means FF DA
    never occurs inside entropy-coded data)."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS or scans * size[0] * size[1] > MAX_SCAN_PIXELS:
        raise ImageError(f"{name}: unreadable JPEG ({scans:,} scans of {size[0]}x{size[1]} "
                         f"pixels: too costly to decode)", "unreadable")


# Pillow walks JPEG markers, fill bytes and PNG chunks one at a time in Python: a 5 MB run of
# 0xFF fill bytes or 200,000 markers or chunks takes seconds. No camera writes more
# than a few of each; these caps are far above any real file's.
MAX_FILL_RUN = 65_536  # 0xFF bytes in a row (an ICC profile may hold short runs)
MAX_JPEG_MARKERS = 20_000
MAX_PNG_CHUNKS = 20_000


def refuse_floods(data: bytes, name: str = "upload") -> None:
    """ImageError ("unreadable") for a JPEG or PNG made of markers, fill bytes or chunks."""
    if data[:2] == b"\xff\xd8":
        if b"\xff" * MAX_FILL_RUN in data:
            raise ImageError(f"{name}: unreadable JPEG (a flood of fill bytes)", "unreadable")
        # an upper bound in two C passes: every 0xFF that is not byte stuffing (FF 00)
        if data.count(b"\xff") - data.count(b"\xff\x00") > MAX_JPEG_MARKERS:
            arr = np.frombuffer(data, np.uint8)
            nxt = arr[1:]
            markers = np.count_nonzero((arr[:-1] == 0xFF) & (nxt >= 0xC0) & (nxt != 0xFF)
                                       & ((nxt < 0xD0) | (nxt > 0xD7)))
            if markers > MAX_JPEG_MARKERS:
                raise ImageError(f"{name}: unreadable JPEG (a flood of {markers:,} markers)",
                                 "unreadable")
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 12 * MAX_PNG_CHUNKS:
        pos, n = 8, 0
        while pos + 8 <= len(data) and n <= MAX_PNG_CHUNKS:
            pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
            n += 1
        if n > MAX_PNG_CHUNKS:
            raise ImageError(f"{name}: unreadable PNG (over {MAX_PNG_CHUNKS:,} chunks)",
                             "unreadable")
