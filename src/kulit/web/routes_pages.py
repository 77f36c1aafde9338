"""Server-rendered pages for people: upload, result, about. Work without JavaScript."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kulit.errors import ImageError
from kulit.serving.card import card_text
from kulit.serving.i18n import fmt_pct
from kulit.web.about import band_rows, confident_rows, metric_table, shortlist_rows, trust_rows
from kulit.web.deps import PredictorDep, SettingsDep
from kulit.web.inference import OVERLAY_FORMAT, analyse
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
        result = await run_in_threadpool(analyse, predictor, data, settings.top_k, True,
                                         OVERLAY_FORMAT)
        ctx = await run_in_threadpool(result_context, result, lang.code)
    except (UploadRejected, ImageError) as e:
        return render_upload_error(request, lang, settings, predictor, e)
    # the page's crop JPEG is re-posted for "How it works" and for the other language
    return render(request, "result.html", lang, settings, predictor, carry="/predict", **ctx)


@router.get("/about")
def about(request: Request, lang: LangDep, settings: SettingsDep,
          predictor: PredictorDep) -> Response:
    card = predictor.card
    return render(request, "about.html", lang, settings, predictor,
                  card=card, classes=class_list(predictor, lang.code),
                  threshold=fmt_pct(card.threshold), data=data_rows(card.data, lang.code),
                  limits=[card_text(x, lang.code) for x in card.limits],
                  metrics=metric_table(card.metrics, lang.code),
                  confident=confident_rows(card.metrics, lang.code),
                  trust=trust_rows(card.gate, lang.code),
                  bands=band_rows(card.metrics, lang.code),
                  shortlist=shortlist_rows(card.section("shortlist"), lang.code))


def data_rows(data: dict[str, Any], lang: str) -> dict[str, Any]:
    """Name, sources and licence from card.data, whichever spelling the card used, each as
    (text, its language): the page's language when the card has it, else English."""
    sources = data.get("sources") or data.get("source") or []
    if isinstance(sources, (str, dict)):
        sources = [sources]
    licence = data.get("licence") or data.get("license")
    return {
        "name": data.get("name"),
        "sources": [card_text(s, lang) for s in sources],
        "licence": card_text(licence, lang) if licence else None,
    }


@router.get("/docs")
def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI from /static/vendor (scripts/vendor_web_ui.sh), so /docs works offline."""
    page = get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title=f"{request.app.title} API",
        swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url="/static/icon.svg",
    )
    # the API is documented in English; say so, for screen readers and translators
    html = bytes(page.body).decode().replace("<html>", '<html lang="en">', 1)
    return HTMLResponse(html, headers={"content-security-policy": docs_csp(html)})


def docs_csp(html: str) -> str:
    """/docs's CSP: scripts from this server plus Swagger UI's own inline starter script,
    allowed by its hash only; Swagger sets inline styles and data: icons."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
        for m in re.findall(r"<script>(.*?)</script>", html, flags=re.S))
    return ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            f"script-src 'self' {hashes}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'")
