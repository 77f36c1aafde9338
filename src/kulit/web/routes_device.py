"""On-device check: the files the page needs to run the model in the browser, offline.

The service worker and manifest at the root (a worker controls only paths under its own), the
answer rule's data from the card (`kulit.build.webmodel.device_config`), the browser model from the
model directory and onnxruntime-web's vendored WASM. Nothing here receives a photo.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from kulit.build.webmodel import WEB_ONNX_FILE, device_config
from kulit.web.deps import PredictorDep, SettingsDep

router = APIRouter(tags=["device"])

STATIC_DIR = Path(__file__).with_name("static")
ORT_DIR = STATIC_DIR / "ort"
ORT_FILES = frozenset({"ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs",
                       "ort-wasm-simd-threaded.wasm"})
MEDIA = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
         ".onnx": "application/octet-stream", ".webmanifest": "application/manifest+json"}
# the service worker decides what is fresh; the browser must revalidate with us
REVALIDATE = {"cache-control": "no-cache"}


def send_file(request: Request, path: Path, headers: dict[str, str] | None = None) -> Response:
    """A file, or its .br / .gz copy when the browser accepts it (built beside it)."""
    if not path.is_file():
        raise HTTPException(404, f"{path.name} is not built (run `make setup`)")
    accept = request.headers.get("accept-encoding", "")
    hdrs = {**REVALIDATE, **(headers or {}), "vary": "accept-encoding"}
    media = MEDIA.get(path.suffix, "application/octet-stream")
    for enc, ext in (("br", ".br"), ("gzip", ".gz")):
        packed = path.with_name(path.name + ext)
        if enc in accept and packed.is_file() and packed.stat().st_mtime >= path.stat().st_mtime:
            return FileResponse(packed, media_type=media, headers={**hdrs, "content-encoding": enc})
    return FileResponse(path, media_type=media, headers=hdrs)


@router.get("/sw.js", include_in_schema=False)
def service_worker(request: Request) -> Response:
    return send_file(request, STATIC_DIR / "sw.js", {"service-worker-allowed": "/"})


@router.get("/manifest.webmanifest", include_in_schema=False)
def manifest(request: Request) -> Response:
    return send_file(request, STATIC_DIR / "manifest.webmanifest")


@lru_cache(maxsize=4)
def _config(model_dir: Path, stamp: float) -> dict[str, Any]:
    from kulit.serving.card import load_card
    return device_config(load_card(model_dir), model_dir)


@router.get("/device/config.json", include_in_schema=False)
def config(settings: SettingsDep, predictor: PredictorDep) -> Response:
    """The answer rule's parameters and texts, from the card the server answers with."""
    web = predictor.model_dir / WEB_ONNX_FILE
    stamp = web.stat().st_mtime if web.is_file() else 0.0
    data = _config(predictor.model_dir, stamp)
    if not settings.device:  # the page then posts the photo to the server, as before
        data = {**data, "model": {**data["model"], "url": None}}
    return JSONResponse(data, headers=REVALIDATE)


@router.get(f"/device/{WEB_ONNX_FILE}", include_in_schema=False)
def web_model(request: Request, predictor: PredictorDep) -> Response:
    return send_file(request, predictor.model_dir / WEB_ONNX_FILE)


@router.get("/device/ort/{name}", include_in_schema=False)
def ort_file(request: Request, name: str) -> Response:
    if name not in ORT_FILES:
        raise HTTPException(404, "not found")
    return send_file(request, ORT_DIR / name)
