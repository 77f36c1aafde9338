"""`kulit shortlist`: the command line of the shortlist build step (kulit.build.shortlist_fit).

Light on purpose: cli.py registers it at start-up; the fit is imported when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kulit.progress import progress_bar


def shortlist_cmd(
    model: Annotated[Path, typer.Option("--model", help="Model directory; card.json gets the "
                                        "section 'shortlist'", metavar="DIR")],
    split_csv: Annotated[Path, typer.Option("--split-csv", help="split.csv written by `kulit "
                                            "data` (the val photos calibrate, the test photos "
                                            "measure)", metavar="FILE")],
    data: Annotated[Path, typer.Option(help="Data root holding the split's folders, not-skin/ "
                                       "and other-conditions/", metavar="DIR")
                    ] = Path("../shared/data"),
    level: Annotated[float | None, typer.Option(help="Coverage level [the model folder's, "
                                                "else 0.9]")] = None,
    method: Annotated[str, typer.Option(help="source-class, class, source or pooled (see "
                                       "kulit.build.shortlist_fit)")] = "source-class",
    cache: Annotated[Path | None, typer.Option(help="Feature cache (.npz), reused while the "
                                               "served file is unchanged", metavar="FILE")
                     ] = None,
) -> None:
    """Fit the shortlist (conformal cut-offs per class) on the served model and measure it."""
    from kulit.build.shortlist_fit import run_shortlist

    for line in run_shortlist(model, data, split_csv, level=level, method=method, cache=cache,
                              progress=progress_bar("photos")):
        typer.echo(line)
