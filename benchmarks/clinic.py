"""Clinic mode under load: cases saved per second, latency, and storage per 1,000 cases.

    python benchmarks/clinic.py [--model models/kulit-skin8] [--cases 1000] [--concurrency 4]
                                [--database-url postgresql://...]

Starts `kulit serve --clinic` as a subprocess on loopback with a fresh database (a SQLite file
in a temporary folder unless --database-url names an empty PostgreSQL database), adds a health
worker and a token, then saves --cases real skin8 photos through POST /api/v1/cases from
--concurrency client threads. For comparison it sends the same photos to POST /api/v1/predict
(kulit's answer without saving). Storage: the database (SQLite file + WAL after a checkpoint, or
pg_database_size less the empty schema) and the photo folder, per 1,000 cases.
Writes benchmarks/results/clinic.json (one entry per backend, merged with what is there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import (  # noqa: E402
    REPO,
    busy_neighbours,
    free_port,
    run_clients,
    sample_photos,
    stop_server,
    wait_healthy,
)

OUT = REPO / "benchmarks" / "results" / "clinic.json"
PASSWORD = "benchmark-password"


def setup_db(url: str, photo_dir: Path) -> str:
    """Migrate, add one health worker; its API token."""
    from kulit.clinic.auth import hash_password, issue_token
    from kulit.clinic.config import ClinicSettings
    from kulit.clinic.store import add_user, open_store

    store = open_store(ClinicSettings(database_url=url, photo_dir=photo_dir))
    with store.session() as db:
        token = issue_token(db, add_user(db, "bench", "health_worker", "Puskesmas Bench",
                                         hash_password(PASSWORD)))
    store.engine.dispose()
    return token


def db_bytes(url: str) -> int:
    from sqlalchemy import text

    from kulit.clinic.db import make_engine, sqlite_path

    path = sqlite_path(url)
    if path is not None:  # outside SQLAlchemy's transaction: a checkpoint cannot run in one
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    engine = make_engine(url)
    with engine.connect() as c:
        size = int(c.execute(text("SELECT pg_database_size(current_database())")).scalar() or 0)
    engine.dispose()
    return size


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else 0


def run(base: str, path: str, photos: list[tuple[str, bytes]], n: int, conc: int,
        token: str, fields: dict[str, str]) -> dict[str, Any]:
    """n requests from conc threads, photo i % len(photos) each: rate and latency."""
    lat = np.full(n, np.nan)
    codes: list[int] = [0] * n
    nxt = iter(range(n))
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=120.0,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                name, data = photos[i % len(photos)]
                t = time.perf_counter()
                r = c.post(path, data=fields, files={"image": (name, data, "image/jpeg")})
                lat[i] = 1000 * (time.perf_counter() - t)
                codes[i] = r.status_code

    wall = run_clients(lambda _: worker(), conc)
    ok = [c for c in codes if c in (200, 201)]
    return {"requests": n, "concurrency": conc, "ok": len(ok),
            "errors": {str(c): codes.count(c) for c in sorted(set(codes)) if c not in (200, 201)},
            "per_s": round(len(ok) / wall, 2), "wall_s": round(wall, 2),
            "p50_ms": round(float(np.nanpercentile(lat, 50)), 1),
            "p90_ms": round(float(np.nanpercentile(lat, 90)), 1),
            "p99_ms": round(float(np.nanpercentile(lat, 99)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "kulit-skin8")
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--photos", type=int, default=200, help="distinct skin8 photos cycled")
    ap.add_argument("--database-url", default=None, help="an empty database [SQLite in a "
                    "temporary folder]")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="kulit-clinic-bench-"))
    url = args.database_url or f"sqlite:///{tmp}/clinic.db"
    photo_dir = tmp / "photos"
    token = setup_db(url, photo_dir)
    empty_db = db_bytes(url)
    photos = sample_photos(args.photos, seed=0)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "server.log"
    env = {**os.environ, "KULIT_CLINIC_PHOTO_DIR": str(photo_dir),
           # every client thread is 127.0.0.1: no per-client cap below the thread count
           "KULIT_MAX_UPLOADS_PER_CLIENT": str(max(4, 2 * args.concurrency))}
    kulit = Path(sys.executable).with_name("kulit")
    with log.open("wb") as f:
        proc = subprocess.Popen([str(kulit), "serve", "--clinic", "--database-url", url,
                                 "--model", str(args.model), "--port", str(port)],
                                stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        health = wait_healthy(base, proc, log)
        fields = {"consent": "true", "body_site": "arm", "age_band": "25-44"}
        run(base, "/api/v1/cases", photos, 20, 1, token, fields)  # warm-up (kept: counted)
        saved = run(base, "/api/v1/cases", photos, args.cases, args.concurrency, token, fields)
        predict = run(base, "/api/v1/predict", photos, min(args.cases, 500), args.concurrency,
                      token, {})
        single = run(base, "/api/v1/cases", photos, 100, 1, token, fields)
    finally:
        stop_server(proc)
    n_cases = 20 + args.cases + 100
    db_total = db_bytes(url)
    photo_total = dir_bytes(photo_dir)
    backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    entry = {
        "backend": backend,
        "model": health.get("model"),
        "cases_stored": n_cases,
        "save": saved,
        "save_concurrency_1": single,
        "predict_only": predict,
        "storage": {
            "db_bytes_per_1000_cases": round((db_total - empty_db) / n_cases * 1000),
            "photo_bytes_per_1000_cases": round(photo_total / n_cases * 1000),
            "total_mb_per_1000_cases": round((db_total - empty_db + photo_total)
                                             / n_cases * 1000 / 2**20, 2),
            "mean_photo_kb": round(photo_total / max(1, len(list(photo_dir.iterdir()))) / 1024,
                                   1),
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "busy_neighbours": busy_neighbours()},
        "command": "python benchmarks/clinic.py " + " ".join(  # no password in the file
            a if not a.startswith("postgres") else "postgresql://USER@HOST/DB"
            for a in sys.argv[1:]),
    }
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    results[backend] = entry
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
