"""Argument checks shared by the tensor functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

Shape = int | Sequence[int]


def _as_shape(shape: Shape) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer):
        return (int(shape),)
    return tuple(int(s) for s in shape)


def _normalize_dim(dim: int, ndim: int, fn: str) -> int:
    # AxisError is both a ValueError and an IndexError (torch raises IndexError here).
    if not -ndim <= dim < ndim:
        raise np.exceptions.AxisError(
            f"{fn}: dim {dim} is out of range for an array with {ndim} axes; "
            f"expected a dim in [{-ndim}, {ndim - 1}]."
        )
    return dim % ndim


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)
