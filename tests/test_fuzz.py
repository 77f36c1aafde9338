"""Fuzzing the two parsers that read strangers' bytes: the image decoder and the multipart reader.

Bounded here (`make test`); `make fuzz` runs the same properties with KULIT_FUZZ_EXAMPLES=5000.
The promise under test: any input gives a result or the one error type (ImageError,
UploadRejected), never anything else, and the server never answers 5xx.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from kulit.errors import ImageError
from kulit.serving.preprocess import Preprocessing, load_and_preprocess
from tests.conftest import image_bytes, make_image
from tests.hostile_files import bad_ihdr, png, ztxt_bomb

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("KULIT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get(
    "KULIT_FUZZ_EXAMPLES"), suppress_health_check=list(HealthCheck))


def seeds() -> list[bytes]:
    img = make_image(0, (40, 30))
    rgba = img.convert("RGBA")
    return [image_bytes(img, "JPEG"), image_bytes(img, "PNG"), image_bytes(rgba, "PNG"),
            image_bytes(img, "WEBP"), image_bytes(img, "BMP"),
            image_bytes(img.convert("P"), "PNG"), image_bytes(img.convert("L"), "PNG"),
            image_bytes(img, "JPEG", progressive=True), png(300, 15), bad_ihdr(),
            ztxt_bomb()]


SEEDS = seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed file with a few bytes overwritten, inserted, deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate", "int"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i: i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        else:  # a big-endian int where sizes and lengths live
            data[i: i + 4] = draw(st.sampled_from(
                [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff",
                 b"\x00\x01\x00\x00", b"\x00\x00\x9c\x40"]))
    return bytes(data)


@FUZZ
@given(mutated())
def test_the_decoder_gives_a_tensor_or_an_image_error(data: bytes) -> None:
    try:
        _, x = load_and_preprocess(data, Preprocessing(input_size=32))
    except ImageError:
        return
    assert x.shape == (3, 32, 32)


@FUZZ
@given(st.binary(max_size=512))
def test_the_decoder_on_random_bytes(data: bytes) -> None:
    try:
        load_and_preprocess(data, Preprocessing(input_size=32))
    except ImageError:
        pass


# The multipart reader ------------------------------------------------------------------------

fastapi = pytest.importorskip("fastapi")
from starlette.requests import Request  # noqa: E402

from kulit.web.upload import UploadRejected, read_file_field  # noqa: E402

PHOTO = image_bytes(make_image(1, (20, 20)), "PNG")
TOKENS = [b"--", b"\r\n", b"\r\n\r\n", b"Content-Disposition: form-data; ", b'name="image"',
          b'; filename="a.png"', b"Content-Type: image/png", b'name="other"', b";", b"=",
          b'"', b"\n", b"\x00", PHOTO[:40], PHOTO]


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, bytes, list[int]]:
    """(content type, body, chunk sizes): a well-formed upload, mangled a little or a lot."""
    boundary = draw(st.one_of(st.just(b"xYz"), st.binary(min_size=0, max_size=300),
                              st.text("ab-_'()+,./:=? ", min_size=1, max_size=300).map(
                                  str.encode)))
    good = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"image\"; "
            b"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n" + PHOTO + b"\r\n--"
            + boundary + b"--\r\n")
    body = bytearray(draw(st.sampled_from([good, b""])))
    for _ in range(draw(st.integers(0, 5))):
        i = draw(st.integers(0, len(body)))
        body[i:i] = draw(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=20)))
        if draw(st.booleans()) and body:
            del body[draw(st.integers(0, len(body) - 1)):][: draw(st.integers(0, 8))]
    ctype = draw(st.sampled_from([b"multipart/form-data; boundary=" + boundary,
                                  b'multipart/form-data; boundary="' + boundary + b'"',
                                  b"multipart/form-data", b"text/plain", b""]))
    sizes = draw(st.lists(st.integers(1, 64), min_size=1, max_size=8))
    return ctype, bytes(body), sizes


def read(ctype: bytes, body: bytes, sizes: list[int], limit: int = 4096) -> bytes:
    chunks, i = [], 0
    while i < len(body):
        n = sizes[len(chunks) % len(sizes)]
        chunks.append(body[i: i + n])
        i += n
    messages = iter([{"type": "http.request", "body": c, "more_body": True} for c in chunks]
                    + [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict:
        return next(messages, {"type": "http.disconnect"})

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [
        (b"content-type", ctype), (b"content-length", str(len(body)).encode())]}
    return asyncio.run(read_file_field(Request(scope, receive), "image", limit))


@FUZZ
@given(multipart())
def test_the_multipart_reader_gives_the_photo_or_an_upload_error(case) -> None:
    try:
        got = read(*case)
    except UploadRejected as e:
        assert e.code in ("missing_field", "too_large", "bad_request")
        return
    assert 0 < len(got) <= 4096


def test_the_multipart_reader_reads_a_clean_upload() -> None:
    body = (b"--xYz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + PHOTO + b"\r\n--xYz--\r\n")
    assert read(b"multipart/form-data; boundary=xYz", body, [7]) == PHOTO


# The whole server ----------------------------------------------------------------------------

from fastapi.testclient import TestClient  # noqa: E402


@FUZZ
@given(data=mutated(), url=st.sampled_from(["/api/v1/predict", "/predict", "/api/v1/explain",
                                            "/explain"]))
def test_the_server_never_answers_5xx_to_a_mutated_photo(client: TestClient, data: bytes,
                                                         url: str) -> None:
    r = client.post(url, files={"image": ("x.jpg", data, "image/jpeg")})
    assert r.status_code < 500, (url, r.status_code, r.text[:200])


@FUZZ
@given(multipart())
def test_the_server_never_answers_5xx_to_a_mangled_body(client: TestClient, case) -> None:
    ctype, body, _ = case
    r = client.post("/api/v1/predict", content=body, headers={b"content-type": ctype})
    assert r.status_code < 500, r.text[:200]


def test_seeds_decode() -> None:
    """Every accepted-format seed decodes; the BMP seed is refused by format (phones never make
    BMP), with the message naming the accepted formats."""
    for i, data in enumerate(SEEDS[:8]):
        if i == 4:  # BMP
            with pytest.raises(ImageError, match="JPEG, PNG, WebP or HEIC"):
                load_and_preprocess(data, Preprocessing(input_size=32))
            continue
        _, x = load_and_preprocess(data, Preprocessing(input_size=32))
        assert x.shape == (3, 32, 32)
