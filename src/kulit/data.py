"""Scan image folders, validate and de-duplicate them, and write a grouped, stratified split.

Torch-free (Pillow + numpy). `kulit data PATH [PATH ...]` writes `split.csv`, `data_report.json`
and `data_report.md`; training and evaluation read them back with `load_split` and `read_report`.
Every file is named `<folder>/<class>/<name>`, relative to the folders' common parent (the
report's `root`), and carries its `source` (the folder's name) and `origin` (the `source` column
of the folder's manifest.csv, shortened, where there is one). Duplicates are grouped across all
folders; the split is stratified by class and source over whole groups. split.csv's `group` is
the first 12 hex digits of the smallest sha256 among a group's files, so exact and near copies
of one photo share a group id, a split, and an id that survives renames.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kulit.errors import DataError, ImageError
from kulit.preprocess import decode_image

MIN_SIDE = 32  # smaller images carry too little detail to train on (decoder: kulit.preprocess)
MAX_FILE_BYTES = 256 * 2**20  # never read a video or disk image into memory
# Hamming distance (of 64 bits, best of the 8 flips/turns) at or under which two photos are near
# duplicates. Tuned on skin8 by eye: every pair at 0-4 bits is the same photo (re-encoded,
# resized, recoloured, flipped); at 6 bits 5 of 6 pairs are, the sixth two look-alike melanoma
# photos of one class; at 8 bits 4 of 6 pairs are different photos, some from different classes.
PHASH_THRESHOLD = 6
SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("file", "class", "split", "group")  # required when reading
SOURCE_COLUMNS = ("source", "origin")  # written by `kulit data`; optional when reading
REPORT_JSON = "data_report.json"
REPORT_MD = "data_report.md"
SPLIT_CSV = "split.csv"
REPORT_VERSION = 2
MANIFEST = "manifest.csv"  # optional per folder: columns file (relative to it) and source
_PARALLEL_MIN_FILES = 2000  # decoding is ~2 ms a file: below this, one process is fast enough


@dataclass(frozen=True)
class SplitRow:
    """One line of split.csv, with the image's absolute path resolved against the data root."""

    path: Path
    file: str
    label: str
    split: str
    group: str
    source: str = ""  # data folder the file came from (e.g. "skin8-web")
    origin: str = ""  # the folder manifest's source, shortened (e.g. "DermNet NZ")


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


@dataclass
class DataResult:
    """Everything `build_split` decided: the split rows and the report written beside them."""

    rows: list[tuple[str, str, str, str, str, str]]  # split.csv rows, sorted by file
    report: dict[str, Any] = field(default_factory=dict)


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


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: `m @ x` transforms a length-n signal."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT32 = _dct_matrix(32)
_SIGN8 = (-1.0) ** np.arange(8)
_BIT_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def _bits(block: np.ndarray) -> int:
    flags = (block > np.median(block)).ravel()
    return int(np.bitwise_or.reduce(_BIT_WEIGHTS[flags], initial=np.uint64(0)))


def dihedral_phashes(gray32: np.ndarray) -> tuple[int, ...]:
    """64-bit DCT pHashes of a 32x32 grey image under all 8 flips and quarter turns.

    Flipping an image negates its odd DCT frequencies along that axis and a transpose transposes
    the coefficients, so one DCT gives all 8 variants exactly. Identity comes first.
    """
    coeffs = (_DCT32 @ gray32.astype(np.float64) @ _DCT32.T)[:8, :8]
    variants = []
    for transpose in (False, True):
        base = coeffs.T if transpose else coeffs
        for flip_rows in (False, True):
            for flip_cols in (False, True):
                c = base
                if flip_rows:
                    c = c * _SIGN8[:, None]
                if flip_cols:
                    c = c * _SIGN8[None, :]
                variants.append(_bits(c))
    return tuple(variants)


def image_phashes(img: Image.Image) -> tuple[int, ...]:
    """The 8 dihedral pHashes of a decoded PIL image."""
    # 16/32-bit greyscale would clip in "L"; pHash ignores intensity scale, so keep it as float
    grey = img.convert("F") if img.mode.startswith(("I", "F")) else img.convert("L")
    grey = grey.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return dihedral_phashes(np.asarray(grey, dtype=np.float64))


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


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element (numpy >= 2 has it built in; a byte table otherwise)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _POP8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


def _phash_blocks(phashes: Sequence[Sequence[int]]) -> Iterable[tuple[int, np.ndarray]]:
    """Yield (first row, distances of a block of rows to every image), bounded memory."""
    h = np.array(phashes, dtype=np.uint64).reshape(len(phashes), 8)
    n = len(h)
    rows = max(1, 4_000_000 // (8 * max(n, 1)))  # about 32 MB of XORs per block
    ident = h[:, 0]
    for start in range(0, n, rows):
        block = h[start : start + rows]
        yield start, _popcount(block[:, :, None] ^ ident[None, None, :]).min(axis=1)


def phash_distances(phashes: Sequence[Sequence[int]]) -> np.ndarray:
    """n x n Hamming distances, each the best over the 8 flips/turns of either image."""
    n = len(phashes)
    dist = np.empty((n, n), dtype=np.uint8)
    for start, d in _phash_blocks(phashes):
        dist[start : start + len(d)] = d
    return np.minimum(dist, dist.T)


def near_pairs(phashes: Sequence[Sequence[int]], threshold: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) within `threshold` bits, without holding the n x n matrix."""
    pairs: set[tuple[int, int]] = set()
    for start, d in _phash_blocks(phashes):
        for r, c in zip(*np.nonzero(d <= threshold), strict=True):
            i, j = start + int(r), int(c)
            if i != j:
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def group_duplicates(
    checks: Sequence[FileCheck], threshold: int = PHASH_THRESHOLD
) -> list[list[int]]:
    """Group usable files that are exact (same sha256) or near (pHash) copies; index lists."""
    n = len(checks)
    uf = _UnionFind(n)
    first_by_sha: dict[str, int] = {}
    for i, c in enumerate(checks):
        j = first_by_sha.setdefault(c.sha256, i)
        if j != i:
            uf.union(j, i)
    if n > 1 and threshold >= 0:
        for i, j in near_pairs([c.phashes for c in checks], threshold):
            uf.union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: checks[g[0]].file)


# ---------------------------------------------------------------------------------------------
# Split


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _check_fractions(val_frac: float, test_frac: float) -> None:
    for name, f in (("validation", val_frac), ("test", test_frac)):
        if not 0.0 <= f < 1.0:
            raise DataError(f"{name} fraction must be in [0, 1), got {f}")
    if val_frac + test_frac >= 1.0:
        raise DataError(
            f"validation + test fractions must leave room for training, got {val_frac + test_frac}"
        )


def assign_splits(
    groups: dict[str, tuple[str, int]], seed: int, val_frac: float, test_frac: float
) -> dict[str, str]:
    """Map group id -> split, stratified per class over whole groups.

    `groups` maps group id -> (class, number of files). Per class, groups are shuffled with a
    seeded numpy Generator and fill test, then val, up to round(fraction * files); the rest train.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {}
    for gid in sorted(groups):
        by_class.setdefault(groups[gid][0], []).append(gid)
    out: dict[str, str] = {}
    for label in sorted(by_class):
        gids = by_class[label]
        n_files = sum(groups[g][1] for g in gids)
        target = {
            "test": _round_half_up(test_frac * n_files),
            "val": _round_half_up(val_frac * n_files),
        }
        filled = {"test": 0, "val": 0}
        for k in rng.permutation(len(gids)).tolist():
            gid = gids[k]
            size = groups[gid][1]
            split = "train"
            for candidate in ("test", "val"):
                if filled[candidate] + size <= target[candidate]:
                    split = candidate
                    filled[candidate] += size
                    break
            out[gid] = split
    return out


def compute_data_hash(used: Iterable[tuple[str, str, str]]) -> str:
    """sha256 over the sorted (relative path, content sha256, class) triples of the used files."""
    payload = json.dumps(sorted([list(t) for t in used]), separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def short_origin(text: str) -> str:
    """A manifest's long source text cut to its name: 'DermNet NZ (dermnetnz.org) via ...'."""
    for sep in (" via ", " ("):
        text = text.split(sep)[0]
    return text.strip()


def read_manifest_origins(folder: Path) -> dict[str, str]:
    """file (relative to the folder) -> short origin, from the folder's manifest.csv if any."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
        return {
            r["file"]: short_origin(r["source"])
            for r in reader
            if r.get("file") and r.get("source")
        }
    except (OSError, UnicodeDecodeError, csv.Error, KeyError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def read_exclusions(path: Path) -> list[str]:
    """An exclusion list: one `<folder>/<class>/<file>` per line; '#' starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"exclusion list not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read exclusion list {path}: {e}") from None
    return sorted({ln.split("#")[0].strip() for ln in text.splitlines()} - {""})


def _scan_sources(
    roots: Sequence[Path], workers: int | None, progress: Callable[[int, int], None] | None
) -> tuple[list[FileCheck], dict[str, str], list[FolderScan]]:
    """Inspect every folder; file names gain the folder's name as their first part."""
    names = [Path(r).resolve().name for r in roots]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"two data folders share the name {dupes[0]}; give folders distinct names")
    checks: list[FileCheck] = []
    origin: dict[str, str] = {}
    scans: list[FolderScan] = []
    for root, name in zip(roots, names, strict=True):
        scan = scan_folder(Path(root))
        scans.append(scan)
        origins = read_manifest_origins(Path(root))
        for c in inspect_files(Path(root), scan.files, workers=workers, progress=progress):
            file = f"{name}/{c.file}"
            checks.append(dataclasses.replace(c, file=file))
            origin[file] = origins.get(c.file, "")
    return checks, origin, scans


def build_split(
    roots: Path | Sequence[Path],
    seed: int = 0,
    val_frac: float = 0.2,
    test_frac: float = 0.1,
    threshold: int = PHASH_THRESHOLD,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    exclude: Sequence[str] = (),
) -> DataResult:
    """Scan, validate, de-duplicate and split one or more folders; the rows and the report."""
    _check_fractions(val_frac, test_frac)
    if seed < 0:
        raise DataError(f"seed must be 0 or more, got {seed}")
    roots = [Path(roots)] if isinstance(roots, str | Path) else [Path(r) for r in roots]
    if not roots:
        raise DataError("no data folder given")
    checks, origin_of, scans = _scan_sources(roots, workers, progress)
    common = Path(os.path.commonpath([r.resolve().parent for r in roots]))
    source_of = {c.file: c.file.split("/", 1)[0] for c in checks}
    excluded_set = set(exclude)
    excluded = sorted(c.file for c in checks if c.file in excluded_set)
    unknown = sorted(excluded_set - {c.file for c in checks})
    usable = [c for c in checks if c.ok and c.file not in excluded_set]
    rejected = [
        {"file": c.file, "class": c.label, "code": c.reason_code, "reason": c.reason}
        for c in checks
        if not c.ok
    ]
    where = ", ".join(str(r) for r in roots)
    if not usable:
        raise DataError(f"no usable image in {where}: all {len(checks)} files were rejected")

    groups = group_duplicates(usable, threshold)
    group_of: dict[int, str] = {}
    group_info: dict[str, tuple[str, int]] = {}
    exact: dict[str, list[str]] = {}
    for c in usable:
        exact.setdefault(c.sha256, []).append(c.file)
    exact_groups = sorted(sorted(v) for v in exact.values() if len(v) > 1)
    near_groups: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []
    for members in groups:
        gid = min(usable[i].sha256 for i in members)[:12]
        files = sorted(usable[i].file for i in members)
        labels = sorted({usable[i].label for i in members})
        n_contents = len({usable[i].sha256 for i in members})
        if len(labels) > 1:
            conflicts.append({"group": gid, "classes": labels, "files": files})
            continue
        if n_contents > 1:
            near_groups.append({"group": gid, "class": labels[0], "files": files})
        for i in members:
            group_of[i] = gid
        # stratify by class and source: the group's source is its first file's folder
        group_info[gid] = (f"{labels[0]}\t{source_of[files[0]]}", len(members))

    split_of = assign_splits(group_info, seed, val_frac, test_frac)
    rows = sorted(
        (c.file, c.label, split_of[group_of[i]], group_of[i], source_of[c.file],
         origin_of[c.file])
        for i, c in enumerate(usable)
        if i in group_of
    )
    if not rows:
        raise DataError(f"no usable image in {where}: every image is in a label conflict")

    classes = sorted({r[1] for r in rows})
    class_dirs = sorted({d for scan in scans for d in scan.class_dirs})
    empty_dirs = {d for scan in scans for d in scan.empty_classes}
    empty = sorted(set(class_dirs) - set(classes))
    warnings_: list[str] = []
    for label in empty:
        why = "is empty" if label in empty_dirs else "has no usable image"
        warnings_.append(f"class folder {label} {why}; left out of the class list")
    if len(classes) < 2:
        warnings_.append(f"only {len(classes)} class left; a classifier needs at least 2")
    for file in unknown:
        warnings_.append(f"excluded file {file} is not in the data folders")
    counts = _counts(rows, classes)
    sources = sorted({r[4] for r in rows})
    split_counts = {s: sum(1 for r in rows if r[2] == s) for s in SPLITS}
    split_groups = {s: len({r[3] for r in rows if r[2] == s}) for s in SPLITS}
    sha_of = {c.file: c.sha256 for c in usable}
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "data_dir": " + ".join(r.resolve().name for r in roots),
        "root": str(common),  # written relative to the output folder
        "sources": {
            src: {
                "counts": _counts([r for r in rows if r[4] == src], classes),
                "origins": {
                    o: sum(1 for r in rows if r[4] == src and r[5] == o)
                    for o in sorted({r[5] for r in rows if r[4] == src})
                },
            }
            for src in sources
        },
        "classes": classes,
        "seed": seed,
        "fractions": {
            "train": round(1.0 - val_frac - test_frac, 6),
            "val": val_frac,
            "test": test_frac,
        },
        "n_files_scanned": len(checks),
        "n_files": len(rows),
        "n_groups": len(group_info),
        "counts": counts,
        "split_counts": split_counts,
        "split_groups": split_groups,
        "exact_duplicates": {
            "n_groups": len(exact_groups),
            "n_extra_copies": sum(len(g) - 1 for g in exact_groups),
            "groups": exact_groups,
        },
        "near_duplicates": {
            "phash_threshold": threshold,
            "n_groups": len(near_groups),
            "n_files": sum(len(g["files"]) for g in near_groups),
            "groups": near_groups,
        },
        "label_conflicts": {
            "n_groups": len(conflicts),
            "n_files": sum(len(g["files"]) for g in conflicts),
            "groups": conflicts,
        },
        "excluded": excluded,
        "rejected": rejected,
        "ignored": [f"{scan.root.resolve().name}/{i}" for scan in scans for i in scan.ignored],
        "empty_classes": empty,
        "warnings": warnings_,
        "data_hash": compute_data_hash((r[0], sha_of[r[0]], r[1]) for r in rows),
    }
    return DataResult(rows=rows, report=report)


def _counts(rows: Sequence[Sequence[str]], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """class -> {train, val, test, total} file counts."""
    counts = {
        label: {s: sum(1 for r in rows if r[1] == label and r[2] == s) for s in SPLITS}
        for label in classes
    }
    for label in classes:
        counts[label]["total"] = sum(counts[label][s] for s in SPLITS)
    return counts


# ---------------------------------------------------------------------------------------------
# Outputs


def _split_csv_text(rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS + SOURCE_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def render_report_md(report: dict[str, Any]) -> str:
    """A short human summary of `data_report.json`."""
    r = report
    fr = r["fractions"]
    lines = [
        f"# Data report: {r['data_dir']}",
        "",
        f"- {r['n_files']} images used of {r['n_files_scanned']} files scanned, "
        f"in {r['n_groups']} unique groups (copies of one photo share a group and a split)",
        f"- split {fr['train']:g}/{fr['val']:g}/{fr['test']:g} train/val/test, seed {r['seed']}, "
        "stratified per class over whole groups",
        f"- exact duplicates: {r['exact_duplicates']['n_extra_copies']} extra copies in "
        f"{r['exact_duplicates']['n_groups']} groups",
        f"- near duplicates (pHash distance <= {r['near_duplicates']['phash_threshold']} of 64, "
        f"any flip or quarter turn): {r['near_duplicates']['n_groups']} groups, "
        f"{r['near_duplicates']['n_files']} files",
        f"- label conflicts left out: {r['label_conflicts']['n_groups']} groups, "
        f"{r['label_conflicts']['n_files']} files",
        f"- rejected files: {len(r['rejected'])}; excluded by list: {len(r['excluded'])}; "
        f"ignored: {len(r['ignored'])}",
        f"- data hash: `{r['data_hash']}`",
        "",
        "| class | train | val | test | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in r["classes"]:
        c = r["counts"][label]
        lines.append(f"| {label} | {c['train']} | {c['val']} | {c['test']} | {c['total']} |")
    s = r["split_counts"]
    lines.append(f"| **all** | {s['train']} | {s['val']} | {s['test']} | {r['n_files']} |")
    lines += ["", "## Per source", "", "| source | class | train | val | test | total |",
              "|---|---|---:|---:|---:|---:|"]
    for src, info in r["sources"].items():
        for label, c in info["counts"].items():
            lines.append(f"| {src} | {label} | {c['train']} | {c['val']} | {c['test']} | "
                         f"{c['total']} |")
        origins = ", ".join(f"{o or 'unknown'} {n}" for o, n in info["origins"].items())
        lines.append(f"| {src} | origins: {origins} | | | | |")
    if r["excluded"]:
        lines += ["", "## Excluded by the exclusion list", ""] + [f"- {x}" for x in r["excluded"]]
    if r["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in r["warnings"]]
    if r["rejected"]:
        lines += ["", "## Rejected files", "", "| file | reason |", "|---|---|"]
        lines += [f"| {x['file']} | {x['code']}: {x['reason']} |" for x in r["rejected"]]
    if r["label_conflicts"]["groups"]:
        lines += ["", "## Label conflicts (left out)", ""]
        for g in r["label_conflicts"]["groups"]:
            lines.append(f"- {', '.join(g['files'])} ({' vs '.join(g['classes'])})")
    if r["near_duplicates"]["groups"]:
        lines += ["", "## Near-duplicate groups", ""]
        lines += [
            f"- {g['group']}: {', '.join(g['files'])}" for g in r["near_duplicates"]["groups"]
        ]
    if r["exact_duplicates"]["groups"]:
        lines += ["", "## Exact-duplicate groups", ""]
        lines += [f"- {', '.join(g)}" for g in r["exact_duplicates"]["groups"]]
    if r["ignored"]:
        lines += ["", "## Ignored (not in a class folder, or hidden)", ""]
        lines += [f"- {x}" for x in r["ignored"]]
    return "\n".join(lines) + "\n"


def write_outputs(result: DataResult, out_dir: Path) -> None:
    """Write split.csv, data_report.json and data_report.md; same input -> same bytes."""
    out_dir = Path(out_dir)
    # the folders' parent, relative to the output folder: no absolute path in any output
    result.report["root"] = Path(
        os.path.relpath(Path(result.report["root"]).resolve(), out_dir.resolve())).as_posix()
    csv_text = _split_csv_text(result.rows)
    result.report["split_sha256"] = hashlib.sha256(csv_text.encode()).hexdigest()
    json_text = json.dumps(result.report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (
            (SPLIT_CSV, csv_text),
            (REPORT_JSON, json_text),
            (REPORT_MD, render_report_md(result.report)),
        ):
            tmp = out_dir / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8", newline="")
            tmp.replace(out_dir / name)
    except OSError as e:
        raise DataError(f"cannot write to {out_dir}: {e.strerror or e}") from None


def _progress_printer() -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(i: int, n: int) -> None:
        if n >= 200 and (i % 50 == 0 or i == n):
            end = "\n" if i == n else ""
            print(f"\rchecking images {i}/{n}", end=end, file=sys.stderr, flush=True)

    return show


def summary_lines(report: dict[str, Any], out_dir: Path) -> list[str]:
    """The few lines `kulit data` prints."""
    r = report
    s = r["split_counts"]
    lines = [
        f"{r['n_files']} images in {len(r['classes'])} classes ({r['n_groups']} unique groups); "
        f"{len(r['rejected'])} rejected, {r['label_conflicts']['n_files']} left out for label "
        "conflicts",
        f"duplicates: {r['exact_duplicates']['n_extra_copies']} exact extra copies, "
        f"{r['near_duplicates']['n_groups']} near-duplicate groups (kept together in one split)",
        f"split: train {s['train']}, val {s['val']}, test {s['test']} (seed {r['seed']})",
    ]
    lines += [f"warning: {w}" for w in r["warnings"]]
    lines.append(f"wrote {out_dir / SPLIT_CSV}, {REPORT_JSON}, {REPORT_MD}")
    lines.append(f"data hash {r['data_hash']}")
    return lines


def run_data(
    paths: Path | Sequence[Path],
    out: Path,
    seed: int = 0,
    val_frac: float = 0.2,
    test_frac: float = 0.1,
    exclude: Path | None = None,
) -> int:
    """`kulit data`: build the split, write it and the reports, print a summary; exit code."""
    result = build_split(
        paths,
        seed=seed,
        val_frac=val_frac,
        test_frac=test_frac,
        progress=_progress_printer(),
        exclude=read_exclusions(exclude) if exclude else (),
    )
    write_outputs(result, Path(out))
    for line in summary_lines(result.report, Path(out)):
        print(line)
    return 0


# ---------------------------------------------------------------------------------------------
# Reading back


def read_report(out_dir: Path) -> dict[str, Any]:
    """Load `data_report.json` from a `kulit data` output folder (holds `data_hash`, classes)."""
    path = Path(out_dir)
    if path.is_dir():
        path = path / REPORT_JSON
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"data report not found: {path} (run `kulit data` first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read data report {path}: {e}") from None
    if not isinstance(report, dict) or "data_hash" not in report or "classes" not in report:
        raise DataError(f"malformed data report {path}: no data_hash or classes")
    return report


def _under(base: Path, rel: Path, bases: dict[str, Path]) -> Path:
    """Where `<folder>/...` lives: under `base`, or beside it when `base` is one of the folders."""
    top = rel.parts[0]
    if top not in bases:
        inside = top != base.name and (base / top).is_dir()
        bases[top] = base if inside or not (base.parent / top).is_dir() else base.parent
    return bases[top] / rel


def load_split(
    split_csv: Path, root: Path | None = None, check_files: bool = True
) -> list[SplitRow]:
    """Read split.csv into rows with absolute paths; DataError if unusable.

    Files are `<folder>/<class>/<name>`: `root` may be the folders' common parent or one of the
    folders itself; without it, the `root` recorded in the data report beside split.csv.
    """
    split_csv = Path(split_csv)
    if root is None:
        root = split_csv.parent / read_report(split_csv.parent).get("root", ".")
    root = Path(root)
    try:
        text = split_csv.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"split file not found: {split_csv} (run `kulit data` first)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read split file {split_csv}: {e}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing_cols = [c for c in SPLIT_COLUMNS if c not in (reader.fieldnames or [])]
    if missing_cols:
        raise DataError(
            f"malformed split file {split_csv}: missing column(s) {', '.join(missing_cols)}"
        )
    if check_files and not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    base = root.resolve()
    bases: dict[str, Path] = {}
    rows: list[SplitRow] = []
    for line_no, rec in enumerate(reader, start=2):
        values = {c: (rec.get(c) or "").strip() for c in SPLIT_COLUMNS}
        if not all(values.values()):
            raise DataError(f"malformed split file {split_csv}, line {line_no}: empty field")
        if values["split"] not in SPLITS:
            raise DataError(
                f"malformed split file {split_csv}, line {line_no}: split "
                f"{values['split']!r} is not one of {', '.join(SPLITS)}"
            )
        rel = Path(values["file"])
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(
                f"malformed split file {split_csv}, line {line_no}: file must be relative "
                f"to the data folder, got {values['file']!r}"
            )
        path = _under(base, rel, bases)
        rows.append(
            SplitRow(path, values["file"], values["class"], values["split"], values["group"],
                     *((rec.get(c) or "").strip() for c in SOURCE_COLUMNS))
        )
    if not rows:
        raise DataError(f"split file {split_csv} has no rows")
    if check_files:
        missing = [r.file for r in rows if not r.path.is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} file(s) of {split_csv} not found under {root}, e.g. {missing[0]}"
            )
    return rows
