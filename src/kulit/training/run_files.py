"""A training run's files beside checkpoint.pt: the resolved config, the per-epoch history
(csv, and a Markdown table like the paper's Table 2), the curves and the summary."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from kulit.config import TrainConfig


def format_history(history: list[dict[str, float]]) -> str:
    """The per-epoch table, like the paper's Table 2."""
    lines = ["| epoch | loss | accuracy | val loss | val accuracy | val balanced acc |",
             "|---:|---:|---:|---:|---:|---:|"]
    for h in history:
        lines.append(f"| {h['epoch']} | {h['loss']:.4f} | {h['accuracy']:.4f} | "
                     f"{h['val_loss']:.4f} | {h['val_accuracy']:.4f} | "
                     f"{h['val_balanced_accuracy']:.4f} |")
    return "\n".join(lines)


def write_run(out: Path, cfg: TrainConfig, classes: list[str], history: list[dict[str, float]],
              report: dict[str, Any], timing: dict[str, Any], best_epoch: int,
              temperature: float, threshold: float, interrupted: bool = False) -> None:
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    (out / "history.md").write_text(f"# Training history ({cfg.recipe} recipe, {cfg.backbone}, "
                                    f"{cfg.input_size}px)\n\n{format_history(history)}\n")
    summary = {"classes": classes, "best_epoch": best_epoch, "temperature": temperature,
               "threshold": threshold, "timing": timing, "data_hash": report.get("data_hash"),
               "final": history[best_epoch - 1], "interrupted": interrupted}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_curves(history, out / "curves.png", f"{cfg.recipe} recipe: {cfg.backbone} "
                f"{cfg.input_size}px")


def plot_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["accuracy"] for h in history], label="train accuracy")
    a.plot(ep, [h["val_accuracy"] for h in history], label="val accuracy")
    a.plot(ep, [h["val_balanced_accuracy"] for h in history], label="val balanced accuracy",
           linestyle="--")
    a.set_xlabel("epoch")
    a.set_ylim(0, 1)
    a.legend()
    a.set_title("accuracy")
    b.plot(ep, [h["loss"] for h in history], label="train loss")
    b.plot(ep, [h["val_loss"] for h in history], label="val loss")
    b.set_xlabel("epoch")
    b.legend()
    b.set_title("loss")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
