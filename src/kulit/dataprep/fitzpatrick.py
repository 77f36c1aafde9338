"""Fitzpatrick skin types: the three bands kulit reports by, and the one join of a photo to the
type its folder's manifest.csv gives it (atlas/ and atlas-other/ carry a `fitzpatrick` column).

Torch-free. split.csv does not repeat the type: any photo, from a split row or a folder, is
joined here by its path `<folder>/<class>/<name>` to `<folder>/manifest.csv`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from kulit.errors import DataError

# Bands of Fitzpatrick types (1 = lightest ... 6 = darkest), lightest first.
BANDS = ("I-II", "III-IV", "V-VI")
FITZPATRICK_COLUMN = "fitzpatrick"  # manifest.csv column; -1 (or empty) = not judged
MANIFEST = "manifest.csv"


def band_of_type(fitzpatrick: int | None) -> str | None:
    """The band of a Fitzpatrick type 1-6 ("I-II", "III-IV", "V-VI"); None when unknown."""
    if fitzpatrick is None or not 1 <= fitzpatrick <= 6:
        return None
    return BANDS[(fitzpatrick - 1) // 2]


def band_index(band: str | None) -> int | None:
    """0, 1, 2 for the bands lightest to darkest; None for no band."""
    return BANDS.index(band) if band in BANDS else None


def read_fitzpatrick(folder: Path) -> dict[str, int]:
    """file (relative to `folder`) -> Fitzpatrick type 1-6, from its manifest.csv; {} when the
    folder has no manifest or the manifest no `fitzpatrick` column. Unknown types are left out."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
        if FITZPATRICK_COLUMN not in (reader.fieldnames or []):
            return {}
        out = {}
        for r in reader:
            raw = (r.get(FITZPATRICK_COLUMN) or "").strip()
            try:
                value = int(float(raw))
            except ValueError:
                continue
            if r.get("file") and 1 <= value <= 6:
                out[r["file"]] = value
        return out
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def fitzpatrick_of(paths: Iterable[Path]) -> list[int | None]:
    """The Fitzpatrick type of each photo `<folder>/<class>/<name>` (absolute or relative path),
    read from `<folder>/manifest.csv`; None where the manifest gives none."""
    manifests: dict[Path, dict[str, int]] = {}
    out: list[int | None] = []
    for p in paths:
        p = Path(p)
        folder = p.parent.parent
        if folder not in manifests:
            manifests[folder] = read_fitzpatrick(folder)
        out.append(manifests[folder].get(f"{p.parent.name}/{p.name}"))
    return out


def bands_of(paths: Iterable[Path]) -> list[str | None]:
    """The Fitzpatrick band of each photo (see `fitzpatrick_of`); None where unknown."""
    return [band_of_type(t) for t in fitzpatrick_of(paths)]
