"""The three evaluation plots (confusion matrix, reliability, risk-coverage) from computed
metrics; matplotlib (Agg) is imported only when plotting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kulit.serving.model_dir import PLOTS

REPORT_THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)  # risk-coverage rows in report.md, marks here


def num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


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
    ax.set_title(f"Reliability (ECE {num(metrics['ece'])}, n={metrics['n']})")
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
