"""The shortlist: conformal cut-offs, the statuses and urgency of the one answer rule,
the figures, the page in Indonesian (TestClient and Chromium at 360 px)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kulit.build.shortlist_fit import bin_cutoffs, fit_cutoffs, group_figures
from kulit.serving.answer import SOON_CLASSES, URGENT_CLASSES, Answer, Cutoffs, decide
from kulit.serving.i18n import STRINGS, condition_name
from kulit.serving.predict import Prediction, Predictor
from kulit.serving.shortlist import ShortlistRule, guarantee_tenths
from tests.conftest import image_bytes, make_image, serve_on_loopback, write_onnx_model_dir

CLASSES = ["Chickenpox", "Herpes", "Impetigo", "Melanoma", "Psoriasis", "Ringworm", "Vitiligo",
           "Warts"]
IDX = {c: i for i, c in enumerate(CLASSES)}
CUT = Cutoffs(not_skin=0.5, other=0.5, melanoma=0.2)
SKIN = {"not_skin": 0.1, "other": 0.1}
RULE = ShortlistRule(0.9, np.full(len(CLASSES), 0.1))  # on the list: P >= 0.1
THRESHOLD = 0.8


def probs(**by_class: float) -> np.ndarray:
    """Probabilities over CLASSES: the named ones, the rest shares what is left evenly."""
    p = np.zeros(len(CLASSES))
    for c, v in by_class.items():
        p[IDX[c]] = v
    rest = [i for i, c in enumerate(CLASSES) if c not in by_class]
    p[rest] = (1 - p.sum()) / len(rest)
    return p


def answer(p: np.ndarray, gate: dict[str, float] | None = SKIN, quality: str | None = None,
           rule: ShortlistRule | None = RULE) -> Answer:
    return decide(p, CLASSES, THRESHOLD, gate=gate, cutoffs=CUT, quality_issue=quality,
                  shortlist=rule)


# --- the conformal fit ---

def test_cutoff_admits_exactly_what_crepes_admits() -> None:
    """A class is on the list iff crepes' non-smoothed p-value of its score is >= 1 - level."""
    from crepes import ConformalClassifier

    rng = np.random.default_rng(0)
    true_p = rng.beta(2, 1, 300)
    bins = rng.choice(["a", "b", "c"], 300)
    level = 0.9
    cut = bin_cutoffs(true_p, bins, level)
    cc = ConformalClassifier().fit(1 - true_p, bins=bins)
    cand = rng.uniform(0, 1, 2000)
    for b in ("a", "b", "c"):
        p = cc.predict_p(1 - cand, bins=np.full(len(cand), b), smoothing=False)
        assert np.array_equal(p >= 1 - level, cand >= cut[b]), b


def test_a_bin_too_small_for_the_level_lists_every_class() -> None:
    # 9 photos cannot promise 90%: crepes' p-value is >= 0.1 even above every score seen
    assert bin_cutoffs(np.linspace(0.5, 0.9, 9), np.zeros(9, int), 0.9) == {0: 0.0}
    assert bin_cutoffs(np.linspace(0.5, 0.9, 40), np.zeros(40, int), 0.9)[0] > 0.5


def test_coverage_on_exchangeable_photos() -> None:
    """Calibrated on one half, the list holds the true class for ~90% of the other half, per
    source, and the lowest cut-off across sources is what a photo of unknown source gets."""
    rng = np.random.default_rng(1)
    n = 6000
    source = rng.choice(["sharp", "blurry"], n)
    sharp = np.where(source == "sharp", 4.0, 0.7)[:, None]
    logits = rng.normal(0, 1, (n, len(CLASSES))) * sharp
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(len(CLASSES), p=row) for row in p])
    cal, test = np.arange(n) < n // 2, np.arange(n) >= n // 2
    for method in ("source-class", "source", "pooled", "class"):
        cut, detail = fit_cutoffs(p[cal], y[cal], source[cal], CLASSES, 0.9, method)
        on = p[np.arange(n), y] >= cut[y]
        assert on[test].mean() >= 0.88, method  # on average, every method
        if method in ("source-class", "source"):  # Mondrian by source: each source too
            for s in ("sharp", "blurry"):
                cov = on[test & (source == s)].mean()
                assert cov >= 0.87, (method, s, cov)
        if method == "source":
            assert np.allclose(cut, min(d["cutoff"] for d in detail.values()))
    cut_sc, detail = fit_cutoffs(p[cal], y[cal], source[cal], CLASSES, 0.9, "source-class")
    for c in CLASSES:  # each class: the lowest of its sources' cut-offs
        assert cut_sc[IDX[c]] == pytest.approx(min(detail[f"{s}|{c}"]["cutoff"]
                                                   for s in ("sharp", "blurry")), abs=1e-6)


def test_a_tiny_source_cell_takes_its_class_cut_off_over_every_source() -> None:
    """7 melanomas from a third source cannot promise 90% by themselves; rather than listing
    Melanoma for every photo, that cell uses Melanoma's cut-off over all sources."""
    rng = np.random.default_rng(2)
    n = 400
    y = rng.integers(0, len(CLASSES), n)
    p = rng.dirichlet(np.ones(len(CLASSES)), n) * 0.5
    p[np.arange(n), y] += 0.5
    source = np.array(["big"] * n, dtype=object)
    mel = IDX["Melanoma"]
    extra_p = np.full((7, len(CLASSES)), 0.5 / 7)
    extra_p[:, mel] = 0.5
    p2 = np.vstack([p, extra_p])
    y2 = np.append(y, [mel] * 7)
    s2 = np.append(source, ["tiny"] * 7)
    cut, detail = fit_cutoffs(p2, y2, s2, CLASSES, 0.9, "source-class")
    assert detail["tiny|Melanoma"] == {"cutoff": pytest.approx(detail["tiny|Melanoma"]["cutoff"]),
                                       "n": 7, "own_cell": False}
    assert cut[mel] > 0.3  # not 0: Melanoma is not put on every list
    alone, _ = fit_cutoffs(p2, y2, s2, CLASSES, 0.9, "source-class", min_bin=1)
    assert alone[mel] == 0.0  # what the tiny cell alone would have done


def test_fit_refuses_a_bad_level_or_method() -> None:
    from kulit.errors import DataError

    p, y, s = np.full((4, 8), 0.125), np.zeros(4, int), np.array(["a"] * 4)
    with pytest.raises(DataError, match="level"):
        fit_cutoffs(p, y, s, CLASSES, 1.0)
    with pytest.raises(DataError, match="method"):
        fit_cutoffs(p, y, s, CLASSES, 0.9, "magic")


# --- the list and the statuses ---

def test_members_top_first_and_a_single_unsure_class_takes_the_next() -> None:
    assert RULE.members(probs(Psoriasis=0.9, Ringworm=0.05), THRESHOLD) == [IDX["Psoriasis"]]
    # one class over its cut-off but below the confident threshold: the next one joins
    assert RULE.members(probs(Psoriasis=0.7, Ringworm=0.09), THRESHOLD) == [
        IDX["Psoriasis"], IDX["Ringworm"]]
    # the top class is always listed, even under its own cut-off
    strict = ShortlistRule(0.9, np.full(len(CLASSES), 0.99))
    assert strict.members(probs(Warts=0.95), THRESHOLD) == [IDX["Warts"]]


def test_from_card_needs_a_cutoff_for_every_class() -> None:
    section = {"level": 0.9, "cutoffs": {c: 0.1 for c in CLASSES}}
    rule = ShortlistRule.from_card(section, CLASSES)
    assert rule is not None and rule.level == 0.9
    assert ShortlistRule.from_card({}, CLASSES) is None
    assert ShortlistRule.from_card({"level": 0.9, "cutoffs": {"Warts": 0.1}}, CLASSES) is None


# probs, gate, quality -> status, shortlist, urgency, advice
STATUS_CASES = [
    (probs(Warts=0.9), SKIN, None, "answered", ["Warts"], "routine", "default"),
    (probs(Psoriasis=0.6, Ringworm=0.3), SKIN, None, "shortlist", ["Psoriasis", "Ringworm"],
     "routine", "shortlist"),
    (probs(Psoriasis=0.5, Ringworm=0.2, Vitiligo=0.2), SKIN, None, "shortlist",
     ["Psoriasis", "Ringworm", "Vitiligo"], "routine", "shortlist"),
    (probs(Impetigo=0.6, Herpes=0.3), SKIN, None, "shortlist", ["Impetigo", "Herpes"], "soon",
     "soon"),
    (probs(Chickenpox=0.95), SKIN, None, "answered", ["Chickenpox"], "soon", "soon"),
    (probs(Psoriasis=0.4, Melanoma=0.15, Warts=0.3), SKIN, None, "shortlist",
     ["Psoriasis", "Warts", "Melanoma"], "urgent", "melanoma"),
    # Melanoma not on the list, but over the gate's melanoma cut-off: still urgent
    (probs(Psoriasis=0.75, Melanoma=0.2), SKIN, None, "shortlist", ["Psoriasis", "Melanoma"],
     "urgent", "melanoma"),
    (probs(Psoriasis=0.2, Ringworm=0.2, Vitiligo=0.2, Warts=0.2), SKIN, None, "uncertain",
     ["Psoriasis", "Ringworm", "Vitiligo", "Warts"], "routine", "uncertain"),
    (probs(Psoriasis=0.2, Ringworm=0.2, Vitiligo=0.2, Herpes=0.2), SKIN, None, "uncertain",
     ["Herpes", "Psoriasis", "Ringworm", "Vitiligo"], "soon", "soon"),
    (probs(Psoriasis=0.9), {"not_skin": 0.1, "other": 0.9}, None, "none_of_these", [],
     "routine", "none_of_these"),
    (probs(Melanoma=0.3, Psoriasis=0.6), {"not_skin": 0.1, "other": 0.9}, None,
     "none_of_these", [], "urgent", "melanoma_possible"),
    # a photo it cannot judge is never urgent, whatever the probabilities say
    (probs(Melanoma=0.95), {"not_skin": 0.9, "other": 0.9}, None, "not_skin", [], "none",
     "not_skin"),
    (probs(Melanoma=0.95), SKIN, "too_dark", "retake", [], "none", "retake_too_dark"),
]


@pytest.mark.parametrize("p,gate,quality,status,listed,urgency,advice", STATUS_CASES)
def test_every_status_and_urgency(p: np.ndarray, gate: dict[str, float], quality: str | None,
                                  status: str, listed: list[str], urgency: str,
                                  advice: str) -> None:
    a = answer(p, gate, quality)
    assert (a.status, [c for c, _ in a.shortlist], a.urgency, a.advice) == (
        status, listed, urgency, advice)
    assert a.melanoma_alert == (urgency == "urgent")
    assert a.label == (listed[0] if status == "answered" else None)
    assert a.shortlist_level == 0.9
    d = a.to_dict()
    assert d["shortlist"] == [{"class": c, "probability": round(q, 6)} for c, q in a.shortlist]
    assert d["urgency"] == urgency and d["shortlist_level"] == 0.9
    for lang in ("id", "en"):
        assert STRINGS[lang][f"advice_{a.advice}"]


def test_without_calibration_the_answer_is_as_before() -> None:
    a = answer(probs(Warts=0.9), rule=None)
    assert (a.status, a.label, a.shortlist, a.shortlist_level) == (
        "answered", "Warts", [("Warts", pytest.approx(0.9))], None)
    b = answer(probs(Warts=0.5, Herpes=0.3), rule=None)
    assert (b.status, b.shortlist, b.urgency) == ("uncertain", [], "routine")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.001, 1.0), min_size=8, max_size=8),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.01, 0.5))
def test_never_red_without_melanoma(raw: list[float], not_skin: float, other: float,
                                    cut: float) -> None:
    """Urgent only with Melanoma on the list, at the top or over its cut-off; a photo that is
    not skin is never urgent (a healthy face the gate calls not skin included)."""
    p = np.array(raw) / sum(raw)
    rule = ShortlistRule(0.9, np.full(8, cut))
    a = answer(p, {"not_skin": not_skin, "other": other}, rule=rule)
    mel = p[IDX["Melanoma"]]
    on_list = "Melanoma" in {c for c, _ in a.shortlist}
    top = int(np.argmax(p)) == IDX["Melanoma"]
    if a.urgency == "urgent":
        assert on_list or top or mel >= CUT.melanoma
    if a.status == "not_skin":
        assert a.urgency == "none" and not a.see_doctor
    if a.status in ("answered", "shortlist", "uncertain") and (on_list or mel >= CUT.melanoma):
        assert a.urgency == "urgent"
    if a.urgency == "soon":
        assert {c for c, _ in a.shortlist} & SOON_CLASSES
    assert URGENT_CLASSES == {"Melanoma"}


def test_figures_count_coverage_size_and_useful_answers() -> None:
    said = [answer(probs(Warts=0.9)),  # answered, right
            answer(probs(Psoriasis=0.6, Ringworm=0.3)),  # shortlist of 2, right (Ringworm)
            answer(probs(Psoriasis=0.5, Ringworm=0.2, Vitiligo=0.2)),  # 3, wrong (Herpes)
            answer(probs(Psoriasis=0.9), {"not_skin": 0.9, "other": 0.0})]  # not skin
    labels = ["Warts", "Ringworm", "Herpes", "Psoriasis"]
    f = group_figures(said, labels, np.ones(4, bool))
    assert f["n"] == 4
    assert (f["coverage"]["k"], f["coverage"]["n"]) == (2, 3)  # among photos given a list
    assert f["mean_size"] == pytest.approx(2.0)
    assert (f["useful"]["k"], f["useful"]["n"]) == (2, 4)  # one or two conditions
    assert f["statuses"] == {"answered": 1, "not_skin": 1, "shortlist": 2}
    assert f["urgency"] == {"none": 1, "routine": 3}


def test_guarantee_is_the_measured_coverage() -> None:
    def section(rate: float | None) -> dict[str, Any]:
        return {"level": 0.9, "figures": {"per_source": {"all": {"coverage": {"rate": rate}}}}}

    assert guarantee_tenths(section(0.927)) == 9
    assert guarantee_tenths(section(0.84)) == 8  # what was measured, not the level
    assert guarantee_tenths(section(None)) is None and guarantee_tenths({}) is None


# --- the page ---

SHORTLIST_PROBS = probs(Psoriasis=0.55, Ringworm=0.35)


class FixedPredictor(Predictor):
    """The model folder's card (with its shortlist), but fixed probabilities."""

    def __init__(self, model_dir: Path, fixed: np.ndarray) -> None:
        super().__init__(model_dir)
        self.fixed = np.asarray(fixed, np.float64)

    def predict_one(self, source: Any, top_k: int = 3, heatmap: bool = False,
                    first_layer: bool = False) -> Prediction:
        return Prediction(classes=self.classes, probs=self.fixed, logits=np.log(self.fixed),
                          threshold=self.card.threshold, top_k=top_k,
                          image=Image.new("RGB", (32, 32), (200, 150, 140)), source="upload")


@pytest.fixture(scope="module")
def shortlist_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real model folder whose card has a shortlist section with measured figures."""
    from kulit.serving.model_dir import ModelDir

    model = write_onnx_model_dir(tmp_path_factory.mktemp("sl") / "m", CLASSES)
    card = json.loads((model / "card.json").read_text())
    card["threshold"] = THRESHOLD
    (model / "card.json").write_text(json.dumps(card))
    ModelDir(model).write_section("shortlist", {
        "level": 0.9, "method": "source-class", "cutoffs": {c: 0.1 for c in CLASSES},
        "figures": {"per_source": {"all": {"coverage": {"k": 9, "n": 10, "rate": 0.9}}}}})
    return model


def page_app(model: Path, fixed: np.ndarray) -> Any:
    from kulit.web.app import create_app
    from kulit.web.deps import get_predictor
    from kulit.web.settings import Settings

    app = create_app(Settings(model_dir=model, device=False))
    stub = FixedPredictor(model, fixed)
    app.dependency_overrides[get_predictor] = lambda: stub
    return app


def test_shortlist_page_and_api(shortlist_model: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(page_app(shortlist_model, SHORTLIST_PROBS)) as client:
        photo = image_bytes(make_image(0))
        html = client.post("/predict?lang=id", files={"image": ("a.jpg", photo, "image/jpeg")}
                           ).text
        body = client.post("/api/v1/predict", files={"image": ("a.jpg", photo, "image/jpeg")}
                           ).json()
    assert "Paling mungkin salah satu dari: Psoriasis atau Kurap." in html
    assert STRINGS["id"]["shortlist_guarantee"].format(k=9) in html
    assert 'data-pair="Psoriasis/Ringworm"' in html and "dermnetnz.org" in html
    assert 'class="urgent"' not in html  # routine: no red box
    assert re.findall(r'class="bar-row[^"]*" data-class="([^"]+)"', html) == [
        "Psoriasis", "Ringworm"]
    assert STRINGS["id"]["advice_shortlist"] in html  # the print view's advice
    assert body["status"] == "shortlist" and body["urgency"] == "routine"
    assert [x["class"] for x in body["shortlist"]] == ["Psoriasis", "Ringworm"]
    assert body["shortlist_level"] == 0.9


def test_melanoma_on_the_list_is_red_with_the_referral_route(shortlist_model: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(page_app(shortlist_model, probs(Psoriasis=0.5, Melanoma=0.15, Warts=0.3))
                    ) as client:
        html = client.post("/predict?lang=id", files={
            "image": ("a.jpg", image_bytes(make_image(0)), "image/jpeg")}).text
    assert 'class="urgent"' in html and "rujukan" in html and "spesialis kulit" in html
    assert "paling mirip dengan melanoma" not in html  # the list names it; no contradiction
    assert "Tidak ada kondisi yang cukup cocok" not in html


def test_about_and_model_card_show_the_measured_shortlist(shortlist_model: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(page_app(shortlist_model, SHORTLIST_PROBS)) as client:
        about = client.get("/about?lang=id").text
        card = client.get("/api/v1/model").json()
    assert STRINGS["id"]["about_shortlist_title"] in about and "90,0% (9/10)" in about
    assert card["shortlist"]["level"] == 0.9 and card["shortlist"]["cutoffs"]["Warts"] == 0.1


@pytest.fixture(scope="module")
def shortlist_server(shortlist_model: Path) -> Iterator[str]:
    with serve_on_loopback(page_app(shortlist_model, SHORTLIST_PROBS)) as url:
        yield url


@pytest.mark.e2e
def test_shortlist_page_in_indonesian_at_360px(shortlist_server: str, browser: Any,
                                               tmp_path: Path) -> None:
    """A person on a phone: the list, its guarantee, a card per candidate and the look-alike
    line, in Indonesian, without sideways scrolling."""
    photo = tmp_path / "kulit.jpg"
    photo.write_bytes(image_bytes(make_image(3)))
    ctx = browser.new_context(viewport={"width": 360, "height": 740}, locale="id-ID")
    page = ctx.new_page()
    page.goto(f"{shortlist_server}/?lang=id")
    page.set_input_files("#image", str(photo))
    page.click("#submit")
    page.wait_for_selector("#verdict")
    verdict = page.text_content("#verdict") or ""
    assert verdict.strip() == "Paling mungkin salah satu dari: Psoriasis atau Kurap."
    assert page.is_visible("#guarantee")
    assert "9 dari 10" in (page.text_content("#guarantee") or "")
    cards = page.eval_on_selector_all("details.condition", "els => els.map(e => e.dataset.class)")
    assert cards == ["Psoriasis", "Ringworm"]
    assert page.is_visible('li[data-pair="Psoriasis/Ringworm"]')
    assert page.locator("section.urgent").count() == 0
    assert condition_name("Ringworm", "id") == "Kurap"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    ctx.close()
