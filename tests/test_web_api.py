"""The web app and JSON API against a real (small, random-weight) ONNX model dir."""

from __future__ import annotations

import asyncio
import base64
import builtins
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kulit import DISCLAIMER_EN, DISCLAIMER_ID
from kulit.serving.predict import Prediction, Predictor
from tests.conftest import SKIN8, image_bytes, make_image, write_onnx_model_dir

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from kulit.serving.i18n import STRINGS, load_conditions  # noqa: E402
from kulit.web.app import create_app  # noqa: E402
from kulit.web.deps import get_predictor  # noqa: E402
from kulit.web.settings import Settings  # noqa: E402

SKIN8_CLASSES = ["Chickenpox", "Herpes", "Impetigo", "Melanoma", "Psoriasis", "Ringworm",
                 "Vitiligo", "Warts"]
ID_NAMES = {"Chickenpox": "Cacar air", "Herpes": "Herpes", "Impetigo": "Impetigo",
            "Melanoma": "Melanoma", "Psoriasis": "Psoriasis", "Ringworm": "Kurap",
            "Vitiligo": "Vitiligo", "Warts": "Kutil"}
TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "kulit" / "web" / "templates"


@pytest.fixture(scope="module")
def settings(onnx_model_dir: Path) -> Settings:
    return Settings(model_dir=onnx_model_dir, max_upload_mb=10, top_k=3, default_lang="id")


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def post_image(client: TestClient, data: bytes, url: str = "/api/v1/predict",
               name: str = "photo.jpg", mime: str = "image/jpeg"):
    return client.post(url, files={"image": (name, data, mime)})


def assert_error(resp, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb by size) with no real data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def noise_image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


# --------------------------------------------------------------------------- API: good input


def test_predict_matches_the_predictor(client: TestClient, onnx_model_dir: Path) -> None:
    data = image_bytes(make_image(3, (120, 90), cls=1))
    resp = post_image(client, data)
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"model", "status", "top", "label", "confidence", "uncertain",
                         "see_doctor", "melanoma_alert", "quality", "gate", "advice",
                         "disclaimer", "timing_ms", "shortlist", "shortlist_level",
                         "urgency"}  # no heatmap_png unless asked
    assert body["model"] == "tiny-test"
    assert body["disclaimer"] == {"en": DISCLAIMER_EN, "id": DISCLAIMER_ID}
    assert body["timing_ms"]["total"] >= body["timing_ms"]["inference"] >= 0
    expected = Predictor(onnx_model_dir).predict_one(data, top_k=3)
    assert [t["label"] for t in body["top"]] == [c for c, _ in expected.top]
    np.testing.assert_allclose([t["probability"] for t in body["top"]],
                               [p for _, p in expected.top], atol=1e-6)
    probs = [t["probability"] for t in body["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert body["confidence"] == body["top"][0]["probability"]
    assert body["uncertain"] == expected.below_threshold
    assert body["label"] == (None if expected.below_threshold else expected.label)
    assert body["see_doctor"] == expected.below_threshold  # no Melanoma-named classes here


def test_top_k_query(client: TestClient) -> None:
    data = image_bytes(make_image(4))
    body = client.post("/api/v1/predict?top_k=5", files={"image": ("a.jpg", data)}).json()
    assert len(body["top"]) == 5
    body = client.post("/api/v1/predict?top_k=50", files={"image": ("a.jpg", data)}).json()
    assert len(body["top"]) == 8  # capped at the number of classes
    for bad in ("0", "abc", "-1"):
        resp = client.post(f"/api/v1/predict?top_k={bad}", files={"image": ("a.jpg", data)})
        assert_error(resp, 422, "validation_error")
        assert "top_k" in resp.json()["error"]["message"]


def test_heatmap_is_a_decodable_png(client: TestClient) -> None:
    resp = client.post("/api/v1/predict?heatmap=true",
                       files={"image": ("a.png", image_bytes(make_image(5), "PNG"))})
    assert resp.status_code == 200
    png = base64.b64decode(resp.json()["heatmap_png"], validate=True)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    img.load()
    assert img.size == (32, 32) and img.mode == "RGB"  # the square crop the model saw


@pytest.mark.skipif(not SKIN8.is_dir(), reason="../shared/data/skin8 not present")
def test_real_skin_photos(client: TestClient) -> None:
    for cls in SKIN8_CLASSES:
        path = next(p for p in sorted((SKIN8 / cls).iterdir())
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        resp = post_image(client, path.read_bytes(), name=path.name)
        assert resp.status_code == 200, (path, resp.text)
        assert {t["label"] for t in resp.json()["top"]} <= set(SKIN8_CLASSES)


def test_exif_rotation_is_applied(client: TestClient) -> None:
    """Orientation 6 means 'rotate 90° clockwise to display': the server must see it upright."""
    img = Image.new("RGB", (60, 40), (230, 30, 30))
    img.paste((20, 40, 220), (30, 0, 60, 40))
    img.paste((250, 250, 250), (0, 0, 15, 12))
    plain = image_bytes(img, "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = image_bytes(img, "JPEG", quality=95, exif=exif.tobytes())
    upright = Image.open(io.BytesIO(plain)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    expected = image_bytes(upright, "PNG")  # same pixels, turned by hand, lossless

    def top(data: bytes) -> list:
        return post_image(client, data).json()["top"]

    assert top(tagged) == top(expected)
    assert top(tagged) != top(plain)  # the rotation changes what the model sees


def test_cmyk_jpeg(client: TestClient) -> None:
    data = image_bytes(make_image(6, (80, 60)).convert("CMYK"), "JPEG")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    resp = post_image(client, data)
    assert resp.status_code == 200 and len(resp.json()["top"]) == 3


def test_png_alpha_is_flattened_on_white(client: TestClient) -> None:
    rgba = make_image(7, (64, 64)).convert("RGBA")
    alpha = Image.new("L", (64, 64), 255)
    alpha.paste(0, (0, 0, 64, 32))  # top half fully transparent
    rgba.putalpha(alpha)
    flat = Image.new("RGB", (64, 64), (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    got = post_image(client, image_bytes(rgba, "PNG"), mime="image/png").json()["top"]
    want = post_image(client, image_bytes(flat, "PNG"), mime="image/png").json()["top"]
    assert got == want


@pytest.mark.parametrize("size", [(1, 1), (1, 20), (5, 3)])  # 20:1 is MAX_ASPECT
def test_tiny_images(client: TestClient, size: tuple[int, int]) -> None:
    resp = post_image(client, image_bytes(Image.new("RGB", size, (180, 90, 80)), "PNG"))
    assert resp.status_code == 200


def test_webp_is_read_and_bmp_is_415(client: TestClient) -> None:
    resp = post_image(client, image_bytes(make_image(8), "WEBP"), name="a.webp")
    assert resp.status_code == 200
    # only what phones and the web produce reaches a decoder
    assert_error(post_image(client, image_bytes(make_image(8), "BMP"), name="a.bmp"),
                 415, "not_image")


# --------------------------------------------------------------------------- API: bad input


def test_pdf_renamed_jpg_is_415(client: TestClient) -> None:
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    assert_error(post_image(client, pdf, name="scan.jpg"), 415, "not_image")


def test_text_is_415(client: TestClient) -> None:
    resp = post_image(client, b"just some notes\n" * 10, name="notes.txt", mime="text/plain")
    assert_error(resp, 415, "not_image")


def test_gif_is_415(client: TestClient) -> None:
    assert_error(post_image(client, image_bytes(make_image(9), "GIF"), name="a.gif"),
                 415, "not_image")


def test_truncated_jpeg_is_400(client: TestClient) -> None:
    data = image_bytes(noise_image((200, 160)), "JPEG", quality=90)
    assert_error(post_image(client, data[: len(data) // 2]), 400, "unreadable")


def test_over_upload_limit_is_413(onnx_model_dir: Path) -> None:
    small = Settings(model_dir=onnx_model_dir, max_upload_mb=0.05)  # 52,428 bytes
    big = image_bytes(noise_image((300, 300)), "PNG")
    assert len(big) > small.max_upload_bytes
    ok = image_bytes(make_image(10), "JPEG")
    assert len(ok) < small.max_upload_bytes
    with TestClient(create_app(small)) as c:
        assert_error(post_image(c, big, mime="image/png"), 413, "too_large")
        assert_error(post_image(c, b"\xff" * (small.max_upload_bytes + 1)), 413, "too_large")
        assert post_image(c, b"\xff" * small.max_upload_bytes).status_code == 415  # read whole
        assert post_image(c, ok).status_code == 200
        page = post_image(c, big, url="/predict", mime="image/png")
        assert page.status_code == 413 and "0.05 MB" in page.text


def test_decompression_bombs_are_413(client: TestClient) -> None:
    # Claims 20000 x 20000 pixels in a few bytes: Pillow refuses it at open.
    assert_error(post_image(client, png_header_only(20000, 20000), mime="image/png"),
                 413, "too_large")
    # A real 7000 x 7000 image (49 MP, over kulit's 40 MP limit) compressed to a few KB.
    bomb = image_bytes(Image.new("1", (7000, 7000)), "PNG", optimize=True)
    assert len(bomb) < 100_000
    assert_error(post_image(client, bomb, mime="image/png"), 413, "too_large")


def test_missing_field_is_422_json(client: TestClient) -> None:
    assert_error(client.post("/api/v1/predict"), 422, "missing_field")
    assert_error(client.post("/api/v1/predict", files={"photo": ("a.jpg", b"x")}),
                 422, "missing_field")
    assert_error(client.post("/api/v1/predict", data={"image": "not a file"},
                             files={"other": ("a.txt", b"x")}), 415, "not_image")
    assert_error(post_image(client, b""), 422, "missing_field")  # empty file input
    raw = image_bytes(make_image(11))
    assert_error(client.post("/api/v1/predict", content=raw,
                             headers={"content-type": "image/jpeg"}), 422, "missing_field")


def test_malformed_multipart_is_400(client: TestClient) -> None:
    body = (b"--XYZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + image_bytes(make_image(12))[:500])
    resp = client.post("/api/v1/predict", content=body,
                       headers={"content-type": "multipart/form-data; boundary=XYZ"})
    assert_error(resp, 400, "bad_request")
    resp = client.post("/api/v1/predict", content=b"whatever",
                       headers={"content-type": "multipart/form-data"})
    assert_error(resp, 400, "bad_request")


def test_two_fields_first_non_empty_wins(client: TestClient) -> None:
    """The page has a file picker and a camera input, both named `image`; one is empty."""
    data = image_bytes(make_image(13))
    resp = client.post("/api/v1/predict", files=[("image", ("", b"", "application/octet-stream")),
                                                  ("image", ("cam.jpg", data, "image/jpeg"))])
    assert resp.status_code == 200
    assert resp.json()["top"] == post_image(client, data).json()["top"]


def test_api_404_and_405_are_json(client: TestClient) -> None:
    assert_error(client.get("/api/v1/nothing"), 404, "not_found")
    assert_error(client.get("/api/v1/predict"), 405, "method_not_allowed")


# --------------------------------------------------------------------------- API: other routes


def test_model_card_and_health(client: TestClient) -> None:
    card = client.get("/api/v1/model").json()
    assert card["name"] == "tiny-test" and card["classes"] == SKIN8_CLASSES
    assert card["preprocessing"]["input_size"] == 32 and card["temperature"] == 1.5
    assert card["served"] == {"precision": "fp32", "file": "model.onnx", "temperature": 1.5}
    assert client.get("/healthz").json() == {"status": "ok", "model": "tiny-test"}


def test_openapi_documents_the_upload(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/v1/predict"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["required"] == ["image"]
    assert "/" not in spec["paths"] and "/predict" not in spec["paths"]  # pages stay out
    assert client.get("/docs").status_code == 200


def test_inference_does_not_block_the_event_loop(onnx_model_dir: Path) -> None:
    """A slow prediction runs in the threadpool: /healthz answers while it is running (the
    prediction waits for that answer; were it on the event loop, the answer could not come)."""
    import httpx

    released = threading.Event()
    seen: list[str] = []

    class Slow(Predictor):
        def predict_one(self, source, top_k=3, heatmap=False):  # type: ignore[override]
            seen.append("predict started")
            seen.append(f"released {released.wait(timeout=30)}")  # a hang guard, not a timing
            return super().predict_one(source, top_k=top_k, heatmap=heatmap)

    app = create_app(Settings(model_dir=onnx_model_dir), predictor=Slow(onnx_model_dir))
    data = image_bytes(make_image(14))

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:

            async def slow() -> None:
                r = await ac.post("/api/v1/predict", files={"image": ("a.jpg", data)})
                assert r.status_code == 200
                seen.append("predict done")

            async def health() -> None:
                while "predict started" not in seen:
                    await asyncio.sleep(0.01)
                r = await ac.get("/healthz")
                assert r.status_code == 200
                seen.append("health done")
                released.set()

            await asyncio.gather(slow(), health())

    asyncio.run(run())
    assert seen == ["predict started", "health done", "released True", "predict done"]


# --------------------------------------------------------------------------- privacy


def test_no_file_written_during_requests(client: TestClient, monkeypatch) -> None:
    """A 2 MB photo (Starlette would spool anything over 1 MB to disk) stays in memory."""
    big = image_bytes(noise_image((1000, 700), seed=1), "PNG")
    assert len(big) > 1024 * 1024
    tmp = Path(tempfile.gettempdir())
    before = set(os.listdir(tmp))
    writes: list[str] = []
    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+"):
            writes.append(str(file))
            raise AssertionError(f"file opened for writing during a request: {file}")
        return real_open(file, mode, *args, **kwargs)

    def no_temp(*args, **kwargs):
        writes.append("tempfile")
        raise AssertionError("temporary file created during a request")

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, no_temp)
    assert post_image(client, big, mime="image/png").status_code == 200
    assert post_image(client, big, url="/predict", mime="image/png").status_code == 200
    assert client.post("/api/v1/predict?heatmap=true",
                       files={"image": ("a.png", big)}).status_code == 200
    monkeypatch.undo()
    assert writes == []
    assert set(os.listdir(tmp)) == before


def test_results_are_not_cached(client: TestClient) -> None:
    data = image_bytes(make_image(15))
    assert post_image(client, data).headers["cache-control"] == "no-store"
    assert post_image(client, data, url="/predict").headers["cache-control"] == "no-store"


def test_web_layer_never_imports_torch(onnx_model_dir: Path) -> None:
    code = (
        "import sys\n"
        "import kulit.web.app\n"
        "assert 'torch' not in sys.modules, 'import kulit.web.app loaded torch'\n"
        "from fastapi.testclient import TestClient\n"
        "from kulit.web.settings import Settings\n"
        f"s = Settings(model_dir={str(onnx_model_dir)!r})\n"
        "with TestClient(kulit.web.app.create_app(s)) as c:\n"
        "    assert c.get('/').status_code == 200\n"
        "    assert c.get('/about').status_code == 200\n"
        "assert 'torch' not in sys.modules, 'serving loaded torch'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------- pages


def test_index_page_default_indonesian(client: TestClient) -> None:
    client.cookies.clear()
    resp = client.get("/")
    assert resp.status_code == 200
    html = resp.text
    assert '<html lang="id">' in html
    assert "Periksa foto masalah kulit" in html and DISCLAIMER_ID in html
    assert 'accept="image/*"' in html and 'capture="environment"' in html
    assert 'action="/predict?lang=id"' in html and 'enctype="multipart/form-data"' in html
    assert 'name="image"' in html and 'href="?lang=en"' in html
    # nothing from other hosts: no CDN, works offline
    assert not re.search(r'(src|href)="(https?:)?//', html)
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    for name in ID_NAMES.values():
        assert name in html


def test_language_switch_is_remembered(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        resp = c.get("/?lang=en")
        assert '<html lang="en">' in resp.text and "Check a photo of a skin problem" in resp.text
        assert DISCLAIMER_EN in resp.text
        assert resp.cookies.get("lang") == "en"
        again = c.get("/about")  # no ?lang=: the cookie decides
        assert '<html lang="en">' in again.text and "Known limits" in again.text
        back = c.get("/about?lang=id")
        assert '<html lang="id">' in back.text and "Keterbatasan yang diketahui" in back.text
        assert '<html lang="id">' in c.get("/").text
        assert '<html lang="id">' in c.get("/?lang=fr").text  # unsupported: ignored


def test_default_lang_setting(onnx_model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=onnx_model_dir, default_lang="en"))) as c:
        assert '<html lang="en">' in c.get("/").text


def test_result_page(client: TestClient) -> None:
    resp = post_image(client, image_bytes(make_image(16, (100, 80))), url="/predict?lang=en")
    assert resp.status_code == 200
    html = resp.text
    assert '<html lang="en">' in html
    assert html.count('class="bar-row') == 3
    assert "The 3 closest conditions" in html
    assert html.count(DISCLAIMER_EN) >= 2  # on the result and in the footer
    rows = re.findall(r'class="bar-row[^"]*" data-class="([^"]+)"', html)
    conditions = load_conditions()
    for cls in rows:
        en = conditions[cls]["en"]
        assert en["description"].replace("'", "&#39;") in html and en["contagious"] in html
    assert 'type="checkbox" id="show-heatmap"' in html and '<label for="show-heatmap"' in html
    assert "data:image/jpeg;base64," in html and "data:image/png" not in html  # light pages
    assert 'alt="Your photo' in html


def test_result_page_indonesian(client: TestClient) -> None:
    resp = post_image(client, image_bytes(make_image(17)), url="/predict?lang=id")
    html = resp.text
    assert '<html lang="id">' in html and "3 kondisi yang paling mirip" in html
    assert DISCLAIMER_ID in html and "Bukan diagnosis" in html
    rows = re.findall(r'class="bar-row[^"]*" data-class="([^"]+)"', html)
    for cls in rows:
        assert ID_NAMES[cls] in html


@pytest.mark.parametrize("lang,text", [("id", STRINGS["id"]["err_not_image"]),
                                       ("en", STRINGS["en"]["err_not_image"])])
def test_page_errors_rerender_the_form(client: TestClient, lang: str, text: str) -> None:
    resp = post_image(client, b"hello, not a photo", url=f"/predict?lang={lang}",
                      name="notes.txt", mime="text/plain")
    assert resp.status_code == 415
    assert text in resp.text and 'role="alert"' in resp.text
    assert 'name="image"' in resp.text  # the form is back, ready for another try


def test_page_error_codes(client: TestClient) -> None:
    data = image_bytes(noise_image((200, 160)), "JPEG")
    resp = post_image(client, data[:1000], url="/predict?lang=en")
    assert resp.status_code == 400 and STRINGS["en"]["err_unreadable"] in resp.text
    resp = client.post("/predict?lang=en", files={"image": ("", b"")})
    assert resp.status_code == 422 and STRINGS["en"]["err_missing_field"] in resp.text
    resp = post_image(client, png_header_only(20000, 20000), url="/predict?lang=id")
    assert resp.status_code == 413 and "terlalu besar" in resp.text


def test_get_predict_redirects_home(client: TestClient) -> None:
    resp = client.get("/predict?lang=en", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/?lang=en"


def test_page_404_is_html(client: TestClient) -> None:
    resp = client.get("/no-such-page?lang=en")
    assert resp.status_code == 404 and "Page not found" in resp.text


def test_static_files_are_served(client: TestClient) -> None:
    css = client.get("/static/kulit.css")
    js = client.get("/static/kulit.js")
    assert css.status_code == 200 and "max-width" in css.text
    assert js.status_code == 200 and "addEventListener" in js.text
    assert "http" not in css.text and "//cdn" not in js.text


# --------------------------------------------------------------------------- result logic (stub)


class StubPredictor(Predictor):
    """The real model dir and card, but a crafted answer: tests what the page says about it."""

    def __init__(self, model_dir: Path, probs: list[float]) -> None:
        super().__init__(model_dir)
        self.fixed = np.asarray(probs, dtype=np.float64)

    def predict_one(self, source, top_k=3, heatmap=False):  # type: ignore[override]
        return Prediction(
            classes=self.classes, probs=self.fixed, logits=np.log(self.fixed),
            threshold=self.card.threshold, top_k=top_k,
            heatmap=np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4) if heatmap else None,
            image=Image.new("RGB", (32, 32), (200, 150, 140)), source="upload",
            timing_ms={"inference": 1.0},
        )


MELANOMA = [0.02, 0.03, 0.05, 0.80, 0.04, 0.03, 0.02, 0.01]
UNSURE = [0.30, 0.25, 0.15, 0.10, 0.08, 0.05, 0.04, 0.03]
PSORIASIS = [0.01, 0.01, 0.02, 0.01, 0.90, 0.03, 0.01, 0.01]


@pytest.fixture()
def stub_client(settings: Settings, onnx_model_dir: Path):
    def make(probs: list[float]) -> TestClient:
        app = create_app(settings)
        stub = StubPredictor(onnx_model_dir, probs)
        app.dependency_overrides[get_predictor] = lambda: stub
        return TestClient(app)
    return make


def result(client: TestClient, lang: str) -> str:
    resp = post_image(client, image_bytes(make_image(0)), url=f"/predict?lang={lang}")
    assert resp.status_code == 200
    return resp.text


def test_melanoma_says_see_a_doctor(stub_client) -> None:
    with stub_client(MELANOMA) as c:
        en, id_ = result(c, "en"), result(c, "id")
        body = post_image(c, image_bytes(make_image(0))).json()
    assert body["label"] == "Melanoma" and body["see_doctor"] and not body["uncertain"]
    assert "See a doctor soon" in en and STRINGS["en"]["see_doctor_melanoma"] in en
    assert "The photo looks most like Melanoma: an estimated 80%." in en
    assert "Segera periksakan ke dokter" in id_ and STRINGS["id"]["see_doctor_melanoma"] in id_
    assert 'class="urgent"' in en and 'role="alert"' in en


def test_uncertain_does_not_name_a_condition(stub_client) -> None:
    with stub_client(UNSURE) as c:
        en, id_ = result(c, "en"), result(c, "id")
        body = post_image(c, image_bytes(make_image(0))).json()
    assert body["uncertain"] and body["label"] is None and body["see_doctor"]
    assert STRINGS["en"]["verdict_uncertain"] in en and "looks most like" not in en
    assert STRINGS["en"]["see_doctor_uncertain"] in en
    assert STRINGS["id"]["verdict_uncertain"] in id_ and "paling mirip dengan" not in id_
    assert STRINGS["id"]["see_doctor_uncertain"] in id_
    assert en.count('class="bar-row') == 3  # the possibilities are still listed
    assert "<details class=\"condition\" id=\"cond-1\" open>" not in en  # none picked out


def test_confident_benign_has_no_doctor_banner(stub_client) -> None:
    with stub_client(PSORIASIS) as c:
        en = result(c, "en")
    assert "The photo looks most like Psoriasis: an estimated 90%." in en
    assert 'class="urgent"' not in en and "See a doctor soon" not in en
    # Melanoma is not in the top 3 here; when it is, its row is flagged (see below).
    assert "urgent-row" not in en


def _fixed(stub: Predictor):
    return lambda: stub


def test_melanoma_in_the_list_is_flagged_only_above_the_cutoff(
        settings: Settings, tmp_path: Path) -> None:
    probs = [0.01, 0.01, 0.02, 0.20, 0.70, 0.03, 0.02, 0.01]  # Psoriasis first, Melanoma second
    for cutoff, flagged in ((None, False), (0.1, True), (0.25, False)):
        model = write_onnx_model_dir(tmp_path / f"m{cutoff}", SKIN8_CLASSES)
        if cutoff is not None:
            card = json.loads((model / "card.json").read_text())
            card["gate"] = {"melanoma_cutoff": cutoff}
            (model / "card.json").write_text(json.dumps(card))
        app = create_app(Settings(model_dir=model))
        app.dependency_overrides[get_predictor] = _fixed(StubPredictor(model, probs))
        with TestClient(app) as c:
            en = result(c, "en")
            body = post_image(c, image_bytes(make_image(0))).json()
        assert body["status"] == "answered" and body["label"] == "Psoriasis"
        assert body["melanoma_alert"] is flagged and body["see_doctor"] is flagged
        assert ('urgent-row" data-class="Melanoma"' in en) is flagged
        assert ('class="urgent"' in en) is flagged
        assert (STRINGS["en"]["see_doctor_melanoma_possible"].format(pct="20%") in en) is flagged
        if flagged:
            assert re.search(r'<details class="condition" id="cond-2" data-class="Melanoma" open>'
                             r'\s*<summary><span '
                             r'class="cond-name">Melanoma', en)


def test_unknown_classes_render_raw_names(tmp_path: Path) -> None:
    model = write_onnx_model_dir(tmp_path / "m", ["Alpha", "Beta", "Gamma"])
    with TestClient(create_app(Settings(model_dir=model))) as c:
        html = result(c, "en")
        assert html.count('class="bar-row') == 3
        for name in ("Alpha", "Beta", "Gamma"):
            assert f'<span class="bar-name">{name}' in html
        assert STRINGS["en"]["cond_unknown"] in html
        about = c.get("/about?lang=id").text
        assert all(name in about for name in ("Alpha", "Beta", "Gamma"))


# --------------------------------------------------------------------------- about page


def test_about_page_from_the_card(tmp_path: Path) -> None:
    model = write_onnx_model_dir(tmp_path / "m", SKIN8_CLASSES)
    card = json.loads((model / "card.json").read_text())
    card["data"] = {"name": "skin8", "sources": ["DermNet NZ", "MSID"],
                    "licence": "CC BY-NC-ND 3.0 NZ"}
    card["metrics"] = {"n": 101, "accuracy": 0.8317, "balanced_accuracy": 0.8012,
                       "macro_f1": 0.79, "top3_accuracy": 0.96, "ece": 0.041,
                       "ci95": {"accuracy": [0.76, 0.90]}, "per_class": [{"class": "x"}]}
    card["limits"] = ["Trained on 1,110 photos of 8 conditions only."]
    (model / "card.json").write_text(json.dumps(card))
    with TestClient(create_app(Settings(model_dir=model))) as c:
        en = c.get("/about?lang=en").text
        id_ = c.get("/about?lang=id").text
    for text in ("DermNet NZ", "MSID", "CC BY-NC-ND 3.0 NZ", "83.2%", "80.1%", "96.0%",
                 "0.041", "101", "76.0% – 90.0%", "Trained on 1,110 photos",
                 "Known limits", DISCLAIMER_EN, "Ringworm"):
        assert text in en, text
    for text in ("Hasil uji", "83,2%", "0,041", "Keterbatasan yang diketahui", "Cacar air",
                 "Kutil", DISCLAIMER_ID):
        assert text in id_, text
    assert "per_class" not in en


def test_about_page_with_a_sparse_card(client: TestClient) -> None:
    html = client.get("/about?lang=en").text
    assert "generated" in html and "none" in html  # data.source, data.licence
    assert "50.0%" in html and "Test photos" not in html  # only accuracy exists
    assert STRINGS["en"]["about_limits_none"] in html
    assert "tiny-test" in html and "32 × 32 px" in html and "below 50%" in html


# --------------------------------------------------------------------------- text and settings


def test_every_ui_string_exists_in_both_languages() -> None:
    assert set(STRINGS["id"]) == set(STRINGS["en"])
    used = set()
    for path in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z0-9_]+)'", path.read_text()))
    for path in TEMPLATES.parent.glob("*.py"):
        used |= set(re.findall(r'\bt\(lang[^,]*, "([a-z0-9_]+)"', path.read_text()))
    assert used, "no t('...') calls found"
    assert used <= set(STRINGS["en"]), used - set(STRINGS["en"])
    for code in ("not_image", "unreadable", "too_large", "too_small", "missing_field",
                 "bad_request"):
        assert f"err_{code}" in STRINGS["en"]


def test_conditions_json_covers_skin8_in_both_languages() -> None:
    conditions = load_conditions()
    assert set(conditions) == set(SKIN8_CLASSES)
    for cls, entry in conditions.items():
        assert entry["id"]["name"] == ID_NAMES[cls]
        assert entry["en"]["name"] == cls
        for lang in ("id", "en"):
            text = entry[lang]
            assert text["description"] and text["contagious"]
            assert len(text["signs"]) >= 2 and len(text["next"]) >= 2
    assert "doctor" in " ".join(conditions["Melanoma"]["en"]["next"]).lower()
    assert "molluscum" in conditions["Warts"]["en"]["description"].lower()


def test_settings_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("KULIT_MODEL_DIR", "/some/model")
    monkeypatch.setenv("KULIT_MAX_UPLOAD_MB", "2")
    monkeypatch.setenv("KULIT_TOP_K", "5")
    monkeypatch.setenv("KULIT_DEFAULT_LANG", "en")
    s = Settings()
    assert (s.model_dir, s.max_upload_bytes, s.top_k, s.default_lang) == (
        Path("/some/model"), 2 * 1024 * 1024, 5, "en")
    monkeypatch.delenv("KULIT_MODEL_DIR")
    monkeypatch.delenv("KULIT_MAX_UPLOAD_MB")
    monkeypatch.delenv("KULIT_TOP_K")
    monkeypatch.delenv("KULIT_DEFAULT_LANG")
    d = Settings()
    assert (d.model_dir, d.max_upload_mb, d.top_k, d.default_lang) == (
        Path("models/kulit-skin8"), 10, 3, "id")


def test_missing_model_fails_at_startup(tmp_path: Path) -> None:
    from kulit.errors import ModelError

    with pytest.raises(ModelError, match="not found"):
        with TestClient(create_app(Settings(model_dir=tmp_path / "nope"))):
            pass


@pytest.mark.parametrize("make_dir", [False, True])
def test_cli_serve_bad_model_dir_exits_2(tmp_path: Path, make_dir: bool) -> None:
    from typer.testing import CliRunner

    from kulit.cli import app

    model = tmp_path / "model"
    if make_dir:
        model.mkdir()  # exists but holds no card.json
    out = CliRunner().invoke(app, ["serve", "--model", str(model), "--port", "1"])
    assert out.exit_code == 2
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in out.output


def test_api_advice_points_to_a_doctor_for_melanoma_and_uncertain_answers(stub_client):
    for probs, key in ((MELANOMA, "melanoma"), (UNSURE, "uncertain"), (PSORIASIS, "default")):
        with stub_client(probs) as c:
            body = post_image(c, image_bytes(make_image(0))).json()
        assert body["advice"] == {"en": STRINGS["en"][f"advice_{key}"],
                                  "id": STRINGS["id"][f"advice_{key}"]}
    assert "doctor" in STRINGS["en"]["advice_melanoma"]
    assert "dokter" in STRINGS["id"]["advice_uncertain"]
