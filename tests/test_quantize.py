"""`kulit quantize`: int8 file the Predictor uses, a check that refuses, thread settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime.quantization")

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from kulit.build import quantize as q  # noqa: E402
from kulit.dataprep.split import load_split, run_data  # noqa: E402
from kulit.serving.card import load_card  # noqa: E402
from kulit.serving.model_dir import INT8_FILE  # noqa: E402
from kulit.serving.predict import Predictor  # noqa: E402
from tests.conftest import TINY_CLASSES, make_image, write_onnx_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def split_csv(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset plus a second source folder, split by `kulit data` (two sources)."""
    root = tmp_path_factory.mktemp("two_sources")
    first = root / "tiny"
    shutil.copytree(tiny_dataset, first)
    second = root / "web"
    for c, name in enumerate(TINY_CLASSES):
        (second / name).mkdir(parents=True)
        for i in range(10):
            make_image(5000 + 100 * c + i, (120, 90 + 3 * i), c).save(second / name / f"w{i}.png")
    out = root / "data"
    run_data([first, second], out, val_frac=0.3, test_frac=0.1)
    return out / "split.csv"


def colour_model(out: Path) -> Path:
    """The conftest tiny ONNX CNN with weights that read the dominant colour, like a trained
    model would: conv channel k sums input channel k % 3; class c's logit reads channels c."""
    write_onnx_model_dir(out, TINY_CLASSES, input_size=32, channels=6)
    path = out / "model.onnx"
    model = onnx.load(str(path))
    conv_w = np.zeros((6, 3, 4, 4), np.float32)
    for k in range(6):
        conv_w[k, k % 3] = 1.0 / 16 * (1 + 0.1 * k)
    fc_w = np.zeros((3, 6), np.float32)
    for k in range(6):
        fc_w[k % 3, k] = 4.0
    new = {"conv_w": conv_w, "fc_w": fc_w}
    for init in model.graph.initializer:
        if init.name in new:
            init.CopyFrom(numpy_helper.from_array(new[init.name], init.name))
    onnx.save(model, str(path))
    np.savez(out / "head.npz", fc_w=fc_w, fc_b=np.zeros(3, np.float32))
    return out


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    return colour_model(tmp_path / "model")


def test_quantize_writes_an_int8_file_the_predictor_uses(model_dir, split_csv):
    entry = q.quantize_model(model_dir, split_csv)
    card = load_card(model_dir)
    assert (model_dir / INT8_FILE).is_file()
    assert card.files == {"model": "model.onnx", "int8": INT8_FILE}
    # the served temperature is the gate step's: quantize keeps its own fit in the check only
    assert card.int8["passed"] and "temperature" not in card.int8
    assert entry["check"]["temperature"] > 0
    assert set(entry["check"]["sources"]) == {"all", "tiny", "web"}
    assert set(entry["check"]["answer_agreement"]) == {"all", "tiny", "web"}
    onnx.checker.check_model(str(model_dir / INT8_FILE))
    ops = {n.op_type for n in onnx.load(str(model_dir / INT8_FILE)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops

    int8, fp32 = Predictor(model_dir), Predictor(model_dir, int8=False)
    assert (int8.precision, fp32.precision) == ("int8", "fp32")
    assert int8.temperature == pytest.approx(card.temperature)  # until `kulit gate` runs
    rows = load_split(split_csv)
    files = [r.path for r in rows]
    a = [p.label for p in fp32.predict(files)]
    b = [p.label for p in int8.predict(files, heatmap=True)]
    assert np.mean(np.array(a) == np.array(b)) >= 0.95
    truth = [r.label for r in rows]
    assert np.mean(np.array(b) == np.array(truth)) >= 0.9  # the colour model works in int8 too
    # the int8 run still gives Grad-CAM its feature map, and explain its softmax and first layer
    assert int8.predict_one(files[0], heatmap=True).heatmap is not None
    from kulit.explain.steps import explain_model

    explain_model(int8, files[0])  # raises if its softmax disagrees with the Predictor's


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_check_refuses_an_impossible_tolerance_and_writes_nothing(model_dir, split_csv):
    before = _snapshot(model_dir)
    with pytest.raises(q.QuantizeError, match="agreement") as e:
        q.quantize_model(model_dir, split_csv, cfg=q.QuantizeConfig(min_agreement=1.01))
    assert e.value.entry["check"]["sources"]["all"]["n"] > 0  # figures reported on refusal
    assert _snapshot(model_dir) == before
    assert Predictor(model_dir).precision == "fp32"


def test_check_refuses_a_broken_calibration(model_dir, split_csv, monkeypatch):
    """Calibrated on negated photos, the ReLU ranges collapse to 0: refused by default."""
    real = q.quantize_onnx
    monkeypatch.setattr(q, "quantize_onnx",
                        lambda src, dst, calib: real(src, dst, -np.abs(calib)))
    before = _snapshot(model_dir)
    with pytest.raises(q.QuantizeError, match="int8 model not written"):
        q.quantize_model(model_dir, split_csv)
    assert _snapshot(model_dir) == before


def test_a_changed_fp32_file_voids_the_int8_file(model_dir, split_csv):
    q.quantize_model(model_dir, split_csv)
    assert Predictor(model_dir).precision == "int8"
    m = onnx.load(str(model_dir / "model.onnx"))
    m.doc_string = "re-exported"
    onnx.save(m, str(model_dir / "model.onnx"))
    assert Predictor(model_dir).precision == "fp32"


def test_calibration_uses_training_photos_only_and_every_class(split_csv):
    rows = load_split(split_csv)
    picked = q.pick_calibration(rows, 9, seed=0)
    assert len(picked) == 9 and {r.split for r in picked} == {"train"}
    assert {r.label for r in picked} == set(TINY_CLASSES)
    assert {r.source for r in picked} == {"tiny", "web"}


def test_server_thread_settings_reach_the_session(onnx_model_dir, monkeypatch):
    from kulit.web.settings import Settings

    monkeypatch.setenv("KULIT_THREADS", "1")
    monkeypatch.setenv("KULIT_ALLOW_SPINNING", "false")
    p = Predictor(onnx_model_dir, **Settings(model_dir=onnx_model_dir).predictor_options())
    opts = p.session.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_missing_split_is_one_clear_error(model_dir, tmp_path):
    from kulit.errors import DataError

    with pytest.raises(DataError, match="split file not found"):
        q.quantize_model(model_dir, tmp_path / "nowhere" / "split.csv")
