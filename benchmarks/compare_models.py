"""Two models on the same photos: the change in balanced accuracy and top-3, with a paired
bootstrap (the same resampled photos for both), over all photos, per source and per skin-type
band estimated from the photo's colours.

    python benchmarks/compare_models.py --candidate runs/cand-cosine \
        [--base models/kulit-skin8] [--split val] [--split-csv runs/data/split.csv] \
        [--out benchmarks/results/compare.json]

This is how a full training run checks what the frozen-feature proxy (`benchmarks/levers.py`)
predicted for a lever: train the candidate with the lever (`kulit train ... --out RUN`), export
it (`kulit export RUN --out DIR --card-extra docs/skin8-card.json`) and compare it here with
the shipped model on the validation photos (never on test: this picks what ships).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from benchmarks.common import N_BOOT  # noqa: E402

from kulit.build.metrics import balanced_accuracy_rows, bootstrap  # noqa: E402


def predictions(model: Path, split: str, split_csv: Path) -> dict[str, Any]:
    """Per photo (by file): true class, source, and whether top-1 and top-3 are right."""
    from kulit.dataprep.files import load_split
    from kulit.serving.predict import Predictor

    predictor = Predictor(model)
    rows = [r for r in load_split(split_csv) if r.split == split]
    out: dict[str, Any] = {}
    for i in range(0, len(rows), 32):
        batch = rows[i:i + 32]
        for r, p in zip(batch, predictor.predict([r.path for r in batch]), strict=True):
            top3 = [p.classes[k] for k in np.argsort(-p.probs)[:3]]
            out[r.file] = {"true": r.label, "source": r.source, "top1": top3[0] == r.label,
                           "top3": r.label in top3, "path": r.path}
    return out


def paired(base: dict[str, Any], cand: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Both models' balanced accuracy and top-3 on `files`, and the change with its interval."""
    classes = sorted({base[f]["true"] for f in files})
    y = np.array([classes.index(base[f]["true"]) for f in files])
    k = len(classes)
    b1, b3, c1, c3 = (np.array([m[f][t] for f in files])
                      for m in (base, cand) for t in ("top1", "top3"))

    def stat(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"balanced_accuracy": balanced_accuracy_rows(y, c1, idx, k)
                - balanced_accuracy_rows(y, b1, idx, k),
                "top3": c3[idx].mean(1) - b3[idx].mean(1)}

    whole = np.arange(len(files))[None]
    return {"n": len(files),
            "base": {"balanced_accuracy": float(balanced_accuracy_rows(y, b1, whole, k)[0]),
                     "top3": float(b3.mean())},
            "candidate": {"balanced_accuracy": float(balanced_accuracy_rows(y, c1, whole, k)[0]),
                          "top3": float(c3.mean())},
            "change": {name: float(v[0]) for name, v in stat(whole).items()},
            "change_ci95": bootstrap(stat, len(files), n_boot=N_BOOT, seed=0),
            "same_top1_outcome": float(np.mean(b1 == c1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=REPO / "models" / "kulit-skin8")
    ap.add_argument("--candidate", type=Path, required=True)
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--split-csv", type=Path, default=REPO / "runs" / "data" / "split.csv")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "compare.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    base = predictions(args.base, args.split, args.split_csv)
    cand = predictions(args.candidate, args.split, args.split_csv)
    files = sorted(base)
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/compare_models.py", *sys.argv[1:]]),
        "base": str(args.base), "candidate": str(args.candidate), "split": args.split,
        "all": paired(base, cand, files),
        "per_source": {s: paired(base, cand, [f for f in files if base[f]["source"] == s])
                       for s in sorted({base[f]["source"] for f in files})},
    }
    from kulit.build.skintone import estimate_many
    from kulit.dataprep.fitzpatrick import BANDS

    # skin-type band estimated from each photo's colours (ITA), as report.md does
    bands = {f: (t.band if t else None)
             for f, t in zip(files, estimate_many([base[f]["path"] for f in files]), strict=True)}
    result["per_estimated_band"] = {b: paired(base, cand, [f for f in files if bands[f] == b])
                                    for b in BANDS if any(v == b for v in bands.values())}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result["all"], indent=1))


if __name__ == "__main__":
    main()
