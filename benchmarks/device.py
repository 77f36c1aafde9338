"""On-device check: is the small browser model as good, how many bytes, how fast on a phone screen.

1. accuracy: model-web.onnx against the served model (model-int8.onnx when it passed its check,
   the same graph) and against float32 model.onnx on the test split, all fed the server's own
   crop; balanced accuracy, top-1 agreement and max |dP|.
2. browser: headless Chromium at a 360 px viewport against `kulit serve` on a free port: bytes
   sent on the first visit (gzip / brotli as the browser asks), time from page load to a shown
   answer on the first and a later (offline) visit.

    python benchmarks/device.py --model models/kulit-skin8 --split-csv /tmp/d/split.csv
Writes benchmarks/results/device.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from kulit.build.webmodel import WEB_INPUT, WEB_ONNX_FILE, web_session
from kulit.dataprep.split import load_split
from kulit.serving.predict import Predictor, softmax
from kulit.serving.preprocess import load_and_preprocess

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


def accuracy(model_dir: Path, data_root: Path, split_csv: Path, split: str) -> dict:
    served = Predictor(model_dir, threads=2)
    fp32 = Predictor(model_dir, threads=2, int8=False)
    web = web_session(model_dir / WEB_ONNX_FILE, threads=2)
    rows = [r for r in load_split(split_csv, data_root) if r.split == split]
    classes = served.classes
    y, p32, ps, p8 = [], [], [], []
    for r in rows:
        crop, x = load_and_preprocess(r.path, served.card.preprocessing)
        for pred, out in ((fp32, p32), (served, ps)):
            logits, _ = pred.run(x[None])
            out.append(softmax(logits.astype(np.float64) / pred.temperature)[0])
        p8.append(web.run(["probs"], {WEB_INPUT: np.asarray(crop, np.uint8)[None]})[0][0])
        y.append(classes.index(r.label))
    p32, ps, p8 = np.array(p32), np.array(ps), np.array(p8)
    ba32 = balanced_accuracy_score(y, p32.argmax(1))
    bas = balanced_accuracy_score(y, ps.argmax(1))
    ba8 = balanced_accuracy_score(y, p8.argmax(1))
    return {
        "split": split, "n": len(rows), "served_precision": served.precision,
        "balanced_accuracy_fp32": round(ba32, 4), "balanced_accuracy_served": round(bas, 4),
        "balanced_accuracy_web": round(ba8, 4),
        "drop_points": round(100 * (ba32 - ba8), 2),
        "top1_agreement": round(float((p32.argmax(1) == p8.argmax(1)).mean()), 4),
        "max_abs_prob_diff": round(float(np.abs(p32 - p8).max()), 4),
        "mean_abs_prob_diff": round(float(np.abs(p32 - p8).mean()), 5),
        "web_vs_served": {
            "top1_agreement": round(float((ps.argmax(1) == p8.argmax(1)).mean()), 4),
            "max_abs_prob_diff": float(np.abs(ps - p8).max()),
            "note": "both in ONNX Runtime on this CPU; in Chromium see tests/test_device.py"},
        "model_web_bytes": (model_dir / WEB_ONNX_FILE).stat().st_size,
        "model_fp32_bytes": (model_dir / "model.onnx").stat().st_size,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.request

    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def browser(model_dir: Path, photo: Path) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "kulit.cli", "serve", "--model",
                               str(model_dir), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {"viewport": "360x740", "photo": photo.name}
    try:
        wait_http(base + "/healthz")
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                viewport={"width": 360, "height": 740}, is_mobile=True, device_scale_factor=2)
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            sizes: list[int] = []
            encodings: dict[str, str] = {}

            def on_response(resp) -> None:  # type: ignore[no-untyped-def]
                # bytes on the wire: the (compressed) body's length as sent; a response the
                # service worker answered is counted where it came from (network or cache)
                if resp.from_service_worker:
                    return
                sizes.append(int(resp.headers.get("content-length", 0) or 0))
                encodings[resp.url.split("?")[0].rsplit("/", 1)[-1] or "/"] = \
                    resp.headers.get("content-encoding", "identity")

            ctx.on("response", on_response)  # the page's and the service worker's
            for visit in ("first", "later_offline"):
                if visit == "later_offline":
                    ctx.set_offline(True)
                sizes.clear()
                t0 = time.perf_counter()
                page.goto(base + "/?lang=en")
                if visit == "first":  # the person chooses the download
                    page.click("#device-download")
                page.wait_for_selector("html[data-device=ready]", state="attached",
                                       timeout=120_000)
                t_ready = time.perf_counter()
                page.set_input_files("#image", str(photo))
                t_pick = time.perf_counter()
                page.click("#submit")
                page.wait_for_selector("html[data-device=result]", state="attached",
                                       timeout=60_000)
                t_ans = time.perf_counter()
                out[visit] = {
                    "bytes_transferred": sum(sizes),
                    "load_to_ready_s": round(t_ready - t0, 3),
                    "photo_to_answer_s": round(t_ans - t_pick, 3),
                    "load_to_answer_s": round(t_ans - t0, 3),
                    "status": page.get_attribute("#verdict", "data-status"),
                }
                page.goto("about:blank") if visit == "first" else None
            out["content_encoding"] = encodings
            ctx.close()
    finally:
        server.terminate()
        server.wait(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models/kulit-skin8")
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--split-csv", type=Path, default=Path("/tmp/d/split.csv"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--photo", type=Path, default=None, help="photo for the browser timing")
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/device.json")
    a = ap.parse_args()
    res: dict = {"accuracy": accuracy(a.model, a.data_root, a.split_csv, a.split)}
    print(json.dumps(res["accuracy"], indent=1))
    ort_dir = ROOT / "src/kulit/web/static/ort"
    res["files"] = {p.name: p.stat().st_size for p in sorted(ort_dir.glob("*"))
                    if p.is_file() and not p.name.startswith(".")}
    res["files"].update({p.name: p.stat().st_size for p in a.model.glob(WEB_ONNX_FILE + "*")})
    if not a.skip_browser:
        photo = a.photo or next(r.path for r in load_split(a.split_csv, a.data_root)
                                if r.split == a.split)
        res["browser"] = browser(a.model, photo)
        print(json.dumps(res["browser"], indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
