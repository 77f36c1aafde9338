"""The case API (/api/v1/cases), bearer tokens only. 401 without a token; a case outside the
caller's scope is 404, an action their role may not take 403."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kulit.clinic.deps import ApiActorDep, StoreDep
from kulit.clinic.intake import save_case
from kulit.clinic.schemas import (
    AUTH_ERRORS,
    CREATE_BODY,
    CaseListResponse,
    CaseResponse,
    ReviewRequest,
)
from kulit.clinic.store import CaseFields, Filters, invalid
from kulit.errors import ImageError
from kulit.web.deps import PredictorDep, SettingsDep
from kulit.web.errors import error_response
from kulit.web.schemas import ERRORS, UPLOAD_FIELD
from kulit.web.upload import UploadRejected, read_file_field

router = APIRouter(prefix="/api/v1/cases", tags=["clinic"], responses=AUTH_ERRORS)


@router.post("", response_model=CaseResponse, status_code=201, openapi_extra=CREATE_BODY,
             responses=ERRORS)
async def create_case(request: Request, actor: ApiActorDep, store: StoreDep,
                      predictor: PredictorDep, settings: SettingsDep) -> Response:
    """Save a case: the photo (multipart `image`) with `consent=true`, kulit's answer on it,
    and optional research consent, body site, age band, sex and referral."""
    fields: dict[str, str] = {}
    try:
        data = await read_file_field(request, UPLOAD_FIELD, settings.max_upload_bytes, fields)
    except UploadRejected as e:
        return error_response(e.code, e.message)
    parsed = CaseFields.parse(fields)
    try:
        case, _ = await run_in_threadpool(save_case, store, predictor, actor, data, parsed,
                                          settings.top_k)
    except ImageError as e:
        return error_response(e.code, e.message)
    return JSONResponse(CaseResponse.of(case).model_dump(mode="json"), status_code=201)


@router.get("", response_model=CaseListResponse)
def list_cases(
    actor: ApiActorDep, store: StoreDep,
    status: Annotated[str | None, Query(max_length=32, description="answer status")] = None,
    diagnosis: Annotated[str | None, Query(
        max_length=200, description="a class, 'unsure', 'other', or 'none' (not reviewed)")
    ] = None,
    date_from: Annotated[date | None, Query(description="saved on or after (UTC)")] = None,
    date_to: Annotated[date | None, Query(description="saved on or before (UTC)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> CaseListResponse:
    """The cases in the caller's scope, newest first."""
    if date_from and date_to and date_from > date_to:
        raise invalid("date_from is after date_to")
    rows, total = store.list_cases(actor, Filters(status, diagnosis, date_from, date_to), limit,
                             offset)
    return CaseListResponse(total=total, cases=[CaseResponse.of(c) for c in rows])


@router.get("/{case_id}", response_model=CaseResponse)
def get_case(case_id: str, actor: ApiActorDep, store: StoreDep) -> CaseResponse:
    """One case (its photo: `photo_url`)."""
    return CaseResponse.of(store.get(actor, case_id))


@router.get("/{case_id}/photo", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the photo"}})
def get_photo(case_id: str, actor: ApiActorDep, store: StoreDep) -> Response:
    """The case's stored photo: the crop kulit judged, as JPEG."""
    return Response(store.read_photo(actor, case_id), media_type="image/jpeg")


@router.delete("/{case_id}", status_code=204, response_class=Response)
def delete_case(case_id: str, actor: ApiActorDep, store: StoreDep) -> Response:
    """Erase the case and its photo (right to erasure). The audit log keeps the id only."""
    store.delete(actor, case_id)
    return Response(status_code=204)


@router.post("/{case_id}/review", response_model=CaseResponse)
def review_case(case_id: str, body: ReviewRequest, actor: ApiActorDep, store: StoreDep,
                predictor: PredictorDep) -> CaseResponse:
    """Record the confirmed diagnosis (reviewers only), and optionally the referral."""
    if body.diagnosis is None and body.referral is None:
        raise invalid("give diagnosis, referral or both")
    return CaseResponse.of(store.review(actor, case_id, body.diagnosis, predictor.classes,
                                        body.referral))
