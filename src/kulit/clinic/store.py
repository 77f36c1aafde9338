"""Cases: create, list, read, review, delete, expire, with every read and change scoped to
the actor and written to the audit log in the same transaction.

Scope: a health worker sees the cases they created; a reviewer or an admin every case of
their clinic. A case outside the actor's scope is "not found" (its existence is not told);
an action the actor's role may not take is "forbidden".
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from kulit.clinic import vocab
from kulit.clinic.auth import Actor
from kulit.clinic.config import ClinicSettings
from kulit.clinic.db import make_engine, migrate, now, session_factory
from kulit.clinic.models import AuditEvent, Case, Clinic, User
from kulit.errors import KulitError

PHOTO_SUFFIX = ".jpg"
LIST_MAX = 500  # cases per page of a list, at most


class ClinicError(KulitError):
    """An error with an HTTP status: not_found 404, forbidden 403, validation_error 422."""

    status = 400

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message, code)
        self.status = status


def not_found(case_id: str) -> ClinicError:
    return ClinicError(f"no case {case_id}", "not_found", 404)


def forbidden(message: str) -> ClinicError:
    return ClinicError(message, "forbidden", 403)


def invalid(message: str) -> ClinicError:
    return ClinicError(message, "validation_error", 422)


@dataclass(frozen=True)
class CaseFields:
    """What the person (or the health worker, for them) filled in beside the photo."""

    consent: bool
    research_consent: bool = False
    body_site: str | None = None
    age_band: str | None = None
    sex: str | None = None
    referral: bool | None = None

    @classmethod
    def parse(cls, form: dict[str, str]) -> CaseFields:
        """From form or multipart text fields; ClinicError 422 on a value outside its list,
        and when consent is not given."""
        try:
            consent = vocab.parse_bool("consent", form.get("consent"))
            fields = cls(
                consent=bool(consent),
                research_consent=bool(vocab.parse_bool("research_consent",
                                                       form.get("research_consent"))),
                body_site=vocab.check_choice("body_site", form.get("body_site"),
                                             vocab.BODY_SITES),
                age_band=vocab.check_choice("age_band", form.get("age_band"), vocab.AGE_BANDS),
                sex=vocab.check_choice("sex", form.get("sex"), vocab.SEXES),
                referral=vocab.parse_bool("referral", form.get("referral")),
            )
        except vocab.FieldError as e:
            raise invalid(str(e)) from None
        if not fields.consent:
            raise ClinicError("consent: a case is saved only with the person's consent "
                              "(consent=true)", "consent_required", 422)
        return fields


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    diagnosis: str | None = None  # a class, "unsure", "other", or "none" (not reviewed)
    date_from: date | None = None
    date_to: date | None = None  # inclusive


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=timezone.utc)


class CaseStore:
    """The cases of one database and photo folder."""

    def __init__(self, engine: Engine, photo_dir: Path, retention_days: int = 0) -> None:
        self.engine = engine
        self.photo_dir = Path(photo_dir)
        self.retention_days = retention_days
        self._sessions: sessionmaker[Session] = session_factory(engine)
        self.last_purge = 0.0

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as db, db.begin():
            yield db

    # ------------------------------------------------------------------- photos

    def photo_path(self, case: Case) -> Path:
        return self.photo_dir / case.photo_name

    def _write_photo(self, data: bytes) -> str:
        self.photo_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = secrets.token_hex(16) + PHOTO_SUFFIX
        path = self.photo_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return name

    def _remove_photo(self, name: str) -> None:
        (self.photo_dir / name).unlink(missing_ok=True)

    def read_photo(self, actor: Actor, case_id: str) -> bytes:
        with self.session() as db:
            case = self._scoped(db, actor, case_id)
            audit(db, actor, "view_photo", case)
            path = self.photo_path(case)
        return path.read_bytes()

    # ------------------------------------------------------------------- cases

    def create(self, actor: Actor, photo: bytes, answer: dict[str, Any], model_name: str,
               model_sha256: str, fields: CaseFields) -> Case:
        """Store the photo under a random name and the case row; one or neither."""
        if actor.role not in vocab.CREATE_ROLES:
            raise forbidden(f"a {actor.role} does not save cases")
        if not fields.consent:  # CaseFields.parse refuses this; a library caller too
            raise ClinicError("consent: required", "consent_required", 422)
        name = self._write_photo(photo)
        t = now()
        case = Case(
            id=secrets.token_hex(16), clinic_id=actor.clinic_id, created_by=actor.id,
            created_at=t, updated_at=t, photo_name=name,
            photo_sha256=hashlib.sha256(photo).hexdigest(), answer=answer,
            status=str(answer.get("status")), label=answer.get("label"),
            confidence=float(answer.get("confidence") or 0.0),
            urgency=answer.get("urgency") if isinstance(answer.get("urgency"), str) else None,
            model_name=model_name, model_sha256=model_sha256,
            consent=True, research_consent=fields.research_consent,
            consent_text_sha256=vocab.consent_text_sha256(), body_site=fields.body_site,
            age_band=fields.age_band, sex=fields.sex, referral=fields.referral,
        )
        try:
            with self.session() as db:
                db.add(case)
                audit(db, actor, "create", case,
                      f"research_consent={fields.research_consent}")
        except BaseException:
            self._remove_photo(name)
            raise
        return case

    def _scope(self, actor: Actor, query: Select[Any]) -> Select[Any]:
        query = query.where(Case.clinic_id == actor.clinic_id)
        if actor.role not in vocab.WIDE_ROLES:
            query = query.where(Case.created_by == actor.id)
        return query

    def _scoped(self, db: Session, actor: Actor, case_id: str) -> Case:
        case = db.scalar(self._scope(actor, select(Case)).where(Case.id == case_id))
        if case is None:
            raise not_found(case_id)
        return cast("Case", case)

    def get(self, actor: Actor, case_id: str) -> Case:
        with self.session() as db:
            case = self._scoped(db, actor, case_id)
            audit(db, actor, "view", case)
            return case

    def list_cases(self, actor: Actor, filters: Filters = Filters(), limit: int = 100,
             offset: int = 0) -> tuple[list[Case], int]:
        """(a page of cases, newest first; how many match in all)."""
        q = self._scope(actor, select(Case))
        if filters.status:
            q = q.where(Case.status == filters.status)
        if filters.diagnosis == "none":
            q = q.where(Case.diagnosis.is_(None))
        elif filters.diagnosis == "other":
            q = q.where(Case.diagnosis.like(f"{vocab.OTHER_PREFIX}%"))
        elif filters.diagnosis:
            q = q.where(Case.diagnosis == filters.diagnosis)
        if filters.date_from:
            q = q.where(Case.created_at >= _day_start(filters.date_from))
        if filters.date_to:
            q = q.where(Case.created_at < _day_start(filters.date_to + timedelta(days=1)))
        limit = max(1, min(limit, LIST_MAX))
        with self.session() as db:
            total = db.scalar(q.with_only_columns(func.count()).order_by(None)) or 0
            rows = list(db.scalars(q.order_by(Case.created_at.desc(), Case.id)
                                   .limit(limit).offset(max(0, offset))))
            audit(db, actor, "list", None, f"{len(rows)} of {total} shown; {_describe(filters)}")
        return rows, total

    def review(self, actor: Actor, case_id: str, diagnosis: str | None, classes: list[str],
               referral: bool | None = None) -> Case:
        if actor.role not in vocab.REVIEW_ROLES:
            raise forbidden("only a reviewer records the confirmed diagnosis")
        try:
            checked = None if diagnosis is None else vocab.check_diagnosis(diagnosis, classes)
        except vocab.FieldError as e:
            raise invalid(str(e)) from None
        with self.session() as db:
            case = self._scoped(db, actor, case_id)
            t = now()
            changes = []
            if checked is not None:
                case.diagnosis, case.reviewed_by, case.reviewed_at = checked, actor.id, t
                changes.append(f"diagnosis={checked}")
            if referral is not None:
                case.referral = referral
                changes.append(f"referral={referral}")
            case.updated_at = t
            audit(db, actor, "review", case, "; ".join(changes))
            return case

    def set_referral(self, actor: Actor, case_id: str, referral: bool) -> Case:
        """The health worker's rujukan yes/no, on a case in their scope."""
        with self.session() as db:
            case = self._scoped(db, actor, case_id)
            case.referral, case.updated_at = referral, now()
            audit(db, actor, "referral", case, f"referral={referral}")
            return case

    def delete(self, actor: Actor, case_id: str) -> None:
        """Erase a case: the row, then its photo file. The audit log keeps only the id."""
        with self.session() as db:
            case = self._scoped(db, actor, case_id)
            name = case.photo_name
            db.delete(case)
            audit(db, actor, "delete", case)
        self._remove_photo(name)

    # ------------------------------------------------------------------- retention

    def purge_expired(self, actor_name: str = "system") -> int:
        """Delete cases older than the retention period, and photo files no case names
        (left by a crash between a commit and an unlink). How many cases went."""
        import time as _time

        self.last_purge = _time.monotonic()
        gone: list[str] = []
        if self.retention_days > 0:
            cut = now() - timedelta(days=self.retention_days)
            with self.session() as db:
                for case in db.scalars(select(Case).where(Case.created_at < cut)):
                    gone.append(case.photo_name)
                    db.delete(case)
                    db.add(AuditEvent(at=now(), actor=actor_name, clinic_id=case.clinic_id,
                                      action="expire", case_id=case.id,
                                      detail=f"older than {self.retention_days} days"))
        for name in gone:
            self._remove_photo(name)
        if self.photo_dir.is_dir():
            with self.session() as db:
                known = set(db.scalars(select(Case.photo_name)))
            for path in self.photo_dir.glob(f"*{PHOTO_SUFFIX}"):
                if path.name not in known:
                    path.unlink(missing_ok=True)
        return len(gone)

    def maybe_purge(self, every_s: float = 3600.0) -> None:
        import time as _time

        if self.retention_days > 0 and _time.monotonic() - self.last_purge > every_s:
            self.purge_expired()

    # ------------------------------------------------------------------- audit

    def audit_log(self, actor: Actor, limit: int = 200) -> list[AuditEvent]:
        if actor.role != "admin":
            raise forbidden("only an admin reads the audit log")
        with self.session() as db:
            rows = list(db.scalars(select(AuditEvent)
                                   .where(AuditEvent.clinic_id == actor.clinic_id)
                                   .order_by(AuditEvent.id.desc()).limit(limit)))
            audit(db, actor, "view_audit", None, f"{len(rows)} events")
        return rows


def open_store(settings: ClinicSettings, upgrade: bool = True) -> CaseStore:
    """The case store of `settings`, its schema brought to the newest migration."""
    engine = make_engine(settings.database_url)
    if upgrade:
        migrate(engine)
    return CaseStore(engine, settings.resolved_photo_dir(), settings.retention_days)


def audit(db: Session, actor: Actor | str, action: str, case: Case | None,
          detail: str = "") -> None:
    """Append one event in the caller's transaction."""
    if isinstance(actor, str):
        name, clinic = actor, case.clinic_id if case is not None else None
    else:
        name, clinic = actor.name, actor.clinic_id
    db.add(AuditEvent(at=now(), actor=name, clinic_id=clinic, action=action,
                      case_id=case.id if case is not None else None, detail=detail[:2000]))


def _describe(f: Filters) -> str:
    parts = [f"{k}={v}" for k, v in vars(f).items() if v]
    return ", ".join(parts) or "no filter"


# --------------------------------------------------------------------------- accounts


def ensure_clinic(db: Session, name: str) -> Clinic:
    name = " ".join(name.split())
    if not name:
        raise KulitError("--clinic: give the clinic's name")
    clinic = db.scalar(select(Clinic).where(Clinic.name == name))
    if clinic is None:
        clinic = Clinic(name=name, created_at=now())
        db.add(clinic)
        db.flush()
    return clinic


def add_user(db: Session, name: str, role: str, clinic_name: str, password_hash: str) -> User:
    if role not in vocab.ROLES:
        raise KulitError(f"--role: one of {', '.join(vocab.ROLES)}")
    if not name or len(name) > 64 or not name.replace("_", "").replace("-", "").replace(
            ".", "").isalnum():
        raise KulitError("NAME: 1-64 letters, digits, '.', '-' or '_'")
    if db.scalar(select(User).where(User.name == name)) is not None:
        raise KulitError(f"user {name} exists already")
    clinic = ensure_clinic(db, clinic_name)
    user = User(name=name, role=role, clinic_id=clinic.id, password_hash=password_hash,
                failed_logins=0, created_at=now())
    db.add(user)
    db.flush()
    db.add(AuditEvent(at=now(), actor="cli", clinic_id=clinic.id, action="add_user",
                      detail=f"{name} ({role})"))
    return user
