"""Tensor basics: creation, shape, concatenation, layout, scatter, one-hot, in-place.

JAX arrays are immutable: every function here returns a new array and none
modifies its arguments. Where PyTorch mutates in place (``scatter_``,
``Y[:] = ...``, ``X += Y``), the JAX way is a pure function plus, when the memory
matters, buffer donation to ``jax.jit`` (see :func:`add_`).

Errors follow PyTorch where PyTorch raises (a bad ``reshape``, ``item`` on many
elements, an out-of-range ``scatter`` index), and each message says what was
expected, what was received and how to fix it.

The functions live in four small modules, grouped like the notes' sections, and are all
importable from here: :mod:`~jaxbasics.tensors.creation` (``arange``, ``randn``, ``zeros``...),
:mod:`~jaxbasics.tensors.shape` (``reshape``, ``cat``, the NCHW/NHWC converters...),
:mod:`~jaxbasics.tensors.indexing` (``scatter``, ``one_hot``) and
:mod:`~jaxbasics.tensors.memory` (``add_``).
"""

from jaxbasics.tensors.creation import arange, normal, ones, randn, tensor, zeros, zeros_like
from jaxbasics.tensors.indexing import one_hot, scatter
from jaxbasics.tensors.memory import add_
from jaxbasics.tensors.shape import (
    bchw_to_bhwc,
    bhwc_to_bchw,
    cat,
    flatten_vectors,
    item,
    numel,
    reshape,
)

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
