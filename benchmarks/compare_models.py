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

from kulit.build.metrics import bootstrap  # noqa: E402


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
    classes = sorted({base[f]["true"] for f in files})
    y = np.array([classes.index(base[f]["true"]) for f in files])
    right = {name: (np.array([m[f]["top1"] for f in files]),
                    np.array([m[f]["top3"] for f in files]))
             for name, m in (("base", base), ("candidate", cand))}

    def bacc(correct: np.ndarray, idx: np.ndarray) -> np.ndarray:
        yy, cc = y[idx], correct[idx]
        recalls = []
        for k in range(len(classes)):
            m = yy == k
            n = m.sum(axis=1)
            recalls.append(np.where(n > 0, (cc & m).sum(axis=1) / np.maximum(n, 1), np.nan))
        return np.nanmean(np.array(recalls), axis=0)

    def stat(idx: np.ndarray) -> dict[str, np.ndarray]:
        cand_top1, cand_top3 = right["candidate"]
        base_top1, base_top3 = right["base"]
        return {"balanced_accuracy": bacc(cand_top1, idx) - bacc(base_top1, idx),
                "top3": cand_top3[idx].mean(1) - base_top3[idx].mean(1)}

    whole = np.arange(len(files))[None]
    point = {k: float(v[0]) for k, v in stat(whole).items()}
    ci = bootstrap(stat, len(files), n_boot=N_BOOT, seed=0)
    return {"n": len(files),
            "base": {"balanced_accuracy": float(bacc(right["base"][0], whole)[0]),
                     "top3": float(right["base"][1].mean())},
            "candidate": {"balanced_accuracy": float(bacc(right["candidate"][0], whole)[0]),
                          "top3": float(right["candidate"][1].mean())},
            "change": point, "change_ci95": ci,
            "same_top1_outcome": float(np.mean([base[f]["top1"] == cand[f]["top1"]
                                                for f in files]))}


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
