"""Decode and preprocess images: the one implementation shared by training and serving.

Torch-free (Pillow + numpy). Training calls `preprocess_image` on its (augmented) PIL image and
serving calls it on the decoded upload, so the tensors match by construction.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from kulit.errors import ImageError
from kulit.serving import decode_guards

# What phones and the web produce, and nothing else: only these Pillow plugins ever parse the
# bytes (Image.open(formats=...)), so BMP, ICO, TIFF, GIF ... are refused before any decoding.
# Pillow's JPEG plugin also opens multi-picture JPEGs (MPO); HEIF comes from pillow-heif, which
# here has no AVIF decoder, so AVIF is not accepted.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF")
ACCEPTED_NAMES = "JPEG, PNG, WebP or HEIC/HEIF"  # as people know them, in messages
DRAFT_FORMATS = ("JPEG", "MPO")  # decoded at reduced size in the DCT when a draft size is given
MAX_PIXELS = 40_000_000  # larger images are treated as decompression bombs
# PNG and WebP have no DCT draft, so they are decoded at full size (4 bytes a pixel with alpha).
# No phone writes them at photo size; past this they are refused as too large (413).
MAX_PIXELS_LOSSLESS = 24_000_000
LOSSLESS_FORMATS = ("PNG", "WEBP")
MIN_SIDE = 1  # serving accepts tiny images (they are upsampled); `kulit data` asks for more
# Longer side over shorter side. A 40000x1 strip is 85 bytes yet, resized on its short side,
# would become ~9,000,000x224 pixels; nothing past 20:1 is a photo of skin.
MAX_ASPECT = 20
# Formats without a DCT draft (PNG, WebP, BMP) past this many pixels, bigger than any training
# photo (12 MP), are box-reduced by a whole factor right after decoding, keeping the short side
# at least the draft size: the JPEG draft's bound on the work, for every format.
REDUCE_ABOVE = 16_000_000
_REDUCIBLE = ("L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F")
WHITE = (255, 255, 255)
RESIZE_MODES = ("shorter_center_crop",)
DECODE_MEMORY_MESSAGE = "the image needs more memory to decode than the limit allows"

try:  # iPhone photos (HEIC); pillow-heif is in the serve extra, optional elsewhere
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - then HEIC is refused as not_image
    pass

# Pillow's own bomb guard raises at 2x its limit and warns above; we check the header ourselves.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class Preprocessing:
    """Every value needed to turn an image file into the model's input tensor(s).

    Training, export and serving all read it from here (and the card), so nothing is retyped.
    """

    input_size: int = 224  # square side fed to the network
    resize: str = "shorter_center_crop"  # resize the shorter side, then centre-crop a square
    crop_pct: float = 1.0  # shorter side is resized to input_size / crop_pct before the crop
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # in [0, 1] units
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    background: tuple[int, int, int] = WHITE  # colour behind transparent pixels
    # Box (x0, y0, x1, y1, relative to the crop) painted with the mean colour in every image,
    # train and serve alike: hides the DermNet logo corner so no model can key on the source.
    mask_box: tuple[float, float, float, float] | None = None
    # JPEGs are decoded in the DCT at no less than draft_scale * input_size a side (fast, and
    # it changes the pixels, so training and serving must agree); 0 decodes at full size.
    draft_scale: int = 2
    # Test-time augmentation: the model's logits average the image and its mirror image. The
    # exported graph does it; training evaluates (and calibrates) on the same two views.
    tta: bool = False

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize {self.resize!r} is not one of {', '.join(RESIZE_MODES)}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of "
                             f"{', '.join(_RESAMPLE)}")

    @property
    def draft(self) -> int | None:
        """Smallest side a JPEG may be draft-decoded to, or None for full size."""
        return self.draft_scale * self.input_size if self.draft_scale else None

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
ImageSource = str | Path | bytes | BinaryIO | Image.Image


def decode_image(source: str | Path | bytes | BinaryIO, *, draft: int | None = None,
                 min_side: int = MIN_SIDE, fit_pixels: bool = False) -> Image.Image:
    """The one decoder: sniff the format, check the limits, decode every pixel; or ImageError.

    Returns the loaded image in its own mode (see `open_image` for upright RGB). Codes:
    not_found, not_image, too_large, too_small, too_narrow, unreadable. `draft` lets JPEG
    decoding downscale in the DCT (fast) to no less than that many pixels a side; `min_side` is
    the smallest accepted width and height (the training data asks for more than serving).
    `fit_pixels`: a JPEG over the pixel limit is DCT-reduced by the least of 1/2, 1/4, 1/8 that
    brings it under (what `kulit predict` accepts, `kulit explain` accepts too).
    """
    if isinstance(source, (str, Path)):
        fp: BinaryIO = _open_regular(source)
        name = str(source)
    elif isinstance(source, bytes):
        fp, name = io.BytesIO(source), "upload"
    else:
        fp, name = source, "upload"
    if isinstance(source, bytes) and not source:
        raise ImageError(f"{name}: empty file, not an image", "not_image")
    if isinstance(source, bytes):
        decode_guards.refuse_floods(source, name)
    # HEIF only when pillow-heif registered it (Pillow loads its own plugins on demand)
    formats = [f for f in ACCEPTED_FORMATS if f != "HEIF" or f in Image.OPEN]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(fp, formats=formats)
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not a {ACCEPTED_NAMES} image (no other format is accepted)", "not_image"
        ) from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large (decompression bomb)", "too_large") from None
    except Exception as e:  # Pillow plugins raise many types on hostile headers
        raise ImageError(f"{name}: unreadable image header ({_short(e)})", "unreadable") from None
    if isinstance(source, bytes) and img.format in DRAFT_FORMATS:
        decode_guards.refuse_many_scans(source, img.size, name)
    if fit_pixels and img.format in DRAFT_FORMATS and img.width * img.height > MAX_PIXELS:
        k = next((k for k in (2, 4, 8) if -(-img.width // k) * -(-img.height // k)
                  <= MAX_PIXELS), 8)
        draft = min(img.width // k, img.height // k)
    if draft and img.format in DRAFT_FORMATS:
        # before the pixel limit: a 50 MP phone JPEG decodes at 1/8 scale, well inside it
        try:
            img.draft("RGB", (draft, draft))
        except Exception as e:
            raise ImageError(
                f"{name}: unreadable image header ({_short(e)})", "unreadable"
            ) from None
    check_size(img.size, name, min_side,
               MAX_PIXELS_LOSSLESS if img.format in LOSSLESS_FORMATS else MAX_PIXELS)
    if img.width * img.height > BIG_DECODE_PIXELS:
        decode_guards.take_big_slot()
    return _load(img, name, draft)


def _load(img: Image.Image, name: str, draft: int | None) -> Image.Image:
    """Decode an opened image's pixels (a huge non-JPEG is box-reduced right after)."""
    relaxed = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # fail on truncation even if someone relaxed Pillow
    try:
        img.load()
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large (decompression bomb)", "too_large") from None
    except Exception as e:  # truncated or corrupt data, in whatever type the plugin raises
        if isinstance(e, MemoryError) or "memory" in str(e).lower():  # the sandbox's limit
            raise ImageError(f"{name}: {DECODE_MEMORY_MESSAGE}", "decode_memory") from None
        what = "truncated" if "truncat" in str(e).lower() else "unreadable"
        raise ImageError(f"{name}: {what} image ({_short(e)})", "unreadable") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = relaxed
    if draft and img.format not in ("JPEG", "MPO") and img.width * img.height > REDUCE_ABOVE:
        img = _reduce(img, draft)
    return img


# Past this many pixels (after the JPEG draft) a decode in the sandbox takes the one slot the
# workers share (decode_guards.take_big_slot): two workers decoding 40 MP at once would take the
# server past its memory budget; a phone photo (a JPEG, DCT-reduced first) never needs it.
BIG_DECODE_PIXELS = REDUCE_ABOVE


def _reduce(img: Image.Image, draft: int) -> Image.Image:
    """Shrink a huge non-JPEG by a whole factor, short side still >= draft (a box filter)."""
    factor = min(img.size) // draft
    if factor < 2:
        return img
    if img.mode in ("P", "PA", "1"):
        img = img.convert("RGBA")
    if img.mode.startswith("I;16"):  # no reduce() for 16-bit grey: the same box filter
        reduced = img.resize((img.width // factor, img.height // factor),
                             Image.Resampling.BOX, reducing_gap=None)
    elif img.mode not in _REDUCIBLE:
        return img
    elif img.mode in ("RGBA", "LA"):  # Pillow would premultiply into a full-size copy first
        reduced = Image.merge(img.mode, [img.getchannel(i).reduce(factor)
                                         for i in range(len(img.getbands()))])
    else:
        reduced = img.reduce(factor)
    reduced.info, reduced.format = img.info, img.format  # EXIF orientation, format
    return reduced


def _open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading; a FIFO, device or socket is refused before open()
    (opening a FIFO blocks until a writer comes), a symlink loop is one clear error."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found", code="not_found") from None
    except OSError as e:  # ELOOP (symlink loop), EACCES on a parent folder, ENAMETOOLONG ...
        raise ImageError(f"{path}: cannot read ({e.strerror or e})", "unreadable") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a folder, not an image", code="not_image")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: not a regular file (a pipe or device?)", code="not_image")
    try:
        return open(path, "rb")
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})", "unreadable") from None


def check_size(size: tuple[int, int], name: str = "upload", min_side: int = MIN_SIDE,
               max_pixels: int = MAX_PIXELS) -> None:
    """The header checks every decode passes before any pixel is decoded; or ImageError.

    Plain Python ints, so no product overflows whatever the header claims.
    """
    w, h = (int(v) for v in size)
    if w * h > max_pixels:
        raise ImageError(
            f"{name}: image too large ({w}x{h} pixels, limit {max_pixels:,})", "too_large"
        )
    if w < min_side or h < min_side:
        what = "empty" if min(w, h) < 1 else f"too small (under {min_side} px on a side)"
        raise ImageError(f"{name}: image is {what} ({w}x{h})", "too_small")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"{name}: image too long and thin ({w}x{h}; the longer side may be at "
                         f"most {MAX_ASPECT} times the shorter)", "too_narrow")


def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:120]


def open_image(source: ImageSource, *, draft: int | None = None, min_side: int = MIN_SIDE,
               background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Decode any accepted image to 8-bit RGB, upright (EXIF), alpha flattened; or ImageError."""
    img = source if isinstance(source, Image.Image) else decode_image(
        source, draft=draft, min_side=min_side)
    return to_rgb(img, background)


def open_for_model(source: ImageSource, p: Preprocessing) -> Image.Image:
    """Decode exactly as the model's preprocessing says (draft size, background)."""
    return open_image(source, draft=p.draft, background=p.background)


def upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block must not lose the photo."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001
        return img


def to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Upright 8-bit RGB from any mode: EXIF rotation, CMYK, palette, alpha, 16-bit."""
    img = upright(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # integer maths on the (already reduced) image: no float64 copy of a big photo
        arr = np.asarray(img)
        wide = img.mode.startswith("I;16") or int(arr.max()) > 255
        if img.mode == "F":
            arr = np.nan_to_num(arr, nan=0.0, posinf=65535.0, neginf=0.0)
        arr = np.clip(arr, 0, 65535).astype(np.uint32)
        grey = (arr * 255 + 32767) // 65535 if wide else arr  # round(v / 65535 * 255)
        img = Image.fromarray(grey.astype(np.uint8), "L")
    if img.mode == "P":
        with warnings.catch_warnings():  # Pillow's advice to do exactly this conversion
            warnings.filterwarnings("ignore", "Palette images with Transparency", UserWarning)
            img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(bg, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def resize_crop(img: Image.Image, p: Preprocessing) -> Image.Image:
    """Resize the shorter side to input_size/crop_pct and centre-crop a square of input_size.

    Only the centre square is resampled (Pillow's `box`): the same geometry and filter as
    resizing the whole photo then cropping (pixels within 1 level), without computing the
    columns the crop throws away, so the work is bounded by the output size.
    """
    size = p.input_size
    w, h = img.size
    short = max(1, round(size / p.crop_pct))
    scale = short / min(w, h)
    nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) == (w, h):
        return img.crop((left, top, left + size, top + size))
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), _RESAMPLE[p.interpolation], box=box, reducing_gap=None)


def normalize_affine(p: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset), float32 per channel: normalised = pixel * scale + offset, i.e.
    (pixel / 255 - mean) / std. `normalize` and the browser model's graph both use these."""
    std = np.asarray(p.std, np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    offset = (-np.asarray(p.mean, np.float64) / std).astype(np.float32)
    return scale, offset


def normalize(img: Image.Image, p: Preprocessing) -> np.ndarray:
    """RGB PIL image -> float32 CHW array, scaled to [0,1] then (x - mean) / std (+ mask box).

    One multiply-add per channel (`normalize_affine`) written straight into the CHW array: the
    same values as the three steps to within 1e-6, a fifth of the time."""
    rgb = np.asarray(img)
    h, w = rgb.shape[:2]
    scale, offset = normalize_affine(p)
    out = np.empty((3, h, w), np.float32)
    for c in range(3):
        np.multiply(rgb[:, :, c], scale[c], out=out[c])
        out[c] += offset[c]
    if p.mask_box is not None:
        x0, y0, x1, y1 = p.mask_box
        out[:, round(y0 * h): round(y1 * h), round(x0 * w): round(x1 * w)] = 0.0
    return out


def preprocess_image(img: Image.Image, p: Preprocessing) -> np.ndarray:
    """Decoded RGB image -> the model input [3, S, S] float32. The single preprocessing path."""
    return normalize(resize_crop(img, p), p)


def load_and_preprocess(source: ImageSource, p: Preprocessing
                        ) -> tuple[Image.Image, np.ndarray]:
    """Decode then preprocess; returns the cropped RGB image (for overlays) and the tensor."""
    crop = resize_crop(open_for_model(source, p), p)
    return crop, normalize(crop, p)
