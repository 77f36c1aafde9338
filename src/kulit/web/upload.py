"""Read one file field of a multipart upload into memory, never more than the size limit.

Starlette's form parser spools files over 1 MB to a temporary file on disk and reads the whole
body before the endpoint runs; kulit promises photos never touch the disk, so it streams the
body through python-multipart itself and keeps at most `limit + 1` bytes of the photo.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kulit.web.errors import error_response

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Room for the multipart boundaries, part headers and small extra fields around the photo.
OVERHEAD = 64 * 1024
# Past the limit the rest of the body is read and dropped (so browsers get the error page rather
# than a reset connection), up to this many bytes more; beyond that the server stops reading.
DRAIN_MAX = 32 * 1024 * 1024


class UploadRejected(Exception):
    """An upload that cannot be used: code is missing_field | too_large | bad_request."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Part:
    name: str = ""
    is_target: bool = False
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""
    data: bytearray = field(default_factory=bytearray)


# Other fields are kept only when asked for (clinic mode's case form), each cut to this size.
FIELD_MAX = 1024


@dataclass
class _FieldReader:
    """python-multipart's callbacks: keep field `name`'s bytes (at most limit + 1, enough to
    tell it is too big) and, when asked, the other fields' text."""

    name: str
    limit: int
    fields: dict[str, str] | None
    found: list[bytes] = field(default_factory=list)
    open_part: bool = False  # a target part started and has not ended: a truncated body
    over: bool = False  # the photo, or the whole body, passed its limit
    part: _Part = field(default_factory=_Part)

    def callbacks(self) -> MultipartCallbacks:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished,
                "on_part_data": self.on_part_data, "on_part_end": self.on_part_end}

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.part.header_name.lower() == b"content-disposition":
            self.part.disposition = self.part.header_value
        self.part.header_name = self.part.header_value = b""

    def on_headers_finished(self) -> None:
        _, opts = parse_options_header(self.part.disposition)
        self.part.name = opts.get(b"name", b"").decode("utf-8", "replace")
        # A form may hold two inputs named `name` (file picker, camera): the first non-empty wins.
        self.part.is_target = self.part.name == self.name and not self.found
        self.open_part = self.part.is_target

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if not part.is_target:
            if self.fields is not None and len(part.data) < FIELD_MAX:
                part.data += data[start:min(end, start + FIELD_MAX - len(part.data))]
            return  # other fields are not kept unless asked; the body cap bounds their size
        if self.over:
            return
        room = self.limit + 1 - len(part.data)
        part.data += data[start:min(end, start + room)]
        if len(part.data) > self.limit:
            self.over = True
            part.data = bytearray()

    def on_part_end(self) -> None:
        part = self.part
        if part.is_target and not self.over and part.data:
            self.found.append(bytes(part.data))
        elif not part.is_target and self.fields is not None and part.name not in self.fields:
            self.fields[part.name] = bytes(part.data).decode("utf-8", "replace")
        part.data = bytearray()
        self.open_part = False


def _boundary(request: Request, name: str) -> bytes:
    """The multipart boundary of the request; UploadRejected if it is not multipart."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UploadRejected(
            "missing_field", f"send the photo as multipart/form-data with a file field '{name}'"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadRejected("bad_request", "multipart body without a boundary")
    return boundary


async def _feed(request: Request, boundary: bytes, reader: _FieldReader, max_body: int) -> bool:
    """Stream the body through the parser, at most `max_body` bytes (then drain up to
    DRAIN_MAX more, so a browser gets the error page); False if the multipart is broken."""
    try:  # python-multipart refuses boundaries over 256 bytes (RFC 2046 allows 70)
        parser = MultipartParser(boundary, reader.callbacks())
    except (FormParserError, ValueError):
        return False
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                reader.over = True
            if reader.over:
                if total > max_body + DRAIN_MAX:
                    break
                continue
            try:
                parser.write(chunk)
            except FormParserError:
                return False
        if not reader.over:
            parser.finalize()
    except FormParserError:
        return False
    except ClientDisconnect:
        raise UploadRejected("bad_request", "the upload was interrupted") from None
    return True


async def read_file_field(request: Request, name: str, limit: int,
                          fields: dict[str, str] | None = None) -> bytes:
    """The bytes of multipart field `name`; UploadRejected if absent, empty, too big or garbled.

    With `fields`, the other parts' text (first FIELD_MAX bytes, first of a name) lands there.
    """
    boundary = _boundary(request, name)
    max_body = limit + OVERHEAD
    too_big_msg = f"upload too large (limit {limit / 1024 / 1024:g} MB)"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body + DRAIN_MAX:
        raise UploadRejected("too_large", too_big_msg)  # hopeless: do not read it at all
    reader = _FieldReader(name, limit, fields)
    ok = await _feed(request, boundary, reader, max_body)
    if reader.over:
        raise UploadRejected("too_large", too_big_msg)
    if not ok or reader.open_part:
        raise UploadRejected("bad_request", "malformed multipart body")
    if not reader.found:
        raise UploadRejected("missing_field", f"no photo in the file field '{name}'")
    return reader.found[0]


class UploadTimeout(Exception):
    """The client sent its body too slowly (see UploadGuard)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UploadGuard:
    """ASGI middleware on every POST (each is an upload), against slow and greedy clients.

    - at most `max_uploads` in flight; the next ones wait up to `queue` seconds for a slot,
      their body unread (uvicorn stops reading a connection whose app is not receiving), then
      get 503; and at most `per_client` from one client address (then 429 at once), so a few
      slow clients cannot take every slot;
    - the body must keep up a minimum rate: after `grace` seconds, at least `min_rate` bytes a
      second on average; and it must be complete within `timeout` + its declared size at that
      rate (408 and the connection closed). A 1-byte-a-second upload is cut off after
      `grace` s, a real 10 MB photo on a slow phone line still gets through.
    """

    def __init__(self, app: ASGIApp, max_uploads: int, timeout: float,
                 per_client: int | None = None, min_rate: float = 20 * 1024,
                 grace: float = 5.0, queue: float = 0.0) -> None:
        self.app = app
        self.max_uploads = max_uploads
        self.per_client = per_client or max_uploads
        self.timeout = timeout
        self.min_rate = min_rate
        self.grace = grace
        self.queue = queue
        self.in_flight = 0
        self._slots: asyncio.Semaphore | None = None
        self.by_client: dict[str, int] = {}

    def body_deadline(self, declared: int | None) -> float:
        """Seconds the whole body may take: the timeout plus the declared size at min_rate."""
        return self.timeout + (declared or 0) / self.min_rate

    async def _take_slot(self) -> bool:
        """A slot among max_uploads, waiting up to `queue` seconds; False if none came."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_uploads)
        if self.queue <= 0:
            if self._slots.locked():
                return False
            await self._slots.acquire()
            return True
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue)
        except asyncio.TimeoutError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        if self.by_client.get(client, 0) >= self.per_client:
            many = error_response("too_many_uploads", f"at most {self.per_client} uploads at "
                                  "once from one address; try again when one has finished",
                                  headers={"Retry-After": "1"})
            await many(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), b"")
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.body_deadline(int(declared) if declared.isdigit() else None)
        received = 0
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done, received
            if body_done:  # later receives only wait for a disconnect: no deadline
                return await receive()
            # the next chunk must come before the average rate falls under min_rate
            by_rate = start + self.grace + received / self.min_rate
            remaining = min(deadline, by_rate) - loop.time()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except asyncio.TimeoutError:
                why = (f"the upload took longer than {self.body_deadline(received):g} s"
                       if loop.time() >= deadline else
                       f"the upload was slower than {self.min_rate / 1024:g} KB/s")
                raise UploadTimeout(why) from None
            received += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.by_client[client] = self.by_client.get(client, 0) + 1
        try:
            if not await self._take_slot():
                busy = error_response("busy", "the server is busy; try again in a moment",
                                      headers={"Retry-After": "1"})
                await busy(scope, receive, send)
                return
            start = loop.time()  # the body's clock starts when it may be read
            deadline = start + self.body_deadline(int(declared) if declared.isdigit() else None)
            self.in_flight += 1
            try:
                await self.app(scope, timed_receive, tracked_send)
            finally:
                self.in_flight -= 1
                assert self._slots is not None
                self._slots.release()
        except UploadTimeout as e:
            if started:
                raise
            slow = error_response("timeout", e.message, headers={"Connection": "close"})
            await slow(scope, receive, send)
        finally:
            left = self.by_client[client] - 1
            if left:
                self.by_client[client] = left
            else:
                del self.by_client[client]
