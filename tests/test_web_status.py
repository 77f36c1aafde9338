"""Every answer status through the API, the pages and `kulit predict --json`, with a gate.

The model dirs here carry a hand-made gate.npz (kulit.serving.gate.save_gate) whose constant scores
force `not_skin` or `none_of_these`, and card.gate cut-offs; photo problems force `retake`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kulit import DISCLAIMER_EN, DISCLAIMER_ID
from kulit.serving.answer import STATUSES
from kulit.serving.gate import Gate, load_gate, save_gate
from kulit.serving.i18n import STRINGS, both
from kulit.serving.predict import Predictor
from tests.conftest import image_bytes, make_image, write_onnx_model_dir

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from kulit.web.app import create_app  # noqa: E402
from kulit.web.settings import Settings  # noqa: E402

SKIN8 = ["Chickenpox", "Herpes", "Impetigo", "Melanoma", "Psoriasis", "Ringworm", "Vitiligo",
         "Warts"]
CHANNELS = 8  # the conftest model's feature maps


def gated_model(root: Path, name: str, not_skin_bias: float, other_bias: float,
                cutoffs: dict[str, float], weights: np.ndarray | None = None) -> Path:
    model = write_onnx_model_dir(root / name, SKIN8)
    w = np.zeros(CHANNELS) if weights is None else weights
    save_gate(Gate(mean=np.zeros(CHANNELS), scale=np.ones(CHANNELS),
                   weights={"not_skin": w, "other": -w},
                   biases={"not_skin": not_skin_bias, "other": other_bias}), model)
    card = json.loads((model / "card.json").read_text())
    card["gate"] = cutoffs
    (model / "card.json").write_text(json.dumps(card))
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gated")
    cut = {"not_skin_threshold": 0.5, "other_threshold": 0.5}
    return {
        # melanoma_cutoff 0: the alert would fire on any photo it is allowed to fire on
        "not_skin": gated_model(root, "not_skin", 10, -10, {**cut, "melanoma_cutoff": 0.0}),
        "other": gated_model(root, "other", -10, 10, {**cut, "melanoma_cutoff": 1.0}),
        "other_alert": gated_model(root, "other_alert", -10, 10, {**cut, "melanoma_cutoff": 0.0}),
        "skin": gated_model(root, "skin", -10, -10, cut),
    }


@pytest.fixture(scope="module")
def clients(models: dict[str, Path]) -> Iterator[dict[str, TestClient]]:
    cs = {k: TestClient(create_app(Settings(model_dir=m))) for k, m in models.items()}
    for c in cs.values():
        c.__enter__()
    yield cs
    for c in cs.values():
        c.__exit__(None, None, None)


PHOTO = image_bytes(make_image(3, (160, 120), cls=1))


def api(c: TestClient, data: bytes = PHOTO) -> dict:
    resp = c.post("/api/v1/predict", files={"image": ("a.jpg", data, "image/jpeg")})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["disclaimer"] == {"en": DISCLAIMER_EN, "id": DISCLAIMER_ID}
    return body


def page(c: TestClient, lang: str, data: bytes = PHOTO) -> str:
    resp = c.post(f"/predict?lang={lang}", files={"image": ("a.jpg", data, "image/jpeg")})
    assert resp.status_code == 200, resp.text
    assert (DISCLAIMER_EN if lang == "en" else DISCLAIMER_ID) in resp.text
    return resp.text


def no_disease_named(html: str) -> None:
    assert "bar-row" not in html and 'class="condition"' not in html
    for name in ("Melanoma", "Psoriasis", "Warts", "Kutil", "Cacar air"):
        assert name not in html, name


def test_not_skin(clients: dict[str, TestClient]) -> None:
    c = clients["not_skin"]
    body = api(c)
    assert body["status"] == "not_skin" and body["label"] is None
    assert body["see_doctor"] is False and body["melanoma_alert"] is False
    assert body["gate"]["not_skin"] > 0.99 and body["gate"]["other"] < 0.01
    assert body["quality"] is None and body["advice"] == both("advice_not_skin")
    for lang in ("en", "id"):
        html = page(c, lang)
        s = STRINGS[lang]
        assert s["verdict_not_skin"] in html and s["advice_not_skin"] in html
        assert 'class="urgent"' not in html and s["see_doctor_title"] not in html
        assert 'data-status="not_skin"' in html and 'id="explain-form"' not in html
        no_disease_named(html)


def test_none_of_these_is_a_gentle_see_a_doctor(clients: dict[str, TestClient]) -> None:
    c = clients["other"]
    body = api(c)
    assert body["status"] == "none_of_these" and body["label"] is None
    assert body["see_doctor"] is True and body["melanoma_alert"] is False
    assert body["advice"] == both("advice_none_of_these")
    for lang in ("en", "id"):
        html = page(c, lang)
        s = STRINGS[lang]
        assert s["verdict_none_of_these"].format(n=8) in html
        assert 'class="doctor-note"' in html and s["see_doctor_none_of_these"] in html
        assert s["see_doctor_gentle_title"] in html and 'class="urgent"' not in html
        no_disease_named(html)


def test_none_of_these_keeps_the_melanoma_alert(clients: dict[str, TestClient]) -> None:
    body = api(clients["other_alert"])
    assert body["status"] == "none_of_these" and body["melanoma_alert"] and body["see_doctor"]
    assert body["advice"]["en"] in (STRINGS["en"]["advice_melanoma"],
                                    STRINGS["en"]["advice_melanoma_possible"])
    html = page(clients["other_alert"], "en")
    assert 'class="urgent"' in html and "See a doctor soon" in html


@pytest.mark.parametrize("img,issue", [
    (Image.new("RGB", (10, 10), (180, 120, 100)), "too_small"),
    (Image.new("RGB", (200, 200), (4, 3, 3)), "too_dark"),
    (Image.new("RGB", (200, 200), (255, 255, 255)), "too_bright"),
    (Image.new("RGB", (200, 200), (180, 120, 100)), "too_blurred"),
])
def test_retake_says_what_to_fix(clients: dict[str, TestClient], img: Image.Image,
                                 issue: str) -> None:
    data = image_bytes(img, "PNG")
    for c in (clients["not_skin"], clients["skin"]):  # retake comes before the gate
        body = api(c, data)
        assert body["status"] == "retake" and body["quality"] == issue
        assert body["label"] is None and not body["see_doctor"] and not body["melanoma_alert"]
        assert body["advice"] == both(f"advice_retake_{issue}")
    for lang in ("en", "id"):
        html = page(clients["skin"], lang, data)
        assert STRINGS[lang]["verdict_retake"] in html
        assert STRINGS[lang][f"advice_retake_{issue}"] in html
        assert 'class="urgent"' not in html
        no_disease_named(html)


def test_skin_photos_pass_the_gate(clients: dict[str, TestClient]) -> None:
    body = api(clients["skin"])
    assert body["status"] in ("answered", "uncertain") and body["quality"] is None
    assert body["gate"]["not_skin"] < 0.01 and body["gate"]["other"] < 0.01
    assert (body["label"] is None) == (body["status"] == "uncertain")
    assert 'class="bar-row' in page(clients["skin"], "en")


def test_no_gate_no_gate_scores(onnx_model_dir: Path) -> None:
    assert load_gate(onnx_model_dir) is None
    with TestClient(create_app(Settings(model_dir=onnx_model_dir))) as c:
        body = api(c)
    assert body["gate"] is None and body["status"] in ("answered", "uncertain")


def test_gate_scores_are_the_pooled_features_scored(tmp_path: Path) -> None:
    w = np.random.default_rng(0).normal(0, 1, CHANNELS)
    model = gated_model(tmp_path, "m", 0.3, -0.2, {}, weights=w)
    pred = Predictor(model)
    gate = load_gate(model)
    assert gate is not None
    _, x = pred.prepare(PHOTO)
    _, feats = pred.run(x[None], features=True)
    assert feats is not None
    want = gate.scores(feats.mean(axis=(2, 3)))
    got = pred.predict_one(PHOTO).gate
    assert got is not None
    np.testing.assert_allclose([got["not_skin"], got["other"]],
                               [want.not_skin[0], want.other[0]], atol=1e-9)
    assert 0 < got["not_skin"] < 1 and got["not_skin"] != got["other"]
    with TestClient(create_app(Settings(model_dir=model))) as c:
        body = api(c)  # no cut-offs in the card: the scores are reported, the checks are off
    assert body["status"] in ("answered", "uncertain")
    assert abs(body["gate"]["not_skin"] - got["not_skin"]) < 1e-6


def test_a_gate_of_the_wrong_size_fails_at_load(tmp_path: Path) -> None:
    from kulit.errors import ModelError

    model = write_onnx_model_dir(tmp_path / "m", SKIN8)
    save_gate(Gate(mean=np.zeros(3), scale=np.ones(3),
                   weights={"not_skin": np.zeros(3), "other": np.zeros(3)},
                   biases={"not_skin": 0.0, "other": 0.0}), model)
    with pytest.raises(ModelError, match="gate expects 3"):
        Predictor(model)


def test_openapi_documents_the_answer(clients: dict[str, TestClient]) -> None:
    spec = clients["skin"].get("/openapi.json").json()
    props = spec["components"]["schemas"]["PredictResponse"]["properties"]
    for field in ("status", "label", "see_doctor", "melanoma_alert", "quality", "gate",
                  "advice", "disclaimer", "shortlist", "shortlist_level", "urgency"):
        assert field in props, field
    assert set(props["status"]["enum"]) == set(STATUSES)
    assert set(props["urgency"]["enum"]) == {"urgent", "soon", "routine", "none"}


def test_cli_json_carries_the_status(models: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kulit.cli import app

    (tmp_path / "a.jpg").write_bytes(PHOTO)
    Image.new("RGB", (10, 10), (180, 120, 100)).save(tmp_path / "tiny.png")
    r = CliRunner().invoke(app, ["predict", "--model", str(models["not_skin"]), str(tmp_path),
                                 "--json"])
    assert r.exit_code == 0, r.output
    lines = {Path(x["source"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    assert lines["a.jpg"]["status"] == "not_skin" and lines["a.jpg"]["label"] is None
    assert lines["a.jpg"]["see_doctor"] is False
    assert lines["tiny.png"]["status"] == "retake" and lines["tiny.png"]["quality"] == "too_small"
    assert lines["tiny.png"]["advice"] == both("advice_retake_too_small")
    table = CliRunner().invoke(app, ["predict", "--model", str(models["not_skin"]),
                                     str(tmp_path)])
    assert "NOT SKIN" in table.stdout and "RETAKE" in table.stdout
