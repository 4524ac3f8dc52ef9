"""Autodiff the functional way: the notes' examples, gradient accumulation, VQ estimators.

PyTorch records operations on tensors marked ``requires_grad`` and, on
``y.backward()``, *adds* the gradient into each leaf's ``.grad`` buffer. JAX has
no such buffer: ``jax.grad(f)`` is a new function whose return value is the
gradient. Nothing is stored on the inputs, so there is nothing to zero
(``x.grad.zero_()``) and nothing accumulates by accident; to accumulate, sum the
returned gradients (:func:`accumulate_grads`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["accumulate_grads", "grad_of_dot", "grad_of_sum", "rotation_trick", "straight_through"]

PyTree = Any


def grad_of_dot(x: ArrayLike) -> jax.Array:
    """The gradient of y = 2 xᵀx with respect to x, which is 4x.

    The notes' ``y = 2 * torch.dot(x, x); y.backward(); x.grad``.

    Args:
      x: a float vector.

    Returns:
      ``jax.grad(lambda x: 2 * jnp.dot(x, x))(x)``, equal to ``4 * x``.

    Example:
      >>> grad_of_dot(jnp.arange(4.0))
      Array([ 0.,  4.,  8., 12.], dtype=float32)
    """
    return jax.grad(lambda v: 2 * jnp.dot(v, v))(jnp.asarray(x, dtype=jnp.result_type(float)))


def grad_of_sum(x: ArrayLike) -> jax.Array:
    """The gradient of y = Σ xᵢ with respect to x, which is all ones.

    The notes' ``y = x.sum(); y.backward(); x.grad``.

    Args:
      x: a float array.

    Returns:
      ``jax.grad(jnp.sum)(x)``, an array of ones like ``x``.

    Example:
      >>> grad_of_sum(jnp.arange(4.0))
      Array([1., 1., 1., 1.], dtype=float32)
    """
    return jax.grad(jnp.sum)(jnp.asarray(x, dtype=jnp.result_type(float)))


@functools.partial(jax.jit, static_argnums=0)
def _grad(loss_fn: Callable[[PyTree, PyTree], jax.Array], params: PyTree, batch: PyTree) -> PyTree:
    return jax.grad(loss_fn)(params, batch)


@functools.partial(jax.jit, static_argnums=0)
def _scan_grads(
    loss_fn: Callable[[PyTree, PyTree], jax.Array], params: PyTree, batches: PyTree
) -> PyTree:
    def body(total: PyTree, batch: PyTree) -> tuple[PyTree, None]:
        g = jax.grad(loss_fn)(params, batch)
        return jax.tree.map(jnp.add, total, g), None

    total, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), batches)
    return total


def accumulate_grads(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batches: Sequence[PyTree] | PyTree,
    *,
    stacked: bool = False,
) -> PyTree:
    """The sum over batches of ``jax.grad(loss_fn)(params, batch)``.

    This is what PyTorch's ``.grad`` holds after calling ``loss.backward()`` once
    per batch without ``zero_grad()`` in between. In JAX gradients are return
    values, not state attached to the parameters, so there is no buffer to reset:
    each ``jax.grad`` call starts from zero, and accumulation is an explicit sum.
    Summing gradients equals the gradient of the summed loss.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``; must be hashable (a plain
        function is), as it is a static argument of the jitted gradient.
      params: a pytree of float arrays.
      batches: with ``stacked=False``, a sequence (list or tuple) of batches,
        each any pytree, shapes free to differ (one jitted gradient per batch,
        summed in Python). With ``stacked=True``, a single pytree whose leaves
        have a leading batch axis of equal length, reduced with ``jax.lax.scan``
        in one jitted call.
      stacked: how ``batches`` is laid out (see above).

    Returns:
      A pytree shaped like ``params``; zeros if there are no batches.

    Example:
      >>> def loss(w, x):
      ...     return jnp.sum(w * x)
      >>> accumulate_grads(loss, jnp.zeros(2), [jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])])
      Array([4., 6.], dtype=float32)
      >>> accumulate_grads(loss, jnp.zeros(2), jnp.array([[1.0, 2.0], [3.0, 4.0]]), stacked=True)
      Array([4., 6.], dtype=float32)
    """
    if stacked:
        return _scan_grads(loss_fn, params, batches)
    total = jax.tree.map(jnp.zeros_like, params)
    for batch in batches:
        total = jax.tree.map(jnp.add, total, _grad(loss_fn, params, batch))
    return total


def straight_through(inputs: ArrayLike, quantized: ArrayLike) -> jax.Array:
    """The straight-through estimator ``inputs + stop_gradient(quantized - inputs)``.

    The notes' ``inputs + (quantized - inputs).detach()``; ``jax.lax.stop_gradient``
    is JAX's ``.detach()``. The forward value equals ``quantized``; the backward
    pass treats the (non-differentiable) quantization as the identity, so the
    gradient with respect to ``inputs`` passes through unchanged and nothing flows
    into ``quantized``.

    Args:
      inputs: the encoder output z, any shape.
      quantized: the nearest codebook vectors q, the shape of ``inputs``.

    Returns:
      An array equal to ``quantized`` whose gradient flows to ``inputs``.

    Example:
      >>> z, q = jnp.array([0.2, 0.7]), jnp.array([0.0, 1.0])
      >>> straight_through(z, q)
      Array([0., 1.], dtype=float32)
      >>> jax.grad(lambda z: jnp.sum(3.0 * straight_through(z, q)))(z)
      Array([3., 3.], dtype=float32)
    """
    inputs = jnp.asarray(inputs)
    return inputs + jax.lax.stop_gradient(jnp.asarray(quantized) - inputs)


def rotation_trick(inputs: ArrayLike, quantized: ArrayLike, eps: float = 1e-6) -> jax.Array:
    """The rotation trick: an alternative to :func:`straight_through` for vector quantisers.

    The straight-through estimator copies the decoder's gradient at ``q`` unchanged onto the
    encoder output ``z``, whatever the angle and length between them: every ``z`` assigned to
    one code gets the same push. The rotation trick (Fifty et al., 2024) instead treats the
    quantiser as the linear map that takes ``z`` to ``q``,

        q = (lambda R) z,   lambda = ||q|| / ||z||,
        R = I - 2 r r^T + 2 q_hat e^T,   e = z / ||z||,  q_hat = q / ||q||,
        r = (e + q_hat) / ||e + q_hat||,

    where R is the rotation in the plane of ``z`` and ``q`` that turns ``e`` onto ``q_hat``,
    and lets the gradient flow through that map with ``lambda`` and ``R`` held constant
    (stop-gradient). The encoder then receives ``lambda R^T g`` for a decoder gradient ``g``:
    the same gradient, rotated back into ``z``'s frame and rescaled, so vectors at different
    angles to their code receive different updates. When ``q == z``, ``lambda R`` is the
    identity and the trick reduces to straight-through.

    The forward value is exactly ``quantized``, bit for bit: the result is
    ``sg(q) - (sg(y) - y)`` with ``y = (lambda R) z``; ``sg(y) - y`` is exactly +0.0, and
    subtracting +0.0 leaves every float as it is, -0.0 included (adding it would not).
    R is never built as a matrix: ``R z = z - 2 r (r . z) + 2 q_hat (e . z)``, O(D) per
    vector. Vectors shorter than ``eps`` fall back to straight-through. Nothing flows into
    ``quantized``, as with straight-through; train the codebook with the VQ loss or the EMA
    update.

    Args:
      inputs: the encoder output z, (..., D).
      quantized: the nearest codebook vectors q, the shape of ``inputs``.
      eps: norms below this count as zero.

    Returns:
      An array equal to ``quantized`` whose gradient flows to ``inputs`` through lambda R.

    References:
      Fifty, Junkins, Duan, Iger, Liu, Zhang, Geiping, Goldstein and Rahmani,
      "Restructuring Vector Quantization with the Rotation Trick" (2024), eq. 2-4.

    Example:
      >>> z, q = jnp.array([[2.0, 0.0]]), jnp.array([[0.0, 1.0]])
      >>> rotation_trick(z, q)
      Array([[0., 1.]], dtype=float32)
      >>> # d out[1] / dz: lambda R^T e_1 = 0.5 * (1, 0): rotated and scaled, unlike STE's (0, 1)
      >>> jax.grad(lambda z: rotation_trick(z, q)[0, 1])(z).round(6)
      Array([[0.5, 0. ]], dtype=float32)
    """
    sg = jax.lax.stop_gradient
    z = jnp.asarray(inputs)
    q = jnp.asarray(quantized)
    z_norm = jnp.linalg.norm(z, axis=-1, keepdims=True)
    q_norm = jnp.linalg.norm(q, axis=-1, keepdims=True)
    safe = z_norm > eps
    e = sg(jnp.where(safe, z / jnp.where(safe, z_norm, 1.0), 0.0))
    q_hat = sg(q / jnp.maximum(q_norm, eps))
    r = e + q_hat
    r = sg(r / jnp.maximum(jnp.linalg.norm(r, axis=-1, keepdims=True), eps))
    lam = sg(q_norm / jnp.where(safe, z_norm, 1.0))

    def dot(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.sum(a * b, axis=-1, keepdims=True)

    rotated = lam * (z - 2.0 * r * dot(r, z) + 2.0 * q_hat * dot(e, z))  # (lambda R) z
    y = jnp.where(safe, rotated, z)
    return sg(q) - (sg(y) - y)
