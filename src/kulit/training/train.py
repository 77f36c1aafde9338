"""TrainConfig -> run directory (checkpoint, resolved config, history, curves).

The ImageNet backbone's output up to the trained part (the head, plus the last
`finetune_blocks` blocks in the kulit recipe) is computed once per image and view and cached
on disk (kulit.training.features), so each epoch trains only on the cache.
- `paper`: the published recipe (64x64, BN -> GAP -> Dense 128 ReLU -> Dropout -> Dense, Adam 1e-4,
  32 epochs, batch 64), on the efficientnet-lite0 base by default (densenet201 with --weights).
- `kulit`: higher resolution, augmented views, class balancing, label smoothing, early stopping
  on validation balanced accuracy, flip test-time augmentation, temperature scaling on val.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from kulit import __version__
from kulit.build.metrics import balanced_accuracy, source_balanced_accuracy
from kulit.config import TrainConfig
from kulit.dataprep.split import SplitRow, load_split
from kulit.errors import DataError, ensure_writable_dir
from kulit.serving.calibration import choose_threshold, fit_temperature
from kulit.training.backbones import get_spec
from kulit.training.features import FeatureExtractor, Recompute, extract_features
from kulit.training.heads import LinearHead, PaperHead


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- features

def load_samples(cfg: TrainConfig) -> tuple[list[SplitRow], list[str], dict[str, Any]]:
    """Rows of split.csv (one per duplicate group when dedupe is on) and the class list."""
    rows = load_split(Path(cfg.split_csv), Path(cfg.data))
    if cfg.dedupe:
        seen: set[str] = set()
        kept = []
        for r in sorted(rows, key=lambda r: r.file):
            if r.group in seen:
                continue
            seen.add(r.group)
            kept.append(r)
        rows = kept
    classes = sorted({r.label for r in rows})
    for split in ("train", "val"):
        if not any(r.split == split for r in rows):
            raise DataError(f"{cfg.split_csv}: no '{split}' rows; run `kulit data` first")
    report_path = Path(cfg.split_csv).with_name("data_report.json")
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return rows, classes, report


# ---------------------------------------------------------------- training

def build_head(cfg: TrainConfig, in_channels: int, num_classes: int) -> nn.Module:
    if cfg.head == "paper":
        return PaperHead(in_channels, num_classes, hidden=cfg.hidden, dropout=cfg.dropout)
    if cfg.head == "linear":
        return LinearHead(in_channels, num_classes, dropout=cfg.dropout)
    raise DataError(f"unknown head {cfg.head!r}; choose linear or paper")


class Trainable(nn.Module):
    """What trains on the cache: the optional backbone top, then the head."""

    def __init__(self, head: nn.Module, top: nn.Module | None) -> None:
        super().__init__()
        self.head, self.top = head, top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.top is not None:
            x = self.top(x)
        if x.dim() == 2:  # cached pooled vectors become 1x1 maps: both heads take [N,C,h,w]
            x = x[:, :, None, None]
        return cast("torch.Tensor", self.head(x))

    def train(self, mode: bool = True) -> Trainable:
        super().train(mode)
        if self.top is not None:  # keep ImageNet BatchNorm statistics; small batches
            for m in self.top.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


def _sampling_probs(y: np.ndarray, source: np.ndarray, keep: np.ndarray, balance: bool
                    ) -> np.ndarray:
    """Per training photo, the chance to be drawn: equal mass per (class, source) cell."""
    if not balance:
        return cast("np.ndarray", keep / keep.sum())
    cell = np.array([f"{a}|{b}" for a, b in zip(y.tolist(), source.tolist(), strict=True)])
    p = np.zeros(len(y))
    for c in set(cell[keep].tolist()):
        members = keep & (cell == c)
        p[members] = 1.0 / members.sum()
    return cast("np.ndarray", p / p.sum())


@torch.no_grad()
def _pooled_view0(feats: np.ndarray, top: nn.Module | None) -> np.ndarray:
    """The plain view's features pooled over space, through the pretrained top if any."""
    x = feats[:, 0]
    if top is None:
        return x.reshape(len(x), x.shape[1], -1).mean(-1) if x.ndim > 2 else x
    top.eval()
    out = [top(torch.from_numpy(x[i: i + 128]).float()).mean((2, 3)).numpy()
           for i in range(0, len(x), 128)]
    return np.concatenate(out)


def _clean_labels(cfg: TrainConfig, samples: list[SplitRow], feats: np.ndarray, y: np.ndarray,
                  top: nn.Module | None, classes: list[str], out: Path
                  ) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Keep-mask over training photos: cleanlab on out-of-fold probabilities (see module)."""
    from kulit.training.label_issues import find_issues, write_issues

    train = [s for s in samples if s.split == "train"]
    checked = np.isin([s.source for s in train], cfg.clean_sources.split(","))
    mask, probs = find_issues(_pooled_view0(feats, top), y, cfg.seed, checked, cfg.clean_max_frac)
    out.mkdir(parents=True, exist_ok=True)
    counts = write_issues(out, [s.file for s in train], [s.path for s in train],
                          [s.source for s in train], y, probs, mask, classes)
    return ~mask, counts


@torch.no_grad()
def eval_logits(model: nn.Module, feats: np.ndarray) -> np.ndarray:
    """Logits averaged over the evaluation views (plain + mirror when TTA is on)."""
    model.eval()
    n, v = feats.shape[:2]
    x = torch.from_numpy(feats.reshape(n * v, *feats.shape[2:]))
    logits = torch.cat([model(x[i: i + 256]) for i in range(0, len(x), 256)])
    return logits.reshape(n, v, -1).mean(1).numpy()


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Run one recipe end to end and write the run directory. Ctrl-C keeps the best so far."""
    from tqdm import tqdm

    out = ensure_writable_dir(Path(cfg.out), "--out")  # before minutes of work, not after
    if cfg.cache:
        ensure_writable_dir(Path(cfg.cache_dir), "--cache-dir")
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    samples, classes, report = load_samples(cfg)
    k = len(classes)
    data_hash = str(report.get("data_hash", ""))
    t_start = time.perf_counter()
    recompute = None if cfg.cache else Recompute(cfg, samples)
    if recompute is None:
        feats, feat_seconds = extract_features(cfg, samples, data_hash, log)
    else:
        feats, feat_seconds = {"val": recompute.features("val")}, 0.0
    index = {c: i for i, c in enumerate(classes)}
    y = {s: np.array([index[x.label] for x in samples if x.split == s], np.int64)
         for s in ("train", "val", "test")}
    fx = recompute.fx if recompute else None
    top = None
    if cfg.finetune_blocks:
        fx = fx or FeatureExtractor(cfg)
        top = fx.net.top(cfg.finetune_blocks)
        for p in top.parameters():
            p.requires_grad_(True)
    # cached pooled vectors [n,v,C] or maps [n,v,C,h,w]; a fine-tuned top outputs the full width
    in_channels = get_spec(cfg.backbone).out_channels if top is not None else \
        feats["val"].shape[2]
    torch.manual_seed(cfg.seed)
    head = build_head(cfg, in_channels, k)
    model = Trainable(head, top)
    groups = [{"params": head.parameters(), "lr": cfg.lr}]
    if top is not None:  # pretrained layers move more gently than the new head
        groups.append({"params": top.parameters(), "lr": cfg.lr * 0.3})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    counts = np.bincount(y["train"], minlength=k).astype(np.float64)
    weight = None
    if cfg.balance:
        w = counts.sum() / (k * np.maximum(counts, 1))
        weight = torch.tensor(w, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    src = {s: np.array([x.source for x in samples if x.split == s]) for s in ("train", "val")}
    keep = np.ones(len(y["train"]), bool)
    label_issues: dict[str, dict[str, int]] = {}
    if cfg.clean_labels and not recompute and np.bincount(y["train"]).min() >= 10:
        keep, label_issues = _clean_labels(cfg, samples, feats["train"], y["train"], top,
                                           classes, out)
        log(f"label issues: left out {int((~keep).sum())} of {len(keep)} training photos "
            f"({label_issues})")
    draw_p = _sampling_probs(y["train"], src["train"], keep, cfg.source_balance)
    plain_loss = nn.CrossEntropyLoss()
    gen = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)

    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"score": -1.0, "epoch": 0, "state": None}
    yv = torch.from_numpy(y["val"])
    interrupted = False
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"train {cfg.recipe}", unit="epoch")
    try:
        for epoch in bar:
            tr = recompute.features("train") if recompute else feats["train"]
            v = tr.shape[1]
            chosen = gen.choice(len(draw_p), size=int(keep.sum()), p=draw_p) \
                if cfg.source_balance else gen.permutation(np.flatnonzero(keep))
            n = len(chosen)
            pick = gen.integers(0, v, n)  # one random view per image per draw
            xs = torch.from_numpy(tr[chosen, pick])
            ys = torch.from_numpy(y["train"][chosen])
            order = torch.arange(n)
            model.train()
            tot_loss, tot_correct = 0.0, 0
            for i in range(0, n, cfg.batch_size):
                b = order[i: i + cfg.batch_size]
                logits = model(xs[b])
                loss = loss_fn(logits, ys[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot_loss += float(plain_loss(logits.detach(), ys[b])) * len(b)
                tot_correct += int((logits.argmax(1) == ys[b]).sum())
            vfeats = recompute.features("val") if recompute else feats["val"]
            vl = torch.from_numpy(eval_logits(model, vfeats))
            val_loss = float(plain_loss(vl, yv))
            vpred = vl.argmax(1).numpy()
            row = {
                "epoch": epoch, "loss": tot_loss / n, "accuracy": tot_correct / n,
                "val_loss": val_loss, "val_accuracy": float((vpred == y["val"]).mean()),
                "val_balanced_accuracy": balanced_accuracy(y["val"], vpred, k),
                "val_source_balanced_accuracy": source_balanced_accuracy(
                    y["val"], vpred, src["val"], k),
            }
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", val_acc=f"{row['val_accuracy']:.3f}",
                            val_bacc=f"{row['val_balanced_accuracy']:.3f}")
            # selection: the mean over sources, so no source's photos can be sacrificed
            score = row["val_source_balanced_accuracy"] if cfg.patience else float(epoch)
            if score > best["score"] + 1e-9:
                best = {"score": score, "epoch": epoch,
                        "state": {k_: t.clone() for k_, t in model.state_dict().items()}}
            elif cfg.patience and epoch - best["epoch"] >= cfg.patience:
                log(f"early stop at epoch {epoch}: best val balanced accuracy "
                    f"{best['score']:.3f} at epoch {best['epoch']}")
                break
    except KeyboardInterrupt:  # Ctrl-C: keep the best epoch so far
        interrupted = True
        log(f"interrupted: keeping the best epoch so far ({best['epoch']})")
    if best["state"] is None:
        raise DataError("training stopped before the first epoch finished; nothing to save")
    with _sigint_deferred(log):  # a second Ctrl-C must not cut the run dir in half
        model.load_state_dict(best["state"])
        train_seconds = time.perf_counter() - t_start

        val_logits = eval_logits(model, feats["val"])
        temperature = fit_temperature(val_logits, y["val"]) if cfg.recipe == "kulit" else 1.0
        threshold = choose_threshold(val_logits / temperature, y["val"])
        ckpt = {
            "config": dataclasses.asdict(cfg), "classes": classes, "head_state": head.state_dict(),
            "in_channels": in_channels, "temperature": temperature, "threshold": threshold,
            "backbone_state": fx.net.state_dict() if top is not None and fx else None,
            "best_epoch": best["epoch"], "data_hash": data_hash, "kulit_version": __version__,
            "preprocessing": cfg.preprocessing().to_dict(), "interrupted": interrupted,
            # what T and the threshold were fitted on, for the train-versus-served parity check
            "val_files": [s.file for s in samples if s.split == "val"], "val_logits": val_logits,
        }
        torch.save(ckpt, out / "checkpoint.pt")
        timing = {"feature_seconds": feat_seconds, "total_seconds": train_seconds,
                  "epochs_run": len(history), "cached": cfg.cache,
                  "label_issues_left_out": label_issues}
        write_run(out, cfg, classes, history, report, timing, best["epoch"], temperature, threshold,
                  interrupted)
        log(format_history(history))
        log(f"run saved to {out} (best epoch {best['epoch']}, temperature {temperature:.3f}, "
            f"{train_seconds:.1f} s)")
        return out


@contextlib.contextmanager
def _sigint_deferred(log: Callable[[str], None]) -> Iterator[None]:
    """Ignore Ctrl-C while the run directory is written (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, frame: Any) -> None:
        log("still saving the run; it takes a few seconds")

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def format_history(history: list[dict[str, float]]) -> str:
    """The per-epoch table, like the paper's Table 2."""
    lines = ["| epoch | loss | accuracy | val loss | val accuracy | val balanced acc |",
             "|---:|---:|---:|---:|---:|---:|"]
    for h in history:
        lines.append(f"| {h['epoch']} | {h['loss']:.4f} | {h['accuracy']:.4f} | "
                     f"{h['val_loss']:.4f} | {h['val_accuracy']:.4f} | "
                     f"{h['val_balanced_accuracy']:.4f} |")
    return "\n".join(lines)


def write_run(out: Path, cfg: TrainConfig, classes: list[str], history: list[dict[str, float]],
              report: dict[str, Any], timing: dict[str, Any], best_epoch: int,
              temperature: float, threshold: float, interrupted: bool = False) -> None:
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    (out / "history.md").write_text(f"# Training history ({cfg.recipe} recipe, {cfg.backbone}, "
                                    f"{cfg.input_size}px)\n\n{format_history(history)}\n")
    summary = {"classes": classes, "best_epoch": best_epoch, "temperature": temperature,
               "threshold": threshold, "timing": timing, "data_hash": report.get("data_hash"),
               "final": history[best_epoch - 1], "interrupted": interrupted}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_curves(history, out / "curves.png", f"{cfg.recipe} recipe: {cfg.backbone} "
                f"{cfg.input_size}px")


def plot_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["accuracy"] for h in history], label="train accuracy")
    a.plot(ep, [h["val_accuracy"] for h in history], label="val accuracy")
    a.plot(ep, [h["val_balanced_accuracy"] for h in history], label="val balanced accuracy",
           linestyle="--")
    a.set_xlabel("epoch")
    a.set_ylim(0, 1)
    a.legend()
    a.set_title("accuracy")
    b.plot(ep, [h["loss"] for h in history], label="train loss")
    b.plot(ep, [h["val_loss"] for h in history], label="val loss")
    b.set_xlabel("epoch")
    b.legend()
    b.set_title("loss")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
