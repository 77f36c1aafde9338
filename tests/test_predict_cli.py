"""`kulit predict` on files and folders: table, JSON lines, bad files, exit status."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from kulit.cli import app
from kulit.serving.predict import Predictor
from tests.conftest import make_image

runner = CliRunner()


def test_folder_with_a_bad_file_still_predicts_the_rest(onnx_model_dir, tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(3):
        make_image(i, (90, 70), i).save(d / f"p{i}.jpg")
    (d / "fake.jpg").write_bytes(b"%PDF-1.4 this is a pdf")
    r = runner.invoke(app, ["predict", "--model", str(onnx_model_dir), str(d), "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == 4
    errors = [x for x in lines if "error" in x]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "not_image"
    good = [x for x in lines if "error" not in x]
    pred = Predictor(onnx_model_dir)
    for x in good:
        p = pred.predict_one(x["source"])
        assert x["top"][0]["label"] == p.top[0][0]
        assert abs(x["top"][0]["probability"] - p.top[0][1]) < 1e-6
        assert "not a diagnosis" in x["disclaimer"]


def test_table_output_and_heatmaps(onnx_model_dir, tmp_path):
    f = tmp_path / "a.png"
    make_image(5).save(f)
    r = runner.invoke(app, ["predict", "--model", str(onnx_model_dir), str(f), "--top-k", "2",
                            "--heatmap-dir", str(tmp_path / "hm")])
    assert r.exit_code == 0, r.output
    assert "a.png" in r.stdout and "not a diagnosis" in r.stdout
    assert (tmp_path / "hm" / "a.heatmap.png").is_file()


def test_nothing_predictable_exits_non_zero(onnx_model_dir, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_text("hello")
    r = runner.invoke(app, ["predict", "--model", str(onnx_model_dir), str(bad)])
    assert r.exit_code == 1
    r = runner.invoke(app, ["predict", "--model", str(onnx_model_dir), str(tmp_path / "no")])
    assert r.exit_code == 1 and "not found" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["predict", "--model", str(onnx_model_dir), str(empty)])
    assert r.exit_code == 2 and "no files" in r.output


def test_missing_model_is_one_line(tmp_path):
    f = tmp_path / "a.png"
    make_image(1).save(f)
    r = runner.invoke(app, ["predict", "--model", str(tmp_path / "nomodel"), str(f)])
    assert r.exit_code == 2
    assert "model directory not found" in r.output and "Traceback" not in r.output


def test_parallel_workers_print_what_the_serial_path_prints(onnx_model_dir, tmp_path):
    """Two single-thread workers, bounded queue: same lines in the same order as one worker,
    and the same answers as batches of 32; bad files reported in place."""
    d = tmp_path / "many"
    d.mkdir()
    for i in range(23):
        make_image(300 + i, (90 + i, 70), i % 3).save(d / f"p{i:02d}.jpg")
    (d / "p07b.jpg").write_bytes(b"not an image")
    base = ["predict", "--model", str(onnx_model_dir), str(d), "--json"]
    one = runner.invoke(app, base + ["--workers", "1", "--batch-size", "1"])
    two = runner.invoke(app, base + ["--workers", "2"])
    batched = runner.invoke(app, base + ["--workers", "1", "--batch-size", "32"])
    for r in (one, two, batched):
        assert r.exit_code == 0, r.output
    assert two.stdout == one.stdout
    lines = [json.loads(x) for x in two.stdout.splitlines()]
    assert [x["source"] for x in lines] == sorted(str(p) for p in d.iterdir())
    assert sum("error" in x for x in lines) == 1
    for x, y in zip(lines, (json.loads(s) for s in batched.stdout.splitlines()), strict=True):
        assert x.get("label") == y.get("label")
        if "top" in x:
            assert [t["label"] for t in x["top"]] == [t["label"] for t in y["top"]]
            assert np.allclose([t["probability"] for t in x["top"]],
                               [t["probability"] for t in y["top"]], atol=1e-5)


def test_cli_api_and_explain_give_one_answer_json(onnx_model_dir, client, tmp_path):
    """`kulit predict --json`, /api/v1/predict and /api/v1/explain carry the same answer fields
    (Answer.to_dict), "uncertain" included: one function, one meaning."""
    from kulit.serving.answer import answer_for

    f = tmp_path / "a.jpg"
    make_image(7, (90, 70), 1).save(f)
    r = runner.invoke(app, ["predict", "--model", str(onnx_model_dir), str(f), "--json"])
    assert r.exit_code == 0, r.output
    cli = json.loads(r.stdout.splitlines()[0])
    photo = {"image": ("a.jpg", f.read_bytes(), "image/jpeg")}
    api = client.post("/api/v1/predict", files=photo).json()
    explained = client.post("/api/v1/explain", files=photo).json()["model"]
    pred = Predictor(onnx_model_dir)
    want = answer_for(pred.predict_one(f), pred.card).to_dict()
    assert want["uncertain"] == (want["status"] == "uncertain")
    for got in (cli, api, explained):
        assert {k: got[k] for k in want} == want
