"""One upload -> one stored case: kulit's answer on the shrunk photo, then the row and the
file. Shared by the API and the pages; run in the threadpool."""

from __future__ import annotations

import json
from typing import Any, cast

from kulit.clinic.auth import Actor
from kulit.clinic.models import Case
from kulit.clinic.store import CaseFields, CaseStore
from kulit.errors import ImageError
from kulit.serving.answer import Answer
from kulit.serving.model_dir import file_sha256
from kulit.serving.predict import Predictor
from kulit.web.inference import Analysis, analyse, encode_page_image


def answer_record(ans: Answer) -> dict[str, Any]:
    """The answer as stored: every field `Answer.to_dict` gives (status, shortlist, urgency
    where the model has them) and the advice key, as plain JSON."""
    record = {**ans.to_dict(), "advice": ans.advice}
    return cast("dict[str, Any]", json.loads(json.dumps(record, default=str)))


def save_case(store: CaseStore, predictor: Predictor, actor: Actor, data: bytes,
              fields: CaseFields, top_k: int) -> tuple[Case, Analysis]:
    """Analyse the upload, keep the crop the model saw (a JPEG of a few tens of KB, never the
    original file) with the answer on it. Raises ImageError for an unusable photo."""
    result = analyse(predictor, data, top_k, False)
    if result.prediction.image is None:  # the Predictor always returns its crop
        raise ImageError("upload: no photo crop to keep", "unreadable")
    photo = encode_page_image(result.prediction.image)
    case = store.create(actor, photo, answer_record(result.answer), predictor.model_id,
                        file_sha256(predictor.onnx_path), fields)
    store.maybe_purge()
    return case, result
