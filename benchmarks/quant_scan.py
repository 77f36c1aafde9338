"""Which convolutions must stay fp32 for int8 to agree with fp32? The scan behind
`kulit.build.quantize.fp32_convs`.

    python benchmarks/quant_scan.py [--model models/kulit-skin8] [--split-csv runs/data/split.csv]

Quantises the model as `kulit quantize` does (static QDQ, per-channel int8 weights, uint8
activations, min/max on the same training photos) with different sets of convs kept fp32:
none, the stem alone, the stem plus each group of three convs in turn, the shipped rule (stem +
first depthwise) and the shipped rule plus the last conv. For each, on the validation photos
(where `kulit quantize` checks): the logits' mean squared error against fp32, top-1 agreement
and balanced accuracy per source, the file size and the network's time at batch 1 (2 threads).
Writes benchmarks/results/quant-scan.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def network_ms(onnx_path: Path, x: np.ndarray, n: int = 60) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    for i in range(5):
        sess.run(None, {"image": x[i: i + 1]})
    times = []
    for i in range(n):
        t = time.perf_counter()
        sess.run(None, {"image": x[i % len(x): i % len(x) + 1]})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "kulit-skin8")
    ap.add_argument("--split-csv", type=Path, default=REPO / "runs" / "data" / "split.csv")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                    "quant-scan.json")
    args = ap.parse_args()

    from onnxruntime.quantization.shape_inference import quant_pre_process

    from kulit.build.metrics import balanced_accuracy
    from kulit.build.quantize import (
        FP32_LEADING_CONVS,
        QuantizeConfig,
        conv_kernels,
        pick_calibration,
        preprocess_files,
        quantize_onnx,
        run_logits,
    )
    from kulit.dataprep.split import load_split
    from kulit.serving.card import load_card
    from kulit.serving.model_dir import ONNX_FILE

    card = load_card(args.model)
    cfg = QuantizeConfig()
    fp32_path = args.model / card.files.get("model", ONNX_FILE)
    rows = load_split(args.split_csv)
    calib = preprocess_files([r.path for r in pick_calibration(rows, cfg.calib_images,
                                                                cfg.seed)], card.preprocessing)
    val = [r for r in rows if r.split == "val"]
    x = preprocess_files([r.path for r in val], card.preprocessing)
    y = np.array([card.classes.index(r.label) for r in val])
    src = np.array([r.source for r in val])
    fp32 = run_logits(fp32_path, x)[0]
    k = len(card.classes)

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        kernels = list(dict.fromkeys(w for _, w in conv_kernels(prepped)))
        stem = {kernels[0]}
        configs: list[tuple[str, set[str]]] = [("none", set()), ("stem", stem)]
        for i in range(1, len(kernels), 3):
            group = kernels[i: i + 3]
            configs.append((f"stem + convs {i}-{i + len(group) - 1}", stem | set(group)))
        shipped = set(kernels[:FP32_LEADING_CONVS])
        configs += [("stem + first depthwise (shipped rule)", shipped),
                    ("stem + first depthwise + last conv", shipped | {kernels[-1]})]
        results: list[dict[str, Any]] = []
        for name, keep in configs:
            dst = Path(tmp) / "int8.onnx"
            quantize_onnx(fp32_path, dst, calib, fp32_kernels=keep)
            z = run_logits(dst, x)[0]
            row: dict[str, Any] = {"fp32": name, "fp32_convs": sorted(kernels.index(w)
                                                                      for w in keep),
                                   "logit_mse": float(np.mean((z - fp32) ** 2)),
                                   "mb": dst.stat().st_size / 1e6,
                                   "network_ms": network_ms(dst, x)}
            for group in ["all", *sorted(str(s) for s in set(src))]:
                m = np.ones(len(y), bool) if group == "all" else src == group
                row[group] = {"top1_agreement": float(np.mean(z[m].argmax(1)
                                                               == fp32[m].argmax(1))),
                              "balanced_accuracy_drop": balanced_accuracy(
                                  y[m], fp32[m].argmax(1), k)
                              - balanced_accuracy(y[m], z[m].argmax(1), k)}
            results.append(row)
            print(f"{name:<40} mse {row['logit_mse']:.4f} agreement "
                  f"{row['all']['top1_agreement']:.3f} {row['mb']:.1f} MB "
                  f"{row['network_ms']:.1f} ms", flush=True)
    out = {"model": str(args.model), "split": "val", "n": len(val),
           "calibration": {"images": cfg.calib_images, "seed": cfg.seed, "split": "train"},
           "fp32_network_ms": network_ms(fp32_path, x), "conv_kernels": len(kernels),
           "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
