"""Accuracy and training time: the paper's recipe vs kulit's, same skin8 split, same seed.

    python benchmarks/accuracy.py [--reuse-cache] [--skip-recompute]

Steps: `kulit data` -> paper recipe (feature cache on, from a cold cache) -> the same recipe
recomputing the frozen base every epoch (the cache's speed-up) -> kulit recipe -> export both
-> `kulit evaluate` on the test split. Writes benchmarks/results/accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIN8 = REPO.parent / "shared" / "data" / "skin8"
KEYS = ("n", "accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy", "ece", "ci95")


def run_recipe(recipe: str, split: Path, work: Path, cache: Path, *, cached: bool = True,
               **over: object) -> tuple[Path, dict[str, object]]:
    from kulit.config import make_config
    from kulit.train import train

    out = work / f"{recipe}{'' if cached else '-recompute'}"
    cfg = make_config(str(SKIN8), str(split), recipe, out=str(out), cache=cached,
                      cache_dir=str(cache), **over)
    t = time.perf_counter()
    train(cfg, log=lambda s: print(f"  {s}" if len(s) < 200 else "  (table)", flush=True))
    seconds = time.perf_counter() - t
    summary = json.loads((out / "summary.json").read_text())
    return out, {"train_seconds": seconds, "feature_seconds": summary["timing"]["feature_seconds"],
                 "epochs_run": summary["timing"]["epochs_run"], "best_epoch": summary["best_epoch"],
                 "final_epoch_row": summary["final"]}


def score(run: Path, work: Path, split: Path) -> dict[str, object]:
    from kulit.evaluate import evaluate_model
    from kulit.export import export

    model = export(run, work / f"model-{run.name}")
    m = evaluate_model(model, SKIN8, split="test", split_csv=split, out=work / f"eval-{run.name}")
    return {k: m[k] for k in KEYS if k in m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench")
    ap.add_argument("--reuse-cache", action="store_true", help="keep the feature cache")
    ap.add_argument("--skip-recompute", action="store_true", help="skip the no-cache timing")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "accuracy.json")
    args = ap.parse_args()
    if not SKIN8.is_dir():
        sys.exit(f"error: {SKIN8} not found")
    from kulit.data import run_data

    work = args.work
    cache = work / "cache"
    if cache.exists() and not args.reuse_cache:
        shutil.rmtree(cache)
    run_data(SKIN8, work / "data", seed=0)
    split = work / "data" / "split.csv"
    res: dict[str, object] = {"cpus": os.cpu_count(), "data": str(SKIN8.name), "seed": 0}

    print("paper recipe (feature cache on)", flush=True)
    paper_run, res["paper_timing"] = run_recipe("paper", split, work, cache)
    if not args.skip_recompute:
        print("paper recipe (recomputing the frozen base every epoch)", flush=True)
        _, res["paper_recompute_timing"] = run_recipe("paper", split, work, cache, cached=False)
        res["cache_speedup"] = (res["paper_recompute_timing"]["train_seconds"]  # type: ignore
                                / res["paper_timing"]["train_seconds"])  # type: ignore
    print("kulit recipe", flush=True)
    kulit_run, res["kulit_timing"] = run_recipe("kulit", split, work, cache)
    res["paper"] = score(paper_run, work, split)
    res["kulit"] = score(kulit_run, work, split)
    pb, kb = res["paper"]["balanced_accuracy"], res["kulit"]["balanced_accuracy"]  # type: ignore
    res["balanced_accuracy_gain_points"] = 100 * (kb - pb)
    k = res["kulit"]
    res["targets"] = {
        "gain_points>=15": res["balanced_accuracy_gain_points"] >= 15,
        "kulit_balanced_accuracy>=0.85": k["balanced_accuracy"] >= 0.85,  # type: ignore
        "kulit_top3>=0.97": k["top3_accuracy"] >= 0.97,  # type: ignore
        "kulit_ece<=0.05": k["ece"] <= 0.05,  # type: ignore
        "paper_train<60s": res["paper_timing"]["train_seconds"] < 60,  # type: ignore
        "kulit_train<20min": res["kulit_timing"]["train_seconds"] < 1200,  # type: ignore
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
