"""Inference speed: ONNX Runtime predictor vs torch eager on the same weights, same photos.

    python benchmarks/inference.py [--model models/kulit-skin8] [--run runs/kulit] [--n 200]

Writes benchmarks/results/inference.json. Latency at batch 1 includes decode and preprocess
(the same code path for both engines); throughput at batch 32; `kulit predict` on a folder;
cold start and peak memory of the predictor in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SKIN8 = REPO.parent / "shared" / "data" / "skin8"


def photos(n: int) -> list[Path]:
    files = sorted(p for p in SKIN8.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    rng = np.random.default_rng(0)
    return [files[i] for i in rng.choice(len(files), size=min(n, len(files)), replace=False)]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def bench_onnx(model: Path, files: list[Path]) -> dict[str, float]:
    from kulit.predict import Predictor

    pred = Predictor(model)
    for f in files[:5]:
        pred.predict_one(f)
    lat = []
    for f in files:
        t = time.perf_counter()
        pred.predict_one(f)
        lat.append(time.perf_counter() - t)
    batches = [files[i: i + 32] for i in range(0, len(files) - 31, 32)]
    t = time.perf_counter()
    for b in batches:
        pred.predict(b)
    thr = 32 * len(batches) / (time.perf_counter() - t)
    # model only (preprocessed input), to separate decode cost from inference cost
    x = np.stack([pred.prepare(f)[1] for f in files[:32]])
    pred.run(x[:1])
    t1 = []
    for i in range(len(files)):
        t = time.perf_counter()
        pred.run(x[i % 32: i % 32 + 1])
        t1.append(time.perf_counter() - t)
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "batch32_images_per_s": thr,
            "model_only_p50_ms": pct(t1, 50)}


def bench_torch(run: Path, model: Path, files: list[Path]) -> dict[str, float]:
    import torch

    from kulit.export import load_run
    from kulit.predict import Predictor

    torch.set_num_threads(os.cpu_count() or 2)
    _, _, net = load_run(run)
    pred = Predictor(model)  # only for its (identical) decode + preprocess
    with torch.inference_mode():
        for f in files[:5]:
            net(torch.from_numpy(pred.prepare(f)[1][None]))
        lat = []
        for f in files:
            t = time.perf_counter()
            logits = net(torch.from_numpy(pred.prepare(f)[1][None]))[0]
            torch.softmax(logits / pred.card.temperature, 1)
            lat.append(time.perf_counter() - t)
        batches = [files[i: i + 32] for i in range(0, len(files) - 31, 32)]
        t = time.perf_counter()
        for b in batches:
            net(torch.from_numpy(np.stack([pred.prepare(f)[1] for f in b])))
        thr = 32 * len(batches) / (time.perf_counter() - t)
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "batch32_images_per_s": thr}


def bench_cli(model: Path, files: list[Path]) -> dict[str, float]:
    """`kulit predict --json` on a folder of real photos, as a user would run it."""
    kulit = Path(sys.executable).with_name("kulit")
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            os.symlink(f, Path(tmp) / f"{f.parent.name}_{f.name}")
        t = time.perf_counter()
        out = subprocess.run([str(kulit), "predict", "--model", str(model), "--json", tmp],
                             capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
    n = sum(1 for line in out.stdout.splitlines() if '"top"' in line)
    return {"images": n, "wall_s": wall, "images_per_s": n / wall}


COLD = """
import sys, time
t0 = float(sys.argv[3])
from kulit.predict import Predictor
p = Predictor(sys.argv[1])
p.predict_one(sys.argv[2])
t1 = time.time()
# VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the parent's peak
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(t1 - t0, int(hwm.split()[1]) / 1024)
"""


def bench_cold(model: Path, photo: Path) -> dict[str, float]:
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", COLD, str(model), str(photo),
                              repr(time.time())], capture_output=True, text=True, check=True)
        s, mb = out.stdout.split()
        runs.append((float(s), float(mb)))
    return {"cold_start_s": min(r[0] for r in runs), "peak_rss_mb": max(r[1] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "kulit-skin8")
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "kulit")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "inference.json")
    args = ap.parse_args()
    if not SKIN8.is_dir():
        sys.exit(f"error: {SKIN8} not found (the benchmark uses real skin8 photos)")
    files = photos(args.n)
    res: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO)
                     else args.model),
        "images": len(files),
    }
    res["cold"] = bench_cold(args.model, files[0])  # first, before this process grows
    print("cold", res["cold"], flush=True)
    res["onnxruntime"] = bench_onnx(args.model, files)
    print("onnxruntime", res["onnxruntime"], flush=True)
    if (args.run / "checkpoint.pt").is_file():
        res["torch_eager"] = bench_torch(args.run, args.model, files)
        print("torch eager", res["torch_eager"], flush=True)
        o, t = res["onnxruntime"], res["torch_eager"]
        res["speedup_p50"] = t["p50_ms"] / o["p50_ms"]  # type: ignore[index]
        res["speedup_batch32"] = o["batch32_images_per_s"] / t["batch32_images_per_s"]  # type: ignore[index]
    else:
        res["torch_eager"] = f"skipped: {args.run}/checkpoint.pt not found (run `make model`)"
    res["kulit_predict_folder"] = bench_cli(args.model, files)
    print("kulit predict", res["kulit_predict_folder"], flush=True)
    res["targets"] = {"speedup_p50_min": 3.0, "p50_ms_max": 15.0, "folder_images_per_s_min": 150}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
