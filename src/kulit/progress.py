"""The one progress display: a tqdm bar on stderr while a person watches (a terminal); in a log,
nothing, or with `log_every` one line per that many items. Long steps take a
`progress(done, total)` callback; the commands hand them `progress_bar(...)`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

Progress = Callable[[int, int], None]


class Bar:
    """A `progress(done, total)` callback; a count that starts again (the next folder, the
    next pass) starts a new bar."""

    def __init__(self, desc: str, unit: str, log_every: int | None) -> None:
        self.desc, self.unit, self.log_every = desc, unit, log_every
        self.bar: Any = None
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.log_every is not None:
            if done % self.log_every == 0 or done == total:
                rate = done / max(time.monotonic() - self.t0, 1e-9)
                print(f"{done}/{total} {self.unit}s, {rate:.0f}/s", file=sys.stderr, flush=True)
            return
        if self.bar is None or total != self.bar.total or done < self.bar.n:
            self.close()
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_bar(desc: str, unit: str = "photo", log_every: int | None = None) -> Bar | None:
    """A tqdm bar on a terminal; elsewhere a line per `log_every` items, or None (quiet)."""
    if sys.stderr.isatty():
        return Bar(desc, unit, None)
    return Bar(desc, unit, log_every) if log_every else None
