"""Evaluate a model directory on labelled images: metrics.json, report.md and three plots.

Torch-free: predictions come from the ONNX `Predictor`, metrics from numpy and scikit-learn,
plots from matplotlib. scikit-learn, scipy and matplotlib are imported only when used, so
importing this module (e.g. for `fit_temperature` in training) stays light.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kulit.errors import DataError, ImageError

N_BINS = 15  # reliability / ECE bins, equal width over [0, 1]
RISK_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))  # 0.0 .. 0.95
REPORT_THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)  # rows of the risk-coverage table in report.md
T_BOUNDS = (0.05, 20.0)  # search range of fit_temperature
EVAL_SPLITS = ("test", "val", "train", "all")
METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
PREDICTIONS_CSV = "predictions.csv"
PLOTS = ("confusion_matrix.png", "reliability.png", "risk_coverage.png")
_EPS = 1e-15  # floor on probabilities inside log()


# ---------------------------------------------------------------------------------------------
# Metrics


def _clean(obj: Any) -> Any:
    """JSON-clean copy: numpy scalars/arrays to Python, NaN/inf to None, Paths to str."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
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


def _round(obj: Any, ndigits: int = 6) -> Any:
    if isinstance(obj, dict):
        return {k: _round(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v, ndigits) for v in obj]
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


def _nll_of_logits(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray | Sequence[int]) -> float:
    """Temperature T in [0.05, 20] minimising the NLL of softmax(logits / T) (fit on val)."""
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
        lambda log_t: _nll_of_logits(z, y, float(np.exp(log_t))),
        bounds=(lo, hi), method="bounded", options={"xatol": 1e-5},
    )
    return float(np.clip(np.exp(res.x), *T_BOUNDS))


def _balanced_accuracy_boot(
    y: np.ndarray, correct: np.ndarray, idx: np.ndarray, k: int
) -> np.ndarray:
    """Balanced accuracy (mean recall over classes present) of each bootstrap resample."""
    n_boot = idx.shape[0]
    flat = (y[idx] + k * np.arange(n_boot)[:, None]).ravel()
    totals = np.bincount(flat, minlength=n_boot * k).reshape(n_boot, k)
    hits = np.bincount(flat, weights=correct[idx].ravel(), minlength=n_boot * k)
    hits = hits.reshape(n_boot, k)
    present = totals > 0
    recall = np.where(present, hits / np.maximum(totals, 1), 0.0)
    return recall.sum(axis=1) / present.sum(axis=1)


def _bootstrap_ci(
    y: np.ndarray, correct: np.ndarray, k: int, n_boot: int, seed: int
) -> dict[str, list[float] | None]:
    """Percentile 95% intervals of accuracy and balanced accuracy, resampling images."""
    n = len(y)
    if n == 0 or n_boot <= 0:
        return {"accuracy": None, "balanced_accuracy": None}
    rng = np.random.default_rng(seed)
    out: dict[str, list[float] | None] = {}
    acc: list[np.ndarray] = []
    bal: list[np.ndarray] = []
    chunk = max(1, 2_000_000 // n)  # bound the index matrix to ~16 MB
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        acc.append(correct[idx].mean(axis=1))
        bal.append(_balanced_accuracy_boot(y, correct, idx, k))
    for name, values in (("accuracy", acc), ("balanced_accuracy", bal)):
        lo, hi = np.percentile(np.concatenate(values), [2.5, 97.5])
        out[name] = [float(lo), float(hi)]
    return out


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
    return _clean(row)


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
    import warnings

    from sklearn.metrics import (
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

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
    unknown: dict[str, Counter[str]] = {}
    for t, pr, ok in zip(labels, pred_all, known, strict=True):
        if not ok:
            unknown.setdefault(t, Counter())[classes[int(pr)]] += 1
    unknown_classes = [
        {"class": name, "n": sum(cnt.values()),
         "predicted": dict(sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0])))}
        for name, cnt in sorted(unknown.items())
    ]

    p = p_all[known]
    y = np.array([index[t] for t, ok in zip(labels, known, strict=True) if ok], dtype=np.int64)
    n = len(y)
    pred = pred_all[known].astype(np.int64)
    conf = p.max(axis=1) if n else np.zeros(0)
    correct = (pred == y).astype(np.float64)
    cm = confusion_matrix(y, pred, labels=list(range(k))) if n else np.zeros((k, k), np.int64)

    if n:
        present = sorted(set(y.tolist()))
        with warnings.catch_warnings():
            # a class predicted but absent from y_true is expected, not worth a warning
            warnings.simplefilter("ignore")
            prec, rec, f1, support = precision_recall_fscore_support(
                y, pred, labels=list(range(k)), zero_division=np.nan
            )
            balanced = balanced_accuracy_score(y, pred)
            macro_f1 = f1_score(y, pred, labels=present, average="macro", zero_division=0)
        top = np.argsort(-p, axis=1, kind="stable")[:, : min(3, k)]
        top3 = float(np.mean(np.any(top == y[:, None], axis=1)))
        nll = float(np.mean(-np.log(np.clip(p[np.arange(n), y], _EPS, None))))
        accuracy = float(correct.mean())
    else:
        prec = rec = f1 = np.full(k, np.nan)
        support = np.zeros(k, np.int64)
        balanced = macro_f1 = top3 = nll = accuracy = None

    per_class = []
    for i, name in enumerate(classes):
        total = int(cm[i].sum())
        hit = int(cm[i, i])
        per_class.append({
            "class": name, "correct": hit, "wrong": total - hit, "total": total,
            "percent": 100.0 * hit / total if total else None,
            "precision": prec[i], "recall": rec[i], "f1": f1[i], "support": int(support[i]),
        })

    counts, mean_conf, acc = _bin_stats(conf, correct, N_BINS)
    bins = [
        {"lo": i / N_BINS, "hi": (i + 1) / N_BINS, "count": int(counts[i]),
         "confidence": mean_conf[i], "accuracy": acc[i]}
        for i in range(N_BINS)
    ]
    metrics = {
        "n": n,
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "macro_f1": macro_f1,
        "top3_accuracy": top3,
        "ece": expected_calibration_error(conf, correct, N_BINS),
        "nll": nll,
        "ci95": _bootstrap_ci(y, correct, k, n_boot, seed),
        "per_class": per_class,
        "confusion_matrix": cm,
        "classes": classes,
        "risk_coverage": _risk_coverage(conf, correct),
        "reliability": {"n_bins": N_BINS, "bins": bins},
        "unknown_classes": unknown_classes,
    }
    return _clean(metrics)


# ---------------------------------------------------------------------------------------------
# Report


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(ci: list[float] | None) -> str:
    return "n/a" if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_report(metrics: dict[str, Any], *, title: str, card: dict[str, Any] | None = None
                  ) -> str:
    """report.md text: headline with 95% CIs, Table-3 per-class table, calibration, limits."""
    m = metrics
    ci = m.get("ci95") or {}
    lines = [f"# {title}", ""]
    if card is not None:
        lines += ["**Not a diagnosis.** These numbers describe a photo classifier on a small "
                  "data set; a doctor must examine any skin problem that worries you.", ""]
        desc = [f"model `{card.get('name', '?')}`"]
        for key, label in (("backbone", "backbone"), ("recipe", "recipe"),
                           ("temperature", "temperature"), ("threshold", "threshold")):
            if card.get(key) is not None:
                desc.append(f"{label} {card[key]}")
        lines += ["- " + ", ".join(desc)]
    run = m.get("run") or {}
    if run:
        where = f"- data `{run.get('data', '')}`, split **{run.get('split', '')}**"
        if run.get("split_csv"):
            where += f" (from `{run['split_csv']}`)"
        lines.append(where)
    n_unknown = sum(u["n"] for u in m.get("unknown_classes", []))
    skipped = m.get("skipped", [])
    lines += [
        f"- {m['n']} images evaluated; {n_unknown} left out (class unknown to the model); "
        f"{len(skipped)} skipped (unreadable)",
        "",
        "## Headline",
        "",
        "| metric | value | 95% CI (bootstrap over images) |",
        "|---|---:|---:|",
        f"| accuracy | {_pct(m['accuracy'])} | {_ci(ci.get('accuracy'))} |",
        f"| balanced accuracy (mean recall over classes present) | "
        f"{_pct(m['balanced_accuracy'])} | {_ci(ci.get('balanced_accuracy'))} |",
        f"| macro F1 (classes present) | {_num(m['macro_f1'])} | |",
        f"| top-3 accuracy | {_pct(m['top3_accuracy'])} | |",
        f"| expected calibration error ({N_BINS} bins) | {_num(m['ece'])} | |",
        f"| negative log-likelihood | {_num(m['nll'])} | |",
        "",
        "## Per class",
        "",
        "Correct, wrong, total and percentage as in the paper's Table 3, plus precision, "
        "recall and F1. A class with no image in this data shows n/a.",
        "",
        "| class | correct | wrong | total | percentage | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in m["per_class"]:
        pct = "n/a" if r["percent"] is None else f"{r['percent']:.1f}%"
        lines.append(
            f"| {_md_cell(r['class'])} | {r['correct']} | {r['wrong']} | {r['total']} | {pct} | "
            f"{_num(r['precision'], 2)} | {_num(r['recall'], 2)} | {_num(r['f1'], 2)} |"
        )
    n_correct = sum(r["correct"] for r in m["per_class"])
    lines.append(
        f"| **all** | {n_correct} | {m['n'] - n_correct} | {m['n']} | {_pct(m['accuracy'])} | "
        f"| | {_num(m['macro_f1'], 2)} (macro) |"
    )
    classes = m["classes"]
    lines += [
        "",
        "## Confusion matrix",
        "",
        "Rows: true class; columns: predicted class.",
        "",
        "| true \\ predicted | " + " | ".join(_md_cell(c) for c in classes) + " |",
        "|---|" + "---:|" * len(classes),
    ]
    for name, row in zip(classes, m["confusion_matrix"], strict=True):
        lines.append(f"| {_md_cell(name)} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", ""]

    lines += [
        "## Answering only when sure (risk-coverage)",
        "",
        "The model answers only when its top probability is at least the threshold; coverage "
        "is the share of images it answers, accuracy is measured on those.",
        "",
        "| threshold | coverage | accuracy | images answered |",
        "|---:|---:|---:|---:|",
    ]
    rc = {round(r["threshold"], 2): r for r in m["risk_coverage"]}
    rows = [rc[t] for t in REPORT_THRESHOLDS if t in rc]
    at = m.get("at_threshold")
    if at:
        rows = [r for r in rows if round(r["threshold"], 2) != round(at["threshold"], 2)]
        rows = sorted([*rows, {**at, "model": True}], key=lambda r: r["threshold"])
    for r in rows:
        t = f"{r['threshold']:.2f}" + (" (model's threshold)" if r.get("model") else "")
        lines.append(f"| {t} | {_pct(r['coverage'])} | {_pct(r['accuracy'])} | {r['n']} |")
    lines += ["", "![risk-coverage](risk_coverage.png)", ""]

    lines += [
        "## Calibration",
        "",
        f"Expected calibration error {_num(m['ece'])} over {N_BINS} equal-width bins of the top "
        "probability (0 is perfect: among answers given with 80% confidence, 80% are right).",
        "",
        "![reliability diagram](reliability.png)",
        "",
    ]
    if m.get("unknown_classes"):
        lines += ["## Classes the model does not know", "",
                  "These images were left out of every number above. What the model called them:",
                  ""]
        for u in m["unknown_classes"]:
            said = ", ".join(f"{c} {k}" for c, k in u["predicted"].items())
            noun = "image" if u["n"] == 1 else "images"
            lines.append(f"- {_md_cell(u['class'])}: {u['n']} {noun}; predicted as {said}")
        lines.append("")
    if skipped:
        lines += ["## Skipped files", "", "| file | reason |", "|---|---|"]
        lines += [f"| {_md_cell(s['file'])} | {_md_cell(s['reason'])} |" for s in skipped]
        lines.append("")
    if card is not None:
        limits = card.get("limits") or []
        lines += ["## Known limits", "",
                  "- Not a diagnosis. It can be wrong; a doctor must examine any skin problem "
                  "that worries you."]
        lines += [f"- {x}" for x in limits if "not a diagnosis" not in str(x).lower()]
        lines.append("")
        data = card.get("data") or {}
        if data:
            lines += ["## Data", ""]
            for key in ("name", "folder", "source", "sources", "licence", "license", "hash"):
                value = data.get(key)
                if not value:
                    continue
                if isinstance(value, list):
                    lines += [f"- {key}:"] + [f"  - {v}" for v in value]
                else:
                    lines.append(f"- {key}: {value}")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _plot_confusion(metrics: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    classes = metrics["classes"]
    cm = np.asarray(metrics["confusion_matrix"], dtype=float).reshape(len(classes), len(classes))
    # colour by share of the true class so small classes are as visible as large ones
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = max(5.0, 0.75 * len(classes) + 2.5)
    fig = Figure(figsize=(side, side * 0.9))
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (counts, n={metrics['n']}; colour = share of true class)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_reliability(metrics: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    bins = metrics["reliability"]["bins"]
    width = 1.0 / len(bins)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    full = [b for b in bins if b["count"]]
    ax.bar([b["lo"] for b in full], [b["accuracy"] for b in full], width=width, align="edge",
           color="#4c72b0", edgecolor="black", linewidth=0.5, label="accuracy")
    ax.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], "o", color="#dd8452",
            markersize=4, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    for b in full:  # image count per bin, inside the foot of its bar
        ax.text(b["lo"] + width / 2, 0.015, str(b["count"]), ha="center", fontsize=7,
                color="white" if b["accuracy"] > 0.05 else "black")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {_num(metrics['ece'])}, n={metrics['n']})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_risk_coverage(metrics: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    pts = [r for r in metrics["risk_coverage"] if r["accuracy"] is not None]
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    ax.plot([r["coverage"] for r in pts], [r["accuracy"] for r in pts], "o-", color="#4c72b0",
            markersize=3)
    last: tuple[float, float] | None = None
    for r in pts:
        xy = (r["coverage"], r["accuracy"])
        near = last is not None and abs(xy[0] - last[0]) + abs(xy[1] - last[1]) < 0.06
        if round(r["threshold"], 2) in REPORT_THRESHOLDS and not near:
            ax.annotate(f"≥{r['threshold']:.1f}", xy, textcoords="offset points",
                        xytext=(4, -10), fontsize=8)
            last = xy
    at = metrics.get("at_threshold")
    if at and at.get("accuracy") is not None:
        ax.plot([at["coverage"]], [at["accuracy"]], "*", color="#c44e52", markersize=12,
                label=f"model's threshold {at['threshold']:.2f}")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("accuracy on answered images")
    ax.set_title("Risk-coverage: answering only above a confidence threshold", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_plots(metrics: dict[str, Any], out_dir: Path) -> None:
    """confusion_matrix.png, reliability.png and risk_coverage.png (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    _plot_confusion(metrics, out_dir / PLOTS[0])
    _plot_reliability(metrics, out_dir / PLOTS[1])
    _plot_risk_coverage(metrics, out_dir / PLOTS[2])


def write_report(metrics: dict[str, Any], out_dir: Path, *, title: str,
                 card: dict[str, Any] | None = None) -> None:
    """Write metrics.json, report.md and the three plots into `out_dir`."""
    out_dir = Path(out_dir)
    clean = _round(_clean(metrics))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(clean, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        (out_dir / METRICS_JSON).write_text(text, encoding="utf-8")
        (out_dir / REPORT_MD).write_text(render_report(clean, title=title, card=card),
                                         encoding="utf-8")
        write_plots(clean, out_dir)
    except OSError as e:
        raise DataError(f"cannot write the report to {out_dir}: {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------------
# End to end


def list_class_folders(data: Path) -> tuple[list[tuple[Path, str, str]], list[dict[str, str]]]:
    """(path, file relative to data, label) for every file in `data`'s class folders.

    Hidden entries and top-level files are ignored; nested folders are listed as skipped.
    """
    entries: list[tuple[Path, str, str]] = []
    skipped: list[dict[str, str]] = []
    try:
        class_dirs = sorted(p for p in data.iterdir()
                            if p.is_dir() and not p.name.startswith("."))
        for d in class_dirs:
            for f in sorted(d.iterdir(), key=lambda p: p.name):
                rel = f.relative_to(data).as_posix()
                if f.name.startswith("."):
                    continue
                if f.is_dir():
                    skipped.append({"file": rel, "reason": "nested folder, not read"})
                else:
                    entries.append((f, rel, d.name))
    except OSError as e:
        raise DataError(f"cannot list data folder {data}: {e.strerror or e}") from None
    if not class_dirs:
        raise DataError(f"no class folders in {data} (expected one subfolder per class)")
    return entries, skipped


def _select(data: Path, split: str, split_csv: Path | None
            ) -> tuple[list[tuple[Path, str, str]], list[dict[str, str]]]:
    if split not in EVAL_SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(EVAL_SPLITS)}")
    if not data.exists():
        raise DataError(f"data folder not found: {data}")
    if not data.is_dir():
        raise DataError(f"data path is a file, not a folder of class folders: {data}")
    if split == "all":
        return list_class_folders(data)
    if split_csv is None:
        raise DataError(
            f"--split {split} needs --split-csv FILE (the split.csv written by `kulit data`); "
            "or use --split all to evaluate every image in the class folders"
        )
    from kulit.data import load_split

    rows = [r for r in load_split(Path(split_csv), data) if r.split == split]
    if not rows:
        raise DataError(f"split file {split_csv} has no {split!r} rows")
    return [(r.path, r.file, r.label) for r in rows], []


def _write_predictions(path: Path, rows: list[tuple[str, str, str, float, bool]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "true", "predicted", "confidence", "uncertain"])
    w.writerows((f, t, p, f"{c:.6f}", str(u).lower()) for f, t, p, c, u in rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def evaluate_model(
    model_dir: Path,
    data: Path,
    *,
    split: str = "test",
    split_csv: Path | None = None,
    out: Path,
    n_boot: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Predict every selected image, compute metrics, write the report into `out`; metrics.

    `split` "all" reads every image in `data`'s class folders (folder name = true label);
    "test"/"val"/"train" read that split's rows of `split_csv`.
    """
    from kulit.predict import Prediction, Predictor

    model_dir, data, out = Path(model_dir), Path(data), Path(out)
    predictor = Predictor(model_dir)
    card = predictor.card
    entries, skipped = _select(data, split, split_csv)

    y_true: list[str] = []
    probs: list[np.ndarray] = []
    pred_rows: list[tuple[str, str, str, float, bool]] = []
    chunk = 256  # keep only probabilities: Predictions hold image crops
    for start in range(0, len(entries), chunk):
        part = entries[start: start + chunk]
        results = predictor.predict_many([p for p, _, _ in part], top_k=3, batch_size=32)
        for (_, rel, label), res in zip(part, results, strict=True):
            if isinstance(res, ImageError):
                skipped.append({"file": rel, "reason": res.message.split(": ", 1)[-1]})
                continue
            assert isinstance(res, Prediction)
            y_true.append(label)
            probs.append(res.probs)
            pred_rows.append((rel, label, res.label, res.confidence, res.uncertain))
        if progress:
            progress(min(start + chunk, len(entries)), len(entries))
    if not probs:
        raise DataError(f"no readable image to evaluate in {data} ({len(skipped)} skipped)")

    p = np.stack(probs)
    metrics = compute_metrics(y_true, p, card.classes, n_boot=n_boot, seed=card.seed)
    metrics["at_threshold"] = selective_at(p, y_true, card.classes, card.threshold)
    metrics["skipped"] = sorted(skipped, key=lambda s: s["file"])
    metrics["run"] = {
        "model": card.name, "model_dir": str(model_dir), "data": str(data), "split": split,
        "split_csv": str(split_csv) if split_csv is not None and split != "all" else None,
        "temperature": predictor.temperature, "precision": predictor.precision,
        "threshold": card.threshold, "seed": card.seed,
    }
    title = f"{card.name} on {data.name or data} ({split} split)"
    write_report(metrics, out, title=title, card=card.to_dict())
    try:
        _write_predictions(out / PREDICTIONS_CSV, pred_rows)
    except OSError as e:
        raise DataError(f"cannot write {out / PREDICTIONS_CSV}: {e.strerror or e}") from None
    if Path(out).resolve() == Path(model_dir).resolve():
        record_in_card(card, metrics, model_dir)
    return metrics


def record_in_card(card: Any, metrics: dict[str, Any], model_dir: Path) -> None:
    """Evaluating into the model's own folder stores the headline numbers in its card."""
    from kulit.card import save_card

    card.metrics = {
        "split": metrics["run"]["split"],
        **{k: metrics.get(k) for k in ("n", "accuracy", "balanced_accuracy", "macro_f1",
                                       "top3_accuracy", "ece", "ci95")},
        "at_threshold": metrics.get("at_threshold"),
        "per_class": [{k: c.get(k) for k in ("class", "correct", "total", "percent")}
                      for c in metrics.get("per_class", [])],
    }
    save_card(card, Path(model_dir))


def summary_lines(metrics: dict[str, Any], out: Path) -> list[str]:
    """The few lines `kulit evaluate` prints."""
    m = metrics
    ci = m["ci95"]
    n_unknown = sum(u["n"] for u in m["unknown_classes"])
    lines = [
        f"n {m['n']} images"
        + (f" ({n_unknown} of unknown classes left out)" if n_unknown else "")
        + (f", {len(m.get('skipped', []))} skipped" if m.get("skipped") else ""),
        f"accuracy {_pct(m['accuracy'])} (95% CI {_ci(ci['accuracy'])}), "
        f"balanced accuracy {_pct(m['balanced_accuracy'])} "
        f"(95% CI {_ci(ci['balanced_accuracy'])})",
        f"macro F1 {_num(m['macro_f1'])}, top-3 {_pct(m['top3_accuracy'])}, "
        f"ECE {_num(m['ece'])}",
        f"report: {Path(out) / REPORT_MD}",
    ]
    return lines
