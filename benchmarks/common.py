"""Shared pieces of the benchmarks: one source's rows of a split, photos a model already saw,
bootstrap intervals over test photos, and predicted-vs-true class shares.

Metric formulas, the bootstrap and the share-ratio rule stay in `kulit.build.metrics`; this
module only adapts and slices.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kulit.build.metrics import CI_LEVEL

N_BOOT = 1000  # bootstrap resamples per interval


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
    """Percentile interval of every number `stat(indices)` returns, resampling n photos, by
    kulit's one bootstrap (`kulit.build.metrics.bootstrap`), one resample at a time.

    Seeded, so the same inputs give the same interval. A number undefined in some resample
    (None or NaN) is left out of that resample's values.
    """
    from kulit.build.metrics import bootstrap

    def each(idx: np.ndarray) -> dict[str, np.ndarray]:
        rows = [stat(i) for i in idx]
        names = dict.fromkeys(k for r in rows for k in r)
        return {k: np.array([np.nan if r.get(k) is None else r[k] for r in rows], np.float64)
                for k in names}

    return bootstrap(each, n, n_boot=n_boot, seed=seed, level=level)


def predicted_shares(y_true: Sequence[str], probs: np.ndarray, classes: Sequence[str]
                     ) -> dict[str, dict[str, float | None]]:
    """Per class {"predicted": share, "true": share} (`kulit.build.metrics.prediction_share`)."""
    from kulit.build.metrics import prediction_share

    return prediction_share(y_true, probs, classes)


def share_ratios(shares: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Predicted share / true share per class, and the largest ratio with its class, by kulit's
    one rule (`kulit.build.metrics.share_ratios`: classes absent from the truth have no ratio).

    The target: no class predicted above 1.5x its true share.
    """
    from kulit.build.metrics import max_share_ratio
    from kulit.build.metrics import share_ratios as ratios_of

    worst = max_share_ratio(shares)
    return {"ratio": ratios_of(shares), "max_ratio": worst["ratio"] if worst else None,
            "max_ratio_class": worst["class"] if worst else None}
