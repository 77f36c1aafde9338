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
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs.update(include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise KulitError(f"cannot reach the Ray cluster at {address}: {e}") from None
    return True


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
