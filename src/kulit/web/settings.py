"""Serving settings from the environment (KULIT_MODEL_DIR, KULIT_MAX_UPLOAD_MB, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

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

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
