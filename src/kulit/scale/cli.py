"""The `--engine`, `--address`, `--out`, `--replicas` options of `kulit predict|evaluate|serve`,
checked here so cli.py only hands them over."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kulit.errors import KulitError

ENGINES = ("local", "ray")


def check_engine(engine: str, **ray_only: object) -> bool:
    """True for Ray; a clear error for an unknown engine or a Ray option without it."""
    if engine not in ENGINES:
        raise KulitError(f"--engine {engine}: use one of {', '.join(ENGINES)}")
    given = [name for name, v in ray_only.items() if v is not None]
    if engine == "local" and given:
        raise KulitError(f"--{given[0].replace('_', '-')} needs --engine ray")
    return engine == "ray"


def predict_on_engine(engine: str, paths: list[Path], model: Path, *, top_k: int, int8: bool,
                      out: Path | None, address: str | None, heatmap_dir: Path | None,
                      batch_size: int, workers: int | None) -> int:
    """`kulit predict --engine ray ...` (the local engine never comes here)."""
    check_engine(engine, address=address, out=out)
    if heatmap_dir is not None:
        raise KulitError("--heatmap-dir works with the local engine only")
    from kulit.scale.batch import RayOptions, run_ray_predict

    return run_ray_predict(paths, model, top_k=top_k, int8=int8, out=out,
                           opts=RayOptions(address=address, actors=workers,
                                           batch_size=batch_size))


def evaluate_on_engine(engine: str, model: Path, *, address: str | None
                       ) -> Callable[[list[Path]], Iterator[Any]]:
    """`kulit evaluate --engine ray`: the photos' predictions, computed on Ray."""
    check_engine(engine, address=address)
    from kulit.scale import import_ray
    from kulit.scale.batch import RayOptions, ray_predict_fn

    import_ray()
    return ray_predict_fn(model, RayOptions(address=address))
