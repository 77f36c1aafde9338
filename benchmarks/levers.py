"""Which training levers help: a short proxy on frozen features, measured on the validation
photos of every source, per source and per Fitzpatrick band (atlas/), with paired intervals.

The proxy: the shipped recipe's frozen ImageNet efficientnet-lite0 (224 px), its cached views
(plain + 5 augmented per training photo, mirror TTA on validation), a linear head trained for a
fixed number of epochs (no early stopping, so no lever is chosen on the numbers it is scored
on), 3 seeds. Each lever changes one thing against that baseline. What a frozen backbone cannot
show (fine-tuning all blocks with layer-wise rates, a higher resolution of a fine-tuned net) is
not measured here; see docs/results.md.

    python benchmarks/levers.py                 # ~15 min on 2 cores the first time (features)
    python benchmarks/levers.py --tone          # + tone-aware augmentation (~12 min more)

Writes benchmarks/results/levers.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kulit.build.metrics import (  # noqa: E402
    balanced_accuracy,
    balanced_accuracy_rows,
    bootstrap,
    round_floats,
)
from kulit.build.skintone import estimate_many, srgb_to_lab  # noqa: E402
from kulit.config import make_config  # noqa: E402
from kulit.dataprep.fitzpatrick import BANDS, bands_of  # noqa: E402
from kulit.training import features as feature_module  # noqa: E402
from kulit.training.features import extract_features  # noqa: E402
from kulit.training.train import load_samples, sampling_probs  # noqa: E402

N_BOOT = 1000
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Lever:
    """One change against the baseline head training."""

    name: str
    what: str
    epochs: int = 40
    cosine: bool = False
    label_smoothing: float = 0.1
    class_balance: bool = False
    source_balance: bool = True
    mixup: float = 0.0  # Beta(a, a) mixing of pooled features and labels; 0 = off
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = off
    tta: bool = True  # validation logits average the photo and its mirror
    ensemble: int = 1  # heads from this many seeds, logits averaged (= one linear head)
    features: str = "base"  # which cached training views


LEVERS = [
    Lever("baseline", "shipped settings: source-balanced draws, label smoothing 0.1, mirror TTA"),
    Lever("class_balanced_loss", "loss weighted by inverse class frequency", class_balance=True),
    Lever("no_source_balance", "plain shuffling instead of equal (class, source) cells",
          source_balance=False),
    Lever("no_label_smoothing", "label smoothing 0", label_smoothing=0.0),
    Lever("cosine_120", "120 epochs, cosine learning-rate decay (longer schedule)", epochs=120,
          cosine=True),
    Lever("mixup_0.4", "mixup of the pooled features, Beta(0.4, 0.4)", mixup=0.4),
    Lever("ema_0.995", "exponential moving average of the weights (0.995 per step)", ema=0.995),
    Lever("no_tta", "test-time views off: the plain photo only", tta=False),
    Lever("ensemble_5", "5 heads (seeds) averaged: still one linear head when served",
          ensemble=5),
    Lever("cosine_120+ema", "the two that reduce end-of-training noise, together", epochs=120,
          cosine=True, ema=0.995),
    Lever("cosine_120+mixup", "longer cosine schedule with feature mixup", epochs=120,
          cosine=True, mixup=0.4),
    Lever("cosine_120+ensemble_5", "longer cosine schedule, 5 heads averaged", epochs=120,
          cosine=True, ensemble=5),
]
TONE = Lever("tone_aug", "tone-aware augmentation: half the augmented views shifted in L*/b* "
             "within real skin (ITA -45..+55 deg)", features="tone")


# ------------------------------------------------------------------ features


def tone_shift(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Darken or lighten the whole photo in CIELAB, as a darker or lighter skin would look: L*
    moves by -22..+8 and b* by 0..+6, and the result's median skin ITA is kept in -45..+55 deg
    (the range of real skin, Fitzpatrick I to VI)."""
    lab = srgb_to_lab(np.asarray(img))
    d_l, d_b = float(rng.uniform(-22, 8)), float(rng.uniform(0, 6))
    med_l, med_b = float(np.median(lab[..., 0])) + d_l, float(np.median(lab[..., 2])) + d_b
    ita = np.degrees(np.arctan2(med_l - 50.0, med_b))
    if not -45 <= ita <= 55:
        return img
    lab[..., 0] = np.clip(lab[..., 0] + d_l, 0, 100)
    lab[..., 2] += d_b
    return Image.fromarray(lab_to_srgb(lab))


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """The inverse of kulit.build.skintone.srgb_to_lab (D65), to 8-bit sRGB."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    d = 6 / 29
    xyz = np.where(f > d, f ** 3, 3 * d * d * (f - 4 / 29)) * np.array([0.95047, 1.0, 1.08883])
    m = np.array([[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
                  [0.0556434, -0.2040259, 1.0572252]])
    c = np.clip(xyz @ m.T, 0, 1)
    c = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.clip(np.round(c * 255), 0, 255).astype(np.uint8)


def load_features(data: str, split: str, tone: bool) -> dict[str, Any]:
    """Pooled frozen features of train (6 views) and val (plain + mirror), from the training
    code's own cache; `tone` swaps the augmentation for one with tone shifts."""
    cfg = make_config(data, split, "kulit", finetune_blocks=0, head="linear", clean_labels=False,
                      cache_dir=str(ROOT / ".cache" / ("levers-tone" if tone else "levers")))
    samples, classes, report = load_samples(cfg)
    plain = feature_module.augment
    if tone:
        def with_tone(img: Image.Image, rng: np.random.Generator, size: int,
                      capture: bool = False) -> Image.Image:
            out = plain(img, rng, size, capture)
            return tone_shift(out, rng) if rng.random() < 0.5 else out
        feature_module.augment = with_tone
    try:
        feats, seconds = extract_features(cfg, samples, str(report.get("data_hash", "")))
    finally:
        feature_module.augment = plain
    index = {c: i for i, c in enumerate(classes)}
    rows = {s: [r for r in samples if r.split == s] for s in ("train", "val")}
    return {
        "classes": classes, "seconds": seconds, "train": feats["train"], "val": feats["val"],
        "y": {s: np.array([index[r.label] for r in rows[s]]) for s in rows},
        "source": {s: np.array([r.source for r in rows[s]]) for s in rows},
        "val_paths": [r.path for r in rows["val"]],
    }


def with_bands(f: dict[str, Any]) -> dict[str, Any]:
    """Each val photo's Fitzpatrick band from atlas/'s labels, and its band estimated from its
    colours (ITA) for the sources without labels; computed once, shared by every lever."""
    return {**f, "band": np.array([b or "" for b in bands_of(f["val_paths"])]),
            "est_band": np.array([(t.band if t else None) or ""
                                  for t in estimate_many(f["val_paths"])])}


# ------------------------------------------------------------------ training


def train_head(f: dict[str, Any], lever: Lever, seed: int) -> np.ndarray:
    """Validation logits [n_val, k] of one linear head trained as `lever` says."""
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    x, y, k = f["train"], f["y"]["train"], len(f["classes"])
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(x.shape[2], k))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    steps_per_epoch = -(-len(y) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, lever.epochs * steps_per_epoch) \
        if lever.cosine else None
    weight = None
    if lever.class_balance:
        counts = np.bincount(y, minlength=k)
        weight = torch.tensor(counts.sum() / (k * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=lever.label_smoothing)
    p = sampling_probs(y, f["source"]["train"], np.ones(len(y), bool), lever.source_balance)
    ema = [t.detach().clone() for t in head.parameters()] if lever.ema else None
    for _ in range(lever.epochs):
        chosen = gen.choice(len(y), size=len(y), p=p)
        xs = torch.from_numpy(x[chosen, gen.integers(0, x.shape[1], len(y))].astype(np.float32))
        ys = torch.nn.functional.one_hot(torch.from_numpy(y[chosen]), k).float()
        head.train()
        for i in range(0, len(y), 64):
            xb, yb = xs[i:i + 64], ys[i:i + 64]
            if lever.mixup:
                lam = float(gen.beta(lever.mixup, lever.mixup))
                perm = torch.from_numpy(gen.permutation(len(xb)))
                xb, yb = lam * xb + (1 - lam) * xb[perm], lam * yb + (1 - lam) * yb[perm]
            loss = loss_fn(head(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if ema is not None:
                with torch.no_grad():
                    for e, t in zip(ema, head.parameters(), strict=True):
                        e.mul_(lever.ema).add_(t.detach(), alpha=1 - lever.ema)
    if ema is not None:
        with torch.no_grad():
            for e, t in zip(ema, head.parameters(), strict=True):
                t.copy_(e)
    head.eval()
    v = f["val"] if lever.tta else f["val"][:, :1]
    with torch.no_grad():
        logits = head(torch.from_numpy(v.astype(np.float32)).flatten(0, 1))
    return logits.reshape(v.shape[0], v.shape[1], k).mean(1).numpy()


def lever_logits(f: dict[str, Any], lever: Lever) -> list[np.ndarray]:
    """One set of validation logits per seed (an ensemble: the mean over its heads' logits)."""
    out = []
    for seed in SEEDS:
        members = [train_head(f, lever, 100 * seed + j) for j in range(lever.ensemble)]
        out.append(np.mean(members, axis=0))
    return out


# ------------------------------------------------------------------ metrics


def summary(f: dict[str, Any], runs: list[np.ndarray]) -> dict[str, Any]:
    """Seed-mean metrics: balanced accuracy over all val photos and per source, their mean
    over sources (what training selects on), top-3, and atlas/'s top-1/top-3 per band."""
    y, src, k = f["y"]["val"], f["source"]["val"], len(f["classes"])
    out: dict[str, Any] = {}
    per: dict[str, list[float]] = {}
    for logits in runs:
        pred = logits.argmax(1)
        top3 = np.argsort(-logits, 1)[:, :3]
        hit3 = (top3 == y[:, None]).any(1)
        m = {"balanced_accuracy": balanced_accuracy(y, pred, k), "top3": float(hit3.mean())}
        for s in sorted(set(src)):
            m[f"bacc_{s}"] = balanced_accuracy(y[src == s], pred[src == s], k)
        m["source_mean_bacc"] = float(np.mean([m[f"bacc_{s}"] for s in sorted(set(src))]))
        for b in BANDS:
            sel = (src == "atlas") & (f["band"] == b)
            if sel.any():
                m[f"atlas_top1_{b}"] = float((pred[sel] == y[sel]).mean())
                m[f"atlas_top3_{b}"] = float(hit3[sel].mean())
        t3 = [m[f"atlas_top3_{b}"] for b in BANDS if f"atlas_top3_{b}" in m]
        m["atlas_top3_band_gap"] = float(max(t3) - min(t3)) if t3 else float("nan")
        for b in BANDS:
            sel = f["est_band"] == b
            if sel.any():
                m[f"est_top1_{b}"] = float((pred[sel] == y[sel]).mean())
                m[f"est_top3_{b}"] = float(hit3[sel].mean())
        e3 = [m[f"est_top3_{b}"] for b in BANDS if f"est_top3_{b}" in m]
        m["est_top3_band_gap"] = float(max(e3) - min(e3)) if e3 else float("nan")
        for key, value in m.items():
            per.setdefault(key, []).append(value)
    for key, values in per.items():
        out[key] = float(np.mean(values))
    out["source_mean_bacc_sd_over_seeds"] = float(np.std(per["source_mean_bacc"]))
    return out


def paired_intervals(f: dict[str, Any], runs: list[np.ndarray], base: list[np.ndarray]
                     ) -> dict[str, list[float] | None]:
    """95% intervals of (lever - baseline) in balanced accuracy, seed means, by the one
    bootstrap (kulit.build.metrics.bootstrap: the same resamples for both, so paired): over all
    validation photos pooled, and within each source."""
    y, src, k = f["y"]["val"], f["source"]["val"], len(f["classes"])
    right = [[lg.argmax(1) == y for lg in group] for group in (runs, base)]
    out: dict[str, list[float] | None] = {}
    scopes = [("all", np.arange(len(y)))] + [(s, np.flatnonzero(src == s))
                                            for s in sorted(set(src))]
    for name, where in scopes:
        def stat(idx: np.ndarray, where: np.ndarray = where) -> dict[str, np.ndarray]:
            rows = where[idx]
            lever, baseline = (np.mean([balanced_accuracy_rows(y, c, rows, k) for c in g], 0)
                               for g in right)
            return {"delta": lever - baseline}
        out[name] = bootstrap(stat, len(where), n_boot=N_BOOT, seed=0).get("delta")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--split", default=str(ROOT / "runs" / "data" / "split.csv"))
    ap.add_argument("--tone", action="store_true", help="also the tone-aware augmentation")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "levers.json"))
    args = ap.parse_args(argv)
    if not Path(args.split).is_file():
        print(f"{args.split} not found: run `kulit build --until data` first", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    feats = {"base": with_bands(load_features(args.data, args.split, tone=False))}
    levers = list(LEVERS)
    if args.tone:
        feats["tone"] = load_features(args.data, args.split, tone=True)
        levers.append(TONE)
    runs = {lv.name: lever_logits(feats[lv.features], lv) for lv in levers}
    base = feats["base"]
    rows: dict[str, Any] = {}
    for lv in levers:
        f = {**base, "train": feats[lv.features]["train"]}
        rows[lv.name] = {"what": lv.what, **summary(f, runs[lv.name])}
        if lv.name != "baseline":
            rows[lv.name]["delta_source_mean_bacc"] = (
                rows[lv.name]["source_mean_bacc"] - rows["baseline"]["source_mean_bacc"])
            rows[lv.name]["delta_balanced_accuracy"] = (
                rows[lv.name]["balanced_accuracy"] - rows["baseline"]["balanced_accuracy"])
            rows[lv.name]["delta_ci95"] = paired_intervals(f, runs[lv.name], runs["baseline"])
        r = rows[lv.name]
        line = f"{lv.name:24s} bacc source-mean {r['source_mean_bacc']:.3f}, all " \
               f"{r['balanced_accuracy']:.3f}"
        if lv.name != "baseline":
            lo, hi = r["delta_ci95"]["all"]
            line += f"  delta all {r['delta_balanced_accuracy']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        print(line, flush=True)
    val_n = {s: int((base["source"]["val"] == s).sum()) for s in sorted(set(base["source"]["val"]))}
    result = {
        "command": "python benchmarks/levers.py" + (" --tone" if args.tone else ""),
        "protocol": "frozen efficientnet-lite0 224 px pooled features (6 cached train views, "
                    "mirror TTA on val), linear head, fixed epochs, seeds " + str(list(SEEDS))
                    + "; validation photos of every source; intervals: paired bootstrap of the "
                    "balanced-accuracy difference (seed means), all photos and per source",
        "val_photos": val_n,
        "atlas_val_photos_per_band": {b: int(((base["source"]["val"] == "atlas")
                                              & (base["band"] == b)).sum()) for b in BANDS},
        "val_photos_per_estimated_band": {b: int((base["est_band"] == b).sum()) for b in BANDS},
        "feature_seconds": {k: v["seconds"] for k, v in feats.items()},
        "seconds": time.perf_counter() - t0,
        "levers": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(round_floats(result, 4), indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
