"""Evaluate a model directory on labelled images: metrics.json, report.md and three plots.

The command module only: predictions come from the ONNX `Predictor` (torch-free), numbers from
`kulit.build.metrics`, rendering from `kulit.build.report`. With a split whose rows name their data
`source`, every metric is also reported per source.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kulit.build.metrics import compute_metrics, max_share_ratio, metrics_by_group, selective_at
from kulit.build.report import write_report
from kulit.build.slices import figures_by_slice
from kulit.dataprep.split import SplitRow
from kulit.errors import DataError, ImageError
from kulit.serving.answer import answer_for
from kulit.serving.model_dir import METRICS, PREDICTIONS_CSV, SHORTLIST, ModelDir

EVAL_SPLITS = ("test", "val", "train", "all")


# ---------------------------------------------------------------------------------------------
# End to end


def list_class_folders(data: Path) -> tuple[list[SplitRow], list[dict[str, str]]]:
    """A row (split "all", no group or source) for every file in `data`'s class folders.

    Hidden entries and top-level files are ignored; nested folders are listed as skipped.
    """
    entries: list[SplitRow] = []
    skipped: list[dict[str, str]] = []
    try:
        class_dirs = sorted(p for p in data.iterdir()
                            if p.is_dir() and not p.name.startswith("."))
        for d in class_dirs:
            for f in sorted(d.iterdir(), key=lambda p: p.name):
                rel = f.relative_to(data).as_posix()
                if f.name.startswith("."):
                    continue
                if f.is_dir():
                    skipped.append({"file": rel, "reason": "nested folder, not read"})
                else:
                    entries.append(SplitRow(f, rel, d.name, "all", ""))
    except OSError as e:
        raise DataError(f"cannot list data folder {data}: {e.strerror or e}") from None
    if not class_dirs:
        raise DataError(f"no class folders in {data} (expected one subfolder per class)")
    return entries, skipped


def _select(data: Path, split: str, split_csv: Path | None
            ) -> tuple[list[SplitRow], list[dict[str, str]]]:
    if split not in EVAL_SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(EVAL_SPLITS)}")
    if not data.exists():
        raise DataError(f"data folder not found: {data}")
    if not data.is_dir():
        raise DataError(f"data path is a file, not a folder of class folders: {data}")
    if split == "all":
        return list_class_folders(data)
    if split_csv is None:
        raise DataError(
            f"--split {split} needs --split-csv FILE (the split.csv written by `kulit data`); "
            "or use --split all to evaluate every image in the class folders"
        )
    from kulit.dataprep.split import load_split  # looked up when run: tests swap it

    rows = [r for r in load_split(Path(split_csv), data) if r.split == split]
    if not rows:
        raise DataError(f"split file {split_csv} has no {split!r} rows")
    return rows, []


def _write_predictions(path: Path, rows: list[tuple[str, str, str, float, bool]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "true", "predicted", "confidence", "uncertain"])
    w.writerows((f, t, p, f"{c:.6f}", str(u).lower()) for f, t, p, c, u in rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


@dataclasses.dataclass
class _Predicted:
    """The readable photos, in order, with their probabilities and predictions.csv's rows."""

    rows: list[SplitRow] = dataclasses.field(default_factory=list)
    probs: list[np.ndarray] = dataclasses.field(default_factory=list)
    lines: list[tuple[str, str, str, float, bool]] = dataclasses.field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.rows]

    @property
    def sources(self) -> list[str]:
        return [r.source for r in self.rows]


def _predict(predictor: Any, entries: list[SplitRow], skipped: list[dict[str, str]],
             progress: Callable[[int, int], None] | None,
             predict_all: Callable[[list[Path]], Iterable[Any]] | None) -> _Predicted:
    """Every selected photo through the served model (here, or by `predict_all`); a photo
    that cannot be read is added to `skipped`."""
    from kulit.serving.predict import Prediction

    chunk = 256  # keep only probabilities: Predictions hold image crops

    def predict_here(files: list[Path]) -> Iterator[Prediction | ImageError]:
        for start in range(0, len(files), chunk):
            yield from predictor.predict_many(files[start: start + chunk], top_k=3,
                                              batch_size=32)

    out = _Predicted()
    results = (predict_all or predict_here)([e.path for e in entries])
    for i, (entry, res) in enumerate(zip(entries, results, strict=True), 1):
        if progress and (i % chunk == 0 or i == len(entries)):
            progress(i, len(entries))
        if isinstance(res, ImageError):
            skipped.append({"file": entry.file, "reason": res.message.split(": ", 1)[-1]})
            continue
        assert isinstance(res, Prediction)
        out.rows.append(entry)
        out.probs.append(res.probs)
        out.lines.append((entry.file, entry.label, res.label, res.confidence,
                          answer_for(res, predictor.card).uncertain))
    return out


def _metrics(model_dir: Path, card: Any, predicted: _Predicted, n_boot: int) -> dict[str, Any]:
    """Overall, per source and per skin-type band, with the confident answers at the card's
    threshold overall and per source."""
    p, y_true, sources = np.stack(predicted.probs), predicted.labels, predicted.sources
    metrics = compute_metrics(y_true, p, card.classes, n_boot=n_boot, seed=card.seed)
    metrics["at_threshold"] = selective_at(p, y_true, card.classes, card.threshold)
    metrics.update(metrics_by_group(y_true, p, card.classes, sources, n_boot=n_boot,
                                    seed=card.seed))
    for name, per in metrics.get("per_source", {}).items():
        rows = [i for i, s in enumerate(sources) if s == name]
        per["at_threshold"] = selective_at(p[rows], [y_true[i] for i in rows], card.classes,
                                           card.threshold)
    metrics["per_band"] = band_figures(model_dir, card, [r.path for r in predicted.rows],
                                       y_true, sources, p, n_boot=n_boot)
    return metrics


def evaluate_model(
    model_dir: Path,
    data: Path,
    *,
    split: str = "test",
    split_csv: Path | None = None,
    out: Path,
    n_boot: int = 1000,
    progress: Callable[[int, int], None] | None = None,
    predict_all: Callable[[list[Path]], Iterable[Any]] | None = None,
) -> dict[str, Any]:
    """Predict every selected image, compute metrics, write the report into `out`; metrics.

    `split` "all" reads every image in `data`'s class folders (folder name = true label);
    "test"/"val"/"train" read that split's rows of `split_csv`. `predict_all` (photos ->
    Prediction or ImageError each, in order) runs them elsewhere, e.g. on Ray (kulit.scale).
    """
    from kulit.serving.predict import Predictor

    model_dir, data, out = Path(model_dir), Path(data), Path(out)
    predictor = Predictor(model_dir)
    card = predictor.card
    entries, skipped = _select(data, split, split_csv)
    predicted = _predict(predictor, entries, skipped, progress, predict_all)
    if not predicted.rows:
        raise DataError(f"no readable image to evaluate in {data} ({len(skipped)} skipped)")
    metrics = _metrics(model_dir, card, predicted, n_boot)
    metrics["skipped"] = sorted(skipped, key=lambda s: s["file"])
    metrics["run"] = {
        "model": card.name, "model_dir": str(model_dir), "data": str(data), "split": split,
        "split_csv": str(split_csv) if split_csv is not None and split != "all" else None,
        "temperature": predictor.temperature, "precision": predictor.precision,
        "threshold": card.threshold, "seed": card.seed,
    }
    title = f"{card.name} on {data.name or data} ({split} split)"
    write_report(metrics, out, title=title, card=card.to_dict())
    try:
        _write_predictions(out / PREDICTIONS_CSV, predicted.lines)
    except OSError as e:
        raise DataError(f"cannot write {out / PREDICTIONS_CSV}: {e.strerror or e}") from None
    if Path(out).resolve() == Path(model_dir).resolve():
        record_in_card(card, metrics, model_dir)
    return metrics


def band_figures(model_dir: Path, card: Any, paths: list[Path], y_true: list[str],
                 sources: list[str], probs: np.ndarray, *, n_boot: int = 1000) -> dict[str, Any]:
    """Every photo's figures per skin-type band, with intervals: by the Fitzpatrick type its
    folder's manifest gives (atlas/), and by the band estimated from its pixels (ITA°, every
    source); overall ("all") and per source, with the shortlist's coverage and size when the
    card has a calibrated shortlist, and the estimate's agreement with the labels here."""
    from kulit.build.skintone import ITA_CUTOFFS, METHOD, agreement, estimate_many
    from kulit.dataprep.fitzpatrick import BANDS, bands_of

    labelled = bands_of(paths)
    estimated = [t.band if t else None for t in estimate_many(paths)]
    lists = shortlists(model_dir, card, probs)

    def groups(bands: list[str | None]) -> dict[str, Any]:
        names = sorted({s for s, b in zip(sources, bands, strict=True) if s and b})
        out = {}
        for name in ["all", *names] if len(names) != 1 else names:
            rows = [i for i, s in enumerate(sources) if name in ("all", s) and bands[i]]
            if rows:
                out[name] = figures_by_slice(
                    [y_true[i] for i in rows], probs[rows], card.classes,
                    [bands[i] for i in rows], card.threshold, order=BANDS, n_boot=n_boot,
                    seed=card.seed, shortlists=None if lists is None else [lists[i] for i in rows])
        return out

    return {
        "bands": list(BANDS),
        "labelled": groups(labelled),
        "estimated": groups(estimated),
        "estimator": {"method": "ITA", **dataclasses.asdict(METHOD), "cutoffs": list(ITA_CUTOFFS),
                      "no_estimate": sum(b is None for b in estimated),
                      "agreement_here": agreement(labelled, estimated)},
    }


def shortlists(model_dir: Path, card: Any, probs: np.ndarray) -> list[list[int]] | None:
    """Each photo's shortlist (class indices) by the card's calibrated rule; None without one."""
    section = ModelDir(model_dir).read_section(SHORTLIST)  # artefact and section share a name
    if not section:
        return None
    from kulit.serving.shortlist import ShortlistRule

    rule = ShortlistRule.from_card(section, card.classes)
    if rule is None:
        return None
    return [rule.members(row, card.threshold) for row in probs]


HEADLINE = ("n", "accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy", "ece", "ci95",
            "at_threshold")


def record_in_card(card: Any, metrics: dict[str, Any], model_dir: Path) -> None:
    """Evaluating into the model's own folder stores the headline numbers in its card,
    overall and, when the split names its sources, per source (with the class predicted
    most above its true share there), and per skin-type band."""
    section = {
        "split": metrics["run"]["split"],
        **{k: metrics.get(k) for k in HEADLINE},
        "per_class": [{k: c.get(k) for k in ("class", "correct", "total", "percent")}
                      for c in metrics.get("per_class", [])],
    }
    shares = metrics.get("prediction_share") or {}
    if metrics.get("per_source"):
        section["per_source"] = {
            name: {**{k: m.get(k) for k in HEADLINE},
                   "max_share_ratio": max_share_ratio(shares.get(name) or {})}
            for name, m in metrics["per_source"].items()
        }
    if metrics.get("per_band"):
        section["per_band"] = metrics["per_band"]
    ModelDir(model_dir).write_section(METRICS, section, card)

