"""One upload -> prediction, answer (+ heatmap overlay) as plain data; run in the threadpool."""

from __future__ import annotations

import base64
import binascii
import io
import time
from dataclasses import dataclass

from PIL import Image

from kulit.errors import ImageError, ModelError
from kulit.serving.answer import Answer, answer_for
from kulit.serving.predict import Prediction, Predictor, heatmap_overlay
from kulit.serving.shortlist import SECTION, guarantee_tenths


@dataclass
class Analysis:
    """A prediction, the answer a person gets, and what the page and API show with it."""

    prediction: Prediction
    answer: Answer
    overlay: bytes | None  # the heatmap blended over the crop, encoded as overlay_format says
    total_ms: float
    overlay_format: str = "PNG"  # "PNG" for the API, "WEBP" for pages (encode_overlay)
    shortlist_tenths: int | None = None  # the shortlist's measured coverage, in tenths


def analyse(predictor: Predictor, data: bytes, top_k: int, heatmap: bool,
            overlay_format: str = "PNG") -> Analysis:
    """Predict one image from bytes; a model without a heatmap still answers. Raises ImageError.

    `data` may also be a page's re-posted crop (a data URI, see `decode_upload`).
    """
    data = decode_upload(data)
    t0 = time.perf_counter()
    try:
        pred = predictor.predict_one(data, top_k=top_k, heatmap=heatmap)
    except ModelError:
        if not heatmap:
            raise
        pred = predictor.predict_one(data, top_k=top_k, heatmap=False)
    overlay = None
    if heatmap and pred.heatmap is not None and pred.image is not None:
        blend = heatmap_overlay(pred.image, pred.heatmap)
        overlay = (encode_overlay(blend) if overlay_format == OVERLAY_FORMAT
                   else encode_image(blend, overlay_format))
    return Analysis(pred, answer_for(pred, predictor.card), overlay,
                    1000 * (time.perf_counter() - t0), overlay_format,
                    guarantee_tenths(predictor.card.section(SECTION)))


def encode_image(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    """Encode once for the page. PNG at compress_level 1: the same pixels as the default
    level, a little larger, written several times faster (docs/results.md, Speed)."""
    if fmt.upper() == "PNG":
        kw.setdefault("compress_level", 1)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# Pictures on pages are small, so a result page stays under 60 KB on a phone's data plan
# (two PNGs made it several times that). The API keeps PNG.
# The crop is JPEG (shown, and re-posted to re-check it, so colours must stay close);
PAGE_IMAGE_MIME = "image/jpeg"
# 95 and 4:4:4: a re-checked crop keeps its probabilities closer than at 90
PAGE_JPEG_QUALITY = 95
# A page carries the crop the model saw (to re-post it for "How it works" or another language).
CROP_URI_PREFIXES = (b"data:image/jpeg;base64,", b"data:image/png;base64,")


# the heatmap overlay is only looked at: lossy WebP, a fraction of a JPEG's bytes.
OVERLAY_FORMAT, OVERLAY_QUALITY = "WEBP", 75


# The page holds the crop twice (shown, and in the carry form right after it); gzip sends the
# second copy as a back-reference only if it starts within its 32 KB window, so a crop's
# base64 must stay under that: detailed crops step down in quality until they fit.
PAGE_CROP_MAX_BYTES = 24_000
PAGE_JPEG_STEPS = (PAGE_JPEG_QUALITY, 92, 90, 85, 80, 75)


def encode_page_image(img: Image.Image) -> bytes:
    """The photo crop for a page: JPEG, no chroma subsampling, at most PAGE_CROP_MAX_BYTES
    when quality 75 allows."""
    rgb = img.convert("RGB")
    data = b""
    for quality in PAGE_JPEG_STEPS:
        data = encode_image(rgb, "JPEG", quality=quality, subsampling=0)
        if len(data) <= PAGE_CROP_MAX_BYTES:
            break
    return data


def encode_overlay(img: Image.Image) -> bytes:
    """The heatmap overlay for a page: lossy WebP."""
    return encode_image(img.convert("RGB"), OVERLAY_FORMAT, quality=OVERLAY_QUALITY)


def page_image_uri(img: Image.Image) -> str:
    return data_uri(encode_page_image(img), PAGE_IMAGE_MIME)


def decode_upload(data: bytes) -> bytes:
    """Image bytes from a file upload, or from a page's re-posted crop (a data URI).

    Raises ImageError when the data URI is not valid base64.
    """
    for prefix in CROP_URI_PREFIXES:
        if data.startswith(prefix):
            try:
                return base64.b64decode(data[len(prefix):].strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ImageError("upload: the photo's data URI is not valid base64",
                                 "unreadable") from None
    return data


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
