"""Clinic pages (server-rendered, no JavaScript needed, both languages, 360 px wide): login,
case list with filters, a new check whose result page offers "Simpan kasus", a case with its
review and deletion, and the audit log for admins. Every form carries a CSRF token."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from kulit.clinic import vocab
from kulit.clinic.auth import (
    Actor,
    LoginRefused,
    actor_of,
    authenticate,
    csrf_ok,
    end_session,
    session_of,
    start_session,
)
from kulit.clinic.db import as_utc
from kulit.clinic.deps import ClinicSettingsDep, StoreDep, get_store
from kulit.clinic.intake import save_case
from kulit.clinic.models import Clinic
from kulit.clinic.store import CaseFields, ClinicError, Filters
from kulit.errors import ImageError
from kulit.serving.answer import STATUSES
from kulit.serving.i18n import condition_name, fmt_pct, t
from kulit.web.deps import PredictorDep, SettingsDep
from kulit.web.inference import OVERLAY_FORMAT, analyse
from kulit.web.rendering import TEMPLATES_DIR, Lang, LangDep, render, resolve_lang, result_context
from kulit.web.schemas import UPLOAD_FIELD
from kulit.web.upload import UploadRejected, read_file_field

router = APIRouter(prefix="/clinic", include_in_schema=False)
templates = Jinja2Templates(directory=[Path(__file__).with_name("templates"), TEMPLATES_DIR])
SESSION_COOKIE = "kulit_clinic"
LOGIN_CSRF_COOKIE = "kulit_clinic_login"
CSRF_FIELD = "csrf_token"


class LoginNeeded(Exception):
    """No valid session: the page answers with a redirect to the login form."""


@dataclass(frozen=True)
class PageUser:
    actor: Actor
    csrf: str
    clinic: str


def page_user(request: Request) -> PageUser:
    store = get_store(request)
    with store.session() as db:
        found = session_of(db, request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise LoginNeeded
        user, sess = found
        clinic = db.get(Clinic, user.clinic_id)
        return PageUser(actor_of(user), sess.csrf_token, clinic.name if clinic else "")


UserDep = Annotated[PageUser, Depends(page_user)]


def to_login(request: Request) -> Response:
    lang = resolve_lang(request, request.app.state.settings.default_lang)
    return RedirectResponse(f"/clinic/login?lang={lang.code}", status_code=303)


def page(request: Request, name: str, lang: Lang, status: int = 200, **ctx: Any) -> Response:
    """A clinic page in the site's layout."""
    return render(request, name, lang, request.app.state.settings, request.app.state.predictor,
                  status=status, engine=templates, vocab=vocab, **ctx)


def error_page(request: Request, exc: ClinicError) -> Response:
    lang = resolve_lang(request, request.app.state.settings.default_lang)
    text = t(lang.code, f"clinic_err_{exc.code}")
    if text == f"clinic_err_{exc.code}":
        text = exc.message
    return page(request, "clinic_error.html", lang, status=exc.status, message=text)


async def checked_form(request: Request, user: PageUser) -> dict[str, str]:
    """The urlencoded form of a POST whose CSRF token matches the session's; else 403."""
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(user.csrf, values.get(CSRF_FIELD)):
        raise ClinicError("the form is stale or not from this site; reload and retry",
                          "csrf", 403)
    return values


def secure(request: Request, setting: bool | None) -> bool:
    return setting if setting is not None else request.url.scheme == "https"


# --------------------------------------------------------------------------- login


@router.get("/login")
def login_form(request: Request, lang: LangDep, settings: ClinicSettingsDep,
               error: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    resp = page(request, "clinic_login.html", lang, csrf=token,
                error=t(lang.code, f"clinic_login_{error}") if error in (
                    "bad", "locked", "busy") else "")
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                    secure=secure(request, settings.secure_cookies), path="/clinic")
    return resp


@router.post("/login")
async def login(request: Request, lang: LangDep, store: StoreDep,
                settings: ClinicSettingsDep) -> Response:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE) or "", values.get(CSRF_FIELD)):
        raise ClinicError("the login form is stale; reload it", "csrf", 403)
    limiter = request.app.state.clinic_limiter
    addr = request.client.host if request.client else "?"

    def again(reason: str, status: int) -> Response:
        resp = login_form(request, lang, settings, reason)
        resp.status_code = status
        return resp

    if limiter.blocked(addr):
        return again("busy", 429)
    name, password = values.get("name", "")[:64], values.get("password", "")[:1024]

    def attempt() -> tuple[str, str] | str:
        with store.session() as db:
            try:
                user = authenticate(db, name, password, settings.max_login_failures,
                                    timedelta(minutes=settings.lockout_minutes))
            except LoginRefused as e:
                return e.reason  # the failure count and the audit row are committed
            return start_session(db, user, settings.session_hours)

    outcome = await run_in_threadpool(attempt)
    if isinstance(outcome, str):
        limiter.failed(addr)
        return again(outcome, 429 if outcome == "locked" else 401)
    sid, _ = outcome
    resp = RedirectResponse(f"/clinic?lang={lang.code}", status_code=303)
    resp.set_cookie(SESSION_COOKIE, sid, max_age=int(settings.session_hours * 3600),
                    httponly=True, samesite="lax",
                    secure=secure(request, settings.secure_cookies), path="/")
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/clinic")
    return resp


@router.post("/logout")
async def logout(request: Request, user: UserDep, store: StoreDep) -> Response:
    await checked_form(request, user)
    with store.session() as db:
        end_session(db, request.cookies.get(SESSION_COOKIE))
    resp = to_login(request)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


# --------------------------------------------------------------------------- cases


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise ClinicError(f"not a date: {value!r} (YYYY-MM-DD)", "validation_error",
                          422) from None


@router.get("")
def case_list(request: Request, lang: LangDep, user: UserDep, store: StoreDep,
              predictor: PredictorDep,
              status: Annotated[str, Query(max_length=32)] = "",
              diagnosis: Annotated[str, Query(max_length=200)] = "",
              date_from: Annotated[str, Query(max_length=10)] = "",
              date_to: Annotated[str, Query(max_length=10)] = "",
              page_no: Annotated[int, Query(alias="page", ge=1, le=10**6)] = 1) -> Response:
    filters = Filters(status or None, diagnosis or None, _date(date_from), _date(date_to))
    per_page = 50
    rows, total = store.list_cases(user.actor, filters, per_page, (page_no - 1) * per_page)
    return page(request, "clinic_cases.html", lang, user=user, cases=[
        case_row(c, lang.code) for c in rows], total=total, filters=filters,
        statuses=STATUSES, classes=[(c, condition_name(c, lang.code))
                                    for c in predictor.classes],
        page_no=page_no, more=total > page_no * per_page,
        query={"status": status, "diagnosis": diagnosis, "date_from": date_from,
               "date_to": date_to})


def case_row(case: Any, lang: str) -> dict[str, Any]:
    """What a list or a case page says about a case, in `lang`."""
    ans = case.answer or {}
    named = ans.get("shortlist") or ans.get("top") or []
    names = [(condition_name(str(x.get("class") or x.get("label")), lang),
              fmt_pct(float(x.get("probability", 0)))) for x in named if isinstance(x, dict)]
    diag = case.diagnosis
    if diag is None:
        diag_text = t(lang, "clinic_not_reviewed")
    elif diag == vocab.UNSURE:
        diag_text = t(lang, "clinic_diag_unsure")
    elif diag.startswith(vocab.OTHER_PREFIX):
        diag_text = t(lang, "clinic_diag_other") + ":" + diag[len(vocab.OTHER_PREFIX):]
    else:
        diag_text = condition_name(diag, lang)
    return {"id": case.id, "short": case.id[:8],
            "created": as_utc(case.created_at).strftime("%Y-%m-%d %H:%M UTC"),
            "status": case.status, "status_text": t(lang, f"clinic_status_{case.status}"),
            "names": names if case.status in ("answered", "shortlist", "uncertain") else [],
            "urgency": t(lang, f"clinic_urgency_{case.urgency}") if case.urgency else "",
            "diagnosis": diag, "diagnosis_text": diag_text,
            "referral": case.referral, "case": case}


@router.get("/check")
def check_form(request: Request, lang: LangDep, user: UserDep) -> Response:
    if user.actor.role not in vocab.CREATE_ROLES:
        raise ClinicError("a health worker or reviewer saves cases", "forbidden", 403)
    return page(request, "clinic_check.html", lang, user=user)


@router.post("/predict")
async def check(request: Request, lang: LangDep, user: UserDep, settings: SettingsDep,
                predictor: PredictorDep) -> Response:
    """The result page of a clinic check, with the "Simpan kasus" form under it."""
    if user.actor.role not in vocab.CREATE_ROLES:
        raise ClinicError("a health worker or reviewer saves cases", "forbidden", 403)
    try:
        data = await read_file_field(request, UPLOAD_FIELD, settings.max_upload_bytes)
        result = await run_in_threadpool(analyse, predictor, data, settings.top_k, True,
                                         OVERLAY_FORMAT)
        ctx = await run_in_threadpool(result_context, result, lang.code)
    except (UploadRejected, ImageError) as e:
        return page(request, "clinic_check.html", lang, status=422 if isinstance(
            e, UploadRejected) and e.code == "missing_field" else 400, user=user,
            error=t(lang.code, f"err_{e.code}", mb=f"{settings.max_upload_mb:g}", mp=""))
    return page(request, "clinic_result.html", lang, carry="/clinic/predict", user=user,
                **ctx)


@router.post("/cases")
async def save(request: Request, lang: LangDep, user: UserDep, store: StoreDep,
               settings: SettingsDep, predictor: PredictorDep) -> Response:
    """Save the case shown on a result page (the page's crop is re-posted with the form)."""
    fields: dict[str, str] = {}
    try:
        data = await read_file_field(request, UPLOAD_FIELD, settings.max_upload_bytes, fields)
    except UploadRejected as e:
        raise ClinicError(e.message, "validation_error", 422) from None
    if not csrf_ok(user.csrf, fields.get(CSRF_FIELD)):
        raise ClinicError("the form is stale or not from this site", "csrf", 403)
    parsed = CaseFields.parse(fields)
    try:
        case, _ = await run_in_threadpool(save_case, store, predictor, user.actor, data,
                                          parsed, settings.top_k)
    except ImageError as e:
        raise ClinicError(e.message, "validation_error", 422) from None
    return RedirectResponse(f"/clinic/cases/{case.id}?lang={lang.code}&saved=1",
                            status_code=303)


@router.get("/cases/{case_id}")
def case_page(case_id: str, request: Request, lang: LangDep, user: UserDep, store: StoreDep,
              predictor: PredictorDep, saved: bool = False) -> Response:
    case = store.get(user.actor, case_id)
    diagnosis = case.diagnosis or ""
    other = (diagnosis[len(vocab.OTHER_PREFIX):].strip()
             if diagnosis.startswith(vocab.OTHER_PREFIX) else "")
    return page(request, "clinic_case.html", lang, user=user, c=case_row(case, lang.code),
                classes=[(c, condition_name(c, lang.code)) for c in predictor.classes],
                saved=saved, other_text=other,
                may_review=user.actor.role in vocab.REVIEW_ROLES)


@router.get("/cases/{case_id}/photo")
def case_photo(case_id: str, user: UserDep, store: StoreDep) -> Response:
    return Response(store.read_photo(user.actor, case_id), media_type="image/jpeg")


@router.post("/cases/{case_id}/review")
async def review(case_id: str, request: Request, lang: LangDep, user: UserDep,
                 store: StoreDep, predictor: PredictorDep) -> Response:
    form = await checked_form(request, user)
    diagnosis = form.get("diagnosis") or None
    if diagnosis == "other":
        diagnosis = f"{vocab.OTHER_PREFIX} {form.get('other_text', '')}"
    try:
        referral = vocab.parse_bool("referral", form.get("referral"))
    except vocab.FieldError as e:
        raise ClinicError(str(e), "validation_error", 422) from None
    if diagnosis is None and referral is None:
        raise ClinicError("choose a diagnosis or a referral", "validation_error", 422)
    store.review(user.actor, case_id, diagnosis, predictor.classes, referral)
    return RedirectResponse(f"/clinic/cases/{case_id}?lang={lang.code}", status_code=303)


@router.post("/cases/{case_id}/referral")
async def referral(case_id: str, request: Request, lang: LangDep, user: UserDep,
                   store: StoreDep) -> Response:
    form = await checked_form(request, user)
    try:
        value = vocab.parse_bool("referral", form.get("referral"))
    except vocab.FieldError as e:
        raise ClinicError(str(e), "validation_error", 422) from None
    if value is None:
        raise ClinicError("referral: yes or no", "validation_error", 422)
    store.set_referral(user.actor, case_id, value)
    return RedirectResponse(f"/clinic/cases/{case_id}?lang={lang.code}", status_code=303)


@router.post("/cases/{case_id}/delete")
async def delete(case_id: str, request: Request, lang: LangDep, user: UserDep,
                 store: StoreDep) -> Response:
    await checked_form(request, user)
    store.delete(user.actor, case_id)
    return RedirectResponse(f"/clinic?lang={lang.code}&deleted=1", status_code=303)


@router.get("/audit")
def audit_page(request: Request, lang: LangDep, user: UserDep, store: StoreDep) -> Response:
    events = store.audit_log(user.actor)
    return page(request, "clinic_audit.html", lang, user=user, events=[
        {"at": as_utc(e.at).strftime("%Y-%m-%d %H:%M:%S"), "actor": e.actor,
         "action": e.action, "case": (e.case_id or "")[:8], "detail": e.detail}
        for e in events])
