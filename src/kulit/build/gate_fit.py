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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kulit.build.metrics import round_floats
from kulit.build.photos import (
    SKIN_FOLDERS,
    Features,
    collect_rows,
    extract_features,
    softmax,
)
from kulit.build.slices import rate
from kulit.config import (
    NOT_SKIN_FOLDER,
    NOT_SKIN_TUNED,
    OTHER_FOLDERS,
    OTHER_TUNED,
    URGENT_CLASS,
)
from kulit.errors import DataError
from kulit.serving import calibration
from kulit.serving.answer import MELANOMA_KEY, NOT_SKIN_KEY, OTHER_KEY, Answer, Cutoffs, decide
from kulit.serving.card import load_card
from kulit.serving.gate import Gate, GateScores, write_gate_file
from kulit.serving.model_dir import ModelDir, served_file

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
    # style (it scored held-out conditions better when all positives were DermNet's)
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
    ModelDir(model_dir).write_gate(lambda path: write_gate_file(gate, path), round_floats(cfg),
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
