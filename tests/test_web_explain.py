"""The 'How it works' view and /api/v1/explain against a real (small, random-weight) ONNX model."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kulit.explain.steps import explain_image
from kulit.serving.predict import Predictor
from tests.conftest import image_bytes, make_image

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from kulit.serving.i18n import STRINGS  # noqa: E402
from kulit.web.app import create_app  # noqa: E402
from kulit.web.routes_explain import run_explain  # noqa: E402
from kulit.web.settings import Settings  # noqa: E402

HIDDEN = re.compile(r'<input type="hidden" name="image" value="([^"]+)">')


@pytest.fixture(scope="module")
def client(onnx_model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=onnx_model_dir, max_upload_mb=10, top_k=3, default_lang="id")
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def predictor(onnx_model_dir: Path) -> Predictor:
    return Predictor(onnx_model_dir)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return image_bytes(make_image(21, (180, 130), 2), quality=92)


def crop_uri(client: TestClient, data: bytes, lang: str = "en") -> str:
    """POST the photo to /predict and read the crop the result page would send back."""
    resp = client.post(f"/predict?lang={lang}", files={"image": ("p.jpg", data, "image/jpeg")})
    assert resp.status_code == 200, resp.text
    m = HIDDEN.search(resp.text)
    assert m, "the result page has no How it works form"
    return html.unescape(m.group(1))


def explain_from_result(client: TestClient, uri: str, lang: str = "en"):
    return client.post(f"/explain?lang={lang}", files={"image": (None, uri.encode())})


def tables(page: str, section: str) -> list[list[list[str]]]:
    """The cell texts of every <table> in the <section id=section>."""
    body = re.search(rf'<section id="{section}".*?</section>', page, re.S).group(0)
    out = []
    for tab in re.findall(r"<table.*?</table>", body, re.S):
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", tab, re.S)
        out.append([[re.sub(r"<[^>]+>", "", c).strip()
                     for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, re.S)] for r in rows])
    return out


def data_png(page: str, img_id: str) -> Image.Image:
    m = re.search(rf'<img id="{img_id}"[^>]*src="data:image/webp;base64,([^"]+)"', page)
    assert m, img_id
    return Image.open(io.BytesIO(base64.b64decode(m.group(1))))


def uri_bytes(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1])


def test_result_page_carries_its_crop_once_as_jpeg(client: TestClient, predictor: Predictor,
                                                   photo: bytes) -> None:
    page = client.post("/predict?lang=en", files={"image": ("p.jpg", photo, "image/jpeg")}).text
    uri = crop_uri(client, photo)
    assert uri.startswith("data:image/jpeg;base64,")
    assert page.count(uri) == 2  # shown, and re-posted by the carry form right after it
    assert "data:image/png" not in page
    crop = Image.open(io.BytesIO(uri_bytes(uri)))
    want, _ = predictor.prepare(photo)
    assert crop.size == want.size == (32, 32)
    # a lossy copy of the crop the model saw, close to it
    diff = np.abs(np.asarray(crop.convert("RGB"), int) - np.asarray(want, int))
    assert diff.mean() < 3
    # and "How it works" computes exactly what the model gives for that copy
    via_crop = run_explain(predictor, uri.encode()).arrays.prediction
    np.testing.assert_allclose(via_crop.probs, predictor.predict_one(uri_bytes(uri)).probs,
                               atol=1e-7, rtol=0)


@pytest.mark.parametrize("lang", ["en", "id"])
def test_explain_page_shows_every_step(client: TestClient, predictor: Predictor,
                                       photo: bytes, lang: str) -> None:
    s = STRINGS[lang]
    uri = crop_uri(client, photo, lang)
    carried = uri_bytes(uri)
    resp = explain_from_result(client, uri, lang)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    page = resp.text
    text = html.unescape(page)
    assert f'<html lang="{lang}">' in page
    for key in ("ex_title", "ex_photo_title", "ex_kernel_title", "ex_conv_title",
                "ex_sum_title", "ex_relu_title", "ex_flatten_title", "ex_layer_title",
                "ex_heatmap_title", "ex_softmax_title", "ex_answer_title", "not_diagnosis"):
        assert s[key] in text, key
    other = STRINGS["id" if lang == "en" else "en"]
    assert other["ex_softmax_title"] not in text

    # 1. the patch: the 4x4 centre of the crop (the page's copy), per channel
    crop = np.asarray(predictor.prepare(carried)[0]).astype(int)
    patch = crop[14:18, 14:18]
    red, green, blue, swatch = tables(page, "ex-patch")
    assert red == [[str(v) for v in row] for row in patch[:, :, 0]]
    assert blue == [[str(v) for v in row] for row in patch[:, :, 2]]
    assert len(green) == 4 and len(swatch) == 4
    assert f"background: rgb({patch[0, 0, 0]}, {patch[0, 0, 1]}, {patch[0, 0, 2]})" in page
    # 2.-6. the kernel and each intermediate table, as explain_image computes them
    steps = explain_image(Image.fromarray(crop.astype(np.uint8)), at=(14, 14))["steps"]
    assert tables(page, "ex-kernel") == [[["1", "0", "-1"]] * 3]
    conv = tables(page, "ex-conv")
    assert conv == [[[str(v) for v in row] for row in steps["conv"][c]]
                    for c in ("red", "green", "blue")]
    summed, relu, flat = tables(page, "ex-sum")
    assert summed == [[str(v) for v in row] for row in steps["sum"]]
    assert relu == [[str(v) for v in row] for row in steps["relu"]]
    assert flat == [[str(v) for v in steps["flatten"]]]

    # 7. the first layer: the note on 32 filters and a grid of 8 maps (4 x 2, 40 px tiles)
    assert s["ex_layer_paper"].format(n=8, paper=32) in text
    grid = data_png(page, "ex-grid")
    assert grid.format == "WEBP" and grid.size == (4 * 40 + 3, 2 * 40 + 1)

    # 9. the softmax: z, z/T, exp and p for every condition, p equal to the Predictor's
    pred = predictor.predict_one(carried)
    rows = tables(page, "ex-softmax")[0]
    assert len(rows) == 1 + 8 + 1  # header, 8 conditions, sum
    assert rows[0][1] == "p"  # p right after the name: on screen on a 360 px phone
    p_col = [float(r[1].split(" ")[0].replace(",", ".")) for r in rows[1:-1]]
    np.testing.assert_allclose(p_col, pred.probs, atol=6e-5)
    z_col = [float(r[2].replace(",", ".")) for r in rows[1:-1]]
    np.testing.assert_allclose(z_col, pred.logits, atol=6e-4)
    assert rows[-1][1] == ("1,0000" if lang == "id" else "1.0000")
    assert 'class="ex-scroll" tabindex="0" role="region"' in page
    assert (f"T = {1.5:g}".replace(".", ",") if lang == "id" else "T = 1.5") in page
    # 10. the answer is the verdict of the result page for the same copy (its language switch)
    result = client.post(f"/predict?lang={lang}", files={"image": (None, uri.encode())}).text
    verdict = re.compile(r'id="verdict"[^>]*>([^<]+)<')
    assert verdict.search(page).group(1) == verdict.search(result).group(1)


def test_explain_page_from_a_direct_upload(client: TestClient, predictor: Predictor,
                                           photo: bytes) -> None:
    resp = client.post("/explain?lang=en", files={"image": ("p.jpg", photo, "image/jpeg")})
    assert resp.status_code == 200
    rows = tables(resp.text, "ex-softmax")[0]
    p_col = [float(r[1].split(" ")[0]) for r in rows[1:-1]]
    np.testing.assert_allclose(p_col, predictor.predict_one(photo).probs, atol=6e-5)


def test_explain_page_errors(client: TestClient) -> None:
    text = client.post("/explain?lang=en", files={"image": ("n.txt", b"not a photo", "text/plain")})
    assert text.status_code == 415 and STRINGS["en"]["err_not_image"] in text.text
    bad = client.post("/explain?lang=id", files={"image": (None, b"data:image/png;base64,@@@")})
    assert bad.status_code == 400 and STRINGS["id"]["err_unreadable"] in bad.text
    missing = client.post("/explain?lang=en", files={"other": (None, b"x")})
    assert missing.status_code == 422
    # from the navigation: the steps on a made-up example, said to be one
    example = client.get("/explain?lang=id")
    assert example.status_code == 200
    assert html.escape(STRINGS["id"]["ex_example_note"], quote=False) in example.text
    assert 'id="carry"' not in example.text


def test_api_explain_matches_the_cli_json(client: TestClient, onnx_model_dir: Path,
                                          photo: bytes, predictor: Predictor) -> None:
    resp = client.post("/api/v1/explain?at=10,20", files={"image": ("p.jpg", photo)})
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body.pop("timing_ms")["total"] > 0
    want = explain_image(photo, model_dir=onnx_model_dir, at=(10, 20))
    assert body["at"] == [10, 20] and body["steps"] == want["steps"]
    assert body["model"]["top"] == want["model"]["top"]
    np.testing.assert_allclose(body["model"]["softmax"]["probs"],
                               predictor.predict_one(photo).probs, atol=1e-9, rtol=0)
    assert body["model"]["first_layer"]["filters"] == 8
    assert len(resp.content) < 30_000  # previews, not full maps


def test_api_explain_errors(client: TestClient) -> None:
    photo = image_bytes(make_image(3))
    for url, files, status, code in [
        ("/api/v1/explain", {"image": ("n.txt", b"text")}, 415, "not_image"),
        ("/api/v1/explain?at=999,0", {"image": ("p.jpg", photo)}, 400, "bad_position"),
        ("/api/v1/explain?at=x", {"image": ("p.jpg", photo)}, 400, "bad_position"),
        ("/api/v1/explain", {"other": ("p.jpg", photo)}, 422, "missing_field"),
    ]:
        resp = client.post(url, files=files)
        assert resp.status_code == status, (url, resp.text)
        assert resp.json()["error"]["code"] == code


def test_channel_names_exist_in_both_languages() -> None:
    for lang in ("en", "id"):
        for c in ("red", "green", "blue"):
            assert STRINGS[lang][f"ex_{c}"]
