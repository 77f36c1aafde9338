"""Scan image folders and check every file: the class folders, their manifest origins, and
each image decoded once (size, format, sha256), in parallel when there are many. Torch-free."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kulit.dataprep.dedupe import image_phashes
from kulit.errors import DataError, ImageError
from kulit.serving.preprocess import decode_image

MIN_SIDE = 32  # smaller images carry too little detail to train on (decoder: preprocess)
MAX_FILE_BYTES = 256 * 2**20  # never read a video or disk image into memory
MANIFEST = "manifest.csv"  # optional per folder: columns file (relative to it) and source
_PARALLEL_MIN_FILES = 2000  # below this, starting worker processes costs more than it saves


@dataclass(frozen=True)
class FileCheck:
    """What inspecting one file found: its content hash and pHashes, or why it was rejected."""

    file: str  # path relative to the data root, forward slashes
    label: str
    sha256: str = ""
    format: str = ""
    width: int = 0
    height: int = 0
    phashes: tuple[int, ...] = ()  # the 8 dihedral variants, identity first
    reason_code: str = ""  # empty when the file is usable
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason_code


@dataclass
class FolderScan:
    """The files of a class folder tree, before any image is opened."""

    root: Path
    class_dirs: list[str]
    files: list[tuple[str, str]]  # (relative file, class), sorted
    ignored: list[str]  # top-level files and hidden entries, relative paths
    empty_classes: list[str]


# ---------------------------------------------------------------------------------------------
# Scanning


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def scan_folder(root: Path) -> FolderScan:
    """List class folders and their files; reject nesting, missing paths and empty trees."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is a file, not a folder of class folders: {root}")
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"cannot list data folder {root}: {e.strerror or e}") from None

    ignored: list[str] = []
    class_dirs: list[str] = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            ignored.append(entry.name)
        else:
            class_dirs.append(entry.name)
    if not class_dirs:
        raise DataError(f"no class folders in {root} (expected one subfolder per class)")

    files: list[tuple[str, str]] = []
    empty: list[str] = []
    for label in class_dirs:
        class_dir = root / label
        try:
            children = sorted(class_dir.iterdir(), key=lambda p: p.name)
        except OSError as e:
            raise DataError(f"cannot list class folder {label}: {e.strerror or e}") from None
        n_before = len(files)
        for child in children:
            rel = _rel(child, root)
            if child.name.startswith("."):
                ignored.append(rel)
            elif child.is_dir():
                raise DataError(_nested_message(child, root))
            else:
                files.append((rel, label))
        if len(files) == n_before:
            empty.append(label)
    if not files:
        raise DataError(f"no image files in the class folders of {root}")
    return FolderScan(root, class_dirs, files, ignored, empty)


def _nested_message(folder: Path, root: Path) -> str:
    example = next((p for p in sorted(folder.rglob("*")) if p.is_file()), None)
    where = _rel(folder, root) + (f" (holding {_rel(example, root)})" if example else "")
    hint = ""
    subfolders = [p for p in folder.parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subfolders) >= 2:  # looks like a data folder itself: PATH is probably one level up
        hint = f"; is {folder.parent} the data folder?"
    return f"nested folder not supported: {where}; put images directly in the class folder{hint}"


# ---------------------------------------------------------------------------------------------
# Inspecting one file


def _reject(file: str, label: str, code: str, reason: str, sha: str = "") -> FileCheck:
    return FileCheck(file=file, label=label, sha256=sha, reason_code=code, reason=reason)


def inspect_file(root: Path, file: str, label: str) -> FileCheck:
    """Hash, sniff, size-check and fully decode one file; never raises for a bad file."""
    path = root / file
    try:
        if not path.is_file():
            return _reject(file, label, "unreadable", "not a regular file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return _reject(file, label, "too_large", f"{size / 2**20:.0f} MB file")
        data = path.read_bytes()
    except OSError as e:
        return _reject(file, label, "unreadable", f"cannot read: {e.strerror or e}")
    sha = hashlib.sha256(data).hexdigest()
    if not data:
        return _reject(file, label, "not_image", "empty file", sha)
    try:
        img = decode_image(data, min_side=MIN_SIDE)
    except ImageError as e:
        code = e.code
        if code == "unreadable":  # the report tells a cut-off file from a damaged one
            code = "truncated" if ": truncated image" in e.message else "corrupt"
        return _reject(file, label, code, e.message.split(": ", 1)[-1], sha)
    with img:
        try:
            phashes = image_phashes(img)
        except Exception as e:
            return _reject(file, label, "corrupt", f"cannot convert: {_short(e)}", sha)
        return FileCheck(file, label, sha, img.format or "", img.width, img.height, phashes)


def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:120]


def _inspect_star(args: tuple[Path, str, str]) -> FileCheck:
    return inspect_file(*args)


def inspect_files(
    root: Path,
    files: Sequence[tuple[str, str]],
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[FileCheck]:
    """Inspect files in order, on up to 2 worker processes when the folder is large."""
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(files) >= _PARALLEL_MIN_FILES else 1
    jobs = [(Path(root), f, c) for f, c in files]
    results: list[FileCheck] = []
    if workers <= 1:
        it: Iterable[FileCheck] = map(_inspect_star, jobs)
        for i, r in enumerate(it, 1):
            results.append(r)
            if progress:
                progress(i, len(jobs))
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, r in enumerate(pool.map(_inspect_star, jobs, chunksize=16), 1):
            results.append(r)
            if progress:
                progress(i, len(jobs))
    return results


# ---------------------------------------------------------------------------------------------
# Duplicates


# ---------------------------------------------------------------------------------------------
# Split
