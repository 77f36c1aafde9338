"""Source confound: does a model recognise the website instead of the disease?

    python benchmarks/confound.py --model models/kulit-skin8 [--model runs/.../model-nomask]

In skin8, Chickenpox comes from web photos (224x224 PNG, no logo) and the seven other classes
from DermNet NZ (640x480 JPEG with a logo in the lower-left corner). On the held-out photos
(val + test split, never trained on) we change only the source cues and watch the answers:

1. DermNet photos with the logo corner painted out (its median colour): accuracy and
   P(Chickenpox) before and after.
2. Chickenpox photos made to look like DermNet files: scaled into a 640x480 frame (padded with
   their border colour) and re-encoded as JPEG: Chickenpox recall and P(Chickenpox).
3. Chickenpox photos in that frame with a real DermNet logo corner pasted in (cut from a
   DermNet photo at run time): if P(Chickenpox) falls, the model reads the logo.
4. Style probe, on the DermNet test photos (source skin8, origin DermNet NZ): made to look like
   a web photo without touching the lesion: (a) a ~250 px thumbnail (long side 250, JPEG q75)
   scaled back up; (b) the photo shrunk to 60% and framed on a plain light-grey canvas. A model
   that reads the disease keeps its answer: agreement with the original top-1 (Wilson 95%
   interval), accuracy and mean P(Chickenpox) before and after. `--trained-split NAME=CSV`
   leaves out the photos model NAME (its folder name) saw in training, here and in 1-3.

With a two-folder split (skin8 + skin8-web), studies 1-3 use its skin8 rows only.

Writes benchmarks/results/confound.json. Torch-free (uses the exported ONNX model).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import seen_files  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SKIN8 = REPO.parent / "shared" / "data" / "skin8"
LOGO = (40, 300, 290, 455)  # x0, y0, x1, y1 of the logo + "Te Whatu Ora" text in 640x480
THUMB_SIDE = 250  # long side of a web thumbnail (skin8-web's are ~275x185)
THUMB_QUALITY = 75  # JPEG quality of a re-saved web thumbnail
FRAME_SCALE = 0.6  # the photo's share of the canvas side in the framed probe
FRAME_GREY = (225, 225, 225)  # plain light-grey backdrop


def held_out(split_csv: Path) -> list:
    """skin8's val and test rows (studies 1-3)."""
    from kulit.dataprep.split import load_split

    rows = load_split(split_csv, SKIN8)
    return [r for r in rows if r.split in ("val", "test") and r.source in ("", "skin8")]


def dermnet_test(split_csv: Path) -> list:
    """Rows of the DermNet NZ test photos (skin8's non-Chickenpox ones in an older split)."""
    from kulit.dataprep.split import load_split

    rows = load_split(split_csv, SKIN8)
    return [r for r in rows if r.split == "test" and r.source in ("", "skin8")
            and (r.origin == "DermNet NZ" or (not r.origin and r.label != "Chickenpox"))]


def thumbnail_roundtrip(img: Image.Image, side: int = THUMB_SIDE,
                        quality: int = THUMB_QUALITY) -> Image.Image:
    """Down to a web thumbnail (long side `side`, JPEG `quality`) and back to the original size."""
    img = img.convert("RGB")
    s = side / max(img.size)
    small = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                       Image.Resampling.LANCZOS)
    return jpeg(small, quality).resize(img.size, Image.Resampling.BICUBIC)


def plain_frame(img: Image.Image, scale: float = FRAME_SCALE,
                colour: tuple[int, int, int] = FRAME_GREY) -> Image.Image:
    """The photo shrunk to `scale` of its size, centred on a plain canvas of the original size."""
    img = img.convert("RGB")
    inner = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                       Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", img.size, colour)
    canvas.paste(inner, ((img.width - inner.width) // 2, (img.height - inner.height) // 2))
    return canvas


PROBES = {"thumbnail_250_roundtrip": thumbnail_roundtrip, "plain_frame_60": plain_frame}


def style_probe(model: Path, rows: list) -> dict:
    """Does the answer survive a web-photo look? Agreement with the original top-1 per probe."""
    from kulit.build.slices import wilson
    from kulit.serving.predict import Predictor

    pred = Predictor(model)
    cls = pred.classes
    ci = cls.index("Chickenpox")
    y = np.array([cls.index(r.label) for r in rows])
    originals = [Image.open(r.path).convert("RGB") for r in rows]

    def run(imgs: list[Image.Image]) -> np.ndarray:
        return np.concatenate([np.stack([p.probs for p in pred.predict(imgs[i: i + 32])])
                               for i in range(0, len(imgs), 32)])

    a = run(originals)
    out: dict[str, object] = {"n": len(rows), "accuracy_original": float((a.argmax(1) == y).mean()),
                              "mean_p_chickenpox_original": float(a[:, ci].mean())}
    for name, fn in PROBES.items():
        b = run([fn(im) for im in originals])
        same = int((a.argmax(1) == b.argmax(1)).sum())
        out[name] = {
            "agreement": same / len(rows), "agreement_ci95": wilson(same, len(rows)),
            "accuracy": float((b.argmax(1) == y).mean()),
            "mean_p_chickenpox": float(b[:, ci].mean()),
            "changed_to_chickenpox": int(((b.argmax(1) == ci) & (a.argmax(1) != ci)).sum()),
        }
    return out


def jpeg(img: Image.Image, q: int = 85) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def mask_logo(img: Image.Image) -> Image.Image:
    img = img.convert("RGB").copy()
    if img.size != (640, 480):
        return img
    arr = np.asarray(img)
    med = tuple(int(v) for v in np.median(arr.reshape(-1, 3), axis=0))
    img.paste(med, LOGO)
    return img


def dermnet_frame(img: Image.Image) -> Image.Image:
    """Scale into 640x480 like a DermNet file, padded with the photo's border colour."""
    img = img.convert("RGB")
    s = 480 / img.height
    inner = img.resize((round(img.width * s), 480), Image.Resampling.BICUBIC)
    arr = np.asarray(inner)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    frame = Image.new("RGB", (640, 480), tuple(int(v) for v in np.median(border, axis=0)))
    frame.paste(inner, ((640 - inner.width) // 2, 0))
    return frame


def study(model: Path, photos: list[tuple[Path, str]], logo_src: Image.Image) -> dict:
    from kulit.serving.predict import Predictor

    pred = Predictor(model)
    cls = pred.classes
    if "Chickenpox" not in cls:
        raise SystemExit(f"error: {model} has no Chickenpox class")
    ci = cls.index("Chickenpox")
    logo_patch = logo_src.crop(LOGO)

    def run(imgs: list[Image.Image]) -> np.ndarray:
        return np.stack([p.probs for p in pred.predict(imgs)])

    derm = [(p, y) for p, y in photos if y != "Chickenpox"]
    pox = [(p, y) for p, y in photos if y == "Chickenpox"]
    out: dict[str, object] = {"model": str(model), "classes": cls,
                              "mask_box": pred.card.preprocessing.mask_box}

    d_orig = [Image.open(p).convert("RGB") for p, _ in derm]
    yd = np.array([cls.index(y) for _, y in derm])
    a, b = run(d_orig), run([mask_logo(im) for im in d_orig])
    out["dermnet_logo_masked"] = {
        "n": len(derm),
        "accuracy_original": float((a.argmax(1) == yd).mean()),
        "accuracy_masked": float((b.argmax(1) == yd).mean()),
        "top1_changed": float((a.argmax(1) != b.argmax(1)).mean()),
        "mean_p_chickenpox_original": float(a[:, ci].mean()),
        "mean_p_chickenpox_masked": float(b[:, ci].mean()),
        "mean_abs_change_p_true": float(np.abs(a[np.arange(len(yd)), yd]
                                               - b[np.arange(len(yd)), yd]).mean()),
    }
    p_orig = [Image.open(p).convert("RGB") for p, _ in pox]
    framed = [jpeg(dermnet_frame(im)) for im in p_orig]
    with_logo = []
    for im in framed:
        im = im.copy()
        im.paste(logo_patch, LOGO[:2])
        with_logo.append(jpeg(im))
    c0, c1, c2 = run(p_orig), run(framed), run(with_logo)
    out["chickenpox_as_dermnet"] = {
        "n": len(pox),
        "recall_original": float((c0.argmax(1) == ci).mean()),
        "recall_dermnet_frame_jpeg": float((c1.argmax(1) == ci).mean()),
        "recall_frame_plus_logo": float((c2.argmax(1) == ci).mean()),
        "mean_p_chickenpox_original": float(c0[:, ci].mean()),
        "mean_p_chickenpox_dermnet_frame_jpeg": float(c1[:, ci].mean()),
        "mean_p_chickenpox_frame_plus_logo": float(c2[:, ci].mean()),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, action="append", required=True)
    ap.add_argument("--split-csv", type=Path, default=REPO / "runs" / "data" / "split.csv")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "confound.json")
    ap.add_argument("--trained-split", action="append", default=[], metavar="NAME=CSV",
                    help="model folder NAME was trained on CSV: leave the photos it saw out")
    ap.add_argument("--limit", type=int, default=0, help="first N style-probe photos (smoke)")
    args = ap.parse_args()
    if not SKIN8.is_dir():
        sys.exit(f"error: {SKIN8} not found")
    if not args.split_csv.is_file():
        sys.exit(f"error: {args.split_csv} not found (run `kulit data` first)")
    held = held_out(args.split_csv)
    # a DermNet photo with a plain dark background behind its logo, used as the logo source
    logo_src = next(Image.open(r.path).convert("RGB") for r in held
                    if r.label != "Chickenpox" and Image.open(r.path).size == (640, 480))
    probe_rows = dermnet_test(args.split_csv)
    trained = {}
    for item in args.trained_split:
        name, _, csv_path = item.partition("=")
        trained[name] = Path(csv_path)
    res = []
    for m in args.model:
        skip = seen_files(held, trained[m.name]) if m.name in trained else set()
        r = study(m, [(x.path, x.label) for x in held if x.file not in skip], logo_src)
        r["seen_left_out"] = len(skip)
        skip = seen_files(probe_rows, trained[m.name]) if m.name in trained else set()
        rows = [x for x in probe_rows if x.file not in skip]
        if args.limit:
            rows = rows[: args.limit]
        r["style_probe"] = style_probe(m, rows) | {"seen_left_out": len(skip)}
        res.append(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
