"""Serving settings from the environment (KULIT_MODEL_DIR, KULIT_MAX_UPLOAD_MB, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kulit.config import DEFAULT_MODEL_DIR, TOP_K
from kulit.serving.decode_sandbox import SandboxLimits


class Settings(BaseSettings):
    """What the server needs to know; reached through a dependency so tests can override it."""

    model_config = SettingsConfigDict(env_prefix="KULIT_", protected_namespaces=())

    model_dir: Path = Path(DEFAULT_MODEL_DIR)  # model.onnx + card.json (+ head.npz)
    max_upload_mb: Annotated[float, Field(gt=0)] = 10.0  # larger uploads: 413, read no further
    top_k: Annotated[int, Field(ge=1, le=20)] = TOP_K  # conditions shown / returned by default
    default_lang: Literal["id", "en"] = "id"  # page language without ?lang= or a cookie
    device: bool = True  # offer the on-device check when the model dir has model-web.onnx
    # Under load: uploads (POSTs) in flight at once, beyond which one waits for a slot (its
    # body unread) up to upload_queue_s, then 503; and from one client address (then 429). A
    # body must arrive at no less than min_upload_kb_s after a grace of upload_grace_s, and
    # whole within upload_timeout_s plus its declared size at that rate (then 408); request
    # headers within header_timeout_s.
    max_concurrent_uploads: Annotated[int, Field(ge=1)] = 16
    upload_queue_s: Annotated[float, Field(ge=0)] = 10.0  # wait for a slot this long, then 503
    max_uploads_per_client: Annotated[int, Field(ge=1)] = 4
    upload_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    upload_grace_s: Annotated[float, Field(gt=0)] = 5.0
    min_upload_kb_s: Annotated[float, Field(gt=0)] = 20.0
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    # Every upload is decoded in one of decode_workers processes (kulit.serving.decode_sandbox)
    # with an address-space limit, a CPU budget and a wall-clock deadline per decode.
    decode_workers: Annotated[int, Field(ge=1, le=16)] = 2
    decode_memory_mb: Annotated[int, Field(ge=128)] = 512
    decode_cpu_s: Annotated[int, Field(ge=1)] = 2
    decode_deadline_s: Annotated[float, Field(gt=0)] = 1.25
    # ONNX Runtime, chosen by measurement on 2 cores (docs/results.md, Speed): one thread per
    # run behind a cap of 2 runs, idle threads not spinning
    int8: bool = True  # serve the card's int8 file when it passed its check
    threads: Annotated[int, Field(ge=1, le=64)] = 1  # intra-op threads per run
    max_concurrent_runs: Annotated[int, Field(ge=1, le=64)] = 2  # simultaneous runs
    allow_spinning: bool = False  # idle ORT threads busy-wait (steals CPU from other runs)

    def predictor_options(self) -> dict[str, Any]:
        """Keyword arguments for `Predictor(model_dir, **...)`."""
        return {"threads": self.threads, "max_concurrent": self.max_concurrent_runs,
                "int8": self.int8, "allow_spinning": self.allow_spinning}

    def sandbox_limits(self) -> SandboxLimits:
        return SandboxLimits(memory_mb=self.decode_memory_mb, cpu_s=self.decode_cpu_s,
                             deadline_s=self.decode_deadline_s)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
