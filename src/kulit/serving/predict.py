"""Predictor: a model directory (model.onnx + card.json + head.npz) on ONNX Runtime. No torch.

Decoding and preprocessing come from `kulit.serving.preprocess` (the same code training uses); the
heatmap is Grad-CAM on the exported last convolutional feature map, with the head's gradient
computed in numpy from the head weights in head.npz.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from PIL import Image

from kulit.errors import ImageError, ModelError
from kulit.serving.calibration import softmax
from kulit.serving.card import (
    FEATURES,
    FIRST_LAYER,
    INPUT,
    LOGITS,
    ModelCard,
    load_card,
)
from kulit.serving.decode_sandbox import DecodePool, reduce_for_model
from kulit.serving.gate import Gate, load_gate
from kulit.serving.model_dir import HEAD_FILE, served_file
from kulit.serving.preprocess import normalize
from kulit.serving.quality import Quality, QualityLimits

ImageSource = str | Path | bytes | BinaryIO | Image.Image


@dataclass
class Prediction:
    """One image's model output: calibrated probabilities, the top-k, gate scores, quality.

    What a person is told about it (status, label or not, see a doctor) is decided by
    `kulit.serving.answer.answer_for`, not here.
    """

    classes: list[str]
    probs: np.ndarray  # calibrated, sums to 1, in card class order
    logits: np.ndarray  # raw model logits (before temperature)
    threshold: float
    top_k: int = 3
    heatmap: np.ndarray | None = None  # [h, w] in [0, 1] for the top class
    image: Image.Image | None = None  # the square crop the model saw
    first_layer: np.ndarray | None = None  # [F, h, w] first conv maps, when asked for
    source: str = ""
    timing_ms: dict[str, float] = field(default_factory=dict)
    gate: dict[str, float] | None = None  # gate scores ("not_skin", "other"), if gated
    quality: Quality | None = None  # photo-quality measures and issue of the decoded photo

    @property
    def top(self) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs, kind="stable")[: self.top_k]
        return [(self.classes[i], float(self.probs[i])) for i in order]

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def confidence(self) -> float:
        return self.top[0][1]

    @property
    def below_threshold(self) -> bool:
        """Top-1 below the card's threshold: the model's side only. Whether a person is told
        "uncertain" is the answer rule's (`Answer.uncertain`), which also weighs the shortlist, gate
        and quality; a Prediction has no JSON of its own (`Answer.to_dict` is the one)."""
        return self.confidence < self.threshold


class Predictor:
    """Load a model directory once; predict on one image or a batch, torch-free."""

    # Where files are decoded: a DecodePool (worker processes with hard limits; the server and
    # the CLI set one) or None, in this process (training tools, tests).
    decoder: DecodePool | None = None

    def __init__(self, model_dir: str | Path, threads: int | None = None,
                 max_concurrent: int = 2, *, int8: bool = True,
                 allow_spinning: bool = True) -> None:
        """`threads`: intra-op threads per run; `int8`: use the card's int8 file if it passed
        its check; `allow_spinning=False` stops idle ORT threads busy-waiting (servers)."""
        import onnxruntime as ort

        getattr(ort, "disable_telemetry_events", lambda: None)()  # privacy: see README
        # Concurrent runs on a 2-core box only queue inside ONNX Runtime while each holds its
        # own working memory; a small cap keeps throughput and bounds the server's memory.
        self._gate = threading.BoundedSemaphore(max(1, max_concurrent))
        self._local = threading.local()
        self.model_dir = Path(model_dir)
        self.card: ModelCard = load_card(self.model_dir)
        self.precision, onnx_path, self.temperature = served_file(self.model_dir, self.card,
                                                                   int8)
        if not onnx_path.is_file():
            raise ModelError(f"{self.model_dir} is not a kulit model: {onnx_path.name} is missing")
        self.onnx_path = onnx_path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # noqa: BLE001 - any ORT load failure is a bad model file
            raise ModelError(f"{onnx_path}: cannot load the ONNX model ({e})") from None
        out_names = [o.name for o in self.session.get_outputs()]
        if LOGITS not in out_names:
            raise ModelError(f"{onnx_path}: has no '{LOGITS}' output (has {out_names})")
        self._outputs = set(out_names)
        self._has_features = FEATURES in out_names
        self.head = self._load_head()
        self.pre = self.card.preprocessing
        self.quality_limits = QualityLimits.from_card(self.card.quality)
        self.gate: Gate | None = load_gate(self.model_dir)
        if self.gate is not None:
            if not self._has_features:
                raise ModelError(f"{onnx_path}: has a gate but no '{FEATURES}' output")
            k = self.session.get_outputs()[out_names.index(FEATURES)].shape[1]
            if isinstance(k, int) and k != self.gate.mean.shape[0]:
                raise ModelError(f"{self.model_dir}: the gate expects {self.gate.mean.shape[0]} "
                                 f"features, the model gives {k}")
        n_out = self.session.get_outputs()[out_names.index(LOGITS)].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.card.classes):
            raise ModelError(
                f"model has {n_out} outputs but card.json lists {len(self.card.classes)} classes"
            )

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    @property
    def model_id(self) -> str:
        return self.card.name

    def _load_head(self) -> dict[str, np.ndarray] | None:
        path = self.model_dir / HEAD_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k].astype(np.float64) for k in z.files}
        except Exception as e:  # noqa: BLE001 - zip, npy and pickle refusals all mean corrupt
            raise ModelError(f"{path}: corrupt head weights ({type(e).__name__}: {e})"[:300]
                             ) from None

    def run(
        self, batch: np.ndarray, features: bool = False, first_layer: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw ONNX run on a preprocessed batch [N,3,S,S] -> (logits, feature maps or None).

        With `first_layer`, the first conv maps of the same run land in `self.last_first_layer`
        (thread-local), so the walkthrough needs one network pass, not two.
        """
        names = [LOGITS, FEATURES] if (features and self._has_features) else [LOGITS]
        want_first = first_layer and FIRST_LAYER in self._outputs
        with self._gate:
            outs = self.session.run(names + ([FIRST_LAYER] if want_first else []),
                                    {INPUT: batch.astype(np.float32, copy=False)})
        self._local.first_layer = outs[-1] if want_first else None
        return outs[0], (outs[1] if len(names) > 1 else None)

    def first_layer(self, source: ImageSource) -> np.ndarray:
        """The first convolution layer's feature maps [F, h, w] for one image."""
        if FIRST_LAYER not in self._outputs:
            raise ModelError(f"{self.model_dir}: this model does not export its first layer")
        _, x = self.prepare(source)
        with self._gate:
            return cast("np.ndarray", self.session.run([FIRST_LAYER], {INPUT: x[None]})[0][0])

    def prepare(self, source: ImageSource) -> tuple[Image.Image, np.ndarray]:
        """Decode + preprocess one image exactly as training does. Raises ImageError."""
        crop, x, _ = self._prepare(source)
        return crop, x

    def _prepare(self, source: ImageSource) -> tuple[Image.Image, np.ndarray, Quality]:
        """prepare() plus the quality check on the decoded photo (before the crop)."""
        if self.decoder is not None and not isinstance(source, Image.Image):
            got = self.decoder.reduce_for_model(source, self.pre, self.quality_limits)
        else:  # the same function, in this process
            got = reduce_for_model(source, self.pre, self.quality_limits)
        crop = got.image()
        return crop, normalize(crop, self.pre), got.quality

    def predict(
        self, sources: Sequence[ImageSource], top_k: int = 3, heatmap: bool = False,
        first_layer: bool = False,
    ) -> list[Prediction]:
        """Predict a batch in one ONNX run. Any undecodable image raises ImageError."""
        t0 = time.perf_counter()
        prepared = [self._prepare(s) for s in sources]
        t1 = time.perf_counter()
        return self._predict_prepared(prepared, sources, top_k, heatmap, t1 - t0, first_layer)

    def predict_many(
        self, sources: Sequence[ImageSource], top_k: int = 3, heatmap: bool = False,
        batch_size: int = 32,
    ) -> list[Prediction | ImageError]:
        """Like predict, but a bad image yields its ImageError in place and the rest still run."""
        results: list[Prediction | ImageError] = []
        for i in range(0, len(sources), batch_size):
            chunk = sources[i: i + batch_size]
            t0 = time.perf_counter()
            prepared: list[tuple[Image.Image, np.ndarray, Quality]] = []
            good: list[ImageSource] = []
            slots: list[Prediction | ImageError | None] = []
            for s in chunk:
                try:
                    prepared.append(self._prepare(s))
                    good.append(s)
                    slots.append(None)
                except ImageError as e:
                    slots.append(e)
            preds = (
                self._predict_prepared(prepared, good, top_k, heatmap, time.perf_counter() - t0)
                if prepared else []
            )
            it = iter(preds)
            results.extend(next(it) if s is None else s for s in slots)
        return results

    def predict_one(self, source: ImageSource, top_k: int = 3, heatmap: bool = False,
                    first_layer: bool = False) -> Prediction:
        return self.predict([source], top_k=top_k, heatmap=heatmap, first_layer=first_layer)[0]

    def _predict_prepared(
        self, prepared: list[tuple[Image.Image, np.ndarray, Quality]],
        sources: Sequence[ImageSource], top_k: int, heatmap: bool, prep_s: float,
        first_layer: bool = False,
    ) -> list[Prediction]:
        if not prepared:
            return []
        batch = np.stack([x for _, x, _ in prepared])
        t1 = time.perf_counter()
        logits, feats = self.run(batch, features=heatmap or self.gate is not None,
                                 first_layer=first_layer)
        firsts = getattr(self._local, "first_layer", None) if first_layer else None
        t2 = time.perf_counter()
        probs = softmax(logits.astype(np.float64) / self.temperature)
        gate = None
        if self.gate is not None and feats is not None:
            gate = self.gate.scores(feats.astype(np.float64).mean(axis=(2, 3)))
        preds = []
        for i, (crop, _, quality) in enumerate(prepared):
            src = sources[i]
            p = Prediction(
                classes=self.classes, probs=probs[i], logits=logits[i],
                threshold=self.card.threshold, top_k=max(1, min(top_k, len(self.classes))),
                image=crop, source=str(src) if isinstance(src, (str, Path)) else "upload",
                quality=quality,
                gate=None if gate is None else {"not_skin": float(gate.not_skin[i]),
                                                "other": float(gate.other[i])},
            )
            if heatmap and feats is not None:
                p.heatmap = self.grad_cam(feats[i], int(np.argmax(probs[i])))
            if firsts is not None:
                p.first_layer = firsts[i]
            preds.append(p)
        t3 = time.perf_counter()
        n = len(prepared)
        for p in preds:
            p.timing_ms = {
                "preprocess": 1000 * prep_s / n,
                "inference": 1000 * (t2 - t1) / n,
                "postprocess": 1000 * (t3 - t2) / n,
            }
        return preds

    def head_gradient(self, fmap: np.ndarray, cls: int) -> np.ndarray:
        """d logit[cls] / d feature map, per channel (constant over space for a GAP head)."""
        if self.head is None:
            raise ModelError(f"{self.model_dir}: {HEAD_FILE} is missing, no heatmap possible")
        h = self.head
        hw = fmap.shape[1] * fmap.shape[2]
        if self.card.head == "linear":
            return cast("np.ndarray", h["fc_w"][cls] / hw)
        # paper head: BN(affine) -> GAP -> fc1 -> ReLU -> (dropout) -> fc2
        pooled = h["bn_scale"] * fmap.reshape(fmap.shape[0], -1).mean(1) + h["bn_shift"]
        hidden = h["fc1_w"] @ pooled + h["fc1_b"]
        d_hidden = h["fc2_w"][cls] * (hidden > 0)
        d_pooled = h["fc1_w"].T @ d_hidden
        return cast("np.ndarray", h["bn_scale"] * d_pooled / hw)

    def grad_cam(self, fmap: np.ndarray, cls: int) -> np.ndarray:
        """Grad-CAM for class `cls` on one feature map [K,h,w] -> [h,w] in [0,1]."""
        fmap = fmap.astype(np.float64)
        alpha = self.head_gradient(fmap, cls) * fmap.shape[1] * fmap.shape[2]
        cam = np.maximum(np.tensordot(alpha, fmap, axes=(0, 0)), 0.0)
        peak = cam.max()
        return (cam / peak if peak > 0 else cam).astype(np.float32)


# A perceptually ordered colour map (dark blue -> teal -> yellow -> red), no matplotlib needed.
_CMAP_POINTS = np.array(
    [[0.0, 0, 0, 128], [0.25, 0, 110, 200], [0.5, 30, 190, 140], [0.75, 250, 210, 40],
     [1.0, 220, 30, 30]], dtype=np.float64
)
_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), _CMAP_POINTS[:, 0], _CMAP_POINTS[:, c]) for c in (1, 2, 3)],
    axis=1,
).astype(np.uint8)


def heatmap_overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a [h,w] heatmap in [0,1] over the image (upsampled smoothly to its size)."""
    hm = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), "L")
    hm = hm.resize(image.size, Image.Resampling.BICUBIC)
    colour = Image.fromarray(_LUT[np.asarray(hm)], "RGB")
    return Image.blend(image.convert("RGB"), colour, alpha)
