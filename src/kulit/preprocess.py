"""Decode and preprocess images: the one implementation shared by training and serving.

Torch-free (Pillow + numpy). Training calls `preprocess_image` on its (augmented) PIL image and
serving calls it on the decoded upload, so the tensors match by construction.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kulit.errors import ImageError

ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "MPO"}
MAX_PIXELS = 40_000_000  # larger images are treated as decompression bombs
MIN_SIDE = 1  # serving accepts tiny images (they are upsampled); the data pipeline is stricter

# Pillow's own bomb guard raises at 2x its limit and warns above; we check the header ourselves.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class Preprocessing:
    """Every value needed to turn a decoded RGB image into the model's input tensor."""

    input_size: int = 224  # square side fed to the network
    resize: str = "shorter_center_crop"  # resize the shorter side, then centre-crop a square
    crop_pct: float = 1.0  # shorter side is resized to input_size / crop_pct before the crop
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # in [0, 1] units
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    background: tuple[int, int, int] = (255, 255, 255)  # colour behind transparent pixels
    # Box (x0, y0, x1, y1, relative to the crop) painted with the mean colour in every image,
    # train and serve alike: hides the DermNet logo corner so no model can key on the source.
    mask_box: tuple[float, float, float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("mean", "std", "background", "mask_box"):
            d[k] = None if d[k] is None else list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("mean", "std", "background", "mask_box"):
            if known.get(k) is not None:
                known[k] = tuple(known[k])
        return cls(**known)


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def open_image(source: str | Path | bytes | BinaryIO | Image.Image, *, draft: int | None = None
               ) -> Image.Image:
    """Decode any common image to 8-bit RGB, upright (EXIF), alpha flattened; or raise ImageError.

    `draft` lets JPEG decoding downscale in the DCT (fast) to no less than that many pixels a side.
    """
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (str, Path)):
            try:
                fp: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed below via Pillow
            except FileNotFoundError:
                raise ImageError(f"{source}: file not found", code="not_found") from None
            except IsADirectoryError:
                raise ImageError(f"{source}: is a folder, not an image", code="not_image") from None
            name = str(source)
        elif isinstance(source, bytes):
            fp, name = io.BytesIO(source), "upload"
        else:
            fp, name = source, "upload"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(fp)
        except UnidentifiedImageError:
            raise ImageError(
                f"{name}: not an image (JPEG, PNG, WebP or BMP)", "not_image"
            ) from None
        except Image.DecompressionBombError:
            raise ImageError(
                f"{name}: image too large (decompression bomb)", "too_large"
            ) from None
        except OSError as e:
            raise ImageError(f"{name}: unreadable image ({e})", "unreadable") from None
        if img.format not in ACCEPTED_FORMATS:
            raise ImageError(
                f"{name}: {img.format} is not supported (JPEG, PNG, WebP or BMP)", "not_image"
            )
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ImageError(
                f"{name}: image too large ({w}x{h} pixels, limit {MAX_PIXELS:,})", "too_large"
            )
        if w < MIN_SIDE or h < MIN_SIDE:
            raise ImageError(f"{name}: image is empty ({w}x{h})", "too_small")
        try:
            if draft and img.format in ("JPEG", "MPO"):
                img.draft("RGB", (draft, draft))
            img.load()
        except Image.DecompressionBombError:
            raise ImageError(
                f"{name}: image too large (decompression bomb)", "too_large"
            ) from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{name}: unreadable or truncated image ({e})", "unreadable") from None
    return to_rgb(img)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Upright 8-bit RGB from any mode: EXIF rotation, CMYK, palette, alpha, 16-bit."""
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block must not lose the photo  # noqa: BLE001
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(bg, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def resize_crop(img: Image.Image, p: Preprocessing) -> Image.Image:
    """Resize the shorter side to input_size/crop_pct and centre-crop a square of input_size."""
    size = p.input_size
    w, h = img.size
    short = max(1, round(size / p.crop_pct))
    scale = short / min(w, h)
    nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), _RESAMPLE[p.interpolation], reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def normalize(img: Image.Image, p: Preprocessing) -> np.ndarray:
    """RGB PIL image -> float32 CHW array, scaled to [0,1] then (x - mean) / std (+ mask box)."""
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    arr = (arr - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
    if p.mask_box is not None:
        h, w = arr.shape[:2]
        x0, y0, x1, y1 = p.mask_box
        arr[round(y0 * h): round(y1 * h), round(x0 * w): round(x1 * w)] = 0.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess_image(img: Image.Image, p: Preprocessing) -> np.ndarray:
    """Decoded RGB image -> the model input [3, S, S] float32. The single preprocessing path."""
    return normalize(resize_crop(img, p), p)


def load_and_preprocess(source: str | Path | bytes | BinaryIO, p: Preprocessing
                        ) -> tuple[Image.Image, np.ndarray]:
    """Decode then preprocess; returns the cropped RGB image (for overlays) and the tensor."""
    img = open_image(source, draft=2 * p.input_size)
    crop = resize_crop(img, p)
    return crop, normalize(crop, p)
