"""The real model on a photo, step by step: the first layer's maps, the softmax with its
temperature, the answer; every number checked against what `kulit predict` gives. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kulit.config import DEFAULT_MODEL_DIR, TOP_K

# ---------------------------------------------------------------------------------------------
# The real model on a photo
# ---------------------------------------------------------------------------------------------
PAPER_FILTERS = 32  # the paper's example says its first convolution layer has 32 filters
PREVIEW_SIDE = 8  # first-layer maps go into JSON as at most 8x8 block averages
PROBS_ATOL = 1e-9  # the step-by-step softmax must reproduce Predictor's probabilities
NO_MODEL_NOTE = (
    "No model found at {path}, so only the patch steps are shown. Train and export one "
    "(kulit train, then kulit export RUN --out {path}) or pass --model DIR."
)


@dataclass
class ModelExplanation:
    """The model section (JSON-ready) plus the arrays a page draws: maps, heatmap, crop."""

    summary: dict[str, Any]
    maps: np.ndarray  # first conv layer after its norm and activation, [F, h, w]
    prediction: Any  # kulit.serving.predict.Prediction with .heatmap and .image (the crop)
    answer: Any = None  # kulit.serving.answer.Answer: what a person is told (status, see a doctor)


def resolve_model_dir(model: str | Path | None) -> tuple[Path | None, str | None]:
    """An explicit --model is used as given; without it, models/kulit-skin8 if it exists.

    Returns (model dir or None, a one-line note when no model is used).
    """
    if model is not None:
        return Path(model), None
    if Path(DEFAULT_MODEL_DIR).is_dir():
        return Path(DEFAULT_MODEL_DIR), None
    return None, NO_MODEL_NOTE.format(path=DEFAULT_MODEL_DIR)


def softmax_steps(logits: np.ndarray | list[float], temperature: float) -> dict[str, Any]:
    """p_i = exp(z_i / T) / sum_j exp(z_j / T), each intermediate kept (float64).

    If some |z / T| exceeds 50, every z / T is first shifted by its maximum (recorded as
    `shift`): the probabilities are the same and exp cannot overflow.
    """
    z = np.asarray(logits, dtype=np.float64)
    scaled = z / float(temperature)
    shift = float(scaled.max()) if np.abs(scaled).max() > 50 else 0.0
    e = np.exp(scaled - shift)
    total = float(e.sum())
    return {
        "temperature": float(temperature),
        "logits": z.tolist(),
        "scaled": scaled.tolist(),
        "shift": shift,
        "exp": e.tolist(),
        "sum": total,
        "probs": (e / total).tolist(),
    }


def _block_preview(m: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """Average a map down to at most `side` a side, keeping its shape (Pillow's BOX filter)."""
    from PIL import Image

    h, w = m.shape
    if max(h, w) <= side:
        return m.astype(np.float64)
    size = (max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w))))
    img = Image.fromarray(np.ascontiguousarray(m, dtype=np.float32), "F")
    return np.asarray(img.resize(size, Image.Resampling.BOX), dtype=np.float64)


def explain_model(predictor: Any, image: str | Path | bytes | Any) -> ModelExplanation:
    """The real model on the photo: its first layer's maps and its softmax, step by step.

    The probabilities are recomputed here from the logits and checked against what
    `Predictor.predict_one` (and so `kulit predict`) returns for the same photo.
    """
    from kulit.serving.answer import answer_for

    card = predictor.card
    # One network pass gives the answer, the heatmap's feature map and the first layer.
    pred = predictor.predict_one(image, top_k=TOP_K, heatmap=True, first_layer=True)
    first = pred.first_layer if pred.first_layer is not None else predictor.first_layer(pred.image)
    maps = np.asarray(first, dtype=np.float32)
    f, h, w = maps.shape
    size = card.preprocessing.input_size

    soft = softmax_steps(pred.logits, predictor.temperature)  # int8 has its own
    diff = float(np.abs(np.asarray(soft["probs"]) - pred.probs).max())
    if diff > PROBS_ATOL:  # a bug, not a user error: the two paths must agree
        raise RuntimeError(f"step-by-step softmax differs from Predictor by {diff:.3g}")

    answer = answer_for(pred, card)
    flat = maps.reshape(f, -1).astype(np.float64)
    previews = [_block_preview(m) for m in maps]
    summary: dict[str, Any] = {
        "name": card.name,
        "backbone": card.backbone,
        "classes": list(card.classes),
        "input_size": size,
        "first_layer": {
            "filters": f,
            "height": h,
            "width": w,
            "stride": round(size / h, 3) if h else None,
            "paper_filters": PAPER_FILTERS,
            "note": f"the paper's example mentions {PAPER_FILTERS} filters; this model's "
                    f"first layer has {f}",
            "stats": {"mean": np.round(flat.mean(axis=1), 4).tolist(),  # one per filter
                      "min": np.round(flat.min(axis=1), 4).tolist(),
                      "max": np.round(flat.max(axis=1), 4).tolist()},
            "preview": {"height": previews[0].shape[0], "width": previews[0].shape[1],
                        "maps": [np.round(p, 3).tolist() for p in previews]},
        },
        "softmax": soft,
        "threshold": float(card.threshold),
        **answer.to_dict(),  # the one answer-to-JSON, as the API and `kulit predict --json`
        "heatmap": None if pred.heatmap is None else np.round(pred.heatmap, 3).tolist(),
        "check": {"against": "kulit predict",
                  "max_abs_diff": diff, "agrees": True},
    }
    return ModelExplanation(summary=summary, maps=maps, prediction=pred, answer=answer)


def grid_columns(f: int) -> int:
    """Columns for f tiles: about square, preferring a full last row (32 -> 8 x 4, 8 -> 4 x 2)."""
    c0 = math.ceil(math.sqrt(f))
    return next((c for c in range(c0, 2 * c0 + 1) if f % c == 0), c0)


def first_layer_grid(maps: np.ndarray, cols: int | None = None, scale: int = 1,
                     gap: int = 1, gap_value: int = 255, max_tile: int | None = None) -> Any:
    """Tile first-layer maps [F, h, w] into one greyscale PIL image, each map min-max scaled.

    Row-major in filter order, `cols` per row (default: `grid_columns`), `gap` pixels between
    tiles. `max_tile` first box-averages larger maps down to that side (a smaller page);
    `scale` enlarges each pixel to a scale x scale block (tiny maps). A constant map is black.
    """
    from PIL import Image

    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[0] == 0:
        raise ValueError(f"maps must be [F, h, w] with F >= 1, got shape {maps.shape}")
    if max_tile is not None and max(maps.shape[1:]) > max_tile:
        maps = np.stack([_block_preview(m, max_tile) for m in maps])
    f, h, w = maps.shape
    cols = cols or grid_columns(f)
    rows = math.ceil(f / cols)
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    norm = np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1.0), 0.0)
    tiles = np.round(norm * 255).astype(np.uint8)
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    grid = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), gap_value,
                   dtype=np.uint8)
    for i in range(f):
        r, c = divmod(i, cols)
        grid[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tiles[i]
    return Image.fromarray(grid, "L")
