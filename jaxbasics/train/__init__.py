"""Training, checkpoints and trained models: ``fit`` a run, then ``load`` or ``export`` it.

``import jaxbasics.train`` stays light; the names below import their modules when first used.

>>> from jaxbasics import train
>>> train.load.__module__
'jaxbasics.train.io'
"""

from __future__ import annotations

from typing import Any

__all__ = ["export", "fit", "load"]


def __getattr__(name: str) -> Any:
    if name in ("load", "export"):
        from jaxbasics.train import io

        return getattr(io, name)
    if name == "fit":
        from jaxbasics.train.loop import fit

        return fit
    raise AttributeError(f"module 'jaxbasics.train' has no attribute {name!r}")
