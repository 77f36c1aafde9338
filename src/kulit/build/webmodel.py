"""The browser model: model.onnx wrapped so the page needs no preprocessing or maths of its own.

`build_web_model` prepends to the served graph what `preprocess.normalize` does (uint8 RGB
NHWC -> pixel * scale + offset -> logo mask -> NCHW) and appends temperature + softmax, the
trust gate's two logistic scorers on the pooled features (when the model dir has gate.npz) and
the Grad-CAM maps of a linear head. The mirror TTA is already inside the served graph.

The served graph is the one the server runs (`kulit.serving.model_dir.served_file`): the static
int8 file when it passed `kulit quantize`'s check, so browser and server give the same
answers. Without one, the browser runs model.onnx as it is (fp32, the same numbers as the
server); `weights="int8-weights"` stores conv weights as int8 per output channel with a
DequantizeLinear in front instead (a smaller download that no longer matches exactly).
Needs `onnx`.

The JSON the page's answer rule runs on (`device_config`) is served, so it lives in
`kulit.serving.device`.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from kulit.build.webquality import quality_nodes
from kulit.errors import ModelError
from kulit.serving.card import load_card
from kulit.serving.device import WEB_INPUT, device_config, measures_quality  # noqa: F401
from kulit.serving.gate import SCORERS, load_gate
from kulit.serving.model_dir import HEAD_FILE, WEB_ONNX_FILE, served_file
from kulit.serving.preprocess import Preprocessing, normalize, normalize_affine

WEB_OUTPUTS = ("probs", "gate", "cam")  # gate only with gate.npz, cam only with a linear head
WEIGHTS = ("int8", "fp32", "int8-weights")  # int8: the served graph, int8 if served
MIN_QUANT_SIZE = 256  # smaller conv kernels stay float32: too few bytes to matter


def mask_from_normalize(p: Preprocessing) -> np.ndarray:
    """[S, S, 1] float32, 0 inside the logo box; read off `normalize` itself, not retyped.

    A black crop never normalises to 0 (mean > 0), so every exact zero is the mask box.
    """
    black = Image.new("RGB", (p.input_size, p.input_size), (0, 0, 0))
    out = normalize(black, p)  # [3, S, S]
    if float(np.min(p.mean)) <= 0.0:
        raise ModelError("cannot locate the mask box: the card's mean has a zero channel")
    return cast("np.ndarray", (out[0] != 0.0).astype(np.float32)[:, :, None])


def _const(name: str, arr: np.ndarray) -> Any:
    from onnx import numpy_helper
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def _quantise_weights(graph: Any) -> int:
    """Conv kernels -> int8 per output channel + DequantizeLinear under the old name."""
    from onnx import helper, numpy_helper

    conv_w = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    # the mirror pass reads the same kernels through Identity nodes
    conv_w |= {n.input[0] for n in graph.node if n.op_type == "Identity"
               and any(n.output[0] == w for w in conv_w)}
    keep, dq_nodes, n = [], [], 0
    for init in graph.initializer:
        w = numpy_helper.to_array(init)
        if init.name not in conv_w or w.dtype != np.float32 or w.ndim != 4 \
                or w.size < MIN_QUANT_SIZE:
            keep.append(init)
            continue
        peak = np.abs(w).reshape(w.shape[0], -1).max(1)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
        keep += [_const(init.name + "_q", q), _const(init.name + "_s", scale),
                 _const(init.name + "_z", np.zeros_like(q, shape=scale.shape))]
        dq_nodes.append(helper.make_node(
            "DequantizeLinear", [init.name + "_q", init.name + "_s", init.name + "_z"],
            [init.name], name=init.name + "_dq", axis=0))
        n += 1
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(dq_nodes + nodes)
    return n


def build_web_model(model_dir: Path, out: Path | None = None, weights: str = "int8") -> Path:
    """model_dir/model.onnx (+ card, gate.npz, head.npz) -> model-web.onnx; checks itself."""
    import onnx
    from onnx import TensorProto, helper

    if weights not in WEIGHTS:
        raise ModelError(f"weights must be one of {WEIGHTS}, not {weights!r}")
    model_dir = Path(model_dir)
    card = load_card(model_dir)
    precision, src, temperature = served_file(model_dir, card, int8=weights != "fp32")
    if not src.is_file():
        raise ModelError(f"{model_dir} is not a kulit model: {src.name} is missing")
    m = onnx.load(str(src))
    g = m.graph
    p = card.preprocessing
    s = p.input_size
    old_in = g.input[0].name

    # prepend: exactly normalize()'s float32 steps, in its order
    scale, offset = normalize_affine(p)
    pre_inits = [_const("web_scale", scale), _const("web_offset", offset)]
    pre = [
        helper.make_node("Cast", [WEB_INPUT], ["web_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["web_f", "web_scale"], ["web_s"]),
        helper.make_node("Add", ["web_s", "web_offset"], ["web_n"]),
    ]
    last = "web_n"
    if p.mask_box is not None:
        pre_inits.append(_const("web_mask", mask_from_normalize(p)))
        pre.append(helper.make_node("Mul", [last, "web_mask"], ["web_m"]))
        last = "web_m"
    pre.append(helper.make_node("Transpose", [last], [old_in], perm=[0, 3, 1, 2]))

    # append: calibrated probabilities, gate scores, class activation maps
    post_inits = [_const("web_temp", np.array(temperature, np.float32))]
    post = [helper.make_node("Div", ["logits", "web_temp"], ["web_scaled"]),
            helper.make_node("Softmax", ["web_scaled"], ["probs"], axis=1)]
    n_cls = len(card.classes)
    outs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n_cls])]
    gate = load_gate(model_dir)
    if gate is not None:
        # (pooled - mean) / scale @ w + b  ==  pooled @ (w / scale) + (b - (mean / scale) @ w)
        w = np.stack([gate.weights[k] / gate.scale for k in SCORERS], axis=1)
        b = np.array([gate.biases[k] - (gate.mean / gate.scale) @ gate.weights[k]
                      for k in SCORERS])
        post_inits += [_const("web_gate_w", w.astype(np.float32)),
                       _const("web_gate_b", b.astype(np.float32))]
        post += [helper.make_node("ReduceMean", ["features"], ["web_pooled"], axes=[2, 3],
                                  keepdims=0),  # opset 17: axes is an attribute
                 helper.make_node("Gemm", ["web_pooled", "web_gate_w", "web_gate_b"],
                                  ["web_gate_s"]),
                 helper.make_node("Sigmoid", ["web_gate_s"], ["gate"])]
        outs.append(helper.make_tensor_value_info("gate", TensorProto.FLOAT, ["N", 2]))
    if measures_quality(s):  # the photo-quality measures, as the server takes them
        q_nodes, q_inits, q_out = quality_nodes(WEB_INPUT, s)
        post += q_nodes
        post_inits += q_inits
        outs.append(q_out)
    head_path = model_dir / HEAD_FILE
    if card.head == "linear" and head_path.is_file():
        with np.load(head_path) as z:
            fc_w = z["fc_w"].astype(np.float32)
        post_inits.append(_const("web_cam_w", fc_w[:, :, None, None]))
        post.append(helper.make_node("Conv", ["features", "web_cam_w"], ["cam"]))
        outs.append(helper.make_tensor_value_info("cam", TensorProto.FLOAT,
                                                  ["N", n_cls, "h", "w"]))

    nodes = list(g.node)
    del g.node[:]
    g.node.extend(pre + nodes + post)
    g.initializer.extend(pre_inits + post_inits)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info(WEB_INPUT, TensorProto.UINT8, ["N", s, s, 3]))
    del g.output[:]
    g.output.extend(outs)
    onnx.checker.check_model(m)
    # the surgery is checked against the served graph (weight-only int8 is judged on photos by
    # benchmarks/device.py)
    check_web_model(model_dir, m.SerializeToString(), atol=1e-4, int8=precision == "int8")
    kind = "static int8, the server's" if precision == "int8" else weights
    # the browser runs the graph the server serves; weight-only int8 (a smaller download that
    # no longer matches the server's numbers exactly) only when asked for by name
    if weights == "int8-weights" and precision == "fp32":
        _quantise_weights(g)
        onnx.checker.check_model(m)
        kind = "weight-only int8"
    m.doc_string = f"kulit browser model ({kind} graph) from {card.name}"
    out = Path(out) if out else model_dir / WEB_ONNX_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out))
    # the server sends this copy to browsers that accept gzip (kulit.web.routes_device)
    with gzip.open(out.with_name(out.name + ".gz"), "wb", compresslevel=9) as f:
        f.write(out.read_bytes())
    return out


def check_web_model(model_dir: Path, web_model: Path | bytes, atol: float,
                    int8: bool = False) -> float:
    """Run both models on a few synthetic crops; raise if the probabilities differ by > atol."""
    from kulit.serving.calibration import softmax
    from kulit.serving.predict import Predictor

    pred = Predictor(model_dir, threads=1, int8=int8)  # the graph the browser model wraps
    web = web_session(web_model)
    rng = np.random.default_rng(0)
    s = pred.card.preprocessing.input_size
    crops = rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8)
    batch = np.stack([normalize(Image.fromarray(c), pred.card.preprocessing) for c in crops])
    logits, _ = pred.run(batch)
    want = softmax(logits.astype(np.float64) / pred.temperature)
    got = web.run(["probs"], {WEB_INPUT: crops})[0]
    diff = float(np.abs(got - want).max())
    if not diff <= atol:
        raise ModelError(f"the browser model differs from model.onnx by {diff:.2g}")
    return diff


def web_session(model: Path | bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
