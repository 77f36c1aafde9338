"""`kulit serve --replicas N` / `--autoscale MIN,MAX`: the same app as Ray Serve replicas.

Each replica builds the whole FastAPI app (pages, API, docs, static files) with
`kulit.web.app.create_app`, from a copy of the model folder shipped through the object store;
Ray Serve's proxy takes HTTP on one address and spreads the requests over the replicas.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from kulit.errors import KulitError
from kulit.scale import import_ray
from kulit.scale.cluster import connect, materialize, model_files

APP_NAME = "kulit"


def parse_autoscale(text: str) -> tuple[int, int]:
    """"MIN,MAX" -> (MIN, MAX), 1 <= MIN <= MAX; or a KulitError."""
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise KulitError(f"--autoscale {text}: expected MIN,MAX such as 1,4") from None
    if not 1 <= lo <= hi:
        raise KulitError(f"--autoscale {text}: need 1 <= MIN <= MAX")
    return lo, hi


class KulitReplica:
    """One replica: the model folder on this machine and the app built on it."""

    def __init__(self, files_ref: list[Any], settings: dict[str, Any]) -> None:
        import ray

        self.folder = materialize(ray.get(files_ref[0]))  # kept: the app serves its files
        self.settings = settings

    def __serve_build_asgi_app__(self) -> Any:
        from kulit.cli import tune_allocator
        from kulit.web.app import create_app
        from kulit.web.settings import Settings

        tune_allocator()
        return create_app(Settings(**{**self.settings, "model_dir": self.folder}))

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "folder", ""), ignore_errors=True)


def build_app(model: Path, *, replicas: int | None = None,
              autoscale: tuple[int, int] | None = None, settings: Any = None) -> Any:
    """The Ray Serve application (bound deployment) for `model`; Ray must be connected."""
    ray = import_ray()
    from ray import serve

    from kulit.web.settings import Settings

    settings = settings or Settings(model_dir=model)
    scaling: dict[str, Any] = (
        {"autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                "target_ongoing_requests": 4}}
        if autoscale else {"num_replicas": replicas or 1})
    deployment: Any = serve.deployment(
        serve.ingress()(KulitReplica), name=APP_NAME,
        # the app bounds its own uploads (503 past max_concurrent_uploads); let them reach it
        max_ongoing_requests=settings.max_concurrent_uploads,
        ray_actor_options={"num_cpus": 1}, **scaling)
    return deployment.bind([ray.put(model_files(model))], settings.model_dump())


def run_serve(model: Path, *, host: str, port: int, replicas: int | None,
              autoscale: str | None, address: str | None,
              one_process_only: bool = False) -> None:
    """Start the replicas behind one address and wait until Ctrl+C."""
    if one_process_only:
        raise KulitError("--clinic and --ssl-certfile run in one process, not with --replicas "
                         "or --autoscale (put TLS on the load balancer in front)")
    if replicas is not None and autoscale is not None:
        raise KulitError("give --replicas N or --autoscale MIN,MAX, not both")
    bounds = parse_autoscale(autoscale) if autoscale is not None else None
    from kulit.serving.predict import Predictor

    Predictor(model)  # a bad model folder fails here, before any replica starts
    ray = import_ray()
    from ray import serve

    started = connect(address)
    # `kill`, systemd and docker stop with SIGTERM: stop the replicas as Ctrl+C does
    signal.signal(signal.SIGTERM, _stop)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(model, replicas=replicas, autoscale=bounds), name=APP_NAME,
                  route_prefix="/")
        how = (f"{replicas or 1} replicas" if bounds is None
               else f"{bounds[0]} to {bounds[1]} replicas")
        print(f"kulit: serving {model} as {how} on http://{host}:{port}  (Ctrl+C stops)",
              file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call, unused-ignore]
        if started:
            ray.shutdown()


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
