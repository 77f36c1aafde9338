"""The paper's step-by-step CNN walkthrough (patch, conv, sum, ReLU, flatten, dense, softmax).

Torch-free (numpy + Pillow). Every step is recomputed from its inputs, so a figure the paper
prints that does not follow from them is shown next to the correct value and flagged. The
functions return plain dicts (JSON-ready); the `format_*` functions turn them into text.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, cast

import numpy as np

from kulit.errors import ImageError, KulitError
from kulit.explain.model import (  # noqa: F401 - the model section, re-exported
    NO_MODEL_NOTE,
    PAPER_FILTERS,
    ModelExplanation,
    explain_model,
    first_layer_grid,
    grid_columns,
    resolve_model_dir,
    softmax_steps,
)
from kulit.serving.calibration import softmax

PAPER_TITLE = (
    "Penerapan Artificial Intelligence Untuk Klasifikasi Penyakit Kulit "
    "Dengan Metode CNN Berbasis Web"
)

# ---------------------------------------------------------------------------------------------
# The paper's figures, as printed. Inputs are what the walkthrough starts from; PAPER_PRINTED is
# what the paper claims each step gives, and is only ever compared against, never computed with.
# ---------------------------------------------------------------------------------------------
PAPER_INPUTS: dict[str, Any] = {
    "patch": {  # 4x4 pixels of a skin photo, rows top to bottom
        "red": [[179, 182, 179, 176], [180, 183, 180, 175], [175, 179, 177, 175],
                [185, 189, 186, 179]],
        "green": [[179, 175, 172, 185], [179, 176, 175, 184], [182, 182, 183, 175],
                  [178, 175, 176, 182]],
        "blue": [[178, 187, 188, 184], [182, 191, 192, 186], [180, 189, 191, 185],
                 [181, 181, 182, 174]],
    },
    "kernel": [[1, 0, -1], [1, 0, -1], [1, 0, -1]],  # same kernel on every channel
    "stride": 1,
    "padding": 0,
    # The dense weights are not in the paper, so its two dense outputs are taken as given.
    "dense_outputs": [8.918, 26.754],  # O1, O2
}

PAPER_PRINTED: dict[str, Any] = {
    "conv": {
        "red": [[-2, 18], [-3, 22]],
        "green": [[10, -11], [5, -8]],
        "blue": [[-31, 12], [-22, 16]],
    },
    "sum": [[-23, 19], [-22, 30]],
    "relu": [[0, 19], [0, 30]],
    "flatten": [0, 19, 0, 30],
    "softmax": [0.3, 0.7],
}

# Decimals the paper prints each step with: a figure is right if the true value rounds to it.
PAPER_DECIMALS: dict[str, int] = {"conv": 0, "sum": 0, "relu": 0, "flatten": 0, "softmax": 1}

CHANNELS = ("red", "green", "blue")
PATCH_SIZE = 4  # the walkthrough's patch side, for the paper and for a photo alike


# ---------------------------------------------------------------------------------------------
# Numeric steps
# ---------------------------------------------------------------------------------------------
def conv2d_valid(patch: np.ndarray, kernel: np.ndarray, stride: int = 1) -> np.ndarray:
    """Cross-correlate `patch` (HxW or HxWxC) with `kernel` (kxk or kxkxC), no padding.

    Returns Ho x Wo (2-D input) or Ho x Wo x C: one map per channel, not summed, because the
    walkthrough shows each channel before adding them. Integer inputs give exact integers.
    """
    x = np.asarray(patch)
    k = np.asarray(kernel)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if x.ndim not in (2, 3):
        raise ValueError(f"patch must be HxW or HxWxC, got shape {x.shape}")
    dtype = np.int64 if (x.dtype.kind in "iub" and k.dtype.kind in "iub") else np.float64
    x = x.astype(dtype)
    k = k.astype(dtype)
    flat = x.ndim == 2
    if flat:
        x = x[:, :, None]
    if k.ndim == 2:
        k = np.repeat(k[:, :, None], x.shape[2], axis=2)
    if k.ndim != 3 or k.shape[2] != x.shape[2]:
        raise ValueError(f"kernel shape {np.shape(kernel)} does not fit patch shape {x.shape}")
    kh, kw = k.shape[:2]
    if kh > x.shape[0] or kw > x.shape[1]:
        raise ValueError(f"kernel {kh}x{kw} is larger than patch {x.shape[0]}x{x.shape[1]}")
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))
    windows = windows[::stride, ::stride]  # Ho x Wo x C x kh x kw
    out = np.einsum("ijcab,abc->ijc", windows, k)
    return cast("np.ndarray", out[:, :, 0] if flat else out)


def relu(x: np.ndarray) -> np.ndarray:
    """max(0, x), elementwise."""
    return cast("np.ndarray", np.maximum(np.asarray(x), 0))


def conv_steps(patch_hwc: np.ndarray, kernel: np.ndarray, stride: int = 1) -> dict[str, Any]:
    """Run conv (per channel), sum over channels, ReLU and flatten; return each step as lists."""
    per_channel = conv2d_valid(patch_hwc, kernel, stride)  # Ho x Wo x 3
    summed = per_channel.sum(axis=2)
    activated = relu(summed)
    return {
        "conv": {c: per_channel[:, :, i].tolist() for i, c in enumerate(CHANNELS)},
        "sum": summed.tolist(),
        "relu": activated.tolist(),
        "flatten": activated.reshape(-1).tolist(),  # row-major, as the paper reads it
    }


def _patch_hwc(patch: dict[str, list[list[int]]]) -> np.ndarray:
    return np.stack([np.asarray(patch[c]) for c in CHANNELS], axis=2)


# ---------------------------------------------------------------------------------------------
# The paper's worked example
# ---------------------------------------------------------------------------------------------
def _agrees(paper: float, correct: float, decimals: int) -> bool:
    return round(float(correct), decimals) == round(float(paper), decimals)


def _compare(step: str, paper: Any, correct: Any, decimals: int) -> list[dict[str, Any]]:
    """One entry per cell where the paper's figure is not the correct value at its precision."""
    p, c = np.asarray(paper, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if p.shape != c.shape:
        return [{"step": step, "position": None, "paper": paper, "correct": correct}]
    out = []
    for idx in np.ndindex(p.shape):
        if not _agrees(p[idx], c[idx], decimals):
            out.append({
                "step": step,
                "position": list(idx),
                "paper": np.asarray(paper)[idx].item(),
                "correct": np.asarray(correct)[idx].item(),
            })
    return out


def paper_walkthrough() -> dict[str, Any]:
    """Recompute every step of the paper's example and list each printed figure that is wrong.

    Discrepancies are `{step, position, paper, correct}` with step one of conv.red, conv.green,
    conv.blue, sum, relu, flatten, softmax, and position the [row, col] or [index] of the cell.
    """
    steps = conv_steps(
        _patch_hwc(PAPER_INPUTS["patch"]), np.asarray(PAPER_INPUTS["kernel"]),
        PAPER_INPUTS["stride"],
    )
    outputs = [float(v) for v in PAPER_INPUTS["dense_outputs"]]
    probs = softmax(np.asarray(outputs, dtype=np.float64))
    steps["dense"] = {
        "outputs": outputs,
        "given": True,
        "note": "O = W·x + b with x the flattened vector; the paper does not give W and b, "
                "so O1 and O2 are taken as printed.",
    }
    steps["softmax"] = probs.tolist()

    discrepancies: list[dict[str, Any]] = []
    for c in CHANNELS:
        discrepancies += _compare(f"conv.{c}", PAPER_PRINTED["conv"][c], steps["conv"][c],
                                  PAPER_DECIMALS["conv"])
    for name in ("sum", "relu", "flatten", "softmax"):
        discrepancies += _compare(name, PAPER_PRINTED[name], steps[name], PAPER_DECIMALS[name])

    # Is the paper's sum at least consistent with its own per-channel figures?
    own_sum = np.sum([PAPER_PRINTED["conv"][c] for c in CHANNELS], axis=0)
    for d in discrepancies:
        if d["step"] == "sum":
            r, col = d["position"]
            parts = [PAPER_PRINTED["conv"][c][r][col] for c in CHANNELS]
            d["note"] = (f"the paper's own channel figures {parts[0]} + {parts[1]} + {parts[2]} "
                         f"= {int(own_sum[r][col])}")
        elif d["step"] == "softmax":
            d["note"] = f"softmax({outputs[0]}, {outputs[1]})"

    paper_p = PAPER_PRINTED["softmax"]
    return {
        "source": "paper",
        "title": PAPER_TITLE,
        "inputs": {
            "patch": PAPER_INPUTS["patch"],
            "kernel": PAPER_INPUTS["kernel"],
            "stride": PAPER_INPUTS["stride"],
            "padding": PAPER_INPUTS["padding"],
        },
        "steps": steps,
        "paper": PAPER_PRINTED,
        "softmax_check": {
            "logit_gap_given": outputs[1] - outputs[0],
            # softmax gives p2/p1 = exp(O2 - O1), so 0.3/0.7 needs O2 - O1 = ln(0.7 / 0.3).
            "logit_gap_for_paper_softmax": math.log(paper_p[1] / paper_p[0]),
        },
        "discrepancies": discrepancies,
    }


# ---------------------------------------------------------------------------------------------
# A photo
# ---------------------------------------------------------------------------------------------
def parse_at(text: str) -> tuple[int, int]:
    """Parse "X,Y" (pixel column, row) into integers, or raise KulitError."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y = (int(p) for p in parts)
    except ValueError:
        raise KulitError(f"--at wants X,Y in whole pixels (e.g. 120,80), got {text!r}",
                         code="bad_position") from None
    return x, y


def load_rgb_patch(image: Any, at: tuple[int, int] | None
                   ) -> tuple[np.ndarray, tuple[int, int], tuple[int, int], str | None]:
    """Decode (EXIF-upright, RGB) and cut the 4x4 patch; return patch, (x, y), (w, h), name.

    A JPEG over the pixel limit is decoded DCT-reduced until it fits (as `kulit predict` takes
    it); (w, h) and the patch position are then in that reduced image."""
    from PIL import Image

    from kulit.serving.preprocess import decode_image, upright

    name = str(image) if isinstance(image, (str, Path)) else None
    img = image if isinstance(image, Image.Image) else decode_image(image, fit_pixels=True)
    img = upright(img)

    w, h = img.size
    if w < PATCH_SIZE or h < PATCH_SIZE:
        raise ImageError(f"image is {w}x{h}; the walkthrough needs at least "
                         f"{PATCH_SIZE}x{PATCH_SIZE} pixels", code="too_small")
    if at is None:
        x, y = (w - PATCH_SIZE) // 2, (h - PATCH_SIZE) // 2  # patch centred on the photo
    else:
        x, y = at
        if not (0 <= x <= w - PATCH_SIZE and 0 <= y <= h - PATCH_SIZE):
            raise KulitError(
                f"--at {x},{y} is outside the image: for a {w}x{h} image the "
                f"{PATCH_SIZE}x{PATCH_SIZE} patch's top-left X must be 0..{w - PATCH_SIZE} "
                f"and Y 0..{h - PATCH_SIZE}", code="bad_position")
    # Cropping before converting is pixel-for-pixel the same and avoids converting a big photo.
    patch = img.crop((x, y, x + PATCH_SIZE, y + PATCH_SIZE)).convert("RGB")
    return np.asarray(patch, dtype=np.int64), (x, y), (w, h), name


def _sandboxed_patch(image: Any, at: tuple[int, int] | None, predictor: Any
                     ) -> tuple[np.ndarray, tuple[int, int], tuple[int, int], str | None]:
    """`load_rgb_patch` in a decode worker: the predictor's pool, or the process's own."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return load_rgb_patch(image, at)
    from kulit.serving.decode_sandbox import shared_pool

    pool = getattr(predictor, "decoder", None) or shared_pool()
    result: tuple[np.ndarray, tuple[int, int], tuple[int, int], str | None] = pool.patch(image, at)
    return result


def explain_image(image: str | Path | bytes | Any, model_dir: str | Path | None = None,
                  at: tuple[int, int] | None = None, *, predictor: Any = None) -> dict[str, Any]:
    """Run the paper's numeric steps on a 4x4 patch of a photo (default: its centre), then,
    given a model (a directory or a loaded `Predictor`), the real model's steps on the photo.

    `at` is the patch's top-left pixel (x = column, y = row) in the upright image.
    """
    return explain_photo(image, model_dir, at, predictor=predictor)[0]


def explain_photo(image: str | Path | bytes | Any, model_dir: str | Path | None = None,
                  at: tuple[int, int] | None = None, *, predictor: Any = None,
                  patch_on_crop: bool = False
                  ) -> tuple[dict[str, Any], ModelExplanation | None]:
    """Like `explain_image`, also returning the arrays (maps, heatmap, crop) for rendering.

    With `patch_on_crop` (and a model) the patch is cut from the square crop the model saw,
    not from the photo, so every picture on a page refers to the same image.
    """
    if predictor is None and model_dir is not None:
        from kulit.serving.decode_sandbox import shared_pool
        from kulit.serving.predict import Predictor

        predictor = Predictor(model_dir)
        predictor.decoder = shared_pool()  # a file is decoded in a worker with hard limits
    explained: ModelExplanation | None = None
    on_crop = patch_on_crop and predictor is not None
    if on_crop:
        explained = explain_model(predictor, image)
        patch, (x, y), (w, h), _ = load_rgb_patch(explained.prediction.image, at)
        name = str(image) if isinstance(image, (str, Path)) else None
    else:
        patch, (x, y), (w, h), name = _sandboxed_patch(image, at, predictor)  # fail fast
    kernel = np.asarray(PAPER_INPUTS["kernel"])
    result: dict[str, Any] = {
        "source": "image",
        "image": {"path": name, "width": w, "height": h, "crop": on_crop},
        "at": [x, y],
        "inputs": {
            "patch": {c: patch[:, :, i].tolist() for i, c in enumerate(CHANNELS)},
            "kernel": kernel.tolist(),
            "stride": 1,
            "padding": 0,
        },
        "steps": conv_steps(patch, kernel, stride=1),
        "model": None,
    }
    if predictor is not None and explained is None:
        explained = explain_model(predictor, image)
    if explained is not None:
        result["model"] = explained.summary
    return result, explained


_NUM_LIST = re.compile(r"\[\s*(-?[0-9][-0-9.eE+]*(?:,\s*-?[0-9][-0-9.eE+]*)*)\s*\]")


def to_json(d: dict[str, Any]) -> str:
    """Indented JSON with each innermost list of numbers on one line (a table row per line)."""
    plain = json.dumps(d, indent=2, ensure_ascii=False)
    compact = _NUM_LIST.sub(lambda m: "[" + ", ".join(re.split(r",\s*", m.group(1))) + "]",
                            plain)
    try:  # a string value that looks like a list must not be altered
        return compact if json.loads(compact) == d else plain
    except ValueError:
        return plain
