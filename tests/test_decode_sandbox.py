"""Hostile files are decoded in a sandbox; slow clients; headers; the CLI's lines.

One small case of each class benchmarks/hostile.py measures at full size."""

from __future__ import annotations

import fcntl
import io
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kulit.cli import app as cli
from kulit.errors import ImageError, printable
from kulit.explain.steps import load_rgb_patch
from kulit.serving import preprocess
from kulit.serving.decode_guards import MAX_JPEG_SCANS, MAX_SCAN_PIXELS, set_big_decode_slot
from kulit.serving.decode_sandbox import DecodePool, SandboxLimits, reduce_for_model
from kulit.serving.decode_worker import BigSlot, slot_file
from kulit.serving.preprocess import (
    MAX_PIXELS,
    MAX_PIXELS_LOSSLESS,
    Preprocessing,
    decode_image,
    to_rgb,
)
from kulit.serving.quality import QualityLimits
from tests.conftest import image_bytes, make_image, serve_on_loopback
from tests.hostile_files import (
    bmp_rle8,
    chunk_flood,
    cmyk_progressive_jpeg,
    ico_wrapping,
    many_scan_jpeg,
    marker_flood,
    png,
    png16,
    truncated_png,
    webp_animated,
    webp_lossless,
)

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from kulit.web.app import create_app  # noqa: E402
from kulit.web.server import uvicorn_options  # noqa: E402
from kulit.web.settings import Settings  # noqa: E402

PRE, QL = Preprocessing(), QualityLimits()


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf(
                "SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20


@pytest.fixture(scope="module")
def pool() -> Iterator[DecodePool]:
    with DecodePool(1) as p:
        yield p


def post(client: TestClient, data: bytes, url: str = "/api/v1/predict"):
    return client.post(url, files={"image": ("x", data, "application/octet-stream")})


# 1. the sandbox itself ------------------------------------------------------------------------

def test_the_sandbox_gives_the_same_pixels_as_decoding_here(pool: DecodePool) -> None:
    data = image_bytes(make_image(3, (300, 200)), "JPEG")
    there, here = pool.reduce_for_model(data, PRE, QL), reduce_for_model(data, PRE, QL)
    assert np.array_equal(there.pixels, here.pixels) and there.quality == here.quality
    assert os.getpid() not in pool.pids()


def test_a_decode_over_the_memory_limit_is_413_and_the_worker_goes_on() -> None:
    with DecodePool(1, SandboxLimits(memory_mb=200)) as small:
        with pytest.raises(ImageError) as e:
            small.reduce_for_model(png(4800, 4800, colour=6), PRE, QL)  # 92 MB of RGBA
        assert e.value.code == "decode_memory"
        assert small.reduce_for_model(png(64, 64), PRE, QL).pixels.shape == (224, 224, 3)


def slow_jpeg(folder: Path, side: int, scans: int) -> Path:
    """A file (a path skips the scan check, which only bytes uploads get) that decodes slowly."""
    path = folder / f"slow-{side}-{scans}.jpg"
    path.write_bytes(many_scan_jpeg(side, scans))
    return path


def test_a_decode_past_the_deadline_is_killed_and_the_worker_replaced(tmp_path: Path) -> None:
    with DecodePool(1, SandboxLimits(deadline_s=0.2)) as quick:
        first = quick.pids()
        with pytest.raises(ImageError) as e:
            quick.reduce_for_model(slow_jpeg(tmp_path, 512, 3000), PRE, QL)
        assert e.value.code == "decode_timeout" and "1.5" not in e.value.message
        assert quick.reduce_for_model(png(64, 64), PRE, QL).pixels.shape == (224, 224, 3)
        assert quick.replaced == 1 and quick.pids()[1:] != first[1:]


def test_a_decode_over_its_cpu_budget_is_stopped(tmp_path: Path) -> None:
    with DecodePool(1, SandboxLimits(cpu_s=1, deadline_s=60)) as cpu:
        with pytest.raises(ImageError) as e:
            cpu.reduce_for_model(slow_jpeg(tmp_path, 1024, 8000), PRE, QL)
        assert e.value.code == "unreadable" and "limit" in e.value.message
        assert cpu.reduce_for_model(png(64, 64), PRE, QL).pixels.shape == (224, 224, 3)


def test_a_jpeg_with_more_scans_than_any_encoder_writes_is_refused_before_decoding() -> None:
    assert decode_image(many_scan_jpeg(64, 50)).size == (64, 64)  # a bogus but cheap one
    for data in (many_scan_jpeg(256, MAX_JPEG_SCANS + 1),  # too many scans
                 many_scan_jpeg(4000, 40)):  # few enough, but 40 x 16 MP > MAX_SCAN_PIXELS
        with pytest.raises(ImageError) as e:
            decode_image(data, draft=PRE.draft)
        assert e.value.code == "unreadable" and "scans" in e.value.message
    assert 40 * 4000 * 4000 > MAX_SCAN_PIXELS >= 10 * 40_000_000  # ten scans of 40 MP pass


def test_only_big_decodes_take_the_shared_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "BIG_DECODE_PIXELS", 8_000_000)  # small test files
    taken: list[int] = []
    set_big_decode_slot(lambda: taken.append(1))
    try:
        decode_image(png(3000, 2000), draft=PRE.draft)  # 6 MP: no slot
        decode_image(image_bytes(make_image(1, (4000, 3000)), "JPEG"), draft=PRE.draft)
        assert taken == []  # a 12 MP JPEG is DCT-reduced first: a small decode
        decode_image(png(3000, 3000), draft=PRE.draft)  # 9 MP
        assert taken == [1]
    finally:
        set_big_decode_slot(None)


def test_png_and_webp_past_their_pixel_limit_are_413_before_decoding(
        client: TestClient) -> None:
    side = int(MAX_PIXELS_LOSSLESS ** 0.5) + 1  # under MAX_PIXELS, over the lossless limit
    for data in (png(side, side, colour=6), png16(side, side)):
        r = post(client, data)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    page = post(client, png(side, side), "/predict?lang=en")
    assert page.status_code == 413 and "24 million for PNG and WebP" in page.text
    assert MAX_PIXELS_LOSSLESS < side * side < MAX_PIXELS


def test_the_big_decode_slot_excludes_a_sibling_and_is_freed_when_its_holder_dies() -> None:
    fd = slot_file()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child holds the slot until it is killed
        BigSlot(fd).take()
        os.write(ready_w, b"1")
        time.sleep(60)
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        with pytest.raises(OSError):  # held by the child: a sibling cannot have it
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0, os.SEEK_SET)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    mine = BigSlot(fd)
    mine.take()  # the killed holder left no stale lock (this would wait forever)
    assert mine.held
    mine.release()
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0, os.SEEK_SET)  # free again
    os.close(fd)


def test_big_and_truncated_decodes_keep_no_memory_anywhere() -> None:
    with DecodePool(1, SandboxLimits(deadline_s=60)) as pool:  # a busy machine is slow
        pool.reduce_for_model(png(64, 64), PRE, QL)
        here, there = rss_mb([os.getpid()]), rss_mb(pool.pids())
        for _ in range(3):  # 20 MP: ~60 MB decoded in a worker, nothing of it here
            pool.reduce_for_model(png(5000, 4000), PRE, QL)
            with pytest.raises(ImageError):
                pool.reduce_for_model(truncated_png(3000, 3000), PRE, QL)
        time.sleep(0.5)  # a retired worker's replacement comes up in the background
        assert rss_mb([os.getpid()]) - here < 30
        assert rss_mb(pool.pids()) - there < 20


# 2. only JPEG, PNG, WebP, HEIF ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["bmp_rle8", "bmp", "ico", "gif", "tiff"])
def test_other_formats_are_415_naming_the_accepted_ones(client: TestClient, name: str) -> None:
    img = make_image(1, (64, 48))
    data = {"bmp_rle8": lambda: bmp_rle8(64, 64), "ico": lambda: ico_wrapping(png(8900, 8900)),
            "bmp": lambda: image_bytes(img, "BMP"), "gif": lambda: image_bytes(img, "GIF"),
            "tiff": lambda: image_bytes(img, "TIFF")}[name]()
    r = post(client, data)
    assert r.status_code == 415 and r.json()["error"]["code"] == "not_image"
    assert "JPEG, PNG, WebP or HEIC/HEIF" in r.json()["error"]["message"]
    page = post(client, data, "/predict?lang=en")
    assert page.status_code == 415 and "Only JPEG, PNG, WebP and HEIC/HEIF" in page.text


# 3. reduce before converting; the audit's classes, small --------------------------------------

def test_16_bit_grey_is_scaled_in_integers() -> None:
    arr = np.array([[0, 257, 32896, 65535]], np.uint16)
    img = Image.frombytes("I;16", (4, 1), arr.tobytes())
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_a_big_16_bit_png_is_reduced_before_it_is_converted() -> None:
    img = decode_image(png16(4500, 4000), draft=PRE.draft)  # 18 MP, over REDUCE_ABOVE
    k = 4000 // PRE.draft  # a whole factor, the short side still at least the draft size
    assert img.mode.startswith("I;16") and k > 1 and img.size == (4500 // k, 4000 // k)


def test_an_animated_webp_is_its_first_frame(pool: DecodePool) -> None:
    got = pool.reduce_for_model(webp_animated(64, frames=3), PRE, QL)
    assert got.pixels[0, 0].tolist() == [150, 110, 90]


@pytest.mark.parametrize("make", [
    lambda: many_scan_jpeg(64, 50), lambda: marker_flood(2000), lambda: marker_flood(0, 20000),
    lambda: chunk_flood(2000), lambda: png16(300, 200), lambda: webp_lossless(600),
    lambda: webp_animated(300), lambda: cmyk_progressive_jpeg(400)],
    ids=["many_scans", "markers", "fill", "chunks", "png16", "lossless", "animated", "cmyk"])
def test_small_cases_of_each_class_are_answered(client: TestClient, make) -> None:
    r = post(client, make())
    assert r.status_code == 200, r.text
    assert r.json()["disclaimer"]["en"]


def test_a_truncated_png_ten_times_is_400_and_keeps_nothing(client: TestClient) -> None:
    pool = client.app.state.decode_pool
    data = truncated_png(2000, 2000)
    post(client, data)
    before = rss_mb(pool.pids())
    for _ in range(10):
        r = post(client, data)
        assert r.status_code == 400 and r.json()["error"]["code"] == "unreadable"
    time.sleep(0.5)
    assert rss_mb(pool.pids()) - before < 20


def test_explain_takes_a_jpeg_over_the_pixel_limit_by_draft() -> None:
    side = int((MAX_PIXELS * 1.1) ** 0.5)
    data = image_bytes(Image.new("RGB", (side, side), (150, 110, 90)), "JPEG", quality=50)
    patch, (x, y), (w, h), _ = load_rgb_patch(data, None)
    assert w * h <= MAX_PIXELS and w == -(-side // 2)
    assert np.abs(patch[0, 0] - [150, 110, 90]).max() <= 2  # JPEG's rounding


# 4. slow clients (real sockets on loopback) ----------------------------------------------------

@pytest.fixture(scope="module")
def live(onnx_model_dir: Path) -> Iterator[str]:
    s = Settings(model_dir=onnx_model_dir, upload_grace_s=1.0, header_timeout_s=1.0)
    app = create_app(s)
    with serve_on_loopback(app, **uvicorn_options(s)) as url:
        yield url


def slow_upload(port: int, source: str) -> socket.socket:
    """Connect from `source` (another loopback address), send headers and a first byte."""
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                 b"Content-Type: multipart/form-data; boundary=b\r\n\r\n-")
    return sock


def answer(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except OSError:
        return b""


def test_sixteen_slow_uploads_do_not_lock_out_others(live: str) -> None:
    import httpx

    port = int(live.rsplit(":", 1)[1])
    slow = [slow_upload(port, "127.0.0.2") for _ in range(16)]
    try:
        data = image_bytes(make_image(5, (120, 90)), "JPEG")
        r = httpx.post(f"{live}/api/v1/predict", files={"image": ("a.jpg", data)}, timeout=30)
        assert r.status_code == 200
        answers = [answer(s) for s in slow]  # 429 at once beyond 4, 408 after the grace
        assert sum(a.startswith(b"HTTP/1.1 429") for a in answers) == 12
        assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) == 4
    finally:
        for s in slow:
            s.close()


def test_headers_must_come_in_time_and_no_server_header(live: str) -> None:
    import httpx

    port = int(live.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert sock.recv(100) == b""  # closed by the server, not by the 10 s timeout
    r = httpx.get(f"{live}/healthz")
    assert "server" not in r.headers


# 5. headers -------------------------------------------------------------------------------------

def test_security_headers(client: TestClient) -> None:
    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["permissions-policy"].startswith("camera=(self)")
    docs = client.get("/docs")
    csp = docs.headers["content-security-policy"]
    assert "'sha256-" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp


# 6. CLI -----------------------------------------------------------------------------------------

def test_predict_reports_a_bad_file_and_escapes_names(onnx_model_dir: Path, tmp_path) -> None:
    good = tmp_path / "good.jpg"
    make_image(2, (120, 90)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bmp_rle8(32, 32))
    evil = tmp_path / "evil\x1b[31m\nx.jpg"
    evil.write_bytes(good.read_bytes())
    r = CliRunner().invoke(cli, ["predict", str(good), str(bad), str(evil), "--model",
                                 str(onnx_model_dir)])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "evil\\x1b[31m\\nx.jpg" in r.stdout
    errors = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(errors) == 1 and "bad.jpg" in errors[0] and "JPEG, PNG, WebP" in errors[0]
    assert "2 of 3 predicted" in r.stdout


def test_printable_escapes_controls_and_bidi_only() -> None:
    assert printable("a\x1b[1m\r\n\u202eb ü 皮膚") == "a\\x1b[1m\\r\\n\\u202eb ü 皮膚"


def test_the_pool_is_safe_to_share_between_threads(pool: DecodePool) -> None:
    data = [image_bytes(make_image(i, (90, 60)), "PNG") for i in range(6)]
    want = [reduce_for_model(d, PRE, QL).pixels for d in data]
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        got[i] = pool.reduce_for_model(io.BytesIO(data[i]), PRE, QL).pixels

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(np.array_equal(got[i], want[i]) for i in range(6))
