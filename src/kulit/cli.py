"""`kulit data|explain|predict|serve|clinic`, and the build commands of `kulit.cli_build`.

Each command imports its module lazily, so `kulit predict` and `kulit serve` never load torch.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kulit.cli_build import register_build_commands
from kulit.clinic.cli import app as clinic_app
from kulit.clinic.cli import serve_settings
from kulit.config import DEFAULT_MODEL_DIR, TOP_K
from kulit.errors import KulitError, printable

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
            typer.echo(printable(f"error: {e.message}"), err=True)
            raise typer.Exit(2) from None
        except FileNotFoundError as e:
            typer.echo(f"error: not found: {e.filename or e}", err=True)
            raise typer.Exit(2) from None
        except OSError as e:  # unreadable, unwritable, a file where a folder should be ...
            where = f"{e.filename}: " if e.filename else ""
            typer.echo(f"error: {where}{e.strerror or e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


app.add_typer(clinic_app, name="clinic")  # kulit clinic init|add-user|token|export ...


@app.callback()
def main() -> None:
    """kulit: skin-disease photo classifier. Not a diagnosis."""


@app.command()
@friendly
def data(
    paths: Annotated[
        list[Path], typer.Argument(help="Image folder(s), each with one subfolder per class")
    ],
    out: Annotated[Path, typer.Option(help="Where split.csv and data_report.json go")] = Path(
        "runs/data"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the stratified split")] = 0,
    val: Annotated[float, typer.Option(help="Validation fraction")] = 0.2,
    test: Annotated[float, typer.Option(help="Test fraction")] = 0.1,
    exclude: Annotated[
        Path | None,
        typer.Option(help="Files to leave out, one <folder>/<class>/<file> per line (# comments)"),
    ] = None,
) -> None:
    """Scan, validate and de-duplicate image folders; split stratified by class and source."""
    from kulit.dataprep.split import run_data

    code = run_data(paths, out, seed=seed, val_frac=val, test_frac=test, exclude=exclude)
    raise typer.Exit(code)


@app.command()
@friendly
def explain(
    image: Annotated[
        Path | None,
        typer.Argument(help="Photo to walk through; without it, the paper's worked example"),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Model directory [models/kulit-skin8 if it "
                                  "exists]; adds the real model's first layer and softmax",
                                  metavar="DIR")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="Top-left pixel X,Y of the 4x4 patch (default: the photo's centre)",
                     metavar="X,Y"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the steps as JSON")] = False,
) -> None:
    """Show the CNN's steps (patch, conv, sum, ReLU, flatten, dense, softmax) with the numbers."""
    from kulit.explain.model import resolve_model_dir
    from kulit.explain.steps import explain_image, paper_walkthrough, parse_at, to_json
    from kulit.explain.text import format_explanation

    if image is None:
        if model is not None or at is not None:
            raise KulitError("--model and --at need an IMAGE; without one, kulit explain "
                             "shows the paper's worked example")
        result = paper_walkthrough()
    else:
        model_dir, note = resolve_model_dir(model)  # default: models/kulit-skin8 if present
        result = explain_image(image, model_dir=model_dir, at=parse_at(at) if at else None)
        if note:
            result["model_note"] = note
    typer.echo(to_json(result) if as_json else format_explanation(result))


register_build_commands(app, friendly)  # train, export, quantize, export-web, evaluate, gate, ...


@app.command("predict")
@friendly
def predict_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Images or folders of images")],
    model: Annotated[Path, typer.Option(help="Model directory")] = Path(DEFAULT_MODEL_DIR),
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines for programs")] = False,
    top_k: Annotated[int, typer.Option(help="How many conditions to list")] = TOP_K,
    heatmap_dir: Annotated[
        Path | None, typer.Option(help="Write Grad-CAM overlays (PNG) into this folder")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per ONNX run (with --workers 1)")] = 32,
    workers: Annotated[
        int | None, typer.Option(help="Parallel single-thread workers, one photo each [CPU "
                                 "count]; 1 = batches on all threads; the actors with "
                                 "--engine ray", min=1)
    ] = None,
    int8: Annotated[bool, typer.Option(help="Use the model's int8 file if it has one")] = True,
    engine: Annotated[str, typer.Option(help="local, or ray: Ray Data over an actor pool "
                                        "(also reads CSV/text lists of paths or URIs)")] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (default: start one here)")] = None,
    out: Annotated[Path | None, typer.Option(help="--engine ray: write Parquet here; a rerun "
                                             "does only what is missing", metavar="DIR")] = None,
) -> None:
    """Predict skin conditions for photos (torch-free). Not a diagnosis."""
    from kulit.predict_cli import run_predict

    if engine != "local" or address or out:
        from kulit.scale.cli import predict_on_engine

        raise typer.Exit(predict_on_engine(engine, paths, model, top_k=top_k, int8=int8, out=out,
                                           address=address, heatmap_dir=heatmap_dir,
                                           batch_size=batch_size, workers=workers))
    raise typer.Exit(run_predict(paths, model, json_out=json_out, top_k=top_k,
                                 heatmap_dir=heatmap_dir, batch_size=batch_size,
                                 workers=workers, int8=int8))


@app.command()
@friendly
def serve(
    model: Annotated[
        Path, typer.Option("--model", help="Model directory (model.onnx + card.json)",
                           metavar="DIR", envvar="KULIT_MODEL_DIR")
    ] = Path(DEFAULT_MODEL_DIR),
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port", min=1, max=65535)] = 8000,
    clinic: Annotated[bool, typer.Option(
        "--clinic", help="Clinic mode: accounts, consented cases, audit log")] = False,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", metavar="URL",
        help="Clinic database: SQLite file or postgresql://... [kulit-clinic/clinic.db]")] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(
        help="TLS certificate (PEM): serve HTTPS, which phones need for the on-device check "
             "and offline use on any host but localhost", exists=True, dir_okay=False)] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(
        help="TLS private key (PEM) of --ssl-certfile", exists=True, dir_okay=False)] = None,
    replicas: Annotated[int | None, typer.Option(
        min=1, help="Ray Serve: this many replicas of the app behind one address")] = None,
    autoscale: Annotated[str | None, typer.Option(
        metavar="MIN,MAX", help="Ray Serve: MIN to MAX replicas, following the load")] = None,
    address: Annotated[str | None, typer.Option(
        help="With --replicas/--autoscale: Ray cluster to join (default: one here)")] = None,
) -> None:
    """Serve the web app and JSON API (torch-free). Not a diagnosis."""
    if replicas is not None or autoscale is not None or address is not None:
        from kulit.scale.serve import run_serve

        return run_serve(model, host=host, port=port, replicas=replicas, autoscale=autoscale,
                         address=address, one_process_only=clinic or ssl_certfile is not None)
    try:
        import uvicorn

        from kulit.serving.predict import Predictor
        from kulit.web.app import create_app
        from kulit.web.server import uvicorn_options
        from kulit.web.settings import Settings
    except ImportError as e:
        raise KulitError(f"kulit serve needs the serve extra ({e.name} is missing): "
                         "pip install 'kulit[serve]'") from None

    tune_allocator()
    settings = Settings(model_dir=model)  # KULIT_THREADS, KULIT_INT8, ... from the environment
    clinic_settings = serve_settings(clinic, database_url)  # None unless --clinic
    # a bad model dir fails here, before the server starts
    predictor = Predictor(model, **settings.predictor_options())
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise KulitError("--ssl-certfile and --ssl-keyfile go together")
    scheme = "https" if ssl_certfile else "http"
    typer.echo(f"kulit: serving {predictor.model_id} ({predictor.precision}) on "
               f"{scheme}://{host}:{port}  (Ctrl+C stops)", err=True)
    uvicorn.run(create_app(settings, predictor, clinic_settings), host=host, port=port,
                ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
                **uvicorn_options(settings))  # no Server header; a deadline on headers


def tune_allocator() -> None:
    """glibc only: return big freed blocks to the system and keep two malloc arenas.

    A decoded photo lives in 16 MB blocks; by default glibc raises its mmap threshold past
    them after the first free, and each threadpool thread keeps its own arena, so the server's
    memory rose with every big upload and never fell. The same as
    MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_ARENA_MAX=2; those win if set.
    """
    import ctypes
    import ctypes.util
    import os

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
        return
    m_arena_max, m_mmap_threshold = -8, -3  # from glibc's malloc.h
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(m_arena_max, 2)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(m_mmap_threshold, 1 << 20)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
