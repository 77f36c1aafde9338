"""The photos the build steps run the served model on (`kulit gate`, `kulit shortlist`): rows of
the split and of the not-skin / other-condition folders (all `SplitRow`s, the split's one row
type), and one pass of the served file over them (pooled features and logits, cached by the
file's sha256)."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kulit.config import NOT_SKIN_FOLDER, NOT_SKIN_TUNED, OTHER_FOLDERS, OTHER_TUNED, SOURCES
from kulit.dataprep.split import SplitRow, load_split
from kulit.errors import DataError
from kulit.serving import calibration
from kulit.serving.card import load_card
from kulit.serving.model_dir import file_sha256, served_file

# the data folders and the tuned / held-out lists live in config (one home for each fact)
SKIN_FOLDERS = SOURCES


def photo_row(data_root: Path, file: str, label: str, split: str, source: str) -> SplitRow:
    """A photo beside split.csv (a dev split's, a not-skin or other-condition folder's): the
    split's row type, with no duplicate group."""
    return SplitRow(Path(data_root) / file, file, label, split, "", source)


def _md5_split(name: str, val: float = 0.2, test: float = 0.1) -> str:
    u = int(hashlib.md5(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "val" if u < test + val else "train"


def dev_split_rows(data_root: Path, folders: Sequence[str] = SKIN_FOLDERS) -> list[SplitRow]:
    """A deterministic 70/20/10 split by md5 of each file name, for development only.

    Near copies are not grouped here; the real split comes from `kulit data` (--split-csv).
    """
    rows = []
    for folder in folders:
        for r in _manifest(data_root / folder):
            # skin8's manifests say "class", atlas/'s "label"; the class folder says it too
            label = r.get("class") or r.get("label") or r["file"].split("/")[0]
            rows.append(photo_row(data_root, f"{folder}/{r['file']}", label,
                                  _md5_split(r["file"]), folder))
    return rows


def read_split_rows(split_csv: Path, data_root: Path) -> list[SplitRow]:
    """Rows of a multi-source split.csv (file,class,split,group,source,origin), read by the one
    reader (`load_split`); every row must name its source folder."""
    rows = load_split(split_csv, data_root, check_files=False)
    if not all(r.source for r in rows):
        raise DataError(f"{split_csv}: no source column (re-run `kulit data`)")
    return rows


def _manifest(folder: Path) -> list[dict[str, str]]:
    path = folder / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{folder}: manifest.csv is missing")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def outside_rows(data_root: Path) -> list[SplitRow]:
    """not-skin and other-condition photos (every folder of OTHER_FOLDERS), marked "tune" or
    "held_out" by the fixed lists."""
    rows = []
    folders = [(NOT_SKIN_FOLDER, NOT_SKIN_TUNED)] + [(f, OTHER_TUNED) for f in OTHER_FOLDERS]
    for folder, tuned in folders:
        for r in _manifest(data_root / folder):
            split = "tune" if r["label"] in tuned else "held_out"
            rows.append(photo_row(data_root, f"{folder}/{r['file']}", r["label"], split, folder))
    return rows


@dataclass
class Features:
    """Per photo, in row order: pooled last-conv features and raw logits (plain view)."""

    rows: list[SplitRow]
    pooled: np.ndarray  # [N, D]
    logits: np.ndarray  # [N, C]
    ok: np.ndarray  # [N] bool: decoded fine

    def select(self, keep: np.ndarray) -> Features:
        idx = np.flatnonzero(keep)
        return Features([self.rows[i] for i in idx], self.pooled[idx], self.logits[idx],
                        self.ok[idx])


def extract_features(model_dir: Path, data_root: Path, rows: Sequence[SplitRow],
                     cache: Path | None = None, batch_size: int = 32, threads: int = 1,
                     progress: Callable[[int, int], None] | None = None) -> Features:
    """Run the served ONNX model (int8 if it passed its check, `model_dir.served_file`) once per
    photo; reuse a cache keyed by that file's sha256."""
    from kulit.errors import ImageError
    from kulit.serving.predict import Predictor

    model_sha = file_sha256(served_file(Path(model_dir), load_card(Path(model_dir)))[1])
    cached: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if "model_sha256" in z.files and str(z["model_sha256"]) == model_sha:
                cached = {f: (p, lg) for f, p, lg in zip(z["files"], z["pooled"], z["logits"],
                                                          strict=True)}
    todo = [r.file for r in rows if r.file not in cached]
    bad: set[str] = set()
    if todo:
        pred = Predictor(model_dir, threads=threads)  # what serving runs
        for i in range(0, len(todo), batch_size):
            chunk, xs = [], []
            for f in todo[i: i + batch_size]:
                try:
                    xs.append(pred.prepare(data_root / f)[1])
                    chunk.append(f)
                except ImageError:
                    bad.add(f)
            if xs:
                logits, fmap = pred.run(np.stack(xs), features=True)
                if fmap is None:
                    raise DataError(f"{model_dir}: the model has no 'features' output")
                for f, p, lg in zip(chunk, fmap.mean(axis=(2, 3)), logits, strict=True):
                    cached[f] = (p.astype(np.float32), lg.astype(np.float32))
            if progress:
                progress(min(i + batch_size, len(todo)), len(todo))
        if cache is not None:
            files = sorted(cached)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, model_sha256=np.array(model_sha), files=np.array(files),
                     pooled=np.stack([cached[f][0] for f in files]),
                     logits=np.stack([cached[f][1] for f in files]))
    dim = next(iter(cached.values()))[0].shape[0] if cached else 0
    n_cls = next(iter(cached.values()))[1].shape[0] if cached else 0
    pooled = np.stack([cached[r.file][0] if r.file in cached else np.zeros(dim, np.float32)
                       for r in rows]) if rows else np.zeros((0, dim), np.float32)
    logits = np.stack([cached[r.file][1] if r.file in cached else np.zeros(n_cls, np.float32)
                       for r in rows]) if rows else np.zeros((0, n_cls), np.float32)
    ok = np.array([r.file in cached for r in rows], bool)
    return Features(list(rows), pooled, logits, ok)


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    return calibration.softmax(np.asarray(logits, np.float64) / temperature, axis=-1)


def collect_rows(data_root: Path, split_csv: Path | None) -> tuple[list[SplitRow], str]:
    """Skin rows from split.csv (or the md5 dev split) plus the not-skin / other rows."""
    if split_csv is not None:
        skin, how = read_split_rows(split_csv, data_root), str(split_csv)
    else:
        skin, how = dev_split_rows(data_root), "dev split: md5 of file name, 70/20/10"
    skin = [r for r in skin if r.source in SKIN_FOLDERS]
    return skin + outside_rows(data_root), how
