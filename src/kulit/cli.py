"""`kulit data|train|evaluate|export|predict|serve|explain`.

Each command imports its module lazily, so `kulit predict` and `kulit serve` never load torch.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from kulit.errors import KulitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="kulit: skin-disease photo classifier. Not a diagnosis.",
)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one clear line and a non-zero exit, never a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KulitError as e:
            typer.echo(f"error: {e.message}", err=True)
            raise typer.Exit(2) from None
        except FileNotFoundError as e:
            typer.echo(f"error: not found: {e.filename or e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def main() -> None:
    """kulit: skin-disease photo classifier. Not a diagnosis."""


@app.command()
@friendly
def data(
    path: Annotated[Path, typer.Argument(help="Image folder, one subfolder per class")],
    out: Annotated[Path, typer.Option(help="Where split.csv and data_report.json go")] = Path(
        "runs/data"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the stratified split")] = 0,
    val: Annotated[float, typer.Option(help="Validation fraction")] = 0.2,
    test: Annotated[float, typer.Option(help="Test fraction")] = 0.1,
) -> None:
    """Scan, validate and de-duplicate an image folder; write a grouped, stratified split."""
    from kulit.data import run_data

    code = run_data(path, out, seed=seed, val_frac=val, test_frac=test)
    raise typer.Exit(code)


@app.command()
@friendly
def explain(
    image: Annotated[
        Path | None,
        typer.Argument(help="Photo to walk through; without it, the paper's worked example"),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Model directory", metavar="DIR")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="Top-left pixel X,Y of the 4x4 patch (default: the photo's centre)",
                     metavar="X,Y"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the steps as JSON")] = False,
) -> None:
    """Show the CNN's steps (patch, conv, sum, ReLU, flatten, dense, softmax) with the numbers."""
    import json

    from kulit.explain import explain_image, format_explanation, paper_walkthrough, parse_at

    if image is None:
        if model is not None or at is not None:
            raise KulitError("--model and --at need an IMAGE; without one, kulit explain "
                             "shows the paper's worked example")
        result = paper_walkthrough()
    else:
        result = explain_image(image, model_dir=model, at=parse_at(at) if at else None)
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json
               else format_explanation(result))


@app.command()
@friendly
def evaluate(
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
) -> None:
    """Measure a model on labelled photos: metrics with 95% CIs, calibration, report.md."""
    from kulit.evaluate import evaluate_model, summary_lines

    def show(i: int, n: int) -> None:
        print(f"\rpredicting {i}/{n}", end="\n" if i == n else "", file=sys.stderr, flush=True)

    metrics = evaluate_model(model, data, split=split, split_csv=split_csv, out=out,
                             progress=show if sys.stderr.isatty() else None)
    for line in summary_lines(metrics, out):
        typer.echo(line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
