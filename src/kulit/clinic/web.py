"""Clinic mode in the web app: `create_app(..., clinic=ClinicSettings())` calls `mount`, which
opens the database (migrating it to the newest schema), expires old cases, and adds the
case API, the clinic pages and their error handling. Without it none of this exists."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kulit.clinic import api, pages
from kulit.clinic.auth import AddressLimiter
from kulit.clinic.config import ClinicSettings
from kulit.clinic.store import CaseStore, ClinicError, open_store
from kulit.web.errors import error_response

PRIVATE_PREFIXES = ("/clinic", "/api/v1/cases")


class NoStore:
    """Cases are personal health data: no cache (browser or proxy) keeps a clinic response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PRIVATE_PREFIXES):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, send_no_store)


def mount(app: FastAPI, settings: ClinicSettings, store: CaseStore | None = None) -> None:
    store = store or open_store(settings)
    store.purge_expired()
    app.state.clinic_settings = settings
    app.state.clinic_store = store
    app.state.clinic_limiter = AddressLimiter(settings.max_failures_per_address,
                                              settings.lockout_minutes * 60)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_middleware(NoStore)

    @app.exception_handler(ClinicError)
    async def on_clinic_error(request: Request, exc: ClinicError) -> Response:
        if request.url.path.startswith("/api/"):
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return error_response(exc.code, exc.message, exc.status, headers)
        return pages.error_page(request, exc)

    @app.exception_handler(pages.LoginNeeded)
    async def on_login_needed(request: Request, exc: pages.LoginNeeded) -> Response:
        return pages.to_login(request)
