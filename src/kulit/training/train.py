"""TrainConfig -> run directory (checkpoint here; config, history, curves: run_files).

The backbone's output up to the trained part (the head, plus the last `finetune_blocks` blocks)
is computed once per image and view and cached (kulit.training.features); epochs use the cache.
- `paper`: the published recipe (64 px, BN-GAP-Dense 128-Dropout-Dense, Adam 1e-4, 32 epochs, 64).
- `kulit`: higher resolution, augmented views, source-balanced draws, label smoothing, early
  stopping on validation balanced accuracy, flip test-time augmentation, temperature on val.
"""

from __future__ import annotations

import contextlib
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
from kulit.training.run_files import format_history, write_run


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


def sampling_probs(y: np.ndarray, source: np.ndarray, keep: np.ndarray, balance: bool
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


@dataclasses.dataclass
class _Data:
    """What a run trains and selects on: the cached (or recomputed) inputs and the labels."""

    samples: list[SplitRow]
    classes: list[str]
    feats: dict[str, np.ndarray]  # per split [n, views, ...]; only "val" when recomputing
    feat_seconds: float
    recompute: Recompute | None  # cache off: the backbone runs every epoch
    y: dict[str, np.ndarray]  # class indices per split
    src: dict[str, np.ndarray]  # data source per photo, train and val

    def inputs(self, split: str) -> np.ndarray:
        return self.recompute.features(split) if self.recompute else self.feats[split]


@dataclasses.dataclass
class _Net:
    """The trained part: the head, and the backbone's top when fine-tuning."""

    model: Trainable
    head: nn.Module
    top: nn.Module | None
    fx: FeatureExtractor | None
    in_channels: int


@dataclasses.dataclass
class _Fit:
    """The epochs run, the best one (by val balanced accuracy over sources) and its weights."""

    history: list[dict[str, float]]
    best: dict[str, Any]
    interrupted: bool


def _load_data(cfg: TrainConfig, samples: list[SplitRow], classes: list[str], data_hash: str,
               log: Callable[[str], None]) -> _Data:
    recompute = None if cfg.cache else Recompute(cfg, samples)
    if recompute is None:
        feats, feat_seconds = extract_features(cfg, samples, data_hash, log)
    else:
        feats, feat_seconds = {"val": recompute.features("val")}, 0.0
    index = {c: i for i, c in enumerate(classes)}
    y = {s: np.array([index[x.label] for x in samples if x.split == s], np.int64)
         for s in ("train", "val", "test")}
    src = {s: np.array([x.source for x in samples if x.split == s]) for s in ("train", "val")}
    return _Data(samples, classes, feats, feat_seconds, recompute, y, src)


def _build_net(cfg: TrainConfig, data: _Data) -> _Net:
    """The head (seeded), on the backbone's last `finetune_blocks` blocks when fine-tuning."""
    fx = data.recompute.fx if data.recompute else None
    top = None
    if cfg.finetune_blocks:
        fx = fx or FeatureExtractor(cfg)
        top = fx.net.top(cfg.finetune_blocks)
        for p in top.parameters():
            p.requires_grad_(True)
    # cached pooled vectors [n,v,C] or maps [n,v,C,h,w]; a fine-tuned top outputs the full width
    in_channels = get_spec(cfg.backbone).out_channels if top is not None else \
        data.feats["val"].shape[2]
    torch.manual_seed(cfg.seed)
    head = build_head(cfg, in_channels, len(data.classes))
    return _Net(Trainable(head, top), head, top, fx, in_channels)


def _optimiser(cfg: TrainConfig, net: _Net, y_train: np.ndarray, k: int
               ) -> tuple[torch.optim.Optimizer, nn.Module]:
    """AdamW (the top more gently than the new head) and the training loss."""
    groups = [{"params": net.head.parameters(), "lr": cfg.lr}]
    if net.top is not None:  # pretrained layers move more gently than the new head
        groups.append({"params": net.top.parameters(), "lr": cfg.lr * 0.3})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    weight = None
    if cfg.balance:
        counts = np.bincount(y_train, minlength=k).astype(np.float64)
        weight = torch.tensor(counts.sum() / (k * np.maximum(counts, 1)), dtype=torch.float32)
    return opt, nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer) -> Any:
    """Stepped per epoch: "cosine" takes every rate to 0 by epoch cfg.epochs; else None."""
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR
    return cosine(opt, T_max=cfg.epochs) if cfg.schedule == "cosine" else None


def _kept_photos(cfg: TrainConfig, data: _Data, net: _Net, out: Path,
                 log: Callable[[str], None]) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Which training photos train: all, or those cleanlab does not flag (cache on)."""
    keep = np.ones(len(data.y["train"]), bool)
    if not (cfg.clean_labels and not data.recompute
            and np.bincount(data.y["train"]).min() >= 10):
        return keep, {}
    keep, label_issues = _clean_labels(cfg, data.samples, data.feats["train"], data.y["train"],
                                       net.top, data.classes, out)
    log(f"label issues: left out {int((~keep).sum())} of {len(keep)} training photos "
        f"({label_issues})")
    return keep, label_issues


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: nn.Module, xs: torch.Tensor,
           ys: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """One pass over the drawn photos, in order; their plain loss and accuracy."""
    plain_loss = nn.CrossEntropyLoss()
    model.train()
    n = len(ys)
    tot_loss, tot_correct = 0.0, 0
    for i in range(0, n, batch_size):
        b = torch.arange(n)[i: i + batch_size]
        logits = model(xs[b])
        loss = loss_fn(logits, ys[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        tot_loss += float(plain_loss(logits.detach(), ys[b])) * len(b)
        tot_correct += int((logits.argmax(1) == ys[b]).sum())
    return tot_loss / n, tot_correct / n


def _val_row(model: nn.Module, data: _Data, epoch: int, loss: float, accuracy: float
             ) -> dict[str, float]:
    """One line of history: the epoch's training figures and the validation ones."""
    k = len(data.classes)
    vl = torch.from_numpy(eval_logits(model, data.inputs("val")))
    vpred = vl.argmax(1).numpy()
    return {
        "epoch": epoch, "loss": loss, "accuracy": accuracy,
        "val_loss": float(nn.CrossEntropyLoss()(vl, torch.from_numpy(data.y["val"]))),
        "val_accuracy": float((vpred == data.y["val"]).mean()),
        "val_balanced_accuracy": balanced_accuracy(data.y["val"], vpred, k),
        "val_source_balanced_accuracy": source_balanced_accuracy(
            data.y["val"], vpred, data.src["val"], k),
    }


def _fit(cfg: TrainConfig, net: _Net, opt: torch.optim.Optimizer, loss_fn: nn.Module,
         data: _Data, keep: np.ndarray, draw_p: np.ndarray, log: Callable[[str], None]) -> _Fit:
    """The epochs: draw the photos (and one view each), train, validate, keep the best, stop
    early without progress. Ctrl-C keeps the best so far."""
    from tqdm import tqdm

    gen = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    fit = _Fit([], {"score": -1.0, "epoch": 0, "state": None}, False)
    sched = scheduler(cfg, opt)
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"train {cfg.recipe}", unit="epoch")
    try:
        for epoch in bar:
            tr = data.inputs("train")
            chosen = gen.choice(len(draw_p), size=int(keep.sum()), p=draw_p) \
                if cfg.source_balance else gen.permutation(np.flatnonzero(keep))
            pick = gen.integers(0, tr.shape[1], len(chosen))  # one random view per draw
            loss, accuracy = _epoch(net.model, opt, loss_fn, torch.from_numpy(tr[chosen, pick]),
                                    torch.from_numpy(data.y["train"][chosen]), cfg.batch_size)
            if sched is not None:
                sched.step()
            row = _val_row(net.model, data, epoch, loss, accuracy)
            fit.history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", val_acc=f"{row['val_accuracy']:.3f}",
                            val_bacc=f"{row['val_balanced_accuracy']:.3f}")
            # selection: the mean over sources, so no source's photos can be sacrificed
            score = row["val_source_balanced_accuracy"] if cfg.patience else float(epoch)
            if score > fit.best["score"] + 1e-9:
                fit.best = {"score": score, "epoch": epoch,
                            "state": {k_: t.clone() for k_, t in net.model.state_dict().items()}}
            elif cfg.patience and epoch - fit.best["epoch"] >= cfg.patience:
                log(f"early stop at epoch {epoch}: best val balanced accuracy "
                    f"{fit.best['score']:.3f} at epoch {fit.best['epoch']}")
                break
    except KeyboardInterrupt:  # Ctrl-C: keep the best epoch so far
        fit.interrupted = True
        log(f"interrupted: keeping the best epoch so far ({fit.best['epoch']})")
    return fit


def _save_run(cfg: TrainConfig, out: Path, data: _Data, net: _Net, fit: _Fit,
              report: dict[str, Any], timing: dict[str, Any], log: Callable[[str], None]) -> Path:
    """The best epoch's weights, temperature and threshold (fitted on val), and the run's
    files: checkpoint.pt, config, history, curves, summary."""
    net.model.load_state_dict(fit.best["state"])
    val_logits = eval_logits(net.model, data.feats["val"])
    temperature = fit_temperature(val_logits, data.y["val"]) if cfg.recipe == "kulit" else 1.0
    threshold = choose_threshold(val_logits / temperature, data.y["val"])
    data_hash = str(report.get("data_hash", ""))
    ckpt = {
        "config": dataclasses.asdict(cfg), "classes": data.classes,
        "head_state": net.head.state_dict(), "in_channels": net.in_channels,
        "temperature": temperature, "threshold": threshold,
        "backbone_state": net.fx.net.state_dict() if net.top is not None and net.fx else None,
        "best_epoch": fit.best["epoch"], "data_hash": data_hash, "kulit_version": __version__,
        "preprocessing": cfg.preprocessing().to_dict(), "interrupted": fit.interrupted,
        # what T and the threshold were fitted on, for the train-versus-served parity check
        "val_files": [s.file for s in data.samples if s.split == "val"],
        "val_logits": val_logits,
    }
    torch.save(ckpt, out / "checkpoint.pt")
    write_run(out, cfg, data.classes, fit.history, report, timing, fit.best["epoch"],
              temperature, threshold, fit.interrupted)
    log(format_history(fit.history))
    log(f"run saved to {out} (best epoch {fit.best['epoch']}, temperature {temperature:.3f}, "
        f"{timing['total_seconds']:.1f} s)")
    return out


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Run one recipe end to end and write the run directory. Ctrl-C keeps the best so far.

    The steps, in the order their random draws happen: data, the seeded head, the optimiser,
    the photos kept, their sampling chances, the epochs, the run saved."""
    out = ensure_writable_dir(Path(cfg.out), "--out")  # before minutes of work, not after
    if cfg.cache:
        ensure_writable_dir(Path(cfg.cache_dir), "--cache-dir")
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    samples, classes, report = load_samples(cfg)
    t_start = time.perf_counter()
    data = _load_data(cfg, samples, classes, str(report.get("data_hash", "")), log)
    net = _build_net(cfg, data)
    opt, loss_fn = _optimiser(cfg, net, data.y["train"], len(classes))
    keep, label_issues = _kept_photos(cfg, data, net, out, log)
    draw_p = sampling_probs(data.y["train"], data.src["train"], keep, cfg.source_balance)
    out.mkdir(parents=True, exist_ok=True)
    fit = _fit(cfg, net, opt, loss_fn, data, keep, draw_p, log)
    if fit.best["state"] is None:
        raise DataError("training stopped before the first epoch finished; nothing to save")
    with _sigint_deferred(log):  # a second Ctrl-C must not cut the run dir in half
        timing = {"feature_seconds": data.feat_seconds,
                  "total_seconds": time.perf_counter() - t_start,
                  "epochs_run": len(fit.history), "cached": cfg.cache,
                  "label_issues_left_out": label_issues}
        return _save_run(cfg, out, data, net, fit, report, timing, log)


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
