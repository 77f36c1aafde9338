"""Shortlist: the conformal list's coverage, size and usefulness, per source and skin type, for
each calibration method, the urgency table, and what the list costs per photo when serving.

    python benchmarks/shortlist.py [--model models/kulit-skin8] [--data ../shared/data]
                                   [--split-csv runs/data/split.csv] [--level 0.9]
                                   [--cache .cache/kulit/shortlist.npz]

Writes benchmarks/results/shortlist.json. Nothing is written into the model folder: each method
is fitted in memory with `kulit.build.shortlist_fit` (the code `kulit shortlist` runs) on every
source's val photos and measured on the test photos (and every photo of a source the split does
not hold, e.g. atlas/ for a model trained without it). Every rate is k/n with a Wilson 95%
interval. The serving cost is the median per photo over many calls, on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def serving_cost(probs: np.ndarray, classes: list[str], threshold: float, cutoffs: np.ndarray,
                 reps: int = 5) -> dict[str, float]:
    """Median microseconds per photo of the shortlist alone (ShortlistRule.members) and of the
    whole answer rule with it (answer.decide), over every photo, best of `reps` rounds."""
    from kulit.serving.answer import decide
    from kulit.serving.shortlist import ShortlistRule

    rule = ShortlistRule(0.9, cutoffs)

    def per_photo_us(fn: object) -> float:
        best = np.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            for p in probs:
                fn(p)  # type: ignore[operator]
            best = min(best, (time.perf_counter() - t0) / len(probs))
        return round(1e6 * best, 2)

    return {
        "shortlist_us": per_photo_us(lambda p: rule.members(p, threshold)),
        "decide_with_shortlist_us": per_photo_us(
            lambda p: decide(p, classes, threshold, shortlist=rule)),
        "decide_without_shortlist_us": per_photo_us(lambda p: decide(p, classes, threshold)),
        "photos": len(probs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models/kulit-skin8")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data")
    ap.add_argument("--split-csv", type=Path, default=REPO / "runs/data/split.csv")
    ap.add_argument("--level", type=float, default=None)
    ap.add_argument("--cache", type=Path, default=REPO / ".cache/kulit/shortlist.npz")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/shortlist.json")
    args = ap.parse_args()

    from kulit.build import shortlist_fit as sf
    from kulit.build.photos import softmax
    from kulit.serving.model_dir import ModelDir
    from kulit.serving.shortlist import DEFAULT_LEVEL, SECTION, ShortlistRule

    md = ModelDir(args.model)
    card = md.card()
    precision, served, temperature = md.served(card)
    level = args.level or float(card.section(SECTION).get("level", DEFAULT_LEVEL))
    t0 = time.perf_counter()
    photos = sf.collect_photos(md.path, args.data, args.split_csv, card.classes, args.cache)
    seconds = time.perf_counter() - t0
    probs = softmax(photos.feats.logits, temperature)
    rows = photos.feats.rows
    cal = (photos.role == "val") & photos.feats.ok
    y = np.array([card.classes.index(r.label) for r, c in zip(rows, cal, strict=True) if c])
    src = np.array([r.source for r, c in zip(rows, cal, strict=True) if c], dtype=object)
    methods = {}
    for method in sf.METHODS:
        cut, detail = sf.fit_cutoffs(probs[cal], y, src, card.classes, level, method)
        _, said = sf.served_answers(photos, card, md.path, temperature, ShortlistRule(level, cut))
        figs = sf.figures(photos, said, cut, probs, card.classes)
        methods[method] = {"cutoffs": dict(zip(card.classes, np.round(cut, 6).tolist(),
                                               strict=True)),
                           "bins": detail, "figures": figs,
                           "table": sf.table_lines({"figures": figs})}
        print(f"== {method}")
        print("\n".join(methods[method]["table"]))
    test = (photos.role == "test") & photos.feats.ok
    chosen = methods["source-class"]["cutoffs"]
    cost = serving_cost(probs[test], card.classes, card.threshold,
                        np.array([chosen[c] for c in card.classes]))
    print(f"serving cost per photo: shortlist {cost['shortlist_us']} us, answer rule with it "
          f"{cost['decide_with_shortlist_us']} us (target <= 100 us)")
    out = {
        "what": "conformal shortlist per calibration method: coverage, mean size, useful "
                "answers (1-2 conditions), urgency; cut-offs fitted on every source's val "
                "photos, figures on test photos and unseen sources",
        "model": card.name, "served": {"precision": precision, "file": served.name,
                                       "temperature": temperature},
        "split_csv": str(args.split_csv), "level": level, "default_method": "source-class",
        "methods": methods, "serving_cost": cost,
        "feature_seconds": round(seconds, 1),
        "machine": {"python": platform.python_version(), "cpu": platform.processor()
                    or platform.machine()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(sf._round(out), indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
