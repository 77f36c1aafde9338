"""Photo-quality measures (`kulit.serving.quality.measure`) as ONNX nodes for the browser model.

The server measures the model's centre crop: grey as Pillow converts it ("L"), bilinear to
a 128 px thumbnail (Pillow's two passes, horizontal then vertical, each rounded to 8 bits), then
sharpness (mean squared Laplacian over grey variance), brightness and the clipped fractions.
These nodes do the same on the browser model's uint8 crop input, with Pillow's own resampling
weights (read off Pillow, not retyped), so the page compares the card's limits against the same
numbers the server would (`quality` output: [N, 4] = sharpness, brightness, dark, bright).
Only for crops of 128-255 px (the server then measures the crop as is, with no box reduction).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from kulit.serving.quality import THUMB_SIDE

QUALITY_OUTPUT = "quality"
QUALITY_FIELDS = ("sharpness", "brightness", "dark_clipped", "bright_clipped")
# Pillow's "L": (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16 (ITU-R 601-2 luma)
LUMA = np.array([19595.0, 38470.0, 7471.0], np.float32)
# the thresholds of `measure`: g <= 5/255 is dark, g >= 250/255 is bright
DARK_LEVEL, BRIGHT_LEVEL = 5.0, 250.0


def resample_matrix(src: int, dst: int = THUMB_SIDE) -> np.ndarray:
    """[dst, src] weights of Pillow's bilinear resize of one row, from Pillow itself."""
    eye = np.eye(src, dtype=np.float32)
    rows = [np.asarray(Image.fromarray(eye[i][None, :], "F").resize(
        (dst, 1), Image.Resampling.BILINEAR, reducing_gap=None), np.float32)[0]
        for i in range(src)]
    return np.stack(rows, axis=1)


def quality_nodes(image_u8: str, input_size: int) -> tuple[list[Any], list[Any], Any]:
    """(nodes, initializers, output value info) computing QUALITY_FIELDS from `image_u8`."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, arr: np.ndarray) -> Any:
        return numpy_helper.from_array(np.ascontiguousarray(arr), name)

    w = resample_matrix(input_size)  # [128, S]
    lap = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32)[None, None]
    inits = [const("q_luma", LUMA), const("q_half", np.array(0.5, np.float32)),
             const("q_round", np.array(32768.0, np.float32)),
             const("q_65536", np.array(65536.0, np.float32)),
             const("q_wt", w.T.copy()), const("q_w", w),
             const("q_lo", np.array(0.0, np.float32)), const("q_hi", np.array(255.0, np.float32)),
             const("q_255", np.array(255.0, np.float32)), const("q_lap", lap),
             const("q_eps", np.array(1e-4, np.float32)),
             const("q_dark", np.array(DARK_LEVEL, np.float32)),
             const("q_bright", np.array(BRIGHT_LEVEL, np.float32)),
             const("q_axes_last", np.array([3], np.int64)),
             const("q_one", np.array([1], np.int64))]
    n = helper.make_node
    nodes = [
        n("Cast", [image_u8], ["q_f"], to=TensorProto.FLOAT),
        n("Mul", ["q_f", "q_luma"], ["q_fw"]),
        n("ReduceSum", ["q_fw", "q_axes_last"], ["q_l0"], keepdims=0),
        n("Add", ["q_l0", "q_round"], ["q_l1"]),
        n("Div", ["q_l1", "q_65536"], ["q_l2"]),
        n("Floor", ["q_l2"], ["q_grey"]),  # [N, S, S], Pillow's "L"
        # horizontal pass, rounded to 8 bits, then vertical
        n("MatMul", ["q_grey", "q_wt"], ["q_h0"]),
        n("Add", ["q_h0", "q_half"], ["q_h1"]),
        n("Floor", ["q_h1"], ["q_h2"]),
        n("Clip", ["q_h2", "q_lo", "q_hi"], ["q_h"]),  # [N, S, 128]
        n("MatMul", ["q_w", "q_h"], ["q_v0"]),
        n("Add", ["q_v0", "q_half"], ["q_v1"]),
        n("Floor", ["q_v1"], ["q_v2"]),
        n("Clip", ["q_v2", "q_lo", "q_hi"], ["q_v"]),  # [N, 128, 128] levels
        n("Div", ["q_v", "q_255"], ["q_g"]),
        n("ReduceMean", ["q_g"], ["q_mean_k"], axes=[1, 2], keepdims=1),
        n("Sub", ["q_g", "q_mean_k"], ["q_c"]),
        n("Mul", ["q_c", "q_c"], ["q_c2"]),
        n("ReduceMean", ["q_c2"], ["q_var"], axes=[1, 2], keepdims=0),
        n("Unsqueeze", ["q_g", "q_one"], ["q_g4"]),
        n("Conv", ["q_g4", "q_lap"], ["q_lapg"]),
        n("Mul", ["q_lapg", "q_lapg"], ["q_lap2"]),
        n("ReduceMean", ["q_lap2"], ["q_energy"], axes=[1, 2, 3], keepdims=0),
        n("Add", ["q_var", "q_eps"], ["q_var_eps"]),
        n("Div", ["q_energy", "q_var_eps"], ["q_sharp"]),
        n("ReduceMean", ["q_g"], ["q_mean"], axes=[1, 2], keepdims=0),
        n("LessOrEqual", ["q_v", "q_dark"], ["q_dark_b"]),
        n("Cast", ["q_dark_b"], ["q_dark_f"], to=TensorProto.FLOAT),
        n("ReduceMean", ["q_dark_f"], ["q_darkc"], axes=[1, 2], keepdims=0),
        n("GreaterOrEqual", ["q_v", "q_bright"], ["q_bright_b"]),
        n("Cast", ["q_bright_b"], ["q_bright_f"], to=TensorProto.FLOAT),
        n("ReduceMean", ["q_bright_f"], ["q_brightc"], axes=[1, 2], keepdims=0),
    ]
    for name in ("q_sharp", "q_mean", "q_darkc", "q_brightc"):
        nodes.append(n("Unsqueeze", [name, "q_one"], [name + "_1"]))
    nodes.append(n("Concat", [f"{x}_1" for x in ("q_sharp", "q_mean", "q_darkc", "q_brightc")],
                   [QUALITY_OUTPUT], axis=1))
    out = helper.make_tensor_value_info(QUALITY_OUTPUT, TensorProto.FLOAT, ["N", 4])
    return nodes, inits, out
