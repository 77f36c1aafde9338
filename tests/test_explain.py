"""The paper's walkthrough recomputed, its wrong figures flagged, and the photo path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kulit.cli import app
from kulit.errors import ImageError, KulitError, ModelError
from kulit.explain.steps import (
    PAPER_INPUTS,
    PAPER_PRINTED,
    conv2d_valid,
    explain_image,
    explain_photo,
    first_layer_grid,
    grid_columns,
    paper_walkthrough,
    parse_at,
    softmax_steps,
    to_json,
)
from kulit.explain.text import format_explanation
from kulit.serving.calibration import softmax
from kulit.serving.predict import Predictor
from tests.conftest import image_bytes, make_image

runner = CliRunner()


def hand_conv(channel: np.ndarray, kernel: np.ndarray, stride: int = 1) -> np.ndarray:
    """Plain loops, independent of conv2d_valid's sliding windows."""
    kh, kw = kernel.shape
    ho = (channel.shape[0] - kh) // stride + 1
    wo = (channel.shape[1] - kw) // stride + 1
    out = np.zeros((ho, wo), dtype=np.int64)
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    out[i, j] += int(channel[i * stride + a, j * stride + b]) * int(kernel[a, b])
    return out


# --- the paper's worked example -------------------------------------------------------------


@pytest.fixture(scope="module")
def walk() -> dict:
    return paper_walkthrough()


def test_per_channel_conv_is_pinned(walk: dict) -> None:
    conv = walk["steps"]["conv"]
    assert conv["red"] == [[-2, 18], [-3, 22]]
    assert conv["green"] == [[10, -11], [5, -8]]
    assert conv["blue"] == [[-31, 12], [-22, 16]]


def test_sum_relu_flatten_are_pinned(walk: dict) -> None:
    assert walk["steps"]["sum"] == [[-23, 19], [-20, 30]]
    assert walk["steps"]["relu"] == [[0, 19], [0, 30]]
    assert walk["steps"]["flatten"] == [0, 19, 0, 30]


def test_red_top_left_by_hand(walk: dict) -> None:
    # rows 0-2, cols 0-2 of RED: (179-179) + (180-180) + (175-177) = -2
    assert walk["steps"]["conv"]["red"][0][0] == -2
    # rows 1-3, cols 0-2: (180-180) + (175-177) + (185-186) = -3
    assert walk["steps"]["conv"]["red"][1][0] == -3


def test_softmax_of_the_given_outputs(walk: dict) -> None:
    assert walk["steps"]["dense"]["outputs"] == [8.918, 26.754]
    assert walk["steps"]["dense"]["given"] is True
    p = walk["steps"]["softmax"]
    assert round(p[0], 6) == 0.0 and round(p[1], 6) == 1.0
    assert p[0] == pytest.approx(1.794418e-8, rel=1e-5)
    assert p[0] == pytest.approx(math.exp(8.918 - 26.754) / (1 + math.exp(8.918 - 26.754)))


def test_logit_gap_the_paper_softmax_would_need(walk: dict) -> None:
    chk = walk["softmax_check"]
    assert chk["logit_gap_for_paper_softmax"] == pytest.approx(0.8473, abs=1e-4)
    assert chk["logit_gap_given"] == pytest.approx(17.836)
    # and that gap really gives 0.3 / 0.7
    assert softmax([0.0, chk["logit_gap_for_paper_softmax"]]).tolist() == pytest.approx([0.3, 0.7])


def test_exactly_these_paper_figures_are_flagged(walk: dict) -> None:
    flagged = [(d["step"], d["position"], d["paper"], d["correct"]) for d in walk["discrepancies"]]
    assert flagged[0] == ("sum", [1, 0], -22, -20)
    assert [f[:3] for f in flagged[1:]] == [("softmax", [0], 0.3), ("softmax", [1], 0.7)]
    assert flagged[1][3] == pytest.approx(1.794418e-8, rel=1e-5)
    assert flagged[2][3] == pytest.approx(1.0, abs=1e-7)
    assert len(flagged) == 3
    # Nothing in the per-channel conv, the ReLU or the flatten is flagged: those figures are right.
    assert not {d["step"] for d in walk["discrepancies"]} & {
        "conv.red", "conv.green", "conv.blue", "relu", "flatten"}


def test_the_paper_sum_contradicts_its_own_channels(walk: dict) -> None:
    own = sum(PAPER_PRINTED["conv"][c][1][0] for c in ("red", "green", "blue"))
    assert own == -20 != PAPER_PRINTED["sum"][1][0]
    assert "-3 + 5 + -22 = -20" in walk["discrepancies"][0]["note"]


def test_a_wrong_channel_figure_would_be_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    # The comparison is real: change a printed channel figure and it is flagged, cell by cell.
    printed = json.loads(json.dumps(PAPER_PRINTED))
    printed["conv"]["red"][1][0] = -2
    monkeypatch.setattr("kulit.explain.steps.PAPER_PRINTED", printed)
    red = [d for d in paper_walkthrough()["discrepancies"] if d["step"] == "conv.red"]
    assert red == [{"step": "conv.red", "position": [1, 0], "paper": -2, "correct": -3}]


def test_walkthrough_is_json_and_inputs_unchanged(walk: dict) -> None:
    assert json.loads(json.dumps(walk)) == walk
    assert walk["inputs"]["patch"] == PAPER_INPUTS["patch"]
    assert walk["inputs"]["kernel"] == [[1, 0, -1]] * 3


def test_text_marks_the_wrong_figures_only(walk: dict) -> None:
    text = format_explanation(walk)
    assert "-20  (paper: -22 ✗)" in text
    assert "(paper: 0.3 ✗)" in text and "(paper: 0.7 ✗)" in text
    assert text.count("✗)") == 3
    assert "O = W·x + b" in text and "taken as printed" in text
    assert "0.847" in text


# --- conv2d_valid ---------------------------------------------------------------------------


def test_conv2d_valid_2d_matches_loops_with_stride() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-50, 50, (7, 6))
    k = rng.integers(-3, 4, (3, 2))
    for stride in (1, 2, 3):
        np.testing.assert_array_equal(conv2d_valid(x, k, stride), hand_conv(x, k, stride))


def test_conv2d_valid_per_channel_kernel_and_uint8() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)  # uint8 must not wrap around
    k = rng.integers(-2, 3, (3, 3, 3))
    out = conv2d_valid(x, k)
    assert out.shape == (3, 3, 3) and out.dtype == np.int64
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], hand_conv(x[:, :, c], k[:, :, c]))


def test_conv2d_valid_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        conv2d_valid(np.zeros((2, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError):
        conv2d_valid(np.zeros((4, 4, 3)), np.ones((3, 3, 2)))
    with pytest.raises(ValueError):
        conv2d_valid(np.zeros((4, 4)), np.ones((3, 3)), stride=0)


# --- a photo --------------------------------------------------------------------------------


@pytest.fixture()
def photo(tmp_path: Path) -> tuple[Path, np.ndarray]:
    arr = np.random.default_rng(3).integers(0, 256, (9, 12, 3), dtype=np.uint8)  # H=9, W=12
    path = tmp_path / "photo.png"
    Image.fromarray(arr).save(path)
    return path, arr


def expected_steps(patch: np.ndarray) -> dict:
    k = np.array([[1, 0, -1]] * 3)
    conv = [hand_conv(patch[:, :, c], k) for c in range(3)]
    s = conv[0] + conv[1] + conv[2]
    r = np.maximum(s, 0)
    return {"conv": [c.tolist() for c in conv], "sum": s.tolist(), "relu": r.tolist(),
            "flatten": r.ravel().tolist()}


def check_against_hand(result: dict, patch: np.ndarray) -> None:
    exp = expected_steps(patch)
    got = result["steps"]
    assert [got["conv"][c] for c in ("red", "green", "blue")] == exp["conv"]
    assert got["sum"] == exp["sum"] and got["relu"] == exp["relu"]
    assert got["flatten"] == exp["flatten"]
    assert result["inputs"]["patch"]["green"] == patch[:, :, 1].tolist()


def test_explain_image_at_point_matches_numpy(photo: tuple[Path, np.ndarray]) -> None:
    path, arr = photo
    result = explain_image(path, at=(5, 2))
    assert result["at"] == [5, 2]
    assert (result["image"]["width"], result["image"]["height"]) == (12, 9)
    check_against_hand(result, arr[2:6, 5:9].astype(np.int64))
    assert json.loads(json.dumps(result)) == result


def test_explain_image_default_is_centred(photo: tuple[Path, np.ndarray]) -> None:
    path, arr = photo
    result = explain_image(path)
    assert result["at"] == [4, 2]  # (12 - 4) // 2, (9 - 4) // 2
    check_against_hand(result, arr[2:6, 4:8].astype(np.int64))


def test_explain_image_corners_are_in_bounds(photo: tuple[Path, np.ndarray]) -> None:
    path, arr = photo
    check_against_hand(explain_image(path, at=(8, 5)), arr[5:9, 8:12].astype(np.int64))
    check_against_hand(explain_image(path.read_bytes(), at=(0, 0)), arr[0:4, 0:4].astype(np.int64))


def test_explain_image_applies_exif_orientation(tmp_path: Path) -> None:
    arr = np.random.default_rng(4).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.png"
    Image.fromarray(arr).save(path, exif=exif)
    upright = np.rot90(arr, k=-1)  # 8 rows x 6 columns
    result = explain_image(path, at=(1, 3))
    assert (result["image"]["width"], result["image"]["height"]) == (6, 8)
    check_against_hand(result, upright[3:7, 1:5].astype(np.int64))


def test_explain_image_rgba_and_grey_become_rgb(tmp_path: Path) -> None:
    grey = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    result = explain_image(tmp_path / "grey.png", at=(1, 1))
    patch = np.repeat(grey[1:5, 1:5, None], 3, axis=2).astype(np.int64)
    check_against_hand(result, patch)
    rgba = np.random.default_rng(5).integers(0, 256, (6, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    check_against_hand(explain_image(tmp_path / "alpha.png", at=(2, 0)),
                       rgba[0:4, 2:6, :3].astype(np.int64))


def test_explain_image_errors(tmp_path: Path, photo: tuple[Path, np.ndarray]) -> None:
    path, _ = photo
    with pytest.raises(KulitError, match="outside the image"):
        explain_image(path, at=(9, 0))
    with pytest.raises(KulitError, match="outside the image"):
        explain_image(path, at=(0, -1))
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(ImageError) as e:
        explain_image(tmp_path / "notes.txt")
    assert e.value.code == "not_image"
    Image.new("RGB", (3, 10)).save(tmp_path / "thin.png")
    with pytest.raises(ImageError) as e:
        explain_image(tmp_path / "thin.png")
    assert e.value.code == "too_small"
    with pytest.raises(ImageError):
        explain_image(tmp_path / "missing.jpg")


def test_parse_at() -> None:
    assert parse_at("12,7") == (12, 7)
    assert parse_at(" 3 , 4 ") == (3, 4)
    for bad in ("3", "a,b", "1,2,3", "1.5,2"):
        with pytest.raises(KulitError):
            parse_at(bad)


# --- CLI ------------------------------------------------------------------------------------


def test_cli_paper_walkthrough() -> None:
    r = runner.invoke(app, ["explain"])
    assert r.exit_code == 0, r.output
    assert "-20  (paper: -22 ✗)" in r.stdout
    assert "(paper: 0.3 ✗)" in r.stdout and "(paper: 0.7 ✗)" in r.stdout
    assert "-31  12" in r.stdout  # the BLUE conv table


def test_cli_json() -> None:
    r = runner.invoke(app, ["explain", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["steps"]["sum"] == [[-23, 19], [-20, 30]]
    assert len(data["discrepancies"]) == 3


def test_cli_image_at(photo: tuple[Path, np.ndarray]) -> None:
    path, arr = photo
    r = runner.invoke(app, ["explain", str(path), "--at", "5,2", "--json"])
    assert r.exit_code == 0, r.output
    check_against_hand(json.loads(r.stdout), arr[2:6, 5:9].astype(np.int64))
    text = runner.invoke(app, ["explain", str(path), "--at", "5,2"])
    assert text.exit_code == 0 and "x=5, y=2" in text.stdout


def test_cli_at_out_of_bounds_is_one_line(photo: tuple[Path, np.ndarray]) -> None:
    path, _ = photo
    r = runner.invoke(app, ["explain", str(path), "--at", "100,100"])
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.output


def test_cli_non_image_file(tmp_path: Path) -> None:
    bad = tmp_path / "report.jpg"
    bad.write_bytes(b"%PDF-1.4 this is not a jpeg")
    r = runner.invoke(app, ["explain", str(bad)])
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_cli_at_without_image_is_refused() -> None:
    r = runner.invoke(app, ["explain", "--at", "1,1"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1


def test_explain_never_imports_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, kulit.explain.steps as e; e.paper_walkthrough(); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the real model on a photo --------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(onnx_model_dir: Path) -> Predictor:
    return Predictor(onnx_model_dir)


@pytest.fixture()
def skin_photo(tmp_path: Path) -> Path:
    path = tmp_path / "skin.jpg"
    path.write_bytes(image_bytes(make_image(7, (130, 100), 1), quality=90))
    return path


def test_model_section_first_layer(onnx_model_dir: Path, predictor: Predictor,
                                   skin_photo: Path) -> None:
    m = explain_image(skin_photo, model_dir=onnx_model_dir)["model"]
    maps = predictor.first_layer(skin_photo)
    fl = m["first_layer"]
    assert (fl["filters"], fl["height"], fl["width"]) == maps.shape == (8, 8, 8)
    assert fl["stride"] == 4  # a 32x32 crop to 8x8 maps
    assert fl["note"] == ("the paper's example mentions 32 filters; this model's first layer "
                          "has 8")
    assert fl["stats"]["mean"] == pytest.approx(maps.reshape(8, -1).mean(1), abs=1e-4)
    assert fl["stats"]["max"] == pytest.approx(maps.reshape(8, -1).max(1), abs=1e-4)
    # the maps are already 8x8, so the preview is the maps themselves (rounded)
    assert np.asarray(fl["preview"]["maps"]) == pytest.approx(maps, abs=1e-3)
    assert m["backbone"] == "tiny" and m["input_size"] == 32


def test_preview_is_block_average_of_big_maps(predictor: Predictor, skin_photo: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    big = np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)
    real = predictor.predict_one

    def with_big_maps(*args, **kwargs):
        pred = real(*args, **kwargs)
        pred.first_layer = big
        return pred

    monkeypatch.setattr(predictor, "predict_one", with_big_maps)
    from kulit.explain.steps import explain_model

    fl = explain_model(predictor, skin_photo).summary["first_layer"]
    prev = np.asarray(fl["preview"]["maps"])
    assert prev.shape == (3, 8, 8)
    assert prev == pytest.approx(big.reshape(3, 8, 2, 8, 2).mean(axis=(2, 4)), abs=1e-3)


def test_softmax_steps_match_predictor(onnx_model_dir: Path, predictor: Predictor,
                                       skin_photo: Path) -> None:
    m = explain_image(skin_photo, model_dir=onnx_model_dir)["model"]
    sm = m["softmax"]
    pred = predictor.predict_one(skin_photo)
    assert sm["temperature"] == 1.5
    assert sm["logits"] == pytest.approx(pred.logits.tolist(), abs=1e-6)
    assert sm["scaled"] == pytest.approx((np.asarray(sm["logits"]) / 1.5).tolist(), rel=1e-12)
    assert sm["exp"] == pytest.approx(np.exp(np.asarray(sm["scaled"]) - sm["shift"]).tolist())
    assert sm["sum"] == pytest.approx(sum(sm["exp"]))
    np.testing.assert_allclose(sm["probs"], pred.probs, atol=1e-6, rtol=0)
    assert [t["label"] for t in m["top"]] == [c for c, _ in pred.top]
    assert m["uncertain"] == (m["status"] == "uncertain") and m["threshold"] == 0.5
    assert m["check"]["max_abs_diff"] < 1e-9


def test_softmax_steps_shift_only_when_needed() -> None:
    small = softmax_steps([1.0, 2.0, 3.0], 2.0)
    assert small["shift"] == 0.0 and small["exp"][0] == pytest.approx(math.exp(0.5))
    big = softmax_steps([1000.0, 1001.0], 1.0)  # exp(1000) would overflow
    assert big["shift"] == 1001.0 and big["exp"] == pytest.approx([math.exp(-1), 1.0])
    assert big["probs"] == pytest.approx(softmax([0.0, 1.0]).tolist())


def test_explain_photo_arrays_for_the_page(predictor: Predictor, skin_photo: Path) -> None:
    d, arrays = explain_photo(skin_photo.read_bytes(), predictor=predictor, at=(3, 4))
    assert d["at"] == [3, 4] and d["model"]["first_layer"]["filters"] == 8
    assert arrays is not None and arrays.maps.shape == (8, 8, 8)
    np.testing.assert_allclose(arrays.maps, predictor.first_layer(skin_photo), atol=1e-6)
    assert arrays.prediction.heatmap is not None and arrays.prediction.image.size == (32, 32)
    assert explain_photo(skin_photo)[1] is None  # no model, no arrays


def test_first_layer_grid_tiles() -> None:
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(8, 5, 6))
    maps[2] = 3.0  # a constant map is drawn black, not divided by zero
    img = first_layer_grid(maps)
    assert grid_columns(8) == 4 and grid_columns(32) == 8 and grid_columns(7) == 3
    assert img.mode == "L" and img.size == (4 * 6 + 3, 2 * 5 + 1)
    g = np.asarray(img)
    tiles = [g[r * 6: r * 6 + 5, c * 7: c * 7 + 6] for r in range(2) for c in range(4)]
    assert len(tiles) == 8
    for i, t in enumerate(tiles):
        m = maps[i]
        if i == 2:
            assert (t == 0).all()
            continue
        want = np.round((m - m.min()) / (m.max() - m.min()) * 255)
        np.testing.assert_array_equal(t, want)
    assert (g[5, :] == 255).all() and (g[:, 6] == 255).all()  # 1-pixel gaps


def test_first_layer_grid_empty_slots_scale_and_shrink() -> None:
    maps = np.random.default_rng(2).normal(size=(7, 4, 4))
    img = first_layer_grid(maps, scale=3)  # 3 columns, 3 rows, 2 empty slots
    assert img.size == (3 * 12 + 2, 3 * 12 + 2)
    g = np.asarray(img)
    assert (g[26:, 13:] == 255).all()  # the two empty slots of the last row are gap colour
    small = first_layer_grid(np.random.default_rng(3).normal(size=(4, 112, 112)), max_tile=28)
    assert small.size == (2 * 28 + 1, 2 * 28 + 1)
    with pytest.raises(ValueError):
        first_layer_grid(np.zeros((0, 4, 4)))


def test_text_shows_the_model_steps(onnx_model_dir: Path, skin_photo: Path) -> None:
    d = explain_image(skin_photo, model_dir=onnx_model_dir)
    text = format_explanation(d)
    assert "6. Flatten" in text  # the patch steps come first
    assert "8 filters" in text and "mentions 32 filters; this model's first layer has 8" in text
    assert "T = 1.5" in text and "p_i = exp(z_i / T) / sum_j exp(z_j / T)" in text
    top = d["model"]["top"][0]
    assert f"{top['label']} {top['probability']:.1%}" in text
    for c in d["model"]["classes"]:
        assert c in text
    assert "largest difference" in text


def test_json_is_small_and_round_trips(onnx_model_dir: Path, skin_photo: Path) -> None:
    d = explain_image(skin_photo, model_dir=onnx_model_dir)
    text = to_json(d)
    assert json.loads(text) == d
    assert "[0, 1, 0, -1]" not in text and "[1, 0, -1]" in text  # matrix rows on one line
    assert len(text) < 20_000
    tricky = {"note": "[1,  2]", "rows": [[1, 2], [3, 4]]}
    assert json.loads(to_json(tricky)) == tricky


def test_bad_model_dir_is_a_model_error(tmp_path: Path, skin_photo: Path) -> None:
    with pytest.raises(ModelError):
        explain_image(skin_photo, model_dir=tmp_path / "nope")


def test_cli_model_json_agrees_with_predictor(onnx_model_dir: Path, predictor: Predictor,
                                              skin_photo: Path) -> None:
    r = runner.invoke(app, ["explain", str(skin_photo), "--model", str(onnx_model_dir),
                            "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["model"]
    pred = predictor.predict_one(skin_photo)
    assert m["top"][0]["label"] == pred.label
    assert m["top"][0]["probability"] == pytest.approx(pred.confidence, abs=1e-6)
    np.testing.assert_allclose(m["softmax"]["probs"], pred.probs, atol=1e-6, rtol=0)


def test_cli_explain_agrees_with_cli_predict(onnx_model_dir: Path, skin_photo: Path) -> None:
    if "predict" not in [c.name for c in app.registered_commands]:
        pytest.skip("kulit predict is not registered")
    e = runner.invoke(app, ["explain", str(skin_photo), "--model", str(onnx_model_dir),
                            "--json"])
    p = runner.invoke(app, ["predict", "--model", str(onnx_model_dir), str(skin_photo),
                            "--json"])
    assert e.exit_code == 0 and p.exit_code == 0, e.output + p.output
    got, want = json.loads(e.stdout)["model"], json.loads(p.stdout.splitlines()[0])
    assert [t["label"] for t in got["top"]] == [t["label"] for t in want["top"]]
    for a, b in zip(got["top"], want["top"], strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)
    assert got["uncertain"] == want["uncertain"]


def test_cli_model_text(onnx_model_dir: Path, skin_photo: Path) -> None:
    r = runner.invoke(app, ["explain", str(skin_photo), "--model", str(onnx_model_dir)])
    assert r.exit_code == 0, r.output
    assert "this model's first layer has 8" in r.stdout and "9. Softmax" in r.stdout


def test_cli_default_model_or_a_note(onnx_model_dir: Path, skin_photo: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no models/kulit-skin8 here
    r = runner.invoke(app, ["explain", str(skin_photo)])
    assert r.exit_code == 0, r.output
    assert "No model found at models/kulit-skin8" in r.stdout and "--model DIR" in r.stdout
    assert "6. Flatten" in r.stdout and "Softmax" not in r.stdout
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "kulit-skin8").symlink_to(onnx_model_dir)
    r = runner.invoke(app, ["explain", str(skin_photo), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model"]["first_layer"]["filters"] == 8


def test_cli_bad_model_is_one_line(tmp_path: Path, skin_photo: Path) -> None:
    r = runner.invoke(app, ["explain", str(skin_photo), "--model", str(tmp_path / "nope")])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_patch_on_crop_uses_the_square_the_model_saw(predictor: Predictor,
                                                     skin_photo: Path) -> None:
    d, arrays = explain_photo(skin_photo, predictor=predictor, patch_on_crop=True)
    crop = np.asarray(predictor.prepare(skin_photo)[0]).astype(np.int64)
    assert d["image"]["crop"] is True and (d["image"]["width"], d["image"]["height"]) == (32, 32)
    assert d["at"] == [14, 14]
    check_against_hand(d, crop[14:18, 14:18])
    assert "the square crop the model saw" in format_explanation(d)
    plain = explain_image(skin_photo, predictor=predictor)
    assert plain["image"]["crop"] is False and plain["image"]["width"] == 130
    assert d["model"]["softmax"]["probs"] == plain["model"]["softmax"]["probs"]
