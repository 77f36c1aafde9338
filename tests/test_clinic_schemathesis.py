"""Schemathesis over the case API (/api/v1/cases...), as a reviewer with a bearer token: no
input gives a 5xx, and no answer breaks its documented schema. SQLite in a temporary folder.

Bounded here (a few examples per operation); `make schemathesis` runs it with
KULIT_FUZZ_EXAMPLES=300.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("sqlalchemy")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

from kulit.clinic.auth import hash_password, issue_token  # noqa: E402
from kulit.clinic.config import ClinicSettings  # noqa: E402
from kulit.clinic.store import add_user, open_store  # noqa: E402
from kulit.serving.predict import Predictor  # noqa: E402
from kulit.web.app import create_app  # noqa: E402
from kulit.web.settings import Settings  # noqa: E402
from tests.conftest import write_onnx_model_dir  # noqa: E402

EXAMPLES = int(os.environ.get("KULIT_FUZZ_EXAMPLES", "8"))
# schemathesis parametrizes at import time, before fixtures exist: model and database here
_ROOT = Path(tempfile.mkdtemp(prefix="kulit-clinic-st-"))
_MODEL = write_onnx_model_dir(_ROOT / "m", ["Chickenpox", "Herpes", "Melanoma", "Psoriasis"])
_CLINIC = ClinicSettings(database_url=f"sqlite:///{_ROOT}/clinic.db", photo_dir=_ROOT / "p")
with open_store(_CLINIC).session() as _db:
    TOKEN = issue_token(_db, add_user(_db, "rev", "reviewer", "Puskesmas",
                                      hash_password("schemathesis-pw")))
APP = create_app(Settings(model_dir=_MODEL), predictor=Predictor(_MODEL), clinic=_CLINIC)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).include(
    path_regex=r"^/api/v1/cases")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_case_api_never_answers_5xx(case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                             response_schema_conformance])
