"""Phones, on the server side: Indonesian without English, light pages, phone formats, /docs."""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kulit.serving.answer import Cutoffs, decide
from kulit.serving.card import card_text, load_card
from kulit.serving.i18n import STRINGS
from kulit.web.app import create_app
from kulit.web.inference import Analysis
from kulit.web.rendering import result_context
from kulit.web.settings import Settings
from tests.conftest import SHIPPED_MODEL, image_bytes, make_image

CLASSES = ["Chickenpox", "Herpes", "Impetigo", "Melanoma", "Psoriasis", "Ringworm",
           "Vitiligo", "Warts"]


@pytest.fixture(scope="module")
def client(onnx_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=onnx_model_dir, device=False))) as c:
        yield c


def shipped_client() -> TestClient:
    if not (SHIPPED_MODEL / "model.onnx").is_file():
        pytest.skip("the shipped model is not built")
    return TestClient(create_app(Settings(model_dir=SHIPPED_MODEL, device=False)))


def visible_text(page: str) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    page = re.sub(r'data:[^"]+', " ", page)
    return html.unescape(re.sub(r"<[^>]+>", "\n", page))


def test_card_text_reads_old_and_bilingual_cards() -> None:
    assert card_text("Only English.", "id") == ("Only English.", "en")
    assert card_text({"en": "Skin", "id": "Kulit"}, "id") == ("Kulit", "id")
    assert card_text({"en": "Skin"}, "id") == ("Skin", "en")


def test_about_in_indonesian_has_no_english_card_text() -> None:
    card = load_card(SHIPPED_MODEL) if (SHIPPED_MODEL / "card.json").is_file() else None
    if card is None or not all(isinstance(x, dict) for x in card.limits):
        pytest.skip("the shipped card has no bilingual limits")
    with shipped_client() as c:
        text = visible_text(c.get("/about?lang=id").text)
    for limit in card.limits:
        assert limit["id"] in text and limit["en"] not in text
    assert card_text(card.data["licence"], "id")[0] in text
    for english in ("Macro F1", "report.md", "../", "(Ringworm) (Ringworm)", "(Warts) (Warts)",
                    "accuracy on darker skin"):
        assert english not in text, english
    assert "Kurap (Ringworm)" in re.sub(r"\s+", " ", text)  # the class's own name, once


def test_indonesian_texts_say_it_plainly() -> None:
    ui = STRINGS["id"]
    joined = " ".join(ui.values()).lower()
    for literal in ("peta panas", "suhu t", "sama sekali lagi", "kulit memperkirakan",
                    "dikenal kulit", "kulit bukan diagnosis"):
        assert literal not in joined, literal


def test_language_switch_keeps_the_result(client: TestClient) -> None:
    photo = image_bytes(make_image(3, (160, 120)))
    first = client.post("/predict?lang=id", files={"image": ("p.jpg", photo, "image/jpeg")})
    crop = html.unescape(re.search(r'name="image" value="([^"]+)"', first.text).group(1))
    # the other language is a button re-posting the page's crop, in the same form
    assert 'form="carry" formaction="/predict?lang=en"' in first.text
    again = client.post("/predict?lang=en", files={"image": (None, crop.encode())})
    assert again.status_code == 200 and '<html lang="en">' in again.text
    classes = re.compile(r'class="bar-row[^"]*" data-class="([^"]+)"')
    assert classes.findall(again.text) and classes.findall(again.text)[0] == \
        classes.findall(first.text)[0]


def test_result_page_is_light(client: TestClient) -> None:
    photo = image_bytes(make_image(4, (640, 480)))
    resp = client.post("/predict?lang=id", files={"image": ("p.jpg", photo, "image/jpeg")},
                       headers={"accept-encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.num_bytes_downloaded < 60_000


def fake_result(probs: list[float], melanoma_cutoff: float | None) -> Analysis:
    ans = decide(np.array(probs), CLASSES, 0.5, cutoffs=Cutoffs(melanoma=melanoma_cutoff))
    pred = SimpleNamespace(classes=CLASSES, image=None)
    return Analysis(pred, ans, None, 0.0)  # type: ignore[arg-type]


def test_melanoma_badge_only_when_the_rule_fires() -> None:
    # 2% melanoma in the top 3 under a confident answer: no badge, no alert
    quiet = fake_result([0.9, 0.05, 0.0, 0.02, 0.01, 0.01, 0.005, 0.005], None)
    assert not quiet.answer.melanoma_alert
    assert not any(r["urgent"] for r in result_context(quiet, "id")["rows"])
    # the cut-off fires: the badge is on melanoma only
    alert = fake_result([0.9, 0.05, 0.0, 0.02, 0.01, 0.01, 0.005, 0.005], 0.01)
    assert alert.answer.melanoma_alert
    rows = result_context(alert, "id")["rows"]
    assert [r["cls"] for r in rows if r["urgent"]] == ["Melanoma"]


def test_a_50_megapixel_phone_jpeg_is_checked(client: TestClient) -> None:
    small = make_image(5, (136, 102))
    big = image_bytes(small.resize((8160, 6120)), quality=50)  # ~50 MP, a few MB
    resp = client.post("/predict?lang=en", files={"image": ("big.jpg", big, "image/jpeg")})
    assert resp.status_code == 200, resp.text[:300]
    assert 'id="verdict"' in resp.text


def test_too_many_pixels_says_so(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (7000, 6000), (200, 150, 120)).save(buf, "PNG")  # 42 MP, small file
    resp = client.post("/predict?lang=id", files={"image": ("big.png", buf.getvalue())})
    assert resp.status_code == 413
    assert html.escape(STRINGS["id"]["err_too_many_pixels"].format(mp="40", mp_lossless="24"),
                       quote=False) in resp.text


def test_heic_from_an_iphone_is_checked(client: TestClient) -> None:
    pytest.importorskip("pillow_heif")
    buf = io.BytesIO()
    make_image(6, (160, 120)).save(buf, "HEIF")
    resp = client.post("/predict?lang=en", files={"image": ("IMG_0001.HEIC", buf.getvalue())})
    assert resp.status_code == 200 and 'id="verdict"' in resp.text


def test_an_empty_file_gets_the_same_message_as_in_the_browser(client: TestClient) -> None:
    resp = client.post("/predict?lang=id", files={"image": ("empty.jpg", b"", "image/jpeg")})
    msg = html.escape(STRINGS["id"]["err_missing_field"], quote=False)
    assert msg in resp.text
    # kulit.js shows data-err-missing for a 0-byte file
    form = client.get("/?lang=id").text
    assert f'data-err-missing="{html.escape(STRINGS["id"]["err_missing_field"])}"' in form
    assert "file.size === 0) { showError(form.dataset.errMissing)" in \
        client.get("/static/kulit.js").text


def test_docs_work_offline_and_say_their_language(client: TestClient) -> None:
    page = client.get("/docs").text
    assert '<html lang="en">' in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    vendor = Path(__file__).parents[1] / "src/kulit/web/static/vendor/swagger-ui"
    if not (vendor / "swagger-ui-bundle.js").is_file():
        pytest.skip("run scripts/vendor_web_ui.sh")
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200


def test_how_it_works_is_in_the_navigation(client: TestClient) -> None:
    page = client.get("/?lang=id").text
    assert f'<a href="/explain?lang=id">{STRINGS["id"]["nav_how"]}</a>' in page
    how = client.get("/explain?lang=id").text
    # the plain-language summary comes before the numbers
    assert how.index(STRINGS["id"]["ex_summary_title"]) < how.index('id="ex-patch"')
