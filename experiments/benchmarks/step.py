"""The whole training step: JAX's jitted, donating ``train_step`` against the notes' PyTorch loop.

Times the real ``train_step`` of :func:`jaxbasics.tasks.vqvae.train.make_train_step` against the
notes' PyTorch loop body (``torch_reference.train_step`` with ``torch.optim.Adam(lr=1e-3)``) on
the same random uniform(-0.5, 0.5) batch, NHWC for JAX and NCHW for PyTorch.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import alternate, best_time, peak_device_mb
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.presets import preset
from jaxbasics.tasks.vqvae.train import init_state, make_eval_step, make_train_step
from jaxbasics.tensors import bchw_to_bhwc
from jaxbasics.train.sharding import make_shardings

# Variance of CIFAR-10's training images scaled to [0, 1]; only scales the loss.
DATA_VARIANCE = 0.06328
# Reduced sizes for smoke tests (``--small``).
SMALL_SIZES = dict(
    num_hiddens=16,
    num_residual_hiddens=4,
    num_residual_layers=1,
    embedding_dim=8,
    num_embeddings=16,
)


def make_torch_side(
    torch: Any, config: VQVAEConfig, data: np.ndarray, device: str = "cpu", compile: bool = False
) -> Callable[[], None]:
    """One call = one step of the notes' PyTorch loop body on ``data`` (NCHW), on ``device``.

    With ``compile`` the model runs under ``torch.compile`` (inductor, default mode): the
    stronger PyTorch peer on a CPU. Its compile happens in the first calls (the warm-up).
    """
    from torch_reference import Model, train_step

    torch.manual_seed(config.seed)
    sizes = ("num_hiddens", "num_residual_hiddens", "num_residual_layers", "embedding_dim")
    kwargs = {k: getattr(config, k) for k in (*sizes, "num_embeddings", "commitment_cost", "decay")}
    model = Model(**kwargs).to(device)  # the reference takes the same keyword names
    model.train()
    if compile:
        model = torch.compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    batch = torch.from_numpy(data).to(device)

    def step() -> None:
        train_step(model, optimizer, batch, DATA_VARIANCE)
        if device != "cpu":
            torch.cuda.synchronize()

    return step


def make_jax_side(config: VQVAEConfig, images: jax.Array) -> tuple[Callable[[], None], dict, list]:
    """One call = one real ``train_step``; also returns compile time, FLOPs and memory."""
    state = jax.device_put(init_state(config), make_shardings(config.batch_size).replicated)
    train_step = make_train_step(config, DATA_VARIANCE)
    t0 = time.perf_counter()
    compiled = train_step.lower(state, images).compile()
    info: dict[str, Any] = {"compile_s": round(time.perf_counter() - t0, 2)}
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    # An SPMD program's cost is per device; the step's work is that times the devices.
    info["step_gflop"] = float(cost["flops"]) * jax.device_count() / 1e9
    mem = compiled.memory_analysis()
    if mem is not None:
        info["xla_temp_mb"] = round(mem.temp_size_in_bytes / 2**20, 1)
        info["xla_argument_mb"] = round(mem.argument_size_in_bytes / 2**20, 1)
    holder = [state]

    def step() -> None:
        # The compiled executable of the real jitted step: it donates the state buffers.
        new_state, metrics = compiled(holder[0], images)
        jax.block_until_ready(metrics)
        holder[0] = new_state

    return step, info, holder


def eval_images_per_s(config: VQVAEConfig, state: Any, images: jax.Array, reps: int) -> float:
    """Throughput of the jitted ``eval_step`` (encode + quantise + decode)."""
    eval_step = make_eval_step(config)
    mask = jnp.ones((images.shape[0],), bool)
    seconds = best_time(lambda: jax.block_until_ready(eval_step(state, images, mask)), reps)
    return images.shape[0] / seconds


def result_line(
    batch: int,
    jax_times: list[float],
    torch_times: list[float] | None,
    info: dict[str, Any],
    machine: dict[str, float],
) -> dict[str, Any]:
    """The JSON record of one configuration (medians of per-step seconds).

    >>> r = result_line(4, [0.1, 0.2, 0.3], [0.4], {"step_gflop": 1.0, "compile_s": 1.0},
    ...                 {"numpy": 10.0, "jax": 8.0})
    >>> r["jax_ms_per_step"], r["ratio"], r["jax_gflop_per_s"], r["fraction_of_machine"]
    (200.0, 2.0, 5.0, 0.5)
    """
    jax_s = statistics.median(jax_times)
    out: dict[str, Any] = {"batch": batch, "jax_ms_per_step": round(1e3 * jax_s, 2)}
    out["jax_images_per_s"] = round(batch / jax_s, 1)
    if torch_times:
        torch_s = statistics.median(torch_times)
        out["torch_ms_per_step"] = round(1e3 * torch_s, 2)
        out["torch_images_per_s"] = round(batch / torch_s, 1)
        out["ratio"] = round(torch_s / jax_s, 3)
    else:
        out.update(torch_ms_per_step=None, torch_images_per_s=None, ratio=None)
    gflop = info["step_gflop"]
    best = max(machine.values())
    out["step_gflop"] = round(gflop, 3)
    out["jax_gflop_per_s"] = round(gflop / jax_s, 1)
    out["machine_gflop_per_s"] = round(best, 1)
    out["matmul_gflop_per_s"] = {k: round(v, 1) for k, v in machine.items()}
    out["fraction_of_machine"] = round(gflop / jax_s / best, 3)
    out.update({k: v for k, v in info.items() if k != "step_gflop"})
    return out


def bench_config(args: argparse.Namespace, batch: int) -> VQVAEConfig:
    """The notes' model and quantiser at ``batch``, lr 1e-3 (as the PyTorch side)."""
    return preset(
        "cifar10",
        faithful=True,
        batch_size=batch,
        learning_rate=1e-3,
        decay=args.decay,
        conv_form=args.conv_form,
        compute_dtype=args.compute_dtype,
        **(SMALL_SIZES if args.small else {}),
    )


def step_line(args, batch, torch, machine, rounds, k, warmup, notes) -> dict[str, Any]:
    """One whole-step record: JAX and (if given) PyTorch alternating on the same batch."""
    config = bench_config(args, batch)
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, 3, 32, 32)).astype(np.float32)
    # NCHW -> NHWC, once; sharded over the devices' batch axis like fit() does
    images = jax.device_put(bchw_to_bhwc(jnp.asarray(data)), make_shardings(batch).batch)
    jax_step, info, holder = make_jax_side(config, images)
    sides = {"jax": jax_step}
    if torch is not None:
        sides["torch"] = make_torch_side(torch, config, data, args.torch_device)
        if args.torch_compile:
            sides["torch_compile"] = make_torch_side(torch, config, data, args.torch_device, True)
            t0 = time.perf_counter()
            sides["torch_compile"]()  # inductor compiles forward and backward here
            info["torch_compile_s"] = round(time.perf_counter() - t0, 2)
    alternate(sides, 1, warmup)
    times = alternate(sides, rounds, k)
    out = result_line(batch, times["jax"], times.get("torch"), info, machine)
    if "torch_compile" in times:
        compiled_s = statistics.median(times["torch_compile"])
        out["torch_compile_ms_per_step"] = round(1e3 * compiled_s, 2)
        out["ratio_vs_compile"] = round(compiled_s / statistics.median(times["jax"]), 3)
    out["eval_images_per_s"] = round(
        eval_images_per_s(config, holder[0], images, 2 if args.quick else 5), 1
    )
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["peak_device_mb"] = peak_device_mb()
    if torch is not None and args.torch_device != "cpu":
        out["torch_peak_device_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out.update(
        decay=args.decay,
        conv_form=args.conv_form,
        compute_dtype=args.compute_dtype,
        device=str(jax.devices()[0].device_kind),
        devices=jax.device_count(),
        steps=len(times["jax"]),
        small=args.small,
        notes=notes,
    )
    return out
