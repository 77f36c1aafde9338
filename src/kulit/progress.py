"""The one progress display: a tqdm bar on stderr while a person watches (a terminal), nothing
in a log or a pipe. Long steps take a `progress(done, total)` callback; the commands hand them
`progress_bar(...)`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

Progress = Callable[[int, int], None]


def progress_bar(desc: str, unit: str = "photo") -> Progress | None:
    """A `progress(done, total)` callback drawing one tqdm bar; None when stderr is not a
    terminal. A count that starts again (the next folder, the next pass) starts a new bar."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None or total != bar.total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
