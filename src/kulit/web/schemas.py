"""The API's request/response models and OpenAPI fragments, shared by the routers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

UPLOAD_FIELD = "image"  # the multipart field every upload (API and pages) is read from


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_image"])
    message: str = Field(examples=["upload: not an image (JPEG, PNG, WebP or BMP)"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class TopItem(BaseModel):
    label: str
    probability: float = Field(ge=0, le=1, description="calibrated (temperature-scaled)")


class GateScoresResponse(BaseModel):
    not_skin: float = Field(ge=0, le=1, description="score that the photo is not a close-up "
                                                    "of skin")
    other: float = Field(ge=0, le=1, description="score that it is skin with a condition "
                                                 "outside the model's classes")


class PredictResponse(BaseModel):
    model: str = Field(description="model id from the card")
    status: Literal["answered", "uncertain", "none_of_these", "not_skin", "retake"] = Field(
        description="answered: one class, confident; uncertain: no class sure enough (top "
                    "still listed); none_of_these: skin, but like none of the model's classes; "
                    "not_skin: not a close-up of skin; retake: photo too small, blurred, dark "
                    "or bright (see `quality`)")
    top: list[TopItem] = Field(description="the model's ranking; an answer only when status "
                                           "is answered or uncertain")
    label: str | None = Field(description="the class, only when status is answered")
    confidence: float = Field(description="probability of the top class")
    uncertain: bool = Field(description="status == 'uncertain' (kept for older clients)")
    see_doctor: bool = Field(description="see a doctor: uncertain, none_of_these, or a "
                                         "melanoma alert; never for not_skin or retake")
    melanoma_alert: bool = Field(description="see a doctor soon: P(Melanoma) is above the "
                                             "model's cut-off, or Melanoma is the top class")
    quality: Literal["too_small", "too_blurred", "too_dark", "too_bright"] | None = Field(
        description="what is wrong with the photo (status retake), else null")
    gate: GateScoresResponse | None = Field(
        description="the trust gate's scores, or null when the model has no gate")
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
