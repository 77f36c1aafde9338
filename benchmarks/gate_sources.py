"""Does the "none of these" scorer learn photo style? The gate fitted with tuned conditions of
both OTHER_FOLDERS (DermNet NZ other-conditions/ and Atlas Dermatologico atlas-other/) against
the same fit with other-conditions/ alone, on the same features of the served model.

Reported per held-out folder (leave-condition-out: conditions neither fit saw): AUROC of the
"other" score against each skin source's test photos, the share flagged "none of these" at the
fitted cut-off, and the share given no confident class.
Writes benchmarks/results/gate-sources.json.
Usage: python benchmarks/gate_sources.py --model DIR --split-csv FILE [--cache FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from kulit.build import gate_fit as g
from kulit.serving.card import load_card
from kulit.serving.model_dir import served_file

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "gate-sources.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--split-csv", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows, how = g.collect_rows(args.data, args.split_csv)
    feats = g.extract_features(args.model, args.data, rows, cache=args.cache)
    card = load_card(args.model)
    precision, _, temperature = served_file(args.model, card)
    src = np.array([r.source for r in feats.rows])
    split = np.array([r.split for r in feats.rows])
    held = (split == "held_out") & feats.ok
    skin_test = np.isin(src, g.SKIN_FOLDERS) & (split == "test") & feats.ok
    out: dict[str, Any] = {"model": str(args.model), "precision": precision, "split": how,
                           "fits": {}}
    fits = {"both folders": np.ones(len(src), bool)}
    for folder in g.OTHER_FOLDERS[1:]:
        fits[f"{g.OTHER_FOLDERS[0]} only"] = ~((src == folder) & (split == "tune"))
    for name, keep in fits.items():
        gate, cfg, threshold = g.fit_gate(feats.select(keep), card.classes, temperature)
        fig = g.gate_figures(feats, card.classes, temperature, threshold, gate, cfg)
        score = gate.scores(feats.pooled).other
        per: dict[str, Any] = {}
        for folder in g.OTHER_FOLDERS:
            pos = held & (src == folder)
            auroc = {}
            for s in g.SKIN_FOLDERS:
                neg = skin_test & (src == s)
                if pos.any() and neg.any():
                    y = np.r_[np.ones(pos.sum()), np.zeros(neg.sum())]
                    auroc[s] = round(float(roc_auc_score(y, np.r_[score[pos], score[neg]])), 3)
            per[folder] = {
                "auroc_vs_skin_test": auroc,
                "flagged_none_of_these": g.rate(score[pos] >= cfg["other_threshold"]),
                "no_confident_class": fig["other_held_out_no_confident_class_by_source"].get(
                    folder),
            }
        out["fits"][name] = {"other_threshold": cfg["other_threshold"], "threshold": threshold,
                             "held_out": per}
        print(name, {f: p["auroc_vs_skin_test"] for f, p in per.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
