"""kulit.build.pipeline (`kulit build`): steps run in order, skip when their inputs did not
change, run again when they did; --from / --until; on the tiny backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from kulit.build.pipeline import BuildError, Outcome, run_build, summary_lines
from kulit.cli import app
from kulit.config import BuildConfig
from kulit.serving.model_dir import INT8_FILE, ModelDir

TINY_TRAIN = (("backbone", "tiny"), ("pretrained", False), ("input_size", 32), ("epochs", 4),
              ("views", 1), ("patience", 0), ("lr", 1e-2), ("finetune_blocks", 0),
              ("clean_labels", False), ("threads", 1))


def _config(tiny_dataset: Path, tmp: Path) -> BuildConfig:
    data = tmp / "data"
    shutil.copytree(tiny_dataset, data / "tiny")
    return BuildConfig(data_root=str(data), sources=("tiny",), exclude=None,
                       data_out=str(tmp / "runs" / "data"), run_dir=str(tmp / "runs" / "kulit"),
                       model=str(tmp / "model"), card_extra=None, val_frac=0.25,
                       test_frac=0.15, state=str(tmp / "runs" / "state.json"),
                       train_options=(*TINY_TRAIN, ("cache_dir", str(tmp / "cache"))))


def _status(outcomes: list[Outcome]) -> dict[str, str]:
    return {o.step: o.status for o in outcomes}


def test_build_skips_unchanged_steps_and_reruns_changed_ones(tiny_dataset: Path,
                                                             tmp_path: Path) -> None:
    cfg = _config(tiny_dataset, tmp_path)
    quiet = {"log": lambda line: None}
    first = _status(run_build(cfg, until="quantize", **quiet))
    assert first == {"data": "ran", "train": "ran", "export": "ran", "quantize": "ran",
                     "gate": "not run", "shortlist": "not run", "evaluate": "not run",
                     "export-web": "not run"}
    md = ModelDir(cfg.model)
    assert md.file("model.onnx").is_file()
    int8_made = md.file(INT8_FILE).is_file()  # passed or refused: either way not redone

    again = _status(run_build(cfg, until="quantize", **quiet))
    assert [again[s] for s in ("data", "train", "export", "quantize")] == ["skipped"] * 4

    # --from runs the named step even though nothing changed; what is made from its output
    # (the int8 file) is voided by the new model.onnx and so made again
    forced = _status(run_build(cfg, start="export", until="quantize", **quiet))
    assert forced["data"] == forced["train"] == "not run"
    assert forced["export"] == "ran"
    assert forced["quantize"] == ("ran" if int8_made else "skipped")

    # one photo changes: the split is made again, so is the model trained on it
    photo = next((Path(cfg.data_root) / "tiny").rglob("*.jpg"))
    Image.new("RGB", (90, 90), (3, 200, 90)).save(photo)
    changed = _status(run_build(cfg, until="export", **quiet))
    assert changed["data"] == changed["train"] == changed["export"] == "ran"


def test_a_removed_output_is_made_again(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_dataset, tmp_path)
    run_build(cfg, until="data", log=lambda line: None)
    (Path(cfg.data_out) / "split.csv").unlink()
    assert _status(run_build(cfg, until="data", log=lambda line: None))["data"] == "ran"


def test_step_names_are_checked(tmp_path: Path) -> None:
    cfg = BuildConfig(state=str(tmp_path / "s.json"))
    with pytest.raises(BuildError, match="unknown step 'trian'"):
        run_build(cfg, start="trian")
    with pytest.raises(BuildError, match="comes after"):
        run_build(cfg, start="gate", until="train")
    r = CliRunner().invoke(app, ["build", "--until", "nope", "--model", str(tmp_path / "m")])
    assert r.exit_code == 2 and "unknown step 'nope'" in r.output


def test_a_step_whose_input_is_missing_names_the_step_to_run(tmp_path: Path) -> None:
    cfg = BuildConfig(model=str(tmp_path / "m"), run_dir=str(tmp_path / "run"),
                      state=str(tmp_path / "s.json"))
    with pytest.raises(BuildError, match="export needs .*checkpoint.pt; run the build from "
                                         "train"):
        run_build(cfg, start="export", log=lambda line: None)


def test_the_summary_has_a_line_per_step() -> None:
    lines = summary_lines([Outcome("data", "skipped", note="inputs unchanged"),
                           Outcome("train", "ran", 12.0, "runs/kulit")])
    assert lines[1].split()[:2] == ["data", "skipped"]
    assert lines[2].split()[:4] == ["train", "ran", "12", "s"]
