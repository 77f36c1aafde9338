"""The trust gate's scorers on the backbone's pooled features: torch-free, numpy only.

Two logistic scorers share one standardisation of the ONNX `features` output pooled over
space (GAP): `not_skin` (is this a close-up of skin at all?) and `other` (skin, but a condition
outside the model's classes?). Fitting lives in `kulit.build.gate_fit` (scikit-learn, training
extras); the cut-offs applied to these scores live in the card (`ModelCard.gate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kulit.errors import ModelError
from kulit.serving.model_dir import GATE_FILE

SCORERS = ("not_skin", "other")


@dataclass(frozen=True)
class GateScores:
    """Per image: probability-like scores in [0, 1] that the photo is not skin / none of these."""

    not_skin: np.ndarray  # [N]
    other: np.ndarray  # [N]


@dataclass(frozen=True)
class Gate:
    """Standardise pooled features, then one logistic scorer per name in SCORERS."""

    mean: np.ndarray  # [D]
    scale: np.ndarray  # [D]
    weights: dict[str, np.ndarray]  # name -> [D]
    biases: dict[str, float]  # name -> intercept

    def scores(self, pooled: np.ndarray) -> GateScores:
        z = (np.asarray(pooled, np.float64) - self.mean) / self.scale
        out = {}
        for name in SCORERS:
            s = z @ self.weights[name] + self.biases[name]
            out[name] = 1.0 / (1.0 + np.exp(-np.clip(s, -60, 60)))
        return GateScores(**out)


def save_gate(gate: Gate, model_dir: Path) -> Path:
    return write_gate_file(gate, Path(model_dir) / GATE_FILE)


def write_gate_file(gate: Gate, path: Path) -> Path:
    """The gate's arrays as one .npz (a build writes it through ModelDir.write_gate)."""
    arrays = {"mean": gate.mean, "scale": gate.scale}
    for name in SCORERS:
        arrays[f"w_{name}"] = gate.weights[name]
        arrays[f"b_{name}"] = np.array(gate.biases[name])
    np.savez(path, **arrays)
    return path


def load_gate(model_dir: Path) -> Gate | None:
    """The model directory's gate, or None when it has none (an older model)."""
    path = Path(model_dir) / GATE_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return Gate(
                mean=z["mean"].astype(np.float64),
                scale=z["scale"].astype(np.float64),
                weights={n: z[f"w_{n}"].astype(np.float64) for n in SCORERS},
                biases={n: float(z[f"b_{n}"]) for n in SCORERS},
            )
    except (OSError, KeyError, ValueError) as e:
        raise ModelError(f"{path}: cannot read the gate ({e})") from None
