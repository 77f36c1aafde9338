"""answer.decide: the one rule from a prediction to what a person is told, case by case."""

from __future__ import annotations

import pytest

from kulit.serving.answer import STATUSES, URGENT_CLASSES, Cutoffs, decide
from kulit.serving.i18n import STRINGS

CLASSES = ["Herpes", "Melanoma", "Warts"]
CUT = Cutoffs(not_skin=0.5, other=0.5, melanoma=0.1)
NO_GATE = None
SKIN = {"not_skin": 0.1, "other": 0.1}

# probs (Herpes, Melanoma, Warts), gate scores, cut-offs, quality issue ->
# status, label, see_doctor, melanoma_alert, advice
CASES = [
    # 1. retake first: even a confident Melanoma with a not-skin score gets no doctor, no alert
    ((0.05, 0.9, 0.05), {"not_skin": 0.9, "other": 0.9}, CUT, "too_dark",
     ("retake", None, False, False, "retake_too_dark")),
    ((0.1, 0.1, 0.8), SKIN, CUT, "too_blurred",
     ("retake", None, False, False, "retake_too_blurred")),
    # 2. not skin before none-of-these; a car is not told to see a doctor
    ((0.05, 0.9, 0.05), {"not_skin": 0.9, "other": 0.9}, CUT, None,
     ("not_skin", None, False, False, "not_skin")),
    ((0.1, 0.1, 0.8), {"not_skin": 0.5, "other": 0.0}, CUT, None,  # at the cut-off: rejected
     ("not_skin", None, False, False, "not_skin")),
    ((0.15, 0.05, 0.8), {"not_skin": 0.49, "other": 0.0}, CUT, None,  # just below: answered
     ("answered", "Warts", False, False, "default")),
    # 3. none of these: no class named, a gentle see-a-doctor; the melanoma alert still fires
    ((0.1, 0.05, 0.85), {"not_skin": 0.1, "other": 0.7}, CUT, None,
     ("none_of_these", None, True, False, "none_of_these")),
    ((0.1, 0.15, 0.75), {"not_skin": 0.1, "other": 0.7}, CUT, None,
     ("none_of_these", None, True, True, "melanoma_possible")),
    ((0.15, 0.05, 0.8), {"not_skin": 0.1, "other": 0.49}, CUT, None,
     ("answered", "Warts", False, False, "default")),
    # 4. threshold 0.6: at it answered, below it uncertain (top 3 kept, see a doctor)
    ((0.35, 0.05, 0.6), SKIN, CUT, None, ("answered", "Warts", False, False, "default")),
    ((0.36, 0.05, 0.59), SKIN, CUT, None, ("uncertain", None, True, False, "uncertain")),
    # 5. melanoma safety: above the cut-off even when another class is the answer ...
    ((0.05, 0.1, 0.85), SKIN, CUT, None, ("answered", "Warts", True, True,
                                          "melanoma_possible")),
    ((0.06, 0.09, 0.85), SKIN, CUT, None, ("answered", "Warts", False, False, "default")),
    ((0.3, 0.11, 0.59), SKIN, CUT, None, ("uncertain", None, True, True, "melanoma_possible")),
    # ... and always when Melanoma is the top answer
    ((0.1, 0.8, 0.1), SKIN, CUT, None, ("answered", "Melanoma", True, True, "melanoma")),
    ((0.3, 0.4, 0.3), NO_GATE, Cutoffs(), None, ("uncertain", None, True, True, "melanoma")),
    # no gate in the model dir / no cut-offs in the card: those checks are off (as before)
    ((0.1, 0.3, 0.6), NO_GATE, CUT, None, ("answered", "Warts", True, True,
                                          "melanoma_possible")),
    ((0.1, 0.3, 0.6), NO_GATE, Cutoffs(), None, ("answered", "Warts", False, False, "default")),
    ((0.1, 0.1, 0.8), {"not_skin": 0.99, "other": 0.99}, Cutoffs(), None,
     ("answered", "Warts", False, False, "default")),
    ((0.1, 0.1, 0.8), {"not_skin": 0.99, "other": 0.99}, Cutoffs(other=0.5), None,
     ("none_of_these", None, True, False, "none_of_these")),
]


@pytest.mark.parametrize("probs,gate,cut,quality,want", CASES)
def test_decide(probs, gate, cut, quality, want) -> None:
    a = decide(probs, CLASSES, 0.6, gate=gate, cutoffs=cut, quality_issue=quality)
    assert (a.status, a.label, a.see_doctor, a.melanoma_alert, a.advice) == want
    assert a.status in STATUSES
    assert a.quality == quality and a.gate == gate
    assert [c for c, _ in a.top] == sorted(CLASSES, key=lambda c: -probs[CLASSES.index(c)])
    assert a.names_classes == (a.status in ("answered", "uncertain"))
    # the badge sits exactly on the urgent classes behind the alert
    assert bool(a.urgent) == a.melanoma_alert and set(a.urgent) <= URGENT_CLASSES
    for lang in ("id", "en"):
        assert STRINGS[lang][f"advice_{a.advice}"]


def test_cutoffs_from_the_card() -> None:
    assert Cutoffs.from_card({}) == Cutoffs()
    assert Cutoffs.from_card(None) == Cutoffs()
    c = Cutoffs.from_card({"not_skin_threshold": 0.7, "melanoma_cutoff": "0.05", "x": 1})
    assert (c.not_skin, c.other, c.melanoma) == (0.7, None, 0.05)


def test_top_k_and_json() -> None:
    a = decide([0.2, 0.5, 0.3], CLASSES, 0.6, top_k=2)
    assert [c for c, _ in a.top] == ["Melanoma", "Warts"]
    d = a.to_dict()
    assert d["status"] == "uncertain" and d["label"] is None and d["gate"] is None
    assert d["melanoma_alert"] and d["see_doctor"] and d["quality"] is None


def test_every_status_and_issue_has_texts_in_both_languages() -> None:
    from kulit.serving.quality import ISSUES

    keys = {"default", "melanoma", "melanoma_possible", "uncertain", "none_of_these",
            "not_skin"} | {f"retake_{i}" for i in ISSUES}
    for lang in ("id", "en"):
        for k in keys:
            assert STRINGS[lang][f"advice_{k}"]
        for s in ("not_skin", "retake", "none_of_these"):
            assert STRINGS[lang][f"verdict_{s}"]
