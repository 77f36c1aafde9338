"""On-device check: the browser model graph, its config, real Chromium (parity, rule, offline)."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kulit.build.webmodel import (
    WEB_INPUT,
    WEB_ONNX_FILE,
    build_web_model,
    device_config,
    web_session,
)
from kulit.serving.card import load_card, save_card
from kulit.serving.gate import SCORERS, Gate, load_gate, save_gate
from kulit.serving.predict import Predictor, softmax
from kulit.serving.preprocess import load_and_preprocess, normalize
from tests.conftest import serve_on_loopback

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "kulit-skin8"
DATA = ROOT.parent / "shared" / "data"
SOURCES = ("skin8", "skin8-web", "other-conditions", "not-skin")  # every photo source here
ORT_WASM = ROOT / "src/kulit/web/static/ort/ort-wasm-simd-threaded.wasm"
CUTOFFS = {"not_skin_threshold": 0.6, "other_threshold": 0.6, "melanoma_cutoff": 0.2}
PHOTOS_PER_SOURCE = 50  # the issue asks for 50 test photos of every source

needs_shipped = pytest.mark.skipif(not (SHIPPED / "model.onnx").is_file(),
                                   reason="the shipped model is not here")


def python_rule(probs: np.ndarray, classes: list[str], card_threshold: float,
                gate: dict[str, float] | None, cutoffs: dict[str, Any],
                issue: str | None, shortlist: dict[str, Any] | None = None) -> dict[str, Any]:
    """The server's answer rule as the fields both sides show; `shortlist` as the browser's
    config holds it ({"level", "cutoffs": one per class}) or None."""
    from kulit.serving.answer import Cutoffs, decide
    from kulit.serving.shortlist import ShortlistRule

    rule = None if not shortlist else ShortlistRule(float(shortlist["level"]),
                                                    np.array(shortlist["cutoffs"], float))
    a = decide(probs, classes, card_threshold, gate=gate, cutoffs=Cutoffs.from_card(cutoffs),
               quality_issue=issue, shortlist=rule)
    return {"status": a.status, "label": a.label, "see_doctor": a.see_doctor,
            "melanoma_alert": a.melanoma_alert, "advice": a.advice, "urgency": a.urgency,
            "shortlist": [[c, p] for c, p in a.shortlist]}


def same_answer(js: dict[str, Any], py: dict[str, Any]) -> bool:
    """The browser's answer says what the server's does: every field, the shortlist's classes
    in order (its probabilities are float32 in the browser, float64 here: not compared)."""
    names = lambda sl: [c for c, _ in sl]  # noqa: E731
    return all(names(js[k]) == names(v) if k == "shortlist" else js[k] == v
               for k, v in py.items())


def card_shortlist(card: Any) -> dict[str, Any] | None:
    """The card's shortlist as device_config hands it to the browser (None: not calibrated)."""
    from kulit.serving.shortlist import SECTION, ShortlistRule

    sl = ShortlistRule.from_card(card.section(SECTION), card.classes)
    return None if sl is None else {"level": sl.level, "cutoffs": [float(c) for c in sl.cutoffs]}


def synthetic_gate(dim: int, seed: int = 0) -> Gate:
    rng = np.random.default_rng(seed)
    return Gate(mean=rng.normal(0, 0.1, dim), scale=rng.uniform(0.5, 2.0, dim),
                weights={n: rng.normal(0, 0.08, dim) for n in SCORERS},
                biases={"not_skin": -0.5, "other": -0.3})


def _device_dir(tmp_path_factory: pytest.TempPathFactory, served: bool) -> Path:
    """A copy of the shipped model with a synthetic gate and cut-offs and its browser model:
    `served` wraps the graph the server runs (the static int8 file, as shipped), else the
    float32 model.onnx (float32 browser graph, no int8 file)."""
    if not (SHIPPED / "model.onnx").is_file():
        pytest.skip("the shipped model is not here")
    out = tmp_path_factory.mktemp("device") / "model"
    out.mkdir()
    names = ("model.onnx", "card.json", "head.npz") + (("model-int8.onnx",) if served else ())
    for name in names:
        if (SHIPPED / name).is_file():
            shutil.copy(SHIPPED / name, out / name)
    dim = Predictor(out).session.get_outputs()[1].shape[1]
    save_gate(synthetic_gate(int(dim)), out)
    card = load_card(out)
    card.gate = dict(CUTOFFS)
    save_card(card, out)
    build_web_model(out) if served else build_web_model(out, weights="fp32")
    return out


@pytest.fixture(scope="module")
def device_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As shipped: the browser model is the server's own graph (int8 when it passed)."""
    return _device_dir(tmp_path_factory, served=True)


@pytest.fixture(scope="module")
def fp32_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """float32 everywhere: in-browser and server probabilities can be held to 1e-3."""
    return _device_dir(tmp_path_factory, served=False)


def server_answer(pred: Predictor, gate: Gate | None, crop: np.ndarray,
                  cutoffs: dict[str, Any]) -> tuple[np.ndarray, dict[str, float] | None, dict]:
    x = normalize(Image.fromarray(crop), pred.card.preprocessing)[None]
    logits, feats = pred.run(x, features=True)
    probs = softmax(logits.astype(np.float64) / pred.temperature)[0]
    scores = None
    if gate is not None:
        g = gate.scores(feats.mean(axis=(2, 3)))
        scores = {n: float(getattr(g, n)[0]) for n in SCORERS}
    return probs, scores, python_rule(probs, pred.classes, pred.card.threshold, scores,
                                      cutoffs, None, card_shortlist(pred.card))


# --- the graph, in ONNX Runtime on the CPU ---

def test_browser_graph_equals_server_path(device_model_dir: Path) -> None:
    """uint8 crop -> model-web.onnx gives the server's probabilities, gate scores and CAM."""
    pred = Predictor(device_model_dir)
    gate = load_gate(device_model_dir)
    web = web_session(device_model_dir / WEB_ONNX_FILE)
    rng = np.random.default_rng(1)
    s = pred.card.preprocessing.input_size
    crops = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8)]
    if (DATA / "skin8").is_dir():
        photo = sorted((DATA / "skin8" / "Melanoma").iterdir())[0]
        crops.append(np.asarray(load_and_preprocess(photo, pred.card.preprocessing)[0]))
    for crop in crops:
        probs, scores, _ = server_answer(pred, gate, crop, CUTOFFS)
        p, g, cam = web.run(["probs", "gate", "cam"], {WEB_INPUT: crop[None]})
        assert np.abs(p[0] - probs).max() < 1e-5
        assert scores is not None
        assert np.abs(g[0] - [scores["not_skin"], scores["other"]]).max() < 1e-5
        x = normalize(Image.fromarray(crop), pred.card.preprocessing)[None]
        _, feats = pred.run(x, features=True)
        top = int(np.argmax(probs))
        want = pred.grad_cam(feats[0], top)
        got = np.maximum(cam[0, top], 0)
        assert np.abs(got / got.max() - want).max() < 1e-4


def test_browser_graph_measures_quality_as_the_server(device_model_dir: Path) -> None:
    """The graph's `quality` output is kulit.serving.quality.measure on the same crop (Pillow's
    grey and bilinear thumbnail), for sharp, blurred, dark and bright crops: the page compares
    the card's limits with the server's own numbers."""
    from PIL import ImageFilter

    from kulit.serving.quality import measure

    web = web_session(device_model_dir / WEB_ONNX_FILE)
    s = load_card(device_model_dir).preprocessing.input_size
    rng = np.random.default_rng(3)
    base = Image.fromarray(rng.integers(0, 256, (s // 8, s // 8, 3), dtype=np.uint8)).resize(
        (s, s), Image.Resampling.BICUBIC)
    crops = [base, base.filter(ImageFilter.GaussianBlur(4)), Image.eval(base, lambda v: v // 6),
             Image.eval(base, lambda v: 200 + v // 5)]
    if (DATA / "skin8").is_dir():
        photo = sorted((DATA / "skin8" / "Psoriasis").iterdir())[0]
        crops.append(load_and_preprocess(photo, load_card(device_model_dir).preprocessing)[0])
    for crop in crops:
        got = web.run(["quality"], {WEB_INPUT: np.asarray(crop, np.uint8)[None]})[0][0]
        want = np.array(measure(crop))
        assert np.allclose(got, want, rtol=0.03, atol=2e-3), (got, want)


def test_mask_box_comes_from_normalize() -> None:
    """The mask in the graph is read off normalize(): a crop's logo corner is zero in both."""
    from kulit.build.webmodel import mask_from_normalize

    card = load_card(SHIPPED) if (SHIPPED / "card.json").is_file() else None
    if card is None or card.preprocessing.mask_box is None:
        pytest.skip("no model with a mask box here")
    p = card.preprocessing
    mask = mask_from_normalize(p)[:, :, 0]
    white = normalize(Image.new("RGB", (p.input_size,) * 2, (255, 255, 255)), p)[0]
    assert ((white == 0) == (mask == 0)).all() and 0 < (mask == 0).mean() < 0.5


@needs_shipped
def test_shipped_browser_model_is_the_served_graph() -> None:
    """The shipped model-web.onnx gives the server's own probabilities on real photos of every
    class: the same graph (the int8 file when it passed its check), not an approximation."""
    if not (DATA / "skin8").is_dir():
        pytest.skip("../shared/data/skin8 is not here")
    web_path = SHIPPED / WEB_ONNX_FILE
    if not web_path.is_file():
        build_web_model(SHIPPED)
    pred = Predictor(SHIPPED)
    web = web_session(web_path)
    worst = 0.0
    for cls in pred.classes:
        for photo in sorted((DATA / "skin8" / cls).iterdir())[:3]:
            crop, x = load_and_preprocess(photo, pred.card.preprocessing)
            logits, _ = pred.run(x[None])
            want = softmax(logits.astype(np.float64) / pred.temperature)[0]
            got = web.run(["probs"], {WEB_INPUT: np.asarray(crop)[None]})[0][0]
            worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-4, worst


def test_config_and_files_are_served(device_model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from kulit.web.app import create_app
    from kulit.web.settings import Settings

    card = load_card(device_model_dir)
    with TestClient(create_app(Settings(model_dir=device_model_dir))) as client:
        cfg = client.get("/device/config.json").json()
        # what the offer says it downloads: the model and onnxruntime-web, as sent
        assert cfg.pop("download_bytes") > cfg["model"]["size_gz"] > 0
        assert cfg == json.loads(json.dumps(device_config(card, device_model_dir)))
        rule = cfg["rule"]
        assert rule["threshold"] == card.threshold and rule["classes"] == card.classes
        assert {k: rule[k] for k in CUTOFFS} == CUTOFFS
        for lang in ("id", "en"):
            for key in ("privacy_device", "advice_not_skin", "advice_melanoma", "verdict_likely"):
                assert cfg["texts"][lang][key]
        assert cfg["texts"]["id"]["privacy_device"] != cfg["texts"]["en"]["privacy_device"]
        r = client.get(cfg["model"]["url"], headers={"accept-encoding": "gzip"})
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        assert r.content == (device_model_dir / WEB_ONNX_FILE).read_bytes()  # client unzips
        assert client.get("/sw.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/manifest.webmanifest").json()["start_url"] == "/"
        assert "wasm-unsafe-eval" in client.get("/").headers["content-security-policy"]
        assert client.get("/device/ort/../../app.py").status_code == 404
    with TestClient(create_app(Settings(model_dir=device_model_dir, device=False))) as client:
        assert client.get("/device/config.json").json()["model"]["url"] is None


# --- real Chromium ---

def _serve_device(model_dir: Path) -> Iterator[str]:
    from kulit.web.app import create_app
    from kulit.web.settings import Settings

    if not ORT_WASM.is_file():
        pytest.skip("onnxruntime-web is not vendored (make setup runs scripts/vendor_ort_web.sh)")
    with serve_on_loopback(create_app(Settings(model_dir=model_dir))) as url:
        yield url


@pytest.fixture(scope="module")
def device_server(device_model_dir: Path) -> Iterator[str]:
    yield from _serve_device(device_model_dir)


@pytest.fixture(scope="module")
def fp32_server(fp32_model_dir: Path) -> Iterator[str]:
    yield from _serve_device(fp32_model_dir)


def choose_device(page: Any) -> None:
    """The person's choice: the check is offered with its size and downloads only when asked."""
    page.wait_for_selector("#device-download", state="visible", timeout=60_000)
    assert "MB" in page.text_content("#device-download")
    page.click("#device-download")
    page.wait_for_selector("html[data-device=ready]", state="attached", timeout=120_000)


def open_device_page(browser: Any, base: str, lang: str = "en") -> tuple[Any, Any]:
    ctx = browser.new_context(viewport={"width": 360, "height": 740})
    page = ctx.new_page()
    page.goto(f"{base}/?lang={lang}")
    choose_device(page)
    return ctx, page


def sample_photos(n: int) -> list[Path]:
    """Up to n photos of every source here, spread over its folders (deterministic)."""
    out = []
    for source in SOURCES:
        files = sorted(p for p in (DATA / source).rglob("*")
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
        if files:
            step = max(1, len(files) // n)
            out += files[::step][:n]
    return out


def browser_vs_server(server: str, browser: Any, model_dir: Path
                      ) -> tuple[list[float], list[bool], list[str]]:
    """The same uint8 crop in Chromium (onnxruntime-web) and on the server, for photos of every
    source in ../shared/data: per photo, max |dP| over classes and gate scores, whether status
    and advice agree, and the browser's status."""
    photos = sample_photos(PHOTOS_PER_SOURCE)
    if not photos:
        pytest.skip("../shared/data is not here")
    pred = Predictor(model_dir)
    gate = load_gate(model_dir)
    ctx, page = open_device_page(browser, server)
    diffs, same, statuses = [], [], []
    for photo in photos:
        crop = np.asarray(load_and_preprocess(photo, pred.card.preprocessing)[0], np.uint8)
        probs, scores, want = server_answer(pred, gate, crop, CUTOFFS)
        got = page.evaluate("""async (b64) => {
            const cfg = await window.kulitDevice.ready;
            const rgb = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const out = await window.kulitDevice.runCrop(rgb);
            return {probs: out.probs, gate: out.gate,
                    answer: window.kulitDevice.decide(cfg.rule, out.probs, out.gate, null)};
        }""", base64.b64encode(crop.tobytes()).decode())
        assert scores is not None
        diffs.append(max(float(np.abs(np.array(got["probs"]) - probs).max()),
                         *(abs(got["gate"][k] - scores[k]) for k in SCORERS)))
        a = got["answer"]
        same.append(same_answer(a, want))
        statuses.append(a["status"])
    ctx.close()
    print(f"parity ({pred.precision}): {len(photos)} photos, max |dP| {max(diffs):.2g}, median "
          f"{np.median(diffs):.2g}, same answer {np.mean(same):.3f}, statuses "
          f"{ {s: statuses.count(s) for s in set(statuses)} }")
    return diffs, same, statuses


def server_kernels_off_graph(model_dir: Path, n: int = 6) -> float:
    """Median max |dP| between the served file run as the server runs it (fused int8 kernels)
    and the same graph's own arithmetic (no fusion), which onnxruntime-web computes. An int8
    file quantised with full-range weights saturates on x86 CPUs without VNNI (0.09 here);
    `kulit quantize` now uses 7-bit weights (0.004)."""
    import onnxruntime as ort

    from kulit.build.webmodel import WEB_INPUT, WEB_ONNX_FILE

    def session(level: Any) -> Any:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        opts.intra_op_num_threads = 1
        return ort.InferenceSession(str(model_dir / WEB_ONNX_FILE), opts,
                                    providers=["CPUExecutionProvider"])

    fused = session(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    plain = session(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    rng = np.random.default_rng(0)
    s = fused.get_inputs()[0].shape[1]
    base = rng.integers(0, 256, (n, s // 16, s // 16, 3), dtype=np.uint8)
    crops = np.stack([np.asarray(Image.fromarray(b).resize((s, s))) for b in base])
    a = fused.run(["probs"], {WEB_INPUT: crops})[0]
    b = plain.run(["probs"], {WEB_INPUT: crops})[0]
    return float(np.median(np.abs(a - b).max(axis=1)))


@pytest.mark.e2e
def test_browser_parity_with_server_float32(fp32_server: str, browser: Any,
                                            fp32_model_dir: Path) -> None:
    """float32 graph: the browser's surgery, JS and rule are exact: probabilities and gate
    scores within 1e-3 of the server's, the same status and advice on every photo."""
    diffs, same, _ = browser_vs_server(fp32_server, browser, fp32_model_dir)
    assert max(diffs) < 1e-3 and all(same)


@pytest.mark.e2e
def test_browser_parity_with_server_as_shipped(device_server: str, browser: Any,
                                               device_model_dir: Path) -> None:
    """As shipped (the server's static int8 graph in both): onnxruntime-web's int8 kernels
    round a few requantisations differently from the x86 ones, so probabilities move a little;
    the answer (status and advice) must still be the same on at least 95% of photos."""
    diffs, same, _ = browser_vs_server(device_server, browser, device_model_dir)
    if Predictor(device_model_dir).precision == "fp32":  # no int8 file passed: exact again
        assert max(diffs) < 1e-3 and all(same)
        return
    off = server_kernels_off_graph(device_model_dir)
    if off > 0.02:  # an int8 file quantised with full-range weights (docs/device.md)
        pytest.xfail(f"the served int8 file's x86 kernels saturate (median |dP| {off:.3f} from "
                     f"its own graph; same answer {np.mean(same):.0%}): re-quantise it")
    assert np.mean(same) >= 0.95 and np.median(diffs) < 0.01 and max(diffs) < 0.1


@pytest.mark.e2e
def test_browser_crop_of_the_original_photo(device_server: str, browser: Any,
                                            device_model_dir: Path) -> None:
    """The device's crop of an original photo (static/resample.js, Pillow's resampler) gives
    the server's probabilities, on photos of every source the server decodes in full. A JPEG
    whose shorter side reaches twice the draft size is drafted in the DCT by the server, which
    a browser cannot do; the page shrinks such photos first (kulit.js), so they are left out."""
    photos = sample_photos(4)
    if not photos:
        pytest.skip("../shared/data is not here")
    pred = Predictor(device_model_dir)
    draft = pred.pre.draft or 0
    full = [p for p in photos if not draft or min(Image.open(p).size) < 2 * draft]
    assert full, "no photo small enough to be decoded in full"
    ctx, page = open_device_page(browser, device_server)
    diffs = []
    for photo in full:
        want = pred.predict_one(photo).probs
        got = page.evaluate("""async (b64) => {
            await window.kulitDevice.ready;
            const blob = new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))]);
            const crop = await window.kulitDevice.cropPhoto(blob);
            return (await window.kulitDevice.runCrop(crop.rgb)).probs;
        }""", base64.b64encode(photo.read_bytes()).decode())
        diffs.append(float(np.abs(np.array(got) - want).max()))
    ctx.close()
    assert max(diffs) < 1e-4, (len(full), max(diffs))


RULE_CASES = [  # (probs over the 8 classes, gate scores or None, quality issue or None)
    ([0.9, 0.02, 0.02, 0.01, 0.02, 0.01, 0.01, 0.01], None, None),
    ([0.9, 0.02, 0.02, 0.01, 0.02, 0.01, 0.01, 0.01], {"not_skin": 0.7, "other": 0.1}, None),
    ([0.9, 0.02, 0.02, 0.01, 0.02, 0.01, 0.01, 0.01], {"not_skin": 0.6, "other": 0.9}, None),
    ([0.9, 0.02, 0.02, 0.01, 0.02, 0.01, 0.01, 0.01], {"not_skin": 0.59, "other": 0.6}, None),
    ([0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.03, 0.02], {"not_skin": 0.1, "other": 0.1}, None),
    ([0.7, 0.05, 0.05, 0.05, 0.05, 0.05, 0.03, 0.02], None, None),
    ([0.69, 0.06, 0.05, 0.05, 0.05, 0.05, 0.03, 0.02], None, None),
    ([0.1, 0.05, 0.05, 0.75, 0.02, 0.01, 0.01, 0.01], None, None),
    ([0.75, 0.0, 0.0, 0.2, 0.02, 0.01, 0.01, 0.01], {"not_skin": 0.1, "other": 0.1}, None),
    ([0.75, 0.0, 0.0, 0.2, 0.02, 0.01, 0.01, 0.01], {"not_skin": 0.1, "other": 0.7}, None),
    ([0.79, 0.0, 0.0, 0.19, 0.0, 0.01, 0.0, 0.01], {"not_skin": 0.1, "other": 0.1}, None),
    ([0.1, 0.05, 0.05, 0.75, 0.02, 0.01, 0.01, 0.01], {"not_skin": 0.9, "other": 0.9}, None),
    ([0.1, 0.05, 0.05, 0.75, 0.02, 0.01, 0.01, 0.01], None, "too_small"),
    ([0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.03, 0.02], None, None),
    ([0.125] * 8, {"not_skin": 0.0, "other": 0.0}, None),
]


# shortlist cut-offs: none (uncalibrated), a realistic set, and strict ones that
# leave lists of one below the threshold (the list then takes the next class)
SHORTLISTS = [None, {"level": 0.9, "cutoffs": [0.06, 0.02, 0.02, 0.1, 0.016, 0.011, 0.05, 0.02]},
              {"level": 0.8, "cutoffs": [0.3] * 8}]


@pytest.mark.e2e
@pytest.mark.parametrize("shortlist", SHORTLISTS)
@pytest.mark.parametrize("cutoffs", [CUTOFFS, {k: None for k in CUTOFFS}])
def test_js_rule_equals_python_rule(device_server: str, browser: Any, device_model_dir: Path,
                                    cutoffs: dict[str, Any],
                                    shortlist: dict[str, Any] | None) -> None:
    """device.js's decide and the server's rule, on one table of cases: identical answers
    (status, advice, urgency and the shortlist itself)."""
    ctx, page = open_device_page(browser, device_server)
    rule = page.evaluate("window.kulitDevice.ready.then((c) => c.rule)")
    rule = {**rule, **cutoffs, "shortlist": shortlist}
    got = page.evaluate("""([rule, cases]) => cases.map(([p, g, q]) =>
        window.kulitDevice.decide(rule, p, g, q))""", [rule, RULE_CASES])
    ctx.close()
    for (probs, gate, issue), a in zip(RULE_CASES, got, strict=True):
        want = python_rule(np.array(probs), rule["classes"], rule["threshold"], gate,
                           cutoffs, issue, shortlist)
        assert same_answer(a, want), (probs, gate, issue)


@pytest.mark.e2e
def test_offline_after_one_visit(device_server: str, browser: Any, tmp_path: Path) -> None:
    """Visit once, go offline (airplane mode), reload: the check still answers, nothing sent."""
    photo = next(iter(sample_photos(1)), None)
    if photo is None:
        photo = tmp_path / "p.jpg"
        Image.new("RGB", (300, 240), (200, 150, 120)).save(photo)
    ctx, page = open_device_page(browser, device_server, lang="id")
    for _ in range(300):  # the page's CSP forbids wait_for_function's eval
        if page.evaluate("navigator.serviceWorker.controller !== null"):
            break
        time.sleep(0.1)
    # the page keeps every page, script and the model, then says so (html[data-offline=ready])
    page.wait_for_selector("html[data-offline=ready]", state="attached", timeout=120_000)
    assert "tidak pernah dikirim" in page.text_content("#privacy-device")
    assert page.is_hidden("#privacy-server")  # only the privacy text of the mode in use
    ctx.set_offline(True)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.method) if r.method != "GET" else None)
    page.reload()
    page.wait_for_selector("html[data-device=ready]", state="attached", timeout=90_000)
    page.set_input_files("#image", str(photo))
    page.click("#submit")
    page.wait_for_selector("html[data-device=result]", state="attached", timeout=90_000)
    assert page.get_attribute("#verdict", "data-status") in (
        "answered", "shortlist", "uncertain", "none_of_these", "not_skin", "retake")
    assert page.text_content("#verdict").strip()
    assert sent == []  # no upload, online or not
    ctx.close()
