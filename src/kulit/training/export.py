"""Run dir -> model dir: model.onnx + card.json + head.npz, checked against torch before saving.

Like timm's onnx utils: eval mode, named input, dynamic batch, onnx.checker, and ONNX Runtime
compared with torch on real images; a mismatch fails the export and nothing is written.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kulit import __version__
from kulit.config import TrainConfig
from kulit.errors import ModelError
from kulit.serving.calibration import softmax
from kulit.serving.card import FEATURES, INPUT, LOGITS, OUTPUTS, ModelCard
from kulit.serving.model_dir import HEAD_FILE, ONNX_FILE, ModelDir
from kulit.serving.preprocess import Preprocessing, open_for_model, preprocess_image
from kulit.training.backbones import Backbone, build_backbone, get_spec
from kulit.training.train import build_head

OPSET = 17
ATOL = 1e-3  # logits, absolute
PROB_ATOL = 1e-4  # calibrated probabilities, absolute


class ServingModel(nn.Module):
    """image -> (logits, last conv feature map, first conv layer's maps).

    With TTA (the card's `preprocessing.tta`) the last map averages image and mirror, so the
    logits of a GAP head equal the mean of the two views' logits, and Grad-CAM stays exact on
    the exported map. Both views go through the backbone as one batch of 2N: the same numbers
    as two passes, and faster in int8 (one pass over each weight; docs/results.md, Speed)."""

    def __init__(self, backbone: Backbone, head: nn.Module, tta: bool) -> None:
        super().__init__()
        self.backbone, self.head, self.tta = backbone, head, tta
        self.first, self.rest = backbone.first_layer_split()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.tta:
            stem = self.first(image)
            f = self.rest(stem)
            return self.head(f), f, stem
        n = image.shape[0]
        stem = self.first(torch.cat([image, torch.flip(image, dims=[3])]))
        both = self.rest(stem)
        f = 0.5 * (both[:n] + torch.flip(both[n:], dims=[3]))
        return self.head(f), f, stem[:n]


def load_run(run_dir: Path) -> tuple[dict[str, Any], TrainConfig, ServingModel]:
    """Rebuild the trained model, TTA as its preprocessing says, from a run's checkpoint."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise ModelError(f"{run_dir}: no checkpoint.pt (is it a `kulit train` run directory?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ModelError(f"{path}: unreadable checkpoint ({e})") from None
    cfg = TrainConfig(**ckpt["config"])
    if "tta" not in ckpt["preprocessing"]:  # a run from before the card owned TTA
        ckpt["preprocessing"] = {**ckpt["preprocessing"], "tta": cfg.serve_tta}
    pre = Preprocessing.from_dict(ckpt["preprocessing"])
    weights = Path(cfg.weights) if cfg.weights else None
    torch.manual_seed(cfg.seed)  # an unpretrained frozen base must init as it did in training
    backbone = build_backbone(cfg.backbone, cfg.input_size, weights, cfg.pretrained)
    if ckpt.get("backbone_state") is not None:  # fine-tuned top blocks
        backbone.load_state_dict(ckpt["backbone_state"])
    head = build_head(cfg, ckpt["in_channels"], len(ckpt["classes"]))
    head.load_state_dict(ckpt["head_state"])
    model = ServingModel(backbone, head, pre.tta).eval()
    return ckpt, cfg, model


def head_arrays(head: nn.Module, kind: str) -> dict[str, np.ndarray]:
    """The head's weights as numpy, for the torch-free Grad-CAM in kulit.serving.predict."""
    sd = {k: v.detach().double().numpy() for k, v in head.state_dict().items()}
    if kind == "linear":
        return {"fc_w": sd["fc.weight"], "fc_b": sd["fc.bias"]}
    bn: Any = head.bn
    scale = sd["bn.weight"] / np.sqrt(sd["bn.running_var"] + bn.eps)
    return {
        "bn_scale": scale, "bn_shift": sd["bn.bias"] - sd["bn.running_mean"] * scale,
        "fc1_w": sd["fc1.weight"], "fc1_b": sd["fc1.bias"],
        "fc2_w": sd["fc2.weight"], "fc2_b": sd["fc2.bias"],
    }


def check_images(cfg: TrainConfig, n: int = 8) -> list[Path]:
    """Real images for the parity check: the first validation images of the run's split."""
    from kulit.dataprep.split import load_split

    try:
        rows = load_split(Path(cfg.split_csv), Path(cfg.data))
    except Exception:  # noqa: BLE001 - data moved: fall back to synthetic inputs
        return []
    return [r.path for r in rows if r.split == "val"][:n]


def export_onnx(model: ServingModel, pre: Preprocessing, path: Path) -> None:
    dummy = torch.zeros(2, 3, pre.input_size, pre.input_size)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but exact here
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(model, dummy, path)


def _export(model: nn.Module, dummy: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        model, (dummy,), str(path), input_names=[INPUT], output_names=list(OUTPUTS),
        dynamic_axes={name: {0: "N"} for name in (INPUT, *OUTPUTS)},
        opset_version=OPSET, dynamo=False,
    )


def verify(model: ServingModel, onnx_path: Path, batch: np.ndarray, temperature: float) -> float:
    """ONNX checker, then ONNX Runtime against torch; returns the max logit difference."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(onnx_path)))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    o_logits, o_feats = sess.run([LOGITS, FEATURES], {INPUT: batch})
    with torch.no_grad():
        t_logits, t_feats, _ = (t.numpy() for t in model(torch.from_numpy(batch)))
    diff = float(np.abs(o_logits - t_logits).max())
    fdiff = float(np.abs(o_feats - t_feats).max() / (np.abs(t_feats).max() + 1e-9))
    pdiff = float(np.abs(softmax(o_logits / temperature, 1) - softmax(t_logits / temperature, 1)
                         ).max())
    if diff > ATOL or pdiff > PROB_ATOL or fdiff > 1e-3:
        raise ModelError(
            f"export check failed: ONNX Runtime differs from torch (logits {diff:.2e}, "
            f"probabilities {pdiff:.2e}, features {fdiff:.2e})"
        )
    return diff


def export(run_dir: Path, out: Path, name: str | None = None,
           extra: dict[str, Any] | None = None) -> Path:
    """Write model.onnx, head.npz and card.json into `out` (atomically, after checking)."""
    ckpt, cfg, model = load_run(run_dir)
    pre = Preprocessing.from_dict(ckpt["preprocessing"])
    images = check_images(cfg)
    if images:
        batch = np.stack([preprocess_image(open_for_model(p, pre), pre) for p in images])
    else:
        batch = np.random.default_rng(0).normal(0, 1, (4, 3, pre.input_size, pre.input_size))
    batch = batch.astype(np.float32)
    out = Path(out)
    spec = get_spec(cfg.backbone)
    data_dir = Path(cfg.data)
    card = ModelCard(
        name=name or out.name, classes=list(ckpt["classes"]), backbone=cfg.backbone,
        preprocessing=pre, temperature=float(ckpt["temperature"]),
        threshold=float(ckpt["threshold"]), recipe=cfg.recipe, head=cfg.head,
        data={"folder": data_dir.name, "hash": ckpt.get("data_hash", ""),
              "split_csv": cfg.split_csv, "backbone_weights": spec.weights_note},
        seed=cfg.seed, train_config=ckpt["config"], kulit_version=__version__,
    )
    for key, value in (extra or {}).items():
        if key == "data":
            card.data.update(value)
        elif hasattr(card, key):
            setattr(card, key, value)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        tmpd = Path(tmp)
        export_onnx(model, pre, tmpd / ONNX_FILE)
        diff = verify(model, tmpd / ONNX_FILE, batch, card.temperature)
        arrays: dict[str, Any] = head_arrays(model.head, cfg.head)
        np.savez(tmpd / HEAD_FILE, **arrays)
        card.data["export_check"] = {"images": len(batch), "max_logit_diff": diff,
                                     "real_images": bool(images)}
        # everything made from the model.onnx just replaced is wrong for the new one
        stale = ModelDir(out).write_model(tmpd, card)
    size_mb = (out / ONNX_FILE).stat().st_size / 1e6
    print(f"exported {out} ({size_mb:.1f} MB, ONNX vs torch max logit diff {diff:.1e})"
          + (f"; removed {', '.join(stale)} (made from the previous model)" if stale else ""))
    return out


def load_extra(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return dict(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: cannot read card extras ({e})") from None
