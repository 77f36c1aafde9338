"""The API's one error shape and the HTTP status of each error code, shared by the routers."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

from kulit.web.schemas import ErrorDetail, ErrorResponse

# HTTP status per error code; anything else a user causes is a 400.
STATUS = {
    "not_image": 415,
    "unreadable": 400,
    "too_small": 400,
    "too_large": 413,
    "missing_field": 422,
    "validation_error": 422,
    "bad_request": 400,
    "too_narrow": 400,
    "not_found": 404,
    "method_not_allowed": 405,
    "timeout": 408,
    "busy": 503,
    "decode_memory": 413,  # the decode worker's memory limit (kulit.serving.decode_sandbox)
    "decode_timeout": 400,  # its CPU or wall-clock limit
    "decode_unavailable": 503,
    "too_many_uploads": 429,  # one client's uploads at once (web.upload.UploadGuard)
}


def error_response(code: str, message: str, status: int | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The API's one error shape: {"error": {"code", "message"}}."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status or STATUS.get(code, 400),
                        headers=headers)


def status_of(code: str) -> int:
    return STATUS.get(code, 400)
