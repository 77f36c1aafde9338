"""Trust: does kulit know when not to answer? The gate (not skin / none of these), the melanoma
cut-off and "confident means right", on photos no cut-off was chosen on, against no gate.

    python benchmarks/trust.py [--model models/kulit-skin8] [--data ../shared/data]
                               [--split-csv runs/data/split.csv] [--cache .cache/kulit/gate.npz]

Writes benchmarks/results/trust.json. Every rate is k/n with a Wilson 95% interval. "no_gate" is
today's behaviour: the card's threshold before `kulit gate`, no rejection, "see a doctor" when
uncertain or top-1 Melanoma; "gate_at_threshold_before" is the gate with the old threshold.
The status rule mirrors the server's (quality check left out).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def gate_latency(model: Path, data: Path, files: list[str], reps: int = 60) -> dict[str, float]:
    """What the gate adds per photo at batch 1: asking ONNX for the feature map as well as the
    logits, pooling it, and the two dot products."""
    from kulit.serving.gate import load_gate
    from kulit.serving.predict import Predictor

    pred = Predictor(model)
    gate = load_gate(model)
    if gate is None:
        raise SystemExit(f"{model}: no gate.npz; run `kulit gate --model {model}` first")
    xs = [pred.prepare(data / f)[1][None] for f in files[:reps]]

    def median_ms(fn: object) -> float:
        times = []
        for x in xs:
            t = time.perf_counter()
            fn(x)  # type: ignore[operator]
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1000)

    for x in xs[:5]:
        pred.run(x, features=True)
    plain, with_feats = [], []
    for _ in range(3):  # interleaved, so drift on a shared machine hits both alike
        plain.append(median_ms(lambda x: pred.run(x)))
        with_feats.append(median_ms(lambda x: pred.run(x, features=True)))
    fmap = pred.run(xs[0], features=True)[1]
    assert fmap is not None
    t = time.perf_counter()
    for _ in range(1000):
        gate.scores(fmap.mean(axis=(2, 3)))
    scores_ms = (time.perf_counter() - t)  # 1000 runs -> seconds == ms per run
    return {
        "model_run_ms": float(np.median(plain)),
        "model_run_with_features_ms": float(np.median(with_feats)),
        "pool_and_score_ms": scores_ms,
        "added_ms_per_photo": max(0.0, float(np.median(with_feats) - np.median(plain)))
        + scores_ms,
        "target_ms": 3.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "kulit-skin8")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--split-csv", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "trust.json")
    args = ap.parse_args()

    from kulit.build.gate_fit import gate_figures, summary_lines
    from kulit.build.photos import collect_rows, extract_features
    from kulit.serving.card import load_card
    from kulit.serving.gate import load_gate
    from kulit.serving.model_dir import served_file

    card = load_card(args.model)
    gate = load_gate(args.model)
    if gate is None or not card.gate:
        raise SystemExit(f"{args.model}: no gate; run `kulit gate --model {args.model}` first")
    rows, how = collect_rows(args.data, args.split_csv)
    feats = extract_features(args.model, args.data, rows, cache=args.cache)
    before = card.gate.get("tuned_on", {}).get("threshold_before", card.threshold)
    t = served_file(args.model, card)[2]  # the served file's temperature (int8 has its own)
    gated = gate_figures(feats, card.classes, t, card.threshold, gate, card.gate)
    baseline = gate_figures(feats, card.classes, t, before, None, None)
    # the gate alone, at the old threshold: separates what the gate does from the new threshold
    gate_only = gate_figures(feats, card.classes, t, before, gate, card.gate)
    skin_test = [r.file for r, ok in zip(feats.rows, feats.ok, strict=True)
                 if ok and r.split == "test" and r.source.startswith("skin8")]
    latency = gate_latency(args.model, args.data, skin_test)
    result = {
        "model": card.name,
        "model_dir": str(args.model),
        "split": how,
        "cut_offs": {k: card.gate[k] for k in ("not_skin_threshold", "other_threshold",
                                              "melanoma_cutoff")}
        | {"threshold": card.threshold, "threshold_before": before},
        "held_out": {"not_skin_categories": sorted({r.label for r in rows if
                                                    r.split == "held_out" and
                                                    r.source == "not-skin"}),
                     "other_conditions": sorted({r.label for r in rows if
                                                 r.split == "held_out" and
                                                 r.source == "other-conditions"})},
        "gate": gated,
        "no_gate": baseline,
        "gate_at_threshold_before": gate_only,
        "latency": latency,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "unreadable": [r.file for r, ok in zip(feats.rows, feats.ok, strict=True) if not ok],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for line in summary_lines(card.gate | {"figures": gated}, card.threshold):
        print(line)
    print(f"gate adds {latency['added_ms_per_photo']:.3f} ms per photo (target <= 3 ms)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
