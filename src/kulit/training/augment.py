"""Training views: a random crop, mirror, quarter turn, colour and JPEG re-encoding, and with
`capture` the ways people take photos (context kept or dropped, thumbnails, blur, white balance,
exposure). Seeded by the caller's generator, so a run's cached views are reproducible."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def augment(img: Image.Image, rng: np.random.Generator, size: int, capture: bool = False
            ) -> Image.Image:
    """A random view: crop, mirror, quarter turn, colour, and JPEG re-encoding.

    Re-encoding every view as JPEG at a random quality removes the PNG-versus-JPEG cue that
    separates the Chickenpox source from DermNet. With `capture`, views also imitate how
    people take photos: crops that keep or drop the context, a 100-300 px thumbnail blown up
    again, blur, white balance and exposure, lower JPEG quality; so neither a clinical atlas's
    look nor a web thumbnail's predicts a class.
    """
    w, h = img.size
    side = min(w, h)
    lo = (0.15 if rng.random() < 0.5 else 0.6) if capture else 0.35  # tight or with context
    area = side * side * rng.uniform(lo, 1.0)
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = int(min(w, round(math.sqrt(area * ratio))))
    ch = int(min(h, round(math.sqrt(area / ratio))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    k = int(rng.integers(0, 4))
    if k:
        img = img.rotate(90 * k)
    for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enh(img).enhance(float(rng.uniform(0.8, 1.2)))
    quality = int(rng.integers(60, 96))
    if capture:
        img = _capture(img, rng, size)
        quality = int(rng.integers(30, 96))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(buf).convert("RGB")


def _capture(img: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """Thumbnail round trip, blur, white balance and exposure, each with some probability."""
    if rng.random() < 0.5:
        small = int(rng.integers(100, 301))
        if small < size:
            img = img.resize((small, small), Image.Resampling.BILINEAR).resize(
                (size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    if rng.random() < 0.5:
        gains = rng.uniform(0.85, 1.15, 3) * rng.uniform(0.7, 1.3)  # white balance x exposure
        arr = np.asarray(img, np.float32) * gains.astype(np.float32)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img
