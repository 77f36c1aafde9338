"""Estimate a photo's skin-type band from its pixels: the individual typology angle (ITA°).

ITA = atan((L* - 50) / b*) in degrees, on CIELAB (D65) of the skin pixels around the lesion:
higher is lighter. Used where a source has no Fitzpatrick labels (skin8, skin8-web, other
conditions) so every source's metrics can be shown per estimated band. Torch-free: numpy and
Pillow; scikit-learn only for Cohen's kappa in `agreement`.

The method (which pixels, which summary) and the two band cut-offs were chosen on atlas-other/'s
Fitzpatrick labels, then checked on atlas/ (`benchmarks/skintone.py`,
benchmarks/results/skintone.json). Agreement with a dermatologist's label is moderate, not exact:
an estimated band describes a group of photos, never one person.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from kulit.dataprep.fitzpatrick import BANDS, band_index
from kulit.errors import ImageError

# Literature ITA° cut-offs (Chardon et al. 1991; Del Bino & Bernerd 2013): > 55 very light,
# 41-55 light, 28-41 intermediate, 10-28 tan, -30-10 brown, < -30 dark; as three bands
# (I-II | III-IV | V-VI) the cut-offs are 41 and 10.
LITERATURE_CUTOFFS = (41.0, 10.0)
# Tuned on atlas-other/ (linearly weighted kappa, 2° grid; benchmarks/skintone.py --tune).
ITA_CUTOFFS = (38.0, 10.0)
THUMB = 96  # pixels a side the photo is reduced to: skin colour needs no detail
MIN_SKIN_PIXELS = 50  # fewer skin pixels than this: no estimate


@dataclass(frozen=True)
class ItaMethod:
    """Which pixels an ITA is read from, and how they are summarised."""

    skin_rule: str = "rgb"  # "rgb" (R > G, R >= B, some chroma) or "ycbcr" (Chai & Ngan)
    ring: float = 0.5  # skip the centre box this fraction of each side (the lesion is usually
    # there) when enough skin is left outside it; 0 = use the whole photo
    drop: float = 0.2  # then drop this share of skin pixels farthest in colour from their median
    percentile: float = 70.0  # ITA percentile of what is left (lesions are darker or redder)


METHOD = ItaMethod()  # chosen on atlas-other by 5-fold cross-validated kappa


@dataclass(frozen=True)
class SkinTone:
    """One photo's estimate: ITA in degrees (None: too little skin found) and its band."""

    ita: float | None
    band: str | None
    skin_share: float  # share of the thumbnail's pixels the skin rule kept


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of 8-bit sRGB pixels [..., 3] -> [..., 3] (L* 0-100, a*, b*)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    d = 6 / 29
    f = np.where(xyz > d ** 3, np.cbrt(xyz), xyz / (3 * d * d) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def ita_degrees(lab: np.ndarray) -> np.ndarray:
    """ITA° = atan((L* - 50) / b*) * 180 / pi of CIELAB pixels [..., 3] (arctan2: b* ~ 0 safe)."""
    lab = np.asarray(lab, dtype=np.float64)
    return cast("np.ndarray", np.degrees(np.arctan2(lab[..., 0] - 50.0, lab[..., 2])))


def skin_mask(rgb: np.ndarray, rule: str = "rgb") -> np.ndarray:
    """Pixels that may be skin, by a colour rule, without clipped highlights or near-black."""
    x = np.asarray(rgb, dtype=np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hi, lo = x.max(axis=-1), x.min(axis=-1)
    if rule == "rgb":
        return cast("np.ndarray", (r > g) & (r >= b) & (hi - lo > 10) & (hi > 40) & (hi < 252))
    if rule == "ycbcr":
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
        return (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173) & (y > 30)
    raise ValueError(f"unknown skin rule {rule!r}: use 'rgb' or 'ycbcr'")


def _outside_centre(shape: tuple[int, ...], frac: float) -> np.ndarray:
    h, w = shape[:2]
    yy, xx = np.mgrid[:h, :w]
    rim = (np.abs(yy - (h - 1) / 2) > frac * h / 2) | (np.abs(xx - (w - 1) / 2) > frac * w / 2)
    return cast("np.ndarray", rim)


def ita_of_pixels(rgb: np.ndarray, method: ItaMethod = METHOD) -> tuple[float | None, float]:
    """(ITA° of the photo's surrounding skin or None, share of pixels the skin rule kept) for an
    8-bit RGB array [H, W, 3]."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB array [H, W, 3], got shape {list(rgb.shape)}")
    mask = skin_mask(rgb, method.skin_rule)
    share = float(mask.mean()) if mask.size else 0.0
    if method.ring > 0:
        outer = mask & _outside_centre(rgb.shape, method.ring)
        if outer.sum() >= MIN_SKIN_PIXELS:
            mask = outer
    if mask.sum() < MIN_SKIN_PIXELS:
        return None, share
    lab = srgb_to_lab(rgb[mask])
    if method.drop > 0:
        dist = np.linalg.norm(lab - np.median(lab, axis=0), axis=1)
        lab = lab[dist <= np.quantile(dist, 1 - method.drop)]
    return float(np.percentile(ita_degrees(lab), method.percentile)), share


def band_of_ita(ita: float | None, cutoffs: tuple[float, float] = ITA_CUTOFFS) -> str | None:
    """I-II above the first cut-off, III-IV down to the second, V-VI below; None for None."""
    if ita is None:
        return None
    light, dark = cutoffs
    return BANDS[0] if ita > light else BANDS[1] if ita > dark else BANDS[2]


def thumbnail(img: Image.Image, side: int = THUMB) -> np.ndarray:
    """The RGB photo reduced to at most `side` pixels a side, as uint8 [H, W, 3]."""
    small = img.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.uint8)


def estimate(source: str | Path | bytes | Image.Image, method: ItaMethod = METHOD,
             cutoffs: tuple[float, float] = ITA_CUTOFFS) -> SkinTone:
    """The skin tone of one photo (a path, bytes or a PIL image); ImageError if undecodable."""
    from kulit.serving.preprocess import open_image

    img = open_image(source, draft=2 * THUMB)
    ita, share = ita_of_pixels(thumbnail(img), method)
    return SkinTone(ita, band_of_ita(ita, cutoffs), share)


def estimate_many(paths: Sequence[Path], method: ItaMethod = METHOD,
                  cutoffs: tuple[float, float] = ITA_CUTOFFS,
                  progress: Callable[[int, int], None] | None = None) -> list[SkinTone | None]:
    """`estimate` per path, None for a photo that cannot be decoded."""
    out: list[SkinTone | None] = []
    for i, p in enumerate(paths):
        try:
            out.append(estimate(p, method, cutoffs))
        except ImageError:
            out.append(None)
        if progress and (i + 1) % 100 == 0:
            progress(i + 1, len(paths))
    return out


def _pairs(true: Iterable[str | None], est: Iterable[str | None]) -> tuple[np.ndarray, np.ndarray]:
    t, e = [], []
    for a, b in zip(true, est, strict=True):
        ia, ib = band_index(a), band_index(b)
        if ia is not None and ib is not None:
            t.append(ia)
            e.append(ib)
    return np.array(t, np.int64), np.array(e, np.int64)


def agreement(true: Sequence[str | None], est: Sequence[str | None]) -> dict[str, Any]:
    """How well estimated bands agree with labelled ones, on photos that have both: n, exact,
    within one band, Cohen's kappa (linear and quadratic weights), and the confusion matrix
    (rows labelled band, columns estimated band, lightest first)."""
    from sklearn.metrics import cohen_kappa_score

    t, e = _pairs(true, est)
    k = len(BANDS)
    cm = np.bincount(t * k + e, minlength=k * k).reshape(k, k) if len(t) else np.zeros((k, k))
    if len(t) == 0:
        return {"n": 0, "exact": None, "within_one": None, "kappa_linear": None,
                "kappa_quadratic": None, "bands": list(BANDS), "confusion": cm.tolist()}
    labels = list(range(k))
    return {
        "n": int(len(t)),
        "exact": float(np.mean(t == e)),
        "within_one": float(np.mean(np.abs(t - e) <= 1)),
        "kappa_linear": float(cohen_kappa_score(t, e, labels=labels, weights="linear")),
        "kappa_quadratic": float(cohen_kappa_score(t, e, labels=labels, weights="quadratic")),
        "bands": list(BANDS),
        "confusion": cm.astype(int).tolist(),
    }


def tune_cutoffs(itas: Sequence[float | None], true: Sequence[str | None],
                 grid: Sequence[float] = tuple(range(-40, 72, 2))) -> tuple[float, float]:
    """The two cut-offs (light, dark) on `grid` with the highest linearly weighted kappa
    against labelled bands (photos without an ITA or a label are left out)."""
    from sklearn.metrics import cohen_kappa_score

    keep = [(v, band_index(b)) for v, b in zip(itas, true, strict=True)
            if v is not None and band_index(b) is not None]
    if not keep:
        raise ValueError("no photo has both an ITA and a labelled band")
    v = np.array([x for x, _ in keep], np.float64)
    t = np.array([b for _, b in keep], np.int64)
    best: tuple[float, float, float] | None = None
    for light in grid:
        for dark in grid:
            if dark >= light:
                continue
            e = np.where(v > light, 0, np.where(v > dark, 1, 2))
            kappa = cohen_kappa_score(t, e, labels=list(range(len(BANDS))), weights="linear")
            if best is None or kappa > best[0]:
                best = (kappa, float(light), float(dark))
    assert best is not None
    return best[1], best[2]
