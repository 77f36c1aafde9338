"""kulit.serving.model_dir: the dependency table, voiding, sections, the one temperature owner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kulit.serving.card import load_card, save_card
from kulit.serving.model_dir import (
    ARTEFACTS,
    DEPENDS_ON,
    FILES,
    GATE,
    GATE_FILE,
    INT8,
    INT8_FILE,
    METRICS,
    METRICS_JSON,
    MODEL,
    ONNX_FILE,
    REPORT_MD,
    SHORTLIST,
    WEB,
    WEB_ONNX_FILE,
    WEB_ONNX_GZ,
    ModelDir,
    derived_from,
    file_sha256,
)


def test_the_table_says_what_a_new_file_voids() -> None:
    assert derived_from(MODEL) == [INT8, GATE, SHORTLIST, METRICS, WEB]
    assert derived_from(INT8) == [GATE, SHORTLIST, METRICS, WEB]
    assert derived_from(GATE) == [SHORTLIST, METRICS, WEB]
    assert derived_from(SHORTLIST) == [METRICS]
    assert derived_from(METRICS) == [] and derived_from(WEB) == []
    with pytest.raises(ValueError, match="unknown artefact"):
        derived_from("nope")


def test_the_table_is_in_build_order() -> None:
    # every artefact is made only from artefacts built before it: no cycle, one order
    for i, a in enumerate(ARTEFACTS):
        assert set(DEPENDS_ON[a]) <= set(ARTEFACTS[:i]), a
    assert set(FILES) == set(DEPENDS_ON) == set(ARTEFACTS)


def _full_folder(onnx_model_dir: Path, tmp_path: Path) -> ModelDir:
    """A model folder holding every artefact (the int8 file a copy, checked by hash)."""
    path = tmp_path / "m"
    shutil.copytree(onnx_model_dir, path)
    md = ModelDir(path)
    card = md.card()
    shutil.copy(path / ONNX_FILE, path / INT8_FILE)
    card.files = {"model": ONNX_FILE, "int8": INT8_FILE}
    card.int8 = {"file": INT8_FILE, "passed": True, "temperature": 2.5,
                 "source_sha256": file_sha256(path / ONNX_FILE)}
    card.threshold = 0.9
    card.gate = {"not_skin_threshold": 0.5, "tuned_on": {"threshold_before": 0.6}}
    card.metrics = {"split": "test"}
    card.set_section("shortlist", {"alpha": 0.1})
    save_card(card, path)
    for f in (GATE_FILE, METRICS_JSON, REPORT_MD, WEB_ONNX_FILE, WEB_ONNX_GZ):
        (path / f).write_bytes(b"x")
    return md


def test_a_new_int8_file_voids_the_gate_shortlist_metrics_and_browser_model(
        onnx_model_dir: Path, tmp_path: Path) -> None:
    md = _full_folder(onnx_model_dir, tmp_path)
    staged = tmp_path / "staged.onnx"
    shutil.copy(md.file(ONNX_FILE), staged)
    removed = md.write_int8(staged, {"file": INT8_FILE, "passed": True, "temperature": 7.0,
                                     "source_sha256": file_sha256(md.file(ONNX_FILE))})
    assert sorted(removed) == sorted([GATE_FILE, METRICS_JSON, REPORT_MD, WEB_ONNX_FILE,
                                      WEB_ONNX_GZ])
    card = md.card()
    assert card.gate == {} and card.metrics == {} and card.section("shortlist") == {}
    assert card.threshold == 0.6  # the run's threshold until a gate is fitted again
    # quantize's own temperature fit is not the served one: the gate step owns that
    precision, path, temperature = md.served()
    assert (precision, path.name, temperature) == ("int8", INT8_FILE, card.temperature)
    assert md.file(ONNX_FILE).is_file() and md.file(INT8_FILE).is_file()


def test_the_gate_writes_the_served_temperature_and_threshold_once(
        onnx_model_dir: Path, tmp_path: Path) -> None:
    md = _full_folder(onnx_model_dir, tmp_path)
    fp32_temperature = md.card().temperature
    removed = md.write_gate(lambda p: p.write_bytes(b"gate"), {"tuned_on": {}}, 1.25, 0.8)
    assert sorted(removed) == sorted([METRICS_JSON, REPORT_MD, WEB_ONNX_FILE, WEB_ONNX_GZ])
    card = md.card()
    assert md.file(GATE_FILE).read_bytes() == b"gate"
    assert md.served(card)[2] == 1.25 and card.threshold == 0.8
    assert card.temperature == fp32_temperature  # model.onnx keeps its own
    assert md.served(card, int8=False) == ("fp32", md.file(ONNX_FILE), fp32_temperature)
    assert card.section("shortlist") == {}


def test_a_section_round_trips_and_voids_what_is_made_from_it(
        onnx_model_dir: Path, tmp_path: Path) -> None:
    md = _full_folder(onnx_model_dir, tmp_path)
    removed = md.write_section("shortlist", {"alpha": 0.05, "qhat": [0.9, 0.8]})
    assert sorted(removed) == sorted([METRICS_JSON, REPORT_MD])
    assert md.read_section("shortlist") == {"alpha": 0.05, "qhat": [0.9, 0.8]}
    # kept as written by a step that rewrites the card for its own reasons
    card = md.card()
    save_card(card, md.path)
    assert json.loads(md.file("card.json").read_text())["shortlist"]["alpha"] == 0.05
    assert md.file(GATE_FILE).is_file() and md.file(WEB_ONNX_FILE).is_file()
    with pytest.raises(ValueError, match="unknown card section"):
        md.write_section("typo", {})


def test_a_new_model_voids_everything_made_from_the_old_one(
        onnx_model_dir: Path, tmp_path: Path) -> None:
    md = _full_folder(onnx_model_dir, tmp_path)
    staged = tmp_path / "staged"
    staged.mkdir()
    for f in (ONNX_FILE, "head.npz"):
        if md.file(f).is_file():
            shutil.copy(md.file(f), staged / f)
    new = load_card(onnx_model_dir)
    new.temperature = 3.0
    removed = md.write_model(staged, new)
    assert sorted(removed) == sorted([INT8_FILE, GATE_FILE, METRICS_JSON, REPORT_MD,
                                      WEB_ONNX_FILE, WEB_ONNX_GZ])
    card = md.card()
    assert card.files == {"model": ONNX_FILE} and card.int8 == {}
    assert md.served(card) == ("fp32", md.file(ONNX_FILE), 3.0)


def test_void_removes_an_artefact_and_what_is_made_from_it(
        onnx_model_dir: Path, tmp_path: Path) -> None:
    md = _full_folder(onnx_model_dir, tmp_path)
    assert md.present(GATE) and md.present(WEB)
    md.void(GATE)
    assert not md.present(GATE) and not md.present(WEB) and not md.present(METRICS)
    card = md.card()
    assert "temperature" not in card.int8 and card.threshold == 0.6
    assert md.present(INT8)
    with pytest.raises(Exception, match="base of a model folder"):
        md.void(MODEL)
