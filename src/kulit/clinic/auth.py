"""Passwords (argon2id), API tokens, page sessions with their CSRF token, and login lockout.

Secrets the server hands out (tokens, session ids) are kept only as sha256: a copy of the
database lets nobody in. Passwords are argon2id hashes (argon2-cffi's defaults, RFC 9106).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kulit.clinic.db import as_utc, now
from kulit.clinic.models import ApiToken, AuditEvent, LoginSession, User
from kulit.errors import KulitError

TOKEN_PREFIX = "kulit_"
MIN_PASSWORD = 10
_hasher = PasswordHasher()
# verified against when the user does not exist, so both answers take the same time
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class Actor:
    """Who is asking: a logged-in user (pages) or a token's owner (API)."""

    id: int
    name: str
    role: str
    clinic_id: int


def actor_of(user: User) -> Actor:
    return Actor(user.id, user.name, user.role, user.clinic_id)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise KulitError(f"password: at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def new_secret() -> str:
    return secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- login


class LoginRefused(Exception):
    """reason: "bad" (wrong name or password) or "locked" (too many failures)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def authenticate(db: Session, name: str, password: str, max_failures: int,
                 lockout: timedelta) -> User:
    """The user whose password this is, or LoginRefused. `max_failures` wrong passwords in a
    row lock the account for `lockout`; while locked, even the right password is refused."""
    t = now()
    user = db.scalar(select(User).where(User.name == name))
    if user is None:
        verify_password(_DUMMY_HASH, password)
        db.add(AuditEvent(at=t, actor=name[:64] or "?", action="login_failed",
                          detail="unknown user"))
        raise LoginRefused("bad")
    if user.locked_until is not None and as_utc(user.locked_until) > t:
        db.add(AuditEvent(at=t, actor=user.name, clinic_id=user.clinic_id,
                          action="login_refused", detail="locked"))
        raise LoginRefused("locked")
    if not verify_password(user.password_hash, password):
        user.failed_logins = (user.failed_logins or 0) + 1
        detail = f"failure {user.failed_logins}"
        locks = user.failed_logins >= max_failures
        if locks:
            user.locked_until = t + lockout
            user.failed_logins = 0
            detail += f"; locked until {user.locked_until.isoformat(timespec='seconds')}"
        db.add(AuditEvent(at=t, actor=user.name, clinic_id=user.clinic_id,
                          action="login_failed", detail=detail))
        raise LoginRefused("locked" if locks else "bad")
    user.failed_logins = 0
    user.locked_until = None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    db.add(AuditEvent(at=t, actor=user.name, clinic_id=user.clinic_id, action="login"))
    return user


class AddressLimiter:
    """Failed logins per client address in a sliding window; past the limit, 429 for all of
    that address's logins (so guessing across many accounts is slowed too)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window = limit, window_s
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, addr: str, t: float) -> deque[float]:
        q = self._fails.setdefault(addr, deque())
        while q and q[0] <= t - self.window:
            q.popleft()
        return q

    def blocked(self, addr: str) -> bool:
        with self._lock:
            return len(self._recent(addr, time.monotonic())) >= self.limit

    def failed(self, addr: str) -> None:
        with self._lock:
            t = time.monotonic()
            self._recent(addr, t).append(t)
            if len(self._fails) > 10_000:  # forget quiet addresses
                for a in [a for a, q in self._fails.items() if not q]:
                    del self._fails[a]


# --------------------------------------------------------------------------- sessions


def start_session(db: Session, user: User, hours: float) -> tuple[str, str]:
    """(cookie value, CSRF token) of a new login session."""
    sid, csrf = new_secret(), new_secret()
    t = now()
    db.execute(delete(LoginSession).where(LoginSession.expires_at < t))
    db.add(LoginSession(id_sha256=sha256_hex(sid), user_id=user.id, csrf_token=csrf,
                        created_at=t, expires_at=t + timedelta(hours=hours)))
    return sid, csrf


def session_of(db: Session, sid: str | None) -> tuple[User, LoginSession] | None:
    if not sid:
        return None
    sess = db.get(LoginSession, sha256_hex(sid))
    if sess is None or as_utc(sess.expires_at) <= now():
        return None
    user = db.get(User, sess.user_id)
    return None if user is None else (user, sess)


def end_session(db: Session, sid: str | None) -> None:
    if sid:
        db.execute(delete(LoginSession).where(LoginSession.id_sha256 == sha256_hex(sid)))


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and secrets.compare_digest(expected.encode(), str(given).encode())


# --------------------------------------------------------------------------- tokens


def issue_token(db: Session, user: User) -> str:
    token = TOKEN_PREFIX + new_secret()
    db.add(ApiToken(user_id=user.id, token_sha256=sha256_hex(token), created_at=now()))
    db.add(AuditEvent(at=now(), actor="cli", clinic_id=user.clinic_id, action="token",
                      detail=f"API token issued for {user.name}"))
    return token


def token_user(db: Session, token: str) -> User | None:
    row = db.scalar(select(ApiToken).where(ApiToken.token_sha256 == sha256_hex(token)))
    return None if row is None else db.get(User, row.user_id)
