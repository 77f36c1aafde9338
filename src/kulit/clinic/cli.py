"""`kulit clinic init|add-user|token|export|purge|migrate`: the clinic database from the shell.

Each command takes --database-url (default: KULIT_CLINIC_DATABASE_URL, else the SQLite file
kulit-clinic/clinic.db). Heavy imports (SQLAlchemy, Alembic, argon2) happen inside commands.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kulit.errors import KulitError

app = typer.Typer(no_args_is_help=True, help="Clinic mode: database, accounts, tokens, export.")

DbUrl = Annotated[str | None, typer.Option(
    "--database-url", help="SQLite file or postgresql://user:pass@host/db "
    "[KULIT_CLINIC_DATABASE_URL, else sqlite:///kulit-clinic/clinic.db]", metavar="URL")]
PhotoDir = Annotated[Path | None, typer.Option(
    "--photo-dir", help="Case photos [beside a SQLite file, KULIT_CLINIC_PHOTO_DIR]",
    metavar="DIR")]


def settings_for(database_url: str | None, photo_dir: Path | None = None, **kw: Any) -> Any:
    from kulit.clinic.config import ClinicSettings

    given = {k: v for k, v in {"database_url": database_url, "photo_dir": photo_dir,
                                **kw}.items() if v is not None}
    return ClinicSettings(**given)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """kulit's one error path (kulit.cli.friendly), looked up when called: kulit.cli imports
    this module to register it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from kulit.cli import friendly as kulit_friendly

        return kulit_friendly(fn)(*args, **kwargs)

    return wrapper


def _store(database_url: str | None, photo_dir: Path | None = None, upgrade: bool = True) -> Any:
    from kulit.clinic.store import open_store

    return open_store(settings_for(database_url, photo_dir), upgrade=upgrade)


@app.command("init")
@friendly
def init_cmd(database_url: DbUrl = None) -> None:
    """Create the clinic database, or bring it to the newest schema (Alembic migrations)."""
    from kulit.clinic.db import current_revision

    store = _store(database_url)
    typer.echo(f"clinic database ready (schema {current_revision(store.engine)}), "
               f"photos in {store.photo_dir}")


def read_password(name: str) -> str:
    """From a hidden prompt (typed twice) on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        return str(typer.prompt(f"password for {name}", hide_input=True,
                                confirmation_prompt=True))
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise KulitError("no password on stdin (send one line)")
    return password


@app.command("add-user")
@friendly
def add_user_cmd(
    name: Annotated[str, typer.Argument(help="Login name (letters, digits, . - _)")],
    role: Annotated[str, typer.Option(help="health_worker, reviewer or admin")],
    clinic: Annotated[str, typer.Option(help="The clinic's name (created if new)")],
    database_url: DbUrl = None,
) -> None:
    """Add an account. The password comes from a prompt, or from stdin when piped."""
    from kulit.clinic import vocab
    from kulit.clinic.auth import hash_password
    from kulit.clinic.store import add_user

    if role not in vocab.ROLES:
        raise KulitError(f"--role: one of {', '.join(vocab.ROLES)}")
    hashed = hash_password(read_password(name))
    store = _store(database_url)
    with store.session() as db:
        add_user(db, name, role, clinic, hashed)
    typer.echo(f"added {name} ({role}) at {clinic}")


@app.command("token")
@friendly
def token_cmd(name: Annotated[str, typer.Argument(help="The account the token acts as")],
              database_url: DbUrl = None) -> None:
    """Issue an API bearer token for NAME (printed once, on the last line; only its hash is
    kept)."""
    from sqlalchemy import select

    from kulit.clinic.auth import issue_token
    from kulit.clinic.models import User

    store = _store(database_url)
    with store.session() as db:
        user = db.scalar(select(User).where(User.name == name))
        if user is None:
            raise KulitError(f"no user {name} (kulit clinic add-user)")
        token = issue_token(db, user)
    typer.echo(f"API token for {name} ({user.role}); send it as 'Authorization: Bearer "
               "<token>'. It is shown only now:", err=True)
    typer.echo(token)


@app.command("export")
@friendly
def export_cmd(
    out: Annotated[Path, typer.Option(help="Folder for class folders + manifest.csv",
                                      metavar="DIR")],
    confirmed: Annotated[bool, typer.Option(
        "--confirmed", help="Required: export the cases whose diagnosis a reviewer confirmed "
        "(one of the classes) and whose patient consented to research use")] = False,
    clinic: Annotated[str | None, typer.Option(help="Only this clinic [all]")] = None,
    database_url: DbUrl = None,
    photo_dir: PhotoDir = None,
) -> None:
    """Write reviewed, research-consented cases as a `kulit data` source: <Class>/<id>.jpg and
    manifest.csv (body site and a skin-tone estimate; no personal data)."""
    from kulit.clinic.export import export_cases

    if not confirmed:
        raise KulitError("pass --confirmed: only cases with a reviewer-confirmed "
                         "diagnosis and research consent are exported")
    summary = export_cases(_store(database_url, photo_dir), out, clinic=clinic)
    for line in summary:
        typer.echo(line)


@app.command("purge")
@friendly
def purge_cmd(
    database_url: DbUrl = None,
    photo_dir: PhotoDir = None,
    retention_days: Annotated[int | None, typer.Option(
        help="Delete cases older than this [KULIT_CLINIC_RETENTION_DAYS, 365; 0 = never]",
        min=0)] = None,
) -> None:
    """Delete cases past the retention period, with their photos (the server also does this
    at start and hourly)."""
    from kulit.clinic.store import open_store

    store = open_store(settings_for(database_url, photo_dir,
                                    retention_days=retention_days))
    n = store.purge_expired(actor_name="cli")
    typer.echo(f"deleted {n} case(s) older than {store.retention_days} days"
               if store.retention_days else "retention is off (0): nothing deleted")


@app.command("migrate")
@friendly
def migrate_cmd(
    revision: Annotated[str, typer.Argument(help="Target: head, base or a revision id")] = "head",
    down: Annotated[bool, typer.Option("--down", help="Downgrade to REVISION")] = False,
    database_url: DbUrl = None,
) -> None:
    """Move the schema up (default: to the newest) or --down (base = drop every table)."""
    from kulit.clinic.db import current_revision, make_engine, migrate

    engine = make_engine(settings_for(database_url).database_url)
    migrate(engine, revision, down=down)
    typer.echo(f"schema at {current_revision(engine) or 'base (no tables)'}")


def serve_settings(enabled: bool, database_url: str | None) -> Any:
    """`kulit serve --clinic [--database-url URL]`: the ClinicSettings, or None (public mode)."""
    if not enabled:
        if database_url:
            raise KulitError("--database-url is for clinic mode: add --clinic")
        return None
    try:
        import alembic  # noqa: F401
        import argon2  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as e:
        raise KulitError(f"clinic mode needs the clinic extra ({e.name} is missing): "
                         "pip install 'kulit[clinic]'") from None
    settings = settings_for(database_url)
    typer.echo(f"kulit: clinic mode, cases in {settings.database_url} (photos in "
               f"{settings.resolved_photo_dir()}); sign in at /clinic", err=True)
    return settings
