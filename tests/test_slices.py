"""Figures per skin-type band: the one slicing helper, each figure and its interval, and
`kulit evaluate`'s per-band section (labelled by the manifest, estimated from pixels)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kulit.build.report import render_report
from kulit.build.slices import figures_by_slice, rate, slice_figures, slice_rows, wilson

CLASSES = ["A", "B", "C", "D"]


def onehot(idx: list[int], p: float = 0.7) -> np.ndarray:
    out = np.full((len(idx), len(CLASSES)), (1 - p) / (len(CLASSES) - 1))
    out[np.arange(len(idx)), idx] = p
    return out


def test_slice_rows_keeps_the_order_and_empty_bands() -> None:
    got = slice_rows(["V-VI", None, "I-II", "", "V-VI", "extra"], order=("I-II", "III-IV",
                                                                         "V-VI"))
    assert list(got) == ["I-II", "III-IV", "V-VI", "extra"]
    assert got["I-II"].tolist() == [2] and got["III-IV"].tolist() == []
    assert got["V-VI"].tolist() == [0, 4] and got["extra"].tolist() == [5]


def test_rate_and_wilson() -> None:
    r = rate([True] * 19 + [False])
    assert (r["k"], r["n"], r["rate"]) == (19, 20, 0.95)
    lo, hi = r["ci95"]
    assert 0.75 < lo < 0.78 and 0.98 < hi <= 1.0
    assert wilson(0, 0) is None and rate([])["rate"] is None
    assert wilson(0, 4)[0] == 0.0 and wilson(0, 4)[1] > 0.4  # no hit in 4 is not "0% sure"


def test_slice_figures_counts_each_figure() -> None:
    y = ["A", "A", "B", "B", "C", "Z"]  # Z: not a model class, left out
    # predictions: A right (sure), A wrong -> B (unsure), B right (sure), B wrong -> A (sure),
    # C wrong, C second
    probs = np.vstack([onehot([0], 0.9), onehot([1], 0.5), onehot([1], 0.95), onehot([0], 0.9),
                       [[0.5, 0.1, 0.3, 0.1]], onehot([0])])
    f = slice_figures(y, probs, CLASSES, threshold=0.8, n_boot=200, seed=0,
                      shortlists=[[0], [1, 0], [1], [0, 2, 1], [0], [0]])
    assert f["n"] == 5
    assert (f["accuracy"]["k"], f["accuracy"]["n"]) == (2, 5)
    assert f["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert f["balanced_accuracy_ci95"] is None  # 5 photos: too few to bootstrap honestly
    big = slice_figures(y * 4, np.vstack([probs] * 4), CLASSES, 0.8, n_boot=200)
    lo, hi = big["balanced_accuracy_ci95"]
    assert lo < big["balanced_accuracy"] < hi
    assert f["top3_accuracy"]["k"] == 5  # C is second in its row; every true class in the top 3
    assert (f["confident"]["k"], f["confident"]["n"]) == (3, 5)
    assert (f["confident_right"]["k"], f["confident_right"]["n"]) == (2, 3)
    sl = f["shortlist"]
    assert (sl["coverage"]["k"], sl["coverage"]["n"]) == (4, 5)  # only the C photo is missed
    assert sl["mean_size"] == pytest.approx((1 + 2 + 1 + 3 + 1) / 5)
    assert sl["one_or_two"]["k"] == 4
    assert "shortlist" not in slice_figures(y, probs, CLASSES, 0.8, n_boot=0)


def test_figures_by_slice_equals_each_slice_alone() -> None:
    rng = np.random.default_rng(0)
    y = [CLASSES[i] for i in rng.integers(0, 4, 60)]
    probs = rng.dirichlet(np.ones(4), 60)
    bands = [["I-II", "III-IV", "V-VI", None][i] for i in rng.integers(0, 4, 60)]
    got = figures_by_slice(y, probs, CLASSES, bands, 0.5, order=("I-II", "III-IV", "V-VI"),
                           n_boot=100, seed=1)
    assert list(got) == ["I-II", "III-IV", "V-VI"]
    for band, f in got.items():
        rows = [i for i, b in enumerate(bands) if b == band]
        assert f == slice_figures([y[i] for i in rows], probs[rows], CLASSES, 0.5, n_boot=100,
                                  seed=1)
    assert sum(f["n"] for f in got.values()) == sum(b is not None for b in bands)
    empty = figures_by_slice(y[:2], probs[:2], CLASSES, [None, None], 0.5, order=("I-II",))
    assert empty["I-II"]["n"] == 0 and empty["I-II"]["accuracy"]["rate"] is None
    with pytest.raises(ValueError):
        figures_by_slice(y, probs, CLASSES, bands[:3], 0.5)


def test_report_shows_every_band_with_its_interval() -> None:
    f = slice_figures(["A", "B"], onehot([0, 0]), CLASSES, 0.5, n_boot=50)
    m = {"per_band": {"bands": ["I-II", "III-IV", "V-VI"],
                      "labelled": {"atlas": {"I-II": f, "V-VI": f}},
                      "estimated": {"all": {"III-IV": f}},
                      "estimator": {"cutoffs": [38.0, 10.0],
                                    "agreement_here": {"n": 7, "exact": 0.5, "within_one": 1.0,
                                                       "kappa_linear": 0.3}}}}
    base = json.loads((Path(__file__).with_name("data") / "report" / "metrics.json").read_text())
    text = render_report({**base, **m}, title="t").split("## Per skin type")[1]
    assert "| atlas | I-II | 2 | 50.0% (" in text and "| atlas | V-VI |" in text
    assert "(too few photos)" in text  # no bootstrap interval for 2 photos
    assert "| all | III-IV | 2 |" in text and "above 38°" in text
    assert "these 7 photos: same band 50.0%" in text
    assert "## Per skin type" not in render_report({**base, "per_band": {}}, title="t")


def test_evaluate_reports_labelled_and_estimated_bands(onnx_model_dir: Path,
                                                        tmp_path: Path) -> None:
    """An atlas-like folder whose manifest gives Fitzpatrick types: metrics.json and report.md
    carry both band tables, and evaluating into the model folder puts them in the card."""
    import shutil

    from kulit.build.evaluate import evaluate_model
    from kulit.serving.card import load_card

    data = tmp_path / "atlas"
    skin = {"I-II": (236, 204, 184), "V-VI": (105, 70, 52)}
    types = {"I-II": 2, "V-VI": 6}
    rows = []
    for cls in ("Melanoma", "Psoriasis"):
        (data / cls).mkdir(parents=True)
        for band, colour in skin.items():
            for i in range(3):
                arr = np.clip(np.asarray(colour) + np.random.default_rng(i).normal(
                    0, 4, (80, 80, 3)), 0, 255).astype(np.uint8)
                name = f"{band}-{i}.jpg"
                Image.fromarray(arr).save(data / cls / name)
                rows.append((f"{cls}/{name}", cls, types[band] if i < 2 else -1))
    with open(data / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "fitzpatrick"])
        w.writerows(rows)
    model = tmp_path / "model"
    shutil.copytree(onnx_model_dir, model)
    m = evaluate_model(model, data, split="all", out=model, n_boot=50)
    pb = m["per_band"]
    labelled = pb["labelled"]["all"]
    assert [labelled[b]["n"] for b in ("I-II", "III-IV", "V-VI")] == [4, 0, 4]  # -1: unknown
    est = pb["estimated"]["all"]
    assert [est[b]["n"] for b in ("I-II", "III-IV", "V-VI")] == [6, 0, 6]
    assert pb["estimator"]["agreement_here"]["exact"] == 1.0
    saved = json.loads((model / "metrics.json").read_text())
    assert saved["per_band"]["labelled"]["all"]["V-VI"]["n"] == 4
    assert "## Per skin type" in (model / "report.md").read_text()
    card = load_card(model)
    assert card.metrics["per_band"]["estimated"]["all"]["I-II"]["n"] == 6
