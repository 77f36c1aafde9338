"""Backbone features for training: the model inputs of each photo (plain, augmented views, the
mirror the served model averages), computed once and cached on disk by everything that changes
them (`cache_key`), or every epoch (`Recompute`, the baseline the cache is measured against).
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from kulit.config import TrainConfig
from kulit.dataprep.split import SplitRow
from kulit.errors import DataError, ImageError
from kulit.serving.preprocess import Preprocessing, open_for_model, preprocess_image
from kulit.training.augment import augment
from kulit.training.backbones import build_backbone


class FeatureExtractor:
    """The backbone up to its trained blocks (all of it when none are trained), plus the exact
    preprocessing serving will use; its output is what the cache holds."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.pre = cfg.preprocessing()
        weights = Path(cfg.weights) if cfg.weights else None
        torch.manual_seed(cfg.seed)  # an unpretrained net must init the same in every process
        self.net = build_backbone(cfg.backbone, cfg.input_size, weights, cfg.pretrained).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.n_top = cfg.finetune_blocks
        if self.n_top:
            self.net.top(self.n_top)  # fail before the long extraction, not after
        # a GAP->linear head on a frozen base only needs pooled features
        self.pooled = cfg.head == "linear" and not self.n_top

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)
        if self.n_top:  # cache what enters the trainable top, in half precision
            return cast("np.ndarray", self.net.forward_stem(x, self.n_top).half().numpy())
        f = self.net(x)
        return cast("np.ndarray", (f.mean((2, 3)) if self.pooled else f).numpy())


def view_tensors(s: SplitRow, pre: Preprocessing, views: int, seed: int, train: bool,
                 capture: bool = False) -> list[np.ndarray]:
    """Model inputs of one image. View 0 is the plain image; training adds augmented views;
    evaluation adds what the served model averages: with the card's `tta`, the mirror of the
    preprocessed input (flipped after the logo mask, exactly as the exported graph does)."""
    img = open_for_model(s.path, pre)
    x = preprocess_image(img, pre)
    out = [x]
    if train:
        rng = np.random.default_rng([seed, zlib_crc(s.file)])
        out += [preprocess_image(augment(img, rng, pre.input_size, capture), pre)
                for _ in range(views - 1)]
    elif pre.tta:
        out.append(np.ascontiguousarray(x[:, :, ::-1]))
    return out


def zlib_crc(text: str) -> int:
    """A stable per-file seed (Python's hash() changes between processes)."""
    return zlib.crc32(text.encode())


def cache_key(cfg: TrainConfig, samples: Sequence[SplitRow], data_hash: str) -> str:
    parts = {
        "data_hash": data_hash,
        "files": [s.file for s in samples] if not data_hash else len(samples),
        "backbone": cfg.backbone, "weights": cfg.weights, "pretrained": cfg.pretrained,
        "input_size": cfg.input_size, "pre": cfg.preprocessing().to_dict(),
        "views": cfg.views, "pooled": cfg.head == "linear", "seed": cfg.seed,
        "dedupe": cfg.dedupe, "finetune_blocks": cfg.finetune_blocks,
        "capture_aug": cfg.capture_aug, "version": 5,
    }
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def extract_features(cfg: TrainConfig, samples: list[SplitRow], data_hash: str,
                     log: Callable[[str], None] = print) -> tuple[dict[str, np.ndarray], float]:
    """Per split, features [n_images, n_views, ...]; from the cache when it holds them."""
    key = cache_key(cfg, samples, data_hash)
    path = Path(cfg.cache_dir) / f"features-{cfg.backbone}-{cfg.input_size}-{key}.npz"
    if cfg.cache and path.is_file():
        with np.load(path) as z:
            log(f"features from cache {path}")
            return {k: z[k] for k in z.files}, 0.0
    from tqdm import tqdm

    t0 = time.perf_counter()
    fx = FeatureExtractor(cfg)
    out: dict[str, np.ndarray] = {}
    for split in ("train", "val"):  # test is scored later on the exported model
        subset = [s for s in samples if s.split == split]
        feats = []
        pending: list[np.ndarray] = []
        n_views = 0
        bar = tqdm(subset, desc=f"features {split}", unit="img", leave=False)
        for s in bar:
            try:
                xs = view_tensors(s, fx.pre, cfg.views, cfg.seed, split == "train",
                                  cfg.capture_aug)
            except ImageError as e:
                raise DataError(f"{s.file}: {e.message} (re-run `kulit data`)") from None
            n_views = len(xs)
            pending.extend(xs)
            if len(pending) >= 64:
                feats.append(fx(np.stack(pending)))
                pending = []
        if pending:
            feats.append(fx(np.stack(pending)))
        arr = np.concatenate(feats)
        out[split] = arr.reshape(len(subset), n_views, *arr.shape[1:])
    seconds = time.perf_counter() - t0
    if cfg.cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        arrays: dict[str, Any] = out
        np.savez(tmp, **arrays)
        tmp.replace(path)
    log(f"features computed in {seconds:.1f} s")
    return out, seconds


class Recompute:
    """Backbone-every-epoch mode (cache off): the baseline the feature cache is measured against."""

    def __init__(self, cfg: TrainConfig, samples: list[SplitRow]) -> None:
        self.fx = FeatureExtractor(cfg)
        self.cfg = cfg
        self.samples = samples

    def features(self, split: str) -> np.ndarray:
        subset = [s for s in self.samples if s.split == split]
        tensors = [x for s in subset for x in view_tensors(
            s, self.fx.pre, self.cfg.views, self.cfg.seed, split == "train",
            self.cfg.capture_aug)]
        arr = np.concatenate([self.fx(np.stack(tensors[i: i + 64]))
                              for i in range(0, len(tensors), 64)])
        return arr.reshape(len(subset), -1, *arr.shape[1:])
