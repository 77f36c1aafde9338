"""JSON API for programs: /api/v1/predict, /api/v1/model, /healthz. Errors share one shape."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kulit import DISCLAIMER_EN, DISCLAIMER_ID
from kulit.errors import ImageError
from kulit.predict import URGENT_CLASSES, Prediction
from kulit.web.deps import PredictorDep, SettingsDep
from kulit.web.inference import analyse
from kulit.web.upload import UploadRejected, read_file_field

UPLOAD_FIELD = "image"

# HTTP status per error code; anything else a user causes is a 400.
STATUS = {
    "not_image": 415,
    "unreadable": 400,
    "too_small": 400,
    "too_large": 413,
    "missing_field": 422,
    "validation_error": 422,
    "bad_request": 400,
    "not_found": 404,
    "method_not_allowed": 405,
}


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_image"])
    message: str = Field(examples=["upload: not an image (JPEG, PNG, WebP or BMP)"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class TopItem(BaseModel):
    label: str
    probability: float = Field(ge=0, le=1, description="calibrated (temperature-scaled)")


class PredictResponse(BaseModel):
    model: str = Field(description="model id from the card")
    top: list[TopItem]
    label: str | None = Field(description="top class, or null when the model is not sure")
    confidence: float = Field(description="probability of the top class")
    uncertain: bool = Field(description="confidence below the card's threshold")
    see_doctor: bool = Field(description="melanoma or uncertain: see a doctor soon")
    advice: dict[str, str] = Field(description="what to do next, in en and id")
    disclaimer: dict[str, str] = Field(description="'not a diagnosis', in en and id")
    timing_ms: dict[str, float]
    heatmap_png: str | None = Field(
        None, description="only with ?heatmap=true: base64 PNG of the heatmap over the crop "
                          "(null if the model has no heatmap)"
    )


class HealthResponse(BaseModel):
    status: str
    model: str


def error_response(code: str, message: str, status: int | None = None) -> JSONResponse:
    """The API's one error shape: {"error": {"code", "message"}}."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status or STATUS.get(code, 400))


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": d}
    for s, d in [(400, "unreadable image or malformed upload"), (413, "upload too large"),
                 (415, "not an image"), (422, "missing field or bad parameter")]
}

MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [UPLOAD_FIELD],
            "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary",
                                          "description": "JPEG, PNG, WebP or BMP photo"}},
        }}},
    }
}

router = APIRouter()

ADVICE = {
    "melanoma": {
        "en": "Melanoma is among the likely conditions: see a doctor soon, ideally a skin "
              "specialist, within one to two weeks.",
        "id": "Melanoma termasuk kemungkinan: segera periksakan ke dokter, sebaiknya dokter "
              "spesialis kulit, dalam satu sampai dua minggu.",
    },
    "uncertain": {
        "en": "The model is not sure. See a doctor soon if the skin problem worries you.",
        "id": "Model tidak yakin. Segera periksakan ke dokter jika masalah kulit ini "
              "mengkhawatirkan Anda.",
    },
    "default": {
        "en": "Not a diagnosis. See a doctor if it does not improve, spreads or worries you.",
        "id": "Bukan diagnosis. Periksakan ke dokter jika tidak membaik, menyebar, atau "
              "mengkhawatirkan Anda.",
    },
}


def advice_for(pred: Prediction) -> dict[str, str]:
    """What to do next, in both languages: melanoma and uncertain answers point to a doctor."""
    if pred.label in URGENT_CLASSES:
        return ADVICE["melanoma"]
    return ADVICE["uncertain" if pred.uncertain else "default"]


@router.post("/api/v1/predict", response_model=PredictResponse, responses=ERRORS,
             openapi_extra=MULTIPART_BODY, tags=["api"])
async def predict(
    request: Request,
    predictor: PredictorDep,
    settings: SettingsDep,
    top_k: Annotated[int | None, Query(ge=1, le=50, description="how many classes")] = None,
    heatmap: Annotated[bool, Query(description="add heatmap_png")] = False,
) -> JSONResponse:
    """Classify one photo (multipart field `image`). Not a diagnosis."""
    try:
        data = await read_file_field(request, UPLOAD_FIELD, settings.max_upload_bytes)
        result = await run_in_threadpool(
            analyse, predictor, data, top_k or settings.top_k, heatmap
        )
    except UploadRejected as e:
        return error_response(e.code, e.message)
    except ImageError as e:
        return error_response(e.code, e.message)
    pred = result.prediction
    body = PredictResponse(
        model=predictor.model_id,
        top=[TopItem(label=c, probability=round(p, 6)) for c, p in pred.top],
        label=None if pred.uncertain else pred.label,
        confidence=round(pred.confidence, 6),
        uncertain=pred.uncertain,
        see_doctor=pred.see_doctor,
        advice=advice_for(pred),
        disclaimer={"en": DISCLAIMER_EN, "id": DISCLAIMER_ID},
        timing_ms={**{k: round(v, 3) for k, v in pred.timing_ms.items()},
                   "total": round(result.total_ms, 3)},
        heatmap_png=(base64.b64encode(result.overlay_png).decode("ascii")
                     if result.overlay_png else None),
    ).model_dump()
    if not heatmap:
        del body["heatmap_png"]
    return JSONResponse(body)


@router.get("/api/v1/model", tags=["api"])
def model_card(predictor: PredictorDep) -> JSONResponse:
    """The model card: classes, preprocessing, calibration, test metrics, data, limits."""
    return JSONResponse(predictor.card.to_dict())


@router.get("/healthz", response_model=HealthResponse, tags=["api"])
def healthz(predictor: PredictorDep) -> HealthResponse:
    """Liveness: the model is loaded."""
    return HealthResponse(status="ok", model=predictor.model_id)
