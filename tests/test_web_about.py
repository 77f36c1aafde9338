"""The card's claims per data source and its trust figures: the About page in both languages
and /api/v1/model."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from kulit.build.slices import rate
from kulit.serving.card import load_card, save_card
from kulit.serving.i18n import STRINGS
from kulit.web.app import create_app
from kulit.web.schemas import ModelCardResponse
from kulit.web.settings import Settings
from tests.test_web_phone import ALLOWED, ENGLISH
from tests.test_web_ui import visible_text


def hits(k: int, n: int) -> np.ndarray:
    return np.array([True] * k + [False] * (n - k))


def source_metrics(n: int, acc: float, bal: float, answered: int, right: int
                   ) -> dict[str, Any]:
    return {"n": n, "accuracy": acc, "balanced_accuracy": bal, "macro_f1": bal - 0.01,
            "top3_accuracy": 0.97, "ece": 0.042,
            "ci95": {"accuracy": [acc - 0.05, acc + 0.04], "balanced_accuracy": [bal - 0.06,
                                                                                 bal + 0.05]},
            "at_threshold": {"threshold": 0.5, "coverage": answered / n,
                             "accuracy": right / answered, "n": answered}}


METRICS: dict[str, Any] = {
    "split": "test", **source_metrics(323, 0.8, 0.75, 160, 144),
    "per_class": [],
    "per_source": {
        "skin8": {**source_metrics(112, 0.9, 0.881, 56, 49),
                  "max_share_ratio": {"class": "Chickenpox", "ratio": 1.2, "predicted": 0.24,
                                      "true": 0.2}},
        "skin8-web": {**source_metrics(211, 0.7, 0.654, 104, 95),
                      "max_share_ratio": {"class": "Warts", "ratio": 1.4, "predicted": 0.14,
                                          "true": 0.1}},
    },
}

# the shape `kulit gate` writes (gate_fit.gate_figures), built with its own `rate`
GATE: dict[str, Any] = {
    "not_skin_threshold": 0.178, "other_threshold": 0.763, "melanoma_cutoff": 0.0178,
    "tuned_on": {"skin_sources": ["skin8", "skin8-web"]},
    "figures": {
        "not_skin_held_out_rejected": {"all": rate(hits(230, 235)), "people": rate(hits(30, 34)),
                                       "objects": rate(hits(62, 63))},
        "not_skin_tuned_rejected_in_sample": rate(hits(207, 207)),
        "skin_test_rejected_as_not_skin": {"all": rate(hits(5, 323)),
                                           "skin8": rate(hits(0, 112)),
                                           "skin8-web": rate(hits(5, 211))},
        "other_held_out_rejected_as_not_skin": rate(hits(1, 217)),
        "other_held_out_no_confident_class": {"all": rate(hits(200, 217)),
                                              "keloid": rate(hits(28, 28))},
        "other_held_out_status": {"not_skin": 1, "none_of_these": 37, "uncertain": 162,
                                  "answered": 17},
        "in_scope_test_confident": {"all": rate(hits(160, 323))},
        "melanoma_test_see_doctor": {"all": rate(hits(49, 51)), "skin8": rate(hits(20, 20)),
                                     "skin8-web": rate(hits(29, 31))},
        "non_melanoma_test_see_doctor": {"all": rate(hits(90, 272))},
        "confident_right_test": {"skin8": rate(hits(49, 56)), "skin8-web": rate(hits(95, 104))},
        "threshold": 0.5,
    },
}


@pytest.fixture(scope="module")
def client(onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[TestClient]:
    model = tmp_path_factory.mktemp("about") / "model"
    shutil.copytree(onnx_model_dir, model)
    card = load_card(model)
    card.metrics, card.gate = METRICS, GATE
    save_card(card, model)
    with TestClient(create_app(Settings(model_dir=model, device=False))) as c:
        yield c


@pytest.fixture(scope="module")
def old_client(onnx_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=onnx_model_dir, device=False))) as c:
        yield c


def flat(page: str) -> str:
    """Visible text on one line, inline tags dropped so "skin8</strong>: ..." reads "skin8: ..."."""
    return re.sub(r"\s+", " ", visible_text(re.sub(r"</?(strong|span)\b[^>]*>", "", page)))


def table_row(page: str, label: str) -> list[list[str]]:
    """The cells of the metrics table row headed `label`, as visible text."""
    row = re.search(r"<tr><th scope=\"row\">" + re.escape(label) + r"</th>(.*?)</tr>", page,
                    flags=re.S)
    assert row, label
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    return [re.sub(r"<[^>]+>", " ", c).split() for c in cells]


def section(page: str, title_id: str) -> str:
    m = re.search(r'<section aria-labelledby="' + title_id + r'">(.*?)</section>', page,
                  flags=re.S)
    assert m, title_id
    return m.group(1)


@pytest.mark.parametrize("lang", ["id", "en"])
def test_about_has_one_column_per_source(client: TestClient, lang: str) -> None:
    page = client.get(f"/about?lang={lang}").text
    ui = STRINGS[lang]
    heads = re.findall(r"<th scope=\"col\"[^>]*>([^<]*)</th>", section(page, "metrics-title"))
    assert heads == [ui["about_metric"], ui["about_all"], "skin8", "skin8-web"]
    dec = "," if lang == "id" else "."
    assert table_row(page, ui["m_balanced_accuracy"]) == [
        [f"75{dec}0%", f"69{dec}0%", "–", f"80{dec}0%"],
        [f"88{dec}1%", f"82{dec}1%", "–", f"93{dec}1%"],
        [f"65{dec}4%", f"59{dec}4%", "–", f"70{dec}4%"]]
    assert [c[0] for c in table_row(page, ui["m_n"])] == ["323", "112", "211"]
    text = flat(page)
    assert f"skin8: {ui['source_skin8']}" in text
    assert f"skin8-web: {ui['source_skin8-web']}" in text
    # confident answers per source: share answered at the threshold, how many right
    row = ui["about_confident_row"].format(share=f"50{dec}0%", k=56, n=112, right=f"87{dec}5%",
                                           r=49)
    assert f"skin8: {row}" in text
    row = ui["about_confident_row"].format(share=f"49{dec}3%", k=104, n=211,
                                           right=f"91{dec}3%", r=95)
    assert f"skin8-web: {row}" in text


@pytest.mark.parametrize("lang", ["id", "en"])
def test_about_says_when_it_does_not_answer(client: TestClient, lang: str) -> None:
    page = client.get(f"/about?lang={lang}").text
    ui = STRINGS[lang]
    text = flat(section(page, "trust-title"))
    dec = "," if lang == "id" else "."
    assert ui["trust_title"] in text
    assert f"{ui['trust_not_skin']}: 97{dec}9% (230/235)" in text
    assert "people" not in text  # the overall held-out rate, not each category
    assert f"{ui['trust_other']}: 92{dec}2% (200/217)" in text
    skin = text.split(ui["trust_skin_rejected"])[1].split(ui["trust_other"])[0]
    assert f"{ui['about_all']}: 1{dec}5% (5/323)" in skin
    assert f"skin8: 0{dec}0% (0/112)" in skin and f"skin8-web: 2{dec}4% (5/211)" in skin
    mel = text.split(ui["trust_melanoma"])[1].split(ui["trust_confident_right"])[0]
    assert f"skin8: 100{dec}0% (20/20)" in mel and f"skin8-web: 93{dec}5% (29/31)" in mel
    right = text.split(ui["trust_confident_right"])[1]
    assert f"skin8: 87{dec}5% (49/56)" in right and f"skin8-web: 91{dec}3% (95/104)" in right
    lo, hi = (f"{100 * x:.1f}%".replace(".", dec) for x in GATE["figures"][
        "melanoma_test_see_doctor"]["skin8-web"]["ci95"])
    assert ui["trust_ci"].format(lo=lo, hi=hi) in mel


NEW_KEYS = [k for k in STRINGS["en"] if k.startswith(("trust_", "source_", "about_confident"))
            ] + ["about_all", "about_sources_intro"]


def test_indonesian_about_has_no_english_for_the_new_texts(client: TestClient) -> None:
    page = client.get("/about?lang=id").text
    parts = section(page, "metrics-title") + section(page, "trust-title")
    # source names are names (translate="no"), not English
    parts = re.sub(r'<(\w+)[^>]*translate="no"[^>]*>.*?</\1>', " ", parts, flags=re.S)
    text = visible_text(parts)
    for key in NEW_KEYS:
        assert key in STRINGS["id"], key
        for chunk in re.split(r"\{[^}]*\}", STRINGS["en"][key]):
            if len(chunk.strip()) >= 12:
                assert chunk.strip() not in text, (key, chunk)
    for line in text.splitlines():
        for name in ALLOWED:
            line = line.replace(name, "")
        assert len(set(re.findall(r"[a-z]+", line.lower())) & ENGLISH) < 2, line
    for key in NEW_KEYS:
        assert "kulit" not in STRINGS["id"][key].lower().replace("foto kulit", "").replace(
            "penyakit kulit", ""), key


def test_about_for_an_old_card_without_per_source(old_client: TestClient) -> None:
    for lang in ("id", "en"):
        page = old_client.get(f"/about?lang={lang}").text
        ui = STRINGS[lang]
        heads = re.findall(r"<th scope=\"col\"[^>]*>([^<]*)</th>", page)
        assert heads == [ui["about_metric"], ui["about_value"], ui["about_ci"]]
        assert table_row(page, ui["m_accuracy"]) == [[f"50{',' if lang == 'id' else '.'}0%"],
                                                     []]
        assert ui["trust_title"] not in page and ui["about_confident"] not in page


def test_api_model_has_per_source_metrics_and_the_gate(client: TestClient) -> None:
    card = client.get("/api/v1/model").json()
    assert card["metrics"]["per_source"]["skin8-web"]["at_threshold"]["n"] == 104
    assert card["metrics"]["per_source"]["skin8"]["max_share_ratio"]["class"] == "Chickenpox"
    assert card["gate"]["melanoma_cutoff"] == 0.0178
    assert card["gate"]["figures"]["melanoma_test_see_doctor"]["skin8"]["k"] == 20
    parsed = ModelCardResponse.model_validate(card)
    assert parsed.metrics.per_source is not None and parsed.gate is not None
    assert parsed.metrics.per_source["skin8"].max_share_ratio.class_ == "Chickenpox"  # type: ignore[union-attr]


def test_api_model_schema_in_openapi(client: TestClient, old_client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ok = spec["paths"]["/api/v1/model"]["get"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"].endswith("/ModelCardResponse")
    schemas = spec["components"]["schemas"]
    assert "per_source" in schemas["CardMetricsResponse"]["properties"]
    assert {"melanoma_cutoff", "figures"} <= set(schemas["GateCardResponse"]["properties"])
    ModelCardResponse.model_validate(old_client.get("/api/v1/model").json())
