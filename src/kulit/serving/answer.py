"""The answer a person gets: one rule, used by the API, the pages, `kulit predict` and explain.

`decide` turns calibrated probabilities, the card's threshold, the trust gate's scores and the
photo-quality issue into a status, a label (or None), see-a-doctor and a melanoma alert, in
this order (issue 11):

1. `retake`: the photo is too small, blurred, dark or bright. No disease, no doctor.
2. `not_skin`: gate.not_skin >= not_skin_threshold. No disease, no doctor, no alert.
3. `none_of_these`: gate.other >= other_threshold. No class named; a gentle see-a-doctor.
4. `answered` when the top probability >= threshold, else `uncertain` (see a doctor).
5. Melanoma safety, for statuses 3-4 only: an alert (see a doctor soon, the red badge) when
   P(urgent class) >= melanoma_cutoff, or when an urgent class is the top answer.

A cut-off missing from `card.gate` switches its check off, so a model without a gate answers
as before: answered / uncertain, see a doctor when unsure or when Melanoma is the top answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    from kulit.serving.card import ModelCard
    from kulit.serving.predict import Prediction

Status = Literal["answered", "uncertain", "none_of_these", "not_skin", "retake"]
STATUSES: tuple[str, ...] = get_args(Status)

# Classes that always come with "see a doctor soon" when they fire (the one list).
URGENT_CLASSES = frozenset({"Melanoma"})

# Keys of card.gate read here; a missing key switches that check off.
NOT_SKIN_KEY, OTHER_KEY, MELANOMA_KEY = "not_skin_threshold", "other_threshold", "melanoma_cutoff"


@dataclass(frozen=True)
class Cutoffs:
    """The gate's cut-offs from the card; None = that check is off."""

    not_skin: float | None = None
    other: float | None = None
    melanoma: float | None = None

    @classmethod
    def from_card(cls, gate: Mapping[str, Any] | None) -> Cutoffs:
        def get(key: str) -> float | None:
            v = (gate or {}).get(key)
            return None if v is None else float(v)

        return cls(get(NOT_SKIN_KEY), get(OTHER_KEY), get(MELANOMA_KEY))


@dataclass(frozen=True)
class Answer:
    """What a person is told about one photo; `advice` is a key of the text store."""

    status: Status
    label: str | None  # the class, only when status == "answered"
    confidence: float  # top-1 calibrated probability
    top: list[tuple[str, float]]  # the model's ranking (shown for answered / uncertain)
    see_doctor: bool
    melanoma_alert: bool  # "see a doctor soon" because of an urgent class; the red badge
    advice: str  # "default", "melanoma", "melanoma_possible", "uncertain", "none_of_these",
    #              "not_skin", "retake_too_small" / "_too_dark" / "_too_bright" / "_too_blurred"
    quality: str | None = None  # the photo-quality issue, if any
    gate: dict[str, float] | None = None  # the gate's scores, if the model has a gate
    urgent: dict[str, float] = field(default_factory=dict)  # class -> P, behind the alert

    @property
    def names_classes(self) -> bool:
        """Whether the page may show the class ranking (never for a photo it cannot judge)."""
        return self.status in ("answered", "uncertain")

    def to_dict(self) -> dict[str, Any]:
        """The answer's fields for JSON (API and `kulit predict --json`)."""
        return {
            "status": self.status,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "top": [{"label": c, "probability": round(p, 6)} for c, p in self.top],
            "see_doctor": self.see_doctor,
            "melanoma_alert": self.melanoma_alert,
            "quality": self.quality,
            "gate": None if self.gate is None else {k: round(v, 6) for k, v in self.gate.items()},
        }


def decide(
    probs: np.ndarray | Sequence[float],
    classes: Sequence[str],
    threshold: float,
    *,
    top_k: int = 3,
    gate: Mapping[str, float] | None = None,
    cutoffs: Cutoffs | None = None,
    quality_issue: str | None = None,
) -> Answer:
    """The one rule from prediction to answer (see the module docstring for the order)."""
    p = np.asarray(probs, dtype=np.float64)
    cut = cutoffs or Cutoffs()
    order = np.argsort(-p, kind="stable")[: max(1, min(top_k, len(classes)))]
    top = [(classes[i], float(p[i])) for i in order]
    best, conf = top[0]
    scores = None if gate is None else {k: float(v) for k, v in gate.items()}

    def no_answer(status: Status, advice: str) -> Answer:
        return Answer(status, None, conf, top, see_doctor=False, melanoma_alert=False,
                      advice=advice, quality=quality_issue, gate=scores)

    if quality_issue is not None:
        return no_answer("retake", f"retake_{quality_issue}")
    if scores is not None and cut.not_skin is not None and scores["not_skin"] >= cut.not_skin:
        return no_answer("not_skin", "not_skin")

    status: Status
    if scores is not None and cut.other is not None and scores["other"] >= cut.other:
        status = "none_of_these"
    elif conf >= threshold:
        status = "answered"
    else:
        status = "uncertain"

    index = {c: i for i, c in enumerate(classes)}
    urgent = {c: float(p[index[c]]) for c in sorted(URGENT_CLASSES & set(classes))
              if c == best or (cut.melanoma is not None and p[index[c]] >= cut.melanoma)}
    alert = bool(urgent)
    if alert:
        advice = "melanoma" if best in URGENT_CLASSES else "melanoma_possible"
    else:
        advice = {"answered": "default", "uncertain": "uncertain",
                  "none_of_these": "none_of_these"}[status]
    return Answer(status, best if status == "answered" else None, conf, top,
                  see_doctor=alert or status != "answered", melanoma_alert=alert,
                  advice=advice, quality=quality_issue, gate=scores, urgent=urgent)


def answer_for(pred: Prediction, card: ModelCard) -> Answer:
    """`decide` on a Predictor's output with the model card's cut-offs."""
    return decide(
        pred.probs, pred.classes, pred.threshold, top_k=pred.top_k, gate=pred.gate,
        cutoffs=Cutoffs.from_card(card.gate),
        quality_issue=pred.quality.issue if pred.quality is not None else None,
    )
