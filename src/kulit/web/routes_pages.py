"""Server-rendered pages for people: upload, result, about. Work without JavaScript."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

import kulit
from kulit.errors import ImageError
from kulit.predict import URGENT_CLASSES, Predictor
from kulit.web.deps import PredictorDep, SettingsDep
from kulit.web.i18n import (
    LANG_COOKIE,
    LANGS,
    METRICS,
    PERCENT_METRICS,
    STRINGS,
    condition_info,
    condition_name,
    fmt_num,
    fmt_pct,
    normalize_lang,
    t,
)
from kulit.web.inference import Analysis, analyse, data_uri, encode_image
from kulit.web.routes_api import STATUS, UPLOAD_FIELD
from kulit.web.settings import Settings
from kulit.web.upload import UploadRejected, read_file_field

TEMPLATES_DIR = Path(__file__).with_name("templates")
templates = Jinja2Templates(directory=TEMPLATES_DIR)
COOKIE_MAX_AGE = 365 * 24 * 3600

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Lang:
    """The page language and whether ?lang= chose it (then it is remembered in a cookie)."""

    code: str
    from_query: bool = False


def resolve_lang(request: Request, default: str) -> Lang:
    """?lang= first, then the cookie, then the server default."""
    chosen = normalize_lang(request.query_params.get("lang"))
    if chosen:
        return Lang(chosen, True)
    return Lang(normalize_lang(request.cookies.get(LANG_COOKIE)) or default)


def get_lang(request: Request, settings: SettingsDep,
             lang: Annotated[str | None, Query(description="id or en")] = None) -> Lang:
    return resolve_lang(request, settings.default_lang)


LangDep = Annotated[Lang, Depends(get_lang)]


def render(request: Request, name: str, lang: Lang, settings: Settings,
           predictor: Predictor | None, status: int = 200, **ctx: Any) -> Response:
    """Render a page in `lang` with the shared layout context; remember a ?lang= choice."""
    context = {
        "lang": lang.code,
        "langs": [(code, STRINGS[code]["lang_name"]) for code in LANGS],
        "t": partial(t, lang.code),
        "version": kulit.__version__,
        "model_id": predictor.model_id if predictor is not None else "",
        "max_mb": f"{settings.max_upload_mb:g}",
        "max_bytes": settings.max_upload_bytes,
        **ctx,
    }
    resp = templates.TemplateResponse(request, name, context, status_code=status)
    if lang.from_query:
        resp.set_cookie(LANG_COOKIE, lang.code, max_age=COOKIE_MAX_AGE, samesite="lax")
    return resp


def class_list(predictor: Predictor, lang: str) -> list[dict[str, str]]:
    return [{"cls": c, "name": condition_name(c, lang)} for c in predictor.classes]


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
        return render(request, "index.html", lang, settings, predictor,
                      status=STATUS.get(e.code, 400), classes=class_list(predictor, lang.code),
                      error=t(lang.code, f"err_{e.code}", mb=f"{settings.max_upload_mb:g}"))
    crop = result.prediction.image  # re-posted losslessly by "How it works" (routes_explain)
    crop_png = await run_in_threadpool(encode_image, crop, "PNG") if crop else None
    return render(request, "result.html", lang, settings, predictor,
                  **result_context(result, lang.code),
                  crop_png_uri=data_uri(crop_png, "image/png") if crop_png else None)


def result_context(result: Analysis, lang: str) -> dict[str, Any]:
    """What result.html shows: rows with bars and texts, the verdict, the photo and heatmap."""
    pred = result.prediction
    rows = [
        {"cls": c, "pct": fmt_pct(p), "width": f"{100 * p:.1f}", "urgent": c in URGENT_CLASSES,
         **condition_info(c, lang)}
        for c, p in pred.top
    ]
    if not pred.see_doctor:
        doctor = ""
    elif pred.uncertain:
        doctor = t(lang, "see_doctor_uncertain")
    elif pred.label == "Melanoma":
        doctor = t(lang, "see_doctor_melanoma")
    else:
        doctor = t(lang, "see_doctor_urgent", name=rows[0]["name"])
    photo = encode_image(pred.image, "JPEG", quality=90) if pred.image is not None else None
    return {
        "rows": rows,
        "n_classes": len(pred.classes),
        "uncertain": pred.uncertain,
        "verdict": (t(lang, "verdict_uncertain") if pred.uncertain
                    else t(lang, "verdict_likely", name=rows[0]["name"], pct=rows[0]["pct"])),
        "doctor": doctor,
        "photo_uri": data_uri(photo, "image/jpeg") if photo else None,
        "overlay_uri": data_uri(result.overlay_png, "image/png") if result.overlay_png else None,
    }


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
