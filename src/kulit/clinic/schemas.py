"""The case API's request/response models and OpenAPI fragments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from kulit.clinic import vocab
from kulit.clinic.models import Case
from kulit.web.schemas import UPLOAD_FIELD, ErrorResponse


class CaseResponse(BaseModel):
    id: str = Field(description="random case id")
    created_at: datetime
    updated_at: datetime
    status: str = Field(description="kulit's answer status when the case was saved")
    label: str | None = Field(description="the class kulit named, if it named one")
    confidence: float
    urgency: str | None = Field(description="the answer's urgency, when the model gives one")
    model: str = Field(description="model name")
    model_sha256: str = Field(description="sha256 of the ONNX file that answered")
    answer: dict[str, Any] = Field(description="kulit's whole answer as it was given "
                                               "(shortlist, urgency, gate, quality, advice)")
    consent: bool = Field(description="always true: a case without consent is never saved")
    research_consent: bool = Field(description="may be exported to train kulit")
    body_site: str | None
    age_band: str | None
    sex: str | None
    referral: bool | None = Field(description="referred (rujukan): yes, no, or not recorded")
    diagnosis: str | None = Field(description="the reviewer's confirmed diagnosis: a class, "
                                              "'other: ...' or 'unsure'; null until reviewed")
    reviewed_at: datetime | None
    photo_url: str = Field(description="the stored photo (JPEG), same bearer token")

    @classmethod
    def of(cls, case: Case) -> CaseResponse:
        from kulit.clinic.db import as_utc

        return cls(
            id=case.id, created_at=as_utc(case.created_at), updated_at=as_utc(case.updated_at),
            status=case.status, label=case.label, confidence=case.confidence,
            urgency=case.urgency, model=case.model_name, model_sha256=case.model_sha256,
            answer=case.answer, consent=case.consent, research_consent=case.research_consent,
            body_site=case.body_site, age_band=case.age_band, sex=case.sex,
            referral=case.referral, diagnosis=case.diagnosis,
            reviewed_at=as_utc(case.reviewed_at) if case.reviewed_at else None,
            photo_url=f"/api/v1/cases/{case.id}/photo",
        )


class CaseListResponse(BaseModel):
    total: int = Field(description="cases matching the filters in the caller's scope")
    cases: list[CaseResponse]


class ReviewRequest(BaseModel):
    diagnosis: str | None = Field(
        None, max_length=200, examples=["Psoriasis"],
        description="one of the model's classes, 'unsure', or 'other: <condition>'")
    referral: bool | None = Field(None, description="referred (rujukan)")


def _enum(values: tuple[str, ...], text: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values), "description": text}


CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [UPLOAD_FIELD, "consent"],
            "properties": {
                UPLOAD_FIELD: {"type": "string", "format": "binary",
                               "description": "JPEG, PNG, WebP or BMP photo"},
                "consent": {"type": "string", "enum": ["true"],
                            "description": "the person agreed to the case being kept "
                                           "(anything else: 422)"},
                "research_consent": {"type": "string", "enum": ["true", "false"],
                                     "description": "and to its use to train kulit"},
                "body_site": _enum(vocab.BODY_SITES, "where on the body"),
                "age_band": _enum(vocab.AGE_BANDS, "age band, years"),
                "sex": _enum(vocab.SEXES, "sex"),
                "referral": {"type": "string", "enum": ["true", "false"],
                             "description": "referred (rujukan)"},
            },
        }}},
    }
}

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": d}
    for s, d in [(400, "a body that is not valid JSON or form data"),
                 (401, "no or unknown bearer token"), (403, "the caller's role may not"),
                 (404, "no such case in the caller's scope"), (422, "bad field")]
}
