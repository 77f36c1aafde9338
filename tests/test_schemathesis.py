"""Schemathesis over every operation of the OpenAPI schema: no input gives a 5xx.

Bounded here (a few examples per operation); `make schemathesis` runs it with
KULIT_FUZZ_EXAMPLES=300.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from kulit.serving.predict import Predictor  # noqa: E402
from kulit.web.app import create_app  # noqa: E402
from kulit.web.settings import Settings  # noqa: E402
from tests.conftest import write_onnx_model_dir  # noqa: E402

EXAMPLES = int(os.environ.get("KULIT_FUZZ_EXAMPLES", "8"))
# schemathesis parametrizes at import time, before fixtures exist: the model is built here
_MODEL = write_onnx_model_dir(Path(tempfile.mkdtemp(prefix="kulit-st-")) / "m",
                              ["Chickenpox", "Herpes", "Melanoma"])
APP = create_app(Settings(model_dir=_MODEL), predictor=Predictor(_MODEL))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
