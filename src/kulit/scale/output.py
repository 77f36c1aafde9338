"""Where a batch run's answers go: Parquet part files in `--out`, which also make it resumable.

Each row is one JSON line of `kulit predict --json` (an answer, or `source` + `error`): a few
of its fields as typed columns, and the line itself. The driver writes each part whole and
renames it into place, so a part is either complete or absent: a run restarted with the same
`--out` reads the `source` column of the parts already there and predicts only the photos
missing from it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kulit.errors import KulitError

PART_GLOB = "part-*.parquet"
# Typed columns to filter and count on (SQL, pandas), then the whole JSON line in `json`: the
# line carries every answer field, also those added after this table was written.
COLUMNS: dict[str, pa.DataType] = {
    "source": pa.string(), "model": pa.string(), "status": pa.string(), "label": pa.string(),
    "confidence": pa.float64(), "see_doctor": pa.bool_(), "melanoma_alert": pa.bool_(),
    "error": pa.string(),  # the error code of a photo that could not be read
}
SCHEMA = pa.schema([*COLUMNS.items(), ("json", pa.string())])


def _parts(out: Path) -> list[Path]:
    return sorted(out.glob(PART_GLOB))


def done_sources(out: Path, model_id: str) -> set[str]:
    """The photos `out` already holds answers for; refuses a folder another model wrote."""
    done: set[str] = set()
    for part in _parts(out):
        try:
            t = pq.read_table(part, columns=["source", "model"])
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types on a bad file
            raise KulitError(f"{part}: not a kulit part file ({e}); move it out of --out"
                             ) from None
        others = set(t.column("model").drop_null().to_pylist()) - {model_id}
        if others:
            raise KulitError(f"--out {out} holds answers of model {sorted(others)[0]}, not "
                             f"{model_id}: use another --out folder")
        done.update(t.column("source").to_pylist())
    return done


class PartWriter:
    """Collects rows; writes a part of `rows_per_part` rows, or whatever has come in after
    `seconds` (so an interrupted run loses at most that much work)."""

    def __init__(self, out: Path, rows_per_part: int = 1000, seconds: float = 30.0) -> None:
        self.out, self.rows_per_part, self.seconds = out, rows_per_part, seconds
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.rows: list[dict[str, Any]] = []
        self.written = 0
        self._seq = 0
        self._since = time.monotonic()

    def add(self, line: str) -> None:
        """One JSON line of `kulit predict --json`."""
        row = json.loads(line)
        self.rows.append({**{k: row.get(k) for k in COLUMNS},
                          "error": (row.get("error") or {}).get("code"), "json": line})
        if (len(self.rows) >= self.rows_per_part
                or time.monotonic() - self._since >= self.seconds):
            self.flush()

    def flush(self) -> None:
        self._since = time.monotonic()
        if not self.rows:
            return
        name = f"part-{self.run}-{self._seq:06d}.parquet"
        tmp = self.out / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(self.rows, schema=SCHEMA), tmp)
        os.replace(tmp, self.out / name)  # atomic: a part is whole or absent
        self._seq += 1
        self.written += len(self.rows)
        self.rows = []


def read_rows(out: Path) -> list[dict[str, Any]]:
    """Every row of `out` as the JSON line `kulit predict --json` prints for it."""
    return [json.loads(line) for part in _parts(out)
            for line in pq.read_table(part, columns=["json"]).column("json").to_pylist()]
