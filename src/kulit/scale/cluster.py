"""Joining a Ray cluster, and the model folder that travels to every actor and replica.

The folder (a few MB) goes through Ray's object store, so worker machines need kulit installed
but not the model on their disks.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from kulit.errors import KulitError
from kulit.scale import import_ray


def connect(address: str | None) -> bool:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start one on this machine
    bound to 127.0.0.1. True if this call started Ray (and so should stop it)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address is None and not os.environ.get("RAY_ADDRESS"):
        start_local()
        return True
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as e:
        raise KulitError(f"cannot reach the Ray cluster at {address}: {e}") from None
    return True


def start_local(num_cpus: int | None = None, tries: int = 3, **kwargs: Any) -> None:
    """A Ray node on this machine only (127.0.0.1, no dashboard). Ray gives its raylet 30 s
    to register, which a busy machine can miss: then it is started again."""
    ray = import_ray()
    for attempt in range(tries):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                     logging_level=logging.WARNING, **kwargs)
            return
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
            ray.shutdown()
            if "timed out during startup" not in str(e) or attempt == tries - 1:
                raise KulitError(f"cannot start Ray on this machine: {e}") from None


def model_files(model_dir: Path) -> dict[str, bytes]:
    """The model folder's files, to put in the object store once."""
    return {f.name: f.read_bytes() for f in sorted(Path(model_dir).iterdir())
            if f.is_file() and not f.name.startswith(".")}


def materialize(files: dict[str, bytes]) -> Path:
    """The shipped files as a model folder on this machine (a new temporary folder)."""
    folder = Path(tempfile.mkdtemp(prefix="kulit-model-"))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder
