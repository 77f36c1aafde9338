"""TrainConfig is the one definition: recipes, CLI options and validation all follow it."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from kulit.cli import app
from kulit.config import RECIPES, TrainConfig, make_config
from kulit.errors import DataError

# The paper's recipe as published (and as kulit trained it before the recipes were trimmed).
PAPER = dict(input_size=64, head="paper", hidden=128, dropout=0.5, epochs=32, batch_size=64,
             lr=1e-4, weight_decay=0.0, label_smoothing=0.0, balance=False, views=1, tta=False,
             patience=0, mask_logo=False, finetune_blocks=0)


def test_recipes_resolve_to_the_published_settings() -> None:
    paper = make_config("d", "s.csv", "paper")
    assert {k: getattr(paper, k) for k in PAPER} == PAPER
    assert make_config("d", "s.csv", "kulit") == TrainConfig(data="d", split_csv="s.csv")
    assert RECIPES["kulit"] == {}  # the defaults are kulit's recipe


def test_user_options_beat_the_recipe_and_none_means_unset() -> None:
    cfg = make_config("d", "s.csv", "paper", epochs=3, lr=None)
    assert cfg.epochs == 3 and cfg.lr == PAPER["lr"]
    with pytest.raises(DataError, match="unknown training option"):
        make_config("d", "s.csv", "paper", epoch=3)
    with pytest.raises(DataError, match="unknown recipe"):
        make_config("d", "s.csv", "fancy")


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("lr", 0.0), ("lr", float("inf")),
                                         ("dropout", 1.0), ("dropout", -0.1), ("input_size", 0),
                                         ("threads", 0), ("head", "mlp")])
def test_bad_values_are_data_errors(field: str, value: object) -> None:
    with pytest.raises(DataError, match=field):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_every_field_is_a_train_option() -> None:
    text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for f in dataclasses.fields(TrainConfig):
        flag = "--split" if f.name == "split_csv" else "--" + f.name.replace("_", "-")
        assert flag in text, flag


def test_paper_head_is_served_and_evaluated_without_mirror_tta() -> None:
    assert make_config("d", "s.csv", "kulit").serve_tta
    assert not make_config("d", "s.csv", "kulit", head="paper").serve_tta
