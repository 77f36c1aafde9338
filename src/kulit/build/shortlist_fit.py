"""Fit the shortlist (`kulit shortlist`): conformal cut-offs for the served file, and its figures.

Build side only (crepes, the conformal library). The served model (int8 when it passed its
check, `served_file`) is run once per photo through `photos.extract_features`; the non-
conformity score of a photo is 1 - P(its true class). Cut-offs are fitted on the validation
photos of every skin source in split.csv, with crepes' Mondrian conformal classifier:

- "source-class" (default): Mondrian by (source, class), so the list covers the right
  condition at the level for each class of each source; a photo's source is unknown at serving
  time, so a class's cut-off is the lowest (most inclusive) of its sources' cut-offs. The
  only choice that held its level on every source's test photos (`python
  benchmarks/shortlist.py` compares the four; docs/results.md, The shortlist).
- "class": Mondrian by class, sources pooled.
- "source": Mondrian by source, one cut-off for every class (the lowest of the sources').
- "pooled": plain split conformal over all validation photos.

Figures are measured on each source's test photos (and on every photo of a labelled source the
split does not hold, e.g. atlas/ for a model trained without it), per Fitzpatrick skin-type
band where the manifest has one, and on not-skin / other-conditions photos for the urgency
table, with the one answer rule (`kulit.serving.answer.decide`) as served.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from kulit.build.metrics import round_floats
from kulit.build.photos import (
    Features,
    extract_features,
    outside_rows,
    photo_row,
    read_split_rows,
    softmax,
)
from kulit.build.shortlist_text import ALL, summary_lines
from kulit.build.slices import rate
from kulit.dataprep.fitzpatrick import BANDS, bands_of
from kulit.dataprep.split import SplitRow
from kulit.errors import DataError
from kulit.serving.answer import URGENT_CLASSES, Answer, Cutoffs, decide
from kulit.serving.card import ModelCard
from kulit.serving.gate import load_gate
from kulit.serving.shortlist import DEFAULT_LEVEL, SECTION, ShortlistRule

METHODS = ("source-class", "class", "source", "pooled")


# ---------------------------------------------------------------- the conformal fit


def bin_cutoffs(true_probs: np.ndarray, bins: np.ndarray, level: float) -> dict[Any, float]:
    """Per Mondrian bin, the lowest probability a class may have and still be on the list at
    `level`: crepes' (non-smoothed) p-value of a candidate with score 1 - p is >= 1 - level
    exactly when p >= this cut-off. A bin too small for the level gets 0 (every class on)."""
    from crepes import ConformalClassifier

    scores = 1.0 - np.asarray(true_probs, np.float64)
    bins = np.asarray(bins)
    cc = ConformalClassifier().fit(scores, bins=bins)
    out: dict[Any, float] = {}
    for b in np.unique(bins):
        own = np.unique(scores[bins == b])
        # candidates at each calibration score and just above the largest one
        cand = np.append(own, np.nextafter(own[-1], np.inf))
        p = cc.predict_p(cand, bins=np.full(len(cand), b), smoothing=False)
        ok = cand[p >= 1.0 - level - 1e-12]
        q = float(ok.max()) if len(ok) else -np.inf
        out[b.item() if hasattr(b, "item") else b] = (
            0.0 if q == cand[-1] else float(np.clip(1.0 - q, 0.0, 1.0)))
    return out


def check_args(level: float, method: str) -> None:
    """One clear error for a level or method `fit_cutoffs` cannot use."""
    if method not in METHODS:
        raise DataError(f"unknown shortlist method {method!r}; one of {', '.join(METHODS)}")
    if not 0.5 <= level < 1:
        raise DataError(f"shortlist level must be in [0.5, 1), not {level}")


def fit_cutoffs(probs: np.ndarray, y: np.ndarray, source: np.ndarray, classes: Sequence[str],
                level: float, method: str = "source-class", min_bin: int | None = None
                ) -> tuple[np.ndarray, dict[str, Any]]:
    """Cut-offs [C] fitted on calibration photos, and each bin's own cut-off and size.

    "source-class": a (source, class) cell of fewer than `min_bin` photos (default: the fewest
    that can promise the level at all, 10 at 0.9) would put its class on every list (e.g. the
    7 atlas/ melanomas of a 3-source split); it takes its class's cut-off over every source."""
    check_args(level, method)
    if min_bin is None:
        min_bin = int(np.ceil(1 / (1 - level) - 1e-9))
    true_p = probs[np.arange(len(y)), y]
    names = np.asarray(classes)[y]
    if method == "source-class":
        keys = np.array([f"{s}|{c}" for s, c in zip(source, names, strict=True)])
    elif method == "class":
        keys = np.array([f"{ALL}|{c}" for c in names])
    elif method == "source":
        keys = np.asarray(source, dtype=object).astype(str)
    else:
        keys = np.full(len(y), ALL)
    per_bin = bin_cutoffs(true_p, keys, level)
    if method == "source-class":
        pooled = bin_cutoffs(true_p, np.array([f"{ALL}|{c}" for c in names]), level)
        sizes = {k: int((keys == k).sum()) for k in per_bin}
        per_bin = {k: (v if sizes[k] >= min_bin else pooled[f"{ALL}|{str(k).split('|', 1)[1]}"])
                   for k, v in per_bin.items()}
    cut = np.ones(len(classes))
    for key, c in per_bin.items():
        if method in ("source-class", "class"):
            i = list(classes).index(str(key).split("|", 1)[1])
            cut[i] = min(cut[i], c)
        else:
            cut[:] = np.minimum(cut, c)
    if method in ("source-class", "class"):  # a class without val photos: always on the list
        seen = set(names)
        cut = np.array([cut[i] if c in seen else 0.0 for i, c in enumerate(classes)])
    detail = {str(k): {"cutoff": round(v, 6), "n": int((keys == k).sum())}
              for k, v in per_bin.items()}
    if method == "source-class":
        for d in detail.values():
            d["own_cell"] = d["n"] >= min_bin  # else its class's cut-off over every source
    return cut, detail


# ---------------------------------------------------------------- the photos


@dataclass
class Photos:
    """Every photo measured: features, and per photo its group labels."""

    feats: Features
    role: np.ndarray  # "val" (calibration), "test", "outside" (not-skin / other-conditions)
    band: np.ndarray  # Fitzpatrick band or ""


def external_rows(data_root: Path, classes: Sequence[str], known: set[str]) -> list[SplitRow]:
    """Every photo of a labelled source beside skin8/ that the split does not hold and whose
    labels the model knows (atlas/ for a model trained without it): all of it is test."""
    rows = []
    for folder in sorted(p for p in data_root.iterdir() if p.is_dir()):
        if folder.name in known or not (folder / "manifest.csv").is_file():
            continue
        with open(folder / "manifest.csv", newline="") as f:
            reader = csv.DictReader(f)
            col = "class" if "class" in (reader.fieldnames or []) else "label"
            got = [r for r in reader if r.get(col) in classes]
        rows += [photo_row(data_root, f"{folder.name}/{r['file']}", r[col], "test", folder.name)
                 for r in got]
    return rows


def collect_photos(model_dir: Path, data_root: Path, split_csv: Path, classes: Sequence[str],
                   cache: Path | None = None,
                   progress: Callable[[int, int], None] | None = None) -> Photos:
    split = [r for r in read_split_rows(split_csv, data_root) if r.label in classes
             and r.split in ("val", "test")]
    if not split:
        raise DataError(f"{split_csv}: no val or test photos of the model's classes")
    sources = {r.source for r in split}
    ext = external_rows(data_root, classes, sources | {"not-skin", "other-conditions"})
    outside = outside_rows(data_root)
    rows = split + ext + outside
    missing = [r.file for r in rows if not (data_root / r.file).is_file()]
    if missing:
        raise DataError(f"{len(missing)} photo(s) of the split are not under {data_root}, "
                        f"e.g. {missing[0]}")
    feats = extract_features(model_dir, data_root, rows, cache=cache, progress=progress)
    role = np.array([r.split if i < len(split) else "test" if i < len(split) + len(ext)
                     else "outside" for i, r in enumerate(rows)], dtype=object)
    band = np.array([b or "" for b in bands_of(data_root / r.file for r in rows)], dtype=object)
    return Photos(feats, role, band)


# ---------------------------------------------------------------- figures


def served_answers(photos: Photos, card: ModelCard, model_dir: Path, temperature: float,
                   rule: ShortlistRule | None) -> tuple[np.ndarray, list[Answer]]:
    """(probabilities, the answer each photo gets) with the one rule, gate and cut-offs as
    served (no photo-quality check: these figures are about the list)."""
    probs = softmax(photos.feats.logits, temperature)
    gate = load_gate(model_dir)
    sc = gate.scores(photos.feats.pooled) if gate is not None else None
    cut = Cutoffs.from_card(card.gate if gate is not None else None)
    said = [decide(p, card.classes, card.threshold, cutoffs=cut, shortlist=rule,
                   gate=None if sc is None else {"not_skin": float(sc.not_skin[i]),
                                                 "other": float(sc.other[i])})
            for i, p in enumerate(probs)]
    return probs, said


def group_figures(said: Sequence[Answer], labels: Sequence[str], mask: np.ndarray
                  ) -> dict[str, Any]:
    """The shortlist figures of one group of in-scope photos (see `figures`)."""
    idx = [int(i) for i in np.flatnonzero(mask)]
    listed = [i for i in idx if said[i].shortlist]
    sizes = np.array([len(said[i].shortlist) for i in listed])
    covered = np.array([labels[i] in {c for c, _ in said[i].shortlist} for i in listed], bool)
    useful = np.array([said[i].status in ("answered", "shortlist")
                       and len(said[i].shortlist) <= 2 for i in idx], bool)
    statuses: dict[str, int] = {}
    urgency: dict[str, int] = {}
    for i in idx:
        statuses[said[i].status] = statuses.get(said[i].status, 0) + 1
        urgency[said[i].urgency] = urgency.get(said[i].urgency, 0) + 1
    return {
        "n": int(len(idx)),
        "coverage": rate(covered),
        "mean_size": round(float(sizes.mean()), 4) if len(sizes) else None,
        "useful": rate(useful),
        "listed": rate(np.array([bool(said[i].shortlist) for i in idx], bool)),
        "statuses": dict(sorted(statuses.items())),
        "urgency": dict(sorted(urgency.items())),
    }


def figures(photos: Photos, said: Sequence[Answer], cut: np.ndarray, probs: np.ndarray,
            classes: Sequence[str]) -> dict[str, Any]:
    """Every figure on photos not used for calibration: per source (test split, or every photo
    of an unseen source), per skin-type band, and the urgency table.

    coverage: the right class on the list, among photos that get a list (what "lists like
    this" means on the page); mean_size: of those lists; useful: share of the group's photos
    answered with one or two conditions; set_coverage: the conformal set alone (no gate, no
    usability rules), the figure the guarantee is about."""
    rows = photos.feats.rows
    ok = photos.feats.ok
    labels = [r.label for r in rows]
    src = np.array([r.source for r in rows], dtype=object)
    test = (photos.role == "test") & ok
    y = np.array([list(classes).index(lb) if lb in classes else -1 for lb in labels])
    in_set = np.zeros(len(rows), bool)
    good = y >= 0
    in_set[good] = probs[good, y[good]] >= cut[y[good]]

    def block(mask: np.ndarray) -> dict[str, Any]:
        return {**group_figures(said, labels, mask), "set_coverage": rate(in_set[mask])}

    per_source = {ALL: block(test)}
    for s in sorted(set(src[test])):
        per_source[str(s)] = block(test & (src == s))
    per_band = {}
    for b in BANDS:
        m = test & (photos.band == b)
        if m.any():
            per_band[b] = block(m)
    urgent = np.array([a.urgency == "urgent" for a in said], bool)
    never = np.array([a.urgency == "none" for a in said], bool)
    mel = np.array([lb in URGENT_CLASSES for lb in labels], bool)
    outside = (photos.role == "outside") & ok
    not_skin = outside & (src == "not-skin")
    table: dict[str, Any] = {
        "melanoma_urgent": {ALL: rate(urgent[test & mel]),
                            **{str(s): rate(urgent[test & mel & (src == s)])
                               for s in sorted(set(src[test & mel]))}},
        "non_melanoma_urgent": {ALL: rate(urgent[test & good & ~mel]),
                                **{str(s): rate(urgent[test & good & ~mel & (src == s)])
                                   for s in sorted(set(src[test]))}},
        "not_skin_urgent": rate(urgent[not_skin]),
        "people_urgent": rate(urgent[not_skin & np.array([lb == "people" for lb in labels])]),
        "not_skin_urgency_none": rate(never[not_skin]),
        "other_conditions_urgent": rate(urgent[outside & (src == "other-conditions")]),
        "retake_urgent": "0 by rule: status retake has urgency none",
    }
    for b in BANDS:
        m = test & mel & (photos.band == b)
        if m.any():
            table["melanoma_urgent"][b] = rate(urgent[m])
    return {"per_source": per_source, "per_band": per_band, "urgency": table}


# ---------------------------------------------------------------- the build step


def fit_shortlist(model_dir: Path, data_root: Path, split_csv: Path, *,
                  level: float | None = None, method: str = "source-class",
                  cache: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Fit the cut-offs on the served file and measure them; returns the card section (not
    written: `run_shortlist` writes it through ModelDir)."""
    from kulit.serving.model_dir import ModelDir, file_sha256

    md = ModelDir(model_dir)
    card = md.card()
    precision, served, temperature = md.served(card)
    if level is None:
        level = float(card.section(SECTION).get("level", DEFAULT_LEVEL))
    check_args(level, method)  # before minutes of feature extraction
    t0 = time.perf_counter()
    photos = collect_photos(model_dir, data_root, split_csv, card.classes, cache, progress)
    t1 = time.perf_counter()
    rows = photos.feats.rows
    probs = softmax(photos.feats.logits, temperature)
    cal = (photos.role == "val") & photos.feats.ok
    if not cal.any():
        raise DataError(f"{split_csv}: no val photos to calibrate on")
    y = np.array([card.classes.index(r.label) for r, c in zip(rows, cal, strict=True) if c])
    src = np.array([r.source for r, c in zip(rows, cal, strict=True) if c], dtype=object)
    cut, detail = fit_cutoffs(probs[cal], y, src, card.classes, level, method)
    rule = ShortlistRule(level, cut)
    _, said = served_answers(photos, card, model_dir, temperature, rule)
    figs = figures(photos, said, cut, probs, card.classes)
    section = {
        "level": level,
        "method": method,
        "cutoffs": {c: round(float(v), 6) for c, v in zip(card.classes, cut, strict=True)},
        "unknown_source": "per class, the lowest cut-off of the calibration sources"
        if method != "pooled" else "one pooled calibration",
        "tuned_on": {
            "split": str(split_csv),
            "sources": sorted({str(s) for s in src}),
            "n_val": int(cal.sum()),
            "bins": detail,
            "score": "1 - P(true class), calibrated probabilities of the served file",
            "library": "crepes ConformalClassifier (Mondrian, non-smoothed p-values)",
            "served": {"precision": precision, "file": served.name,
                       "sha256": file_sha256(served), "temperature": temperature},
        },
        "figures": figs,
        "seconds": {"features": round(t1 - t0, 1), "fit": round(time.perf_counter() - t1, 1)},
    }
    return cast("dict[str, Any]", round_floats(section))


def run_shortlist(model_dir: Path, data_root: Path, split_csv: Path, *,
                  level: float | None = None, method: str = "source-class",
                  cache: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[str]:
    """`kulit shortlist`: fit, write card section "shortlist" through ModelDir, summarise."""
    from kulit.serving.model_dir import ModelDir

    section = fit_shortlist(model_dir, data_root, split_csv, level=level, method=method,
                            cache=cache, progress=progress)
    removed = ModelDir(model_dir).write_section(SECTION, section)
    lines = summary_lines(section)
    if removed:
        lines.append(f"voided (measured with the previous shortlist): {', '.join(removed)}; "
                     "run `kulit evaluate` again")
    return lines + [f"wrote card.json section {SECTION!r} in {model_dir}"]
