"""Metrics against hand-computed numbers, calibration, temperature fitting, report, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from kulit.build.evaluate import PREDICTIONS_CSV, evaluate_model
from kulit.build.metrics import compute_metrics, expected_calibration_error
from kulit.build.report import write_report
from kulit.cli import app
from kulit.serving.calibration import fit_temperature, softmax
from kulit.serving.model_dir import METRICS_JSON, PLOTS, REPORT_MD
from tests.conftest import make_image

REQUIRED_KEYS = {
    "n", "accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy", "ece", "per_class",
    "confusion_matrix", "classes", "ci95", "risk_coverage", "reliability", "unknown_classes",
    "nll",
}

# 4 classes, 10 images; D never occurs (zero support) but is predicted once (row 3).
CLASSES = ["A", "B", "C", "D"]
Y = list("AAAABBBCCC")
P = np.array([
    [0.7, 0.1, 0.1, 0.1],  # A -> A
    [0.6, 0.2, 0.1, 0.1],  # A -> A
    [0.5, 0.3, 0.1, 0.1],  # A -> A
    [0.1, 0.2, 0.3, 0.4],  # A -> D, A ranked 4th: not in the top 3
    [0.1, 0.8, 0.05, 0.05],  # B -> B
    [0.2, 0.6, 0.1, 0.1],  # B -> B
    [0.3, 0.2, 0.4, 0.1],  # B -> C, B ranked 3rd
    [0.1, 0.1, 0.7, 0.1],  # C -> C
    [0.5, 0.3, 0.15, 0.05],  # C -> A, C ranked 3rd
    [0.2, 0.1, 0.6, 0.1],  # C -> C
])


def _no_nan(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


# --- compute_metrics on a hand-built example ---------------------------------------------------


def test_metrics_match_hand_computed_numbers() -> None:
    m = compute_metrics(Y, P, CLASSES, n_boot=200)
    assert REQUIRED_KEYS <= set(m)
    assert m["n"] == 10 and m["classes"] == CLASSES
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert m["top3_accuracy"] == pytest.approx(0.9)
    # macro F1 over the classes present (A, B, C): F1 = 0.75, 0.8, 2/3
    assert m["macro_f1"] == pytest.approx((0.75 + 0.8 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[3, 0, 0, 1], [0, 2, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    table = {r["class"]: r for r in m["per_class"]}
    assert [r["class"] for r in m["per_class"]] == CLASSES
    assert (table["A"]["correct"], table["A"]["wrong"], table["A"]["total"]) == (3, 1, 4)
    assert table["A"]["percent"] == pytest.approx(75.0)
    assert (table["B"]["correct"], table["B"]["wrong"], table["B"]["total"]) == (2, 1, 3)
    assert table["B"]["percent"] == pytest.approx(200 / 3)
    assert table["B"]["precision"] == pytest.approx(1.0)  # predicted B twice, both right
    assert table["B"]["recall"] == pytest.approx(2 / 3)
    assert table["B"]["f1"] == pytest.approx(0.8)
    assert table["C"]["precision"] == pytest.approx(2 / 3)
    assert table["A"]["precision"] == pytest.approx(0.75)
    expected_nll = -np.mean(np.log([0.7, 0.6, 0.5, 0.1, 0.8, 0.6, 0.2, 0.7, 0.15, 0.6]))
    assert m["nll"] == pytest.approx(expected_nll)
    # confidences .4 (2 wrong), .5 (1 of 2 right), .6 (3 right), .7 (2 right), .8 (1 right)
    assert m["ece"] == pytest.approx((2 * 0.4 + 0 + 3 * 0.4 + 2 * 0.3 + 0.2) / 10)
    json.dumps(m, allow_nan=False)


def test_zero_support_class_is_listed_with_null_percent() -> None:
    m = compute_metrics(Y, P, CLASSES, n_boot=0)
    d = m["per_class"][3]
    assert d["class"] == "D" and d["total"] == 0 and d["support"] == 0
    assert d["percent"] is None and d["recall"] is None
    assert d["precision"] == 0.0  # predicted once, wrongly
    assert m["ci95"] == {"accuracy": None, "balanced_accuracy": None}


def test_risk_coverage_and_reliability() -> None:
    m = compute_metrics(Y, P, CLASSES, n_boot=0)
    rc = {r["threshold"]: r for r in m["risk_coverage"]}
    assert sorted(rc) == pytest.approx([0.05 * i for i in range(20)])
    assert rc[0.0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": 0.7, "n": 10}
    assert rc[0.5]["n"] == 8 and rc[0.5]["coverage"] == pytest.approx(0.8)
    assert rc[0.5]["accuracy"] == pytest.approx(7 / 8)  # the .4 answers (both wrong) dropped
    assert rc[0.95]["n"] == 0 and rc[0.95]["accuracy"] is None
    bins = m["reliability"]["bins"]
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 10
    for b in bins:
        if b["count"]:
            assert b["lo"] <= b["confidence"] <= b["hi"]
        else:
            assert b["confidence"] is None and b["accuracy"] is None


def test_unknown_class_is_reported_and_left_out() -> None:
    y = [*Y, "Zed", "Zed", "Acne"]
    p = np.vstack([P, [[0.1, 0.7, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.9, 0.05, 0.03, 0.02]]])
    m = compute_metrics(y, p, CLASSES, n_boot=50)
    assert m["n"] == 10 and m["accuracy"] == pytest.approx(0.7)
    assert m["unknown_classes"] == [
        {"class": "Acne", "n": 1, "predicted": {"A": 1}},
        {"class": "Zed", "n": 2, "predicted": {"B": 2}},
    ]
    assert sum(map(sum, m["confusion_matrix"])) == 10


def test_only_unknown_labels_does_not_crash() -> None:
    m = compute_metrics(["X", "Y"], np.full((2, 4), 0.25), CLASSES)
    assert m["n"] == 0 and m["accuracy"] is None and m["ece"] is None
    assert [u["n"] for u in m["unknown_classes"]] == [1, 1]
    assert all(r["percent"] is None for r in m["per_class"])
    json.dumps(m, allow_nan=False)


def test_bad_probs_shape_raises() -> None:
    with pytest.raises(ValueError, match="probs must be"):
        compute_metrics(Y, P[:, :3], CLASSES)


def testbootstrap_ci_is_seeded_and_contains_the_estimate() -> None:
    rng = np.random.default_rng(1)
    n, k = 300, 5
    y_idx = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y_idx] += 1.5
    y = [f"c{i}" for i in y_idx]
    classes = [f"c{i}" for i in range(k)]
    probs = softmax(logits)
    a = compute_metrics(y, probs, classes, n_boot=500, seed=7)
    b = compute_metrics(y, probs, classes, n_boot=500, seed=7)
    c = compute_metrics(y, probs, classes, n_boot=500, seed=8)
    assert a["ci95"] == b["ci95"]
    assert a["ci95"] != c["ci95"]
    for key in ("accuracy", "balanced_accuracy"):
        lo, hi = a["ci95"][key]
        assert lo < a[key] < hi
        assert 0.03 < hi - lo < 0.25  # about +-1.96 * sqrt(p(1-p)/n) = +-0.055 at n=300


# --- calibration -------------------------------------------------------------------------------


def test_ece_hand_example() -> None:
    assert expected_calibration_error([0.9] * 10, [1] * 5 + [0] * 5) == pytest.approx(0.4)
    assert np.isnan(expected_calibration_error([], []))


def test_ece_calibrated_small_overconfident_large() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 20000)
    calibrated = rng.uniform(size=conf.size) < conf
    assert expected_calibration_error(conf, calibrated) < 0.02
    over = rng.uniform(0.9, 1.0, 20000)
    right = rng.uniform(size=over.size) < 0.6
    assert expected_calibration_error(over, right) > 0.3


def test_fit_temperature_stays_in_bounds() -> None:
    logits = np.array([[10.0, -10.0], [10.0, -10.0]])
    # always right: sharper is always better, towards the lower bound (until NLL is flat)
    always_right = fit_temperature(np.array([[1.0, -1.0], [1.0, -1.0]]), np.array([0, 0]))
    assert 0.05 <= always_right < 0.1
    assert fit_temperature(logits, np.array([1, 1])) == pytest.approx(20.0, rel=1e-3)
    with pytest.raises(ValueError):
        fit_temperature(logits, np.array([0, 5]))


# --- report ------------------------------------------------------------------------------------


def test_write_report_files(tmp_path: Path) -> None:
    m = compute_metrics([*Y, "Zed"], np.vstack([P, [[0.25] * 4]]), CLASSES, n_boot=100)
    card = {"name": "m1", "limits": ["Trained on light skin only."],
            "data": {"sources": ["DermNet NZ"], "licence": "CC BY-NC-ND 3.0 NZ"}}
    write_report(m, tmp_path / "rep", title="m1 on test", card=card)
    out = tmp_path / "rep"
    saved = _no_nan(out / METRICS_JSON)
    assert REQUIRED_KEYS <= set(saved)
    assert saved["per_class"][3]["percent"] is None
    md = (out / REPORT_MD).read_text()
    assert md.startswith("# m1 on test")
    assert "Not a diagnosis" in md and "Trained on light skin only." in md
    assert "CC BY-NC-ND 3.0 NZ" in md and "DermNet NZ" in md
    assert "| A | 3 | 1 | 4 | 75.0% | 0.75 | 0.75 | 0.75 |" in md
    assert "| D | 0 | 0 | 0 | n/a |" in md
    assert "Zed: 1 image;" in md
    for name in PLOTS:
        with Image.open(out / name) as im:
            assert im.size[0] > 300 and im.size[1] > 300
    # deterministic bytes
    first = (out / METRICS_JSON).read_bytes()
    write_report(m, out, title="m1 on test", card=card)
    assert (out / METRICS_JSON).read_bytes() == first


def test_import_is_light() -> None:
    code = ("import sys, kulit.build.evaluate; "
            "print(sorted(m for m in ('matplotlib', 'sklearn', 'scipy', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture()
def labelled(tmp_path: Path) -> Path:
    """Melanoma x3 (+1 corrupt), Herpes x3, Acne x2 (unknown to the model), a top-level file."""
    root = tmp_path / "photos"
    for c, (name, n) in enumerate([("Melanoma", 3), ("Herpes", 3), ("Acne", 2)]):
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            make_image(100 * c + i, (64, 48), c).save(d / f"{name.lower()}_{i}.jpg")
    (root / "Melanoma" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "Melanoma" / ".DS_Store").write_bytes(b"junk")
    (root / "manifest.csv").write_text("file,class\n")
    return root


runner = CliRunner()


def test_cli_evaluate_all(onnx_model_dir: Path, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--model", str(onnx_model_dir), "--data",
                                 str(labelled), "--split", "all", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "ECE" in result.stdout
    assert f"report: {out / REPORT_MD}" in result.stdout
    m = _no_nan(out / METRICS_JSON)
    assert REQUIRED_KEYS <= set(m)
    assert m["n"] == 6
    assert [(u["class"], u["n"]) for u in m["unknown_classes"]] == [("Acne", 2)]
    assert [s["file"] for s in m["skipped"]] == ["Melanoma/broken.jpg"]
    assert len(m["per_class"]) == 8
    totals = {r["class"]: r["total"] for r in m["per_class"]}
    assert totals["Melanoma"] == 3 and totals["Herpes"] == 3 and totals["Chickenpox"] == 0
    assert m["run"]["split"] == "all" and m["at_threshold"]["threshold"] == 0.5
    with (out / PREDICTIONS_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and set(rows[0]) == {"file", "true", "predicted", "confidence",
                                              "uncertain"}
    assert {r["true"] for r in rows} == {"Melanoma", "Herpes", "Acne"}
    correct = sum(r["true"] == r["predicted"] for r in rows if r["true"] != "Acne")
    assert m["accuracy"] == pytest.approx(correct / 6)
    md = (out / REPORT_MD).read_text()
    assert "Melanoma/broken.jpg" in md and "Acne: 2 images" in md and "generated" in md
    for name in PLOTS:
        assert (out / name).stat().st_size > 1000


def test_evaluate_model_split_csv(onnx_model_dir: Path, labelled: Path, tmp_path: Path) -> None:
    split_csv = tmp_path / "split.csv"
    split_csv.write_text(
        "file,class,split,group\n"
        "Melanoma/melanoma_0.jpg,Melanoma,test,g0\n"
        "Melanoma/melanoma_1.jpg,Melanoma,train,g1\n"
        "Herpes/herpes_0.jpg,Herpes,test,g2\n"
        "Herpes/herpes_1.jpg,Herpes,val,g3\n"
    )
    m = evaluate_model(onnx_model_dir, labelled, split="test", split_csv=split_csv,
                       out=tmp_path / "e", n_boot=50)
    assert m["n"] == 2 and m["skipped"] == [] and m["unknown_classes"] == []
    m = evaluate_model(onnx_model_dir, labelled, split="val", split_csv=split_csv,
                       out=tmp_path / "v", n_boot=50)
    assert m["n"] == 1 and m["per_class"][1]["total"] == 1  # Herpes


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_cli_missing_split_csv(onnx_model_dir: Path, labelled: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--model", str(onnx_model_dir), "--data",
                                 str(labelled), "--out", str(tmp_path / "o")])
    line = _one_line_error(result)
    assert "--split-csv" in line and "--split all" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("what", ["model", "data", "split_csv", "split"])
def test_cli_bad_inputs_exit_2(what: str, onnx_model_dir: Path, labelled: Path,
                               tmp_path: Path) -> None:
    args = {"--model": str(onnx_model_dir), "--data": str(labelled),
            "--split-csv": str(tmp_path / "split.csv"), "--split": "test"}
    (tmp_path / "split.csv").write_text("file,class,split,group\n"
                                        "Herpes/herpes_0.jpg,Herpes,test,g\n")
    if what == "model":
        args["--model"] = str(tmp_path / "no_model")
    elif what == "data":
        args["--data"] = str(tmp_path / "no_data")
    elif what == "split_csv":
        args["--split-csv"] = str(tmp_path / "missing.csv")
    else:
        args["--split"] = "holdout"
    cmd = ["evaluate", "--out", str(tmp_path / "o")] + [x for kv in args.items() for x in kv]
    line = _one_line_error(runner.invoke(app, cmd))
    expected = {"model": "model directory not found", "data": "data folder not found",
                "split_csv": "split file not found", "split": "unknown split"}[what]
    assert expected in line


def test_evaluating_into_the_model_dir_records_metrics_in_the_card(onnx_model_dir, tmp_path):
    import shutil

    from kulit.build.evaluate import evaluate_model
    from kulit.serving.card import load_card
    from tests.conftest import make_image

    model = tmp_path / "model"
    shutil.copytree(onnx_model_dir, model)
    data = tmp_path / "data"
    for c, name in enumerate(["Melanoma", "Herpes"]):
        (data / name).mkdir(parents=True)
        for i in range(3):
            make_image(10 * c + i, (60, 60), c).save(data / name / f"{i}.png")
    m = evaluate_model(model, data, split="all", out=model, n_boot=50)
    card = load_card(model)
    assert card.metrics["n"] == m["n"] == 6
    assert card.metrics["balanced_accuracy"] == m["balanced_accuracy"]
    assert card.metrics["split"] == "all"


def test_metrics_per_source_and_prediction_share() -> None:
    from kulit.build.metrics import metrics_by_group

    probs = np.array(P)
    sources = ["web"] * 4 + ["clinic"] * 6
    got = metrics_by_group(Y, probs, CLASSES, sources, n_boot=0)
    assert list(got["per_source"]) == ["clinic", "web"]
    for name in ("web", "clinic"):
        rows = [i for i, s in enumerate(sources) if s == name]
        alone = compute_metrics([Y[i] for i in rows], probs[rows], CLASSES, n_boot=0)
        assert got["per_source"][name] == alone
    web = got["prediction_share"]["web"]  # rows 0-3: all true A; one predicted D
    assert web["A"] == {"predicted": 0.75, "true": 1.0}
    assert web["D"] == {"predicted": 0.25, "true": 0.0}
    assert metrics_by_group(Y, probs, CLASSES, [""] * 10) == {}


def test_evaluate_reports_every_source(onnx_model_dir: Path, labelled: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A split whose rows name their source (the multi-source split.csv) gets per-source
    numbers in metrics.json and report.md; the overall numbers do not change."""
    import dataclasses

    import kulit.dataprep.split
    from kulit.dataprep.split import SplitRow

    rows = [SplitRow(f, f.relative_to(labelled).as_posix(), f.parent.name, "test", f.stem,
                     source="skin8" if f.parent.name == "Melanoma" else "skin8-web")
            for f in sorted(labelled.glob("[MH]*/*_*.jpg"))]
    monkeypatch.setattr(kulit.dataprep.split, "load_split", lambda *a, **k: rows)
    with_sources = evaluate_model(onnx_model_dir, labelled, split="test",
                                  split_csv=tmp_path / "split.csv", out=tmp_path / "a", n_boot=50)
    monkeypatch.setattr(kulit.dataprep.split, "load_split", lambda *a, **k: [
        dataclasses.replace(r, source="") for r in rows])
    without = evaluate_model(onnx_model_dir, labelled, split="test",
                             split_csv=tmp_path / "split.csv", out=tmp_path / "b", n_boot=50)
    assert "per_source" not in without and "prediction_share" not in without
    # per_band is also split by source ("estimated" skin type per source)
    assert {k: v for k, v in with_sources.items()
            if k not in ("per_source", "prediction_share", "run", "per_band")} == \
        {k: v for k, v in without.items() if k not in ("run", "per_band")}
    per = with_sources["per_source"]
    assert sorted(per) == ["skin8", "skin8-web"] and per["skin8"]["n"] == 3
    assert per["skin8"]["per_class"][1]["total"] == 0 and per["skin8-web"]["n"] == 3
    share = with_sources["prediction_share"]["skin8"]
    assert share["Melanoma"]["true"] == 1.0 and sum(s["predicted"] for s in share.values()) == 1
    saved = json.loads((tmp_path / "a" / METRICS_JSON).read_text())
    assert saved["per_source"]["skin8-web"]["n"] == 3
    md = (tmp_path / "a" / REPORT_MD).read_text()
    assert "## Per data source" in md and "| skin8-web | 3 |" in md
    assert "## Per data source" not in (tmp_path / "b" / REPORT_MD).read_text()


def test_evaluating_per_source_into_the_model_dir_records_it_in_the_card(
        onnx_model_dir: Path, labelled: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """card.metrics.per_source: each source's headline numbers, its confident answers at the
    card's threshold (the same `selective_at` as overall) and its largest prediction-share
    ratio; report.md and metrics.json carry the per-source at_threshold too."""
    import shutil

    import kulit.dataprep.split
    from kulit.dataprep.split import SplitRow
    from kulit.serving.card import load_card

    model = tmp_path / "model"
    shutil.copytree(onnx_model_dir, model)
    rows = [SplitRow(f, f.relative_to(labelled).as_posix(), f.parent.name, "test", f.stem,
                     source="skin8" if f.name.endswith("_0.jpg") else "skin8-web")
            for f in sorted(labelled.glob("[MH]*/*_*.jpg"))]
    monkeypatch.setattr(kulit.dataprep.split, "load_split", lambda *a, **k: rows)
    m = evaluate_model(model, labelled, split="test", split_csv=tmp_path / "split.csv",
                       out=model, n_boot=50)
    card = load_card(model)
    per = card.metrics["per_source"]
    assert sorted(per) == ["skin8", "skin8-web"]
    assert per["skin8"]["n"] == 2 and per["skin8-web"]["n"] == 4
    with open(model / PREDICTIONS_CSV) as f:
        preds = {r["file"]: r for r in csv.DictReader(f)}
    for name, got in per.items():
        full = m["per_source"][name]
        for key in ("n", "accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy", "ece",
                    "ci95", "at_threshold"):
            assert got[key] == full[key], (name, key)
        mine = [preds[r.file] for r in rows if r.source == name]
        answered = [p for p in mine if float(p["confidence"]) >= card.threshold]
        assert got["at_threshold"]["threshold"] == card.threshold
        assert got["at_threshold"]["n"] == len(answered)
        assert got["at_threshold"]["coverage"] == pytest.approx(len(answered) / len(mine))
        right = sum(p["true"] == p["predicted"] for p in answered)
        assert got["at_threshold"]["accuracy"] == (
            pytest.approx(right / len(answered)) if answered else None)
        share = m["prediction_share"][name]
        ratios = {c: s["predicted"] / s["true"] for c, s in share.items() if s["true"]}
        best = max(ratios, key=lambda c: ratios[c])
        assert got["max_share_ratio"]["class"] == best
        assert got["max_share_ratio"]["ratio"] == pytest.approx(ratios[best])
    saved = json.loads((model / METRICS_JSON).read_text())
    assert saved["per_source"]["skin8"]["at_threshold"] == per["skin8"]["at_threshold"]
    assert "answered at the threshold" in (model / REPORT_MD).read_text()
