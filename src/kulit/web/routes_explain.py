"""'How it works': the paper's CNN steps on the photo just classified, then the real model's.

The result page re-posts the square crop the model saw (the page's JPEG in a hidden field), so
nothing is stored on the server. GET shows the same steps on a made-up example picture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, ImageDraw, ImageFilter
from starlette.concurrency import run_in_threadpool

from kulit.errors import ImageError, KulitError
from kulit.explain.model import ModelExplanation, first_layer_grid
from kulit.explain.steps import CHANNELS, explain_photo, parse_at
from kulit.serving.i18n import condition_name, fmt_num, fmt_pct, t
from kulit.serving.predict import Predictor, heatmap_overlay
from kulit.web.deps import PredictorDep, SettingsDep
from kulit.web.errors import error_response
from kulit.web.inference import (
    OVERLAY_FORMAT,
    Analysis,
    data_uri,
    decode_upload,
    encode_image,
    encode_overlay,
)
from kulit.web.rendering import LangDep, render, render_upload_error, result_context
from kulit.web.schemas import ERRORS, MULTIPART_BODY, UPLOAD_FIELD
from kulit.web.upload import UploadRejected, read_file_field

GRID_TILE = 56  # first-layer maps are box-averaged to at most this side for the page
GRID_MIN_TILE = 40  # and tiny ones enlarged (nearest) to at least about this side

router = APIRouter()


def explain_bounded(predictor: Predictor, data: bytes, at: tuple[int, int] | None
                    ) -> tuple[dict[str, Any], ModelExplanation | None]:
    """explain_photo on an upload (decoded in the predictor's sandbox)."""
    return explain_photo(decode_upload(data), predictor=predictor, at=at)


@dataclass
class Explained:
    """explain_photo's dict and arrays, the page images, and the server time it took."""

    result: dict[str, Any]
    arrays: ModelExplanation
    grid_png: bytes
    overlay: bytes | None  # as pages show it (encode_overlay)
    total_ms: float


def run_explain(predictor: Predictor, data: bytes) -> Explained:
    """All the CPU work of the view (decode, model, pictures); run it in the threadpool."""
    t0 = time.perf_counter()
    result, arrays = explain_photo(decode_upload(data), predictor=predictor,
                                   patch_on_crop=True)
    assert arrays is not None  # a predictor was given
    maps = arrays.maps
    scale = max(1, -(-GRID_MIN_TILE // max(maps.shape[1:])))
    # lossy WebP: the grey maps are only looked at; ~1/4 of the PNG's bytes on a phone
    grid = encode_image(first_layer_grid(maps, max_tile=GRID_TILE, scale=scale), "WEBP",
                        quality=80)
    pred = arrays.prediction
    overlay = None
    if pred.heatmap is not None and pred.image is not None:
        overlay = encode_overlay(heatmap_overlay(pred.image, pred.heatmap))
    return Explained(result, arrays, grid, overlay, 1000 * (time.perf_counter() - t0))


def _int_rows(rows: list[list[Any]]) -> list[list[str]]:
    return [[str(int(v)) for v in row] for row in rows]


def _gnum(x: float, lang: str) -> str:
    """A float in about 6 significant digits, with the language's decimal separator."""
    s = f"{x:.6g}" if x == 0 or 1e-4 <= abs(x) < 1e7 else f"{x:.3e}"
    return s.replace(".", ",") if lang == "id" else s


def explain_context(ex: Explained, lang: str) -> dict[str, Any]:
    """What explain.html shows: every table as formatted strings, the pictures as data URIs."""
    d = ex.result
    m = d["model"]
    pred = ex.arrays.prediction
    base = result_context(Analysis(pred, ex.arrays.answer, ex.overlay, ex.total_ms, OVERLAY_FORMAT),
                          lang)
    x, y = d["at"]
    size = d["image"]["width"]
    patch = d["inputs"]["patch"]
    steps = d["steps"]
    sm = m["softmax"]
    top_label = m["top"][0]["label"]
    fl = m["first_layer"]
    return {
        **base,
        "size": size,
        "at": (x, y),
        "marker": {"left": f"{100 * x / size:.3f}", "top": f"{100 * y / size:.3f}",
                   "side": f"{100 * 4 / size:.3f}"},
        "channels": [(c, t(lang, f"ex_{c}"), _int_rows(patch[c])) for c in CHANNELS],
        "swatch": [[f"rgb({patch['red'][r][c]}, {patch['green'][r][c]}, {patch['blue'][r][c]})"
                    for c in range(4)] for r in range(4)],
        "kernel": _int_rows(d["inputs"]["kernel"]),
        "conv": [(t(lang, f"ex_{c}"), _int_rows(steps["conv"][c])) for c in CHANNELS],
        "sum": _int_rows(steps["sum"]),
        "relu": _int_rows(steps["relu"]),
        "flatten": [str(int(v)) for v in steps["flatten"]],
        "backbone": m["backbone"],
        "input_size": m["input_size"],
        "layer": {"n": fl["filters"], "h": fl["height"], "w": fl["width"],
                  "stride": _gnum(fl["stride"], lang), "paper": fl["paper_filters"]},
        "grid_uri": data_uri(ex.grid_png, "image/webp"),
        "temperature": _gnum(round(sm["temperature"], 4), lang),
        "shift": _gnum(sm["shift"], lang) if sm["shift"] else "",
        "soft_rows": [
            {"name": condition_name(c, lang), "z": fmt_num(z, lang, 3),
             "zt": fmt_num(zt, lang, 3), "e": _gnum(e, lang), "p": fmt_num(p, lang, 4),
             "pct": fmt_pct(p), "top": c == top_label}
            for c, z, zt, e, p in zip(m["classes"], sm["logits"], sm["scaled"], sm["exp"],
                                      sm["probs"], strict=True)
        ],
        "soft_sum": _gnum(sm["sum"], lang),
        "prob_sum": fmt_num(sum(sm["probs"]), lang, 4),
        "threshold": fmt_pct(m["threshold"]),
        "check_diff": _gnum(float(f"{m['check']['max_abs_diff']:.1e}"), lang),
        "total_ms": f"{ex.total_ms:.0f}",
    }


def example_picture(size: int = 320) -> Image.Image:
    """A made-up picture for the example (no one's photo): a reddish ring on a skin tone."""
    img = Image.new("RGB", (size, size), (214, 168, 138))
    draw = ImageDraw.Draw(img)
    c, r = size // 2, size // 4
    draw.ellipse((c - r, c - r, c + r, c + r), outline=(172, 82, 70), width=size // 20)
    draw.ellipse((c - r // 2, c - r // 2, c + r // 2, c + r // 2), fill=(200, 140, 115))
    return img.filter(ImageFilter.GaussianBlur(2))


@lru_cache(maxsize=2)
def explain_example(predictor: Predictor) -> Explained:
    """The example's steps, computed once per loaded model."""
    return run_explain(predictor, encode_image(example_picture(), "PNG"))


@router.get("/explain", include_in_schema=False)
async def explain_get(request: Request, lang: LangDep, settings: SettingsDep,
                      predictor: PredictorDep) -> Response:
    """'How it works' from the navigation: the steps on a made-up example picture."""
    ex = await run_in_threadpool(explain_example, predictor)
    return render(request, "explain.html", lang, settings, predictor, example=True,
                  **explain_context(ex, lang.code))


@router.post("/explain", include_in_schema=False)
async def explain_page(request: Request, lang: LangDep, settings: SettingsDep,
                       predictor: PredictorDep) -> Response:
    """The 'How it works' page for one photo (multipart field `image`: a file or the crop)."""
    try:
        data = await read_file_field(request, UPLOAD_FIELD, settings.max_upload_bytes)
        ex = await run_in_threadpool(run_explain, predictor, data)
    except (UploadRejected, ImageError) as e:
        return render_upload_error(request, lang, settings, predictor, e)
    return render(request, "explain.html", lang, settings, predictor,
                  carry="/explain", **explain_context(ex, lang.code))


@router.post("/api/v1/explain", responses=ERRORS, openapi_extra=MULTIPART_BODY, tags=["api"])
async def explain_api(
    request: Request, predictor: PredictorDep, settings: SettingsDep,
    at: Annotated[str | None, Query(description="top-left pixel X,Y of the 4x4 patch "
                                                "(default: the photo's centre)")] = None,
) -> JSONResponse:
    """The CNN's steps on one photo (multipart field `image`), as `kulit explain IMAGE --json`.

    The 4x4 patch is cut from the photo; the model part has the first layer's statistics and
    8x8 previews, and the softmax step by step. Not a diagnosis.
    """
    t0 = time.perf_counter()
    try:
        point = parse_at(at) if at else None
        data = await read_file_field(request, UPLOAD_FIELD, settings.max_upload_bytes)
        result, _ = await run_in_threadpool(explain_bounded, predictor, data, point)
    except (UploadRejected, KulitError) as e:
        return error_response(e.code, e.message)
    result["timing_ms"] = {"total": round(1000 * (time.perf_counter() - t0), 3)}
    return JSONResponse(result)
