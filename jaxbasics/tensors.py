"""Tensor basics: creation, shape, concatenation, layout, scatter, one-hot, in-place.

JAX arrays are immutable: every function here returns a new array and none
modifies its arguments. Where PyTorch mutates in place (``scatter_``,
``Y[:] = ...``, ``X += Y``), the JAX way is a pure function plus, when the memory
matters, buffer donation to ``jax.jit`` (see :func:`add_`).

Errors follow PyTorch where PyTorch raises (a bad ``reshape``, ``item`` on many
elements, an out-of-range ``scatter`` index), and each message says what was
expected, what was received and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

__all__ = [
    "add_",
    "arange",
    "bchw_to_bhwc",
    "bhwc_to_bchw",
    "cat",
    "flatten_vectors",
    "item",
    "normal",
    "numel",
    "one_hot",
    "ones",
    "randn",
    "reshape",
    "scatter",
    "tensor",
    "zeros",
    "zeros_like",
]

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


# --------------------------------------------------------------------------- creation


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


# --------------------------------------------------------------------------- shape


def numel(x: ArrayLike) -> int:
    """The number of elements (``x.numel()``).

    Args:
      x: an array.

    Returns:
      The product of the sizes of all axes, as a Python int.

    Example:
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


# --------------------------------------------------------------------------- layout


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


# --------------------------------------------------------------------------- scatter


def _check_index_range(index: jax.Array, d: int, size: int, dim: int) -> None:
    idx = np.asarray(index)
    bad = (idx < 0) | (idx >= size)
    if bad.any():
        where = tuple(int(p) for p in np.argwhere(bad)[0])
        raise IndexError(
            f"scatter: index value {int(idx[where])} (at position {where} of index) is out "
            f"of range for dim {dim} of size {size}; valid index values are 0..{size - 1}. "
            "Negative indices are not wrapped (torch.scatter rejects them too)."
        )


def scatter(x: ArrayLike, dim: int, index: ArrayLike, src: ArrayLike) -> jax.Array:
    """Write ``src`` into a copy of ``x`` at ``index`` along ``dim`` (``torch.Tensor.scatter``).

    For a 3-D ``x`` and every position (i, j, k) of ``index``::

      out[index[i][j][k]][j][k] = src[i][j][k]  # if dim == 0
      out[i][index[i][j][k]][k] = src[i][j][k]  # if dim == 1
      out[i][j][index[i][j][k]] = src[i][j][k]  # if dim == 2

    and likewise for any rank. As in PyTorch, ``index`` has the rank of ``x`` and
    may be smaller than ``x`` on the other axes; an array ``src`` must be at least
    as large as ``index`` on every axis (only its leading ``index.shape`` block
    is used). Where ``index`` repeats a target, which value wins is unspecified,
    as in PyTorch. ``src`` is cast to ``x.dtype``. The in-place ``x.scatter_``
    becomes ``x = scatter(x, ...)``.

    Out-of-range indices: PyTorch raises for any index outside ``[0, size)``,
    negative ones included (they are not wrapped). Here, with concrete indices,
    ``IndexError`` is raised likewise. Under ``jax.jit`` the indices are traced
    and cannot be checked, so every update whose index is negative or ``>= size``
    is dropped: it writes nothing and leaves all other entries intact. Wrap the
    call in :func:`jaxbasics.debug.checked` to turn that into an error.

    Args:
      x: the array to scatter into.
      dim: the axis that ``index`` addresses; negative values count from the end.
      index: an integer array with ``index.ndim == x.ndim`` and
        ``index.shape[a] <= x.shape[a]`` for every axis ``a != dim``.
      src: the values, either an array with ``src.shape[a] >= index.shape[a]``
        for all ``a`` or a scalar written at every indexed position.

    Returns:
      A new array with the shape and dtype of ``x``.

    Raises:
      TypeError: if ``index`` is not an integer array.
      ValueError: if the ranks or sizes of ``index`` / ``src`` don't fit ``x``.
      IndexError: for a concrete index value outside ``[0, x.shape[dim])``.

    Example:
      >>> scatter(zeros((2, 3)), 1, tensor([[2], [0]]), 1.0)
      Array([[0., 0., 1.],
             [1., 0., 0.]], dtype=float32)
      >>> scatter(zeros((3, 2)), 0, tensor([[1, 2]]), tensor([[5.0, 6.0]]))
      Array([[0., 0.],
             [5., 0.],
             [0., 6.]], dtype=float32)
    """
    x = jnp.asarray(x)
    index = jnp.asarray(index)
    if not jnp.issubdtype(index.dtype, jnp.integer):
        raise TypeError(
            f"scatter: index must be an integer array, got dtype {index.dtype}. "
            "Cast it with index.astype(jnp.int32)."
        )
    if x.ndim == 0:
        raise ValueError("scatter: x must have at least one axis, got a scalar (shape ()).")
    d = _normalize_dim(dim, x.ndim, "scatter")
    if index.ndim != x.ndim:
        raise ValueError(
            f"scatter: index must have as many axes as x; x has shape {x.shape} but index "
            f"has shape {index.shape}. Add axes to index, e.g. index[:, None] for dim=1."
        )
    for a in range(x.ndim):
        if a != d and index.shape[a] > x.shape[a]:
            raise ValueError(
                f"scatter: index shape {index.shape} is larger than x shape {x.shape} on "
                f"axis {a} (only dim={dim} may exceed x). Make index at most x's size there."
            )
    if np.ndim(src) == 0:
        values = jnp.asarray(src, dtype=x.dtype)
    else:
        src = jnp.asarray(src)
        if src.ndim != x.ndim or any(s < i for s, i in zip(src.shape, index.shape, strict=True)):
            raise ValueError(
                f"scatter: src must be a scalar or an array with x's number of axes and at "
                f"least index's size on every axis; got src shape {src.shape}, index shape "
                f"{index.shape}, x shape {x.shape}."
            )
        values = src[tuple(slice(0, n) for n in index.shape)].astype(x.dtype)
    if not _is_traced(index) and index.size:
        _check_index_range(index, d, x.shape[d], dim)
    # Positions along the other axes come from index's own coordinates; the
    # open-mesh aranges broadcast against index without materialising a grid.
    coords = tuple(
        index if a == d else jnp.arange(n).reshape((1,) * a + (n,) + (1,) * (index.ndim - a - 1))
        for a, n in enumerate(index.shape)
    )
    return x.at[coords].set(values, mode="drop", wrap_negative_indices=False)


def one_hot(indices: ArrayLike, num_classes: int) -> jax.Array:
    """One-hot float32 encodings, built by scattering 1 along a new last axis.

    The notes' ``encodings = torch.zeros(N, K); encodings.scatter_(1, idx[:, None], 1)``.
    For indices in ``[0, num_classes)`` the result equals
    ``jax.nn.one_hot(indices, num_classes)``. It is jit-friendly: with concrete
    indices an out-of-range value raises ``IndexError`` (see :func:`scatter`);
    under ``jax.jit`` it is dropped, leaving an all-zero row, which is also what
    ``jax.nn.one_hot`` gives.

    Args:
      indices: an integer array of any shape, e.g. (N,) code indices.
      num_classes: the number of classes K.

    Returns:
      A float32 array of shape ``indices.shape + (num_classes,)``.

    Example:
      >>> one_hot(tensor([0, 2, 1]), 3)
      Array([[1., 0., 0.],
             [0., 0., 1.],
             [0., 1., 0.]], dtype=float32)
    """
    indices = jnp.asarray(indices)
    return scatter(zeros((*indices.shape, num_classes)), -1, indices[..., None], 1.0)


# --------------------------------------------------------------------------- saving memory

_add_donating = jax.jit(jnp.add, donate_argnums=0)


def add_(x: jax.Array, y: ArrayLike) -> jax.Array:
    """``x + y`` written into ``x``'s buffer, the JAX form of ``X += Y`` / ``X[:] = X + Y``.

    JAX arrays are immutable, so there is no ``Y[:] = ...``: write
    ``Y = Y.at[idx].set(v)`` (or ``.add``) to get an updated copy. To save the
    memory of that copy, donate the old array to a jitted function
    (``jax.jit(f, donate_argnums=0)``): XLA may then write the result into the
    donated buffer. This function does so for ``x + y``. After the call ``x`` is
    deleted and must not be used again; keep only the returned array, which
    (when its shape and dtype equal ``x``'s) lives at the same address, so
    ``x.unsafe_buffer_pointer()`` before equals the result's after. If ``y``
    broadcasts ``x`` to a larger shape or changes the dtype, the buffer cannot be
    reused and JAX warns that the donation was not usable.

    Inside another ``jax.jit`` donation is decided by the outer function, so
    donate there instead.

    Args:
      x: a ``jax.Array`` whose buffer is donated.
      y: the array or scalar to add.

    Returns:
      ``x + y``.

    Example:
      >>> x = arange(4)
      >>> before = x.unsafe_buffer_pointer()
      >>> x = add_(x, 1.0)
      >>> x, x.unsafe_buffer_pointer() == before
      (Array([1., 2., 3., 4.], dtype=float32), True)
    """
    return _add_donating(x, y)
