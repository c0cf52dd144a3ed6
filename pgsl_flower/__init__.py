"""pgsl-flower: federated split learning with the PGSL defense, as a Flower app.

``SplitFed`` / ``SequentialSplit`` (:mod:`pgsl_flower.api`) run the schedules in a
ServerApp of your own; ``simulate`` runs the built-in app in simulation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SequentialSplit", "SplitFed", "SplitResult", "SplitStrategy", "simulate"]

if TYPE_CHECKING:
    from pgsl_flower.api import SequentialSplit, SplitFed, SplitStrategy
    from pgsl_flower.result import SplitResult

_LAZY = {
    "SplitFed": "pgsl_flower.api",
    "SequentialSplit": "pgsl_flower.api",
    "SplitStrategy": "pgsl_flower.api",
    "SplitResult": "pgsl_flower.result",
}


def __getattr__(name: str) -> Any:
    """Import the API on first use (``import pgsl_flower`` stays light: no Flower, no torch)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pgsl_flower' has no attribute {name!r}")


def simulate(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """Run a simulation; see :func:`pgsl_flower.simulation.simulate`."""
    from pgsl_flower.simulation import simulate as _simulate

    return _simulate(*args, **kwargs)
