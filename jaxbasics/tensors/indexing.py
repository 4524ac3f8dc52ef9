"""Scatter and one-hot: ``Tensor.scatter_`` that refuses bad indices, ``F.one_hot``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxbasics.tensors._checks import _is_traced, _normalize_dim
from jaxbasics.tensors.creation import zeros


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
      >>> from jaxbasics.tensors import tensor, zeros
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
      >>> from jaxbasics.tensors import tensor, zeros
      >>> one_hot(tensor([0, 2, 1]), 3)
      Array([[1., 0., 0.],
             [0., 0., 1.],
             [0., 1., 0.]], dtype=float32)
    """
    indices = jnp.asarray(indices)
    return scatter(zeros((*indices.shape, num_classes)), -1, indices[..., None], 1.0)
