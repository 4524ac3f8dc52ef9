"""The training loop: a host sync every step against fetching metrics only at log boundaries."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from benchmarks.step import DATA_VARIANCE
from benchmarks.timing import alternate
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.train import init_state, make_train_step
from jaxbasics.train.sharding import make_shardings


def loop_line(config: VQVAEConfig, data: np.ndarray, rounds: int, k: int) -> dict[str, Any]:
    """ms per step of a training loop that syncs with the host every step, and of one that
    fetches the metrics only at the end (what ``fit`` does between log boundaries).

    Both feed a host batch through ``device_put`` each step, as the real loop does, and
    alternate in rounds of ``k`` steps.
    """
    sharding = make_shardings(config.batch_size).batch
    train_step = make_train_step(config, DATA_VARIANCE)
    images = np.ascontiguousarray(data.transpose(0, 2, 3, 1))  # NHWC on the host
    holder = [jax.device_put(init_state(config), make_shardings(config.batch_size).replicated)]

    def steps(sync: bool) -> Callable[[], None]:
        def run() -> None:
            pending = []
            for _ in range(k):
                holder[0], metrics = train_step(holder[0], jax.device_put(images, sharding))
                if sync:
                    jax.device_get(metrics)  # the old loop: wait for every step
                else:
                    pending.append(metrics)
            jax.device_get(pending)

        return run

    sides = {"sync": steps(True), "nosync": steps(False)}
    alternate(sides, 1, 1)
    times = alternate(sides, rounds, 1)
    sync_ms, nosync_ms = (1e3 * statistics.median(times[n]) / k for n in ("sync", "nosync"))
    return {
        "mode": "loop",
        "batch": config.batch_size,
        "sync_ms_per_step": round(sync_ms, 2),
        "nosync_ms_per_step": round(nosync_ms, 2),
        "speedup": round(sync_ms / nosync_ms, 3),
    }
