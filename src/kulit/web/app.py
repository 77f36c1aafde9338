"""The FastAPI app factory: loads the model once in the lifespan, mounts pages, API and static."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import kulit
from kulit.serving.decode_sandbox import DecodePool
from kulit.serving.predict import Predictor
from kulit.web import routes_api, routes_device, routes_explain, routes_pages
from kulit.web.errors import error_response
from kulit.web.rendering import render, resolve_lang
from kulit.web.settings import Settings
from kulit.web.upload import UploadGuard

if TYPE_CHECKING:
    from kulit.clinic.config import ClinicSettings

STATIC_DIR = Path(__file__).with_name("static")
API_PREFIXES = ("/api/", "/healthz")
# Pages load nothing from other hosts (no CDN; works offline). /docs sets its own (routes_pages).
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'wasm-unsafe-eval'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
# the page may use the camera (the photo input); nothing else, no other origin
PERMISSIONS_POLICY = "camera=(self), microphone=(), geolocation=(), payment=(), usb=()"
# answers that carry the photo or its result
NO_STORE_PATHS = ("/predict", "/api/v1/predict", "/explain", "/api/v1/explain")


def is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIXES)


class SecurityHeaders:
    """Add nosniff/referrer headers everywhere, a strict CSP on pages, no-store on results."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                ctype = dict(headers).get(b"content-type", b"")
                headers += [(b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY"),
                            (b"permissions-policy", PERMISSIONS_POLICY.encode())]
                if ctype.startswith(b"text/html") and not path.startswith(("/docs", "/redoc")):
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                if path in NO_STORE_PATHS:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadAsGet:
    """Answer HEAD on every GET route as GET would, without the body (RFC 9110 9.3.2)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


def create_app(settings: Settings | None = None, predictor: Predictor | None = None,
               clinic: ClinicSettings | None = None) -> FastAPI:
    """Build the app. The Predictor is loaded in the lifespan unless one is handed in.
    With `clinic`, clinic mode's accounts, cases and case API are mounted too."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded_here = app.state.predictor is None
        if loaded_here:
            app.state.predictor = await run_in_threadpool(
                lambda: Predictor(settings.model_dir, **settings.predictor_options()))
        # every upload is decoded in a worker process with hard limits
        pool = DecodePool(settings.decode_workers, settings.sandbox_limits())
        app.state.predictor.decoder = app.state.decode_pool = pool
        try:
            yield
        finally:
            app.state.predictor.decoder = None
            pool.close()
            if loaded_here:
                app.state.predictor = None

    app = FastAPI(
        title="kulit",
        version=kulit.__version__,
        description="Skin-condition photo classifier that says how sure it is. "
                    "**Not a diagnosis.**",
        lifespan=lifespan,
        docs_url=None,  # routes_pages serves /docs with the vendored Swagger UI (no CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.include_router(routes_api.router)
    app.include_router(routes_pages.router)
    app.include_router(routes_explain.router)
    app.include_router(routes_device.router)
    if clinic is not None:  # opt-in; the public mode never imports kulit.clinic
        from kulit.clinic.web import mount

        mount(app, clinic)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(UploadGuard, max_uploads=settings.max_concurrent_uploads,
                       timeout=settings.upload_timeout_s,
                       per_client=settings.max_uploads_per_client,
                       min_rate=settings.min_upload_kb_s * 1024, grace=settings.upload_grace_s,
                       queue=settings.upload_queue_s)
    app.add_middleware(SecurityHeaders)
    # pages are mostly text and base64 JPEGs: compressed, a result page fits a phone's budget
    app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=6)
    app.add_middleware(HeadAsGet)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        if not is_api(request):
            return await request_validation_exception_handler(request, exc)
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
        return error_response("validation_error", "; ".join(parts) or "invalid request", 422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_api(request):
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
            return error_response(code, str(exc.detail), exc.status_code, exc.headers)
        if exc.status_code == 404 and request.app.state.predictor is not None:
            s: Settings = request.app.state.settings
            lang = resolve_lang(request, s.default_lang)
            return render(request, "error.html", lang, s, request.app.state.predictor,
                                       status=404)
        return await http_exception_handler(request, exc)

    return app
