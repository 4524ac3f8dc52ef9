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
from jaxbasics.train.state import TrainState, graphdefs, make_optimizer
from jaxbasics.vqvae.model import recon_error
from jaxbasics.vqvae.quantizer import EMAVariable, code_counts, perplexity


class TrainMetrics(NamedTuple):
    """Scalars of one training step (the notes' per-step histories come from these)."""

    loss: jax.Array
    recon_error: jax.Array
    vq_loss: jax.Array
    perplexity: jax.Array


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


def make_train_step(
    config: TrainConfig, data_variance: float
) -> Callable[[TrainState, jax.Array], tuple[TrainState, TrainMetrics]]:
    """Build the jitted, donating ``train_step(state, images) -> (state, metrics)``.

    One step is the notes' loop body: forward, ``loss = recon_error + vq_loss``,
    backward, Adam update, and (EMA quantiser) the codebook statistics update.

    Args:
      config: the run's config (model sizes, learning rate).
      data_variance: variance of the training images scaled to [0, 1].

    Returns:
      The compiled step. ``images`` are (B, H, W, 3) float32 in [-0.5, 0.5].
    """
    train_def, _ = graphdefs(config)
    tx = make_optimizer(config)

    def train_step(state: TrainState, images: jax.Array) -> tuple[TrainState, TrainMetrics]:
        def loss_fn(params):
            # copy=True: fresh Variables at this trace level, so the EMA update may write them.
            model = nnx.merge(train_def, params, state.ema, copy=True)
            out = model(images)
            rec = recon_error(out.recon, images, data_variance)
            new_ema = nnx.state(model, EMAVariable)
            return rec + out.vq_loss, (
                TrainMetrics(rec + out.vq_loss, rec, out.vq_loss, out.perplexity),
                new_ema,
            )

        grads, (metrics, ema) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(params=params, ema=ema, opt_state=opt_state, step=state.step + 1)
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=0)


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
    ``split_perplexity`` and ``used_codes`` describe code usage over the whole split.

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
    }
