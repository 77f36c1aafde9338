"""The trust gate: fitting, cut-off selection and the gate.npz round trip, on synthetic features."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from kulit.build.gate_fit import (
    GateParams,
    accuracy_threshold,
    coverage_cutoff,
    fit_gate,
    fit_logistic,
    gate_figures,
    rejection_threshold,
)
from kulit.build.photos import (
    SKIN_FOLDERS,
    Features,
    outside_rows,
    photo_row,
    read_split_rows,
)
from kulit.build.slices import wilson
from kulit.config import NOT_SKIN_TUNED, OTHER_FOLDERS, OTHER_TUNED
from kulit.dataprep.split import SplitRow
from kulit.serving.gate import Gate, load_gate, save_gate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STYLE = {"skin8": 2.0, "other-conditions": 2.0, "skin8-web": 0.0, "atlas": -2.0,
         "atlas-other": -2.0}
CLASSES = ["Chickenpox", "Herpes", "Impetigo", "Melanoma", "Psoriasis", "Ringworm", "Vitiligo",
           "Warts"]


def blobs(rng: np.random.Generator, n: int, d: int, shift: float) -> tuple[np.ndarray, ...]:
    centre = np.zeros(d)
    centre[:3] = shift
    return rng.normal(centre, 1.0, (n, d)), rng.normal(-centre, 1.0, (n, d))


def test_logistic_separates_two_blobs() -> None:
    rng = np.random.default_rng(0)
    pos, neg = blobs(rng, 200, 16, 1.5)
    w, b = fit_logistic(pos, neg, c=1.0)
    t_pos, t_neg = blobs(rng, 500, 16, 1.5)  # fresh draws, not the fitted points
    acc = ((t_pos @ w + b > 0).mean() + (t_neg @ w + b <= 0).mean()) / 2
    assert acc > 0.97


def test_rejection_threshold_hits_its_target_per_group_and_moves() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, 1000), rng.beta(2, 5, 400)
    t = rejection_threshold({"a": a, "b": b}, 0.02)
    assert (a >= t).mean() <= 0.02 and (b >= t).mean() <= 0.02
    # strictest group decides: group a alone would need this cut-off, and b passes it too
    assert t == rejection_threshold({"a": a}, 0.02)
    assert (a >= t).mean() > 0.015  # not needlessly strict
    t_shifted = rejection_threshold({"a": np.clip(a + 0.3, 0, 2), "b": b}, 0.02)
    assert t_shifted > t + 0.2
    assert rejection_threshold({"a": a}, 0.10) < t


def test_coverage_cutoff_covers_every_source() -> None:
    rng = np.random.default_rng(2)
    web = rng.beta(2, 2, 120)  # melanoma probabilities of a harder source
    clinic = rng.beta(8, 2, 60)
    c = coverage_cutoff({"clinic": clinic, "web": web}, 0.95)
    for p in (clinic, web):
        assert (p >= c).mean() >= 0.95
    assert c == coverage_cutoff({"web": web}, 0.95) < coverage_cutoff({"clinic": clinic}, 0.95)
    # at most 5% of the hard source may fall below: the cut-off sits at its 6th-lowest value
    assert (web < c).sum() == int(0.05 * 120)
    assert coverage_cutoff({"web": web * 0.5}, 0.95) < c


def test_accuracy_threshold_makes_confident_answers_right() -> None:
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.2, 1.0, 2000)
    correct = rng.uniform(0, 1, 2000) < conf  # right with probability = confidence
    t = accuracy_threshold({"s": conf}, {"s": correct}, 0.9)
    assert correct[conf >= t].mean() >= 0.9
    assert 0.7 < t < 0.9
    t_easier = accuracy_threshold({"s": conf}, {"s": correct | (conf > 0.5)}, 0.9)
    assert t_easier < t


def test_gate_save_load_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    d = 12
    gate = Gate(rng.normal(size=d), rng.uniform(0.5, 2, d),
                {"not_skin": rng.normal(size=d), "other": rng.normal(size=d)},
                {"not_skin": 0.3, "other": -1.2})
    save_gate(gate, tmp_path)
    loaded = load_gate(tmp_path)
    assert loaded is not None
    x = rng.normal(size=(7, d))
    a, b = gate.scores(x), loaded.scores(x)
    assert np.array_equal(a.not_skin, b.not_skin) and np.array_equal(a.other, b.other)
    assert load_gate(tmp_path / "nowhere") is None


def synthetic_features(rng: np.random.Generator, d: int = 24) -> Features:
    """Skin photos near the origin (class signal in dims 3..10), not-skin shifted along dim 0,
    other conditions along dim 1; melanoma logits weaker in the web source. Dim 2 is photo
    style: DermNet (skin8, other-conditions) +2, Atlas (atlas, atlas-other) -2, web 0."""
    rows, pooled, logits = [], [], []

    def add(row: SplitRow, x: np.ndarray, lg: np.ndarray) -> None:
        rows.append(row)
        pooled.append(x)
        logits.append(lg)

    sizes = {"skin8": (160, 120, 60), "skin8-web": (160, 120, 60), "atlas": (64, 48, 48)}
    for source, strength in (("skin8", 3.0), ("skin8-web", 1.5), ("atlas", 2.0)):
        for split, n in zip(("train", "val", "test"), sizes[source], strict=True):
            for i in range(n):
                k = i % len(CLASSES)
                x = rng.normal(0, 1, d)
                x[3 + k] += 2.0
                x[2] += STYLE[source]
                lg = rng.normal(0, 1, len(CLASSES))
                lg[k] += strength
                add(photo_row(DATA, f"{source}/{CLASSES[k]}/{split}{i}.jpg", CLASSES[k], split,
                              source), x, lg)
    for label in ("animals", "people"):
        for i in range(60):
            x = rng.normal(0, 1, d)
            x[0] += 6.0
            split = "tune" if label in NOT_SKIN_TUNED else "held_out"
            add(photo_row(DATA, f"not-skin/{label}/{i}.jpg", label, split, "not-skin"), x,
                rng.normal(0, 1, len(CLASSES)))
    for folder, label in (("other-conditions", "acne-vulgaris"), ("other-conditions", "keloid"),
                          ("atlas-other", "acne"), ("atlas-other", "scabies")):
        for i in range(60):
            x = rng.normal(0, 1, d)
            x[1] += 2.5
            x[2] += STYLE[folder]
            split = "tune" if label in OTHER_TUNED else "held_out"
            add(photo_row(DATA, f"{folder}/{label}/{i}.jpg", label, split, folder), x,
                rng.normal(0, 1, len(CLASSES)))
    return Features(rows, np.array(pooled), np.array(logits), np.ones(len(rows), bool))


def test_fit_gate_on_synthetic_features() -> None:
    feats = synthetic_features(np.random.default_rng(5))
    gate, cfg, threshold = fit_gate(feats, CLASSES, 1.0, GateParams(c_not_skin=1.0, c_other=1.0))
    sc = gate.scores(feats.pooled)
    src = np.array([r.source for r in feats.rows])
    split = np.array([r.split for r in feats.rows])
    labels = np.array([r.label for r in feats.rows])
    # held-out "people" (never fitted on) are rejected; skin val stays within its 2% budget
    assert (sc.not_skin[labels == "people"] >= cfg["not_skin_threshold"]).mean() > 0.95
    for s in SKIN_FOLDERS:
        val = (src == s) & (split == "val")
        assert (sc.not_skin[val] >= cfg["not_skin_threshold"]).mean() <= 0.02
        assert (sc.other[val] >= cfg["other_threshold"]).mean() <= 0.10
    # held-out conditions of both folders are caught
    assert (sc.other[labels == "keloid"] >= cfg["other_threshold"]).mean() > 0.8
    assert (sc.other[labels == "scabies"] >= cfg["other_threshold"]).mean() > 0.8
    assert cfg["tuned_on"]["skin_sources"] == list(SKIN_FOLDERS)
    assert cfg["tuned_on"]["other_folders"] == list(OTHER_FOLDERS)
    # melanoma cut-off: every source's val melanoma photos covered >= 95%, the web one binding
    p = np.exp(feats.logits - feats.logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mel = (labels == "Melanoma") & (split == "val")
    for s in ("skin8", "skin8-web"):
        assert (p[mel & (src == s), 3] >= cfg["melanoma_cutoff"]).mean() >= 0.95
    assert 0.0 < threshold < 1.0
    assert cfg["tuned_on"]["not_skin_categories"] == list(NOT_SKIN_TUNED)


def test_other_conditions_of_one_style_only_miss_the_other_style() -> None:
    """Why atlas-other is tuned on too: with DermNet-only "other" photos the scorer learns
    DermNet's style as "other" and misses held-out conditions photographed elsewhere."""
    feats = synthetic_features(np.random.default_rng(5))
    src = np.array([r.source for r in feats.rows])
    split = np.array([r.split for r in feats.rows])
    labels = np.array([r.label for r in feats.rows])
    caught = {}
    for name, keep in (("both", np.ones(len(src), bool)),
                       ("dermnet", ~((src == "atlas-other") & (split == "tune")))):
        gate, cfg, _ = fit_gate(feats.select(keep), CLASSES, 1.0,
                                GateParams(c_not_skin=1.0, c_other=1.0))
        caught[name] = (gate.scores(feats.pooled).other[labels == "scabies"]
                        >= cfg["other_threshold"]).mean()
    assert caught["both"] > 0.8
    assert caught["both"] > caught["dermnet"] + 0.15


def test_figures_report_held_out_conditions_of_both_folders() -> None:
    feats = synthetic_features(np.random.default_rng(6))
    gate, cfg, threshold = fit_gate(feats, CLASSES, 1.0, GateParams(c_not_skin=1.0, c_other=1.0))
    f = gate_figures(feats, CLASSES, 1.0, threshold, gate, cfg)
    by_src = f["other_held_out_no_confident_class_by_source"]
    assert by_src["other-conditions"]["n"] == 60 and by_src["atlas-other"]["n"] == 60
    assert by_src["all"]["n"] == 120  # keloid and scabies: the tuned acne photos are not here
    assert set(f["skin_test_rejected_as_not_skin"]) == {"all", *SKIN_FOLDERS}
    assert set(f["confident_right_test"]) == set(SKIN_FOLDERS)


def _folder(root: Path, name: str, labels: list[str]) -> None:
    (root / name).mkdir(parents=True)
    with open(root / name / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows((f"{lb}/{i}.jpg", lb) for lb in labels for i in range(2))


def test_outside_rows_read_every_other_folder_on_one_list(tmp_path: Path) -> None:
    _folder(tmp_path, "not-skin", ["animals", "people"])
    _folder(tmp_path, "other-conditions", ["acne-vulgaris", "keloid"])
    _folder(tmp_path, "atlas-other", ["acne", "keloid", "scabies"])
    rows = outside_rows(tmp_path)
    side = {(r.source, r.label): r.split for r in rows}
    assert side == {
        ("not-skin", "animals"): "tune", ("not-skin", "people"): "held_out",
        ("other-conditions", "acne-vulgaris"): "tune",
        ("other-conditions", "keloid"): "held_out", ("atlas-other", "keloid"): "held_out",
        ("atlas-other", "acne"): "tune", ("atlas-other", "scabies"): "held_out",
    }
    assert all(r.file.startswith(f"{r.source}/{r.label}/") for r in rows)


@pytest.mark.skipif(not (DATA / "atlas-other").is_dir(), reason="../shared/data not present")
def test_tuned_conditions_exist_and_both_folders_hold_some_out() -> None:
    """Every tuned name is a real condition folder (a typo would silently hold it out), and each
    other-condition folder has conditions on both sides (leave-condition-out per source)."""
    found = {f: {p.name for p in (DATA / f).iterdir() if p.is_dir()} for f in OTHER_FOLDERS}
    assert set(OTHER_TUNED) <= set().union(*found.values())
    for names in found.values():
        tuned = names & set(OTHER_TUNED)
        assert 0.3 <= len(tuned) / len(names) <= 0.6


def test_read_split_rows_accepts_the_multi_source_format(tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class", "split", "group", "source", "origin"])
        w.writerow(["skin8-web/Herpes/x.jpg", "Herpes", "val", "g1", "skin8-web", "web"])
    assert read_split_rows(path, tmp_path) == [SplitRow(
        tmp_path / "skin8-web/Herpes/x.jpg", "skin8-web/Herpes/x.jpg", "Herpes", "val", "g1",
        "skin8-web", "web")]
    bad = tmp_path / "old.csv"
    bad.write_text("file,class,split,group\nHerpes/x.jpg,Herpes,val,g\n")
    with pytest.raises(Exception, match="source"):
        read_split_rows(bad, tmp_path)


def test_wilson_interval() -> None:
    lo, hi = wilson(19, 20) or (0, 0)
    assert lo < 0.95 < hi and hi <= 1.0 and 0.7 < lo < 0.8
    assert wilson(0, 0) is None


@pytest.mark.parametrize("int8", [False, True])
def test_run_gate_fits_the_served_files_temperature(tmp_path: Path, monkeypatch, int8) -> None:
    """`kulit gate` works on what is served: with a passed int8 file its temperature goes to
    card.int8 (where serving reads it) and the fp32 one is left alone; else card.temperature."""
    import shutil

    from kulit.build import gate_fit
    from kulit.serving.card import load_card, save_card
    from kulit.serving.model_dir import file_sha256, served_file
    from tests.conftest import write_onnx_model_dir

    model = tmp_path / "model"
    write_onnx_model_dir(model, CLASSES, input_size=32, channels=6)
    card = load_card(model)
    if int8:
        shutil.copy(model / "model.onnx", model / "model-int8.onnx")
        card.files = {**card.files, "int8": "model-int8.onnx"}
        card.int8 = {"file": "model-int8.onnx", "passed": True, "temperature": 9.0,
                     "source_sha256": file_sha256(model / "model.onnx")}
        save_card(card, model)
    fp32_t = card.temperature
    feats = synthetic_features(np.random.default_rng(5))
    monkeypatch.setattr(gate_fit, "collect_rows", lambda root, split: (feats.rows, "synthetic"))
    monkeypatch.setattr(gate_fit, "extract_features", lambda *a, **k: feats)
    gate_fit.run_gate(model, tmp_path, params=GateParams(c_not_skin=1.0, c_other=1.0))
    after = load_card(model)
    precision, _, served_t = served_file(model, after)
    assert precision == ("int8" if int8 else "fp32")
    assert served_t != 9.0 and 0.05 < served_t < 20
    assert after.gate["tuned_on"]["temperature"]["precision"] == precision
    assert after.temperature == (fp32_t if int8 else served_t)
    assert (model / "gate.npz").is_file()


def test_dev_split_reads_either_manifest_column(tmp_path: Path) -> None:
    """skin8's manifests name the class in `class`, atlas/'s in `label`: the dev split (kulit
    gate without --split-csv) reads both, and every row keeps its file, class and source."""
    from kulit.build.photos import dev_split_rows

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.csv").write_text("file,class\nMelanoma/x.jpg,Melanoma\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.csv").write_text(
        "file,label,fitzpatrick\nVitiligo/y.jpg,Vitiligo,5\n")
    rows = dev_split_rows(tmp_path, ("a", "b"))
    assert [(r.file, r.label, r.source) for r in rows] == [
        ("a/Melanoma/x.jpg", "Melanoma", "a"), ("b/Vitiligo/y.jpg", "Vitiligo", "b")]
    assert all(r.split in ("train", "val", "test") for r in rows)
