"""quality on generated photos: sharp noise passes; blurred, dark, bright, tiny do not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from kulit.errors import ModelError
from kulit.serving.quality import ISSUES, QualityLimits, check_quality


def textured(size: tuple[int, int] = (400, 300), seed: int = 0, level: float = 140.0,
             spread: float = 50.0) -> Image.Image:
    """Skin-toned noise with fine detail everywhere (a sharp, evenly lit photo)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.array([level + 40, level, level - 20], np.float32)
    arr = base + rng.normal(0, spread, (h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def test_a_sharp_well_lit_photo_passes() -> None:
    for seed in range(3):
        q = check_quality(textured(seed=seed))
        assert q.issue is None, q
        assert (q.width, q.height) == (400, 300)


@pytest.mark.parametrize("size", [(10, 10), (95, 400), (64, 64)])
def test_too_small(size: tuple[int, int]) -> None:
    assert check_quality(textured(size)).issue == "too_small"


def test_just_big_enough() -> None:
    assert check_quality(textured((96, 300))).issue is None


def scene(size: tuple[int, int] = (400, 300), seed: int = 0) -> Image.Image:
    """Structure at every scale (blocks of 64, 16 and 4 px), like a photo rather than noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.full((h, w), 130.0, np.float32)
    for block, amp in ((64, 40), (16, 25), (4, 15)):
        small = rng.normal(0, amp, (h // block + 1, w // block + 1)).astype(np.float32)
        arr += np.kron(small, np.ones((block, block), np.float32))[:h, :w]
    rgb = np.stack([arr + 30, arr, arr - 20], axis=2)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def test_blurred() -> None:
    img = scene()
    assert check_quality(img).issue is None
    assert check_quality(img.filter(ImageFilter.GaussianBlur(1))).issue is None
    assert check_quality(img.filter(ImageFilter.GaussianBlur(8))).issue == "too_blurred"
    smooth = np.linspace(60, 200, 400, dtype=np.float32)[None, :, None].repeat(300, 0)
    flat = Image.fromarray(np.repeat(smooth, 3, axis=2).astype(np.uint8), "RGB")
    assert check_quality(flat).issue == "too_blurred"  # a plain gradient has no detail at all


def test_dark_and_bright() -> None:
    assert check_quality(textured(level=25, spread=8)).issue == "too_dark"
    assert check_quality(Image.new("RGB", (300, 300), (2, 2, 2))).issue == "too_dark"
    assert check_quality(textured(level=240, spread=8)).issue == "too_bright"
    assert check_quality(Image.new("RGB", (300, 300), (255, 255, 255))).issue == "too_bright"
    # dim but sharp and above the limit: not called dark, not called blurred
    assert check_quality(textured(level=80, spread=25)).issue is None


def test_order_small_before_dark() -> None:
    assert check_quality(Image.new("RGB", (10, 10), (0, 0, 0))).issue == "too_small"
    assert ISSUES[0] == "too_small"


def test_limits_from_the_card() -> None:
    assert QualityLimits.from_card({}) == QualityLimits()
    lim = QualityLimits.from_card({"min_side": 8, "min_sharpness": 0, "max_brightness": 0.99})
    assert lim.min_side == 8 and lim.max_brightness == 0.99 and lim.min_sharpness == 0.0
    assert check_quality(textured((10, 10)), lim).issue is None
    with pytest.raises(ModelError, match="unknown"):
        QualityLimits.from_card({"min_size": 8})


def test_the_models_crop_is_measured_when_given() -> None:
    """The Predictor passes its 224 px crop: measured instead of the photo (size still the
    photo's); a crop smaller than the thumbnail is ignored, the photo is measured then."""
    from kulit.serving.preprocess import Preprocessing, resize_crop

    photo = textured((640, 480))
    crop = resize_crop(photo, Preprocessing())
    q = check_quality(photo, square=crop)
    assert q.issue is None and (q.width, q.height) == (640, 480)
    soft = crop.filter(ImageFilter.GaussianBlur(6))
    assert check_quality(photo, square=soft).sharpness < 0.5 * q.sharpness  # the square
    tiny = soft.resize((32, 32))
    assert check_quality(photo, square=tiny) == check_quality(photo)  # too small: the photo
