"""Clinic-mode settings from the environment (KULIT_CLINIC_DATABASE_URL, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The embedded default: one SQLite file, photos in a folder beside it.
DEFAULT_DATABASE_URL = "sqlite:///kulit-clinic/clinic.db"


class ClinicSettings(BaseSettings):
    """Where cases live and the security knobs; tests hand one to `create_app`."""

    model_config = SettingsConfigDict(env_prefix="KULIT_CLINIC_")

    database_url: str = DEFAULT_DATABASE_URL  # SQLite file or postgresql://user@host/db
    # Case photos, each under a random name; None = `<name>-photos/` beside a SQLite file
    # <name>.db, else ./kulit-clinic/photos. Never under a static route: only the case's
    # photo routes read it.
    photo_dir: Path | None = None
    # Cases older than this many days are deleted with their photo (0 = kept until deleted).
    retention_days: Annotated[int, Field(ge=0)] = 365
    session_hours: Annotated[float, Field(gt=0)] = 12.0  # a login lasts this long
    max_login_failures: Annotated[int, Field(ge=1)] = 5  # wrong passwords in a row, then ...
    lockout_minutes: Annotated[float, Field(gt=0)] = 15.0  # ... the account is locked this long
    # wrong logins from one address within lockout_minutes (any account), then 429
    max_failures_per_address: Annotated[int, Field(ge=1)] = 20
    # Secure on the session cookie: None = when the request came over HTTPS (uvicorn
    # --proxy-headers behind a TLS proxy), True = always.
    secure_cookies: bool | None = None

    def resolved_photo_dir(self) -> Path:
        if self.photo_dir is not None:
            return Path(self.photo_dir)
        from kulit.clinic.db import sqlite_path

        db_file = sqlite_path(self.database_url)
        if db_file is not None:
            return db_file.with_name(f"{db_file.stem}-photos")
        return Path("kulit-clinic") / "photos"
