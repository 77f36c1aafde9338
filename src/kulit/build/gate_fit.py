"""Fit the trust gate (`kulit gate`): the not-skin and none-of-these scorers, and the card cut-offs.

Training side only (scikit-learn); serving reads the result through `serving.gate` and the card.
Everything is fitted on part of the data and reported on the rest: the not-skin scorer on
NOT_SKIN_TUNED categories (held-out categories reported), the "other" scorer on OTHER_TUNED
conditions of both OTHER_FOLDERS, DermNet NZ and Atlas Dermatologico photos, so photo style does
not say "other" (leave-condition-out: held-out conditions of both folders reported), thresholds
and cut-offs on each skin source's validation split, figures on each source's test split. The
folders and lists live in kulit.config.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kulit.build.metrics import rate, wilson  # noqa: F401 (wilson: still imported from here)
from kulit.config import (
    NOT_SKIN_FOLDER,
    NOT_SKIN_TUNED,
    OTHER_FOLDERS,
    OTHER_TUNED,
    SOURCES,
    URGENT_CLASS,
)
from kulit.errors import DataError
from kulit.serving import calibration
from kulit.serving.answer import MELANOMA_KEY, NOT_SKIN_KEY, OTHER_KEY, Answer, Cutoffs, decide
from kulit.serving.card import load_card
from kulit.serving.gate import Gate, GateScores, write_gate_file
from kulit.serving.model_dir import ModelDir, file_sha256, served_file

# the data folders and the tuned / held-out lists live in config (one home for each fact)
SKIN_FOLDERS = SOURCES


@dataclass(frozen=True)
class Row:
    """One photo: its path relative to the data root, label, split and source folder."""

    file: str  # "<folder>/<label>/<name>", relative to the data root
    label: str  # one of the model's classes, a not-skin category or an other condition
    split: str  # train / val / test for skin photos; "tune" / "held_out" for the others
    source: str  # folder name: skin8, skin8-web, atlas, not-skin, other-conditions, atlas-other


def _md5_split(name: str, val: float = 0.2, test: float = 0.1) -> str:
    u = int(hashlib.md5(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "val" if u < test + val else "train"


def dev_split_rows(data_root: Path, folders: Sequence[str] = SKIN_FOLDERS) -> list[Row]:
    """A deterministic 70/20/10 split by md5 of each file name, for development only.

    Near copies are not grouped here; the real split comes from `kulit data` (--split-csv).
    """
    rows = []
    for folder in folders:
        for r in _manifest(data_root / folder):
            rows.append(Row(f"{folder}/{r['file']}", r["class"], _md5_split(r["file"]), folder))
    return rows


def read_split_rows(split_csv: Path) -> list[Row]:
    """Rows of a multi-source split.csv (file,class,split,group,source,origin)."""
    with open(split_csv, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "class", "split", "source"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{split_csv}: missing column(s) {', '.join(sorted(missing))}")
        return [Row(r["file"], r["class"], r["split"], r["source"]) for r in reader]


def _manifest(folder: Path) -> list[dict[str, str]]:
    path = folder / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{folder}: manifest.csv is missing")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def outside_rows(data_root: Path) -> list[Row]:
    """not-skin and other-condition photos (every folder of OTHER_FOLDERS), marked "tune" or
    "held_out" by the fixed lists."""
    rows = []
    folders = [(NOT_SKIN_FOLDER, NOT_SKIN_TUNED)] + [(f, OTHER_TUNED) for f in OTHER_FOLDERS]
    for folder, tuned in folders:
        for r in _manifest(data_root / folder):
            split = "tune" if r["label"] in tuned else "held_out"
            rows.append(Row(f"{folder}/{r['file']}", r["label"], split, folder))
    return rows


# ---------------------------------------------------------------- features


@dataclass
class Features:
    """Per photo, in row order: pooled last-conv features and raw logits (plain view)."""

    rows: list[Row]
    pooled: np.ndarray  # [N, D]
    logits: np.ndarray  # [N, C]
    ok: np.ndarray  # [N] bool: decoded fine

    def select(self, keep: np.ndarray) -> Features:
        idx = np.flatnonzero(keep)
        return Features([self.rows[i] for i in idx], self.pooled[idx], self.logits[idx],
                        self.ok[idx])


def extract_features(model_dir: Path, data_root: Path, rows: Sequence[Row],
                     cache: Path | None = None, batch_size: int = 32, threads: int = 1,
                     progress: Callable[[int, int], None] | None = None) -> Features:
    """Run the served ONNX model (int8 if it passed its check, `model_dir.served_file`) once per
    photo; reuse a cache keyed by that file's sha256."""
    from kulit.errors import ImageError
    from kulit.serving.predict import Predictor

    model_sha = file_sha256(served_file(Path(model_dir), load_card(Path(model_dir)))[1])
    cached: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if "model_sha256" in z.files and str(z["model_sha256"]) == model_sha:
                cached = {f: (p, lg) for f, p, lg in zip(z["files"], z["pooled"], z["logits"],
                                                          strict=True)}
    todo = [r.file for r in rows if r.file not in cached]
    bad: set[str] = set()
    if todo:
        pred = Predictor(model_dir, threads=threads)  # what serving runs
        for i in range(0, len(todo), batch_size):
            chunk, xs = [], []
            for f in todo[i: i + batch_size]:
                try:
                    xs.append(pred.prepare(data_root / f)[1])
                    chunk.append(f)
                except ImageError:
                    bad.add(f)
            if xs:
                logits, fmap = pred.run(np.stack(xs), features=True)
                if fmap is None:
                    raise DataError(f"{model_dir}: the model has no 'features' output")
                for f, p, lg in zip(chunk, fmap.mean(axis=(2, 3)), logits, strict=True):
                    cached[f] = (p.astype(np.float32), lg.astype(np.float32))
            if progress:
                progress(min(i + batch_size, len(todo)), len(todo))
        if cache is not None:
            files = sorted(cached)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, model_sha256=np.array(model_sha), files=np.array(files),
                     pooled=np.stack([cached[f][0] for f in files]),
                     logits=np.stack([cached[f][1] for f in files]))
    dim = next(iter(cached.values()))[0].shape[0] if cached else 0
    n_cls = next(iter(cached.values()))[1].shape[0] if cached else 0
    pooled = np.stack([cached[r.file][0] if r.file in cached else np.zeros(dim, np.float32)
                       for r in rows]) if rows else np.zeros((0, dim), np.float32)
    logits = np.stack([cached[r.file][1] if r.file in cached else np.zeros(n_cls, np.float32)
                       for r in rows]) if rows else np.zeros((0, n_cls), np.float32)
    ok = np.array([r.file in cached for r in rows], bool)
    return Features(list(rows), pooled, logits, ok)


# ---------------------------------------------------------------- fitting and cut-offs


def fit_logistic(z_pos: np.ndarray, z_neg: np.ndarray, c: float, seed: int = 0
                 ) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression on standardised features -> (weights, bias)."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([z_pos, z_neg])
    y = np.concatenate([np.ones(len(z_pos)), np.zeros(len(z_neg))])
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
    clf.fit(x, y)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def rejection_threshold(scores_by_group: dict[str, np.ndarray], max_rate: float) -> float:
    """Lowest cut-off t such that, in every group, at most max_rate of the scores are >= t."""
    t = 0.0
    for s in scores_by_group.values():
        s = np.sort(np.asarray(s, np.float64))[::-1]
        allowed = int(np.floor(max_rate * len(s) + 1e-9))
        if allowed < len(s):
            t = max(t, float(np.nextafter(s[allowed], np.inf)))
    return t


def coverage_cutoff(scores_by_group: dict[str, np.ndarray], coverage: float) -> float:
    """Highest cut-off c such that, in every group, at least `coverage` of the scores are >= c."""
    c = 1.0
    for s in scores_by_group.values():
        s = np.sort(np.asarray(s, np.float64))
        if len(s) == 0:
            continue
        allowed = int(np.floor((1 - coverage) * len(s) + 1e-9))  # may fall below the cut-off
        c = min(c, float(s[allowed]))
    return c


def accuracy_threshold(conf_by_group: dict[str, np.ndarray],
                       correct_by_group: dict[str, np.ndarray], target: float) -> float:
    """Lowest confidence cut-off at which answers with conf >= it are right >= target in every
    group (each group's own lowest, then the highest of those)."""
    t = 0.0
    for g, conf in conf_by_group.items():
        conf = np.asarray(conf, np.float64)
        correct = np.asarray(correct_by_group[g], bool)
        order = np.argsort(-conf, kind="stable")
        acc = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
        ok = np.flatnonzero(acc >= target)
        # the longest prefix (most answers) that is right often enough; ties share a cut-off
        own = 1.0 if len(ok) == 0 else float(conf[order][ok[-1]])
        while len(ok) and np.any(conf[order][ok[-1] + 1:] == own):
            ok = ok[:-1]
            own = 1.0 if len(ok) == 0 else float(conf[order][ok[-1]])
        t = max(t, own)
    return t


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    return calibration.softmax(np.asarray(logits, np.float64) / temperature, axis=-1)


def answers(scores: GateScores | None, probs: np.ndarray, classes: Sequence[str],
            threshold: float, gate_cfg: dict[str, Any] | None) -> list[Answer]:
    """What the server answers each photo (the one rule, answer; no photo-quality check
    here: these figures are about the gate). No gate -> answered / uncertain only."""
    cut = Cutoffs.from_card(gate_cfg if scores is not None else None)
    return [
        decide(p, classes, threshold, cutoffs=cut,
               gate=None if scores is None else {"not_skin": float(scores.not_skin[i]),
                                                 "other": float(scores.other[i])})
        for i, p in enumerate(probs)
    ]


@dataclass(frozen=True)
class GateParams:
    """Targets and regularisation of `kulit gate`; each is recorded in card.gate["tuned_on"]."""

    not_skin_max_rejected: float = 0.02  # skin val photos (per source) allowed to get not_skin
    other_max_inscope: float = 0.10  # in-scope val photos (per source) allowed none_of_these
    melanoma_coverage: float = 0.95  # val melanoma photos (per source) that must trigger
    confident_accuracy: float = 0.90  # confident answers right, val, per source
    c_not_skin: float = 0.1  # inverse L2 strength of the not-skin scorer
    # inverse L2 strength of the none-of-these scorer; a stronger penalty leans less on photo
    # style (AUROC on held-out DermNet conditions 0.78 vs 0.74, when all positives were DermNet)
    c_other: float = 0.01
    seed: int = 0


def _masks(feats: Features) -> dict[str, np.ndarray]:
    src = np.array([r.source for r in feats.rows])
    split = np.array([r.split for r in feats.rows])
    skin = np.isin(src, SKIN_FOLDERS) & feats.ok
    return {
        "skin": skin, "src": src, "split": split,
        "ns": (src == NOT_SKIN_FOLDER) & feats.ok, "oc": np.isin(src, OTHER_FOLDERS) & feats.ok,
    }


def fit_gate(feats: Features, classes: Sequence[str], temperature: float,
             params: GateParams = GateParams()) -> tuple[Gate, dict[str, Any], float]:
    """Fit both scorers and every cut-off -> (gate, card.gate without figures, card.threshold)."""
    m = _masks(feats)
    labels = np.array([r.label for r in feats.rows])
    unknown = sorted(set(labels[m["skin"]]) - set(classes))
    if unknown:
        raise DataError(f"skin rows with labels the model does not know: {unknown}")
    train = m["skin"] & (m["split"] == "train")
    val = m["skin"] & (m["split"] == "val")
    ns_tune = m["ns"] & (m["split"] == "tune")
    oc_tune = m["oc"] & (m["split"] == "tune")
    for name, mask in (("skin train", train), ("skin val", val), ("not-skin tuned", ns_tune),
                       ("other-condition tuned", oc_tune)):
        if not mask.any():
            raise DataError(f"no {name} photos: check the data root and the split")
    fit_x = feats.pooled[train | ns_tune | oc_tune].astype(np.float64)
    mean, scale = fit_x.mean(0), np.maximum(fit_x.std(0), 1e-6)
    z = (feats.pooled.astype(np.float64) - mean) / scale
    w_ns, b_ns = fit_logistic(z[ns_tune], z[train | oc_tune], params.c_not_skin, params.seed)
    w_o, b_o = fit_logistic(z[oc_tune], z[train], params.c_other, params.seed)
    gate = Gate(mean, scale, {"not_skin": w_ns, "other": w_o}, {"not_skin": b_ns, "other": b_o})

    sc = gate.scores(feats.pooled)
    sources = [s for s in SKIN_FOLDERS if (val & (m["src"] == s)).any()]
    by_src = {s: val & (m["src"] == s) for s in sources}
    probs = softmax(feats.logits, temperature)
    y = np.array([list(classes).index(lb) if lb in classes else -1 for lb in labels])
    correct = probs.argmax(1) == y
    mel = list(classes).index(URGENT_CLASS)
    cfg = {
        NOT_SKIN_KEY: rejection_threshold(
            {s: sc.not_skin[k] for s, k in by_src.items()}, params.not_skin_max_rejected),
        OTHER_KEY: rejection_threshold(
            {s: sc.other[k] for s, k in by_src.items()}, params.other_max_inscope),
        MELANOMA_KEY: coverage_cutoff(
            {s: probs[k & (y == mel), mel] for s, k in by_src.items()}, params.melanoma_coverage),
        "tuned_on": {
            "not_skin_categories": list(NOT_SKIN_TUNED),
            "other_conditions": list(OTHER_TUNED),
            "other_folders": [f for f in OTHER_FOLDERS if (oc_tune & (m["src"] == f)).any()],
            "skin_sources": sources,
            "scorers": "standardised pooled features -> class-balanced L2 logistic regression; "
                       "not_skin: tuned not-skin categories vs skin train + tuned "
                       "other conditions; other: tuned other conditions (every folder of "
                       "OTHER_FOLDERS) vs skin train (every skin source)",
            "cut_offs": "each on every skin source's val split (per source, the strictest)",
            "n": {"skin_train": int(train.sum()), "skin_val": int(val.sum()),
                  "not_skin_tuned": int(ns_tune.sum()), "other_tuned": int(oc_tune.sum())},
            "params": {k: getattr(params, k) for k in GateParams.__dataclass_fields__},
        },
    }
    threshold = accuracy_threshold({s: probs[k].max(1) for s, k in by_src.items()},
                                   {s: correct[k] for s, k in by_src.items()},
                                   params.confident_accuracy)
    return gate, cfg, threshold


def gate_figures(feats: Features, classes: Sequence[str], temperature: float, threshold: float,
                 gate: Gate | None, cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Every trust figure on the held-out photos, with Wilson 95% intervals.

    With gate=None: today's behaviour (no gate; "see a doctor" when uncertain or top-1 Melanoma).
    """
    m = _masks(feats)
    labels = np.array([r.label for r in feats.rows])
    probs = softmax(feats.logits, temperature)
    sc = gate.scores(feats.pooled) if gate is not None else None
    said = answers(sc, probs, classes, threshold, cfg if gate is not None else None)
    st = np.array([a.status for a in said], dtype=object)
    mel = list(classes).index(URGENT_CLASS)
    doctor = np.array([a.see_doctor for a in said])
    y = np.array([list(classes).index(lb) if lb in classes else -1 for lb in labels])
    right = probs.argmax(1) == y
    answered = st == "answered"
    test = m["skin"] & (m["split"] == "test")
    sources = [s for s in SKIN_FOLDERS if (test & (m["src"] == s)).any()]

    def per(mask: np.ndarray, hits: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
        out = {"all": rate(hits[mask])}
        for g in sorted(set(groups[mask])):
            out[str(g)] = rate(hits[mask & (groups == g)])
        return out

    ns_held = m["ns"] & (m["split"] == "held_out")
    oc_held = m["oc"] & (m["split"] == "held_out")
    no_confident = st != "answered"
    return {
        "not_skin_held_out_rejected": per(ns_held, st == "not_skin", labels),
        "not_skin_tuned_rejected_in_sample": rate((st == "not_skin")[m["ns"] & ~ns_held]),
        "skin_test_rejected_as_not_skin": per(test, st == "not_skin", m["src"]),
        "other_held_out_rejected_as_not_skin": rate((st == "not_skin")[oc_held]),
        "other_held_out_no_confident_class": per(oc_held, no_confident, labels),
        "other_held_out_no_confident_class_by_source": per(oc_held, no_confident, m["src"]),
        "other_held_out_status": {s: int((st[oc_held] == s).sum()) for s in
                                  ("not_skin", "none_of_these", "uncertain", "answered")},
        "in_scope_test_confident": per(test, answered, m["src"]),
        "melanoma_test_see_doctor": per(test & (y == mel), doctor, m["src"]),
        "non_melanoma_test_see_doctor": per(test & (y != mel), doctor, m["src"]),
        "confident_right_test": {s: rate(right[test & answered & (m["src"] == s)])
                                 for s in sources},
        "threshold": threshold,
    }


def collect_rows(data_root: Path, split_csv: Path | None) -> tuple[list[Row], str]:
    """Skin rows from split.csv (or the md5 dev split) plus the not-skin / other rows."""
    if split_csv is not None:
        skin, how = read_split_rows(split_csv), str(split_csv)
    else:
        skin, how = dev_split_rows(data_root), "dev split: md5 of file name, 70/20/10"
    skin = [r for r in skin if r.source in SKIN_FOLDERS]
    return skin + outside_rows(data_root), how


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


def run_gate(model_dir: Path, data_root: Path, split_csv: Path | None = None,
             cache: Path | None = None, params: GateParams = GateParams(),
             progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Fit the gate on a model directory; write gate.npz, card.gate and the served file's
    temperature and threshold (their one owner, `ModelDir.write_gate`); summarise."""
    card = load_card(model_dir)
    precision, _, temperature_before = served_file(model_dir, card)
    rows, how = collect_rows(data_root, split_csv)
    t0 = time.perf_counter()
    feats = extract_features(model_dir, data_root, rows, cache=cache, progress=progress)
    t1 = time.perf_counter()
    # the temperature, refitted on what the exported model serves on every source's val photos
    m = _masks(feats)
    val = m["skin"] & (m["split"] == "val")
    y_val = np.array([list(card.classes).index(r.label) for r, v in zip(feats.rows, val,
                                                                        strict=True) if v])
    temperature = calibration.fit_temperature(feats.logits[val], y_val)
    gate, cfg, threshold = fit_gate(feats, card.classes, temperature, params)
    figures = gate_figures(feats, card.classes, temperature, threshold, gate, cfg)
    cfg["tuned_on"]["temperature"] = {"before": temperature_before, "after": temperature,
                                      "precision": precision,
                                      "fitted_on": "served val logits, all skin sources"}
    cfg["tuned_on"]["split"] = how
    cfg["tuned_on"]["threshold_before"] = card.gate.get("tuned_on", {}).get(
        "threshold_before", card.threshold)
    cfg["figures"] = figures
    ModelDir(model_dir).write_gate(lambda path: write_gate_file(gate, path), _round(cfg),
                                   temperature, threshold, card)
    return summary_lines(cfg, threshold) + [
        f"features {t1 - t0:.0f} s, fit {time.perf_counter() - t1:.1f} s; wrote "
        f"{model_dir / 'gate.npz'} and card.json (gate, threshold)"]


def _fmt(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{r['rate']:.1%} ({lo:.1%}-{hi:.1%}, {r['k']}/{r['n']})"


def summary_lines(cfg: dict[str, Any], threshold: float) -> list[str]:
    f = cfg["figures"]
    lines = [
        f"{NOT_SKIN_KEY} {cfg[NOT_SKIN_KEY]:.4f}, {OTHER_KEY} {cfg[OTHER_KEY]:.4f}, "
        f"{MELANOMA_KEY} {cfg[MELANOMA_KEY]:.4f}, "
        f"threshold {threshold:.4f}",
        f"not-skin held-out categories rejected: "
        f"{_fmt(f['not_skin_held_out_rejected']['all'])} (target >= 95%)",
        f"other conditions held out, no confident class: "
        f"{_fmt(f['other_held_out_no_confident_class']['all'])} (target >= 80%)",
    ]
    for s, r in f.get("other_held_out_no_confident_class_by_source", {}).items():
        if s != "all":
            lines.append(f"  of which {s}: {_fmt(r)}")
    for s, r in f["skin_test_rejected_as_not_skin"].items():
        lines.append(f"skin test {s}: rejected as not skin {_fmt(r)} (target <= 2%)")
    for s, r in f["in_scope_test_confident"].items():
        lines.append(f"skin test {s}: confident answers {_fmt(r)} (target >= 70%)")
    for s, r in f["melanoma_test_see_doctor"].items():
        lines.append(f"melanoma test {s}: see a doctor {_fmt(r)} (target >= 95%)")
    for s, r in f["confident_right_test"].items():
        lines.append(f"confident answers right, test {s}: {_fmt(r)} (target >= 90%)")
    return lines
