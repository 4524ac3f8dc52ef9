"""Creating tensors: ``torch.arange``, ``randn``, ``tensor``, ``zeros``, ``ones`` and friends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxbasics.tensors._checks import Shape, _as_shape, _is_traced


def arange(n: int, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """Evenly spaced values ``0, 1, ..., n - 1`` (``torch.arange(n, dtype=torch.float32)``).

    Args:
      n: the end of the interval (excluded).
      dtype: the element type; float32 by default, like the notes.

    Returns:
      A 1-D array of shape ``(n,)``.

    Example:
      >>> arange(12)
      Array([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11.], dtype=float32)
    """
    return jnp.arange(n, dtype=dtype)


def randn(key: jax.Array, *shape: int | Sequence[int]) -> jax.Array:
    """Standard normal samples N(0, 1) (``torch.randn(*shape)``), with an explicit key.

    Unlike PyTorch there is no global generator: the same ``key`` gives the same
    numbers. Split the key (``jax.random.split``) to get fresh numbers.

    Args:
      key: a ``jax.random.key``.
      *shape: the sizes, either as separate ints (``randn(key, 3, 4)``) or as one
        tuple (``randn(key, (3, 4))``), like ``torch.randn``.

    Returns:
      A float32 array of the given shape.

    Example:
      >>> x = randn(jax.random.key(0), 3, 4)
      >>> x.shape, x.dtype
      ((3, 4), dtype('float32'))
      >>> bool((x == randn(jax.random.key(0), (3, 4))).all())
      True
    """
    if len(shape) == 1 and not isinstance(shape[0], int | np.integer):
        dims = _as_shape(shape[0])
    else:
        dims = _as_shape(shape)  # type: ignore[arg-type]
    return jax.random.normal(key, dims)


def normal(
    key: jax.Array, shape: Shape, mean: ArrayLike = 0.0, variance: ArrayLike = 1.0
) -> jax.Array:
    """Samples of N(mean, variance), computed as ``mean + sqrt(variance) * X``, X ~ N(0, 1).

    This is the notes' ``mean + torch.sqrt(torch.tensor(variance)) * torch.randn(...)``.
    Note the second parameter is the *variance*; ``torch.normal`` and
    ``jax.random.normal`` scale by the standard deviation instead.

    Args:
      key: a ``jax.random.key``.
      shape: the output shape.
      mean: the mean (broadcasts against ``shape``).
      variance: the variance, >= 0 (broadcasts against ``shape``).

    Returns:
      A float32 array of shape ``shape``.

    Raises:
      ValueError: if a concrete ``variance`` is negative.

    Example:
      >>> z = normal(jax.random.key(0), (100_000,), mean=5.0, variance=2.0)
      >>> round(float(z.mean()), 1), round(float(z.var()), 1)
      (5.0, 2.0)
    """
    if not _is_traced(variance) and np.any(np.asarray(variance) < 0):
        raise ValueError(
            f"normal: variance must be >= 0, got {variance!r}. Pass the variance "
            "(the squared standard deviation), not a signed scale."
        )
    x = jax.random.normal(key, _as_shape(shape))
    return mean + jnp.sqrt(jnp.asarray(variance, x.dtype)) * x


def tensor(data: Any, dtype: DTypeLike | None = None) -> jax.Array:
    """An array holding a copy of ``data`` (``torch.tensor(data)``).

    Python floats become float32 and Python ints int32 (PyTorch uses int64; JAX
    keeps 32 bits unless x64 is enabled).

    Args:
      data: a (nested) list, tuple, scalar or array.
      dtype: optional element type.

    Returns:
      A new array.

    Example:
      >>> tensor([[2, 1, 4, 3], [1, 2, 3, 4], [4, 3, 2, 1]])
      Array([[2, 1, 4, 3],
             [1, 2, 3, 4],
             [4, 3, 2, 1]], dtype=int32)
    """
    return jnp.array(data, dtype=dtype)


def zeros(shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """An all-zero array (``torch.zeros(shape)``).

    Args:
      shape: an int or a tuple of ints.
      dtype: the element type, float32 by default.

    Returns:
      An array of zeros of shape ``shape``.

    Example:
      >>> zeros((2, 3, 4)).shape
      (2, 3, 4)
    """
    return jnp.zeros(_as_shape(shape), dtype=dtype)


def ones(shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """An all-one array (``torch.ones(shape)``).

    Args:
      shape: an int or a tuple of ints.
      dtype: the element type, float32 by default.

    Returns:
      An array of ones of shape ``shape``.

    Example:
      >>> ones((2, 3))
      Array([[1., 1., 1.],
             [1., 1., 1.]], dtype=float32)
    """
    return jnp.ones(_as_shape(shape), dtype=dtype)


def zeros_like(x: ArrayLike) -> jax.Array:
    """Zeros with the shape and dtype of ``x`` (``torch.zeros_like(x)``).

    Args:
      x: an array.

    Returns:
      An array of zeros like ``x``.

    Example:
      >>> zeros_like(jnp.ones((2, 2), jnp.int32))
      Array([[0, 0],
             [0, 0]], dtype=int32)
    """
    return jnp.zeros_like(x)
