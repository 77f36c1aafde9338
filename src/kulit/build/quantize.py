"""Model dir -> model-int8.onnx beside model.onnx: static int8, checked against fp32 first.

Static QDQ quantisation with per-channel weights (ONNX Runtime's `quantize_static`), activation
ranges calibrated on training photos only. The int8 model's temperature is fitted on its own
validation logits for the check figures (the served temperature is the gate step's, see
`kulit.serving.model_dir`). It must agree with fp32 on the validation photos of every source (top-1
agreement, balanced accuracy) or nothing is written. Dynamic and per-tensor int8 lost 8-12
points of balanced accuracy on skin8: this module offers neither. Torch-free.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from kulit.build.metrics import balanced_accuracy, expected_calibration_error
from kulit.config import QuantizeConfig
from kulit.errors import KulitError
from kulit.serving.calibration import fit_temperature, softmax
from kulit.serving.card import FEATURES, INPUT, LOGITS, load_card
from kulit.serving.model_dir import INT8_FILE, ONNX_FILE, ModelDir, file_sha256
from kulit.serving.preprocess import Preprocessing, load_and_preprocess

Progress = Callable[[int, int], None]


class QuantizeError(KulitError):
    """The int8 model failed its check against fp32 (or could not be made); nothing written."""

    code = "quantize_failed"

    def __init__(self, message: str, entry: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.entry = entry or {}  # the check figures, when the check ran


def pick_calibration(rows: Sequence[Any], n: int, seed: int) -> list[Any]:
    """`n` training rows, seeded, taking classes (and sources) in turn so each is present."""
    train = sorted((r for r in rows if r.split == "train"), key=lambda r: r.file)
    rng = np.random.default_rng(seed)
    strata: dict[tuple[str, str], list[Any]] = {}
    for i in rng.permutation(len(train)):
        r = train[int(i)]
        strata.setdefault((r.label, r.source), []).append(r)
    queues = [strata[k] for k in sorted(strata)]
    picked: list[Any] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    return picked


def preprocess_files(paths: Sequence[Path], pre: Preprocessing) -> np.ndarray:
    """The serving path's decode + preprocess for each file -> [N,3,S,S] float32."""
    return np.stack([load_and_preprocess(p, pre)[1] for p in paths]).astype(np.float32)


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed images, one at a time."""

    def __init__(self, x: np.ndarray) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = ({"image": x[i: i + 1]} for i in range(len(x)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def conv_kernels(onnx_path: Path) -> list[tuple[str, str]]:
    """(node name, weight name) of every Conv, in graph order (TTA views share weights)."""
    import onnx

    return [(n.name, n.input[1]) for n in onnx.load(str(onnx_path)).graph.node
            if n.op_type == "Conv"]


def quantize_onnx(src: Path, dst: Path, calib: np.ndarray,
                  fp32_kernels: set[str] | None = None) -> None:
    """Static QDQ int8 (uint8 activations, int8 per-channel weights) calibrated on `calib`.
    The convs whose weights are in `fp32_kernels` stay fp32 (default: `fp32_convs`)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        convs = conv_kernels(prepped)
        exclude = (fp32_convs(convs) if fp32_kernels is None
                   else [name for name, weight in convs if weight in fp32_kernels])
        quantize_static(
            str(prepped), str(dst), _Batches(calib), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
            # 7-bit weights: x86 CPUs without VNNI (this AVX2 one) run u8s8 through 16-bit
            # pmaddubsw sums that saturate, so with full-range weights the server's kernels
            # move P away from the graph's own arithmetic (which WebAssembly, i.e. the
            # on-device check, computes faithfully); reduce_range keeps them together
            reduce_range=True,
            extra_options={"CalibMaxIntermediateOutputs": 16},
        )


FP32_LEADING_CONVS = 2  # the stem and the first depthwise conv: see fp32_convs


def fp32_convs(convs: list[tuple[str, str]]) -> list[str]:
    """Names of the convs (node, weight) that stay fp32: the first FP32_LEADING_CONVS kernels
    (in EfficientNet-Lite the stem and the first block's depthwise conv, both at half the input
    resolution), in every view (TTA runs the same weights twice).

    Chosen by a sensitivity scan on the validation photos (`python benchmarks/quant_scan.py`,
    results/quant-scan.json; the figures are in the README's int8 section): the smallest set
    that keeps top-1 agreement with fp32 without losing balanced accuracy."""
    kernels = list(dict.fromkeys(weight for _, weight in convs))
    if len(kernels) <= FP32_LEADING_CONVS:
        return []
    keep = set(kernels[:FP32_LEADING_CONVS])
    return [name for name, weight in convs if weight in keep]


def run_logits(onnx_path: Path, x: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N,C] and the globally pooled last feature map [N,K] (what the gate scores)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits, pooled = [], []
    for i in range(0, len(x), batch):
        z, f = sess.run([LOGITS, FEATURES], {INPUT: x[i: i + batch]})
        logits.append(z)
        pooled.append(f.mean(axis=(2, 3)))
    return (np.concatenate(logits).astype(np.float64),
            np.concatenate(pooled).astype(np.float64))


def answer_agreement(model_dir: Path, card: Any, runs: dict[str, tuple[np.ndarray, np.ndarray,
                                                                        float]],
                     sources: np.ndarray) -> dict[str, float]:
    """Share of photos, per source, told the same (status, label, melanoma alert) by fp32 and
    int8 through `answer.decide` with the card's gate and cut-offs. Reported, not a gate:
    the refitted temperature moves photos across the threshold on purpose."""
    from kulit.serving.answer import Cutoffs, decide
    from kulit.serving.gate import load_gate

    gate = load_gate(model_dir)
    cut = Cutoffs.from_card(card.gate)
    told: dict[str, list[tuple[Any, ...]]] = {}
    for name, (logits, pooled, t) in runs.items():
        probs = softmax(logits / t)
        scores = gate.scores(pooled) if gate is not None else None
        told[name] = []
        for i in range(len(probs)):
            g = None if scores is None else {"not_skin": float(scores.not_skin[i]),
                                             "other": float(scores.other[i])}
            a = decide(probs[i], card.classes, card.threshold, gate=g, cutoffs=cut)
            told[name].append((a.status, a.label, a.melanoma_alert))
    same = np.array([a == b for a, b in zip(told["fp32"], told["int8"], strict=True)])
    out = {"all": float(same.mean())}
    out.update({str(s): float(same[sources == s].mean()) for s in sorted(set(sources))})
    return out


def compare(y: np.ndarray, sources: np.ndarray, fp32: np.ndarray, int8: np.ndarray,
            cfg: QuantizeConfig) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per source (and all): agreement, balanced accuracy of both; and what fails the check."""
    figures: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    k = fp32.shape[1]
    groups = [("all", np.ones(len(y), bool))]
    groups += [(str(s), sources == s) for s in sorted(set(sources))]
    for name, m in groups:
        a, b = fp32[m].argmax(1), int8[m].argmax(1)
        f = {"n": int(m.sum()), "top1_agreement": float(np.mean(a == b)),
             "balanced_accuracy_fp32": balanced_accuracy(y[m], a, k),
             "balanced_accuracy_int8": balanced_accuracy(y[m], b, k)}
        figures[name] = f
        if f["top1_agreement"] < cfg.min_agreement:
            failures.append(f"{name}: top-1 agreement {f['top1_agreement']:.3f} < "
                            f"{cfg.min_agreement}")
        drop = f["balanced_accuracy_fp32"] - f["balanced_accuracy_int8"]
        if drop > cfg.max_bacc_drop + 1e-12:
            failures.append(f"{name}: balanced accuracy drops {100 * drop:.1f} points "
                            f"(> {100 * cfg.max_bacc_drop:.1f})")
    return figures, failures


def quantize_model(model_dir: Path, split_csv: Path, data_root: Path | None = None,
                   cfg: QuantizeConfig | None = None) -> dict[str, Any]:
    """Write model-int8.onnx and its card entry into `model_dir` if it passes; else raise.

    Returns the card's `int8` entry (check figures with its temperature fit, settings)."""
    from kulit.dataprep.split import load_split
    cfg = cfg or QuantizeConfig()
    model_dir = Path(model_dir)
    card = load_card(model_dir)
    fp32_path = model_dir / card.files.get("model", ONNX_FILE)
    rows = load_split(Path(split_csv), data_root)
    calib_rows = pick_calibration(rows, cfg.calib_images, cfg.seed)
    val = [r for r in rows if r.split == "val"]
    if not calib_rows or not val:
        raise QuantizeError(f"{split_csv}: needs training photos to calibrate and validation "
                            "photos to check")
    index = {c: i for i, c in enumerate(card.classes)}
    unknown = sorted({r.label for r in val} - set(index))
    if unknown:
        raise QuantizeError(f"{split_csv}: classes {unknown} are not in the model's card")
    pre = card.preprocessing
    calib = preprocess_files([r.path for r in calib_rows], pre)
    x_val = preprocess_files([r.path for r in val], pre)
    y = np.array([index[r.label] for r in val])
    sources = np.array([r.source or "all" for r in val])

    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        tmp_int8 = Path(tmp) / INT8_FILE
        quantize_onnx(fp32_path, tmp_int8, calib)
        fp32_logits, fp32_pooled = run_logits(fp32_path, x_val)
        int8_logits, int8_pooled = run_logits(tmp_int8, x_val)
        figures, failures = compare(y, sources, fp32_logits, int8_logits, cfg)
        temperature = fit_temperature(int8_logits, y)

        def ece(z: np.ndarray, t: float) -> float:
            p = softmax(z / t)
            return float(expected_calibration_error(p.max(1), p.argmax(1) == y))

        entry: dict[str, Any] = {
            "file": INT8_FILE,
            "source_sha256": file_sha256(fp32_path),
            "check": {"split": "val", "sources": figures, "temperature": temperature,
                      "ece_fp32": ece(fp32_logits, card.temperature),
                      "ece_int8_fp32_temperature": ece(int8_logits, card.temperature),
                      "ece_int8": ece(int8_logits, temperature),
                      "answer_agreement": answer_agreement(
                          model_dir, card, {"fp32": (fp32_logits, fp32_pooled, card.temperature),
                                            "int8": (int8_logits, int8_pooled, temperature)},
                          sources),
                      # the same with the fp32 temperature: what quantisation alone changes
                      "answer_agreement_fp32_temperature": answer_agreement(
                          model_dir, card, {"fp32": (fp32_logits, fp32_pooled, card.temperature),
                                            "int8": (int8_logits, int8_pooled, card.temperature)},
                          sources)},
            "calibration": {"split": "train", "images": len(calib_rows),
                            "method": "minmax", "format": "QDQ", "weights": "int8 per-channel",
                            "activations": "uint8 per-tensor",
                            "fp32_layers": "the first two convolutions (stem, first depthwise)"},
            "config": asdict(cfg),
            "passed": not failures,
        }
        if failures:
            raise QuantizeError("int8 model not written: " + "; ".join(failures), entry)
        # a new served file: the gate, shortlist, metrics and browser model made from the
        # previous one are void
        ModelDir(model_dir).write_int8(tmp_int8, entry, card)
    return entry


def summary_lines(entry: dict[str, Any], model_dir: Path) -> list[str]:
    """A headline (the file written, or that none was) then the check figures by source."""
    if not entry:
        return []
    path = Path(model_dir) / entry["file"]
    lines = [f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), temperature on val "
             f"{entry['check']['temperature']:.3f} (`kulit gate` fits the served one)"
             if entry["passed"] else "int8 check figures:"]
    for name, f in entry["check"]["sources"].items():
        lines.append(f"  {name:<12} n={f['n']:<4} agreement {f['top1_agreement']:.3f}  "
                     f"balanced accuracy fp32 {f['balanced_accuracy_fp32']:.3f} "
                     f"int8 {f['balanced_accuracy_int8']:.3f}")
    c = entry["check"]
    lines.append(f"  ECE fp32 {c['ece_fp32']:.3f}, int8 {c['ece_int8']:.3f} "
                 f"(int8 with the fp32 temperature {c['ece_int8_fp32_temperature']:.3f})")
    lines.append("  same answer (status, label, melanoma alert; gate and cut-offs applied): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in c["answer_agreement"].items())
                 + "; with the fp32 temperature "
                 + ", ".join(f"{k} {v:.3f}"
                             for k, v in c["answer_agreement_fp32_temperature"].items()))
    return lines
