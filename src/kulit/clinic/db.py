"""The database: one URL (a SQLite file by default, or PostgreSQL), the engine, and Alembic's
migrations shipped in the package (`kulit clinic init` = upgrade to head)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from kulit.errors import KulitError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_MS = 30_000  # a writer waits this long for another one, rather than failing


def normalize_url(url: str) -> str:
    """'postgresql://...' (and 'postgres://') use psycopg 3; a bare path is a SQLite file."""
    url = url.strip()
    if "://" not in url:
        return f"sqlite:///{url}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, else None."""
    try:
        u = make_url(normalize_url(url))
    except ArgumentError:
        return None
    if u.get_backend_name() != "sqlite":
        return None
    if not u.database or u.database == ":memory:":
        raise KulitError("clinic mode needs a SQLite file, not an in-memory database")
    return Path(u.database)


def make_engine(url: str) -> Engine:
    """An engine for `url`; KulitError when the URL or its driver is unusable.

    SQLite gets WAL (readers never wait for the writer), a busy timeout, foreign keys and
    BEGIN IMMEDIATE (two writers queue instead of one failing at commit).
    """
    try:
        norm = normalize_url(url)
        backend = make_url(norm).get_backend_name()
    except ArgumentError as e:
        raise KulitError(f"--database-url {url!r}: not a database URL ({e})") from None
    if backend not in ("sqlite", "postgresql"):
        raise KulitError(f"--database-url: {backend} is not supported (SQLite or PostgreSQL)")
    db_file = sqlite_path(norm)
    if db_file is not None:  # health data: only the server's user reads it (and its WAL)
        db_file.parent.mkdir(parents=True, exist_ok=True)
        if not db_file.exists():
            os.close(os.open(db_file, os.O_WRONLY | os.O_CREAT, 0o600))
    try:
        engine = create_engine(norm, pool_pre_ping=backend == "postgresql")
    except ImportError as e:
        raise KulitError(f"--database-url: driver missing ({e.name}): "
                         "pip install 'kulit[clinic]'") from None
    if backend == "sqlite":
        _sqlite_pragmas(engine)
    return engine


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" below decides
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time kulit stores is UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- migrations


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head", down: bool = False) -> None:
    """Upgrade to `revision` (default: the newest), or downgrade to it ("base" = no tables)."""
    from alembic import command

    cfg = alembic_config(engine)
    try:
        if down:
            command.downgrade(cfg, revision)
        else:
            command.upgrade(cfg, revision)
    except Exception as e:  # noqa: BLE001 - a bad revision or an unreachable server
        from alembic.util import CommandError
        from sqlalchemy.exc import OperationalError

        if isinstance(e, CommandError | OperationalError):
            raise KulitError(f"database migration failed: {str(e).splitlines()[0]}") from None
        raise


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(create_engine("sqlite://"))).get_current_head()
    assert head is not None
    return head
