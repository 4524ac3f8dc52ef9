"""Keeping a codebook alive: usage statistics, dead-code restart, k-means initialisation.

Pure, jit-able functions of arrays; the train step and the loop wire them in
(:mod:`jaxbasics.train.step`). Encoder outputs ``flat`` are (N, D) rows, flattened
like the quantiser's input (see :mod:`jaxbasics.vqvae.quantizer`).

Usage is measured relative to uniform: ``usage_k = 1`` means code k receives its
fair share N/K of a step's N vectors, 0 means it is never chosen. The EMA of that
number (:func:`usage_update`) does not depend on the batch size or the latent grid,
so one threshold (e.g. 0.1: a tenth of the fair share) fits every configuration.

References:
  Dhariwal et al., "Jukebox: A Generative Model for Music" (2020), sec. 3.3: random
  restarts of codes whose usage falls below a threshold.
  Arthur and Vassilvitskii, "k-means++: The Advantages of Careful Seeding" (2007).
  Lloyd, "Least squares quantization in PCM" (1982).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbasics.vqvae.quantizer import code_counts, distances, nearest_code

# EMA decay of the usage statistic: a never-chosen code's usage falls from 1 (a fresh
# code) below 0.1 in ~230 steps.
USAGE_DECAY = 0.99


def usage_update(usage: jax.Array, counts: jax.Array, decay: float = USAGE_DECAY) -> jax.Array:
    """EMA of relative code usage: ``u <- decay u + (1 - decay) K n / sum(n)``.

    Args:
      usage: (K,) current usage (1 = the uniform share; start from ones).
      counts: (K,) this step's counts (:func:`~jaxbasics.vqvae.quantizer.code_counts`).
      decay: EMA decay.

    Returns:
      (K,) new usage; it sums to K if ``usage`` did.

    >>> usage_update(jnp.ones(4), jnp.array([8.0, 0.0, 0.0, 0.0]), decay=0.5).tolist()
    [2.5, 0.5, 0.5, 0.5]
    """
    k = counts.shape[0]
    return decay * usage + (1.0 - decay) * k * counts / jnp.sum(counts)


class Restart(NamedTuple):
    """What :func:`restart_dead_codes` returns.

    Attributes:
      codebook: (K, D) codes; dead rows replaced, the others bit-identical.
      dead: (K,) bool, the rows that were replaced.
      sources: (K,) int32 row of ``flat`` each code would be restarted from (used
        only where ``dead``).
    """

    codebook: jax.Array
    dead: jax.Array
    sources: jax.Array


def restart_dead_codes(
    codebook: jax.Array, usage: jax.Array, flat: jax.Array, key: jax.Array, threshold: float
) -> Restart:
    """Re-initialise every code with ``usage < threshold`` from a random encoder output.

    A dead code never wins an argmin, so neither the VQ loss nor the EMA ever moves
    it; putting it on a current encoder output gives it data to win. Sources are
    drawn uniformly with replacement (two dead codes may rarely share one; the
    duplicate loses every tie and is restarted again later). The draw has shape
    (K,), independent of N, so it is the same however ``flat`` is sharded.

    Args:
      codebook: (K, D) codes.
      usage: (K,) relative usage (:func:`usage_update`).
      flat: (N, D) encoder outputs of the current (global) batch.
      key: PRNG key.
      threshold: codes with usage strictly below this are restarted; 0 restarts none.

    Returns:
      A :class:`Restart`.

    >>> r = restart_dead_codes(jnp.zeros((3, 2)), jnp.array([1.0, 0.01, 2.0]),
    ...                        jnp.array([[5.0, 6.0]]), jax.random.key(0), 0.1)
    >>> r.codebook.tolist(), r.dead.tolist()
    ([[0.0, 0.0], [5.0, 6.0], [0.0, 0.0]], [False, True, False])
    """
    dead = usage < threshold
    sources = jax.random.randint(key, (codebook.shape[0],), 0, flat.shape[0], jnp.int32)
    new = jnp.where(dead[:, None], jnp.take(flat, sources, axis=0), codebook)
    return Restart(new, dead, sources)


def quantization_error(flat: jax.Array, codebook: jax.Array) -> jax.Array:
    """Mean squared distance from each row of ``flat`` to its nearest code (k-means cost / N).

    >>> float(quantization_error(jnp.array([[0.0], [3.0]]), jnp.array([[1.0], [4.0]])))
    1.0
    """
    return jnp.mean(jnp.maximum(jnp.min(distances(flat, codebook), axis=1), 0.0))


def kmeans_plus_plus(flat: jax.Array, k: int, key: jax.Array) -> jax.Array:
    """k-means++ seeding: each new centre is a row drawn with probability ∝ D(x)^2.

    D(x) is the distance to the nearest centre chosen so far. One draw per centre,
    in a ``jax.lax.fori_loop``: k * N * D work.

    Args:
      flat: (N, D) points.
      k: number of centres.
      key: PRNG key.

    Returns:
      (k, D) centres, all rows of ``flat``.

    >>> pts = jnp.array([[0.0], [0.1], [10.0], [10.1]])
    >>> sorted(round(float(c), 1) // 5 for c in kmeans_plus_plus(pts, 2, jax.random.key(0))[:, 0])
    [0.0, 2.0]
    """
    keys = jax.random.split(key, k)
    first = flat[jax.random.randint(keys[0], (), 0, flat.shape[0])]
    centers = jnp.zeros((k, flat.shape[1]), flat.dtype).at[0].set(first)
    d2 = jnp.sum((flat - first) ** 2, axis=1)  # (N,)

    def body(i, carry):
        centers, d2 = carry
        # log of a floor, not of 0: chosen points (d2 = 0) keep a ~e^-69 weight, and
        # all-identical data still yields a valid draw.
        j = jax.random.categorical(keys[i], jnp.log(jnp.maximum(d2, 1e-30)))
        c = flat[j]
        return centers.at[i].set(c), jnp.minimum(d2, jnp.sum((flat - c) ** 2, axis=1))

    centers, _ = jax.lax.fori_loop(1, k, body, (centers, d2))
    return centers


def lloyd(flat: jax.Array, centers: jax.Array, iterations: int) -> jax.Array:
    """``iterations`` Lloyd steps: assign to the nearest centre, move centres to the means.

    A centre that loses all its points stays where it is.

    Args:
      flat: (N, D) points.
      centers: (K, D) starting centres.
      iterations: number of steps (``jax.lax.fori_loop``).

    Returns:
      (K, D) centres.

    >>> lloyd(jnp.array([[0.0], [2.0], [10.0]]), jnp.array([[1.5], [9.0]]), 2).tolist()
    [[1.0], [10.0]]
    """
    k = centers.shape[0]

    def body(_, centers):
        idx = nearest_code(distances(flat, centers))
        sums = jax.ops.segment_sum(flat, idx, k)
        counts = code_counts(idx, k)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centers)

    return jax.lax.fori_loop(0, iterations, body, centers)


def kmeans(flat: jax.Array, k: int, key: jax.Array, iterations: int = 10) -> jax.Array:
    """k-means++ seeding followed by ``iterations`` Lloyd steps.

    Args:
      flat: (N, D) points (N >= k).
      k: number of centres.
      key: PRNG key for the seeding.
      iterations: Lloyd steps.

    Returns:
      (k, D) centres.

    >>> pts = jnp.array([[0.0], [0.2], [10.0], [10.2]])
    >>> sorted(kmeans(pts, 2, jax.random.key(0)).round(2)[:, 0].tolist())
    [0.1, 10.1]
    """
    return lloyd(flat, kmeans_plus_plus(flat, k, key), iterations)


def usage_entropy(counts: jax.Array) -> jax.Array:
    """Entropy of the code-usage distribution in bits: log2 of the perplexity.

    log2(K) when all K codes are used equally, 0 when one code takes everything.

    >>> float(usage_entropy(jnp.array([3.0, 3.0, 3.0, 3.0])))
    2.0
    >>> float(usage_entropy(jnp.array([0.0, 5.0])))
    0.0
    """
    p = counts / jnp.sum(counts)
    # + 0.0 turns the -0.0 of a single used code into 0.0.
    return -jnp.sum(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0)) + 0.0
