"""`kulit data` (kulit.dataprep.split) on generated folders: validation, duplicates, label
conflicts, split, outputs, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kulit.cli import app
from kulit.dataprep import dedupe
from kulit.dataprep.dedupe import near_pairs, phash_distances
from kulit.dataprep.split import (
    PHASH_THRESHOLD,
    REPORT_JSON,
    REPORT_MD,
    SPLIT_CSV,
    SplitRow,
    build_split,
    dihedral_phashes,
    image_phashes,
    inspect_file,
    inspect_files,
    load_split,
    read_report,
    run_data,
    scan_folder,
)
from kulit.errors import DataError

SKIN8 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "skin8"


def texture(seed: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A smooth random colour texture with some fine grain; distinct seeds -> distinct pHashes."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    arr = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    arr = arr + rng.normal(0, 12, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries no pixel data (a bomb stand-in)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


PDF_BYTES = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def make_folder(root: Path) -> Path:
    """Two classes of distinct textures plus every kind of trouble the scanner must report."""
    cats, dogs = root / "cats", root / "dogs"
    cats.mkdir(parents=True)
    dogs.mkdir()
    (root / "empty").mkdir()
    (root / "manifest.csv").write_text("file,class\n")
    for i in range(14):
        fmt, ext = [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp")][i % 4]
        kw = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
        (cats / f"cat{i:02d}.{ext}").write_bytes(encode(texture(i), fmt, **kw))
        (dogs / f"dog{i:02d}.png").write_bytes(encode(texture(100 + i), "PNG"))
    # exact copy, kept in the split with its original's group
    (cats / "cat00_copy.png").write_bytes((cats / "cat00.png").read_bytes())
    # near copies of cat01: resized, re-encoded, flipped, rotated
    base = texture(1)
    (cats / "near_resized.png").write_bytes(encode(base.resize((96, 72)), "PNG"))
    (cats / "near_reencoded.jpg").write_bytes(encode(base, "JPEG", quality=60))
    (cats / "near_hflip.png").write_bytes(encode(base.transpose(Image.FLIP_LEFT_RIGHT), "PNG"))
    (cats / "near_rot90.webp").write_bytes(
        encode(base.transpose(Image.ROTATE_90), "WEBP", quality=90)
    )
    # the same photo under two classes: a label conflict, all copies left out
    conflict = encode(texture(500), "PNG")
    (cats / "conflict.png").write_bytes(conflict)
    (dogs / "conflict_too.png").write_bytes(conflict)
    # bad files
    good_jpeg = encode(texture(600, (256, 192)), "JPEG", quality=90)
    (cats / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (cats / "garbage.jpg").write_bytes(good_jpeg[:20] + bytes(range(256)) * 8)
    corrupt = bytearray(encode(texture(601, (256, 192)), "PNG"))
    start = corrupt.find(b"IDAT") + 200
    corrupt[start : start + 60] = bytes(b ^ 0x5A for b in corrupt[start : start + 60])
    (cats / "corrupt.png").write_bytes(bytes(corrupt))
    (cats / "document.jpg").write_bytes(PDF_BYTES)
    (dogs / "notes.txt").write_text("not a photo\n")
    (dogs / "tiny.png").write_bytes(encode(texture(700, (20, 40)), "PNG"))
    (dogs / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (dogs / "big.png").write_bytes(png_header_only(8_000, 6_000))
    (dogs / "anim.gif").write_bytes(encode(texture(800), "GIF"))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data") / "photos")


@pytest.fixture(scope="module")
def result(folder: Path):
    return build_split(folder, seed=0)


def rows_by_file(result) -> dict[str, SplitRow]:
    return {r.file: r for r in result.rows}


# --- pHash ------------------------------------------------------------------------------------


def test_dihedral_phashes_match_hashing_the_transformed_images() -> None:
    x = np.random.default_rng(3).random((32, 32))
    variants = [
        x,
        x[:, ::-1],
        x[::-1],
        x[::-1, ::-1],
        x.T,
        x.T[:, ::-1],
        x.T[::-1],
        x.T[::-1, ::-1],
    ]
    direct = [dihedral_phashes(v)[0] for v in variants]
    assert sorted(dihedral_phashes(x)) == sorted(direct)
    assert len(set(direct)) == 8


def test_phash_distance_separates_copies_from_different_textures() -> None:
    base = texture(1)
    copies = [
        base,
        base.resize((64, 48)),
        Image.open(io.BytesIO(encode(base, "JPEG", quality=50))),
        base.transpose(Image.FLIP_TOP_BOTTOM),
        base.transpose(Image.ROTATE_180),
        base.transpose(Image.ROTATE_270),
    ]
    d = phash_distances([image_phashes(im) for im in copies])
    assert d.max() <= PHASH_THRESHOLD
    distinct = [base] + [texture(s) for s in range(2, 12)]
    d = phash_distances([image_phashes(im) for im in distinct])
    assert d[~np.eye(len(distinct), dtype=bool)].min() > PHASH_THRESHOLD


def test_near_pairs_agree_with_the_distance_matrix() -> None:
    hashes = [image_phashes(texture(s % 7, (64 + s, 48))) for s in range(20)]
    d = phash_distances(hashes)
    expected = [(i, j) for i in range(20) for j in range(i + 1, 20) if d[i, j] <= 6]
    assert expected and near_pairs(hashes, 6) == expected


def test_popcount_fallback_matches_python() -> None:
    x = np.random.default_rng(0).integers(0, 2**63, (5, 3), dtype=np.uint64)
    x[0, 0] = np.uint64(2**64 - 1)
    expected = [[bin(int(v)).count("1") for v in row] for row in x]
    assert dedupe._popcount(x).tolist() == expected
    table = dedupe._POP8[x.view(np.uint8)].reshape(5, 3, 8).sum(axis=-1)
    assert table.tolist() == expected


def test_image_modes_hash_alike(tmp_path: Path) -> None:
    base = texture(3)
    grey16 = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    (tmp_path / "a").mkdir()
    for name, img in [
        ("rgb.png", base),
        ("rgba.png", base.convert("RGBA")),
        ("p.png", base.convert("P")),
        ("cmyk.jpg", base.convert("CMYK")),
        ("grey16.png", grey16),
    ]:
        img.save(tmp_path / "a" / name)
    checks = [inspect_file(tmp_path, f"a/{n}", "a") for n in sorted(os.listdir(tmp_path / "a"))]
    assert all(c.ok for c in checks), [c.reason for c in checks]
    assert phash_distances([c.phashes for c in checks]).max() <= 2


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("cats/truncated.jpg", "truncated"),
        ("cats/corrupt.png", "corrupt"),
        ("cats/garbage.jpg", "not_image"),
        ("cats/document.jpg", "not_image"),
        ("dogs/notes.txt", "not_image"),
        ("dogs/tiny.png", "too_small"),
        ("dogs/bomb.png", "too_large"),
        ("dogs/big.png", "too_large"),
        ("dogs/anim.gif", "not_image"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(folder: Path, result, name: str, code: str) -> None:
    label = name.split("/")[0]
    check = inspect_file(folder, name, label)
    assert check.reason_code == code and check.reason
    rejected = {r["file"]: r for r in result.report["rejected"]}
    assert rejected[f"photos/{name}"]["code"] == code
    assert rejected[f"photos/{name}"]["class"] == label
    assert f"photos/{name}" not in rows_by_file(result)


def test_format_is_sniffed_not_taken_from_the_extension(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "photo.txt").write_bytes(encode(texture(1), "PNG"))
    check = inspect_file(tmp_path, "a/photo.txt", "a")
    assert check.ok and check.format == "PNG" and (check.width, check.height) == (128, 96)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_special_file_is_rejected_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    os.mkfifo(tmp_path / "a" / "pipe.jpg")
    check = inspect_file(tmp_path, "a/pipe.jpg", "a")
    assert check.reason_code == "unreadable" and "regular" in check.reason


def test_parallel_inspection_matches_serial(folder: Path) -> None:
    files = scan_folder(folder).files
    assert inspect_files(folder, files, workers=2) == inspect_files(folder, files, workers=1)


def test_report_lists_ignored_and_empty(result) -> None:
    report = result.report
    assert report["ignored"] == ["photos/manifest.csv"]
    assert report["empty_classes"] == ["empty"]
    assert report["classes"] == ["cats", "dogs"]
    assert any("empty" in w for w in report["warnings"])
    assert report["n_files_scanned"] == 14 * 2 + 1 + 4 + 2 + 9


# --- duplicates, conflicts, split -------------------------------------------------------------


def test_exact_duplicate_found_and_kept_in_its_group(result) -> None:
    exact = result.report["exact_duplicates"]
    assert exact["groups"] == [  # the 2nd: reported, though left out as a conflict
        ["photos/cats/cat00.png", "photos/cats/cat00_copy.png"],
        ["photos/cats/conflict.png", "photos/dogs/conflict_too.png"],
    ]
    assert exact["n_extra_copies"] == 2
    rows = rows_by_file(result)
    one, copy = rows["photos/cats/cat00.png"], rows["photos/cats/cat00_copy.png"]
    assert (one.split, one.group, one.source) == (copy.split, copy.group, copy.source)


def test_near_duplicates_grouped_into_one_split(result) -> None:
    near = result.report["near_duplicates"]
    members = {
        "photos/cats/cat01.jpg",
        "photos/cats/near_resized.png",
        "photos/cats/near_reencoded.jpg",
        "photos/cats/near_hflip.png",
        "photos/cats/near_rot90.webp",
    }
    assert [set(g["files"]) for g in near["groups"]] == [members]
    rows = rows_by_file(result)
    assert len({rows[f].group for f in members}) == 1
    assert len({rows[f].split for f in members}) == 1
    # distinct textures are never merged
    others = [r for r in result.rows if r.file not in members and "cat00" not in r.file]
    assert len({r.group for r in others}) == len(others)


def test_label_conflict_left_out(result) -> None:
    conflicts = result.report["label_conflicts"]
    assert conflicts["n_groups"] == 1
    (group,) = conflicts["groups"]
    assert group["files"] == ["photos/cats/conflict.png", "photos/dogs/conflict_too.png"]
    assert group["classes"] == ["cats", "dogs"]
    rows = rows_by_file(result)
    assert "photos/cats/conflict.png" not in rows and "photos/dogs/conflict_too.png" not in rows


def test_split_is_grouped_stratified_and_counted(result, folder: Path) -> None:
    report = result.report
    group_splits: dict[str, set[str]] = {}
    for r in result.rows:
        assert r.source == "photos"
        assert r.path == folder.resolve().parent / r.file
        group_splits.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in group_splits.values())
    assert report["n_groups"] == len(group_splits)
    # 14 dogs: round(2.8) = 3 val, round(1.4) = 1 test
    assert report["counts"]["dogs"] == {"train": 10, "val": 3, "test": 1, "total": 14}
    for label, counts in report["counts"].items():
        assert counts["total"] == sum(1 for r in result.rows if r.label == label)
        assert counts["val"] >= 1 and counts["test"] >= 1
    assert sum(report["split_counts"].values()) == report["n_files"] == len(result.rows)
    assert [r.file for r in result.rows] == sorted(r.file for r in result.rows)


def test_fractions_are_honoured(folder: Path) -> None:
    everything_train = build_split(folder, seed=1, val_frac=0.0, test_frac=0.0)
    assert {r.split for r in everything_train.rows} == {"train"}
    half = build_split(folder, seed=1, val_frac=0.5, test_frac=0.0)
    assert half.report["counts"]["dogs"]["val"] == 7
    with pytest.raises(DataError, match="fraction"):
        build_split(folder, val_frac=0.6, test_frac=0.4)


# --- outputs ----------------------------------------------------------------------------------


def test_run_twice_gives_identical_bytes_and_seed_matters(folder: Path, tmp_path: Path) -> None:
    for out in ("a", "b"):
        assert run_data(folder, tmp_path / out, seed=7) == 0
    for name in (SPLIT_CSV, REPORT_JSON, REPORT_MD):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    run_data(folder, tmp_path / "c", seed=8)
    assert (tmp_path / "a" / SPLIT_CSV).read_bytes() != (tmp_path / "c" / SPLIT_CSV).read_bytes()
    # the data hash covers content, not the split
    assert read_report(tmp_path / "a")["data_hash"] == read_report(tmp_path / "c")["data_hash"]
    text = (tmp_path / "a" / REPORT_JSON).read_text()
    assert str(folder.parent) not in text and str(tmp_path) not in text


def test_outputs_and_load_split_round_trip(folder: Path, tmp_path: Path, capsys) -> None:
    run_data(folder, tmp_path, seed=0)
    printed = capsys.readouterr().out
    assert "exact extra copies" in printed and "data hash" in printed
    with open(tmp_path / SPLIT_CSV, newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["file", "class", "split", "group", "source", "origin"]
    rows = load_split(tmp_path / SPLIT_CSV, folder)
    report = read_report(tmp_path)
    assert len(rows) == report["n_files"]
    assert all(r.path.is_absolute() and r.path.is_file() for r in rows)
    assert {r.label for r in rows} == set(report["classes"])
    assert rows[0].path == (folder.parent / rows[0].file).resolve()
    assert rows[0].file.startswith("photos/") and rows[0].source == "photos"
    assert load_split(tmp_path / SPLIT_CSV)[0].path == rows[0].path  # root from the report
    assert json.loads((tmp_path / REPORT_JSON).read_text())["data_hash"] == report["data_hash"]
    md = (tmp_path / REPORT_MD).read_text()
    assert "truncated" in md and "| dogs | 10 | 3 | 1 | 14 |" in md


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("file,class,split\nx.png,a,train\n", "missing column"),
        ("file,class,split,group\ncats/cat02.webp,cats,holdout,g\n", "not one of"),
        ("file,class,split,group\n/etc/passwd,cats,train,g\n", "relative"),
        ("file,class,split,group\n../x.png,cats,train,g\n", "relative"),
        ("file,class,split,group\ncats/cat02.webp,,train,g\n", "empty field"),
        ("file,class,split,group\ncats/gone.png,cats,train,g\n", "not found"),
        ("file,class,split,group\n", "no rows"),
    ],
)
def test_load_split_rejects_malformed_files(
    folder: Path, tmp_path: Path, content: str, match: str
) -> None:
    (tmp_path / "split.csv").write_text(content)
    with pytest.raises(DataError, match=match):
        load_split(tmp_path / "split.csv", folder)


def test_missing_split_and_report_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_split(tmp_path / "nope.csv", tmp_path)
    with pytest.raises(DataError, match="not found"):
        read_report(tmp_path)
    (tmp_path / REPORT_JSON).write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        read_report(tmp_path)


# --- folder errors ----------------------------------------------------------------------------


def test_missing_path_and_file_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        build_split(tmp_path / "missing")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file"):
        build_split(tmp_path / "file.jpg")


def test_no_class_folders_or_no_usable_image(tmp_path: Path) -> None:
    (tmp_path / "loose.png").write_bytes(encode(texture(1), "PNG"))
    with pytest.raises(DataError, match="no class folders"):
        build_split(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no image files"):
        build_split(tmp_path)
    (tmp_path / "a" / "junk.jpg").write_text("junk")
    with pytest.raises(DataError, match="no usable image"):
        build_split(tmp_path)


def test_nested_folder_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ok.png").write_bytes(encode(texture(1), "PNG"))
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "a" / "sub" / "deep.png").write_bytes(encode(texture(2), "PNG"))
    with pytest.raises(DataError, match="nested folder") as e:
        build_split(tmp_path)
    assert "a/sub/deep.png" in e.value.message and "\n" not in e.value.message


# --- CLI --------------------------------------------------------------------------------------


def test_cli_bad_path_exits_2_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data folder not found")
    assert "Traceback" not in result.output


def test_cli_writes_outputs(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["data", str(folder), "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "split: train" in result.stdout
    assert read_report(out)["seed"] == 3


# --- the real data ----------------------------------------------------------------------------


@pytest.mark.skipif(not SKIN8.is_dir(), reason="../shared/data/skin8 not present")
def test_skin8_counts(tmp_path: Path) -> None:
    assert run_data(SKIN8, tmp_path, seed=0) == 0
    report = read_report(tmp_path)
    assert len(report["classes"]) == 8
    assert report["n_files_scanned"] == 1110 and report["rejected"] == []
    assert report["ignored"] == ["skin8/manifest.csv"]
    assert report["exact_duplicates"]["n_extra_copies"] == 39
    assert report["exact_duplicates"]["n_groups"] == 38
    assert report["near_duplicates"]["n_groups"] == 29
    assert report["label_conflicts"]["n_groups"] == 0
    assert report["n_files"] == 1110 and report["n_groups"] == 1038
    rows = load_split(tmp_path / SPLIT_CSV, SKIN8)
    splits_of: dict[str, set[str]] = {}
    for r in rows:
        splits_of.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())
    n = len(rows)
    for split, frac in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs(report["split_counts"][split] / n - frac) < 0.01
    for counts in report["counts"].values():
        assert abs(counts["test"] / counts["total"] - 0.1) < 0.03


SKIN8_WEB = SKIN8.parent / "skin8-web"


@pytest.mark.skipif(not SKIN8_WEB.is_dir(), reason="../shared/data/skin8-web not present")
def test_two_sources_one_split(tmp_path: Path) -> None:
    """skin8 + skin8-web: sources recorded, exclusions honoured, stratified per source, stable."""
    excl = tmp_path / "exclude.txt"
    excl.write_text("skin8/Impetigo/impetigo__impetigo3.jpg  # hand dermatitis\n"
                    "# a comment line\nskin8/Nope/missing.jpg\n")
    for out in ("a", "b"):
        assert run_data([SKIN8, SKIN8_WEB], tmp_path / out, seed=0, exclude=excl) == 0
    for name in (SPLIT_CSV, "data_report.json", "data_report.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    report = read_report(tmp_path / "a")
    assert report["excluded"] == ["skin8/Impetigo/impetigo__impetigo3.jpg"]
    assert any("skin8/Nope/missing.jpg" in w for w in report["warnings"])
    assert set(report["sources"]) == {"skin8", "skin8-web"}
    assert report["sources"]["skin8"]["origins"]["Monkeypox Skin Images Dataset"] == 107
    rows = load_split(tmp_path / "a" / SPLIT_CSV)  # root from the report
    assert all(r.path.is_file() for r in rows[:50])
    assert {r.source for r in rows} == {"skin8", "skin8-web"}
    assert not any(r.file == "skin8/Impetigo/impetigo__impetigo3.jpg" for r in rows)
    # every (class, source) cell has about 10% of its files in test
    for src, info in report["sources"].items():
        for label, c in info["counts"].items():
            assert abs(c["test"] / c["total"] - 0.1) < 0.04, (src, label, c)
    # the same split read with one folder as the root resolves the other folder beside it
    again = load_split(tmp_path / "a" / SPLIT_CSV, SKIN8)
    assert [r.path for r in again] == [r.path for r in rows]
