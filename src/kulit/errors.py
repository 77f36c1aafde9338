"""Errors a user can cause; the CLI prints them as one line and the API maps them to 4xx."""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path


class KulitError(Exception):
    """A problem with the user's input or environment, reported without a stack trace."""

    code = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ImageError(KulitError):
    """An image that cannot be used.

    code: not_found | not_image | unreadable | too_large | too_small | too_narrow.
    """

    code = "unreadable"


class ModelError(KulitError):
    """A model directory that is missing or malformed."""

    code = "model_error"


class DataError(KulitError):
    """A data folder or split file that cannot be used."""

    code = "data_error"


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with control characters escaped (\\n, \\x1b, \\u202e ...), for lines printed
    to a terminal: a file name cannot move the cursor, colour the screen, fake another line or
    reverse its own text (controls, format characters, line and paragraph separators)."""
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create folder `path` if needed and prove it takes a file; or one KulitError that names
    `what` (an option such as --out), before any long work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        raise KulitError(f"{what} {path}: is a file, not a folder") from None
    except OSError as e:
        raise KulitError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    return path
