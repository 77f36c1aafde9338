"""Photo quality: is the decoded photo big, sharp and well exposed enough to judge? Torch-free.

Measured on the central square (what the model sees: the Predictor passes its 224 px crop)
shrunk to a 128 px grey thumbnail, so a check costs little beside the model. The limits below
were measured by `benchmarks/quality.py` on every 5th photo of skin8 and skin8-web and degraded
copies of them (docs/results.md, Photo-quality limits); a model card can override any of them
in `card.quality`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from PIL import Image

from kulit.errors import ModelError

THUMB_SIDE = 128  # the grey thumbnail every measure is taken on

# What is wrong, in the order they are checked (a dark photo also looks blurred: say "dark").
ISSUES = ("too_small", "too_dark", "too_bright", "too_blurred")


@dataclass(frozen=True)
class QualityLimits:
    """Where a photo stops being usable; the one place the defaults live.

    Chosen with `python benchmarks/quality.py` (results/quality.json; the figures are in
    docs/results.md, Photo-quality limits) on clean skin photos and degraded copies of them,
    measured on the model's 224 px crop as the Predictor does: each limit sits just outside
    the clean photos' range, so few clean photos are flagged (target <= 2%).
    """

    min_side: int = 96  # px, shorter side of the decoded photo (smallest training photo: 122)
    min_sharpness: float = 0.016  # Laplacian energy relative to contrast, see `measure`
    min_brightness: float = 0.2  # mean luminance in [0, 1]
    max_brightness: float = 0.9  # mean luminance in [0, 1]
    max_clipped: float = 0.6  # fraction of pixels at pure white (>= 250) or black (<= 5)

    @classmethod
    def from_card(cls, overrides: dict[str, Any] | None) -> QualityLimits:
        """The defaults with the card's `quality` entries on top; an unknown key is an error."""
        if not overrides:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ModelError(f"card.json quality: unknown keys {sorted(unknown)}")
        try:
            return replace(cls(), **{k: type(getattr(cls(), k))(v) for k, v in overrides.items()})
        except (TypeError, ValueError) as e:
            raise ModelError(f"card.json quality: {e}") from None


@dataclass(frozen=True)
class Quality:
    """The measures of one photo and the first issue found (None = good enough)."""

    width: int
    height: int
    sharpness: float
    brightness: float
    dark_clipped: float  # fraction of near-black pixels
    bright_clipped: float  # fraction of near-white pixels
    issue: str | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("sharpness", "brightness", "dark_clipped", "bright_clipped"):
            d[k] = round(d[k], 5)
        return d


def grey_thumbnail(img: Image.Image, side: int = THUMB_SIDE) -> np.ndarray:
    """The central square of `img` as a side x side float array in [0, 1].

    Grey first (one channel to resample), then a whole-factor box reduction of the square to
    between 1x and 2x the side, then bilinear to the side."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    box = (left, top, left + s, top + s)
    grey = img.convert("L")
    factor = s // side
    sq = grey.reduce(factor, box=box) if factor >= 2 else grey.crop(box)
    sq = sq.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(sq, dtype=np.float32) * (1.0 / 255.0)


def measure(img: Image.Image) -> tuple[float, float, float, float]:
    """(sharpness, brightness, dark_clipped, bright_clipped) of a decoded RGB photo (or of its
    centre square).

    Sharpness is the mean squared Laplacian divided by the grey variance: fine detail relative
    to the photo's contrast, so a dim but sharp photo is not called blurred.
    """
    g = grey_thumbnail(img)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    var = float(g.var())
    sharpness = float(np.mean(lap * lap)) / (var + 1e-4)
    return (sharpness, float(g.mean()), float(np.mean(g <= 5 / 255)),
            float(np.mean(g >= 250 / 255)))


def check_quality(img: Image.Image, limits: QualityLimits | None = None,
                  square: Image.Image | None = None) -> Quality:
    """Measure a decoded photo and name the first problem, in ISSUES order.

    `square`: the photo's centre square already resampled (the model's crop, as the Predictor
    passes it): measured instead of resampling the whole photo again, which is what
    benchmarks/quality.py chose the limits on. A square under THUMB_SIDE a side (a small
    model's crop) has lost the detail sharpness needs: the photo is measured then."""
    lim = limits or QualityLimits()
    w, h = img.size
    measured = square if square is not None and min(square.size) >= THUMB_SIDE else img
    sharp, bright, dark_c, bright_c = measure(measured)
    issue: str | None = None
    if min(w, h) < lim.min_side:
        issue = "too_small"
    elif bright < lim.min_brightness or dark_c > lim.max_clipped:
        issue = "too_dark"
    elif bright > lim.max_brightness or bright_c > lim.max_clipped:
        issue = "too_bright"
    elif sharp < lim.min_sharpness:
        issue = "too_blurred"
    return Quality(w, h, sharp, bright, dark_c, bright_c, issue)
