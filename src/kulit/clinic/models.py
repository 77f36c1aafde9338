"""The clinic's tables (SQLAlchemy 2 declarative). Alembic's migrations create them; this
module is their description for queries and for `alembic revision --autogenerate`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Clinic(Base):
    __tablename__ = "clinics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # health_worker | reviewer | admin
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"))
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, PHC string
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # in a row
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A bearer token; only its sha256 is kept, so a leaked database grants nothing."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LoginSession(Base):
    """A page login: the cookie holds the id, the table its sha256 and the form CSRF token."""

    __tablename__ = "login_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Case(Base):
    """One consented check: the photo (a file under a random name), kulit's answer and what
    the health worker and the reviewer added. No names, no ID numbers."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex, not a counter
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    photo_name: Mapped[str] = mapped_column(String(64), unique=True)
    photo_sha256: Mapped[str] = mapped_column(String(64))
    # kulit's answer: the whole JSON as the API gave it, plus columns to filter on
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32))
    label: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column()
    urgency: Mapped[str | None] = mapped_column(String(32))  # when the answer carries one
    model_name: Mapped[str] = mapped_column(String(120))
    model_sha256: Mapped[str] = mapped_column(String(64))
    # what the person consented to, and when
    consent: Mapped[bool] = mapped_column(Boolean)
    research_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_text_sha256: Mapped[str] = mapped_column(String(64))  # the text shown, hashed
    body_site: Mapped[str | None] = mapped_column(String(32))
    age_band: Mapped[str | None] = mapped_column(String(16))
    sex: Mapped[str | None] = mapped_column(String(16))
    referral: Mapped[bool | None] = mapped_column(Boolean)  # rujukan
    diagnosis: Mapped[str | None] = mapped_column(String(220))  # a class, "other: ...", unsure
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_cases_clinic_created", "clinic_id", "created_at"),
        Index("ix_cases_created_by", "created_by"),
    )


class AuditEvent(Base):
    """Who saw, changed, exported or deleted what. Rows are only ever inserted: the migration
    adds triggers that refuse UPDATE and DELETE."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64))  # user name, "cli" or "system"
    clinic_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_audit_at", "at"),)
