"""Calibration: the one softmax, the fitted temperature and the abstention threshold.

Torch-free (numpy; scipy only inside `fit_temperature`). Training fits both on validation
logits; serving, evaluation and the walkthrough turn logits into probabilities with `softmax`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

T_BOUNDS = (0.05, 20.0)  # search range of fit_temperature
THRESHOLD_GRID = tuple(round(0.40 + 0.05 * i, 2) for i in range(7))  # 0.40 .. 0.70
THRESHOLD_TARGET = 0.85  # accuracy the answered validation images must reach


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (shifted by the maximum) along `axis`."""
    z = np.asarray(z)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return cast("np.ndarray", e / e.sum(axis=axis, keepdims=True))


def nll(logits: np.ndarray, y: np.ndarray, t: float = 1.0) -> float:
    """Mean negative log-likelihood of labels `y` under softmax(logits / t)."""
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray | Sequence[int]) -> float:
    """Temperature T in T_BOUNDS minimising the NLL of softmax(logits / T) (fit on val)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64).ravel()
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need logits [N, K] and N labels, got {z.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must lie in 0..{z.shape[1] - 1}")
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    # NLL is convex in 1/T, hence unimodal in log T: a bounded Brent search finds the minimum.
    res = minimize_scalar(
        lambda log_t: nll(z, y, float(np.exp(log_t))),
        bounds=(lo, hi), method="bounded", options={"xatol": 1e-5},
    )
    return float(np.clip(np.exp(res.x), *T_BOUNDS))


def choose_threshold(logits: np.ndarray, y: np.ndarray, target: float = THRESHOLD_TARGET
                     ) -> float:
    """Lowest confidence cut on THRESHOLD_GRID whose answered validation images are >= `target`
    accurate (and at least 5 images or 20% of them); the grid's top if none is.

    The grid keeps the model from always answering or almost never answering.
    """
    p = softmax(logits, axis=1)
    conf, correct = p.max(1), p.argmax(1) == y
    for t in THRESHOLD_GRID:
        keep = conf >= t
        if keep.sum() >= max(5, 0.2 * len(y)) and correct[keep].mean() >= target:
            return float(t)
    return THRESHOLD_GRID[-1]
