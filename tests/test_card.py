"""kulit.serving.card: card.json is checked by one schema at load; a bad card stops every
command at start with one line naming the field (exit 2), and the server does not start."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kulit.cli import app
from kulit.errors import ModelError
from kulit.serving.card import load_card
from kulit.web.app import create_app
from kulit.web.settings import Settings

from .conftest import image_bytes, make_image

runner = CliRunner()

# the three ways a card goes wrong: a value out of range, a wrong type, a missing field
BAD: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "out_of_range": (lambda d: d["preprocessing"].__setitem__("input_size", -5),
                     "preprocessing.input_size"),
    "wrong_type": (lambda d: d.__setitem__("temperature", "hot"), "temperature"),
    "missing": (lambda d: d.pop("threshold"), "threshold"),
}


def _bad_model(onnx_model_dir: Path, tmp_path: Path, case: str) -> Path:
    model = tmp_path / "model"
    shutil.copytree(onnx_model_dir, model)
    card = json.loads((model / "card.json").read_text())
    BAD[case][0](card)
    (model / "card.json").write_text(json.dumps(card))
    return model


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_card_is_one_error_naming_the_field(onnx_model_dir: Path, tmp_path: Path,
                                                  case: str) -> None:
    model = _bad_model(onnx_model_dir, tmp_path, case)
    with pytest.raises(ModelError) as e:
        load_card(model)
    message = e.value.message
    assert f": {BAD[case][1]}: " in message and "\n" not in message
    assert str(model / "card.json") in message


def test_the_shipped_layout_of_a_card_passes(onnx_model_dir: Path) -> None:
    card = load_card(onnx_model_dir)
    assert card.threshold == 0.5 and card.preprocessing.input_size == 32


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["predict", "evaluate", "explain", "export-web", "gate",
                                     "quantize", "serve"])
def test_every_command_stops_at_start_on_a_bad_card(onnx_model_dir: Path, tmp_path: Path,
                                                    case: str, command: str) -> None:
    model = _bad_model(onnx_model_dir, tmp_path, case)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(image_bytes(make_image(1)))
    split = tmp_path / "split.csv"
    split.write_text("file,class,split,group,source,origin\n")
    args = {
        "predict": ["predict", str(photo), "--model", str(model)],
        "evaluate": ["evaluate", "--model", str(model), "--data", str(tmp_path),
                     "--out", str(tmp_path / "out"), "--split", "all"],
        "explain": ["explain", str(photo), "--model", str(model)],
        "export-web": ["export-web", "--model", str(model)],
        "gate": ["gate", "--model", str(model), "--data", str(tmp_path)],
        "quantize": ["quantize", str(model), "--split-csv", str(split)],
        "serve": ["serve", "--model", str(model), "--port", "1"],
    }[command]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f": {BAD[case][1]}: " in lines[0], r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_server_refuses_to_start_on_a_bad_card(onnx_model_dir: Path, tmp_path: Path,
                                                   case: str) -> None:
    model = _bad_model(onnx_model_dir, tmp_path, case)
    with pytest.raises(ModelError, match=BAD[case][1]), \
            TestClient(create_app(Settings(model_dir=model))) as client:
        client.get("/healthz")  # never reached: the lifespan loads (and checks) the card
