"""The VQ-VAE as a :class:`~jaxbasics.train.task.Task`: what stage one plugs into the loop.

Its data are the run's image splits (:mod:`jaxbasics.train.data`), its state the
:class:`~jaxbasics.train.state.TrainState`, its step :mod:`jaxbasics.train.step`'s. It keeps
the notes' per-step histories (``train_res_recon_error``, ``train_res_perplexity``) in every
checkpoint, writes per-code usage counts to ``codebook_usage.jsonl`` each log interval, and at
the end draws ``curves.png``, ``reconstructions.png`` and ``codebook.png``.

``metrics.jsonl`` records hold ``loss``, ``recon_error`` and ``perplexity`` (the interval's
last step), ``images_per_s`` and, over the interval, ``used_codes`` (chosen at least once),
``dead_codes`` (never chosen) and ``restarted_codes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxbasics.train.config import TrainConfig
from jaxbasics.train.sharding import abstract_state, global_batch
from jaxbasics.train.task import TaskData


class UsageInterval:
    """Code counts and restarts of one log interval, continuing ``saved`` if given.

    >>> from types import SimpleNamespace as Metrics
    >>> interval = UsageInterval(3)
    >>> interval.add(Metrics(code_counts=np.array([2, 0, 1]), restarted_codes=1.0))
    >>> interval.records({"loss": 0.5, "train_res_recon_error": [0.1],
    ...                   "train_res_perplexity": [1.9]}, 64.0)["metrics"]["dead_codes"]
    1
    >>> UsageInterval(3, interval.saved()).saved()
    {'counts': [2, 0, 1], 'restarts': 1}
    """

    def __init__(self, num_codes: int, saved: dict[str, Any] | None = None):
        saved = saved or {"counts": np.zeros(num_codes), "restarts": 0}
        self.counts = np.asarray(saved["counts"], np.int64)
        self.restarts = int(saved["restarts"])

    def add(self, metrics: Any) -> None:
        self.counts += np.asarray(metrics.code_counts, np.int64)
        self.restarts += int(metrics.restarted_codes)

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
        return {"metrics": metrics, "codebook_usage": {"counts": self.counts.tolist()}}

    def saved(self) -> dict[str, Any]:
        # The images and their rate are measured anew after a resume.
        return {"counts": self.counts.tolist(), "restarts": self.restarts}


class VQVAETask:
    """Stage one: a VQ-VAE trained on images (see the module docstring).

    Args:
      config: the run's :class:`~jaxbasics.train.config.TrainConfig`.
    """

    histories = ("train_res_recon_error", "train_res_perplexity")
    logs = ("codebook_usage",)

    def __init__(self, config: TrainConfig):
        self.config = config
        self.data: Any = None  # jaxbasics.train.data.Sources, once load_data has run

    def load_data(self, workdir: Path) -> TaskData:
        from jaxbasics.train.data import sources

        self.data = sources(self.config, workdir)
        stats = {"data_variance": self.data.variance, "num_examples": len(self.data.train)}
        if self.data.files_sha256 is not None:
            stats["files_sha256"] = self.data.files_sha256
        return TaskData(self.data.train, stats)

    def abstract_state(self, sharding: Any) -> Any:
        return abstract_state(self.config, sharding)

    def fresh_state(self, dataset: Any, shardings: Any) -> Any:
        """``init_state`` placed on the devices, k-means-initialised if the config asks."""
        from jaxbasics.train.state import init_state
        from jaxbasics.train.step import compiled

        config = self.config
        state = jax.device_put(init_state(config), shardings.replicated)
        if config.kmeans_init_steps:
            # A second iterator over the same dataset yields exactly the first training
            # batches and leaves the training iterator (and so resume) untouched.
            first = iter(dataset)
            images = tuple(
                global_batch(next(first)["image"], shardings.batch)
                for _ in range(config.kmeans_init_steps)
            )
            state = compiled(config, "kmeans", shardings.replicated)(state, images)
        return state

    def train_step(self) -> Any:
        from jaxbasics.train.step import compiled

        return compiled(self.config, "train", self.data.variance)

    def step_inputs(self, batch: dict[str, Any]) -> Any:
        return batch["image"]

    def step_history(self, metrics: Any) -> dict[str, float]:
        return {
            "train_res_recon_error": float(metrics.recon_error),
            "train_res_perplexity": float(metrics.perplexity),
        }

    def interval(self, saved: dict[str, Any] | None) -> UsageInterval:
        return UsageInterval(self.config.num_embeddings, saved)

    def evaluate(self, state: Any, max_batches: int, sharding: Any) -> Any:
        from jaxbasics.train.evaluate import evaluate

        return evaluate(
            self.config,
            state,
            self.data.test,
            self.data.variance,
            max_batches=max_batches,
            sharding=sharding,
        )

    def describe(self, metrics: dict[str, Any]) -> str:
        return (
            f"test recon_error {metrics['recon_error']:.4f} perplexity {metrics['perplexity']:.1f}"
        )

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"data_variance": self.data.variance}

    def figures(
        self, workdir: Path, history: dict[str, Any], evaluation: Any, state: Any, final: bool
    ) -> None:
        """At the end: ``curves.png``, ``reconstructions.png`` and ``codebook.png``."""
        from jaxbasics import plots
        from jaxbasics.train.evaluate import save_figures
        from jaxbasics.train.state import codebook_of

        if not final:
            return
        plots.save(
            plots.training_curves(
                history["train_res_recon_error"], history["train_res_perplexity"]
            ),
            workdir / "curves.png",
        )
        save_figures(
            evaluation,
            np.asarray(codebook_of(self.config, state)),
            workdir / "reconstructions.png",
            workdir / "codebook.png",
        )
