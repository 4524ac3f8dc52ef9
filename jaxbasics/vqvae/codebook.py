"""Keeping a codebook alive: usage statistics, dead-code restart, k-means initialisation.

Pure, jit-able functions of arrays; the train step and the loop wire them in
(:mod:`jaxbasics.tasks.vqvae.train`). Encoder outputs ``flat`` are (N, D) rows, flattened
like the quantiser's input (see :mod:`jaxbasics.vqvae.quantizer`).

Every edit of the codes goes through :func:`set_codes`, and every read through
:func:`codebook_of`: both address the quantiser's variables by name and raise if they are
missing, so a change of the model's layout fails loudly instead of editing nothing.

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

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics.vqvae.quantizer import code_counts, distances, nearest_code

# The VQVAE attribute that holds the quantiser.
QUANTIZER = "vq"

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


def _quantizer(tree: Any, names: tuple[str, ...], where: str) -> Any:
    """``tree[QUANTIZER]``, checked to hold every variable in ``names``."""
    if QUANTIZER not in tree:
        raise KeyError(
            f"{where} has no {QUANTIZER!r} quantiser (it holds {sorted(tree)}); the model's "
            "layout changed, so the codebook cannot be found."
        )
    node = tree[QUANTIZER]
    missing = [n for n in names if n not in node]
    if missing:
        raise KeyError(
            f"{where}[{QUANTIZER!r}] lacks {missing} (it holds {sorted(node)}). A plain-VQ "
            "state keeps the codebook in the params, an EMA state in the EMA statistics."
        )
    return node


def codebook_of(params: nnx.State, ema: nnx.State, *, ema_quantizer: bool) -> jax.Array:
    """The (K, D) codebook: an EMA statistic (``ema_quantizer``) or a parameter.

    >>> from jaxbasics.vqvae.model import VQVAE
    >>> _, params, stats = nnx.split(VQVAE(8, 2, 1, 4, 6, rngs=nnx.Rngs(0)), nnx.Param, ...)
    >>> codebook_of(params, stats, ema_quantizer=False).shape
    (6, 4)
    >>> codebook_of(params, stats, ema_quantizer=True)
    Traceback (most recent call last):
    ...
    KeyError: "EMA state has no 'vq' quantiser (it holds []); ...
    """
    if ema_quantizer:
        return _quantizer(ema, ("codebook",), "EMA state")["codebook"][...]
    return _quantizer(params, ("codebook",), "params")["codebook"][...]


def _edit(tree: Any, where: str, edits: dict[str, Callable[[jax.Array], jax.Array]]) -> Any:
    """A copy of ``tree`` with ``tree[QUANTIZER][name]`` replaced by ``edits[name](old)``."""
    _quantizer(tree, tuple(edits), where)
    new = jax.tree.map(lambda x: x, tree)  # new containers and Variables; arrays shared
    node = new[QUANTIZER]
    for name, fn in edits.items():
        node[name] = node[name].replace(fn(node[name][...]))
    return new


class CodebookState(NamedTuple):
    """The parts of a training state that :func:`set_codes` edits.

    Attributes:
      params: the model's ``nnx.Param`` state.
      ema: the model's EMA statistics (empty for plain VQ).
      opt_state: the optimiser state; every ``nnx.State`` inside it (Adam's moments) is
        shaped like ``params``.
    """

    params: Any
    ema: Any
    opt_state: Any


def set_codes(
    state: CodebookState,
    rows: jax.Array,
    codes: jax.Array,
    per_step: int,
    *,
    ema_quantizer: bool,
) -> CodebookState:
    """Replace the codes where ``rows`` is True by ``codes``' rows, consistently.

    The one function that edits a codebook (dead-code restart, k-means init):

    * EMA quantiser: the codebook rows change and their statistics restart at the uniform
      per-step count c = per_step / K: ``ema_cluster_size = c``, ``ema_w = codes * c``, so
      the next EMA update does not pull them back.
    * plain VQ: the parameter rows change and their optimiser moments (every ``nnx.State``
      in ``opt_state``) restart from 0.

    Args:
      state: the params, EMA statistics and optimiser state.
      rows: (K,) bool, which codes to replace.
      codes: (K, D) new codes (only the selected rows are used).
      per_step: latent vectors per training step (global batch * h * w).
      ema_quantizer: whether the model uses the EMA quantiser.

    Returns:
      The edited :class:`CodebookState`; everything else is bit-identical.

    Raises:
      KeyError: the quantiser or one of its variables is missing, naming what was found.

    >>> from jaxbasics.vqvae.model import VQVAE
    >>> import optax
    >>> _, params, stats = nnx.split(VQVAE(8, 2, 1, 4, 3, rngs=nnx.Rngs(0)), nnx.Param, ...)
    >>> s = CodebookState(params, stats, optax.adam(1e-3).init(params))
    >>> new = set_codes(s, jnp.array([False, True, False]), jnp.ones((3, 4)), 12,
    ...                 ema_quantizer=False)
    >>> codebook_of(new.params, new.ema, ema_quantizer=False)[1].tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    sel = rows[:, None]
    if ema_quantizer:
        c = per_step / rows.shape[0]
        ema = _edit(
            state.ema,
            "EMA state",
            {
                "codebook": lambda e: jnp.where(sel, codes, e),
                "ema_w": lambda w: jnp.where(sel, codes * c, w),
                "ema_cluster_size": lambda n: jnp.where(rows, c, n),
            },
        )
        return state._replace(ema=ema)
    params = _edit(state.params, "params", {"codebook": lambda e: jnp.where(sel, codes, e)})

    def reset_moments(node: Any) -> Any:
        if not isinstance(node, nnx.State):
            return node
        return _edit(node, "optimiser state", {"codebook": lambda m: jnp.where(sel, 0.0, m)})

    opt_state = jax.tree.map(
        reset_moments, state.opt_state, is_leaf=lambda x: isinstance(x, nnx.State)
    )
    return state._replace(params=params, opt_state=opt_state)
