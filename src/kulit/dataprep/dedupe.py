"""Near-duplicate photos: 64-bit DCT pHashes over the 8 flips and quarter turns, grouped
with exact (sha256) copies by union-find. Torch-free; `kulit data` groups before it splits, so
every copy of a photo lands on one side of the split."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Protocol, cast

import numpy as np
from PIL import Image

# Hamming distance (of 64 bits, best of the 8 flips/turns) at or under which two photos are near
# duplicates. Tuned on skin8 by eye: every pair at 0-4 bits is the same photo (re-encoded,
# resized, recoloured, flipped); at 6 bits 5 of 6 pairs are, the sixth two look-alike melanoma
# photos of one class; at 8 bits 4 of 6 pairs are different photos, some from different classes.
PHASH_THRESHOLD = 6


class Hashed(Protocol):
    """What grouping needs of an inspected file."""

    @property
    def file(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def phashes(self) -> tuple[int, ...]: ...


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: `m @ x` transforms a length-n signal."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return cast("np.ndarray", m)


_DCT32 = _dct_matrix(32)
_SIGN8 = (-1.0) ** np.arange(8)
_BIT_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def _bits(block: np.ndarray) -> int:
    flags = (block > np.median(block)).ravel()
    return int(np.bitwise_or.reduce(_BIT_WEIGHTS[flags], initial=np.uint64(0)))


def dihedral_phashes(gray32: np.ndarray) -> tuple[int, ...]:
    """64-bit DCT pHashes of a 32x32 grey image under all 8 flips and quarter turns.

    Flipping an image negates its odd DCT frequencies along that axis and a transpose transposes
    the coefficients, so one DCT gives all 8 variants exactly. Identity comes first.
    """
    coeffs = (_DCT32 @ gray32.astype(np.float64) @ _DCT32.T)[:8, :8]
    variants = []
    for transpose in (False, True):
        base = coeffs.T if transpose else coeffs
        for flip_rows in (False, True):
            for flip_cols in (False, True):
                c = base
                if flip_rows:
                    c = c * _SIGN8[:, None]
                if flip_cols:
                    c = c * _SIGN8[None, :]
                variants.append(_bits(c))
    return tuple(variants)


def image_phashes(img: Image.Image) -> tuple[int, ...]:
    """The 8 dihedral pHashes of a decoded PIL image."""
    # 16/32-bit greyscale would clip in "L"; pHash ignores intensity scale, so keep it as float
    with warnings.catch_warnings():  # palette + transparency: the grey values are what we hash
        warnings.filterwarnings("ignore", "Palette images with Transparency", UserWarning)
        grey = img.convert("F") if img.mode.startswith(("I", "F")) else img.convert("L")
    grey = grey.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return dihedral_phashes(np.asarray(grey, dtype=np.float64))


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element (numpy >= 2 has it built in; a byte table otherwise)."""
    if hasattr(np, "bitwise_count"):
        return cast("np.ndarray", np.bitwise_count(x))
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return cast(
        "np.ndarray", _POP8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8))


def _phash_blocks(phashes: Sequence[Sequence[int]]) -> Iterable[tuple[int, np.ndarray]]:
    """Yield (first row, distances of a block of rows to every image), bounded memory."""
    h = np.array(phashes, dtype=np.uint64).reshape(len(phashes), 8)
    n = len(h)
    rows = max(1, 4_000_000 // (8 * max(n, 1)))  # about 32 MB of XORs per block
    ident = h[:, 0]
    for start in range(0, n, rows):
        block = h[start : start + rows]
        yield start, _popcount(block[:, :, None] ^ ident[None, None, :]).min(axis=1)


def phash_distances(phashes: Sequence[Sequence[int]]) -> np.ndarray:
    """n x n Hamming distances, each the best over the 8 flips/turns of either image."""
    n = len(phashes)
    dist = np.empty((n, n), dtype=np.uint8)
    for start, d in _phash_blocks(phashes):
        dist[start : start + len(d)] = d
    return cast("np.ndarray", np.minimum(dist, dist.T))


def near_pairs(phashes: Sequence[Sequence[int]], threshold: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) within `threshold` bits, without holding the n x n matrix."""
    pairs: set[tuple[int, int]] = set()
    for start, d in _phash_blocks(phashes):
        for r, c in zip(*np.nonzero(d <= threshold), strict=True):
            i, j = start + int(r), int(c)
            if i != j:
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def group_duplicates(
    checks: Sequence[Hashed], threshold: int = PHASH_THRESHOLD
) -> list[list[int]]:
    """Group usable files that are exact (same sha256) or near (pHash) copies; index lists."""
    n = len(checks)
    uf = _UnionFind(n)
    first_by_sha: dict[str, int] = {}
    for i, c in enumerate(checks):
        j = first_by_sha.setdefault(c.sha256, i)
        if j != i:
            uf.union(j, i)
    if n > 1 and threshold >= 0:
        for i, j in near_pairs([c.phashes for c in checks], threshold):
            uf.union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: checks[g[0]].file)
