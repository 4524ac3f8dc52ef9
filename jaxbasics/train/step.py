"""``train_step``, ``eval_step`` and the k-means init: pure functions, compiled once.

``make_train_step`` closes over the static parts (model structure, optimiser, data
variance) and returns ``train_step(state, images) -> (state, metrics)`` with the
state buffers donated, so XLA updates params and Adam moments in place.
Batches may be sharded over a device mesh's ``data`` axis; the state is replicated
and every reduction (loss, perplexity, EMA statistics) is over the global batch.

:func:`compiled` hands out the compiled programs, built once per compile key and
kept in the config's :class:`~jaxbasics.train.state.Structure`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbasics.train.config import TrainConfig
from jaxbasics.train.state import TrainState, codebook_of, structure
from jaxbasics.vqvae.codebook import (
    CodebookState,
    kmeans,
    restart_dead_codes,
    set_codes,
    usage_update,
)
from jaxbasics.vqvae.ema import EMAVariable
from jaxbasics.vqvae.model import VQVAE, recon_error, vqvae_loss
from jaxbasics.vqvae.quantizer import code_counts, perplexity

# fold_in data of the k-means key; train steps use fold_in(key, step), step < 2**32 - 1.
KMEANS_STREAM = 2**32 - 1


class TrainMetrics(NamedTuple):
    """What one training step reports (the notes' per-step histories come from these).

    Attributes:
      loss, recon_error, vq_loss, perplexity: scalars of this step's batch.
      code_counts: (K,) how many of the batch's latent vectors chose each code.
      restarted_codes: scalar, how many dead codes this step re-initialised.
      finite: bool scalar, whether the loss and every parameter and EMA statistic after
        the step are finite.
    """

    loss: jax.Array
    recon_error: jax.Array
    vq_loss: jax.Array
    perplexity: jax.Array
    code_counts: jax.Array
    restarted_codes: jax.Array
    finite: jax.Array


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


def latents(model: VQVAE, images: jax.Array) -> jax.Array:
    """The encoder outputs z (B, h, w, D) that the quantiser sees, gradients stopped."""
    return jax.lax.stop_gradient(model.latents(images))


def _step_key(state: TrainState) -> jax.Array:
    """The PRNG key of the step ``state`` is about to take: ``fold_in(base, step)``."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl="rbg"), state.step)


def all_finite(*trees: Any) -> jax.Array:
    """Whether every array of ``trees`` is finite, as a bool scalar (traceable).

    >>> bool(all_finite({"a": jnp.ones(2)}, [jnp.array([1.0, jnp.nan])]))
    False
    """
    leaves = [x for t in trees for x in jax.tree.leaves(t)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _set_codes(config: TrainConfig, state: TrainState, rows, codes, per_step) -> TrainState:
    edited = set_codes(
        CodebookState(state.params, state.ema, state.opt_state),
        rows,
        codes,
        per_step,
        ema_quantizer=config.decay > 0,
    )
    return state.replace(**edited._asdict())


def make_train_step(
    config: TrainConfig, data_variance: float
) -> Callable[[TrainState, jax.Array], tuple[TrainState, TrainMetrics]]:
    """Build the jitted, donating ``train_step(state, images) -> (state, metrics)``.

    One step is the notes' loop body: forward, ``loss = recon_error + vq_loss``,
    backward, Adam update, and (EMA quantiser) the codebook statistics update. Then
    the usage EMA ``state.code_usage`` takes this step's counts, and with
    ``config.dead_code_threshold > 0`` every code whose usage fell below it restarts
    from a random encoder output z of this (global) batch
    (:func:`~jaxbasics.vqvae.codebook.restart_dead_codes`,
    :func:`~jaxbasics.vqvae.codebook.set_codes`), drawn with :func:`_step_key`; its usage
    resets to 1. With the threshold at 0 the restart is not even traced.

    Args:
      config: the run's config (model sizes, learning rate, restart threshold).
      data_variance: variance of the training images scaled to [0, 1].

    Returns:
      The compiled step. ``images`` are (B, H, W, 3) float32 in [-0.5, 0.5].
    """
    s = structure(config)
    k = config.num_embeddings

    def train_step(state: TrainState, images: jax.Array) -> tuple[TrainState, TrainMetrics]:
        def loss_fn(params):
            # copy=True: fresh Variables at this trace level, so the EMA update may write them.
            model = nnx.merge(s.train_def, params, state.ema, copy=True)
            out = model(images)
            rec = recon_error(out.recon, images, data_variance)
            return vqvae_loss(out, images, data_variance), (out, rec, nnx.state(model, EMAVariable))

        (loss, (out, rec, ema)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = s.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        counts = code_counts(out.indices, k)
        usage = usage_update(state.code_usage, counts)
        new_state = state.replace(params=params, ema=ema, opt_state=opt_state, step=state.step + 1)
        restarted = jnp.zeros((), jnp.float32)
        if config.dead_code_threshold > 0:
            # z of this step's forward pass (same params; XLA shares the computation).
            z = latents(nnx.merge(s.train_def, state.params, state.ema), images)
            flat = z.reshape(-1, config.embedding_dim)
            r = restart_dead_codes(
                codebook_of(config, new_state),
                usage,
                flat,
                _step_key(state),
                config.dead_code_threshold,
            )
            new_state = _set_codes(config, new_state, r.dead, r.codebook, flat.shape[0])
            usage = jnp.where(r.dead, 1.0, usage)
            restarted = jnp.sum(r.dead).astype(jnp.float32)
        metrics = TrainMetrics(
            loss=loss,
            recon_error=rec,
            vq_loss=out.vq_loss,
            perplexity=out.perplexity,
            code_counts=counts,
            restarted_codes=restarted,
            finite=jnp.isfinite(loss) & all_finite(new_state.params, new_state.ema),
        )
        return new_state.replace(code_usage=usage), metrics

    return jax.jit(train_step, donate_argnums=0)


def make_kmeans_init(
    config: TrainConfig, replicated: jax.sharding.Sharding | None = None
) -> Callable[[TrainState, tuple[jax.Array, ...]], TrainState]:
    """Build the jitted ``kmeans_init(state, batches) -> state`` (a fresh state only).

    The codebook becomes k-means++ seeds plus 10 Lloyd steps
    (:func:`~jaxbasics.vqvae.codebook.kmeans`) on the encoder outputs z of
    ``batches`` under the initial weights; the EMA statistics are set consistently
    (:func:`~jaxbasics.vqvae.codebook.set_codes`). The seeding key is
    ``fold_in(base, KMEANS_STREAM)``, a stream no training step uses.

    Args:
      config: the run's config.
      replicated: if given, z is gathered onto this (replicated) sharding before
        clustering, so every device clusters the whole set exactly as one device
        would (random draws over a sharded axis may depend on the sharding).

    Returns:
      The compiled function; ``batches`` is a tuple of (B, H, W, 3) image batches.
    """
    s = structure(config)
    k = config.num_embeddings

    def kmeans_init(state: TrainState, batches: tuple[jax.Array, ...]) -> TrainState:
        model = nnx.merge(s.train_def, state.params, state.ema)
        z = jax.lax.map(lambda x: latents(model, x), jnp.stack(batches))  # (S, B, h, w, D)
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
        return _set_codes(config, state, jnp.ones((k,), bool), centers, per_step)

    return jax.jit(kmeans_init)


def make_eval_step(
    config: TrainConfig,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[EvalSums, jax.Array]]:
    """Build the jitted ``eval_step(state, images, mask) -> (sums, recon)``.

    Eval mode: the EMA statistics are read, never updated. ``mask`` (B,) marks the
    real examples of a padded last batch; padded ones add nothing to the sums.
    """
    s = structure(config)

    def eval_step(
        state: TrainState, images: jax.Array, mask: jax.Array
    ) -> tuple[EvalSums, jax.Array]:
        model = nnx.merge(s.eval_def, state.params, state.ema)
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


_BUILDERS: dict[str, Callable[..., Callable]] = {
    "train": make_train_step,
    "eval": make_eval_step,
    "kmeans": make_kmeans_init,
}


def compiled(config: TrainConfig, name: str, *args: Any) -> Callable:
    """The compiled ``name`` program (``"train"``, ``"eval"`` or ``"kmeans"``) of ``config``.

    Built by ``make_<name>...(config, *args)`` the first time and kept in the config's
    :class:`~jaxbasics.train.state.Structure`, so every fit, evaluation and test in a
    process that shares a compile key shares the program. ``args`` (the data variance,
    a sharding) are part of the key.
    """
    cache = structure(config).compiled
    key = (name, *args)
    if key not in cache:
        cache[key] = _BUILDERS[name](config, *args)
    return cache[key]
