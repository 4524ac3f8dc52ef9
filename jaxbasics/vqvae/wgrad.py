"""The CPU's stride-1 convolution: XLA's kernels, with the kernel gradient summed over batch chunks.

Part of the ``"im2col"`` convolution form (:mod:`jaxbasics.vqvae.layers`): XLA:CPU computes a
3x3 convolution's kernel gradient near the machine's rate while a chunk's operands stay in cache
(32 images of 8x8 feature maps), and 2-3x slower per image on a whole batch of 256. The forward
pass and the input gradient are unchanged; see ``docs/speed.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

Pairs = tuple[tuple[int, int], tuple[int, int]]


def padding_pairs(padding: int | Sequence[tuple[int, int]]) -> Pairs:
    """``((top, bottom), (left, right))`` for ``padding`` given as an int or as pairs.

    >>> padding_pairs(1), padding_pairs([(0, 1), (2, 3)])
    (((1, 1), (1, 1)), ((0, 1), (2, 3)))
    """
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    (top, bottom), (left, right) = padding
    return (int(top), int(bottom)), (int(left), int(right))


def _plain(x: jax.Array, kernel: jax.Array, padding: Pairs) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), list(padding), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


# Output positions (images x rows x columns) per chunk of a stride-1 convolution's weight
# gradient on the CPU: 32 images of the model's 8x8 feature maps (see chunked_wgrad_conv2d).
WGRAD_CHUNK_POSITIONS = 2048


def chunked_wgrad_conv2d(
    x: jax.Array,
    kernel: jax.Array,
    padding: int | Sequence[tuple[int, int]] = 0,
    chunk_positions: int | None = None,
) -> jax.Array:
    """A stride-1 NHWC/HWIO convolution whose kernel gradient is summed over batch chunks.

    The forward pass and the input gradient are XLA's convolutions of the whole batch, exactly
    as in :func:`conv2d_reference`. Only the kernel gradient ``sum_b x_b (*) g_b`` is taken
    chunk by chunk, each chunk of ``chunk_positions // (Ho * Wo)`` images by XLA's own
    weight-gradient convolution, and summed (in float32). XLA:CPU runs that convolution near
    the machine's rate while a chunk's operands stay in cache (batch 32 at 8x8), but 2-3x
    slower per image at batch 256 (enc conv3 128->128, forward + backward: 115 vs 280 ms);
    see ``docs/speed.md``. A batch of one chunk or less is just the plain convolution.

    Args:
      x: (B, H, W, cin).
      kernel: (kH, kW, cin, cout), ``nnx.Conv``'s HWIO kernel.
      padding: zeros added on every spatial side, or ``((top, bottom), (left, right))``.
      chunk_positions: output positions per kernel-gradient chunk (at least one image);
        default :data:`WGRAD_CHUNK_POSITIONS`.

    Returns:
      (B, Ho, Wo, cout), the same as ``conv2d_reference(x, kernel, None, 1, padding)``.

    >>> from jaxbasics.vqvae.layers import conv2d_reference
    >>> x = jax.random.normal(jax.random.key(1), (4, 4, 4, 3))
    >>> k = jax.random.normal(jax.random.key(2), (3, 3, 3, 2))
    >>> g = jax.grad(lambda k: jnp.sum(chunked_wgrad_conv2d(x, k, 1, 16) ** 2))(k)
    >>> g_plain = jax.grad(lambda k: jnp.sum(conv2d_reference(x, k, None, 1, 1) ** 2))(k)
    >>> bool(jnp.allclose(g, g_plain, atol=1e-4))
    True
    """
    pads = padding_pairs(padding)
    (top, bottom), (left, right) = pads
    ho = x.shape[1] + top + bottom - kernel.shape[0] + 1
    wo = x.shape[2] + left + right - kernel.shape[1] + 1
    if chunk_positions is None:
        chunk_positions = WGRAD_CHUNK_POSITIONS
    images = max(1, chunk_positions // max(1, ho * wo))
    if x.shape[0] <= images:
        return _plain(x, kernel, pads)
    return _chunked_wgrad_conv(x, kernel, pads, images)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _chunked_wgrad_conv(x, kernel, pads, images):
    return _plain(x, kernel, pads)


def _chunked_wgrad_conv_fwd(x, kernel, pads, images):
    return _plain(x, kernel, pads), (x, kernel)


def _chunked_wgrad_conv_bwd(pads, images, residuals, g):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: _plain(x, kernel, pads), x)
    (dx,) = input_vjp(g)
    dk = jnp.zeros(kernel.shape, jnp.float32)
    for start in range(0, x.shape[0], images):
        xs, gs = x[start : start + images], g[start : start + images]
        _, kernel_vjp = jax.vjp(lambda k, xs=xs: _plain(xs, k, pads), kernel)
        dk = dk + kernel_vjp(gs)[0].astype(jnp.float32)
    return dx, dk.astype(kernel.dtype)


_chunked_wgrad_conv.defvjp(_chunked_wgrad_conv_fwd, _chunked_wgrad_conv_bwd)


def chunked_wgrad_conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated``'s signature, evaluated by :func:`chunked_wgrad_conv2d`.

    What ``nnx.Conv(..., conv_general_dilated=...)`` calls for the stride-1 convolutions of
    the ``"im2col"`` form on the CPU. Only 2-D NHWC/HWIO stride-1 convolutions without
    dilation or groups are supported; anything else raises.

    >>> from flax import nnx
    >>> layer = nnx.Conv(3, 4, (3, 3), padding=1, rngs=nnx.Rngs(0),
    ...                  conv_general_dilated=chunked_wgrad_conv_general_dilated)
    >>> plain = nnx.Conv(3, 4, (3, 3), padding=1, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((1, 8, 8, 3))
    >>> bool(jnp.allclose(layer(x), plain(x), atol=1e-5))
    True
    """
    dilations = (tuple(lhs_dilation or (1, 1)), tuple(rhs_dilation or (1, 1)))
    if (
        lhs.ndim != 4
        or tuple(window_strides) != (1, 1)
        or dilations != ((1, 1), (1, 1))
        or feature_group_count != 1
    ):
        raise NotImplementedError(
            "the chunked weight-gradient convolution supports 2-D stride-1 convolutions with "
            f"no dilation and no feature groups; got strides {tuple(window_strides)}, "
            f"dilations {dilations}, groups {feature_group_count}. Use conv_form='xla'."
        )
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    return chunked_wgrad_conv2d(lhs, rhs, padding)
