"""Label cleaning and source-balanced sampling: the parts of the multi-source recipe with logic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cleanlab")

from kulit.training.augment import augment  # noqa: E402
from kulit.training.label_issues import find_issues  # noqa: E402
from kulit.training.train import sampling_probs  # noqa: E402


def blobs(n_per: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(0, 4, (k, 16))
    y = np.repeat(np.arange(k), n_per)
    return centres[y] + rng.normal(0, 1, (len(y), 16)), y


def test_only_checked_photos_are_flagged_and_mostly_the_flipped_ones() -> None:
    rng = np.random.default_rng(0)
    x, y = blobs(120, 3, rng)
    checked = np.arange(len(y)) % 2 == 0  # half the photos come from the noisy source
    noisy = y.copy()
    flip = checked & (rng.random(len(y)) < 0.12)
    noisy[flip] = (y[flip] + 1) % 3
    mask, probs = find_issues(x, noisy, 0, checked, max_frac=0.2)
    assert probs.shape == (len(y), 3)
    assert not mask[~checked].any()
    assert mask.sum() >= 0.7 * flip.sum()
    assert (mask & flip).sum() / mask.sum() > 0.8  # flagged photos are the wrong labels


def test_at_most_max_frac_of_a_class_is_left_out() -> None:
    rng = np.random.default_rng(1)
    x, y = blobs(100, 3, rng)
    noisy = np.where(rng.random(len(y)) < 0.4, (y + 1) % 3, y)  # far more noise than the cap
    checked = np.ones(len(y), bool)
    for cap in (0.05, 0.15):
        mask, _ = find_issues(x, noisy, 0, checked, max_frac=cap)
        for c in range(3):
            assert mask[noisy == c].sum() <= int(cap * (noisy == c).sum())
        assert mask.sum() >= 0.8 * sum(int(cap * (noisy == c).sum()) for c in range(3))


def test_source_balanced_sampling_gives_every_cell_the_same_mass() -> None:
    y = np.array([0] * 10 + [0] * 90 + [1] * 30 + [1] * 5)
    src = np.array(["a"] * 10 + ["b"] * 90 + ["a"] * 30 + ["b"] * 5)
    keep = np.ones(len(y), bool)
    keep[0] = False  # a left-out photo is never drawn
    p = sampling_probs(y, src, keep, balance=True)
    assert p[0] == 0 and p.sum() == pytest.approx(1.0)
    for c in (0, 1):
        for s in ("a", "b"):
            assert p[(y == c) & (src == s)].sum() == pytest.approx(0.25)
    flat = sampling_probs(y, src, keep, balance=False)
    assert flat[1] == pytest.approx(flat[-1])  # off: every kept photo alike


def test_capture_views_are_square_and_seeded() -> None:
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (300, 420, 3), np.uint8))
    a = augment(img, np.random.default_rng(5), 64, capture=True)
    b = augment(img, np.random.default_rng(5), 64, capture=True)
    c = augment(img, np.random.default_rng(6), 64, capture=True)
    assert a.size == (64, 64) and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
