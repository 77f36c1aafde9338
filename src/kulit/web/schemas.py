"""The API's request/response models and OpenAPI fragments, shared by the routers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

UPLOAD_FIELD = "image"  # the multipart field every upload (API and pages) is read from


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_image"])
    message: str = Field(examples=["upload: not an image (JPEG, PNG, WebP or BMP)"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class TopItem(BaseModel):
    label: str
    probability: float = Field(ge=0, le=1, description="calibrated (temperature-scaled)")


class ShortlistItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class", serialization_alias="class")
    probability: float = Field(ge=0, le=1, description="calibrated (temperature-scaled)")


class GateScoresResponse(BaseModel):
    not_skin: float = Field(ge=0, le=1, description="score that the photo is not a close-up "
                                                    "of skin")
    other: float = Field(ge=0, le=1, description="score that it is skin with a condition "
                                                 "outside the model's classes")


class PredictResponse(BaseModel):
    model: str = Field(description="model id from the card")
    status: Literal["answered", "shortlist", "uncertain", "none_of_these", "not_skin",
                    "retake"] = Field(
        description="answered: a shortlist of one class, also a confident one; shortlist: two "
                    "or three classes; uncertain: more than three (cannot narrow it down), or "
                    "no class sure enough on a model without a calibrated shortlist; "
                    "none_of_these: skin, but like none of the model's classes; not_skin: not "
                    "a close-up of skin; retake: photo too small, blurred, dark or bright (see "
                    "`quality`)")
    shortlist: list[ShortlistItem] = Field(
        description="the conditions the photo may show, most likely first (conformal set at "
                    "`shortlist_level`); [] when no class is named")
    shortlist_level: float | None = Field(
        description="the shortlist's coverage level (e.g. 0.9), null without calibration")
    urgency: Literal["urgent", "soon", "routine", "none"] = Field(
        description="urgent: Melanoma on the shortlist or above its cut-off (see a doctor "
                    "within two weeks; a puskesmas can refer); soon: a condition on the list "
                    "spreads or needs a prescription; routine: otherwise; none: not_skin or "
                    "retake")
    top: list[TopItem] = Field(description="the model's ranking; an answer only when status "
                                           "is answered or uncertain")
    label: str | None = Field(description="the class, only when status is answered")
    confidence: float = Field(description="probability of the top class")
    uncertain: bool = Field(description="status == 'uncertain' (kept for older clients)")
    see_doctor: bool = Field(description="see a doctor: urgency urgent or soon, status "
                                         "uncertain or none_of_these; never for not_skin or "
                                         "retake. Older field; see `urgency`")
    melanoma_alert: bool = Field(description="urgency == 'urgent': Melanoma is on the "
                                             "shortlist, the top class, or above its cut-off")
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


class RateResponse(BaseModel):
    """k of n photos, the share and its Wilson 95% interval: every gate figure's shape."""

    k: int
    n: int
    rate: float | None = Field(description="k / n, null when n is 0")
    ci95: list[float] | None = Field(description="Wilson 95% interval [low, high]")


class SelectiveResponse(BaseModel):
    """Answering only when the top probability is at least the threshold."""

    model_config = ConfigDict(extra="allow")
    threshold: float
    coverage: float | None = Field(description="share of test photos answered")
    accuracy: float | None = Field(description="share of those answers that were right")
    n: int = Field(description="test photos answered")


class ShareRatioResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    class_: str = Field(alias="class", serialization_alias="class")
    ratio: float = Field(description="predicted share / true share")
    predicted: float
    true: float


class SourceMetricsResponse(BaseModel):
    """Headline test numbers of one data source (or of all test photos)."""

    model_config = ConfigDict(extra="allow")
    n: int | None = None
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    macro_f1: float | None = None
    top3_accuracy: float | None = None
    ece: float | None = None
    ci95: dict[str, list[float] | None] | None = Field(
        None, description="bootstrap 95% intervals of accuracy and balanced_accuracy")
    at_threshold: SelectiveResponse | None = Field(
        None, description="confident answers at the card's threshold")
    max_share_ratio: ShareRatioResponse | None = Field(
        None, description="the class predicted most above its true share in this source")


class CardMetricsResponse(SourceMetricsResponse):
    split: str | None = Field(None, description="the split measured, e.g. test")
    per_class: list[dict[str, Any]] | None = None
    per_source: dict[str, SourceMetricsResponse] | None = Field(
        None, description="the same numbers per data source (e.g. skin8, skin8-web)")
    per_band: dict[str, Any] | None = Field(
        None, description="figures per Fitzpatrick skin-type band (I-II, III-IV, V-VI): "
                          "'labelled' by the data's manifest (atlas/), 'estimated' from the "
                          "photo's colours (ITA) for every source; per group ('all', a source) "
                          "and band: n, accuracy and top3_accuracy ({k, n, rate, ci95}), "
                          "balanced_accuracy, confident, confident_right, shortlist")


class GateCardResponse(BaseModel):
    """The trust gate's cut-offs and the figures measured on held-out photos."""

    model_config = ConfigDict(extra="allow")
    not_skin_threshold: float | None = Field(
        None, description="gate not_skin score at or above this -> status not_skin")
    other_threshold: float | None = Field(
        None, description="gate other score at or above this -> status none_of_these")
    melanoma_cutoff: float | None = Field(
        None, description="P(Melanoma) at or above this -> see a doctor soon")
    tuned_on: dict[str, Any] | None = Field(
        None, description="what the scorers and cut-offs were fitted on")
    figures: dict[str, Any] | None = Field(
        None, description="held-out figures (`kulit gate`): each a rate {k, n, rate, ci95}, "
                          "or one rate per group ('all', a source, a category)")


class ServedResponse(BaseModel):
    """Which file this server runs (`kulit.serving.model_dir.served_file`) and its temperature."""

    precision: str = Field(description="int8 (model-int8.onnx passed its check) or fp32")
    file: str
    temperature: float = Field(description="the temperature the served probabilities use")


class ModelCardResponse(BaseModel):
    """The model card (card.json): what serving knows about the model, and how it measured."""

    model_config = ConfigDict(extra="allow")
    name: str
    classes: list[str]
    backbone: str
    preprocessing: dict[str, Any]
    temperature: float
    threshold: float = Field(description="a top probability at least this is a confident "
                                         "answer; whether a person is told uncertain is "
                                         "the answer's status")
    metrics: CardMetricsResponse
    data: dict[str, Any]
    limits: list[str | dict[str, str]]
    gate: GateCardResponse | None = Field(
        None, description="the trust gate, or null/{} when the model has none")
    shortlist: dict[str, Any] | None = Field(
        None, description="the conformal shortlist (`kulit shortlist`): level, method, "
                          "cut-offs per class, and figures per source, per skin-type band "
                          "and the urgency table; absent when not calibrated")
    schema_version: int
    served: ServedResponse


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
