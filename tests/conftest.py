"""Shared fixtures: generated images, a tiny synthetic dataset, and a small ONNX model dir."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SKIN8 = REPO.parent / "shared" / "data" / "skin8"
SHIPPED_MODEL = REPO / "models" / "kulit-skin8"

TINY_CLASSES = ["Alpha", "Beta", "Gamma"]


def make_image(seed: int, size: tuple[int, int] = (96, 80), cls: int = 0) -> Image.Image:
    """A textured RGB image whose dominant colour depends on `cls` (separable by a tiny CNN)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.zeros((h, w, 3), np.float32)
    base[..., cls % 3] = 150
    noise = rng.normal(0, 40, (h // 8 + 1, w // 8 + 1, 3))
    noise = np.kron(noise, np.ones((8, 8, 1)))[:h, :w]
    arr = np.clip(base + 60 + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def image_bytes(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes x 12 images of distinct colours, one folder per class."""
    root = tmp_path_factory.mktemp("tiny_data")
    for c, name in enumerate(TINY_CLASSES):
        d = root / name
        d.mkdir()
        for i in range(12):
            make_image(1000 * c + i, (96 + 4 * i, 80), c).save(d / f"{name.lower()}_{i}.jpg")
    return root


def write_onnx_model_dir(out: Path, classes: list[str], input_size: int = 32,
                         channels: int = 8, seed: int = 0) -> Path:
    """A genuine small ONNX CNN (conv stride 4 -> ReLU -> GAP -> linear) plus card and head.

    Its one conv layer is both the first layer and the last feature map.

    Built straight from numpy weights so torch-free tests (web, predictor) have a model dir
    with the exact layout `kulit export` writes.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from kulit.serving.card import ModelCard, save_card
    from kulit.serving.preprocess import Preprocessing

    rng = np.random.default_rng(seed)
    k = len(classes)
    conv_w = rng.normal(0, 0.5, (channels, 3, 4, 4)).astype(np.float32)
    conv_b = np.zeros(channels, np.float32)
    fc_w = rng.normal(0, 1.0, (k, channels)).astype(np.float32)
    fc_b = np.zeros(k, np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["pre"], strides=[4, 4]),
        helper.make_node("Relu", ["pre"], ["features"]),
        helper.make_node("Identity", ["features"], ["first_layer"]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled4"]),
        helper.make_node("Flatten", ["pooled4"], ["pooled"], axis=1),
        helper.make_node("Gemm", ["pooled", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, input_size,
                                                                    input_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                       ["N", channels, input_size // 4, input_size // 4]),
         helper.make_tensor_value_info("first_layer", TensorProto.FLOAT,
                                       ["N", channels, input_size // 4, input_size // 4])],
        [numpy_helper.from_array(a, n) for a, n in
         [(conv_w, "conv_w"), (conv_b, "conv_b"), (fc_w, "fc_w"), (fc_b, "fc_b")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out / "model.onnx")
    np.savez(out / "head.npz", fc_w=fc_w, fc_b=fc_b)
    card = ModelCard(
        name="tiny-test", classes=list(classes), backbone="tiny",
        preprocessing=Preprocessing(input_size=input_size), temperature=1.5, threshold=0.5,
        head="linear", metrics={"accuracy": 0.5}, data={"source": "generated", "licence": "none"},
        # the generated test photos are 80-120 px: below the real default (kulit.serving.quality)
        quality={"min_side": 32},
    )
    save_card(card, out)
    return out


@pytest.fixture(scope="session")
def onnx_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small numpy-built ONNX model dir with 8 skin8-named classes (random weights)."""
    classes = ["Chickenpox", "Herpes", "Impetigo", "Melanoma", "Psoriasis", "Ringworm",
               "Vitiligo", "Warts"]
    return write_onnx_model_dir(tmp_path_factory.mktemp("onnx_model"), classes)


@contextlib.contextmanager
def serve_on_loopback(app: Any, **options: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn on a free 127.0.0.1 port in a thread; yield its URL.
    `options` go to uvicorn.Config (kulit.web.server.uvicorn_options, as kulit serve)."""
    import socket
    import threading
    import time

    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        **options))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-gpu"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright, headless, one per test module (skips without it).
    Not session-wide: Playwright's sync API holds an event loop on the main thread while it
    runs, and later tests call asyncio.run."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium not found (CI installs it: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def client(onnx_model_dir: Path) -> Iterator[TestClient]:
    """The app on the tiny test model (a module that needs other settings defines its own)."""
    from kulit.web.app import create_app
    from kulit.web.settings import Settings

    with TestClient(create_app(Settings(model_dir=onnx_model_dir))) as c:
        yield c
