"""The model-building commands: `kulit train|export|quantize|export-web|evaluate|gate|shortlist|
build`, registered on cli.py's app by `register_build_commands`. Each imports its module lazily,
so `kulit predict` and `kulit serve` never load torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kulit.build.build_cmd import build_cmd
from kulit.build.shortlist_cmd import shortlist_cmd
from kulit.config import DEFAULT_MODEL_DIR
from kulit.progress import progress_bar

# `kulit train`'s options are TrainConfig's fields (help from their comments): a new field
# needs no edit here. Every option defaults to "unset", so the recipe's value applies.
_TYPES: dict[str, type] = {"str": str, "str | None": str, "int": int, "float": float,
                           "bool": bool}
_OPTION_NAMES = {"split_csv": ("--split", "--split-csv")}  # kept from before the generation


def _train_parameters() -> list[inspect.Parameter]:
    from kulit.config import RECIPES, TrainConfig, field_help

    helps = field_help()
    params = []
    for f in dataclasses.fields(TrainConfig):
        kind = _TYPES.get(str(f.type))
        if kind is None:  # pragma: no cover - a new field type needs a mapping above
            raise TypeError(f"TrainConfig.{f.name}: no CLI type for {f.type!r}")
        flag = "--" + f.name.replace("_", "-")
        names = _OPTION_NAMES.get(f.name, (flag,))
        if kind is bool:
            names = (f"{flag}/--no-{f.name.replace('_', '-')}",)
        default = "runs/RECIPE" if f.name == "out" else f.default
        help_text = f"{helps.get(f.name, '')} (default: {default})".strip()
        if f.name == "recipe":
            help_text += f"; one of {', '.join(RECIPES)}"
        option = typer.Option(*names, help=help_text, show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[kind | None, option]))
    return params


def train_cmd(**options: Any) -> None:
    """Train a head (and, in kulit's recipe, the backbone's last blocks): paper or kulit recipe."""
    from kulit.config import TrainConfig, make_config
    from kulit.training.train import train

    defaults = TrainConfig()
    recipe = options.pop("recipe") or defaults.recipe
    data = options.pop("data") or defaults.data
    split_csv = options.pop("split_csv") or defaults.split_csv
    options["out"] = options.get("out") or str(Path("runs") / recipe)
    run = train(make_config(data, split_csv, recipe, **options))
    if json.loads((run / "summary.json").read_text()).get("interrupted"):
        typer.echo(f"interrupted: the best epoch so far is saved in {run}", err=True)
        raise typer.Exit(130)


train_cmd.__signature__ = inspect.Signature(_train_parameters())  # type: ignore[attr-defined]


def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from `kulit train`")],
    out: Annotated[Path, typer.Option(help="Model directory to write")] = Path(DEFAULT_MODEL_DIR),
    name: Annotated[str | None, typer.Option(help="Model id [the folder name]")] = None,
    card_extra: Annotated[
        Path | None, typer.Option(help="JSON merged into card.json (data source, licence, limits)")
    ] = None,
    int8: Annotated[
        bool, typer.Option("--int8", help="Then `kulit quantize` the model with the run's split")
    ] = False,
) -> None:
    """Export a run to model.onnx + card.json + head.npz, checked against torch."""
    from kulit.training.export import export, load_extra

    export(run_dir, out, name=name, extra=load_extra(card_extra))
    if int8:
        from kulit.serving.card import load_card

        _quantize(out, Path(load_card(out).train_config["split_csv"]))


def _quantize_defaults() -> Any:
    from kulit.config import QuantizeConfig  # already imported for `kulit train`'s options

    return QuantizeConfig()


_QD = _quantize_defaults()  # `kulit quantize --help` shows QuantizeConfig's own defaults


def quantize_cmd(
    model: Annotated[Path, typer.Argument(help="Model directory (model.onnx + card.json)")],
    split_csv: Annotated[
        Path, typer.Option("--split-csv", help="split.csv from `kulit data`: train rows "
                           "calibrate, val rows check", metavar="FILE")
    ],
    calib_images: Annotated[int | None, typer.Option(
        help=f"Training photos to calibrate on (default {_QD.calib_images})")] = None,
    min_agreement: Annotated[float | None, typer.Option(
        help=f"Least top-1 agreement with fp32 on val, each source (default {_QD.min_agreement})"
    )] = None,
    max_drop: Annotated[float | None, typer.Option(
        help="Largest balanced-accuracy drop on val, each source (0.01 = 1 point) "
             f"(default {_QD.max_bacc_drop})")] = None,
    seed: Annotated[int | None, typer.Option(
        help=f"Seed picking the calibration photos (default {_QD.seed})")] = None,
) -> None:
    """Add model-int8.onnx (static int8) if it agrees with fp32 on val; else write nothing."""
    from kulit.config import QuantizeConfig

    given: dict[str, Any] = {"calib_images": calib_images, "min_agreement": min_agreement,
                             "max_bacc_drop": max_drop, "seed": seed}
    _quantize(model, split_csv, QuantizeConfig(**{k: v for k, v in given.items()
                                                  if v is not None}))


def _quantize(model: Path, split_csv: Path, cfg: Any = None) -> None:
    """Quantise and print the check figures, also when the check refuses the int8 file."""
    from kulit.build.quantize import QuantizeError, quantize_model, summary_lines

    try:
        entry = quantize_model(model, split_csv, cfg=cfg)
    except QuantizeError as e:
        for line in summary_lines(e.entry, model):
            typer.echo(line, err=True)
        raise
    for line in summary_lines(entry, model):
        typer.echo(line)


def export_web_cmd(
    model: Annotated[Path, typer.Option("--model", help="Model directory", metavar="DIR")] = Path(
        DEFAULT_MODEL_DIR),
    weights: Annotated[str, typer.Option(
        help="int8: the served graph (the int8 file when it is served); fp32: model.onnx; "
             "int8-weights: weight-only int8 (smaller download, not the server's numbers)"),
    ] = "int8",
) -> None:
    """Build model-web.onnx (uint8 photo in, probabilities + gate out) for the on-device check."""
    from kulit.build.webmodel import build_web_model

    typer.echo(f"wrote {build_web_model(model, weights=weights)}")


def evaluate_cmd(
    model: Annotated[
        Path, typer.Option("--model", help="Model directory (model.onnx + card.json)",
                           metavar="DIR")
    ],
    data: Annotated[Path, typer.Option(help="Image folder, one subfolder per class")],
    out: Annotated[
        Path, typer.Option(help="Folder for report.md, metrics.json, plots", metavar="DIR")
    ],
    split: Annotated[
        str, typer.Option(help="test|val|train (rows of --split-csv) or all (every image "
                          "in the class folders)")
    ] = "test",
    split_csv: Annotated[
        Path | None, typer.Option("--split-csv", help="split.csv from `kulit data`",
                                  metavar="FILE")
    ] = None,
    engine: Annotated[str, typer.Option(help="local, or ray: predict on Ray Data")] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (default: start one here)")] = None,
) -> None:
    """Measure a model on labelled photos: metrics with 95% CIs, calibration, report.md."""
    from kulit.build.evaluate import evaluate_model
    from kulit.build.report import summary_lines

    predict_all = None
    if engine != "local" or address is not None:
        from kulit.scale.cli import evaluate_on_engine

        predict_all = evaluate_on_engine(engine, model, address=address)
    metrics = evaluate_model(model, data, split=split, split_csv=split_csv, out=out,
                             progress=progress_bar("predicting"),
                             predict_all=predict_all)
    for line in summary_lines(metrics, out):
        typer.echo(line)


def gate_cmd(
    model: Annotated[
        Path, typer.Option("--model", help="Model directory; gate.npz and card.json are "
                           "written into it", metavar="DIR")
    ],
    data: Annotated[
        Path, typer.Option(help="Data root holding the skin sources (skin8/, skin8-web/, "
                           "atlas/), not-skin/, other-conditions/ and atlas-other/",
                           metavar="DIR")
    ] = Path("../shared/data"),
    split_csv: Annotated[
        Path | None, typer.Option("--split-csv", help="Multi-source split.csv (file,class,"
                                  "split,group,source,origin); without it an md5 dev split",
                                  metavar="FILE")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Feature cache (.npz), reused while model.onnx is "
                                  "unchanged", metavar="FILE")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the logistic fits")] = 0,
) -> None:
    """Fit the trust gate (not skin / none of these) and the card's cut-offs on a model."""
    from kulit.build.gate_fit import GateParams, run_gate

    for line in run_gate(model, data, split_csv=split_csv, cache=cache,
                         params=GateParams(seed=seed),
                         progress=progress_bar("features")):
        typer.echo(line)


def register_build_commands(app: typer.Typer,
                            friendly: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Add the build commands to `app`, in the order `kulit --help` lists them."""
    for name, fn in (("train", train_cmd), ("export", export_cmd), ("quantize", quantize_cmd),
                     ("export-web", export_web_cmd), ("evaluate", evaluate_cmd),
                     ("gate", gate_cmd), ("shortlist", shortlist_cmd), ("build", build_cmd)):
        app.command(name)(friendly(fn))
