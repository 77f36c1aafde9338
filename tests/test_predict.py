"""Predictor on a small ONNX model: decoding edge cases, batching, calibration, Grad-CAM."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kulit.errors import ImageError, ModelError
from kulit.serving.calibration import softmax
from kulit.serving.predict import Predictor, heatmap_overlay
from tests.conftest import image_bytes, make_image


@pytest.fixture(scope="module")
def predictor(onnx_model_dir):
    return Predictor(onnx_model_dir)


def test_predict_returns_calibrated_topk(predictor):
    img = make_image(1, (120, 90), 2)
    p = predictor.predict_one(image_bytes(img), top_k=3)
    assert len(p.top) == 3
    expected = softmax(p.logits.astype(np.float64) / 1.5)
    np.testing.assert_allclose(p.probs, expected, rtol=1e-9)
    probs = [q for _, q in p.top]
    assert probs == sorted(probs, reverse=True)
    assert p.below_threshold == (p.confidence < 0.5)


def test_batch_equals_single(predictor):
    imgs = [image_bytes(make_image(s, (100 + s, 80), s)) for s in range(5)]
    batch = predictor.predict(imgs)
    for b, raw in zip(batch, imgs, strict=True):
        one = predictor.predict_one(raw)
        np.testing.assert_allclose(b.logits, one.logits, rtol=1e-4, atol=1e-5)


def test_exif_rotation_is_applied(predictor):
    img = make_image(3, (120, 60), 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    raw = image_bytes(img, "JPEG", exif=exif.tobytes(), quality=95)
    upright = img.transpose(Image.Transpose.ROTATE_270)
    a = predictor.prepare(raw)[1]
    b = predictor.prepare(image_bytes(upright, "JPEG", quality=95))[1]
    assert np.abs(a - b).mean() < 0.05
    wrong = predictor.prepare(image_bytes(img, "JPEG", quality=95))[1]
    assert np.abs(a - wrong).mean() > 0.1


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "LA", "L", "I;16"])
def test_modes_decode(predictor, mode):
    img = make_image(4, (64, 64), 1)
    if mode == "I;16":
        arr = (np.asarray(img.convert("L"), np.uint16) * 257)
        conv = Image.fromarray(arr)
        fmt = "PNG"
    else:
        conv = img.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else "PNG"
    p = predictor.predict_one(image_bytes(conv, fmt))
    assert np.isfinite(p.probs).all()


def test_alpha_is_flattened_on_white(predictor):
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    crop, _ = predictor.prepare(image_bytes(rgba, "PNG"))
    assert crop.getpixel((5, 5)) == (255, 255, 255)


def test_one_pixel_image(predictor):
    p = predictor.predict_one(image_bytes(Image.new("RGB", (1, 1), (200, 100, 50)), "PNG"))
    assert np.isfinite(p.probs).all()


@pytest.mark.parametrize(
    "payload,code",
    [(b"%PDF-1.4 not an image", "not_image"), (b"", "not_image"),
     (b"hello world", "not_image")],
)
def test_bad_bytes(predictor, payload, code):
    with pytest.raises(ImageError) as e:
        predictor.predict_one(payload)
    assert e.value.code == code


def test_truncated_jpeg(predictor):
    raw = image_bytes(make_image(5, (200, 200)), "JPEG")
    with pytest.raises(ImageError) as e:
        predictor.predict_one(raw[: len(raw) // 3])
    assert e.value.code == "unreadable"


def test_decompression_bomb(predictor):
    big = Image.new("1", (10_000, 5_000))  # 50 Mpx, tiny when PNG-compressed
    raw = image_bytes(big, "PNG")
    assert len(raw) < 200_000
    with pytest.raises(ImageError) as e:
        predictor.predict_one(raw)
    assert e.value.code == "too_large"


def test_predict_many_keeps_going(predictor):
    good = image_bytes(make_image(6))
    res = predictor.predict_many([good, b"junk", good])
    assert isinstance(res[1], ImageError)
    assert not isinstance(res[0], ImageError) and not isinstance(res[2], ImageError)


def test_grad_cam_matches_numeric_gradient(predictor):
    img = make_image(7, (64, 64), 2)
    p = predictor.predict_one(image_bytes(img), heatmap=True)
    assert p.heatmap is not None and p.heatmap.shape == (8, 8)
    assert 0 <= p.heatmap.min() and p.heatmap.max() <= 1
    # The analytic head gradient equals a finite-difference gradient of the head.
    _, x = predictor.prepare(image_bytes(img))
    _, fmap = predictor.run(x[None], features=True)
    f = fmap[0].astype(np.float64)
    head = predictor.head
    cls = int(np.argmax(p.probs))

    def logit(fm):
        return head["fc_w"][cls] @ fm.reshape(fm.shape[0], -1).mean(1) + head["fc_b"][cls]

    g = predictor.head_gradient(f, cls)
    eps = 1e-4
    f2 = f.copy()
    f2[3, 2, 2] += eps
    assert abs((logit(f2) - logit(f)) / eps - g[3]) < 1e-6
    over = heatmap_overlay(p.image, p.heatmap)
    assert over.size == p.image.size and over.mode == "RGB"


def test_missing_model_dir(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Predictor(tmp_path / "nope")
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelError, match="card.json"):
        Predictor(tmp_path / "m")


def test_serving_never_imports_torch():
    code = ("import kulit.serving.predict, kulit.serving.preprocess, kulit.serving.card, sys; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pil_image_input(predictor):
    img = make_image(8)
    a = predictor.predict_one(img)
    b = predictor.predict_one(io.BytesIO(image_bytes(img, "PNG")))
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-6)


def test_concurrent_runs_are_capped(onnx_model_dir):
    import threading
    import time as _time

    pred = Predictor(onnx_model_dir, max_concurrent=2)
    real = pred.session.run
    active, peak, lock = [0], [0], threading.Lock()

    class Spy:
        def run(self, names, feeds):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            _time.sleep(0.05)
            try:
                return real(names, feeds)
            finally:
                with lock:
                    active[0] -= 1

    pred.session = Spy()
    raw = image_bytes(make_image(9))
    threads = [threading.Thread(target=pred.predict_one, args=(raw,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2


def test_first_layer_from_the_same_run_equals_a_separate_run(predictor):
    raw = image_bytes(make_image(11))
    p = predictor.predict_one(raw, first_layer=True)
    assert p.first_layer is not None
    np.testing.assert_allclose(p.first_layer, predictor.first_layer(raw), rtol=1e-6)
    assert predictor.predict_one(raw).first_layer is None
