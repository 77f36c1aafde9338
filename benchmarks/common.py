"""Shared pieces of the benchmarks: one source's rows of a split, photos a model already saw,
bootstrap intervals over test photos, and predicted-vs-true class shares.

Metric formulas stay in `kulit.build.evaluate`; this module only resamples and slices.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

N_BOOT = 1000  # bootstrap resamples per interval
CI_LEVEL = 0.95


def filter_split(split_csv: Path, source: str, out_dir: Path) -> Path:
    """Write `out_dir/split.csv` with only `source`'s rows, and the data report beside it.

    The report's `root` is rewritten relative to `out_dir`, so `load_split` still finds the
    photos; `filtered_to` records the source. Every split must keep some rows of it.
    """
    from kulit.dataprep.split import REPORT_JSON, SPLITS, load_split, read_report, split_csv_text

    split_csv = Path(split_csv)
    every = load_split(split_csv, check_files=False)
    if not any(r.source for r in every):
        raise ValueError(f"{split_csv} has no source column (re-run `kulit data`)")
    rows = [r for r in every if r.source == source]
    have = {r.split for r in rows}
    if not rows or not set(SPLITS) <= have:
        raise ValueError(f"{split_csv}: source {source!r} has rows in splits {sorted(have)}, "
                         f"need all of {', '.join(SPLITS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / split_csv.name).write_text(split_csv_text(rows), encoding="utf-8")
    report = read_report(split_csv.parent)
    root = (split_csv.parent / report.get("root", ".")).resolve()
    report["root"] = os.path.relpath(root, out_dir.resolve())
    report["filtered_to"] = source
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out_dir / split_csv.name


def seen_files(rows: Sequence, trained_split_csv: Path) -> set[str]:
    """Files of `rows` a model trained on `trained_split_csv` saw (its train or val rows).

    A file counts as seen when any file of its duplicate group (the group in `rows`) was in
    that split's train/val, so a near copy under another name is caught too. Files written
    without the `<folder>/` prefix by older `kulit data` are matched on `<class>/<name>`.
    """
    from kulit.dataprep.split import load_split

    trained = load_split(Path(trained_split_csv), check_files=False)
    used = {r.file for r in trained if r.split in ("train", "val")}
    legacy = {f for f in used if len(Path(f).parts) == 2}

    def was_used(file: str) -> bool:
        return file in used or "/".join(Path(file).parts[-2:]) in legacy

    seen_groups = {r.group for r in rows if was_used(r.file)}
    return {r.file for r in rows if r.group in seen_groups}


def bootstrap_ci(stat: Callable[[np.ndarray], dict[str, float | None]], n: int,
                 n_boot: int = N_BOOT, seed: int = 0, level: float = CI_LEVEL
                 ) -> dict[str, list[float] | None]:
    """Percentile interval of every number `stat(indices)` returns, resampling n photos.

    Seeded, so the same inputs give the same interval. A number undefined in some resample
    (None or NaN) is left out of that resample's values.
    """
    if n == 0 or n_boot <= 0:
        return {}
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(n_boot):
        for k, v in stat(rng.integers(0, n, size=n)).items():
            kept = values.setdefault(k, [])
            if v is not None and np.isfinite(v):
                kept.append(float(v))
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {k: [float(x) for x in np.percentile(v, q)] if v else None
            for k, v in values.items()}


def predicted_shares(y_true: Sequence[str], probs: np.ndarray, classes: Sequence[str]
                     ) -> dict[str, dict[str, float | None]]:
    """Per class {"predicted": share, "true": share}: metrics' own function when present."""
    try:
        from kulit.build.metrics import prediction_share
    except ImportError:  # before evaluate.py was split into metrics/report; same result
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[t] for t in y_true], np.int64)
        n, k = len(y), len(classes)
        pc = np.bincount(np.asarray(probs).argmax(1), minlength=k)
        tc = np.bincount(y, minlength=k)
        return {c: {"predicted": pc[i] / n if n else None, "true": tc[i] / n if n else None}
                for i, c in enumerate(classes)}
    return prediction_share(y_true, probs, classes)


def share_ratios(shares: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Predicted share / true share per class, and the largest ratio with its class.

    The issue's target: no class predicted above 1.5x its true share. A class predicted but
    absent from the truth counts as infinitely over-predicted; classes never seen nor
    predicted are skipped.
    """
    ratios: dict[str, float] = {}
    for c, s in shares.items():
        pred, true = s.get("predicted") or 0.0, s.get("true") or 0.0
        if true > 0:
            ratios[c] = pred / true
        elif pred > 0:
            ratios[c] = float("inf")
    worst = max(ratios, key=lambda c: ratios[c]) if ratios else None
    return {"ratio": ratios, "max_ratio": ratios[worst] if worst else None,
            "max_ratio_class": worst}
