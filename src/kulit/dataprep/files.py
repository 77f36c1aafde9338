"""What `kulit data` writes and how it is read back: split.csv (`file,class,split,group,source,
origin`), data_report.json and data_report.md. Torch-free."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kulit.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("file", "class", "split", "group")  # required when reading
SOURCE_COLUMNS = ("source", "origin")  # written by `kulit data`; optional when reading
REPORT_JSON = "data_report.json"
REPORT_MD = "data_report.md"
SPLIT_CSV = "split.csv"
REPORT_VERSION = 2


@dataclass(frozen=True)
class SplitRow:
    """One photo of split.csv, with its absolute path: the one row type every step reads the
    split into. The build steps use it for the photos they add beside the split too (a not-skin
    or other-condition folder's, split "tune" / "held_out", no group)."""

    path: Path  # the image, resolved against the data root
    file: str  # "<folder>/<class>/<name>", relative to the data root
    label: str  # the class column
    split: str  # train / val / test
    group: str  # duplicate group: copies of one photo share it ("" outside split.csv)
    source: str = ""  # data folder the file came from (e.g. "skin8-web")
    origin: str = ""  # the folder manifest's source, shortened (e.g. "DermNet NZ")

    def csv_values(self) -> tuple[str, str, str, str, str, str]:
        """The row as split.csv writes it (SPLIT_COLUMNS + SOURCE_COLUMNS)."""
        return self.file, self.label, self.split, self.group, self.source, self.origin


@dataclass
class DataResult:
    """Everything `build_split` decided: the split rows and the report written beside them."""

    rows: list[SplitRow]  # split.csv rows, sorted by file
    report: dict[str, Any] = field(default_factory=dict)


def split_csv_text(rows: Sequence[SplitRow]) -> str:
    """split.csv's text: the header, then one line per row in the order given."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS + SOURCE_COLUMNS)
    writer.writerows(r.csv_values() for r in rows)
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
    csv_text = split_csv_text(result.rows)
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
    if not split_csv.is_file():
        raise DataError(f"split file not found: {split_csv} (run `kulit data` first)")
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
