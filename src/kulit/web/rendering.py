"""Page rendering shared by the page routers and the app: language, layout, the result view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

import kulit
from kulit.errors import ImageError
from kulit.serving.answer import SOON_CLASSES, Answer
from kulit.serving.i18n import (
    LANG_COOKIE,
    LANGS,
    STRINGS,
    condition_info,
    condition_name,
    fmt_pct,
    join_or,
    normalize_lang,
    pair_notes,
    t,
)
from kulit.serving.predict import Predictor
from kulit.serving.preprocess import MAX_PIXELS, MAX_PIXELS_LOSSLESS
from kulit.web.deps import SettingsDep
from kulit.web.errors import status_of
from kulit.web.inference import Analysis, data_uri, page_image_uri
from kulit.web.settings import Settings
from kulit.web.upload import UploadRejected

TEMPLATES_DIR = Path(__file__).with_name("templates")
templates = Jinja2Templates(directory=TEMPLATES_DIR)
COOKIE_MAX_AGE = 365 * 24 * 3600


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
           predictor: Predictor | None, status: int = 200,
           engine: Jinja2Templates | None = None, **ctx: Any) -> Response:
    """Render a page in `lang` with the shared layout context; remember a ?lang= choice.
    `engine`: another template set that also finds these templates (clinic mode's)."""
    context = {
        "lang": lang.code,
        "langs": [(code, STRINGS[code]["lang_name"]) for code in LANGS],
        "t": partial(t, lang.code),
        "version": kulit.__version__,
        "model_id": predictor.model_id if predictor is not None else "",
        "max_mb": f"{settings.max_upload_mb:g}",
        "max_bytes": settings.max_upload_bytes,
        # the server decodes JPEGs at no less than this side (the page shrinks to match)
        "draft": (predictor.pre.draft or 0) if predictor is not None else 0,
        **ctx,
    }
    resp = (engine or templates).TemplateResponse(request, name, context, status_code=status)
    if lang.from_query:
        resp.set_cookie(LANG_COOKIE, lang.code, max_age=COOKIE_MAX_AGE, samesite="lax")
    return resp


def render_upload_error(request: Request, lang: Lang, settings: Settings, predictor: Predictor,
                        error: UploadRejected | ImageError) -> Response:
    """The upload form again, with the error said in the page's language.

    A decoded image over the pixel limit says so, rather than "too many megabytes".
    """
    key = error.code
    if isinstance(error, ImageError) and error.code == "too_large":
        key = "too_many_pixels"
    text = t(lang.code, f"err_{key}", mb=f"{settings.max_upload_mb:g}",
             mp=f"{MAX_PIXELS / 1e6:g}", mp_lossless=f"{MAX_PIXELS_LOSSLESS / 1e6:g}",
             s=f"{settings.decode_deadline_s:g}")
    return render(request, "index.html", lang, settings, predictor,
                  status=status_of(error.code), classes=class_list(predictor, lang.code),
                  error=text)


def class_list(predictor: Predictor, lang: str) -> list[dict[str, str]]:
    """Each class's name in `lang` and, where the text store says, what it covers."""
    return [{"cls": c, "name": condition_name(c, lang),
             "covers": str(condition_info(c, lang).get("covers", ""))}
            for c in predictor.classes]


def doctor_box(ans: Answer, lang: str, top_name: str) -> tuple[str, str, str]:
    """(text, title, kind) of the see-a-doctor box by the answer's urgency; kind "urgent"
    (red: an urgent class behind it), "soon" (amber), "note" (gentle); text "" = no box."""
    if not ans.see_doctor:
        return "", "", ""
    if ans.urgency == "urgent":
        text = (t(lang, "see_doctor_melanoma") if ans.advice == "melanoma" else
                t(lang, "see_doctor_melanoma_possible", pct=fmt_pct(max(ans.urgent.values()))))
        return text, t(lang, "see_doctor_title"), "urgent"
    if ans.urgency == "soon":
        names = [condition_name(c, lang) for c, _ in ans.shortlist if c in SOON_CLASSES]
        return (t(lang, "see_doctor_soon", names=join_or(names, lang)),
                t(lang, "see_doctor_soon_title"), "soon")
    return (t(lang, f"see_doctor_{ans.advice}", name=top_name),
            t(lang, "see_doctor_gentle_title"), "note")


def verdict(ans: Answer, lang: str, top: dict[str, Any], n_classes: int) -> str:
    if ans.status == "answered":
        return t(lang, "verdict_likely", name=top["name"], pct=top["pct"])
    if ans.status == "shortlist":
        return t(lang, "verdict_shortlist",
                 names=join_or([condition_name(c, lang) for c, _ in ans.shortlist], lang))
    if ans.status == "none_of_these":
        return t(lang, "verdict_none_of_these", n=n_classes)
    return t(lang, f"verdict_{ans.status}")


def device_result_context(classes: list[str], lang: str,
                          guarantee: int | None = None) -> dict[str, Any]:
    """result.html as the on-device check fills it (static/device.js): every class's row,
    condition card and look-alike pair, the doctor, guidance, shortlist and photo blocks empty
    and hidden. The same template and partials as a server result, so both modes show one page;
    cached for offline use. `guarantee`: the card's shortlist coverage in tenths."""
    rows = [{"cls": c, "pct": "", "width": "0", "urgent": False, **condition_info(c, lang)}
            for c in classes]
    return {"kit": True, "answer_status": "", "rows": rows, "n_classes": len(classes),
            "uncertain": False, "verdict": "", "guidance": "", "doctor": "",
            "doctor_title": "", "doctor_urgent": False, "photo_uri": None, "overlay_uri": None,
            "explainable": False, "advice_text": "", "print_note": True, "checked_at": "",
            "checked_at_text": "", "guarantee": guarantee, "pairs": pair_notes(classes, lang)}


def result_context(result: Analysis, lang: str) -> dict[str, Any]:
    """What result.html shows: the verdict, advice, rows with bars and texts, photo, heatmap.

    Everything said comes from `result.answer` (kulit.serving.answer): classes are listed only when
    the answer may name them, the badge only on the classes behind a melanoma alert.
    """
    pred, ans = result.prediction, result.answer
    top_name, top_pct = condition_name(ans.top[0][0], lang), fmt_pct(ans.confidence)
    # a list of two or more: its classes, most likely first; one answer (or an unsure answer
    # of an uncalibrated model): the model's ranking, as before
    listed = (ans.shortlist if ans.shortlist and ans.status in ("shortlist", "uncertain")
              else ans.top if ans.names_classes else [])
    rows = [
        {"cls": c, "pct": fmt_pct(p), "width": f"{100 * p:.1f}",
         "urgent": ans.melanoma_alert and c in ans.urgent, **condition_info(c, lang)}
        for c, p in listed
    ]
    doctor, doctor_title, doctor_kind = doctor_box(ans, lang, top_name)
    guidance = t(lang, f"advice_{ans.advice}") if ans.status in ("not_skin", "retake") else ""
    # one JPEG of the crop: shown, and re-posted by the carry form (gzip sends it once)
    photo_uri = page_image_uri(pred.image) if pred.image is not None else None
    now = datetime.now(timezone.utc)
    return {
        "answer_status": ans.status,
        "rows": rows,
        "n_classes": len(pred.classes),
        "uncertain": ans.status != "answered",
        "verdict": verdict(ans, lang, {"name": top_name, "pct": top_pct}, len(pred.classes)),
        "guidance": guidance,
        "doctor": doctor,
        "doctor_title": doctor_title,
        "doctor_urgent": doctor_kind == "urgent",
        "doctor_soon": doctor_kind == "soon",
        "urgency": ans.urgency,
        "shortlisted": bool(ans.shortlist) and ans.status in ("shortlist", "uncertain"),
        "guarantee": result.shortlist_tenths if ans.shortlist else None,
        "pairs": pair_notes([c for c, _ in ans.shortlist], lang)
        if ans.status in ("answered", "shortlist") else [],
        "photo_uri": photo_uri,
        "overlay_uri": (data_uri(result.overlay, f"image/{result.overlay_format.lower()}")
                        if result.overlay and ans.names_classes else None),
        "explainable": ans.names_classes,
        # the model has no heatmap at all (not: this photo was not judged)
        "heatmap_missing": ans.names_classes and not result.overlay,
        "print_note": ans.status not in ("not_skin", "retake"),
        "advice_text": t(lang, f"advice_{ans.advice}"),
        "checked_at": now.isoformat(timespec="seconds"),
        "checked_at_text": now.strftime("%Y-%m-%d %H:%M UTC"),
    }
