"""Skin-type figures on the About page (both languages) and in /api/v1/model, from the
card.metrics.per_band that `kulit evaluate` writes."""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from kulit.build.slices import figures_by_slice
from kulit.serving.card import load_card, save_card
from kulit.serving.i18n import STRINGS
from kulit.web.app import create_app
from kulit.web.settings import Settings
from tests.test_web_phone import ALLOWED, ENGLISH
from tests.test_web_ui import visible_text

CLASSES = ["Chickenpox", "Herpes", "Impetigo", "Melanoma", "Psoriasis", "Ringworm", "Vitiligo",
           "Warts"]
BANDS = ("I-II", "III-IV", "V-VI")


def per_band() -> dict[str, Any]:
    """Figures as `kulit evaluate` computes them: 12 atlas photos with known outcomes per band."""
    y = ["Melanoma"] * 12
    probs = np.full((12, 8), 0.02)
    # I-II: 4 photos, all right and sure; III-IV: 4, 2 right; V-VI: 4, 1 right, none sure
    right = [1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0]
    for i, r in enumerate(right):
        probs[i, 3 if r else 4] = 0.9 if i < 4 else 0.4
    bands = [BANDS[i // 4] for i in range(12)]
    labelled = figures_by_slice(y, probs, CLASSES, bands, 0.5, order=BANDS, n_boot=50)
    return {"bands": list(BANDS), "labelled": {"atlas": labelled},
            "estimated": {"all": labelled},
            "estimator": {"cutoffs": [38.0, 10.0],
                          "agreement_here": {"n": 12, "exact": 0.5, "within_one": 0.9,
                                             "kappa_linear": 0.41}}}


@pytest.fixture(scope="module")
def client(onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[TestClient]:
    model = tmp_path_factory.mktemp("about_bands") / "model"
    shutil.copytree(onnx_model_dir, model)
    card = load_card(model)
    card.metrics = {"split": "test", "n": 12, "accuracy": 0.5, "per_band": per_band()}
    save_card(card, model)
    with TestClient(create_app(Settings(model_dir=model, device=False))) as c:
        yield c


def band_section(page: str) -> str:
    m = re.search(r'<section aria-labelledby="bands-title">(.*?)</section>', page, flags=re.S)
    assert m, "no skin-type section"
    return html.unescape(m.group(1))


def rows(section: str) -> list[list[str]]:
    out = []
    for tr in re.findall(r"<tr><th scope=\"row\".*?</tr>", section, flags=re.S):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, flags=re.S)
        out.append([re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip() for c in cells])
    return out


@pytest.mark.parametrize("lang", ["id", "en"])
def test_about_shows_each_band_with_counts_and_intervals(client: TestClient, lang: str) -> None:
    ui = STRINGS[lang]
    sec = band_section(client.get(f"/about?lang={lang}").text)
    assert ui["about_bands_labelled"] in sec and ui["about_bands_estimated"] in sec
    got = rows(sec)
    assert len(got) == 6  # 3 bands labelled (atlas) + 3 estimated (all photos)
    dec = "," if lang == "id" else "."
    atlas = {r[1]: r for r in got if r[0] == "atlas"}
    assert atlas["I-II"][2] == "4" and atlas["I-II"][3].startswith(f"100{dec}0% (4/4)")
    assert atlas["III-IV"][3].startswith(f"50{dec}0% (2/4)")
    assert atlas["V-VI"][3].startswith(f"25{dec}0% (1/4)")
    assert atlas["V-VI"][5].startswith(f"0{dec}0% (0/4)")  # nothing answered confidently
    # every rate carries its Wilson interval: 1 of 4 is 4.6% to 69.9%
    assert ui["trust_ci"].format(lo=f"4{dec}6%", hi=f"69{dec}9%") in atlas["V-VI"][3]
    everyone = [r for r in got if r[0] == ui["about_all"]]
    assert [r[1] for r in everyone] == list(BANDS)
    assert ui["about_bands_agreement"].split("{")[0].strip() in sec


def test_indonesian_band_section_has_no_english(client: TestClient) -> None:
    sec = band_section(client.get("/about?lang=id").text)
    sec = re.sub(r'<(\w+)[^>]*translate="no"[^>]*>.*?</\1>', " ", sec, flags=re.S)
    for line in visible_text(sec).splitlines():
        for name in ALLOWED:
            line = line.replace(name, "")
        assert len(set(re.findall(r"[a-z]+", line.lower())) & ENGLISH) < 2, line


def test_api_model_carries_the_band_figures(client: TestClient) -> None:
    card = client.get("/api/v1/model").json()
    pb = card["metrics"]["per_band"]
    assert pb["labelled"]["atlas"]["V-VI"]["accuracy"]["k"] == 1
    assert pb["labelled"]["atlas"]["V-VI"]["top3_accuracy"]["ci95"][0] < 1.0


def test_no_band_section_without_band_figures(onnx_model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=onnx_model_dir, device=False))) as c:
        page = c.get("/about?lang=en").text
    assert 'aria-labelledby="bands-title"' not in page
