"""How uvicorn runs kulit's app: no Server header, and a deadline on request headers.

uvicorn times out idle keep-alive connections but not a client that sends its request headers
a byte at a time; `HeaderTimeoutProtocol` closes a connection whose request line and headers
are not complete within `header_timeout` seconds of its opening (or of the previous response).
The body's pace is UploadGuard's job (kulit.web.upload).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from kulit.web.settings import Settings


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol plus a request-header deadline."""

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        # IDLE: no complete request line and headers yet (SEND_BODY/DONE once they came)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run / uvicorn.Config (kulit serve, the loopback tests)."""
    protocol = type("KulitH11Protocol", (HeaderTimeoutProtocol,),
                    {"header_timeout": settings.header_timeout_s})
    return {"http": protocol, "server_header": False}
