"""Serving settings from the environment (KULIT_MODEL_DIR, KULIT_MAX_UPLOAD_MB, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """What the server needs to know; reached through a dependency so tests can override it."""

    model_config = SettingsConfigDict(env_prefix="KULIT_", protected_namespaces=())

    model_dir: Path = Path("models/kulit-skin8")  # model.onnx + card.json (+ head.npz)
    max_upload_mb: Annotated[float, Field(gt=0)] = 10.0  # larger uploads: 413, read no further
    top_k: Annotated[int, Field(ge=1, le=20)] = 3  # conditions shown / returned by default
    default_lang: Literal["id", "en"] = "id"  # page language without ?lang= or a cookie
    device: bool = True  # offer the on-device check when the model dir has model-web.onnx
    # Under load: uploads (POSTs) in flight at once, beyond which the answer is 503 at once;
    # seconds a client may take to send its whole body (then 408); decodes + preprocessing at
    # once (a 40-megapixel decode is the memory peak, ~0.3 GB with its copies).
    max_concurrent_uploads: Annotated[int, Field(ge=1)] = 16
    upload_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    max_concurrent_decodes: Annotated[int, Field(ge=1)] = 1
    # ONNX Runtime, chosen by measurement on 2 cores (issue 15): one thread per run behind a cap
    # of 2 runs, idle threads not spinning (+26-37% throughput at concurrency 16)
    int8: bool = True  # serve the card's int8 file when it passed its check
    threads: Annotated[int, Field(ge=1, le=64)] = 1  # intra-op threads per run
    max_concurrent_runs: Annotated[int, Field(ge=1, le=64)] = 2  # simultaneous runs
    allow_spinning: bool = False  # idle ORT threads busy-wait (steals CPU from other runs)

    def predictor_options(self) -> dict[str, Any]:
        """Keyword arguments for `Predictor(model_dir, **...)`."""
        return {"threads": self.threads, "max_concurrent": self.max_concurrent_runs,
                "int8": self.int8, "allow_spinning": self.allow_spinning}

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
