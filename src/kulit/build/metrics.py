"""Metrics of probabilities against true labels: the one balanced accuracy, ECE, top-k,
per-class table, bootstrap intervals, risk-coverage, and the same set per group of rows.

Torch-free: numpy, with scikit-learn imported only inside `compute_metrics`. The result is
JSON-clean (None where a number is undefined); `kulit.build.report` renders it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

N_BINS = 15  # reliability / ECE bins, equal width over [0, 1]
CI_LEVEL = 0.95  # every interval's level
RISK_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))  # 0.0 .. 0.95
_EPS = 1e-15  # floor on probabilities inside log()


def clean_json(obj: Any) -> Any:
    """JSON-clean copy: numpy scalars/arrays to Python, NaN/inf to None, Paths to str."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def round_floats(obj: Any, ndigits: int = 6) -> Any:
    if isinstance(obj, dict):
        return {k: round_floats(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [round_floats(v, ndigits) for v in obj]
    if isinstance(obj, float):
        return round(obj, ndigits)
    return obj


def _bin_stats(
    conf: np.ndarray, correct: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin (lo, hi]: count, mean confidence, accuracy (NaN where empty)."""
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / counts
    return counts, mean_conf, acc


def expected_calibration_error(
    conf: np.ndarray | Sequence[float], correct: np.ndarray | Sequence[bool], n_bins: int = N_BINS
) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width confidence bins.

    NaN for no samples.
    """
    conf = np.asarray(conf, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != correct.shape:
        raise ValueError(f"conf has {conf.size} values but correct has {correct.size}")
    if conf.size == 0:
        return float("nan")
    counts, mean_conf, acc = _bin_stats(conf, correct, n_bins)
    full = counts > 0
    return float(np.sum(counts[full] * np.abs(acc[full] - mean_conf[full])) / conf.size)



def balanced_accuracy_rows(
    y: np.ndarray, correct: np.ndarray, idx: np.ndarray, k: int
) -> np.ndarray:
    """Balanced accuracy (mean recall over the classes present) of each row of indices `idx`."""
    n_rows = idx.shape[0]
    flat = (y[idx] + k * np.arange(n_rows)[:, None]).ravel()
    totals = np.bincount(flat, minlength=n_rows * k).reshape(n_rows, k)
    hits = np.bincount(flat, weights=correct[idx].ravel(), minlength=n_rows * k)
    hits = hits.reshape(n_rows, k)
    present = totals > 0
    recall = np.where(present, hits / np.maximum(totals, 1), 0.0)
    return cast("np.ndarray", recall.sum(axis=1) / present.sum(axis=1))


def balanced_accuracy(y: np.ndarray | Sequence[int], pred: np.ndarray | Sequence[int],
                      k: int | None = None) -> float:
    """Mean recall over the classes present in `y` (classes are 0..k-1); 0.0 for no labels."""
    y = np.asarray(y, dtype=np.int64).ravel()
    pred = np.asarray(pred, dtype=np.int64).ravel()
    if y.size == 0:
        return 0.0
    k = int(max(y.max(), pred.max()) + 1) if k is None else k
    correct = (pred == y).astype(np.float64)
    return float(balanced_accuracy_rows(y, correct, np.arange(len(y))[None], k)[0])


def source_balanced_accuracy(y: np.ndarray, pred: np.ndarray, source: np.ndarray, k: int
                             ) -> float:
    """Mean over data sources of each source's balanced accuracy (model selection)."""
    return float(np.mean([balanced_accuracy(y[source == s], pred[source == s], k)
                          for s in sorted(set(source.tolist()))]))

def top_k_accuracy(probs: np.ndarray, y: np.ndarray, k: int = 3) -> float:
    """Share of rows whose true class is among the `k` highest probabilities (ties: first)."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, : min(k, probs.shape[1])]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def bootstrap(stat: Callable[[np.ndarray], Mapping[str, np.ndarray]], n: int, *,
              n_boot: int, seed: int, level: float = CI_LEVEL) -> dict[str, list[float] | None]:
    """Percentile intervals of each number `stat` returns, resampling n items with replacement:
    the one bootstrap (metrics, slices, benchmarks).

    `stat` gets a [m, n] matrix of indices, m resamples at once (at most ~16 MB of indices),
    and returns per name one value per resample; NaN (undefined in that resample) is left
    out, and a name never defined gets None. Seeded: the same inputs give the same interval.
    {} when there is nothing to resample.
    """
    if n == 0 or n_boot <= 0:
        return {}
    rng = np.random.default_rng(seed)
    values: dict[str, list[np.ndarray]] = {}
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        for name, v in stat(idx).items():
            values.setdefault(name, []).append(np.asarray(v, np.float64))
    q = [round(50 * (1 - level), 10), round(50 * (1 + level), 10)]  # 2.5, 97.5 exactly
    out: dict[str, list[float] | None] = {}
    for name, parts in values.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        out[name] = [float(x) for x in np.percentile(v, q)] if v.size else None
    return out


def bootstrap_ci(
    y: np.ndarray, correct: np.ndarray, k: int, n_boot: int, seed: int
) -> dict[str, list[float] | None]:
    """Percentile 95% intervals of accuracy and balanced accuracy, resampling images."""
    def stat(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"accuracy": correct[idx].mean(axis=1),
                "balanced_accuracy": balanced_accuracy_rows(y, correct, idx, k)}

    return {"accuracy": None, "balanced_accuracy": None,
            **bootstrap(stat, len(y), n_boot=n_boot, seed=seed)}


def _risk_coverage(conf: np.ndarray, correct: np.ndarray,
                   thresholds: Sequence[float] = RISK_THRESHOLDS) -> list[dict[str, Any]]:
    """Selective accuracy: answer only when the top probability is >= threshold."""
    rows = []
    n = len(conf)
    for t in thresholds:
        kept = conf >= t
        m = int(kept.sum())
        rows.append({
            "threshold": float(t),
            "coverage": m / n if n else None,
            "accuracy": float(correct[kept].mean()) if m else None,
            "n": m,
        })
    return rows


def selective_at(probs: np.ndarray, y_true: Sequence[str], classes: Sequence[str],
                 threshold: float) -> dict[str, Any]:
    """Coverage and accuracy when answering only at top probability >= threshold (known labels)."""
    index = {c: i for i, c in enumerate(classes)}
    keep = np.array([t in index for t in y_true], dtype=bool)
    p = np.asarray(probs, dtype=np.float64).reshape(len(y_true), len(classes))[keep]
    y = np.array([index[t] for t in y_true if t in index], dtype=np.int64)
    correct = (p.argmax(axis=1) == y).astype(float) if len(y) else np.zeros(0)
    row = _risk_coverage(p.max(axis=1) if len(y) else np.zeros(0), correct, [threshold])[0]
    return cast("dict[str, Any]", clean_json(row))


def _unknown_classes(labels: Sequence[str], pred: np.ndarray, known: np.ndarray,
                     classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per label the model does not know: how many images, and what it called them."""
    unknown: dict[str, Counter[str]] = {}
    for t, pr, ok in zip(labels, pred, known, strict=True):
        if not ok:
            unknown.setdefault(t, Counter())[classes[int(pr)]] += 1
    return [
        {"class": name, "n": sum(cnt.values()),
         "predicted": dict(sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0])))}
        for name, cnt in sorted(unknown.items())
    ]


def _headline(y: np.ndarray, pred: np.ndarray, p: np.ndarray, k: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, top-3 and NLL, and scikit-learn's per-class
    precision, recall, F1 and support (None / NaN where there is no image)."""
    import warnings

    from sklearn.metrics import f1_score, precision_recall_fscore_support

    n = len(y)
    if not n:
        return {"accuracy": None, "balanced_accuracy": None, "macro_f1": None,
                "top3_accuracy": None, "nll": None, "precision": np.full(k, np.nan),
                "recall": np.full(k, np.nan), "f1": np.full(k, np.nan),
                "support": np.zeros(k, np.int64)}
    with warnings.catch_warnings():
        # a class predicted but absent from y_true is expected, not worth a warning
        warnings.simplefilter("ignore")
        prec, rec, f1, support = precision_recall_fscore_support(
            y, pred, labels=list(range(k)), zero_division=np.nan
        )
        macro_f1 = f1_score(y, pred, labels=sorted(set(y.tolist())), average="macro",
                            zero_division=0)
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": balanced_accuracy(y, pred, k),
        "macro_f1": macro_f1,
        "top3_accuracy": top_k_accuracy(p, y, 3),
        "nll": float(np.mean(-np.log(np.clip(p[np.arange(n), y], _EPS, None)))),
        "precision": prec, "recall": rec, "f1": f1, "support": support,
    }


def _per_class(cm: np.ndarray, head: dict[str, Any], classes: Sequence[str]
               ) -> list[dict[str, Any]]:
    """The paper's Table 3 per class (correct, wrong, total, percent) with precision, recall,
    F1 and support."""
    rows = []
    for i, name in enumerate(classes):
        total = int(cm[i].sum())
        hit = int(cm[i, i])
        rows.append({
            "class": name, "correct": hit, "wrong": total - hit, "total": total,
            "percent": 100.0 * hit / total if total else None,
            "precision": head["precision"][i], "recall": head["recall"][i],
            "f1": head["f1"][i], "support": int(head["support"][i]),
        })
    return rows


def _reliability(conf: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """The reliability diagram's bins: count, mean confidence and accuracy of each."""
    counts, mean_conf, acc = _bin_stats(conf, correct, N_BINS)
    return {"n_bins": N_BINS, "bins": [
        {"lo": i / N_BINS, "hi": (i + 1) / N_BINS, "count": int(counts[i]),
         "confidence": mean_conf[i], "accuracy": acc[i]}
        for i in range(N_BINS)
    ]}


def compute_metrics(
    y_true: Sequence[str],
    probs: np.ndarray,
    classes: list[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, top-3, calibration, per-class table and more.

    Images whose true label is not one of `classes` are left out and listed under
    `unknown_classes`. The result is JSON-clean (None where a number is undefined).
    """
    from sklearn.metrics import confusion_matrix

    classes = list(classes)
    k = len(classes)
    labels = [str(t) for t in y_true]
    p_all = np.asarray(probs, dtype=np.float64)
    if p_all.ndim != 2 or p_all.shape != (len(labels), k):
        raise ValueError(
            f"probs must be [{len(labels)}, {k}] (one row per label, one column per class), "
            f"got {list(p_all.shape)}"
        )
    if not np.all(np.isfinite(p_all)):
        raise ValueError("probs contain NaN or infinity")

    index = {c: i for i, c in enumerate(classes)}
    known = np.array([t in index for t in labels], dtype=bool)
    pred_all = p_all.argmax(axis=1) if len(labels) else np.zeros(0, np.int64)
    p = p_all[known]
    y = np.array([index[t] for t, ok in zip(labels, known, strict=True) if ok], dtype=np.int64)
    n = len(y)
    pred = pred_all[known].astype(np.int64)
    conf = p.max(axis=1) if n else np.zeros(0)
    correct = (pred == y).astype(np.float64)
    cm = confusion_matrix(y, pred, labels=list(range(k))) if n else np.zeros((k, k), np.int64)
    head = _headline(y, pred, p, k)
    metrics = {
        "n": n,
        **{key: head[key] for key in ("accuracy", "balanced_accuracy", "macro_f1",
                                      "top3_accuracy")},
        "ece": expected_calibration_error(conf, correct, N_BINS),
        "nll": head["nll"],
        "ci95": bootstrap_ci(y, correct, k, n_boot, seed),
        "per_class": _per_class(cm, head, classes),
        "confusion_matrix": cm,
        "classes": classes,
        "risk_coverage": _risk_coverage(conf, correct),
        "reliability": _reliability(conf, correct),
        "unknown_classes": _unknown_classes(labels, pred_all, known, classes),
    }
    return cast("dict[str, Any]", clean_json(metrics))


def prediction_share(y_true: Sequence[str], probs: np.ndarray, classes: Sequence[str]
                     ) -> dict[str, dict[str, float | None]]:
    """Per class: the share of images predicted as it next to its true share (known labels)."""
    index = {c: i for i, c in enumerate(classes)}
    known = [i for i, t in enumerate(y_true) if t in index]
    n = len(known)
    pred = np.asarray(probs, dtype=np.float64)[known].argmax(axis=1) if n else np.zeros(0, int)
    true = np.array([index[y_true[i]] for i in known], dtype=np.int64)
    k = len(classes)
    pc, tc = np.bincount(pred, minlength=k), np.bincount(true, minlength=k)
    return {c: {"predicted": pc[i] / n if n else None, "true": tc[i] / n if n else None}
            for i, c in enumerate(classes)}


def share_ratios(share: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """Per class, predicted share / true share (`prediction_share` of one source): the one
    share-ratio rule. Only classes present in the source count: a class with no true image
    has no ratio (predicted there or not)."""
    return {cls: pred / true for cls, s in share.items()
            if (pred := s.get("predicted")) is not None and (true := s.get("true"))}


def max_share_ratio(share: dict[str, dict[str, float | None]]) -> dict[str, Any] | None:
    """The class predicted most above its true share (`share_ratios`): {"class", "ratio" =
    predicted / true, "predicted", "true"}; None when no class occurs."""
    ratios = share_ratios(share)
    if not ratios:
        return None
    cls = max(ratios, key=lambda c: ratios[c])  # the first of equal ratios
    return {"class": cls, "ratio": ratios[cls], "predicted": share[cls]["predicted"],
            "true": share[cls]["true"]}


def metrics_by_group(
    y_true: Sequence[str],
    probs: np.ndarray,
    classes: list[str],
    groups: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """`compute_metrics` for every group of rows (e.g. per data source) and each group's
    predicted-versus-true class shares; empty when no row names a group.

    Returns {"per_source": {group: metrics}, "prediction_share": {group: {class: shares}}}.
    """
    if len(groups) != len(y_true):
        raise ValueError(f"{len(groups)} group names for {len(y_true)} labels")
    names = sorted({g for g in groups if g})
    p = np.asarray(probs, dtype=np.float64)
    per: dict[str, Any] = {}
    share: dict[str, Any] = {}
    for name in names:
        rows = [i for i, g in enumerate(groups) if g == name]
        ys = [y_true[i] for i in rows]
        per[name] = compute_metrics(ys, p[rows], classes, n_boot=n_boot, seed=seed)
        share[name] = prediction_share(ys, p[rows], classes)
    if not names:
        return {}
    return cast("dict[str, Any]", clean_json({"per_source": per, "prediction_share": share}))
