"""More than one machine: batch prediction on Ray Data and replicated serving on Ray Serve.

Optional: needs the `scale` extra (`pip install 'kulit[scale]'`). Nothing outside this
sub-package imports ray, and here it is imported only when a command asks for `--engine ray`
or `--replicas`, so a plain install never needs it.
"""

from __future__ import annotations

from types import ModuleType

from kulit.errors import KulitError


def import_ray() -> ModuleType:
    """`ray`, or one clear line saying which extra to install."""
    try:
        import ray
    except ImportError:
        raise KulitError("--engine ray needs the scale extra (ray is missing): "
                         "pip install 'kulit[scale]'") from None
    return ray
