"""Clinic mode on a real database: SQLite always, PostgreSQL when KULIT_TEST_POSTGRES_URL names
a server (.ci/run starts a throw-away cluster and sets it). Every test runs on each backend.

Covers migrations up and down, the scope of every role on every route (API and pages), CSRF,
login lockout, cookie flags, consent, deletion removing the photo, retention, the append-only
audit log, 20 concurrent saves, and the export read back by `kulit data`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import image_bytes, make_image, serve_on_loopback

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")
pytest.importorskip("argon2")
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, inspect, select, text, update  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from kulit.cli import app as cli_app  # noqa: E402
from kulit.clinic.auth import hash_password, issue_token  # noqa: E402
from kulit.clinic.config import ClinicSettings  # noqa: E402
from kulit.clinic.db import make_engine, migrate, normalize_url  # noqa: E402
from kulit.clinic.export import COLUMNS  # noqa: E402
from kulit.clinic.models import AuditEvent, Case, User  # noqa: E402
from kulit.clinic.store import add_user, open_store  # noqa: E402
from kulit.serving.predict import Predictor  # noqa: E402
from kulit.web.app import create_app  # noqa: E402
from kulit.web.settings import Settings  # noqa: E402

PG_ENV = "KULIT_TEST_POSTGRES_URL"
PASSWORD = "correct horse battery"
# (name, role, clinic)
USERS = [("hw1", "health_worker", "Puskesmas A"), ("hw2", "health_worker", "Puskesmas A"),
         ("rev", "reviewer", "Puskesmas A"), ("adm", "admin", "Puskesmas A"),
         ("hwB", "health_worker", "Puskesmas B"), ("revB", "reviewer", "Puskesmas B")]
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


# --------------------------------------------------------------------------- databases


class PgDatabases:
    """Throw-away databases on the PostgreSQL server of KULIT_TEST_POSTGRES_URL."""

    def __init__(self, admin_url: str) -> None:
        self.admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
        self.base = admin_url
        self.made: list[str] = []

    def new(self) -> str:
        name = f"kulit_test_{secrets.token_hex(6)}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        self.made.append(name)
        head, _, _ = self.base.rpartition("/")
        return f"{head}/{name}"

    def drop_all(self) -> None:
        with self.admin.connect() as c:
            for name in self.made:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Any]:
    """A factory of fresh, empty database URLs on one backend."""
    if request.param == "sqlite":
        root = tmp_path_factory.mktemp("clinic-sqlite")
        counter = iter(range(10**6))
        yield lambda: f"sqlite:///{root}/clinic{next(counter)}.db"
        return
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL: set {PG_ENV} (.ci/run starts a server and sets it)")
    pytest.importorskip("psycopg")
    dbs = PgDatabases(url)
    yield dbs.new
    dbs.drop_all()


# --------------------------------------------------------------------------- the app


@dataclass
class Env:
    app: Any
    client: TestClient
    clinic: ClinicSettings
    store: Any
    tokens: dict[str, str] = field(default_factory=dict)
    cases: dict[str, list[str]] = field(default_factory=dict)  # creator -> case ids

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def photos(self) -> set[str]:
        d = self.store.photo_dir
        return {p.name for p in d.iterdir()} if d.is_dir() else set()


def web_settings(model_dir: Path, **kw: Any) -> Settings:
    """Room for the concurrency test: every client is 127.0.0.1 or 'testclient'."""
    extra = {"max_uploads_per_client": 64} if "max_uploads_per_client" in Settings.model_fields \
        else {}
    return Settings(model_dir=model_dir, max_concurrent_uploads=64, **extra, **kw)


def make_env(url: str, model_dir: Path, photo_dir: Path, **clinic_kw: Any) -> Env:
    clinic = ClinicSettings(database_url=url, photo_dir=photo_dir, max_login_failures=3,
                            lockout_minutes=10, **clinic_kw)
    store = open_store(clinic)
    env_tokens: dict[str, str] = {}
    hashed = hash_password(PASSWORD)  # one hash for all: argon2 takes ~50 ms each
    with store.session() as db:
        for name, role, clinic_name in USERS:
            user = add_user(db, name, role, clinic_name, hashed)
            env_tokens[name] = issue_token(db, user)
    app = create_app(web_settings(model_dir), predictor=Predictor(model_dir), clinic=clinic)
    return Env(app, TestClient(app), clinic, store, env_tokens)


@pytest.fixture(scope="module")
def env(backend: Any, onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Env]:
    e = make_env(backend(), onnx_model_dir, tmp_path_factory.mktemp("photos"))
    with e.client:
        yield e
    e.store.engine.dispose()


def upload(seed: int = 1) -> bytes:
    return image_bytes(make_image(seed, (120, 96), seed % 3))


def api_create(env: Env, who: str, seed: int = 1, expect: int = 201,
               photo: bytes | None = None, **fields: str) -> Any:
    data = {"consent": "true", **fields}
    r = env.client.post("/api/v1/cases", headers=env.auth(who), data=data,
                        files={"image": ("p.jpg", photo or upload(seed), "image/jpeg")})
    assert r.status_code == expect, r.text
    if expect == 201:
        env.cases.setdefault(who, []).append(r.json()["id"])
    return r


def login(env: Env, name: str, password: str = PASSWORD, client: TestClient | None = None
          ) -> Any:
    c = client or env.client
    c.cookies.clear()
    form = c.get("/clinic/login?lang=en")
    token = CSRF_RE.search(form.text).group(1)  # type: ignore[union-attr]
    return c.post("/clinic/login", data={"name": name, "password": password,
                                         "csrf_token": token}, follow_redirects=False)


def csrf_of(env: Env) -> str:
    page = env.client.get("/clinic?lang=en")
    assert page.status_code == 200
    return CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- migrations


def test_migrations_up_and_down(backend: Any) -> None:
    engine = make_engine(backend())
    tables = {"clinics", "users", "api_tokens", "login_sessions", "cases", "audit_events"}
    migrate(engine)
    assert tables <= set(inspect(engine).get_table_names())
    migrate(engine, "base", down=True)
    assert not tables & set(inspect(engine).get_table_names())
    migrate(engine)  # and up again on the same database
    assert tables <= set(inspect(engine).get_table_names())
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    engine.dispose()


def test_cli_migrate_down_and_up(backend: Any) -> None:
    url = backend()
    runner = CliRunner()
    r = runner.invoke(cli_app, ["clinic", "migrate", "--database-url", url])
    assert r.exit_code == 0 and "schema at 0001" in r.output
    r = runner.invoke(cli_app, ["clinic", "migrate", "base", "--down", "--database-url", url])
    assert r.exit_code == 0 and "base (no tables)" in r.output
    r = runner.invoke(cli_app, ["clinic", "migrate", "nope", "--database-url", url])
    assert r.exit_code == 2 and "migration failed" in r.output


def test_audit_log_is_append_only(env: Env) -> None:
    with env.store.session() as db:
        db.add(AuditEvent(at=datetime.now(timezone.utc), actor="t", action="probe"))
    for sql in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(Exception, match="append-only"), env.store.session() as db:
            db.execute(text(sql))
    with env.store.session() as db:
        assert db.scalar(select(AuditEvent).where(AuditEvent.action == "probe")) is not None


def test_no_case_without_consent_even_in_the_database(env: Env) -> None:
    cid = api_create(env, "hw1", seed=90).json()["id"]
    with pytest.raises(Exception, match="ck_cases_consent"), env.store.session() as db:
        db.execute(update(Case).where(Case.id == cid).values(consent=False))


# --------------------------------------------------------------------------- CLI


def test_cli_init_add_user_token(backend: Any, onnx_model_dir: Path, tmp_path: Path) -> None:
    url = backend()
    runner = CliRunner()
    r = runner.invoke(cli_app, ["clinic", "init", "--database-url", url])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["clinic", "add-user", "siti", "--role", "health_worker",
                                "--clinic", "Puskesmas C", "--database-url", url],
                      input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["clinic", "add-user", "siti", "--role", "reviewer",
                                "--clinic", "X", "--database-url", url], input=PASSWORD + "\n")
    assert r.exit_code == 2 and "exists already" in r.output
    r = runner.invoke(cli_app, ["clinic", "add-user", "budi", "--role", "doctor",
                                "--clinic", "X", "--database-url", url], input=PASSWORD + "\n")
    assert r.exit_code == 2 and "--role" in r.output
    r = runner.invoke(cli_app, ["clinic", "add-user", "budi", "--role", "reviewer",
                                "--clinic", "X", "--database-url", url], input="short\n")
    assert r.exit_code == 2 and "at least 10" in r.output
    r = runner.invoke(cli_app, ["clinic", "token", "nobody", "--database-url", url])
    assert r.exit_code == 2 and "no user nobody" in r.output
    r = runner.invoke(cli_app, ["clinic", "token", "siti", "--database-url", url])
    assert r.exit_code == 0
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("kulit_")
    # the token works against a server on that database, and only its hash is stored
    clinic = ClinicSettings(database_url=url, photo_dir=tmp_path / "p")
    with TestClient(create_app(web_settings(onnx_model_dir), Predictor(onnx_model_dir),
                               clinic)) as c:
        assert c.get("/api/v1/cases", headers={"Authorization": f"Bearer {token}"}
                     ).status_code == 200
        store = c.app.state.clinic_store  # type: ignore[attr-defined]
        with store.session() as db:
            dump = " ".join(str(v) for v in db.execute(text("SELECT * FROM api_tokens")).one())
        assert token not in dump
        store.engine.dispose()


def test_serve_flags(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli_app, ["serve", "--database-url", str(tmp_path / "x.db"),
                                     "--model", str(tmp_path)])
    assert r.exit_code == 2


# --------------------------------------------------------------------------- API


API_ROUTES = [("GET", "/api/v1/cases"), ("POST", "/api/v1/cases"),
              ("GET", "/api/v1/cases/{id}"), ("DELETE", "/api/v1/cases/{id}"),
              ("GET", "/api/v1/cases/{id}/photo"), ("POST", "/api/v1/cases/{id}/review")]


def test_api_needs_a_token(env: Env) -> None:
    cid = api_create(env, "hw1", seed=2).json()["id"]
    for method, path in API_ROUTES:
        for headers in ({}, {"Authorization": "Bearer kulit_wrong"},
                        {"Authorization": "Basic aGk6aGk="}):
            r = env.client.request(method, path.format(id=cid), headers=headers)
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
    assert env.client.get(f"/api/v1/cases/{cid}", headers=env.auth("hw1")).status_code == 200


def test_api_create_keeps_the_shrunk_photo_and_the_answer(env: Env) -> None:
    before = env.photos()
    original = upload(3)
    r = env.client.post("/api/v1/cases", headers=env.auth("hw1"),
                        data={"consent": "true", "research_consent": "true",
                              "body_site": "arm", "age_band": "25-44", "sex": "female",
                              "referral": "false"},
                        files={"image": ("p.jpg", original, "image/jpeg")})
    assert r.status_code == 201, r.text
    body = r.json()
    env.cases.setdefault("hw1", []).append(body["id"])
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert body["answer"]["status"] == body["status"] and body["answer"]["top"]
    assert body["model"] == "tiny-test" and len(body["model_sha256"]) == 64
    assert (body["body_site"], body["age_band"], body["sex"], body["referral"]) == (
        "arm", "25-44", "female", False)
    assert body["consent"] is True and body["research_consent"] is True
    assert body["diagnosis"] is None
    new = env.photos() - before
    assert len(new) == 1
    name = new.pop()
    assert re.fullmatch(r"[0-9a-f]{32}\.jpg", name)  # random, says nothing about the case
    stored = (env.store.photo_dir / name).read_bytes()
    assert stored != original
    with Image.open(io.BytesIO(stored)) as im:
        assert im.format == "JPEG" and im.size == (32, 32)  # the model's crop, not the upload
    photo = env.client.get(body["photo_url"], headers=env.auth("hw1"))
    assert photo.status_code == 200 and photo.content == stored
    assert photo.headers["content-type"] == "image/jpeg"
    assert photo.headers["cache-control"] == "no-store"
    assert oct((env.store.photo_dir / name).stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("consent", [None, "false", "no", ""])
def test_api_refuses_a_case_without_consent(env: Env, consent: str | None) -> None:
    before = env.photos()
    total = env.client.get("/api/v1/cases", headers=env.auth("hw1")).json()["total"]
    data = {} if consent is None else {"consent": consent}
    r = env.client.post("/api/v1/cases", headers=env.auth("hw1"), data=data,
                        files={"image": ("p.jpg", upload(4), "image/jpeg")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "consent_required"
    assert env.photos() == before
    assert env.client.get("/api/v1/cases", headers=env.auth("hw1")).json()["total"] == total


@pytest.mark.parametrize("bad", [{"body_site": "left thumb"}, {"age_band": "33"},
                                 {"sex": "x"}, {"referral": "maybe"}, {"consent": "yesplease"}])
def test_api_fields_from_closed_lists(env: Env, bad: dict[str, str]) -> None:
    r = env.client.post("/api/v1/cases", headers=env.auth("hw1"),
                        data={"consent": "true", **bad},
                        files={"image": ("p.jpg", upload(5), "image/jpeg")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_api_bad_photo_is_4xx_and_keeps_nothing(env: Env) -> None:
    before = env.photos()
    r = env.client.post("/api/v1/cases", headers=env.auth("hw1"), data={"consent": "true"},
                        files={"image": ("p.jpg", b"not an image", "image/jpeg")})
    assert r.status_code == 415
    r = env.client.post("/api/v1/cases", headers=env.auth("hw1"), data={"consent": "true"})
    assert r.status_code == 422
    assert env.photos() == before


def test_api_scope_of_every_role(env: Env) -> None:
    """A health worker's case: who may see, photo, review, delete it, on every route."""
    cid = api_create(env, "hw1", seed=6).json()["id"]
    c = env.client

    def status(method: str, path: str, who: str, **kw: Any) -> int:
        return c.request(method, path.format(id=cid), headers=env.auth(who), **kw).status_code

    see = {"hw1": 200, "hw2": 404, "rev": 200, "adm": 200, "hwB": 404, "revB": 404}
    for who, code in see.items():
        assert status("GET", "/api/v1/cases/{id}", who) == code, who
        assert status("GET", "/api/v1/cases/{id}/photo", who) == code, who
        listed = {x["id"] for x in c.get("/api/v1/cases?limit=500",
                                         headers=env.auth(who)).json()["cases"]}
        assert (cid in listed) == (code == 200), who
    # review: reviewers only (403 for other roles), and only in their clinic (404)
    review = {"hw1": 403, "hw2": 403, "adm": 403, "hwB": 403, "revB": 404, "rev": 200}
    for who, code in review.items():
        assert status("POST", "/api/v1/cases/{id}/review", who,
                      json={"diagnosis": "Psoriasis"}) == code, who
    # delete: outside the scope it is not found, and the case stays
    for who in ("hw2", "hwB", "revB"):
        assert status("DELETE", "/api/v1/cases/{id}", who) == 404, who
    assert status("GET", "/api/v1/cases/{id}", "hw1") == 200
    # an admin saves no cases
    assert c.post("/api/v1/cases", headers=env.auth("adm"), data={"consent": "true"},
                  files={"image": ("p.jpg", upload(7), "image/jpeg")}).status_code == 403
    # lists hold only the caller's scope
    for who in ("hw1", "hw2", "hwB"):
        ids = {x["id"] for x in c.get("/api/v1/cases?limit=500",
                                      headers=env.auth(who)).json()["cases"]}
        assert ids == set(env.cases.get(who, [])), who
    clinic_a = set(env.cases.get("hw1", []) + env.cases.get("hw2", []) +
                   env.cases.get("rev", []))
    for who in ("rev", "adm"):
        ids = {x["id"] for x in c.get("/api/v1/cases?limit=500",
                                      headers=env.auth(who)).json()["cases"]}
        assert ids == clinic_a, who


def test_api_review_rules(env: Env) -> None:
    cid = api_create(env, "hw1", seed=8).json()["id"]
    path = f"/api/v1/cases/{cid}/review"
    for diagnosis, expect in [("Psoriasis", "Psoriasis"), ("unsure", "unsure"),
                              ("other:  scabies ", "other: scabies"),
                              ("Other: Tinea versicolor", "other: Tinea versicolor")]:
        r = env.client.post(path, headers=env.auth("rev"), json={"diagnosis": diagnosis})
        assert r.status_code == 200 and r.json()["diagnosis"] == expect
        assert r.json()["reviewed_at"] is not None
    for bad in ("Eczema", "other:", "other: " + "x" * 81, ""):
        r = env.client.post(path, headers=env.auth("rev"), json={"diagnosis": bad})
        assert r.status_code == 422, bad
    r = env.client.post(path, headers=env.auth("rev"), json={})
    assert r.status_code == 422
    r = env.client.post(path, headers=env.auth("rev"), json={"referral": True})
    assert r.status_code == 200 and r.json()["referral"] is True
    assert r.json()["diagnosis"] == "other: Tinea versicolor"  # kept


def test_api_delete_removes_the_photo(env: Env) -> None:
    cid = api_create(env, "hw2", seed=9).json()["id"]
    with env.store.session() as db:
        photo = env.store.photo_path(db.get(Case, cid))
    assert photo.is_file()
    r = env.client.delete(f"/api/v1/cases/{cid}", headers=env.auth("hw2"))
    assert r.status_code == 204
    env.cases["hw2"].remove(cid)
    assert not photo.exists()
    assert env.client.get(f"/api/v1/cases/{cid}", headers=env.auth("hw2")).status_code == 404
    assert env.client.delete(f"/api/v1/cases/{cid}", headers=env.auth("hw2")
                             ).status_code == 404
    with env.store.session() as db:
        assert db.get(Case, cid) is None
        events = db.scalars(select(AuditEvent).where(AuditEvent.case_id == cid)).all()
    assert [e.action for e in events][-1] == "delete" and events[-1].actor == "hw2"


def test_api_filters(env: Env) -> None:
    a = api_create(env, "hwB", seed=10).json()
    b = api_create(env, "hwB", seed=11).json()
    env.client.post(f"/api/v1/cases/{a['id']}/review", headers=env.auth("revB"),
                    json={"diagnosis": "Warts"})
    env.client.post(f"/api/v1/cases/{b['id']}/review", headers=env.auth("revB"),
                    json={"diagnosis": "other: scabies"})
    old = datetime(2020, 1, 2, 10, tzinfo=timezone.utc)
    with env.store.session() as db:
        db.execute(update(Case).where(Case.id == b["id"]).values(created_at=old))

    def ids(query: str) -> set[str]:
        r = env.client.get(f"/api/v1/cases?{query}", headers=env.auth("revB"))
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()["cases"]}

    assert ids("diagnosis=Warts") == {a["id"]}
    assert ids("diagnosis=other") == {b["id"]}
    assert ids(f"status={a['status']}") >= {a["id"]}
    assert ids("status=not_a_status") == set()
    assert ids("date_to=2020-01-02") == {b["id"]}
    assert ids("date_from=2020-01-03") == ids("") - {b["id"]}
    assert ids("date_from=2020-01-02&date_to=2020-01-02") == {b["id"]}
    r = env.client.get("/api/v1/cases?date_from=2021-01-01&date_to=2020-01-01",
                       headers=env.auth("revB"))
    assert r.status_code == 422
    r = env.client.get("/api/v1/cases?date_from=yesterday", headers=env.auth("revB"))
    assert r.status_code == 422


def test_openapi_documents_the_case_api(env: Env) -> None:
    spec = env.client.get("/openapi.json").json()
    for path in ("/api/v1/cases", "/api/v1/cases/{case_id}", "/api/v1/cases/{case_id}/review"):
        assert path in spec["paths"]
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    create = spec["paths"]["/api/v1/cases"]["post"]
    schema = create["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["image", "consent"]
    assert {"401", "403", "404", "422"} <= set(create["responses"])


# --------------------------------------------------------------------------- pages


def test_pages_need_a_login(env: Env) -> None:
    env.client.cookies.clear()
    cid = api_create(env, "hw1", seed=12).json()["id"]
    for path in ("/clinic", "/clinic/check", f"/clinic/cases/{cid}",
                 f"/clinic/cases/{cid}/photo", "/clinic/audit"):
        r = env.client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/clinic/login"), path
    for path in ("/clinic/predict", "/clinic/cases", f"/clinic/cases/{cid}/delete",
                 f"/clinic/cases/{cid}/review", f"/clinic/cases/{cid}/referral",
                 "/clinic/logout"):
        r = env.client.post(path, data={"csrf_token": "x"}, follow_redirects=False)
        assert r.status_code == 303, path
    assert env.client.get(f"/api/v1/cases/{cid}", headers=env.auth("hw1")).status_code == 200


def test_login_cookie_flags(env: Env) -> None:
    r = login(env, "hw1")
    assert r.status_code == 303 and r.headers["location"].startswith("/clinic")
    cookie = [h for h in r.headers.get_list("set-cookie") if h.startswith("kulit_clinic=")][0]
    flags = {x.strip().lower() for x in cookie.split(";")}
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert "secure" not in flags  # plain http on loopback
    https = TestClient(env.app, base_url="https://testserver")
    r = login(env, "hw1", client=https)
    cookie = [h for h in r.headers.get_list("set-cookie") if h.startswith("kulit_clinic=")][0]
    assert "secure" in {x.strip().lower() for x in cookie.split(";")}
    # the session id is stored only as a hash
    sid = cookie.split(";")[0].split("=", 1)[1]
    with env.store.session() as db:
        stored = " ".join(str(r) for r in db.execute(text("SELECT * FROM login_sessions")))
    assert sid not in stored


def test_logout_ends_the_session(env: Env) -> None:
    login(env, "hw2")
    sid = env.client.cookies.get("kulit_clinic")
    token = csrf_of(env)
    r = env.client.post("/clinic/logout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    env.client.cookies.set("kulit_clinic", sid)  # an old cookie no longer works
    assert env.client.get("/clinic", follow_redirects=False).status_code == 303


def test_lockout_after_failures(env: Env) -> None:
    # a user of its own, so the other tests' logins are not locked out
    with env.store.session() as db:
        add_user(db, "lock_me", "health_worker", "Puskesmas A", hash_password(PASSWORD))
    for _ in range(2):
        r = login(env, "lock_me", "wrong password!")
        assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = login(env, "lock_me", "wrong password!")  # the third: locked
    assert r.status_code == 429 and "locked" in r.text
    r = login(env, "lock_me")  # the right password is refused while locked
    assert r.status_code == 429 and "kulit_clinic=" not in r.headers.get("set-cookie", "")
    with env.store.session() as db:
        db.execute(update(User).where(User.name == "lock_me").values(
            locked_until=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert login(env, "lock_me").status_code == 303  # the lock ran out
    with env.store.session() as db:
        actions = [e.action for e in db.scalars(select(AuditEvent).where(
            AuditEvent.actor == "lock_me").order_by(AuditEvent.id))]
    assert actions == ["login_failed"] * 3 + ["login_refused", "login"]
    # unknown names answer like wrong passwords
    assert login(env, "no_such_user").status_code == 401


def test_login_rate_limit_per_address(backend: Any, onnx_model_dir: Path,
                                      tmp_path: Path) -> None:
    e = make_env(backend(), onnx_model_dir, tmp_path, max_failures_per_address=4)
    with e.client:
        for name in ("a1", "a2", "a3", "a4"):  # four names: no account lockout involved
            assert login(e, name, "x" * 12).status_code == 401
        r = login(e, "hw1")  # a right password, but this address is blocked for a while
        assert r.status_code == 429 and "Too many sign-in attempts" in r.text
    e.store.engine.dispose()


def test_csrf_on_every_form(env: Env) -> None:
    cid = api_create(env, "hw1", seed=13).json()["id"]
    login(env, "rev")
    good = csrf_of(env)
    forms = [(f"/clinic/cases/{cid}/review", {"diagnosis": "Warts"}),
             (f"/clinic/cases/{cid}/referral", {"referral": "true"}),
             (f"/clinic/cases/{cid}/delete", {}), ("/clinic/logout", {})]
    for path, data in forms:
        for token in (None, "", "forged", good[:-1]):
            form = dict(data) if token is None else {**data, "csrf_token": token}
            r = env.client.post(path, data=form, follow_redirects=False)
            assert r.status_code == 403, (path, token)
    # the save form (multipart) too
    r = env.client.post("/clinic/cases", data={"consent": "true", "csrf_token": "forged"},
                        files={"image": ("p.jpg", upload(14), "image/jpeg")})
    assert r.status_code == 403
    # nothing happened: not reviewed, not deleted, still logged in
    got = env.client.get(f"/api/v1/cases/{cid}", headers=env.auth("rev")).json()
    assert got["diagnosis"] is None and got["referral"] is None
    assert env.client.get("/clinic", follow_redirects=False).status_code == 200
    # the login form's own token (a cookie and a field that must match)
    env.client.cookies.clear()
    env.client.get("/clinic/login")
    r = env.client.post("/clinic/login", data={"name": "rev", "password": PASSWORD,
                                               "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403
    # with the right token the same form works
    login(env, "rev")
    r = env.client.post(f"/clinic/cases/{cid}/review",
                        data={"diagnosis": "Warts", "csrf_token": csrf_of(env)},
                        follow_redirects=False)
    assert r.status_code == 303


def test_pages_scope_of_every_role(env: Env) -> None:
    cid = api_create(env, "hw1", seed=15).json()["id"]
    see = {"hw1": 200, "hw2": 404, "rev": 200, "adm": 200, "hwB": 404, "revB": 404}
    for who, code in see.items():
        login(env, who)
        token = csrf_of(env)
        assert env.client.get(f"/clinic/cases/{cid}?lang=en").status_code == code, who
        assert env.client.get(f"/clinic/cases/{cid}/photo").status_code == code, who
        listing = env.client.get("/clinic?lang=en").text
        assert (f'data-case="{cid}"' in listing) == (code == 200), who
        r = env.client.post(f"/clinic/cases/{cid}/referral",
                            data={"referral": "true", "csrf_token": token},
                            follow_redirects=False)
        assert r.status_code == (303 if code == 200 else 404), who
        r = env.client.post(f"/clinic/cases/{cid}/review",
                            data={"diagnosis": "Herpes", "csrf_token": token},
                            follow_redirects=False)
        assert r.status_code == {"rev": 303, "revB": 404}.get(who, 403), who
        audit = env.client.get("/clinic/audit?lang=en")
        assert audit.status_code == (200 if who == "adm" else 403), who
        check = env.client.get("/clinic/check?lang=en")
        assert check.status_code == (403 if who == "adm" else 200), who
        if code == 404:
            r = env.client.post(f"/clinic/cases/{cid}/delete", data={"csrf_token": token},
                                follow_redirects=False)
            assert r.status_code == 404, who
    got = env.client.get(f"/api/v1/cases/{cid}", headers=env.auth("hw1")).json()
    assert got["diagnosis"] == "Herpes" and got["referral"] is True
    # an admin's audit page shows their clinic's events only
    login(env, "adm")
    audit = env.client.get("/clinic/audit?lang=en").text
    assert "hw1" in audit and "hwB" not in audit and "revB" not in audit


def test_save_case_from_the_result_page(env: Env) -> None:
    login(env, "hw2")
    for lang, save, consent in [("id", "Simpan kasus", "Pasien (atau walinya) setuju"),
                                ("en", "Save case", "The patient (or their guardian) agrees")]:
        page = env.client.post(f"/clinic/predict?lang={lang}",
                               files={"image": ("p.jpg", upload(16), "image/jpeg")})
        assert page.status_code == 200
        assert f'<html lang="{lang}">' in page.text and save in page.text
        assert consent in page.text
        assert 'name="consent" type="checkbox" value="true" required' in page.text
    form = re.search(r'<form id="save-case".*?</form>', page.text, re.S).group(0)  # type: ignore[union-attr]
    token = CSRF_RE.search(form).group(1)  # type: ignore[union-attr]
    crop = re.search(r'name="image" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    fields = {"image": crop, "csrf_token": token, "body_site": "face", "age_band": "5-14"}
    before = env.photos()
    r = env.client.post("/clinic/cases?lang=en", files={k: (None, v) for k, v in
                                                        fields.items()},
                        follow_redirects=False)
    assert r.status_code == 422 and "consent" in r.text  # the box was not ticked
    assert env.photos() == before
    fields["consent"] = "true"
    r = env.client.post("/clinic/cases?lang=en", files={k: (None, v) for k, v in
                                                        fields.items()},
                        follow_redirects=False)
    assert r.status_code == 303
    cid = r.headers["location"].split("/clinic/cases/")[1].split("?")[0]
    env.cases.setdefault("hw2", []).append(cid)
    case_page = env.client.get(r.headers["location"])
    assert "Case saved." in case_page.text and "face" in case_page.text
    assert f'src="/clinic/cases/{cid}/photo"' in case_page.text
    assert len(env.photos() - before) == 1
    got = env.client.get(f"/api/v1/cases/{cid}", headers=env.auth("hw2")).json()
    assert got["body_site"] == "face" and got["age_band"] == "5-14"
    assert got["research_consent"] is False
    # the public result page offers no saving
    public = env.client.post("/predict", files={"image": ("p.jpg", upload(16), "image/jpeg")})
    assert public.status_code == 200 and "save-case" not in public.text


def test_page_delete_removes_the_photo(env: Env) -> None:
    cid = api_create(env, "hw1", seed=17).json()["id"]
    with env.store.session() as db:
        photo = env.store.photo_path(db.get(Case, cid))
    login(env, "rev")
    r = env.client.post(f"/clinic/cases/{cid}/delete?lang=en",
                        data={"csrf_token": csrf_of(env)}, follow_redirects=False)
    assert r.status_code == 303
    env.cases["hw1"].remove(cid)
    assert not photo.exists()
    assert "The case and its photo were deleted." in env.client.get(r.headers["location"]).text
    assert env.client.get(f"/clinic/cases/{cid}").status_code == 404


def test_pages_in_both_languages(env: Env) -> None:
    cid = api_create(env, "hw1", seed=18, body_site="hand").json()["id"]
    login(env, "rev")
    for lang, words in [("id", ["Kasus", "Diagnosis terkonfirmasi", "tangan", "Hapus kasus",
                                "Simpan tinjauan", "belum ditinjau"]),
                        ("en", ["Cases", "Confirmed diagnosis", "hand", "Delete case",
                                "Save review", "not reviewed"])]:
        page = env.client.get(f"/clinic/cases/{cid}?lang={lang}").text
        listing = env.client.get(f"/clinic?lang={lang}").text
        assert f'<html lang="{lang}">' in page
        for w in words:
            assert w in page + listing, (lang, w)
        assert 'name="viewport" content="width=device-width' in page


def test_responses_are_not_cached(env: Env) -> None:
    cid = api_create(env, "hw1", seed=19).json()["id"]
    login(env, "hw1")
    for path in ("/clinic", f"/clinic/cases/{cid}", f"/clinic/cases/{cid}/photo"):
        assert env.client.get(path).headers["cache-control"] == "no-store", path
    r = env.client.get(f"/api/v1/cases/{cid}", headers=env.auth("hw1"))
    assert r.headers["cache-control"] == "no-store"


# --------------------------------------------------------------------------- retention, audit


def test_retention_deletes_old_cases_and_their_photos(env: Env) -> None:
    cid = api_create(env, "hwB", seed=20).json()["id"]
    keep = api_create(env, "hwB", seed=21).json()["id"]
    with env.store.session() as db:
        photo = env.store.photo_path(db.get(Case, cid))
        db.execute(update(Case).where(Case.id == cid).values(
            created_at=datetime.now(timezone.utc) - timedelta(days=400)))
    stray = env.store.photo_dir / ("0" * 32 + ".jpg")  # a file no case names
    stray.write_bytes(b"x")
    assert env.store.retention_days == 365
    assert env.store.purge_expired() >= 1
    assert not photo.exists() and not stray.exists()
    assert env.client.get(f"/api/v1/cases/{cid}", headers=env.auth("hwB")).status_code == 404
    assert env.client.get(f"/api/v1/cases/{keep}", headers=env.auth("hwB")).status_code == 200
    env.cases["hwB"].remove(cid)
    with env.store.session() as db:
        ev = db.scalar(select(AuditEvent).where(AuditEvent.case_id == cid,
                                                AuditEvent.action == "expire"))
    assert ev is not None and ev.actor == "system"


def test_audit_log_says_who_did_what(env: Env) -> None:
    cid = api_create(env, "hw1", seed=22).json()["id"]
    env.client.get(f"/api/v1/cases/{cid}", headers=env.auth("rev"))
    env.client.get(f"/api/v1/cases/{cid}/photo", headers=env.auth("adm"))
    env.client.post(f"/api/v1/cases/{cid}/review", headers=env.auth("rev"),
                    json={"diagnosis": "Vitiligo"})
    env.client.delete(f"/api/v1/cases/{cid}", headers=env.auth("hw1"))
    env.cases["hw1"].remove(cid)
    with env.store.session() as db:
        events = [(e.actor, e.action) for e in db.scalars(
            select(AuditEvent).where(AuditEvent.case_id == cid).order_by(AuditEvent.id))]
    assert events == [("hw1", "create"), ("rev", "view"), ("adm", "view_photo"),
                      ("rev", "review"), ("hw1", "delete")]


# --------------------------------------------------------------------------- load


def test_twenty_clients_save_at_once(env: Env) -> None:
    """20 threads post a case each to a real server at the same moment: none is lost."""
    httpx = pytest.importorskip("httpx")
    photos_before = env.photos()
    before = env.client.get("/api/v1/cases?limit=1", headers=env.auth("rev")).json()["total"]
    n = 20
    gate = threading.Barrier(n)
    results: list[Any] = [None] * n
    who = ["hw1", "hw2", "rev"]

    with serve_on_loopback(env.app) as url:
        def post(i: int) -> None:
            data = upload(100 + i)
            with httpx.Client(base_url=url, timeout=120) as c:
                gate.wait()
                results[i] = c.post("/api/v1/cases", headers=env.auth(who[i % 3]),
                                    data={"consent": "true"},
                                    files={"image": ("p.jpg", data, "image/jpeg")})

        threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert [r.status_code for r in results] == [201] * n, [r.text for r in results
                                                           if r.status_code != 201]
    ids = [r.json()["id"] for r in results]
    assert len(set(ids)) == n
    for i, cid in enumerate(ids):
        env.cases.setdefault(who[i % 3], []).append(cid)
    after = env.client.get("/api/v1/cases?limit=1", headers=env.auth("rev")).json()["total"]
    assert after == before + n
    assert len(env.photos() - photos_before) == n
    with env.store.session() as db:
        stored = {c.id: c.photo_name for c in db.scalars(select(Case).where(Case.id.in_(ids)))}
    assert len(stored) == n and all((env.store.photo_dir / p).is_file() for p in stored.values())


# --------------------------------------------------------------------------- export


def test_export_is_read_back_by_kulit_data(env: Env, tmp_path: Path,
                                           tiny_dataset: Path) -> None:
    from kulit.dataprep.split import build_split

    made = {}
    for i, (diag, research) in enumerate([("Psoriasis", "true"), ("Psoriasis", "true"),
                                          ("Warts", "true"), ("Warts", "false"),
                                          ("unsure", "true"), ("other: scabies", "true"),
                                          (None, "true")]):
        skin = image_bytes(Image.new("RGB", (120, 96), (196, 140, 110))) if i == 0 else None
        body = api_create(env, "hw2", seed=200 + i, photo=skin, research_consent=research,
                          body_site="leg", age_band="45-64", sex="male").json()
        if diag:
            r = env.client.post(f"/api/v1/cases/{body['id']}/review", headers=env.auth("rev"),
                                json={"diagnosis": diag})
            assert r.status_code == 200
        made[body["id"]] = (diag, research)
    out = tmp_path / "clinic-export"
    runner = CliRunner()
    args = ["clinic", "export", "--out", str(out), "--clinic", "Puskesmas A",
            "--database-url", env.clinic.database_url,
            "--photo-dir", str(env.store.photo_dir)]
    r = runner.invoke(cli_app, [*args[:2], *args[2:]])
    assert r.exit_code == 2 and "--confirmed" in r.output
    r = runner.invoke(cli_app, [*args, "--confirmed"])
    assert r.exit_code == 0, r.output
    expected = {cid for cid, (d, res) in made.items()
                if d in ("Psoriasis", "Warts") and res == "true"}
    with open(out / "manifest.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == COLUMNS  # no age, sex, dates, answers or names
    got = {Path(r["file"]).stem for r in rows}
    assert expected <= got and not (set(made) - expected) & got
    for row in rows:
        assert (out / row["file"]).is_file() and row["file"].startswith(row["class"] + "/")
        assert row["skin_tone"] in ("I-II", "III-IV", "V-VI", "")
        assert (row["ita"] == "") == (row["skin_tone"] == "")
    assert {r["body_site"] for r in rows if Path(r["file"]).stem in expected} == {"leg"}
    skin_row = [r for r in rows if Path(r["file"]).stem == next(iter(made))][0]
    assert skin_row["skin_tone"] in ("I-II", "III-IV") and float(skin_row["ita"]) > 10
    # `kulit data` takes the export as one more source
    result = build_split([tiny_dataset, out], seed=0)
    clinic_rows = [r for r in result.rows if r.file.startswith("clinic-export/")]
    assert {Path(r.file).stem for r in clinic_rows} == got
    assert {r.source for r in clinic_rows} == {"clinic-export"}
    assert {r.origin for r in clinic_rows} == {"kulit clinic"}  # from manifest.csv
    assert {r.label for r in clinic_rows} <= {"Psoriasis", "Warts"}
    # an erased case leaves the training data at the next export
    gone = sorted(expected)[0]
    assert env.client.delete(f"/api/v1/cases/{gone}", headers=env.auth("hw2")
                             ).status_code == 204
    r = runner.invoke(cli_app, [*args, "--confirmed"])
    assert r.exit_code == 0 and "removed 1 photo" in r.output
    assert not list(out.glob(f"*/{gone}.jpg"))
    with env.store.session() as db:
        exports = db.scalars(select(AuditEvent).where(AuditEvent.action == "export")).all()
    assert exports and {e.actor for e in exports} == {"cli"}
    # an export refuses a folder that holds something else
    other = tmp_path / "not-empty"
    other.mkdir()
    (other / "x.txt").write_text("mine")
    r = runner.invoke(cli_app, ["clinic", "export", "--confirmed", "--out", str(other),
                                "--database-url", env.clinic.database_url])
    assert r.exit_code == 2 and "not empty" in r.output


# --------------------------------------------------------------------------- public mode


def test_public_mode_has_no_clinic(onnx_model_dir: Path) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from kulit.web.app import create_app\n"
        "from kulit.web.settings import Settings\n"
        f"s = Settings(model_dir={str(onnx_model_dir)!r})\n"
        "with TestClient(create_app(s)) as c:\n"
        "    assert c.get('/clinic').status_code == 404\n"
        "    assert c.get('/clinic/login').status_code == 404\n"
        "    assert c.get('/api/v1/cases').status_code == 404\n"
        "    assert '/api/v1/cases' not in c.get('/openapi.json').text\n"
        "assert not [m for m in sys.modules if m.startswith(('kulit.clinic', 'sqlalchemy'))]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
