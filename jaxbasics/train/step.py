"""``train_step`` and ``eval_step``: pure functions, compiled once with ``jax.jit``.

``make_train_step`` closes over the static parts (model structure, optimiser, data
variance) and returns ``train_step(state, images) -> (state, metrics)`` with the
state buffers donated, so XLA updates params and Adam moments in place.
Batches may be sharded over a device mesh's ``data`` axis; the state is replicated
and every reduction (loss, perplexity, EMA statistics) is over the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbasics.train.config import TrainConfig
from jaxbasics.train.state import TrainState, codebook_of, graphdefs, make_optimizer
from jaxbasics.vqvae.codebook import kmeans, restart_dead_codes, usage_entropy, usage_update
from jaxbasics.vqvae.model import VQVAE, apply_conv, recon_error
from jaxbasics.vqvae.quantizer import EMAVariable, code_counts, perplexity

# fold_in data of the k-means key; train steps use fold_in(key, step), step < 2**32 - 1.
KMEANS_STREAM = 2**32 - 1


class TrainMetrics(NamedTuple):
    """What one training step reports (the notes' per-step histories come from these).

    Attributes:
      loss, recon_error, vq_loss, perplexity: scalars of this step's batch.
      code_counts: (K,) how many of the batch's latent vectors chose each code.
      restarted_codes: scalar, how many dead codes this step re-initialised.
    """

    loss: jax.Array
    recon_error: jax.Array
    vq_loss: jax.Array
    perplexity: jax.Array
    code_counts: jax.Array
    restarted_codes: jax.Array


class EvalSums(NamedTuple):
    """Additive statistics of an eval batch; sum them over batches, then finalise.

    Attributes:
      sq_error: sum of squared pixel errors over the real (unmasked) examples.
      num_values: number of pixel values summed (examples * H * W * C).
      code_counts: (K,) how often each code was chosen by real examples.
      batch_perplexity: perplexity of this batch's code usage (real examples only).
    """

    sq_error: jax.Array
    num_values: jax.Array
    code_counts: jax.Array
    batch_perplexity: jax.Array


def _latents(model: VQVAE, images: jax.Array) -> jax.Array:
    """The encoder outputs z (B, h, w, D) that the quantiser sees, gradients stopped."""
    return jax.lax.stop_gradient(apply_conv(model.pre_vq_conv, model.encoder(images)))


def _map_vq(tree, name: str, fn: Callable[[jax.Array], jax.Array]):
    """Apply ``fn`` to the ``vq/<name>`` leaf of ``tree`` (params, Adam moments, EMA state)."""

    def f(path, leaf):
        keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        return fn(leaf) if keys[-2:] == ["vq", name] else leaf

    return jax.tree_util.tree_map_with_path(f, tree)


def _set_codebook(
    config: TrainConfig, state: TrainState, codebook: jax.Array, rows: jax.Array, per_step: int
) -> TrainState:
    """``state`` with the codebook rows where ``rows`` (K,) is True replaced by ``codebook``'s.

    Plain VQ: the parameter rows change and their Adam moments restart from 0.
    EMA: the codebook rows change and their statistics restart consistently, at the
    uniform per-step count c = per_step / K: ``ema_cluster_size = c``,
    ``ema_w = codebook * c``, so the next EMA update does not pull them back.

    Args:
      config: the run's config (``decay`` selects the quantiser).
      state: a train state.
      codebook: (K, D) new codes (only the selected rows are used).
      rows: (K,) bool, which codes to replace.
      per_step: latent vectors per training step (global batch * h * w).

    Returns:
      The new state; everything else is bit-identical.
    """
    sel = rows[:, None]
    if config.decay > 0:
        c = per_step / config.num_embeddings
        ema = _map_vq(state.ema, "codebook", lambda e: jnp.where(sel, codebook, e))
        ema = _map_vq(ema, "ema_w", lambda w: jnp.where(sel, codebook * c, w))
        ema = _map_vq(ema, "ema_cluster_size", lambda n: jnp.where(rows, c, n))
        return state.replace(ema=ema)
    params = _map_vq(state.params, "codebook", lambda e: jnp.where(sel, codebook, e))
    opt_state = _map_vq(state.opt_state, "codebook", lambda m: jnp.where(sel, 0.0, m))
    return state.replace(params=params, opt_state=opt_state)


def _step_key(state: TrainState) -> jax.Array:
    """The PRNG key of the step ``state`` is about to take: ``fold_in(base, step)``."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl="rbg"), state.step)


def make_train_step(
    config: TrainConfig, data_variance: float
) -> Callable[[TrainState, jax.Array], tuple[TrainState, TrainMetrics]]:
    """Build the jitted, donating ``train_step(state, images) -> (state, metrics)``.

    One step is the notes' loop body: forward, ``loss = recon_error + vq_loss``,
    backward, Adam update, and (EMA quantiser) the codebook statistics update. Then
    the usage EMA ``state.code_usage`` takes this step's counts, and with
    ``config.dead_code_threshold > 0`` every code whose usage fell below it restarts
    from a random encoder output z of this (global) batch
    (:func:`~jaxbasics.vqvae.codebook.restart_dead_codes`, :func:`_set_codebook`),
    drawn with :func:`_step_key`; its usage resets to 1. With the threshold at 0 the
    restart is not even traced.

    Args:
      config: the run's config (model sizes, learning rate, restart threshold).
      data_variance: variance of the training images scaled to [0, 1].

    Returns:
      The compiled step. ``images`` are (B, H, W, 3) float32 in [-0.5, 0.5].
    """
    train_def, _ = graphdefs(config)
    tx = make_optimizer(config)
    k = config.num_embeddings

    def train_step(state: TrainState, images: jax.Array) -> tuple[TrainState, TrainMetrics]:
        def loss_fn(params):
            # copy=True: fresh Variables at this trace level, so the EMA update may write them.
            model = nnx.merge(train_def, params, state.ema, copy=True)
            out = model(images)
            rec = recon_error(out.recon, images, data_variance)
            new_ema = nnx.state(model, EMAVariable)
            scalars = (rec + out.vq_loss, rec, out.vq_loss, out.perplexity)
            return rec + out.vq_loss, (scalars, out.indices, new_ema)

        grads, (scalars, indices, ema) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        counts = code_counts(indices, k)
        usage = usage_update(state.code_usage, counts)
        new_state = state.replace(params=params, ema=ema, opt_state=opt_state, step=state.step + 1)
        restarted = jnp.zeros((), jnp.float32)
        if config.dead_code_threshold > 0:
            # z of this step's forward pass (same params; XLA shares the computation).
            z = _latents(nnx.merge(train_def, state.params, state.ema), images)
            flat = z.reshape(-1, config.embedding_dim)
            r = restart_dead_codes(
                codebook_of(new_state), usage, flat, _step_key(state), config.dead_code_threshold
            )
            new_state = _set_codebook(config, new_state, r.codebook, r.dead, flat.shape[0])
            usage = jnp.where(r.dead, 1.0, usage)
            restarted = jnp.sum(r.dead).astype(jnp.float32)
        metrics = TrainMetrics(*scalars, counts, restarted)
        return new_state.replace(code_usage=usage), metrics

    return jax.jit(train_step, donate_argnums=0)


def make_kmeans_init(
    config: TrainConfig, replicated: jax.sharding.Sharding | None = None
) -> Callable[[TrainState, tuple[jax.Array, ...]], TrainState]:
    """Build the jitted ``kmeans_init(state, batches) -> state`` (a fresh state only).

    The codebook becomes k-means++ seeds plus 10 Lloyd steps
    (:func:`~jaxbasics.vqvae.codebook.kmeans`) on the encoder outputs z of
    ``batches`` under the initial weights; the EMA statistics are set consistently
    (:func:`_set_codebook`). The seeding key is ``fold_in(base, KMEANS_STREAM)``, a
    stream no training step uses.

    Args:
      config: the run's config.
      replicated: if given, z is gathered onto this (replicated) sharding before
        clustering, so every device clusters the whole set exactly as one device
        would (random draws over a sharded axis may depend on the sharding).

    Returns:
      The compiled function; ``batches`` is a tuple of (B, H, W, 3) image batches.
    """
    train_def, _ = graphdefs(config)
    k = config.num_embeddings

    def kmeans_init(state: TrainState, batches: tuple[jax.Array, ...]) -> TrainState:
        model = nnx.merge(train_def, state.params, state.ema)
        z = jax.lax.map(lambda x: _latents(model, x), jnp.stack(batches))  # (S, B, h, w, D)
        flat = z.reshape(-1, config.embedding_dim)
        if flat.shape[0] < k:
            raise ValueError(
                f"k-means needs at least num_embeddings={k} encoder outputs, got "
                f"{flat.shape[0]} from {len(batches)} batches; raise kmeans_init_steps."
            )
        if replicated is not None:
            flat = jax.lax.with_sharding_constraint(flat, replicated)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl="rbg"), KMEANS_STREAM)
        centers = kmeans(flat, k, key)
        per_step = flat.shape[0] // len(batches)
        return _set_codebook(config, state, centers, jnp.ones((k,), bool), per_step)

    return jax.jit(kmeans_init)


def make_eval_step(
    config: TrainConfig,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[EvalSums, jax.Array]]:
    """Build the jitted ``eval_step(state, images, mask) -> (sums, recon)``.

    Eval mode: the EMA statistics are read, never updated. ``mask`` (B,) marks the
    real examples of a padded last batch; padded ones add nothing to the sums.
    """
    _, eval_def = graphdefs(config)

    def eval_step(state: TrainState, images: jax.Array, mask: jax.Array):
        model = nnx.merge(eval_def, state.params, state.ema)
        out = model(images)
        w = mask.astype(jnp.float32)
        per_example = jnp.sum((out.recon - images) ** 2, axis=(1, 2, 3))
        idx = jnp.where(mask[:, None, None], out.indices, config.num_embeddings)
        counts = code_counts(idx, config.num_embeddings + 1)[:-1]  # masked -> dropped bin
        sums = EvalSums(
            sq_error=jnp.sum(per_example * w),
            num_values=jnp.sum(w) * math.prod(images.shape[1:]),
            code_counts=counts,
            batch_perplexity=perplexity(counts),
        )
        return sums, out.recon

    return jax.jit(eval_step)


def finalize_eval(sums: list[EvalSums], data_variance: float) -> dict[str, float]:
    """Turn per-batch :class:`EvalSums` into the reported eval metrics.

    ``recon_error`` is ``mse / data_variance`` over every test pixel; ``perplexity``
    is the mean of per-batch perplexities (what the notes' loop reports);
    ``split_perplexity``, ``used_codes`` and ``usage_entropy`` (bits; log2 of
    ``split_perplexity``) describe code usage over the whole split.

    >>> s = EvalSums(jnp.array(2.0), jnp.array(8.0), jnp.array([3.0, 1.0, 0.0]), jnp.array(1.5))
    >>> finalize_eval([s], 0.5)["recon_error"], finalize_eval([s], 0.5)["used_codes"]
    (0.5, 2)
    """
    sq = sum(float(s.sq_error) for s in sums)
    n = sum(float(s.num_values) for s in sums)
    counts = sum(jnp.asarray(s.code_counts) for s in sums)
    return {
        "recon_error": sq / n / data_variance,
        "perplexity": float(jnp.mean(jnp.stack([s.batch_perplexity for s in sums]))),
        "split_perplexity": float(perplexity(counts)),
        "used_codes": int(jnp.sum(counts > 0)),
        "usage_entropy": float(usage_entropy(counts)),
    }
