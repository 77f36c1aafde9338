"""What a batch run reads: photos from local folders, or from a CSV / text list of paths.

A list may name local paths (relative ones are read from the list's own folder) or any URI
that pyarrow's filesystems open (s3://, gs://, hdfs://, file://). Ray-free: the driver lists,
the actors read.
"""

from __future__ import annotations

import csv
from pathlib import Path

from kulit.errors import ImageError, KulitError
from kulit.predict_cli import expand

LIST_SUFFIXES = (".csv", ".txt", ".lst")
PATH_COLUMNS = ("path", "file", "source")  # the CSV column read, first found (else column 1)
MAX_REMOTE_BYTES = 256 * 2**20  # a remote file is read whole into memory: a cap per photo


def is_uri(source: str) -> bool:
    """`scheme://...` (not a Windows drive letter)."""
    head, sep, _ = source.partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").isalnum()


def list_sources(paths: list[Path]) -> list[str]:
    """Every photo to predict, in order, each once: folders walked as `kulit predict` walks
    them, list files read line by line, anything else taken as a photo."""
    found: list[str] = []
    for p in paths:
        if p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            found.extend(read_list(p))
        else:
            found.extend(str(f) for f in expand([p]))
    unique = list(dict.fromkeys(found))  # a photo listed twice is one row of the output
    if not unique:
        raise KulitError("no files to predict (empty folder or list?)")
    return unique


def read_list(path: Path) -> list[str]:
    """Paths from a text file (one a line, # comments) or a CSV with a header."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise KulitError(f"{path}: not a text list of paths (not UTF-8)") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            return []
        header = [h.strip().lower() for h in rows[0]]
        col = next((header.index(c) for c in PATH_COLUMNS if c in header), 0)
        items = [r[col].strip() for r in rows[1:] if len(r) > col and r[col].strip()]
    else:
        items = [s for line in text.splitlines()
                 if (s := line.strip()) and not s.startswith("#")]
    base = path.resolve().parent
    return [s if is_uri(s) or Path(s).is_absolute() else str(base / s) for s in items]


def read_source(source: str) -> str | bytes:
    """What the Predictor decodes: a local path as it is, a URI's bytes (or ImageError)."""
    if not is_uri(source):
        return source
    from pyarrow import fs

    try:
        filesystem, inner = fs.FileSystem.from_uri(source)
        info = filesystem.get_file_info(inner)
        if info.type == fs.FileType.NotFound:
            raise ImageError(f"{source}: file not found", "not_found")
        if info.type != fs.FileType.File:
            raise ImageError(f"{source}: not a regular file (a folder?)", "not_image")
        size = info.size
        if size is not None and size > MAX_REMOTE_BYTES:
            raise ImageError(f"{source}: {size / 2**20:.0f} MB, larger than "
                             f"{MAX_REMOTE_BYTES // 2**20} MB", "too_large")
        with filesystem.open_input_stream(inner) as f:
            return bytes(f.read())
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{source}: file not found", "not_found") from None
    except Exception as e:  # noqa: BLE001 - each filesystem raises its own types
        raise ImageError(f"{source}: cannot read ({type(e).__name__}: {e})"[:300],
                         "unreadable") from None
