"""Accuracy across data sources (default), or the paper's recipe vs kulit's on skin8.

    python benchmarks/accuracy.py [--runs skin8,skin8-web,both] [--reuse NAME=DIR ...]
    python benchmarks/accuracy.py --protocol paper-vs-kulit [--reuse-cache] [--skip-recompute]

cross-source: ONE two-folder `kulit data` split (skin8 + skin8-web, seed 0, data/exclude.txt),
so a source's test photos are the same in every row. Run "skin8" trains on skin8's rows only,
"skin8-web" on skin8-web's, "both" on all; each model is exported and scored with ONNX Runtime
on the test split of each source and of both together: balanced accuracy, accuracy, macro F1,
top-3, ECE, answered share and accuracy at the card's threshold, and predicted vs true share
per class (the largest ratio per test set), each with a seeded 95% bootstrap interval over the
test photos. `--reuse NAME=DIR` scores a model or run directory instead of training it;
`--trained-split NAME=CSV` names the split it was trained on, and test photos it saw in
training or validation are left out of its numbers (counted under `seen_left_out`).

paper-vs-kulit: `kulit data` on skin8 -> paper recipe (cold cache) -> the same recipe
recomputing the frozen base every epoch -> kulit recipe -> export -> evaluate on test.

Writes benchmarks/results/accuracy.json (paper-vs-kulit: accuracy-paper.json; or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    N_BOOT,
    bootstrap_ci,
    filter_split,
    predicted_shares,
    seen_files,
    share_ratios,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SKIN8 = DATA / "skin8"
SOURCES = ("skin8", "skin8-web")
RUNS = (*SOURCES, "both")
KEYS = ("n", "accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy", "ece", "ci95")
HEADLINE = ("balanced_accuracy", "accuracy", "macro_f1", "top3_accuracy", "ece",
            "answered_share", "answered_accuracy", "max_share_ratio")


# ---------------------------------------------------------------------------------------------
# cross-source


def headline(labels: list[str], probs: np.ndarray, classes: list[str], threshold: float
             ) -> dict[str, Any]:
    """The benchmark's numbers for one test set, from kulit.build.evaluate's metric functions."""
    from kulit.build.evaluate import compute_metrics, selective_at

    m = compute_metrics(labels, probs, classes, n_boot=0)
    at = selective_at(probs, labels, classes, threshold)
    shares = predicted_shares(labels, probs, classes)
    worst = share_ratios(shares)
    return {"n": m["n"], "balanced_accuracy": m["balanced_accuracy"], "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"], "top3_accuracy": m["top3_accuracy"], "ece": m["ece"],
            "answered_share": at["coverage"], "answered_accuracy": at["accuracy"],
            "answered_n": at["n"], "max_share_ratio": worst["max_ratio"],
            "max_share_class": worst["max_ratio_class"], "shares": shares}


def score_set(labels: list[str], probs: np.ndarray, classes: list[str], threshold: float,
              n_boot: int, seed: int) -> dict[str, Any]:
    """Point estimates plus a 95% bootstrap interval of each headline number."""
    point = headline(labels, probs, classes, threshold)
    y = np.array(labels)

    def stat(i: np.ndarray) -> dict[str, Any]:
        h = headline(list(y[i]), probs[i], classes, threshold)
        return {k: h[k] for k in HEADLINE}

    point["ci95"] = bootstrap_ci(stat, len(labels), n_boot=n_boot, seed=seed)
    return point


def predict_probs(model: Path, paths: list[Path], cache: Path) -> np.ndarray:
    """Calibrated probabilities from the served file (ONNX Runtime), cached per served file's
    content and temperature (delete the cache after changing preprocessing code)."""
    from kulit.serving.card import load_card
    from kulit.serving.model_dir import file_sha256, served_file
    from kulit.serving.predict import Predictor

    key = [str(p) for p in paths]
    _, onnx_file, temperature = served_file(model, load_card(model))
    stamp = f"{file_sha256(onnx_file)}:{temperature!r}"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if list(z["files"]) == key and str(z["stamp"]) == stamp:
            return z["probs"]
    res = Predictor(model).predict_many(paths, top_k=3, batch_size=32)
    bad = [str(p) for p, r in zip(paths, res, strict=True) if not hasattr(r, "probs")]
    if bad:
        raise SystemExit(f"error: {len(bad)} test photo(s) unreadable, e.g. {bad[0]}")
    probs = np.stack([r.probs for r in res])  # type: ignore[union-attr]
    np.savez(cache, files=np.array(key), probs=probs, stamp=stamp)
    return probs


def score_model(model: Path, test_rows: list, work: Path, *, n_boot: int, seed: int,
                skip: set[str]) -> dict[str, Any]:
    """Every test set (each source, both) for one exported model."""
    from kulit.serving.card import load_card

    card = load_card(model)
    probs = predict_probs(model, [r.path for r in test_rows],
                          work / f"probs-{model.resolve().name}.npz")
    out: dict[str, Any] = {}
    for name in RUNS:
        keep = [i for i, r in enumerate(test_rows)
                if (name == "both" or r.source == name) and r.file not in skip]
        if not keep:
            continue
        labels = [test_rows[i].label for i in keep]
        out[name] = score_set(labels, probs[keep], list(card.classes), card.threshold,
                              n_boot, seed)
        out[name]["seen_left_out"] = sum(1 for r in test_rows if r.file in skip
                                         and (name == "both" or r.source == name))
    return out


def parse_pairs(items: list[str], what: str) -> dict[str, Path]:
    pairs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in RUNS:
            raise SystemExit(f"error: {what} wants NAME=PATH with NAME one of {', '.join(RUNS)}")
        pairs[name] = Path(path)
    return pairs


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE onto TrainConfig fields, typed like the field's default (smoke runs)."""
    from kulit.config import TrainConfig

    types = {f.name: type(f.default) for f in dataclasses.fields(TrainConfig)}
    over: dict[str, Any] = {}
    for item in items:
        k, _, v = item.partition("=")
        if k not in types:
            raise SystemExit(f"error: --set {k}: not a TrainConfig field")
        t = types[k]
        over[k] = v.lower() in ("1", "true", "yes") if t is bool else t(v)
    return over


def train_run(name: str, split: Path, root: Path, work: Path, recipe: str,
              over: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Train the recipe on one source's rows (or all) of the split, export; model dir, timing."""
    from kulit.config import make_config
    from kulit.training.export import export
    from kulit.training.train import train

    run_split = split if name == "both" else filter_split(split, name, work / f"data-{name}")
    out = work / f"run-{name}"
    cfg = make_config(str(root), str(run_split), recipe, out=str(out),
                      cache_dir=str(work / "cache"), **over)
    t = time.perf_counter()
    train(cfg, log=lambda s: print(f"  [{name}] {s}" if len(s) < 200 else "  (table)",
                                   flush=True))
    seconds = time.perf_counter() - t
    summary = json.loads((out / "summary.json").read_text())
    model = export(out, work / f"model-{name}")
    return model, {"train_seconds": seconds, "best_epoch": summary.get("best_epoch"),
                   "feature_seconds": summary["timing"]["feature_seconds"]}


def as_model(name: str, path: Path, work: Path) -> Path:
    """A model dir as it is; a run dir exported into the work dir first."""
    if (path / "model.onnx").is_file():
        return path
    if (path / "summary.json").is_file():
        from kulit.training.export import export

        return export(path, work / f"model-{name}")
    raise SystemExit(f"error: {path} is neither a model dir (model.onnx) nor a run dir")


def targets(runs: dict[str, Any]) -> dict[str, Any]:
    """The cross-source targets, read off the "both" run; the baseline move on skin8-web."""
    t: dict[str, Any] = {}
    both = runs.get("both", {}).get("test", {})
    if "both" in both:
        b = both["both"]
        t["combined_balanced_accuracy>=0.85"] = b["balanced_accuracy"] >= 0.85
        t["combined_top3>=0.97"] = b["top3_accuracy"] >= 0.97
        t["combined_ece<=0.05"] = b["ece"] <= 0.05
    for s in SOURCES:
        if s in both:
            m = both[s]
            t[f"{s}_balanced_accuracy>=0.80"] = m["balanced_accuracy"] >= 0.80
            acc = m["answered_accuracy"]
            t[f"{s}_answered_accuracy>=0.90"] = acc is not None and acc >= 0.90
            t[f"{s}_max_share_ratio<=1.5"] = m["max_share_ratio"] <= 1.5
    base = runs.get("skin8", {}).get("test", {}).get("skin8-web")
    new = both.get("skin8-web")
    if base and new:
        t["skin8_web_balanced_accuracy_gain_points_vs_skin8_only"] = 100 * (
            new["balanced_accuracy"] - base["balanced_accuracy"])
    return t


def cross_source(args: argparse.Namespace) -> dict[str, Any]:
    from kulit.dataprep.split import load_split, read_report, run_data

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    split = args.split_csv
    if split is None:
        split = work / "data" / "split.csv"
        run_data([DATA / s for s in SOURCES], split.parent, seed=0, exclude=args.exclude)
    report = read_report(split.parent)
    root = (split.parent / report.get("root", ".")).resolve()
    rows = load_split(split)
    test_rows = [r for r in rows if r.split == "test"]
    if args.limit:  # smoke runs: the first N test photos of each source
        test_rows = [r for s in SOURCES for r in [x for x in test_rows if x.source == s]
                     [: args.limit]]
    reuse = parse_pairs(args.reuse, "--reuse")
    trained_split = parse_pairs(args.trained_split, "--trained-split")
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    if bad := [n for n in names if n not in RUNS]:
        raise SystemExit(f"error: unknown run(s) {bad}; use {', '.join(RUNS)}")
    over = parse_overrides(args.set)
    res: dict[str, Any] = {
        "protocol": "cross-source", "split_csv": str(split), "data_hash": report["data_hash"],
        "seed": 0, "n_boot": args.n_boot, "recipe": args.recipe, "overrides": over,
        "cpus": os.cpu_count(),
        "test_photos": {s: sum(r.source == s for r in test_rows) for s in SOURCES},
        "runs": {},
    }
    for name in names:
        print(f"run {name}", flush=True)
        entry: dict[str, Any] = {"train_on": list(SOURCES) if name == "both" else [name]}
        if name in reuse:
            model = as_model(name, reuse[name], work)
            entry["reused"] = str(reuse[name])
        else:
            model, entry["timing"] = train_run(name, split, root, work, args.recipe, over)
        skip = seen_files(test_rows, trained_split[name]) if name in trained_split else set()
        card = json.loads((model / "card.json").read_text())
        model_hash = (card.get("data") or {}).get("hash")
        own = split if name == "both" else work / f"data-{name}" / split.name
        entry |= {"model": str(model), "model_data_hash": model_hash,
                  "trained_split": str(trained_split.get(name, own if "timing" in entry
                                                         else split))}
        if model_hash != report["data_hash"] and name not in trained_split:
            print(f"  warning: {model} was trained on data {model_hash}, not this split; "
                  f"pass --trained-split {name}=CSV to leave out photos it saw", flush=True)
            entry["warning"] = "trained on another split; seen photos not left out"
        entry["test"] = score_model(model, test_rows, work, n_boot=args.n_boot, seed=0,
                                    skip=skip)
        res["runs"][name] = entry
        for t, m in entry["test"].items():
            print(f"  test {t:9s} n={m['n']:3d} bal.acc {m['balanced_accuracy']:.3f} "
                  f"{m['ci95'].get('balanced_accuracy')} max share ratio "
                  f"{m['max_share_ratio']:.2f} ({m['max_share_class']})", flush=True)
    res["targets"] = targets(res["runs"])
    return res


# ---------------------------------------------------------------------------------------------
# paper-vs-kulit (skin8 alone)


def run_recipe(recipe: str, split: Path, work: Path, cache: Path, *, cached: bool = True,
               **over: object) -> tuple[Path, dict[str, object]]:
    from kulit.config import make_config
    from kulit.training.train import train

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
    from kulit.build.evaluate import evaluate_model
    from kulit.training.export import export

    model = export(run, work / f"model-{run.name}")
    m = evaluate_model(model, SKIN8, split="test", split_csv=split, out=work / f"eval-{run.name}")
    return {k: m[k] for k in KEYS if k in m}


def paper_vs_kulit(args: argparse.Namespace) -> dict[str, Any]:
    from kulit.dataprep.split import run_data

    work = args.work
    cache = work / "cache"
    if cache.exists() and not args.reuse_cache:
        shutil.rmtree(cache)
    run_data(SKIN8, work / "data", seed=0)
    split = work / "data" / "split.csv"
    res: dict[str, Any] = {"protocol": "paper-vs-kulit", "cpus": os.cpu_count(),
                           "data": str(SKIN8.name), "seed": 0}
    over = parse_overrides(args.set)
    print("paper recipe (feature cache on)", flush=True)
    paper_run, res["paper_timing"] = run_recipe("paper", split, work, cache)
    if not args.skip_recompute:
        print("paper recipe (recomputing the frozen base every epoch)", flush=True)
        _, res["paper_recompute_timing"] = run_recipe("paper", split, work, cache, cached=False)
        res["cache_speedup"] = (res["paper_recompute_timing"]["train_seconds"]
                                / res["paper_timing"]["train_seconds"])
    print("kulit recipe", flush=True)
    kulit_run, res["kulit_timing"] = run_recipe("kulit", split, work, cache, **over)
    res["paper"] = score(paper_run, work, split)
    res["kulit"] = score(kulit_run, work, split)
    pb, kb = res["paper"]["balanced_accuracy"], res["kulit"]["balanced_accuracy"]
    res["balanced_accuracy_gain_points"] = 100 * (kb - pb)
    k = res["kulit"]
    res["targets"] = {
        "gain_points>=15": res["balanced_accuracy_gain_points"] >= 15,
        "kulit_balanced_accuracy>=0.85": k["balanced_accuracy"] >= 0.85,
        "kulit_top3>=0.97": k["top3_accuracy"] >= 0.97,
        "kulit_ece<=0.05": k["ece"] <= 0.05,
        "paper_train<60s": res["paper_timing"]["train_seconds"] < 60,
        "kulit_train<20min": res["kulit_timing"]["train_seconds"] < 1200,
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=("cross-source", "paper-vs-kulit"),
                    default="cross-source")
    ap.add_argument("--work", type=Path, default=None,
                    help="work dir (default runs/bench-xsource, or runs/bench for the paper)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default benchmarks/results/accuracy.json (accuracy-paper.json for the "
                    "paper protocol)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training field, e.g. epochs=1 (smoke runs)")
    g = ap.add_argument_group("cross-source")
    g.add_argument("--runs", default=",".join(RUNS), help="which to train/score: skin8,"
                   "skin8-web,both")
    g.add_argument("--split-csv", type=Path, default=None,
                   help="an existing two-folder split.csv (default: run `kulit data` here)")
    g.add_argument("--exclude", type=Path, default=REPO / "data" / "exclude.txt")
    g.add_argument("--reuse", "--model-for", action="append", default=[], metavar="NAME=DIR",
                   help="score this model or run dir as run NAME instead of training it")
    g.add_argument("--trained-split", action="append", default=[], metavar="NAME=CSV",
                   help="split the reused model NAME was trained on: its seen photos are "
                   "left out")
    g.add_argument("--recipe", default="kulit")
    g.add_argument("--n-boot", type=int, default=N_BOOT)
    g.add_argument("--limit", type=int, default=0, help="first N test photos per source (smoke)")
    g = ap.add_argument_group("paper-vs-kulit")
    g.add_argument("--reuse-cache", action="store_true", help="keep the feature cache")
    g.add_argument("--skip-recompute", action="store_true", help="skip the no-cache timing")
    args = ap.parse_args()
    if not SKIN8.is_dir():
        sys.exit(f"error: {SKIN8} not found")
    if args.protocol == "paper-vs-kulit":
        args.work = args.work or REPO / "runs" / "bench"
        res = paper_vs_kulit(args)
    else:
        args.work = args.work or REPO / "runs" / "bench-xsource"
        res = cross_source(args)
    from kulit.build.metrics import clean_json

    results = REPO / "benchmarks" / "results"
    if args.out is None:
        args.out = results / ("accuracy-paper.json" if args.protocol == "paper-vs-kulit"
                              else "accuracy.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(clean_json(res), indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
