"""Names the benchmarks need from kulit, wherever the package keeps them.

The refactor moves the training config to `kulit.config` and the metric helpers to
`kulit.metrics`; the benchmarks run on either layout. Drop this file once both are merged.
"""

from __future__ import annotations

try:
    from kulit.config import TrainConfig, make_config
except ImportError:  # before the refactor
    from kulit.train import TrainConfig, make_config  # type: ignore[no-redef]

try:
    from kulit.metrics import clean_json
except ImportError:  # before the refactor
    from kulit.evaluate import _clean as clean_json  # type: ignore[no-redef]

__all__ = ["TrainConfig", "clean_json", "make_config"]
