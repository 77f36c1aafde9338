"""On-device check: the files the page needs to run the model in the browser, offline.

The service worker and manifest at the root (a worker controls only paths under its own), the
answer rule's data from the card (`kulit.serving.device.device_config`), the browser model from the
model directory and onnxruntime-web's vendored WASM. Nothing here receives a photo.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from kulit.serving.device import device_config
from kulit.serving.i18n import t
from kulit.serving.model_dir import WEB_ONNX_FILE
from kulit.serving.shortlist import SECTION, guarantee_tenths
from kulit.web.deps import PredictorDep, SettingsDep
from kulit.web.rendering import LangDep, device_result_context, render

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
    data = {**data, "download_bytes": download_bytes(data["model"])}
    if not settings.device:  # the page then posts the photo to the server, as before
        data = {**data, "model": {**data["model"], "url": None}}
    return JSONResponse(data, headers=REVALIDATE)


def download_bytes(model: dict[str, Any]) -> int:
    """What the first on-device visit downloads (the model and onnxruntime-web, compressed as
    the server sends them), for the offer "download N MB once"."""
    total = model.get("size_gz") or model.get("size") or 0
    for name in ORT_FILES:
        path = ORT_DIR / name
        packed = [p for p in (path.with_name(name + ".br"), path.with_name(name + ".gz"))
                  if p.is_file()]
        total += packed[0].stat().st_size if packed else (path.stat().st_size
                                                          if path.is_file() else 0)
    return int(total)


@router.get("/device/result", include_in_schema=False)
def device_result(request: Request, lang: LangDep, settings: SettingsDep,
                  predictor: PredictorDep) -> Response:
    """The result page the on-device check fills in the browser (the photo never comes here):
    result.html with every class's block, so both modes show the same page, offline too."""
    return render(request, "result.html", lang, settings, predictor,
                  **device_result_context(list(predictor.classes), lang.code,
                                          guarantee_tenths(predictor.card.section(SECTION))))


@router.get("/offline", include_in_schema=False)
def offline(request: Request, lang: LangDep, settings: SettingsDep,
            predictor: PredictorDep) -> Response:
    """What the service worker shows for a page it has not kept, in the page's words."""
    return render(request, "error.html", lang, settings, predictor,
                  title=t(lang.code, "offline_title"), text=t(lang.code, "needs_internet"))


@router.get(f"/device/{WEB_ONNX_FILE}", include_in_schema=False)
def web_model(request: Request, predictor: PredictorDep) -> Response:
    return send_file(request, predictor.model_dir / WEB_ONNX_FILE)


@router.get("/device/ort/{name}", include_in_schema=False)
def ort_file(request: Request, name: str) -> Response:
    if name not in ORT_FILES:
        raise HTTPException(404, "not found")
    return send_file(request, ORT_DIR / name)
