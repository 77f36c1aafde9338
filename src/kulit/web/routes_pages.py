"""Server-rendered pages for people: upload, result, about. Work without JavaScript."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kulit.errors import ImageError
from kulit.i18n import METRICS, PERCENT_METRICS, fmt_num, fmt_pct, t
from kulit.web.deps import PredictorDep, SettingsDep
from kulit.web.errors import status_of
from kulit.web.inference import analyse, data_uri, encode_image
from kulit.web.rendering import (
    LangDep,
    class_list,
    render,
    render_upload_error,
    result_context,
)
from kulit.web.schemas import UPLOAD_FIELD
from kulit.web.upload import UploadRejected, read_file_field

router = APIRouter(include_in_schema=False)


@router.get("/")
def index(request: Request, lang: LangDep, settings: SettingsDep,
          predictor: PredictorDep) -> Response:
    return render(request, "index.html", lang, settings, predictor,
                  classes=class_list(predictor, lang.code))


@router.get("/predict")
def predict_get(request: Request, lang: LangDep) -> Response:
    """The result page exists only as the answer to a POST; a reload or link goes home."""
    url = f"/?lang={lang.code}" if lang.from_query else "/"
    return RedirectResponse(url, status_code=303)


@router.post("/predict")
async def predict_page(request: Request, lang: LangDep, settings: SettingsDep,
                       predictor: PredictorDep) -> Response:
    """The plain form POST (multipart field `image`): result page, or the form with the error."""
    try:
        data = await read_file_field(request, UPLOAD_FIELD, settings.max_upload_bytes)
        result = await run_in_threadpool(analyse, predictor, data, settings.top_k, True)
    except (UploadRejected, ImageError) as e:
        return render_upload_error(request, lang, settings, predictor, e.code, status_of(e.code))
    crop = result.prediction.image  # re-posted losslessly by "How it works" (routes_explain)
    ctx = result_context(result, lang.code)
    crop_png = (await run_in_threadpool(encode_image, crop, "PNG")
                if crop and ctx["explainable"] else None)
    return render(request, "result.html", lang, settings, predictor,
                  **ctx,
                  crop_png_uri=data_uri(crop_png, "image/png") if crop_png else None)


@router.get("/about")
def about(request: Request, lang: LangDep, settings: SettingsDep,
          predictor: PredictorDep) -> Response:
    card = predictor.card
    return render(request, "about.html", lang, settings, predictor,
                  card=card, classes=class_list(predictor, lang.code),
                  threshold=fmt_pct(card.threshold), data=data_rows(card.data),
                  metrics=metric_rows(card.metrics, lang.code))


def data_rows(data: dict[str, Any]) -> dict[str, Any]:
    """Name, sources and licence from card.data, whichever spelling the card used."""
    sources = data.get("sources") or data.get("source") or []
    if isinstance(sources, str):
        sources = [sources]
    return {
        "name": data.get("name"),
        "sources": [str(s) for s in sources],
        "licence": data.get("licence") or data.get("license"),
    }


def metric_rows(metrics: dict[str, Any], lang: str) -> list[dict[str, str]]:
    """The headline test numbers that exist in the card, formatted for reading."""
    raw_ci = metrics.get("ci95")
    ci95: dict[str, Any] = raw_ci if isinstance(raw_ci, dict) else {}

    def fmt(key: str, v: float) -> str:
        if key == "n":
            return str(int(v))
        if key in PERCENT_METRICS:
            return fmt_num(100 * v, lang, 1) + "%"
        return fmt_num(v, lang, 3)

    rows = []
    for key in METRICS:
        v = metrics.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        ci = ci95.get(key)
        ci_text = ""
        if (isinstance(ci, (list, tuple)) and len(ci) == 2
                and all(isinstance(x, (int, float)) for x in ci)):
            ci_text = f"{fmt(key, ci[0])} – {fmt(key, ci[1])}"
        rows.append({"label": t(lang, f"m_{key}"), "value": fmt(key, v), "ci": ci_text})
    return rows
