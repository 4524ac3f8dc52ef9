"""Saving memory: PyTorch's in-place ``X += Y`` as a jitted add that donates ``X``'s buffer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

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
      >>> from jaxbasics.tensors import arange
      >>> x = arange(4)
      >>> before = x.unsafe_buffer_pointer()
      >>> x = add_(x, 1.0)
      >>> x, x.unsafe_buffer_pointer() == before
      (Array([1., 2., 3., 4.], dtype=float32), True)
    """
    return _add_donating(x, y)
