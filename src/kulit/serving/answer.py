"""The answer a person gets: one rule, used by the API, the pages, `kulit predict` and explain.

`decide` turns calibrated probabilities, the card's threshold, the shortlist cut-offs
(kulit.serving.shortlist), the trust gate's scores and the photo-quality issue into a status,
a shortlist, an urgency and the advice, in this order:

1. `retake`: the photo is too small, blurred, dark or bright. Nothing named, urgency `none`.
2. `not_skin`: gate.not_skin >= not_skin_threshold. Nothing named, urgency `none`.
3. `none_of_these`: gate.other >= other_threshold. No class named; a gentle see-a-doctor.
4. Otherwise the shortlist (every class over its conformal cut-off, most likely first):
   `answered` when it holds one class (which is then also a confident answer, top probability
   >= threshold), `shortlist` for two or three, `uncertain` for more ("cannot narrow it down").
   A model without a calibrated shortlist answers as before: `answered` (a list of one) when
   confident, else `uncertain` with an empty list.
5. Urgency, for statuses 3-4: `urgent` (red, see a doctor within two weeks, the puskesmas
   referral route) only when an urgent class (Melanoma) is on the shortlist, is the top class,
   or P(urgent class) >= melanoma_cutoff; else `soon` when a SOON_CLASSES condition is on the
   shortlist; else `routine`. Never `urgent` without Melanoma behind it.

A cut-off missing from `card.gate` switches its check off, so a model without a gate answers
without statuses 2 and 3.

`Answer.to_dict` is the answer as JSON, the one shape the API, `kulit predict --json`,
explain and the clinic's records give; `Answer.uncertain` is the one meaning of "uncertain"
(also predictions.csv's column).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from kulit.config import URGENT_CLASS
from kulit.serving.i18n import both
from kulit.serving.shortlist import MAX_NAMED, SECTION, ShortlistRule

if TYPE_CHECKING:
    from kulit.serving.card import ModelCard
    from kulit.serving.predict import Prediction

Status = Literal["answered", "shortlist", "uncertain", "none_of_these", "not_skin", "retake"]
STATUSES: tuple[str, ...] = get_args(Status)
Urgency = Literal["urgent", "soon", "routine", "none"]
URGENCIES: tuple[str, ...] = get_args(Urgency)
# statuses under which the page names classes (the shortlist or, uncalibrated, the ranking)
NAMING = frozenset({"answered", "shortlist", "uncertain"})

# The urgency rule's two lists, the one place they are written.
# `urgent` (red): a class that can kill when missed; see a doctor within one to two weeks.
URGENT_CLASSES = frozenset({URGENT_CLASS})
# `soon`: see a doctor or the puskesmas within days, because the condition spreads to others
# and needs medicine on prescription: impetigo (antibiotics; very contagious), herpes (shingles
# needs antivirals within about 3 days; simplex and shingles blisters are contagious) and
# chickenpox (contagious until crusted; adults, pregnant women and babies need a doctor).
# Ringworm is routine: small patches take cream from a pharmacy; its card says when to go
# (scalp, large areas, no better after two weeks).
SOON_CLASSES = frozenset({"Impetigo", "Herpes", "Chickenpox"})

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
    top: list[tuple[str, float]]  # the model's ranking (top_k classes)
    see_doctor: bool  # urgency urgent or soon, or status uncertain / none_of_these
    melanoma_alert: bool  # urgency == "urgent": an urgent class is behind it; the red badge
    advice: str  # "default", "shortlist", "soon", "melanoma", "melanoma_possible",
    #              "uncertain", "none_of_these", "not_skin", "retake_too_small" / ...
    quality: str | None = None  # the photo-quality issue, if any
    gate: dict[str, float] | None = None  # the gate's scores, if the model has a gate
    urgent: dict[str, float] = field(default_factory=dict)  # class -> P, behind the alert
    # the conditions the photo may show, most likely first ([] when none is named)
    shortlist: list[tuple[str, float]] = field(default_factory=list)
    shortlist_level: float | None = None  # the guarantee's level (None: not calibrated)
    urgency: Urgency = "none"

    @property
    def names_classes(self) -> bool:
        """Whether the page may show classes (never for a photo it cannot judge)."""
        return self.status in NAMING

    @property
    def uncertain(self) -> bool:
        """"Uncertain" wherever it is said: the status, never the threshold alone."""
        return self.status == "uncertain"

    def to_dict(self) -> dict[str, Any]:
        """The answer as JSON: the API, `kulit predict --json`, explain and the clinic's
        records all give these fields, with these values."""
        return {
            "status": self.status,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "top": [{"label": c, "probability": round(p, 6)} for c, p in self.top],
            "see_doctor": self.see_doctor,
            "melanoma_alert": self.melanoma_alert,
            "quality": self.quality,
            "gate": None if self.gate is None else {k: round(v, 6) for k, v in self.gate.items()},
            "shortlist": [{"class": c, "probability": round(p, 6)} for c, p in self.shortlist],
            "shortlist_level": self.shortlist_level,
            "urgency": self.urgency,
            "uncertain": self.uncertain,  # kept for older clients: status == "uncertain"
            "advice": both(f"advice_{self.advice}"),
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
    shortlist: ShortlistRule | None = None,
) -> Answer:
    """The one rule from prediction to answer (see the module docstring for the order)."""
    p = np.asarray(probs, dtype=np.float64)
    cut = cutoffs or Cutoffs()
    order = np.argsort(-p, kind="stable")[: max(1, min(top_k, len(classes)))]
    top = [(classes[i], float(p[i])) for i in order]
    best, conf = top[0]
    scores = None if gate is None else {k: float(v) for k, v in gate.items()}
    level = None if shortlist is None else shortlist.level

    def no_answer(status: Status, advice: str) -> Answer:
        return Answer(status, None, conf, top, see_doctor=False, melanoma_alert=False,
                      advice=advice, quality=quality_issue, gate=scores,
                      shortlist_level=level, urgency="none")

    if quality_issue is not None:
        return no_answer("retake", f"retake_{quality_issue}")
    if scores is not None and cut.not_skin is not None and scores["not_skin"] >= cut.not_skin:
        return no_answer("not_skin", "not_skin")

    status: Status
    named: list[int]
    if scores is not None and cut.other is not None and scores["other"] >= cut.other:
        status, named = "none_of_these", []
    elif shortlist is None:  # not calibrated: a list of one when confident, else none
        status, named = ("answered", [int(order[0])]) if conf >= threshold else ("uncertain", [])
    else:
        named = shortlist.members(p, threshold)
        status = ("answered" if len(named) == 1 else
                  "shortlist" if len(named) <= MAX_NAMED else "uncertain")
    listed = [(classes[i], float(p[i])) for i in named]
    on_list = {c for c, _ in listed}

    index = {c: i for i, c in enumerate(classes)}
    urgent = {c: float(p[index[c]]) for c in sorted(URGENT_CLASSES & set(classes))
              if c in on_list or c == best
              or (cut.melanoma is not None and p[index[c]] >= cut.melanoma)}
    urgency: Urgency
    if urgent:
        urgency = "urgent"
        advice = "melanoma" if on_list & URGENT_CLASSES or best in URGENT_CLASSES \
            else "melanoma_possible"
    elif on_list & SOON_CLASSES:
        urgency, advice = "soon", "soon"
    else:
        urgency = "routine"
        advice = {"answered": "default", "shortlist": "shortlist", "uncertain": "uncertain",
                  "none_of_these": "none_of_these"}[status]
    return Answer(status, best if status == "answered" else None, conf, top,
                  see_doctor=urgency in ("urgent", "soon")
                  or status in ("uncertain", "none_of_these"),
                  melanoma_alert=urgency == "urgent", advice=advice, quality=quality_issue,
                  gate=scores, urgent=urgent, shortlist=listed, shortlist_level=level,
                  urgency=urgency)


def answer_for(pred: Prediction, card: ModelCard) -> Answer:
    """`decide` on a Predictor's output with the model card's cut-offs and shortlist."""
    return decide(
        pred.probs, pred.classes, pred.threshold, top_k=pred.top_k, gate=pred.gate,
        cutoffs=Cutoffs.from_card(card.gate),
        quality_issue=pred.quality.issue if pred.quality is not None else None,
        shortlist=ShortlistRule.from_card(card.section(SECTION), card.classes),
    )
