"""The benchmarks' own logic: one source's rows of a split, photos a model saw, bootstrap
intervals, predicted-vs-true class shares, and the style probe's image transforms."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kulit.dataprep.split import load_split, read_report, run_data
from tests.conftest import make_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import (  # noqa: E402
    bootstrap_ci,
    filter_split,
    predicted_shares,
    seen_files,
    share_ratios,
)
from confound import FRAME_GREY, plain_frame, thumbnail_roundtrip  # noqa: E402


@pytest.fixture(scope="module")
def two_source_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `kulit data` split over two folders of three synthetic classes each."""
    root = tmp_path_factory.mktemp("two_sources")
    for s, src in enumerate(("clinic", "web")):
        for c, name in enumerate(("Alpha", "Beta", "Gamma")):
            d = root / src / name
            d.mkdir(parents=True)
            for i in range(20):
                make_image(10_000 * s + 1000 * c + i, (90 + 3 * i, 80 + s * 7), c).save(
                    d / f"{name.lower()}_{i}.jpg")
    out = root / "split"
    assert run_data([root / "clinic", root / "web"], out, seed=0) == 0
    return out / "split.csv"


def test_filter_split_keeps_one_source_and_stays_loadable(two_source_split: Path,
                                                          tmp_path: Path) -> None:
    every = load_split(two_source_split)
    path = filter_split(two_source_split, "web", tmp_path / "deep" / "web-only")
    rows = load_split(path)  # the data root comes from the copied report
    want = [r for r in every if r.source == "web"]
    assert [(r.path, r.split, r.group) for r in rows] == [(r.path, r.split, r.group)
                                                          for r in want]
    assert {r.split for r in rows} == {"train", "val", "test"}
    report = read_report(path.parent)
    assert report["filtered_to"] == "web"
    assert report["data_hash"] == read_report(two_source_split.parent)["data_hash"]
    with pytest.raises(ValueError, match="nowhere"):
        filter_split(two_source_split, "nowhere", tmp_path / "x")


def test_seen_files_are_the_train_and_val_photos_and_their_copies(two_source_split: Path,
                                                                  tmp_path: Path) -> None:
    rows = load_split(two_source_split)
    seen = seen_files(rows, two_source_split)
    assert seen == {r.file for r in rows if r.split in ("train", "val")}
    # a model trained on only the clinic rows saw nothing of the web folder
    clinic = filter_split(two_source_split, "clinic", tmp_path / "clinic")
    seen = seen_files(rows, clinic)
    assert seen and all(r.source == "clinic" for r in rows if r.file in seen)
    # a test photo whose near copy sat in the training split counts as seen
    test = next(r for r in rows if r.split == "test")
    with clinic.open() as f:
        lines = list(csv.DictReader(f))
    twin = next(x for x in lines if x["split"] == "train")
    twin["file"] = test.file.replace(Path(test.file).name, "renamed_copy.jpg")
    fake_rows = [*rows, type(test)(test.path, twin["file"], test.label, "test", test.group,
                                   test.source, test.origin)]
    twin_split = tmp_path / "twin" / "split.csv"
    twin_split.parent.mkdir()
    (twin_split.parent / "data_report.json").write_text(
        (clinic.parent / "data_report.json").read_text())
    with twin_split.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]))
        w.writeheader()
        w.writerow(twin)
    assert seen_files(fake_rows, twin_split) == {test.file, twin["file"]}
    # a split from an older `kulit data` names files without the folder: matched on class/name
    twin["file"] = "/".join(Path(test.file).parts[-2:])
    with twin_split.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]))
        w.writeheader()
        w.writerow(twin)
    assert test.file in seen_files(rows, twin_split)


def test_bootstrap_interval_covers_the_truth_and_narrows_with_n() -> None:
    rng = np.random.default_rng(1)
    covered, widths = 0, {}
    for trial in range(60):
        x = rng.normal(0.5, 1.0, 100)
        ci = bootstrap_ci(lambda i, x=x: {"mean": x[i].mean()}, len(x), n_boot=300, seed=trial)
        covered += ci["mean"][0] <= 0.5 <= ci["mean"][1]
    assert covered >= 51  # nominal 95% of 60 = 57; a too-narrow interval lands far lower
    for n in (100, 2500):
        x = rng.normal(0.5, 1.0, n)
        lo, hi = bootstrap_ci(lambda i, x=x: {"mean": x[i].mean()}, n, n_boot=400)["mean"]
        widths[n] = hi - lo
        assert widths[n] == pytest.approx(2 * 1.96 / np.sqrt(n), rel=0.25)
    assert widths[2500] < widths[100] / 3
    # seeded: the same call gives the same interval; undefined values are left out
    def stat(i: np.ndarray) -> dict[str, float | None]:
        return {"m": float(np.mean(i)), "undefined": None}

    assert bootstrap_ci(stat, 50, seed=3) == bootstrap_ci(stat, 50, seed=3)
    assert bootstrap_ci(stat, 50, seed=3)["undefined"] is None


def test_share_ratios_flag_the_over_predicted_class() -> None:
    classes = ["A", "B", "C", "D"]
    y = ["A"] * 4 + ["B"] * 4 + ["C"] * 2
    said = ["A"] * 4 + ["C"] * 3 + ["B"] + ["C"] * 2  # C: 5 of 10 said, 2 of 10 true
    probs = np.eye(4)[[classes.index(c) for c in said]] * 0.7 + 0.075
    shares = predicted_shares(y, probs, classes)
    assert shares["C"]["predicted"] == pytest.approx(0.5)
    assert shares["C"]["true"] == pytest.approx(0.2)
    r = share_ratios(shares)
    assert r["max_ratio_class"] == "C"
    assert r["max_ratio"] == pytest.approx(2.5)
    assert r["ratio"]["B"] == pytest.approx(0.25)
    assert "D" not in r["ratio"]  # neither true nor predicted
    # kulit's one rule (as in the card): a class absent from the truth has no ratio
    r = share_ratios({"A": {"predicted": 0.1, "true": 0.0}, "B": {"predicted": 0.9, "true": 1.0}})
    assert r["max_ratio_class"] == "B" and r["max_ratio"] == pytest.approx(0.9)
    assert r["ratio"] == {"B": pytest.approx(0.9)}


def _photo(size: tuple[int, int] = (640, 480)) -> Image.Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)  # all detail, no grey
    return Image.fromarray(arr, "RGB")


def test_thumbnail_roundtrip_keeps_the_size_and_loses_the_detail() -> None:
    img = _photo()
    out = thumbnail_roundtrip(img)
    assert out.size == img.size and out.mode == "RGB"
    a = np.asarray(img, np.float32)
    b = np.asarray(out, np.float32)
    # neighbouring-pixel differences (fine detail) shrink a lot after 640 -> 250 -> 640
    def detail(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x, axis=1)).mean())

    assert detail(b) < 0.5 * detail(a)
    assert abs(b.mean() - a.mean()) < 8  # same photo, not a blank


def test_plain_frame_has_a_plain_border_and_the_photo_in_the_middle() -> None:
    img = _photo((400, 300))
    out = plain_frame(img)
    assert out.size == img.size
    arr = np.asarray(out).astype(int)
    h, w = arr.shape[:2]
    border = np.concatenate([arr[: int(0.19 * h)].reshape(-1, 3),
                             arr[:, : int(0.19 * w)].reshape(-1, 3),
                             arr[-int(0.19 * h):].reshape(-1, 3)])
    assert (border == FRAME_GREY).all()
    centre = arr[int(0.25 * h): int(0.75 * h), int(0.25 * w): int(0.75 * w)]
    assert centre.std() > 30  # the (noisy) photo, not the canvas
    assert (centre == FRAME_GREY).all(axis=-1).mean() < 0.01
