"""Inference speed, one run, side by side: fp32 vs int8 predictor, torch eager, the floor.

    python benchmarks/inference.py [--model models/kulit-skin8] [--run runs/kulit] [--n 200]
                                   [--folder 500] [--skip-paper] [--skip-api] [--api-requests 200]
                                   [--split-csv runs/data/split.csv]

Writes benchmarks/results/inference.json. Latency at batch 1 includes decode and preprocess
(the same code path for every engine), with 2 intra-op threads (a lone process) and with 1
(the server's setting), fp32 and int8 interleaved over 3 rounds (median reported); throughput
at batch 32; `kulit predict` on a folder of --folder photos
(photos/s and peak memory; serial batches of 32 vs parallel single-thread workers, fp32 and
int8); cold start and peak memory of the predictor in a fresh process; the physical floor of
the network (its FLOPs over the GEMM rate ONNX Runtime reaches here, fp32 and int8); the
result page's image encoding; the paper's architecture (DenseNet201 at 64 px + its head, random
weights, exported like kulit exports) in ONNX Runtime; `kulit serve` at concurrency 1/4/16 with
real photo uploads (benchmarks/serve.py's harness) and its peak memory; the result page with its
heatmap in-process; fp32 against int8 on every source's test split (balanced accuracy, ECE).
int8 rows need `kulit quantize` to have passed on --model.
The machine's load average is recorded at the start and the end: 2 cores are easily disturbed.
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
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SKIN8 = REPO.parent / "shared" / "data" / "skin8"


def photos(n: int) -> list[Path]:
    files = sorted(p for p in SKIN8.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    rng = np.random.default_rng(0)
    return [files[i] for i in rng.choice(len(files), size=min(n, len(files)), replace=False)]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def bench_onnx(model: Path, files: list[Path], variants: list[tuple[str, bool, int | None]],
               rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Each (key, int8, threads) variant's Predictor, measured in `rounds` interleaved rounds
    (so drift on a shared 2-core VM hits every variant alike): latency at batch 1 including
    decode and preprocess, the network alone, throughput at batch 32. Reported: the median
    over rounds, and each round's p50."""
    from kulit.serving.predict import Predictor

    preds = {key: Predictor(model, threads=threads, int8=int8, allow_spinning=threads is None)
             for key, int8, threads in variants}
    x = np.stack([next(iter(preds.values())).prepare(f)[1] for f in files[:32]])
    for pred in preds.values():
        for f in files[:5]:
            pred.predict_one(f)
        pred.run(x[:1])
    per: dict[str, dict[str, list[float]]] = {k: {"p50": [], "p99": [], "model_p50": [],
                                                  "batch32": []} for k in preds}
    batches = [files[i: i + 32] for i in range(0, len(files) - 31, 32)]
    for _ in range(rounds):
        for key, pred in preds.items():
            lat = []
            for f in files:
                t = time.perf_counter()
                pred.predict_one(f)
                lat.append(time.perf_counter() - t)
            t1 = []
            for i in range(len(files)):
                t = time.perf_counter()
                pred.run(x[i % 32: i % 32 + 1])
                t1.append(time.perf_counter() - t)
            t = time.perf_counter()
            for b in batches:
                pred.predict(b)
            r = per[key]
            r["batch32"].append(32 * len(batches) / (time.perf_counter() - t))
            r["p50"].append(pct(lat, 50))
            r["p99"].append(pct(lat, 99))
            r["model_p50"].append(pct(t1, 50))
    out = {}
    for key, pred in preds.items():
        r = per[key]
        out[key] = {"precision": pred.precision,
                    "threads": pred.session.get_session_options().intra_op_num_threads,
                    "rounds": rounds, "p50_ms": float(np.median(r["p50"])),
                    "p50_ms_rounds": r["p50"], "p99_ms": float(np.median(r["p99"])),
                    "batch32_images_per_s": float(np.median(r["batch32"])),
                    "model_only_p50_ms": float(np.median(r["model_p50"]))}
    return out


def torch_model(run: Path, model: Path) -> tuple[Any, str]:
    """The run's torch model; without a run, the same architecture rebuilt from the card and
    head.npz (fine-tuned backbone weights not loaded: the same cost, so the same speed)."""
    import torch

    from kulit.training.export import ServingModel, load_run

    if (run / "checkpoint.pt").is_file():
        return load_run(run)[2], f"{run}/checkpoint.pt"
    from kulit.serving.card import load_card
    from kulit.training.backbones import build_backbone
    from kulit.training.train import TrainConfig, build_head

    card = load_card(model)
    cfg = TrainConfig(**card.train_config)
    with np.load(model / "head.npz") as z:
        fc_w, fc_b = z["fc_w"], z["fc_b"]
    backbone = build_backbone(cfg.backbone, cfg.input_size, None, cfg.pretrained)
    head = build_head(cfg, fc_w.shape[1], fc_w.shape[0])
    head.fc.weight.data = torch.from_numpy(fc_w).float()
    head.fc.bias.data = torch.from_numpy(fc_b).float()
    net = ServingModel(backbone, head, cfg.tta).eval()
    return net, "rebuilt from card.json + head.npz (no run checkpoint; same graph and cost)"


def bench_torch(run: Path, model: Path, files: list[Path]) -> dict[str, Any]:
    import torch

    from kulit.serving.predict import Predictor

    torch.set_num_threads(os.cpu_count() or 2)
    net, source = torch_model(run, model)
    pred = Predictor(model, int8=False)  # only for its (identical) decode + preprocess
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
    return {"weights": source, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "batch32_images_per_s": thr}


# `kulit predict` in a fresh process that reports its own peak memory (VmHWM) on exit
CLI = """
import atexit, sys
def hwm():
    line = [x for x in open("/proc/self/status") if x.startswith("VmHWM")][0]
    print("VMHWM", int(line.split()[1]) / 1024, file=sys.stderr)
atexit.register(hwm)
from kulit.cli import app
sys.argv = ["kulit", "predict", *sys.argv[1:]]
app()
"""


def bench_cli(model: Path, files: list[Path], *extra: str) -> dict[str, Any]:
    """`kulit predict --json` on a folder of real photos, as a user would run it."""
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            os.symlink(f, Path(tmp) / f"{f.parent.name}_{f.name}")
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CLI, "--model", str(model), "--json", tmp,
                              *extra], capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
    n = sum(1 for line in out.stdout.splitlines() if '"top"' in line)
    mb = float(out.stderr.split("VMHWM")[-1].split()[0])
    return {"options": " ".join(extra), "images": n, "wall_s": wall, "images_per_s": n / wall,
            "peak_rss_mb": mb}


def network_flops(model: Path) -> float:
    """Multiply-adds x 2 of the Conv and Gemm nodes at batch 1 (the rest is negligible); the
    shapes are read off one real run, as the exported graph computes its padding at run time."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(model))
    nodes = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm")]
    names = sorted({x for n in nodes for x in (n.input[1], n.output[0])})
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    size = sess.get_inputs()[0].shape[-1]
    outs = sess.run(names, {"image": np.zeros((1, 3, size, size), np.float32)})
    shape = {n: o.shape for n, o in zip(names, outs, strict=True)}
    flops = 0.0
    for n in nodes:
        w = shape[n.input[1]]
        if n.op_type == "Conv":  # w: [Cout, Cin/groups, kh, kw]
            flops += 2.0 * float(np.prod(shape[n.output[0]])) * w[1] * w[2] * w[3]
        else:
            flops += 2.0 * w[0] * w[1]
    return flops


def gemm_rate(threads: int, int8: bool, n: int = 1024, reps: int = 20) -> float:
    """Operations per second ONNX Runtime (MLAS) reaches on one [n,n]x[n,n] GEMM here."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if int8:
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        ins = [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
               helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])]
        out = helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])
        rng = np.random.default_rng(0)
        feed = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8),
                "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}
    else:
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        ins = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"]
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
        feed = {x: np.random.default_rng(0).normal(size=(n, n)).astype(np.float32) for x in "ab"}
    model = helper.make_model(helper.make_graph([node], "gemm", ins, [out]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    sess.run(None, feed)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    return 2.0 * n**3 / float(np.median(ts))


def bench_floor(model: Path, onnx_fp32: Path, onnx_int8: Path | None,
                measured: dict[str, Any]) -> dict[str, Any]:
    """The network's FLOPs over the GEMM rate: no implementation of it can be faster here."""
    flops = network_flops(onnx_fp32)
    threads = os.cpu_count() or 2
    res: dict[str, Any] = {"network_gflop": flops / 1e9, "threads": threads}
    for kind, path in (("fp32", onnx_fp32), ("int8", onnx_int8)):
        if path is None:
            continue
        rate = gemm_rate(threads, kind == "int8")
        res[kind] = {"gemm_gops": rate / 1e9, "floor_ms": 1000 * flops / rate}
        got = measured.get(kind)
        if got:
            res[kind]["network_ms"] = got["model_only_p50_ms"]
            res[kind]["times_floor"] = got["model_only_p50_ms"] / res[kind]["floor_ms"]
    return res


def bench_encode(model: Path, files: list[Path]) -> dict[str, Any]:
    """The result page's images: heatmap overlay + crop as PNG, default level vs the helper."""
    import io

    from kulit.serving.predict import Predictor, heatmap_overlay
    from kulit.web.inference import encode_image

    pred = Predictor(model, int8=False)
    res: dict[str, list[float]] = {"png_default_ms": [], "png_helper_ms": [],
                                   "png_default_kb": [], "png_helper_kb": []}
    for f in files[:50]:
        p = pred.predict_one(f, heatmap=True)
        assert p.image is not None and p.heatmap is not None
        imgs = [heatmap_overlay(p.image, p.heatmap), p.image]
        t = time.perf_counter()
        default = []
        for im in imgs:
            buf = io.BytesIO()
            im.save(buf, "PNG")
            default.append(buf.getvalue())
        t1 = time.perf_counter()
        fast = [encode_image(im, "PNG") for im in imgs]
        t2 = time.perf_counter()
        res["png_default_ms"].append(t1 - t)
        res["png_helper_ms"].append(t2 - t1)
        res["png_default_kb"].append(sum(map(len, default)) / 1024)
        res["png_helper_kb"].append(sum(map(len, fast)) / 1024)
    return {"images_per_page": 2, **{k: float(np.median(v)) * (1000 if k.endswith("ms") else 1)
                                     for k, v in res.items()}}


def bench_page(model: Path, files: list[Path], n: int = 60) -> dict[str, Any]:
    """The result page with its heatmap (`POST /predict`, the served file) in-process: the time
    from the request to the rendered HTML, the server's own work without a network."""
    from fastapi.testclient import TestClient

    from kulit.web.app import create_app
    from kulit.web.settings import Settings

    bodies = [(f.name, f.read_bytes()) for f in files[:n]]
    with TestClient(create_app(Settings(model_dir=model))) as client:
        for name, data in bodies[:5]:
            client.post("/predict", files={"image": (name, data, "image/jpeg")})
        lat, sizes, heat = [], [], []
        for name, data in bodies:
            t = time.perf_counter()
            r = client.post("/predict", files={"image": (name, data, "image/jpeg")})
            lat.append(time.perf_counter() - t)
            assert r.status_code == 200, r.status_code
            sizes.append(len(r.content) / 1024)
            heat.append('class="overlay"' in r.text)  # not-skin / retake pages show none
        precision = client.get("/api/v1/model").json()["served"]["precision"]
    lat_heat = [t for t, h in zip(lat, heat, strict=True) if h]
    return {"pages": len(lat), "with_heatmap": len(lat_heat), "precision": precision,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "p50_ms_with_heatmap": pct(lat_heat, 50) if lat_heat else None,
            "html_kb_median": float(np.median(sizes))}


def bench_test_accuracy(model: Path, split_csv: Path) -> dict[str, Any] | None:
    """fp32 against the served int8 file on every source's test split: balanced accuracy and
    ECE, each with its own temperature (the card's), and top-1 agreement."""
    from kulit.build.metrics import balanced_accuracy, expected_calibration_error
    from kulit.dataprep.split import load_split
    from kulit.serving.card import load_card
    from kulit.serving.predict import Predictor, softmax

    if not split_csv.is_file():
        return None
    card = load_card(model)
    rows = [r for r in load_split(split_csv) if r.split == "test"]
    y = np.array([card.classes.index(r.label) for r in rows])
    src = np.array([r.source for r in rows])
    probs = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        pred = Predictor(model, int8=int8)
        if pred.precision != name:
            return None
        logits = np.concatenate([pred.run(np.stack([pred.prepare(r.path)[1]
                                                    for r in rows[i: i + 32]]))[0]
                                 for i in range(0, len(rows), 32)])
        probs[name] = softmax(logits.astype(np.float64) / pred.temperature)
    out: dict[str, Any] = {"split": str(split_csv), "n": len(rows)}
    for group in ["all", *sorted(str(v) for v in set(src))]:
        m = np.ones(len(y), bool) if group == "all" else src == group
        row: dict[str, Any] = {"n": int(m.sum())}
        for name, p in probs.items():
            row[f"balanced_accuracy_{name}"] = balanced_accuracy(y[m], p[m].argmax(1),
                                                                 len(card.classes))
            row[f"ece_{name}"] = expected_calibration_error(p[m].max(1), p[m].argmax(1) == y[m])
        row["top1_agreement"] = float(np.mean(probs["fp32"][m].argmax(1)
                                              == probs["int8"][m].argmax(1)))
        out[group] = row
    return out


PAPER_SIZE = 64


def bench_paper(files: list[Path], tmp: Path) -> dict[str, Any]:
    """The paper's architecture (DenseNet201 at 64 px + its BN/GAP/Dense128/Dropout/Dense8
    head), built with kulit's own code, exported like kulit exports (opset, input name, dynamic
    batch) and timed with ONNX Runtime. Random weights: timing only, the predictions mean nothing.
    """
    import onnxruntime as ort
    import torch
    from torch import nn

    from kulit.serving.card import INPUT, LOGITS
    from kulit.serving.preprocess import load_and_preprocess
    from kulit.training.backbones import build_backbone, get_spec
    from kulit.training.export import OPSET
    from kulit.training.heads import PaperHead

    torch.manual_seed(0)
    spec = get_spec("densenet201")
    backbone = build_backbone("densenet201", PAPER_SIZE, None, False)
    net = nn.Sequential(backbone, PaperHead(spec.out_channels, 8)).eval()
    path = tmp / "paper_densenet201_64.onnx"
    t = time.perf_counter()
    torch.onnx.export(net, (torch.zeros(1, 3, PAPER_SIZE, PAPER_SIZE),), str(path),
                      input_names=[INPUT], output_names=[LOGITS],
                      dynamic_axes={INPUT: {0: "N"}, LOGITS: {0: "N"}},
                      opset_version=OPSET, dynamo=False)
    export_s = time.perf_counter() - t
    params = sum(p.numel() for p in net.parameters())
    pre = spec.preprocessing(PAPER_SIZE)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def one(f: Path) -> np.ndarray:
        x = load_and_preprocess(f, pre)[1][None]
        return np.asarray(sess.run([LOGITS], {INPUT: x})[0])

    for f in files[:5]:
        one(f)
    lat = []
    for f in files:
        t = time.perf_counter()
        one(f)
        lat.append(time.perf_counter() - t)
    x = np.stack([load_and_preprocess(f, pre)[1] for f in files[:32]])
    t1 = []
    for i in range(len(files)):
        t = time.perf_counter()
        sess.run([LOGITS], {INPUT: x[i % 32: i % 32 + 1]})
        t1.append(time.perf_counter() - t)
    batches = [files[i: i + 32] for i in range(0, len(files) - 31, 32)]
    t = time.perf_counter()
    for b in batches:
        sess.run([LOGITS], {INPUT: np.stack([load_and_preprocess(f, pre)[1] for f in b])})
    thr = 32 * len(batches) / (time.perf_counter() - t)
    sess.run([LOGITS], {INPUT: x})
    t = time.perf_counter()
    for _ in range(5):
        sess.run([LOGITS], {INPUT: x})
    thr_model = 5 * 32 / (time.perf_counter() - t)
    return {
        "architecture": f"densenet201 at {PAPER_SIZE} px + PaperHead (BN -> GAP -> Dense 128 "
                        "ReLU -> Dropout -> Dense 8), training.backbones + heads",
        "weights": "random (seed 0): timing only, the outputs mean nothing",
        "inputs": f"the same real photos, decoded and preprocessed at {PAPER_SIZE} px",
        "onnx": {"opset": OPSET, "input": INPUT, "dynamic_batch": True,
                 "mb": path.stat().st_size / 1e6, "export_s": export_s},
        "params_m": params / 1e6,
        "network_gflop": network_flops(path) / 1e9,
        "threads": "ONNX Runtime default (one per core)",
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
        "batch32_images_per_s": thr, "model_only_p50_ms": pct(t1, 50),
        "model_only_batch32_images_per_s": thr_model,
    }


def bench_api(model: Path, n: int, levels: tuple[int, ...] = (1, 4, 16),
              warmup: int = 20) -> dict[str, Any]:
    """`kulit serve` on a free loopback port, real photo uploads at each concurrency level;
    the server and client code of benchmarks/serve.py, imported."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import serve

    bodies = [serve.multipart(name, data) for name, data in serve.sample_photos(64, 0)]
    port = serve.free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc = serve.start_server(model.resolve(), port, log)
        try:
            health = serve.wait_healthy(base, proc, log)
            mem = serve.MemorySampler(proc.pid)
            mem.sample()
            idle_mb = mem.peak_rss_kb / 1024
            mem.start()
            serve.run_level(base, bodies, warmup, 1, proc.pid, mem)
            keep = ("concurrency", "requests", "errors", "status_counts", "p50_ms", "p99_ms",
                    "throughput_rps", "server_cpu_ms_per_request", "server_rss_peak_mb_sampled")
            levels_out = []
            for conc in levels:
                r = serve.run_level(base, bodies, n, conc, proc.pid, mem)
                levels_out.append({k: r[k] for k in keep})
                print(f"api c={conc}", levels_out[-1], flush=True)
            mem.stop.set()
            mem.join()
            mem.sample()
        finally:
            serve.stop_server(proc)
    return {"server": "kulit serve --host 127.0.0.1 (benchmarks/serve.py's harness)",
            "client": "same machine, one httpx.Client per thread, 64 real photos cycled",
            "startup_s": health["startup_s"], "idle_rss_mb": idle_mb, "warmup": warmup,
            "levels": levels_out,
            "server_peak_rss_mb": max(mem.peak_hwm_kb, mem.peak_rss_kb) / 1024}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


COLD = """
import sys, time
t0 = float(sys.argv[3])
from kulit.serving.predict import Predictor
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
    ap.add_argument("--folder", type=int, default=500, help="photos for `kulit predict`")
    ap.add_argument("--skip-paper", action="store_true",
                    help="skip the paper's DenseNet201-at-64-px row")
    ap.add_argument("--skip-api", action="store_true", help="skip the `kulit serve` row")
    ap.add_argument("--api-requests", type=int, default=200, help="per concurrency level")
    ap.add_argument("--split-csv", type=Path, default=REPO / "runs" / "data" / "split.csv",
                    help="split.csv whose test rows compare fp32 and int8 accuracy")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "inference.json")
    args = ap.parse_args()
    if not SKIN8.is_dir():
        sys.exit(f"error: {SKIN8} not found (the benchmark uses real skin8 photos)")
    from kulit.serving.card import load_card

    card = load_card(args.model)
    int8_file = args.model / card.files["int8"] if card.int8.get("passed") else None
    files = photos(max(args.n, args.folder))
    bench_files = files[: args.n]
    res: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "load_average_start": load(),
        "model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO)
                     else args.model),
        "int8_file": int8_file.name if int8_file else None,
        "int8_check": ({k: card.int8[k] for k in ("check", "config", "temperature")}
                       if int8_file else None),
        "images": len(bench_files),
    }
    res["cold"] = bench_cold(args.model, files[0])  # first, before this process grows
    print("cold", res["cold"], flush=True)
    variants = [("fp32", False, None), ("fp32_1thread", False, 1)]
    if int8_file:
        variants += [("int8", True, None), ("int8_1thread", True, 1)]
    res.update(bench_onnx(args.model, bench_files, variants))
    for key, _, _ in variants:
        print(key, res[key], flush=True)
    res["onnxruntime"] = res["fp32"]  # the key earlier results used
    res["torch_eager"] = bench_torch(args.run, args.model, bench_files)
    print("torch eager", res["torch_eager"], flush=True)
    best = res["int8"] if int8_file else res["fp32"]
    t = res["torch_eager"]
    res["speedup_p50"] = t["p50_ms"] / best["p50_ms"]
    if t["batch32_images_per_s"]:
        res["speedup_batch32"] = best["batch32_images_per_s"] / t["batch32_images_per_s"]
    res["floor"] = bench_floor(args.model, args.model / card.files.get("model", "model.onnx"),
                               int8_file, {"fp32": res["fp32"], "int8": res.get("int8")})
    print("floor", res["floor"], flush=True)
    folder = files[: args.folder]
    runs = [("fp32_batch32", ["--no-int8", "--workers", "1", "--batch-size", "32"]),
            ("fp32_workers", ["--no-int8"])]
    if int8_file:
        runs.append(("int8_workers", []))
    res["kulit_predict_folder"] = {k: bench_cli(args.model, folder, *o) for k, o in runs}
    print("kulit predict", res["kulit_predict_folder"], flush=True)
    res["web_encode"] = bench_encode(args.model, bench_files)
    print("web encode", res["web_encode"], flush=True)
    res["result_page"] = bench_page(args.model, bench_files)
    print("result page", res["result_page"], flush=True)
    res["test_accuracy"] = bench_test_accuracy(args.model, args.split_csv) if int8_file else None
    print("test accuracy", res["test_accuracy"], flush=True)
    if not args.skip_paper:
        with tempfile.TemporaryDirectory() as tmp:
            res["paper_densenet201_64"] = bench_paper(bench_files, Path(tmp))
        print("paper", res["paper_densenet201_64"], flush=True)
    if not args.skip_api:
        res["api"] = bench_api(args.model, args.api_requests)
        print("api peak RSS", res["api"]["server_peak_rss_mb"], flush=True)
    res["load_average_end"] = load()
    res["targets"] = {"speedup_p50_min": 3.0, "p50_ms_max": 10.0, "folder_images_per_s_min": 150,
                      "folder_peak_rss_mb_max": 300, "result_page_p50_ms_max": 25.0,
                      "api_c16_rps_min": 100, "test_balanced_accuracy_drop_max": 0.01,
                      "test_ece_rise_max": 0.01}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
