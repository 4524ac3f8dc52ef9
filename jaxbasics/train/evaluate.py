"""Whole-split evaluation and its figures (shared by ``fit`` and ``experiments/evaluate.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbasics.train.config import TrainConfig
from jaxbasics.train.sharding import global_batch, host_local
from jaxbasics.train.step import EvalSums, compiled
from jaxbasics.vqvae.codebook import usage_entropy
from jaxbasics.vqvae.quantizer import perplexity


class Evaluation(NamedTuple):
    """What :func:`evaluate` returns.

    Attributes:
      metrics: ``recon_error``, ``perplexity``, ``split_perplexity``, ``used_codes``,
        ``usage_entropy`` (see :func:`finalize_eval`).
      originals: (b, H, W, 3) the first batch's images (this process's rows, padding left
        out), in [-0.5, 0.5].
      reconstructions: (b, H, W, 3) their reconstructions.
      counts: (K,) how often each code was chosen over the evaluated batches.
    """

    metrics: dict[str, Any]
    originals: np.ndarray
    reconstructions: np.ndarray
    counts: np.ndarray


def finalize_eval(sums: list[EvalSums], data_variance: float) -> dict[str, float]:
    """Turn per-batch :class:`~jaxbasics.train.step.EvalSums` into the reported eval metrics.

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


def evaluate(
    config: TrainConfig,
    state: Any,
    source: Any,
    variance: float,
    *,
    max_batches: int = 0,
    sharding: jax.sharding.Sharding | None = None,
) -> Evaluation:
    """Evaluate ``state`` on ``source``: the whole split, or its first ``max_batches`` batches.

    Args:
      config: the run's config (model, batch size).
      state: a :class:`~jaxbasics.train.state.TrainState`.
      source: the test split.
      variance: the training data's variance (the recon error's denominator).
      max_batches: stop after this many batches; 0 evaluates everything.
      sharding: the batch sharding of a multi-device run; None for one device.

    Returns:
      An :class:`Evaluation`.
    """
    from jaxbasics.data.pipeline import eval_dataset
    from jaxbasics.train.host import retain_host_memory

    retain_host_memory()
    eval_step = compiled(config, "eval")
    sums, first = [], None
    batches = eval_dataset(
        source,
        batch_size=config.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        images, mask = batch["image"], batch["mask"]
        if sharding is not None:
            images, mask = global_batch(images, sharding), global_batch(mask, sharding)
        s, recon = eval_step(state, images, mask)
        sums.append(s)
        if first is None:  # the real images only, not the rows padding the last batch
            real = np.asarray(batch["mask"]).astype(bool)
            first = (np.asarray(batch["image"])[real], host_local(recon, sharding)[real])
    sums = jax.device_get(sums)
    counts = np.sum([np.asarray(s.code_counts) for s in sums], axis=0)
    return Evaluation(finalize_eval(sums, variance), first[0], first[1], counts)


def save_figures(
    evaluation: Evaluation, codebook: np.ndarray, reconstructions: Path, codebook_png: Path
) -> None:
    """Write the originals-over-reconstructions grid and the codebook-usage figure."""
    from jaxbasics import plots

    n = min(16, evaluation.originals.shape[0])
    grid = plots.image_grid(
        [evaluation.originals[:n], evaluation.reconstructions[:n]],
        ["originals", "reconstructions"],
    )
    plots.save(grid, reconstructions)
    plots.save(plots.codebook_figure(np.asarray(codebook), evaluation.counts), codebook_png)
