"""Rates and slices: k of n with a Wilson interval, and the figures of each group of photos
(per skin-type band, per source) with their intervals: one helper for every per-group figure
(evaluate, shortlist)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from kulit.build.metrics import balanced_accuracy, bootstrap_ci, clean_json

MIN_BOOTSTRAP_N = 10  # fewer photos in a slice: no bootstrap interval (Wilson ones still given)

def wilson(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval of k successes out of n (scipy); None when n == 0."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def rate(hits: np.ndarray | Sequence[bool]) -> dict[str, Any]:
    """k of n with its share and Wilson 95% interval: the one shape every rate has."""
    hits = np.asarray(hits, bool).ravel()
    k, n = int(hits.sum()), int(hits.size)
    return {"k": k, "n": n, "rate": (k / n) if n else None, "ci95": wilson(k, n)}


def slice_rows(groups: Sequence[str | None], order: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Row indices of every group named in `groups` (None or "" = in no group): the names of
    `order` first, each even when empty (so a report shows "0 photos"), then the others sorted.

    The one slicing rule for per-band and per-source figures (evaluate, shortlist)."""
    g = np.array([x or "" for x in groups], dtype=object)
    names = list(order) + sorted({str(x) for x in g if x} - set(order))
    return {name: np.flatnonzero(g == name) for name in names}


def slice_figures(
    y_true: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    threshold: float,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    shortlists: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """The figures reported for a small slice of photos (e.g. one skin-type band), each with a
    95% interval: top-1 and top-3 (Wilson), balanced accuracy (bootstrap, from MIN_BOOTSTRAP_N
    photos), the share answered confidently (top probability >= `threshold`) and how many of
    those are right (Wilson), and with `shortlists` (class indices per photo) the shortlist's
    coverage and mean size. Photos whose label is not one of `classes` are left out."""
    index = {c: i for i, c in enumerate(classes)}
    keep = [i for i, t in enumerate(y_true) if t in index]
    p = np.asarray(probs, np.float64).reshape(len(y_true), len(classes))[keep]
    y = np.array([index[y_true[i]] for i in keep], np.int64)
    n = len(y)
    pred = p.argmax(axis=1) if n else np.zeros(0, np.int64)
    correct = (pred == y).astype(np.float64)
    top3 = np.any(np.argsort(-p, axis=1, kind="stable")[:, :3] == y[:, None], axis=1) if n \
        else np.zeros(0, bool)
    sure = p.max(axis=1) >= threshold if n else np.zeros(0, bool)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": rate(correct.astype(bool)),
        "top3_accuracy": rate(top3),
        "balanced_accuracy": balanced_accuracy(y, pred, len(classes)) if n else None,
        # a bootstrap of a handful of photos gives a falsely narrow interval: none below this
        "balanced_accuracy_ci95": bootstrap_ci(y, correct, len(classes), n_boot, seed)[
            "balanced_accuracy"] if n >= MIN_BOOTSTRAP_N else None,
        "confident": rate(sure),
        "confident_right": rate(correct[sure].astype(bool)),
    }
    if shortlists is not None:
        sets = [shortlists[i] for i in keep]
        out["shortlist"] = {
            "coverage": rate([int(t) in s for s, t in zip(sets, y, strict=True)]),
            "mean_size": float(np.mean([len(s) for s in sets])) if n else None,
            "one_or_two": rate([len(s) <= 2 for s in sets]),
        }
    return cast("dict[str, Any]", clean_json(out))


def figures_by_slice(
    y_true: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    groups: Sequence[str | None],
    threshold: float,
    *,
    order: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
    shortlists: Sequence[Sequence[int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """`slice_figures` for each group of `slice_rows(groups, order)`."""
    if len(groups) != len(y_true):
        raise ValueError(f"{len(groups)} group names for {len(y_true)} labels")
    p = np.asarray(probs, np.float64)
    return {
        name: slice_figures([y_true[i] for i in idx], p[idx], classes, threshold,
                            n_boot=n_boot, seed=seed,
                            shortlists=None if shortlists is None
                            else [shortlists[i] for i in idx])
        for name, idx in slice_rows(groups, order).items()
    }
