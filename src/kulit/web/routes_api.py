"""JSON API for programs: /api/v1/predict, /api/v1/model, /healthz. Errors share one shape."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kulit import DISCLAIMER_EN, DISCLAIMER_ID
from kulit.errors import ImageError
from kulit.web.deps import PredictorDep, SettingsDep
from kulit.web.errors import error_response
from kulit.web.inference import analyse
from kulit.web.schemas import (
    ERRORS,
    MULTIPART_BODY,
    UPLOAD_FIELD,
    HealthResponse,
    ModelCardResponse,
    PredictResponse,
)
from kulit.web.upload import UploadRejected, read_file_field

router = APIRouter()


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
    pred, ans = result.prediction, result.answer
    body = PredictResponse.model_validate({
        "model": predictor.model_id,
        **ans.to_dict(),  # the one answer-to-JSON (kulit.serving.answer)
        "disclaimer": {"en": DISCLAIMER_EN, "id": DISCLAIMER_ID},
        "timing_ms": {**{k: round(v, 3) for k, v in pred.timing_ms.items()},
                      "total": round(result.total_ms, 3)},
        "heatmap_png": (base64.b64encode(result.overlay).decode("ascii")
                        if result.overlay else None),
    }).model_dump(by_alias=True)
    if not heatmap:
        del body["heatmap_png"]
    return JSONResponse(body)


@router.get("/api/v1/model", response_model=ModelCardResponse, tags=["api"])
def model_card(predictor: PredictorDep) -> JSONResponse:
    """The model card: classes, preprocessing, calibration, test metrics (overall and per data
    source), the trust gate's cut-offs and figures, data, limits."""
    # card.json as written (extra keys too) and what is served; ModelCardResponse documents it
    return JSONResponse({**predictor.card.to_dict(),
                         "served": {"precision": predictor.precision,
                                    "file": predictor.onnx_path.name,
                                    "temperature": predictor.temperature}})


@router.get("/healthz", response_model=HealthResponse, tags=["api"])
def healthz(predictor: PredictorDep) -> HealthResponse:
    """Liveness: the model is loaded."""
    return HealthResponse(status="ok", model=predictor.model_id)
