"""Calibration: temperatures and thresholds that follow the data, not the code's clipping."""

from __future__ import annotations

import numpy as np
import pytest

from kulit.build.metrics import balanced_accuracy
from kulit.serving.calibration import THRESHOLD_GRID, choose_threshold, fit_temperature, softmax


def sample_labels(logits: np.ndarray, seed: int) -> np.ndarray:
    """Labels drawn from softmax(logits): for them, temperature 1 is the right answer."""
    rng = np.random.default_rng(seed)
    p = softmax(logits, axis=1)
    return (rng.uniform(size=(len(p), 1)) > p.cumsum(axis=1)).sum(axis=1)


@pytest.mark.parametrize("t_true", [0.5, 1.0, 3.0])
def test_fit_temperature_recovers_a_known_temperature(t_true: float) -> None:
    logits = np.random.default_rng(1).normal(0, 2.0, (6000, 5))
    y = sample_labels(logits, seed=2)
    assert fit_temperature(logits * t_true, y) == pytest.approx(t_true, rel=0.08)


def test_softmax_matches_the_closed_form_and_survives_huge_logits() -> None:
    z = np.array([[0.0, np.log(3.0)], [1000.0, 1000.0 + np.log(3.0)]])
    np.testing.assert_allclose(softmax(z, axis=1), [[0.25, 0.75], [0.25, 0.75]], rtol=1e-12)


def confident_then_unsure(n_wrong_mid: int) -> tuple[np.ndarray, np.ndarray]:
    """40 images at confidence ~0.9 (all right) and 40 at ~0.5, `n_wrong_mid` of them wrong."""
    sure = np.tile([4.0, 0.0, 0.0, 0.0], (40, 1))  # p(top) = e^4/(e^4+3) ~ 0.948
    mid = np.tile([1.1, 0.0, 0.0, 0.0], (40, 1))  # p(top) ~ 0.50
    y = np.zeros(80, dtype=np.int64)
    y[40: 40 + n_wrong_mid] = 1
    return np.vstack([sure, mid]), y


def test_threshold_moves_when_the_validation_data_changes() -> None:
    all_right = choose_threshold(*confident_then_unsure(0))
    mostly_wrong_when_unsure = choose_threshold(*confident_then_unsure(30))
    assert all_right == THRESHOLD_GRID[0]  # every answer is right: answer them all
    assert mostly_wrong_when_unsure > 0.5  # must cut the ~0.50 answers out
    assert mostly_wrong_when_unsure == min(t for t in THRESHOLD_GRID if t > 0.5)


def test_threshold_falls_back_to_the_top_of_the_grid_when_nothing_is_accurate() -> None:
    logits = np.tile([4.0, 0.0], (20, 1))
    assert choose_threshold(logits, np.ones(20, dtype=np.int64)) == THRESHOLD_GRID[-1]


def test_balanced_accuracy_is_the_mean_recall_over_present_classes() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 3, 3])  # class 3 predicted but absent from y
    assert balanced_accuracy(y, pred, 4) == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    from sklearn.metrics import balanced_accuracy_score

    with pytest.warns(UserWarning):  # sklearn warns about the absent class, then agrees
        assert balanced_accuracy(y, pred, 4) == pytest.approx(balanced_accuracy_score(y, pred))
