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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kulit.dataprep.dedupe import PHASH_THRESHOLD, dihedral_phashes, group_duplicates, image_phashes
from kulit.dataprep.files import (
    REPORT_JSON,
    REPORT_MD,
    REPORT_VERSION,
    SPLIT_CSV,
    SPLITS,
    DataResult,
    SplitRow,
    load_split,
    read_report,
    render_report_md,
    split_csv_text,
    summary_lines,
    write_outputs,
)
from kulit.dataprep.scan import (
    MANIFEST,
    FileCheck,
    FolderScan,
    inspect_file,
    inspect_files,
    scan_folder,
)
from kulit.errors import DataError
from kulit.progress import progress_bar

# split is the pipeline's front door: the split format (kulit.dataprep.files) and duplicate
# grouping (kulit.dataprep.dedupe) are reachable from here too
__all__ = [
    "PHASH_THRESHOLD", "REPORT_JSON", "REPORT_MD", "SPLIT_CSV", "SPLITS", "DataResult",
    "FileCheck", "SplitRow", "build_split", "dihedral_phashes", "image_phashes",
    "inspect_file", "inspect_files", "load_split", "read_report", "render_report_md",
    "run_data", "scan_folder", "split_csv_text",
]

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


@dataclass
class _Groups:
    """Duplicate groups of the usable files: each file's group id and what the report lists."""

    group_of: dict[int, str]  # index into the usable files -> group id (not for conflicts)
    info: dict[str, tuple[str, int]]  # group id -> (class + tab + source, number of files)
    exact: list[list[str]]  # files with the same bytes, per group of two or more
    near: list[dict[str, Any]] = field(default_factory=list)  # near copies, one class
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # copies across classes


def _group(usable: Sequence[FileCheck], threshold: int) -> _Groups:
    """Group exact and near copies; a group whose files disagree on the class is left out."""
    exact: dict[str, list[str]] = {}
    for c in usable:
        exact.setdefault(c.sha256, []).append(c.file)
    out = _Groups({}, {}, sorted(sorted(v) for v in exact.values() if len(v) > 1))
    for members in group_duplicates(usable, threshold):
        gid = min(usable[i].sha256 for i in members)[:12]
        files = sorted(usable[i].file for i in members)
        labels = sorted({usable[i].label for i in members})
        if len(labels) > 1:
            out.conflicts.append({"group": gid, "classes": labels, "files": files})
            continue
        if len({usable[i].sha256 for i in members}) > 1:
            out.near.append({"group": gid, "class": labels[0], "files": files})
        for i in members:
            out.group_of[i] = gid
        # stratify by class and source: the group's source is its first file's folder
        out.info[gid] = (f"{labels[0]}\t{_source(files[0])}", len(members))
    return out


def _source(file: str) -> str:
    """The data folder a file of the split came from: its path's first part."""
    return file.split("/", 1)[0]


def _class_warnings(classes: list[str], scans: Sequence[FolderScan], unknown: list[str]
                    ) -> tuple[list[str], list[str]]:
    """Class folders left out of the class list, and the warnings `kulit data` prints."""
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
    return empty, warnings_


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
    excluded_set = set(exclude)
    usable = [c for c in checks if c.ok and c.file not in excluded_set]
    where = ", ".join(str(r) for r in roots)
    if not usable:
        raise DataError(f"no usable image in {where}: all {len(checks)} files were rejected")

    groups = _group(usable, threshold)
    split_of = assign_splits(groups.info, seed, val_frac, test_frac)
    parent = {r.resolve().name: r.resolve().parent for r in roots}
    rows = sorted(
        (SplitRow(parent[_source(c.file)] / c.file, c.file, c.label, split_of[gid], gid,
                  _source(c.file), origin_of[c.file])
         for i, c in enumerate(usable) if (gid := groups.group_of.get(i)) is not None),
        key=lambda r: r.file,
    )
    if not rows:
        raise DataError(f"no usable image in {where}: every image is in a label conflict")
    fractions = {"train": round(1.0 - val_frac - test_frac, 6), "val": val_frac,
                 "test": test_frac}
    report = _report(roots, rows, checks, usable, groups, scans, excluded_set,
                     seed=seed, fractions=fractions, threshold=threshold)
    return DataResult(rows=rows, report=report)


def _report(roots: Sequence[Path], rows: list[SplitRow], checks: list[FileCheck],
            usable: list[FileCheck], groups: _Groups, scans: Sequence[FolderScan],
            exclude: set[str], *, seed: int, fractions: dict[str, float], threshold: int
            ) -> dict[str, Any]:
    """data_report.json: what was used, left out, grouped and split, and why."""
    classes = sorted({r.label for r in rows})
    unknown = sorted(exclude - {c.file for c in checks})
    empty, warnings_ = _class_warnings(classes, scans, unknown)
    sources = sorted({r.source for r in rows})
    sha_of = {c.file: c.sha256 for c in usable}
    return {
        "version": REPORT_VERSION,
        "data_dir": " + ".join(r.resolve().name for r in roots),
        # the folders' common parent, written relative to the output folder
        "root": str(Path(os.path.commonpath([r.resolve().parent for r in roots]))),
        "sources": {
            src: {
                "counts": _counts([r for r in rows if r.source == src], classes),
                "origins": {
                    o: sum(1 for r in rows if r.source == src and r.origin == o)
                    for o in sorted({r.origin for r in rows if r.source == src})
                },
            }
            for src in sources
        },
        "classes": classes,
        "seed": seed,
        "fractions": fractions,
        "n_files_scanned": len(checks),
        "n_files": len(rows),
        "n_groups": len(groups.info),
        "counts": _counts(rows, classes),
        "split_counts": {s: sum(1 for r in rows if r.split == s) for s in SPLITS},
        "split_groups": {s: len({r.group for r in rows if r.split == s}) for s in SPLITS},
        "exact_duplicates": {
            "n_groups": len(groups.exact),
            "n_extra_copies": sum(len(g) - 1 for g in groups.exact),
            "groups": groups.exact,
        },
        "near_duplicates": {
            "phash_threshold": threshold,
            "n_groups": len(groups.near),
            "n_files": sum(len(g["files"]) for g in groups.near),
            "groups": groups.near,
        },
        "label_conflicts": {
            "n_groups": len(groups.conflicts),
            "n_files": sum(len(g["files"]) for g in groups.conflicts),
            "groups": groups.conflicts,
        },
        "excluded": sorted(c.file for c in checks if c.file in exclude),
        "rejected": [
            {"file": c.file, "class": c.label, "code": c.reason_code, "reason": c.reason}
            for c in checks
            if not c.ok
        ],
        "ignored": [f"{scan.root.resolve().name}/{i}" for scan in scans for i in scan.ignored],
        "empty_classes": empty,
        "warnings": warnings_,
        "data_hash": compute_data_hash((r.file, sha_of[r.file], r.label) for r in rows),
    }


def _counts(rows: Sequence[SplitRow], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """class -> {train, val, test, total} file counts."""
    counts = {
        label: {s: sum(1 for r in rows if r.label == label and r.split == s) for s in SPLITS}
        for label in classes
    }
    for label in classes:
        counts[label]["total"] = sum(counts[label][s] for s in SPLITS)
    return counts


# ---------------------------------------------------------------------------------------------
# Outputs


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
        progress=progress_bar("checking images", "image"),
        exclude=read_exclusions(exclude) if exclude else (),
    )
    write_outputs(result, Path(out))
    for line in summary_lines(result.report, Path(out)):
        print(line)
    return 0


