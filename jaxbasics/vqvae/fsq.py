"""Finite scalar quantisation (FSQ): each latent channel rounded to a few levels.

Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple" (2023). Instead of a learned
codebook, channel i of a latent vector is bounded to an interval that holds ``L_i`` integers
and rounded to the nearest one; the codes are every combination, ``K = prod(L_i)`` of them,
a fixed grid in ``D = len(levels)`` dimensions. Nothing is learned in the quantiser, so there
is no codebook loss, no commitment loss, no EMA and no dead code: every grid point is a
code, and the encoder reaches any of them by moving its output.

The steps, per channel of ``L`` levels (sec. 3 and the appendix's listing):

* bound: ``b = tanh(z + shift) * h - offset`` with ``h = (L - 1)(1 - eps) / 2``, ``offset =
  0.5`` for even ``L`` (0 for odd) and ``shift = atanh(offset / h)``, so that ``b(0) = 0``.
  ``b`` lies in ``(-h - offset, h - offset)``: rounding it gives the ``L`` integers
  ``-L//2 .. (L-1)//2``. (The paper's listing writes ``tan`` for the shift; ``atanh`` is
  the value that makes ``b(0) = 0``, and differs from it by 0.1% at ``L = 8``.) At ``L = 2``
  the range does not hold 0 (``offset / h > 1``: atanh would be NaN), so the shift is 0 there:
  the bound is centred on the boundary between the two codes, a sign with its full gradient
  at 0.
* round with a straight-through gradient: the forward value is ``round(b)``, the backward
  pass the identity, so ``dq/dz = b'(z) / (L//2)``;
* normalise: divide by the half width ``L//2``, so codes lie in ``[-1, 1]``.

A code's index is its digits ``round(b) + L//2`` (in ``0..L-1``) read in a mixed radix,
``index = sum_i digit_i * prod_{j<i} L_j``.

Quantisation runs in float32 whatever dtype the encoder computes in: rounding a bf16
``tanh`` loses codes (lucidrains/vector-quantize-pytorch issue #114).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxbasics.autodiff import straight_through
from jaxbasics.tensors import one_hot
from jaxbasics.vqvae.quantizer import Quantizer, QuantizerOutput, code_counts, perplexity

# The paper's eps: keeps the bound's ends away from the rounding boundaries.
EPS = 1e-3
# The most codes a level set may give: a run keeps per-code counts every step, and the
# codebook figure and the codes' fingerprint hold the whole (K, D) grid.
MAX_CODES = 65_536


def check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    """``levels`` as a tuple of ints, or a one-line ValueError saying what to fix.

    >>> check_levels([8, 5, 5, 5])
    (8, 5, 5, 5)
    >>> check_levels(np.array([8, 8]))  # numpy integers are integers too
    (8, 8)
    >>> check_levels((8, 1))
    Traceback (most recent call last):
    ...
    ValueError: FSQ levels must each be >= 2 (a level of 1 holds a single value), got (8, 1).
    """
    levels = tuple(int(n) if isinstance(n, np.integer) else n for n in levels)
    if not levels or not all(isinstance(n, int) and not isinstance(n, bool) for n in levels):
        raise ValueError(f"FSQ levels must be one or more integers, e.g. (8, 8, 8), got {levels}.")
    if min(levels) < 2:
        raise ValueError(
            f"FSQ levels must each be >= 2 (a level of 1 holds a single value), got {levels}."
        )
    if math.prod(levels) > MAX_CODES:
        raise ValueError(
            f"FSQ levels {levels} give {math.prod(levels)} codes; at most {MAX_CODES} are "
            "supported. Use fewer or smaller levels, e.g. (8, 8, 8) or (8, 5, 5, 5)."
        )
    return levels


def _levels(levels: Sequence[int]) -> jax.Array:
    return jnp.asarray(levels, jnp.float32)


def half_width(levels: Sequence[int]) -> jax.Array:
    """``L // 2`` per channel: the largest rounded magnitude, which normalises codes to [-1, 1].

    >>> half_width((8, 5, 2)).tolist()
    [4.0, 2.0, 1.0]
    """
    return jnp.floor(_levels(levels) / 2)


def basis(levels: Sequence[int]) -> jax.Array:
    """The mixed-radix place values ``(1, L_0, L_0 L_1, ...)`` of the channels' digits.

    >>> basis((8, 5, 5)).tolist()
    [1, 8, 40]
    """
    return jnp.cumprod(jnp.asarray((1, *levels[:-1]), jnp.int32))


def bound(z: jax.Array, levels: Sequence[int], eps: float = EPS) -> jax.Array:
    """``tanh(z + shift) * h - offset`` per channel: values whose rounding gives L integers.

    Args:
      z: (..., D) latents, D = len(levels).
      levels: L per channel.
      eps: how far inside the rounding boundaries the ends stay.

    Returns:
      (..., D) float32 values in ``(-h - offset, h - offset)``, ``h = (L - 1)(1 - eps) / 2``;
      0 maps to 0 (to -0.5 at L = 2).

    >>> bound(jnp.array([[0.0, 0.0, 0.0], [1e9, -1e9, 1e9]]), (8, 5, 2)).round(4).tolist()
    [[0.0, 0.0, -0.5], [2.9965, -1.998, -0.0005]]
    """
    levels = _levels(levels)
    h = (levels - 1) * (1 - eps) / 2
    offset = jnp.where(levels % 2 == 0, 0.5, 0.0)
    shift = jnp.arctanh(jnp.where(offset < h, offset / h, 0.0))  # 0 at L = 2: see above
    return jnp.tanh(z.astype(jnp.float32) + shift) * h - offset


def quantize(z: jax.Array, levels: Sequence[int]) -> jax.Array:
    """FSQ codes of ``z`` in [-1, 1]: ``round(bound(z)) / (L // 2)``, gradient straight through.

    The rounding uses :func:`jaxbasics.autodiff.straight_through`, so
    ``dq/dz = bound'(z) / (L // 2)``.

    Args:
      z: (..., D) latents.
      levels: L per channel.

    Returns:
      (..., D) float32 codes, multiples of ``1 / (L // 2)``.

    >>> quantize(jnp.array([0.3, -0.3, 5.0]), (8, 8, 8)).tolist()
    [0.25, -0.25, 0.75]
    """
    b = bound(z, levels)
    return straight_through(b, jnp.round(b)) / half_width(levels)


def codes_to_indices(codes: jax.Array, levels: Sequence[int]) -> jax.Array:
    """(..., D) codes in [-1, 1] -> (...) int32 indices in a mixed radix.

    >>> codes_to_indices(jnp.array([[-1.0, -1.0], [-0.75, -1.0], [-1.0, -0.5]]), (8, 5)).tolist()
    [0, 1, 8]
    """
    hw = half_width(levels)
    digits = jnp.round(codes * hw + hw).astype(jnp.int32)  # 0..L-1
    return jnp.sum(digits * basis(levels), axis=-1)


def indices_to_codes(indices: jax.Array, levels: Sequence[int]) -> jax.Array:
    """(...) int indices -> (..., D) float32 codes in [-1, 1]; inverse of :func:`codes_to_indices`.

    >>> indices_to_codes(jnp.array([0, 1, 8, 39]), (8, 5)).tolist()
    [[-1.0, -1.0], [-0.75, -1.0], [-1.0, -0.5], [0.75, 1.0]]
    """
    digits = (jnp.asarray(indices)[..., None] // basis(levels)) % jnp.asarray(levels, jnp.int32)
    hw = half_width(levels)
    return (digits - hw) / hw


def grid(levels: Sequence[int]) -> jax.Array:
    """The (K, D) implicit codebook: code ``k`` is row ``k``.

    >>> grid((2, 3)).tolist()
    [[-1.0, -1.0], [0.0, -1.0], [-1.0, 0.0], [0.0, 0.0], [-1.0, 1.0], [0.0, 1.0]]
    """
    return indices_to_codes(jnp.arange(math.prod(levels), dtype=jnp.int32), levels)


class FSQuantizer(Quantizer):
    """Finite scalar quantisation as a quantiser of the VQ-VAE (see the module docstring).

    Returns the :class:`~jaxbasics.vqvae.quantizer.QuantizerOutput` of the vector quantisers:
    ``quantized`` are the codes in [-1, 1] (straight-through), ``loss`` is 0 (FSQ has no
    codebook or commitment term), ``perplexity`` and ``encodings`` describe this batch's
    indices, and ``distances`` is None (FSQ rounds each channel; it never measures a distance
    to the K codes). Its ``codebook`` is the fixed grid of every code, (K, D), computed on
    demand; it has no parameters and no state.

    Args:
      levels: L per channel; D = len(levels) channels, K = prod(levels) codes.

    >>> fsq = FSQuantizer((8, 5, 5, 5))
    >>> fsq.num_embeddings, fsq.embedding_dim, fsq.codebook.shape
    (1000, 4, (1000, 4))
    >>> out = fsq(jnp.zeros((2, 3, 3, 4)))
    >>> out.indices.shape, float(out.loss)
    ((2, 3, 3), 0.0)
    """

    learned: ClassVar[bool] = False

    def __init__(self, levels: Sequence[int]):
        self.levels = check_levels(levels)
        self.num_embeddings = math.prod(self.levels)
        self.embedding_dim = len(self.levels)

    @property
    def codebook(self) -> jax.Array:
        return grid(self.levels)

    def _codes(self, z: jax.Array) -> jax.Array:
        if z.ndim < 2 or z.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"expected latents of shape (..., {self.embedding_dim}) (one channel per FSQ "
                f"level, levels {self.levels}), got shape {tuple(z.shape)}."
            )
        return quantize(z, self.levels)

    def indices(self, z: jax.Array) -> jax.Array:
        return codes_to_indices(self._codes(z), self.levels)

    def lookup(self, indices: jax.Array) -> jax.Array:
        return indices_to_codes(indices, self.levels)

    def __call__(self, z: jax.Array) -> QuantizerOutput:
        q = self._codes(z)
        idx = codes_to_indices(jax.lax.stop_gradient(q), self.levels)
        flat = idx.reshape(-1)
        return QuantizerOutput(
            quantized=q,
            indices=idx,
            encodings=one_hot(flat, self.num_embeddings),
            loss=jnp.zeros((), jnp.float32),
            perplexity=perplexity(code_counts(flat, self.num_embeddings)),
            distances=None,
        )
