"""`kulit build`'s command line (kulit.build.pipeline); light, so the CLI starts fast."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from kulit.config import BUILD_STEPS, BuildConfig

_D = BuildConfig()


def build_cmd(
    start: Annotated[str | None, typer.Option("--from", help=f"First step to run (it runs "
                                              f"even if unchanged): {', '.join(BUILD_STEPS)}",
                                              metavar="STEP")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last step to run",
                                              metavar="STEP")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run every step, changed or not")
                     ] = False,
    model: Annotated[Path, typer.Option(help="Model folder", metavar="DIR")] = Path(_D.model),
    data_root: Annotated[Path, typer.Option(help="Parent of the data folders", metavar="DIR")
                         ] = Path(_D.data_root),
    run_dir: Annotated[Path, typer.Option(help="Training run folder", metavar="DIR")
                       ] = Path(_D.run_dir),
    data_out: Annotated[Path, typer.Option(help="Folder of split.csv", metavar="DIR")
                        ] = Path(_D.data_out),
) -> None:
    """Build the model end to end: data, train, export, quantize, gate, shortlist, evaluate,
    export-web; a step whose inputs did not change since its last run is skipped."""
    from kulit.build.pipeline import run_build, summary_lines

    cfg = dataclasses.replace(_D, model=str(model), data_root=str(data_root),
                              run_dir=str(run_dir), data_out=str(data_out))
    outcomes = run_build(cfg, start=start, until=until, force=force,
                         log=lambda line: typer.echo(line, err=True))
    for line in summary_lines(outcomes):
        typer.echo(line)
