"""What a VQ-VAE run reports: whole-split evaluations and their figures (for ``fit`` and
``experiments/evaluate.py``), and the usage counts of each log interval.

``metrics.jsonl`` records hold ``loss``, ``recon_error`` and ``perplexity`` (the interval's
last step), ``images_per_s`` and, over the interval, ``used_codes`` (chosen at least once),
``dead_codes`` (never chosen) and ``restarted_codes`` (:class:`UsageInterval`); ``eval.jsonl``
records are :func:`finalize_eval`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbasics import plots
from jaxbasics.train.files import save_figure
from jaxbasics.train.host import retain_host_memory
from jaxbasics.train.sharding import eval_batches, host_local
from jaxbasics.vqvae.codebook import usage_entropy
from jaxbasics.vqvae.quantizer import perplexity


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


def evaluate(
    eval_step: Callable[[Any, Any, Any], tuple[EvalSums, Any]],
    state: Any,
    source: Any,
    variance: float,
    batch_size: int,
    *,
    max_batches: int = 0,
    sharding: jax.sharding.Sharding | None = None,
) -> Evaluation:
    """Evaluate ``state`` on ``source``: the whole split, or its first ``max_batches`` batches.

    Args:
      eval_step: the run's compiled ``eval_step(state, images, mask) -> (sums, recon)``
        (:func:`~jaxbasics.tasks.vqvae.train.make_eval_step`).
      state: a :class:`~jaxbasics.tasks.vqvae.train.VQVAEState`.
      source: the test split.
      variance: the training data's variance (the recon error's denominator).
      batch_size: the global batch size (the run's).
      max_batches: stop after this many batches; 0 evaluates everything.
      sharding: the batch sharding of a multi-device run; None for one device.

    Returns:
      An :class:`Evaluation`.
    """
    retain_host_memory()
    sums, first = [], None
    batches = eval_batches(source, batch_size, ("image", "mask"), sharding, max_batches)
    for batch, (images, mask) in batches:
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
    n = min(16, evaluation.originals.shape[0])
    grid = plots.image_grid(
        [evaluation.originals[:n], evaluation.reconstructions[:n]],
        ["originals", "reconstructions"],
    )
    save_figure(grid, reconstructions)
    save_figure(plots.codebook_figure(np.asarray(codebook), evaluation.counts), codebook_png)


class UsageInterval:
    """Code counts and restarts of one log interval, continuing ``saved`` if given; and the
    interval's means of a VQGAN-style run's metrics (``metrics.adversarial``: LPIPS, the
    discriminator's losses and logits, the adaptive weight).

    >>> from types import SimpleNamespace as Metrics
    >>> interval = UsageInterval(3)
    >>> interval.add(Metrics(code_counts=np.array([2, 0, 1]), restarted_codes=1.0))
    >>> interval.records({"loss": 0.5, "train_res_recon_error": [0.1],
    ...                   "train_res_perplexity": [1.9]}, 64.0)["metrics"]["dead_codes"]
    1
    >>> UsageInterval(3, interval.saved()).saved()
    {'counts': [2, 0, 1], 'restarts': 1, 'sums': {}, 'steps': 1}
    """

    def __init__(self, num_codes: int, saved: dict[str, Any] | None = None):
        saved = saved or {"counts": np.zeros(num_codes), "restarts": 0}
        self.counts = np.asarray(saved["counts"], np.int64)
        self.restarts = int(saved["restarts"])
        # Checkpoints of versions before VQGAN-style runs kept no sums.
        self.sums = {k: float(v) for k, v in saved.get("sums", {}).items()}
        self.steps = int(saved.get("steps", 0))

    def add(self, metrics: Any) -> None:
        self.counts += np.asarray(metrics.code_counts, np.int64)
        self.restarts += int(metrics.restarted_codes)
        self.steps += 1
        for name, value in getattr(metrics, "adversarial", {}).items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)

    def records(self, history: dict[str, Any], images_per_s: float) -> dict[str, dict]:
        used = int(np.sum(self.counts > 0))
        metrics = {
            "loss": history["loss"],
            "recon_error": history["train_res_recon_error"][-1],
            "perplexity": history["train_res_perplexity"][-1],
            "images_per_s": images_per_s,
            "used_codes": used,
            "dead_codes": len(self.counts) - used,
            "restarted_codes": self.restarts,
        }
        metrics |= {name: total / max(self.steps, 1) for name, total in self.sums.items()}
        return {"metrics": metrics, "codebook_usage": {"counts": self.counts.tolist()}}

    def saved(self) -> dict[str, Any]:
        # The images and their rate are measured anew after a resume.
        return {
            "counts": self.counts.tolist(),
            "restarts": self.restarts,
            "sums": self.sums,
            "steps": self.steps,
        }
