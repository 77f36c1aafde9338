"""Photo-quality checks (kulit.serving.quality) on real skin photos and degraded copies of them.

Takes every 5th photo of ../shared/data/skin8 and ../shared/data/skin8-web, makes degraded
copies (shrunk to a tiny size, Gaussian-blurred, darkened, brightened) and reports:
- the fraction of clean photos wrongly flagged (target <= 2%), per source and issue;
- per degradation level, the fraction caught (any issue) and caught with the expected issue;
- percentiles of each measure on clean photos, to choose the limits from;
- the check's time per photo.
Writes benchmarks/results/quality.json.   Usage: python benchmarks/quality.py [--every 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from kulit.serving.preprocess import Preprocessing, open_image, resize_crop
from kulit.serving.quality import QualityLimits, check_quality

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SOURCES = ("skin8", "skin8-web")
EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
PRE = Preprocessing()  # a 224 px model's crop: what the Predictor measures quality on
DRAFT = 448  # as the Predictor decodes for a 224 px model (2 x input size)

# name -> (expected issue, function of the clean photo)
TINY = [8, 16, 32, 48, 64, 80]
BLUR = [0.005, 0.01, 0.015, 0.02, 0.03]  # Gaussian radius as a fraction of the shorter side
DARK = [0.3, 0.2, 0.15, 0.1, 0.05]  # pixel values multiplied by this
BRIGHT = [2.0, 3.0, 4.0, 6.0]  # pixel values multiplied by this, clipped at 255


def shrink(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    s = side / min(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)


def scale(img: Image.Image, k: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) * k
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def degradations() -> list[tuple[str, str, object]]:
    out: list[tuple[str, str, object]] = []
    out += [(f"tiny_{s}px", "too_small", lambda im, s=s: shrink(im, s)) for s in TINY]
    out += [(f"blur_{r:g}", "too_blurred",
             lambda im, r=r: im.filter(ImageFilter.GaussianBlur(r * min(im.size)))) for r in BLUR]
    out += [(f"dark_x{k:g}", "too_dark", lambda im, k=k: scale(im, k)) for k in DARK]
    out += [(f"bright_x{k:g}", "too_bright", lambda im, k=k: scale(im, k)) for k in BRIGHT]
    return out


def files(every: int) -> list[tuple[str, Path]]:
    out = []
    for src in SOURCES:
        paths = sorted(p for p in (DATA / src).rglob("*") if p.suffix.lower() in EXTS)
        out += [(src, p) for p in paths[::every]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "quality.json")
    args = ap.parse_args()
    limits = QualityLimits()
    photos = files(args.every)
    degs = degradations()
    clean: dict[str, list] = {s: [] for s in SOURCES}
    caught: dict[str, list[tuple[bool, bool]]] = {name: [] for name, _, _ in degs}
    times = []
    for src, path in photos:
        img = open_image(path, draft=DRAFT)
        crop = resize_crop(img, PRE)  # made anyway for the model
        t0 = time.perf_counter()
        q = check_quality(img, limits, square=crop)
        times.append(time.perf_counter() - t0)
        clean[src].append(q)
        for name, want, fn in degs:
            bad = fn(img)  # type: ignore[operator]
            d = check_quality(bad, limits, square=resize_crop(bad, PRE))
            caught[name].append((d.issue is not None, d.issue == want))
    all_clean = [q for qs in clean.values() for q in qs]

    def flagged(qs: list) -> dict[str, object]:
        issues: dict[str, int] = {}
        for q in qs:
            if q.issue:
                issues[q.issue] = issues.get(q.issue, 0) + 1
        n_bad = sum(issues.values())
        return {"n": len(qs), "flagged": round(n_bad / max(1, len(qs)), 4), "by_issue": issues}

    def pct(values: list[float]) -> dict[str, float]:
        qs = (0, 0.5, 1, 2, 5, 50, 95, 98, 99, 99.5, 100)
        return {f"p{q:g}": round(float(np.percentile(values, q)), 5) for q in qs}

    result = {
        "what": "kulit.serving.quality on every Nth skin photo (clean) and degraded copies",
        "every": args.every,
        "limits": limits.__dict__,
        "clean": {"all": flagged(all_clean), **{s: flagged(qs) for s, qs in clean.items()}},
        "clean_flagged_files": [str(p.relative_to(DATA)) for (src, p), q in
                                zip(photos, all_clean, strict=True) if q.issue],
        "degraded": {
            name: {"expected": want,
                   "caught": round(float(np.mean([c for c, _ in caught[name]])), 4),
                   "caught_as_expected": round(float(np.mean([e for _, e in caught[name]])), 4)}
            for name, want, _ in degs
        },
        "clean_measures": {
            "min_side": pct([min(q.width, q.height) for q in all_clean]),
            "sharpness": pct([q.sharpness for q in all_clean]),
            "brightness": pct([q.brightness for q in all_clean]),
            "dark_clipped": pct([q.dark_clipped for q in all_clean]),
            "bright_clipped": pct([q.bright_clipped for q in all_clean]),
        },
        "check_ms": {"mean": round(1000 * float(np.mean(times)), 3),
                     "p95": round(1000 * float(np.percentile(times, 95)), 3)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("clean", "degraded", "check_ms")}, indent=1))


if __name__ == "__main__":
    main()
