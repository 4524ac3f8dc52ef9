"""Shape and layout: ``numel``, ``reshape``, ``item``, ``cat``, NCHW <-> NHWC, ``view(-1, C)``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxbasics.tensors._checks import Shape, _as_shape, _normalize_dim


def numel(x: ArrayLike) -> int:
    """The number of elements (``x.numel()``).

    Args:
      x: an array.

    Returns:
      The product of the sizes of all axes, as a Python int.

    Example:
      >>> from jaxbasics.tensors import arange
      >>> numel(arange(12))
      12
    """
    return math.prod(np.shape(x))


def reshape(x: ArrayLike, shape: Shape) -> jax.Array:
    """The same values in a new shape, inferring one ``-1`` (``x.reshape(3, -1)``).

    Args:
      x: an array with ``n`` elements.
      shape: the target shape; at most one entry may be ``-1``, which is inferred
        so that the sizes match.

    Returns:
      An array of the target shape.

    Raises:
      ValueError: if more than one ``-1`` is given, if an entry is otherwise
        negative, or if ``n`` elements don't fit the target shape. The message
        names both shapes.

    Example:
      >>> from jaxbasics.tensors import arange
      >>> x = arange(12)
      >>> reshape(x, (3, 4)).shape, reshape(x, (-1, 4)).shape, reshape(x, (3, -1)).shape
      ((3, 4), (3, 4), (3, 4))
    """
    x = jnp.asarray(x)
    target = _as_shape(shape)
    n = x.size
    if target.count(-1) > 1:
        raise ValueError(
            f"reshape: only one dimension can be inferred (-1), got shape {target} for an "
            f"array of shape {x.shape}. Give all but one size explicitly."
        )
    if any(s < -1 for s in target):
        raise ValueError(
            f"reshape: invalid size in shape {target} for an array of shape {x.shape}; "
            "sizes must be >= 0, or -1 for the one inferred size."
        )
    known = math.prod(s for s in target if s != -1)
    if -1 in target:
        if known == 0 or n % known:
            raise ValueError(
                f"reshape: cannot reshape an array of shape {x.shape} ({n} elements) into "
                f"shape {target}: {n} is not a multiple of {known}, the product of the "
                "given sizes. Pick sizes whose product divides the number of elements."
            )
        target = tuple(n // known if s == -1 else s for s in target)
    elif known != n:
        raise ValueError(
            f"reshape: cannot reshape an array of shape {x.shape} ({n} elements) into "
            f"shape {target} ({known} elements). Sizes must multiply to {n}; use -1 to "
            "infer one of them."
        )
    return x.reshape(target)


def item(x: ArrayLike) -> int | float | bool | complex:
    """The single value of a one-element array as a Python number (``x.item()``).

    Like PyTorch this blocks until the value is computed and copies it to the
    host, so it cannot be used inside ``jax.jit``.

    Args:
      x: an array with exactly one element (any shape, e.g. ``()`` or ``(1,)``).

    Returns:
      A Python scalar.

    Raises:
      ValueError: if ``x`` has more or fewer than one element.

    Example:
      >>> from jaxbasics.tensors import tensor
      >>> item(tensor([1.0]))
      1.0
    """
    size = math.prod(np.shape(x))
    if size != 1:
        raise ValueError(
            f"item: expected an array with exactly one element, got shape {np.shape(x)} "
            f"({size} elements). Index one element first, or use .tolist() for many."
        )
    return np.asarray(x).item()


def cat(xs: Sequence[ArrayLike], dim: int = 0) -> jax.Array:
    """Concatenate arrays along an existing axis (``torch.cat(xs, dim=dim)``).

    Args:
      xs: a non-empty sequence of arrays of the same rank whose sizes agree on
        every axis except ``dim``.
      dim: the axis to join along; negative values count from the end.

    Returns:
      An array whose ``dim`` size is the sum of the inputs' ``dim`` sizes.

    Raises:
      ValueError: if ``xs`` is empty, the ranks differ, or a non-``dim`` axis
        differs; the message names the axis and the shapes.

    Example:
      >>> from jaxbasics.tensors import arange, tensor
      >>> X = reshape(arange(12), (3, 4))
      >>> Y = tensor([[2.0, 1, 4, 3], [1, 2, 3, 4], [4, 3, 2, 1]])
      >>> cat((X, Y), dim=0).shape, cat((X, Y), dim=1).shape
      ((6, 4), (3, 8))
    """
    arrays = [jnp.asarray(a) for a in xs]
    if not arrays:
        raise ValueError("cat: expected a non-empty sequence of arrays, got an empty one.")
    shapes = [a.shape for a in arrays]
    ndim = arrays[0].ndim
    for i, a in enumerate(arrays[1:], start=1):
        if a.ndim != ndim:
            raise ValueError(
                f"cat: all arrays must have the same number of axes; array 0 has shape "
                f"{shapes[0]} ({ndim} axes) but array {i} has shape {a.shape} ({a.ndim} "
                "axes). Reshape or add axes (x[None]) so the ranks match."
            )
    if ndim == 0:
        raise ValueError("cat: zero-dimensional arrays cannot be concatenated; use jnp.stack.")
    d = _normalize_dim(dim, ndim, "cat")
    for axis in range(ndim):
        sizes = {s[axis] for s in shapes}
        if axis != d and len(sizes) > 1:
            raise ValueError(
                f"cat: sizes must match on every axis except dim={dim}, but axis {axis} "
                f"differs: shapes {shapes}. Concatenate along axis {axis} instead, or "
                "make the sizes equal."
            )
    return jnp.concatenate(arrays, axis=d)


def _check_4d(x: jax.Array, fn: str, layout: str, fix: str) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{fn}: expected a 4-D array in {layout} layout, got shape {x.shape} "
            f"({x.ndim} axes). {fix}"
        )


def bchw_to_bhwc(x: ArrayLike) -> jax.Array:
    """PyTorch layout (B, C, H, W) to JAX layout (B, H, W, C).

    The notes' ``inputs.permute(0, 2, 3, 1).contiguous()``. JAX arrays have no
    strides, so there is no ``.contiguous()``: XLA lays out (or fuses) the result
    itself. Convert once, at the edge; never apply this to data already in BHWC.

    Args:
      x: an array of shape (B, C, H, W).

    Returns:
      An array of shape (B, H, W, C).

    Raises:
      ValueError: if ``x`` is not 4-D.

    Example:
      >>> from jaxbasics.tensors import zeros
      >>> bchw_to_bhwc(zeros((256, 64, 8, 8))).shape
      (256, 8, 8, 64)
    """
    x = jnp.asarray(x)
    _check_4d(x, "bchw_to_bhwc", "(B, C, H, W)", "For a single image add a batch axis: x[None].")
    return jnp.transpose(x, (0, 2, 3, 1))


def bhwc_to_bchw(x: ArrayLike) -> jax.Array:
    """JAX layout (B, H, W, C) back to PyTorch layout (B, C, H, W) (``permute(0, 3, 1, 2)``).

    Args:
      x: an array of shape (B, H, W, C).

    Returns:
      An array of shape (B, C, H, W).

    Raises:
      ValueError: if ``x`` is not 4-D.

    Example:
      >>> from jaxbasics.tensors import zeros
      >>> bhwc_to_bchw(zeros((256, 8, 8, 64))).shape
      (256, 64, 8, 8)
    """
    x = jnp.asarray(x)
    _check_4d(x, "bhwc_to_bchw", "(B, H, W, C)", "For a single image add a batch axis: x[None].")
    return jnp.transpose(x, (0, 3, 1, 2))


def flatten_vectors(x: ArrayLike) -> jax.Array:
    """Flatten (..., C) into N = prod(...) rows of C-vectors (the notes' ``inputs.view(-1, C)``).

    Args:
      x: an array with at least one axis, e.g. (B, H, W, C).

    Returns:
      An array of shape (N, C) with N = B * H * W.

    Raises:
      ValueError: if ``x`` is a scalar.

    Example:
      >>> from jaxbasics.tensors import zeros
      >>> flatten_vectors(zeros((256, 8, 8, 64))).shape
      (16384, 64)
    """
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError(
            "flatten_vectors: expected an array of shape (..., C), got a scalar (shape ()). "
            "Add a feature axis: x[None]."
        )
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
