"""What every benchmark shares: timing, the machine's matmul rate, and the sides alternating.

Each benchmark (:mod:`benchmarks.step`, :mod:`benchmarks.layers`, :mod:`benchmarks.loop`,
:mod:`benchmarks.prior`) times a JAX side against a PyTorch side in one process, A/B/A/B
(:func:`alternate`), so that machine load hits both alike; medians are over the timed steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def import_torch() -> Any | None:
    """``torch`` if it is installed, else None (the benchmark then times JAX only)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def best_time(fn: Callable[[], Any], reps: int) -> float:
    """Fastest of ``reps`` timed calls of ``fn`` (after one warm-up call), in seconds."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflop_per_s(
    n: int = 2048, reps: int = 5, torch: Any | None = None, device: str = "cpu"
) -> dict[str, float]:
    """GFLOP/s of an n^3 float32 matmul in numpy, XLA and (if given) PyTorch on ``device``.

    The machine's rate is the best of them (PyTorch's oneDNN is usually fastest on CPU).

    >>> rates = matmul_gflop_per_s(64, reps=1)
    >>> sorted(rates), all(v > 0 for v in rates.values())
    (['jax', 'numpy'], True)
    """
    flop = 2.0 * n**3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    rates = {"numpy": flop / best_time(lambda: a @ b, reps) / 1e9}
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.matmul)
    rates["jax"] = flop / best_time(lambda: mm(ja, jb).block_until_ready(), reps) / 1e9
    if torch is not None:
        ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
        sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
        rates["torch"] = flop / best_time(lambda: (ta @ tb, sync()), reps) / 1e9
    return rates


def alternate(sides: dict[str, Callable[[], None]], rounds: int, k: int) -> dict[str, list[float]]:
    """Run the sides A/B/A/B, ``k`` steps each per round; per-step seconds per side.

    >>> t = alternate({"a": lambda: None, "b": lambda: None}, rounds=2, k=3)
    >>> {name: len(v) for name, v in t.items()}
    {'a': 6, 'b': 6}
    """
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, step in sides.items():
            for _ in range(k):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
    return times


def parse_batches(values: list[str]) -> list[int]:
    """``--batch`` values: repeatable and/or comma lists.

    >>> parse_batches(["32,256", "8"])
    [32, 256, 8]
    """
    return [int(v) for value in values for v in value.split(",") if v.strip()]


def peak_device_mb() -> float | None:
    """Peak bytes the first device's allocator has held, in MB (None on the CPU)."""
    stats = jax.local_devices()[0].memory_stats()
    return round(stats["peak_bytes_in_use"] / 2**20, 1) if stats else None
