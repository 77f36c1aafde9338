"""The browser's crop (src/kulit/web/static/resample.js), run in node, against the server's
(kulit.serving.preprocess.resize_crop, i.e. Pillow): the same bytes, for shrinking and enlarging,
odd sizes, both filters and a crop_pct below 1."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kulit.serving.preprocess import Preprocessing, resize_crop

ROOT = Path(__file__).resolve().parents[1]
RESAMPLE_JS = ROOT / "src/kulit/web/static/resample.js"
NODE = shutil.which("node")

# (width, height, input size, crop_pct, interpolation)
CASES = [
    (640, 480, 224, 1.0, "bilinear"),
    (1193, 895, 224, 1.0, "bilinear"),
    (481, 1023, 224, 1.0, "bilinear"),
    (224, 300, 224, 1.0, "bilinear"),  # no resize: a plain crop
    (100, 37, 224, 1.0, "bilinear"),  # enlarged
    (517, 389, 64, 0.875, "bilinear"),
    (640, 480, 224, 1.0, "bicubic"),
    (90, 130, 224, 0.875, "bicubic"),
    (5, 3, 64, 1.0, "bilinear"),  # tiny: a half-pixel rounding (round(5 * 64 / 3) = 107)
    (200, 400, 100, 1.0, "bilinear"),  # tall: Pillow resamples vertically first
]
_rng = np.random.default_rng(7)  # and photo-like shapes at random, both filters
CASES += [(int(w), int(h), int(s), 1.0, ("bilinear", "bicubic")[i % 2])
          for i, (w, h, s) in enumerate(zip(_rng.integers(3, 1300, 24), _rng.integers(3, 1300, 24),
                                           _rng.choice([64, 224], 24), strict=True))]

RUNNER = """
import { resizeCrop } from %s;
import { readFileSync } from "node:fs";
const cases = JSON.parse(readFileSync(0, "utf8"));
const out = cases.map(([w, h, size, pct, interp, b64]) => {
  const rgb = Buffer.from(b64, "base64");
  const rgba = new Uint8Array(w * h * 4);
  for (let i = 0; i < w * h; i++) rgba.set([...rgb.subarray(3 * i, 3 * i + 3), 255], 4 * i);
  return Buffer.from(resizeCrop(rgba, w, h, size, pct, interp)).toString("base64");
});
process.stdout.write(JSON.stringify(out));
"""


def photo_like(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise and hard edges: every filter tap matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(1, w - 1)), (y * 255 // max(1, h - 1)),
                     ((x + y) % 64) * 4], axis=-1)
    noise = rng.integers(-40, 41, (h, w, 3))
    edges = ((x // 7 + y // 5) % 2)[..., None] * 60
    return np.clip(base + noise + edges, 0, 255).astype(np.uint8)


@pytest.mark.skipif(NODE is None, reason="node is not installed (make setup needs it for npm)")
def test_browser_crop_is_the_servers_byte_for_byte(tmp_path: Path) -> None:
    import base64

    arrays = [photo_like(w, h, i) for i, (w, h, *_rest) in enumerate(CASES)]
    payload = [[w, h, s, pct, interp, base64.b64encode(a.tobytes()).decode()]
               for (w, h, s, pct, interp), a in zip(CASES, arrays, strict=True)]
    runner = tmp_path / "run.mjs"
    runner.write_text(RUNNER % json.dumps(RESAMPLE_JS.as_uri()))
    done = subprocess.run([str(NODE), str(runner)], input=json.dumps(payload), text=True,
                          capture_output=True, timeout=120, check=True)
    got = json.loads(done.stdout)
    for (w, h, s, pct, interp), a, b64 in zip(CASES, arrays, got, strict=True):
        p = Preprocessing(input_size=s, crop_pct=pct, interpolation=interp)
        want = np.asarray(resize_crop(Image.fromarray(a), p))
        js = np.frombuffer(base64.b64decode(b64), np.uint8).reshape(s, s, 3)
        diff = np.abs(js.astype(int) - want.astype(int))
        assert diff.max() == 0, (w, h, s, pct, interp, int(diff.max()), int((diff > 0).sum()))
