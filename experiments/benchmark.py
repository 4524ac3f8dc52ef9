"""Training throughput and FLOP utilisation of jaxbasics' VQ-VAE against the PyTorch reference.

Times the real jitted, donating ``train_step`` of :func:`jaxbasics.train.step.make_train_step`
against the notes' PyTorch loop body (``torch_reference.train_step`` with
``torch.optim.Adam(lr=1e-3)``) on the same random uniform(-0.5, 0.5) batch, NHWC for JAX
and NCHW for PyTorch. The two sides alternate in rounds of a few steps inside one process,
so machine load hits both alike; medians are over the timed steps after warm-up.

PyTorch runs with ``torch.set_num_threads(os.cpu_count())``. It is optional: without it
(or with ``--no-torch``) only the JAX side is timed.

Prints one JSON line per batch size::

    python experiments/benchmark.py --batch 32,256
    python experiments/benchmark.py --batch 32,256 --torch-compile  # also torch.compile
    python experiments/benchmark.py --quick --small --batch 4     # smoke test, seconds
    python experiments/benchmark.py --layers --batch 32,256        # per-layer forward + backward
    python experiments/benchmark.py --prior --batch 1,64 --torch-compile  # prior sampling
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbasics.prior import sample
from jaxbasics.tensors import bchw_to_bhwc
from jaxbasics.train.config import TrainConfig
from jaxbasics.train.host import retain_host_memory
from jaxbasics.train.presets import preset
from jaxbasics.train.prior_config import prior_preset
from jaxbasics.train.prior_task import PriorShape, make_prior
from jaxbasics.train.sharding import make_shardings
from jaxbasics.train.state import init_state
from jaxbasics.train.step import make_eval_step, make_train_step

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
# The cifar10 prior preset's transformer, on the cifar10 VQ-VAE's 8x8 maps of 512 codes and
# CIFAR-10's 10 classes; ``--small`` shrinks it for smoke tests.
CIFAR10_PRIOR = prior_preset("cifar10")
PRIOR_CODE_MAP = (8, 8)
PRIOR_CLASSES = 10
SMALL_PRIOR = dict(prior_dim=16, prior_depth=1, prior_heads=2, num_codes=16)


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


def make_torch_side(
    torch: Any, config: TrainConfig, data: np.ndarray, device: str = "cpu", compile: bool = False
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


def make_jax_side(config: TrainConfig, images: jax.Array) -> tuple[Callable[[], None], dict, list]:
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


def eval_images_per_s(config: TrainConfig, state: Any, images: jax.Array, reps: int) -> float:
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


# The reference model's conv layers: (name, kind, cin, cout, kernel, stride, input size,
# times per model, whether the model needs the input gradient). Scaled by ``--small``.
LAYERS = [
    ("enc conv1 k4s2", "conv", 3, 64, 4, 2, 32, 1, False),
    ("enc conv2 k4s2", "conv", 64, 128, 4, 2, 16, 1, True),
    ("enc conv3 k3", "conv", 128, 128, 3, 1, 8, 1, True),
    ("res k3", "conv", 128, 32, 3, 1, 8, 4, True),
    ("res k1", "conv", 32, 128, 1, 1, 8, 4, True),
    ("pre-VQ k1", "conv", 128, 64, 1, 1, 8, 1, True),
    ("dec conv1 k3", "conv", 64, 128, 3, 1, 8, 1, True),
    ("dec convT1 k4s2", "convT", 128, 64, 4, 2, 8, 1, True),
    ("dec convT2 k4s2", "convT", 64, 3, 4, 2, 16, 1, True),
]


def layer_sides(
    spec: tuple, batch: int, torch: Any | None, small: bool
) -> dict[str, Callable[[], None]]:
    """Forward + backward (weights, and input where the model needs it) of one layer.

    JAX evaluates the layer exactly as the model does (:func:`~jaxbasics.vqvae.layers.conv` /
    :class:`~jaxbasics.vqvae.layers.ConvTranspose4x4s2`), jitted; PyTorch runs ``nn.Conv2d`` /
    ``nn.ConvTranspose2d`` eagerly. Both back-propagate the same random cotangent.

    >>> sides = layer_sides(LAYERS[2], 2, None, small=True)
    >>> sides["jax"]()
    >>> sorted(sides)
    ['jax']
    """
    from jaxbasics.vqvae.layers import ConvTranspose4x4s2, conv

    _, kind, cin, cout, k, stride, hw, _, need_x = spec
    if small:
        cin, cout = (c if c == 3 else max(1, c // 8) for c in (cin, cout))
    pad = (k - 1) // 2 if k != 4 else 1
    hw_out = hw * 2 if kind == "convT" else (hw + 2 * pad - k) // stride + 1
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, cin, hw, hw), dtype=np.float32)
    g_np = rng.standard_normal((batch, cout, hw_out, hw_out), dtype=np.float32)
    rngs = nnx.Rngs(0)
    if kind == "conv":
        bias = not spec[0].startswith("res")  # the residual blocks' convs have no bias
        layer = conv(cin, cout, k, stride=stride, padding=pad, use_bias=bias, rngs=rngs)
    else:
        layer = ConvTranspose4x4s2(cin, cout, rngs=rngs)
    graphdef, params = nnx.split(layer)
    x, g = bchw_to_bhwc(jnp.asarray(x_np)), bchw_to_bhwc(jnp.asarray(g_np))

    def loss(p, x):
        return jnp.vdot(nnx.merge(graphdef, p)(x), g)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1) if need_x else 0))

    def jax_step() -> None:
        jax.block_until_ready(grad(params, x))

    sides: dict[str, Callable[[], None]] = {"jax": jax_step}
    if torch is not None:
        module = (torch.nn.Conv2d if kind == "conv" else torch.nn.ConvTranspose2d)(
            cin, cout, k, stride, pad, bias=kind == "convT" or bias
        )
        tx = torch.from_numpy(x_np).requires_grad_(need_x)
        tg = torch.from_numpy(g_np)

        def torch_step() -> None:
            module.zero_grad()
            tx.grad = None
            module(tx).backward(tg)

        sides["torch"] = torch_step
    return sides


def layer_lines(
    batch: int, torch: Any | None, small: bool, rounds: int, k: int, warmup: int
) -> list[dict[str, Any]]:
    """One JSON record per layer of :data:`LAYERS`, plus their weighted sum (``count``).

    ``ratio`` is torch ms / jax ms, as for the whole step: above 1 JAX is faster.
    """
    lines, total = [], {"jax": 0.0, "torch": 0.0}
    for spec in LAYERS:
        sides = layer_sides(spec, batch, torch, small)
        alternate(sides, 1, warmup)
        times = alternate(sides, rounds, k)
        med = {n: 1e3 * statistics.median(t) for n, t in times.items()}
        line: dict[str, Any] = {"mode": "layers", "batch": batch, "layer": spec[0]}
        line["count"] = spec[7]
        line["jax_ms"] = round(med["jax"], 2)
        line["torch_ms"] = round(med["torch"], 2) if "torch" in med else None
        line["ratio"] = round(med["torch"] / med["jax"], 3) if "torch" in med else None
        for n in med:
            total[n] += spec[7] * med[n]
        lines.append(line)
    summary: dict[str, Any] = {"mode": "layers", "batch": batch, "layer": "sum (x count)"}
    summary["jax_ms"] = round(total["jax"], 2)
    summary["torch_ms"] = round(total["torch"], 2) if torch is not None else None
    summary["ratio"] = round(total["torch"] / total["jax"], 3) if torch is not None else None
    return lines + [summary]


def parse_batches(values: list[str]) -> list[int]:
    """``--batch`` values: repeatable and/or comma lists.

    >>> parse_batches(["32,256", "8"])
    [32, 256, 8]
    """
    return [int(v) for value in values for v in value.split(",") if v.strip()]


def loop_line(config: TrainConfig, data: np.ndarray, rounds: int, k: int) -> dict[str, Any]:
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


def prior_sides(
    args: argparse.Namespace, batch: int, torch: Any | None, notes: list[str]
) -> tuple[dict[str, Callable[..., Any]], dict[str, Any]]:
    """One call = ``batch`` code maps sampled by each side from the same transformer prior.

    ``jax`` is :func:`jaxbasics.prior.sample` (one compiled loop); ``torch`` the eager
    ``torch_prior_reference.sample`` with the weights copied by ``from_flax``;
    ``torch_compile`` the same loop with the model's decode step under ``torch.compile``
    (``dynamic=False``: the position is a tensor, so one graph serves all positions). Each
    side's first call (a compile, for the compiled ones) is timed into the returned info; a
    decode step that torch.compile fails on is said so in ``notes``, and not timed. Keyword
    arguments of a call override the sampling options (``top_k=1``: greedy).

    >>> args = parse_args(["--prior", "--small", "--no-torch"])
    >>> sides, info = prior_sides(args, 2, None, [])
    >>> sorted(sides), sides["jax"]().shape, sorted(info)
    (['jax'], (2, 8, 8), ['compile_s'])
    """
    config = prior_preset(
        "cifar10", dim=args.prior_dim, depth=args.prior_depth, heads=args.prior_heads
    )
    prior = make_prior(
        config, PriorShape(args.num_codes, *PRIOR_CODE_MAP, PRIOR_CLASSES), nnx.Rngs(0)
    )
    labels = np.arange(batch) % PRIOR_CLASSES
    options = dict(temperature=args.temperature, top_k=args.top_k)
    jax_labels, key = jnp.asarray(labels), jax.random.key(0)

    def jax_side(**kw: Any) -> np.ndarray:
        return np.asarray(sample(prior, batch, key, labels=jax_labels, **{**options, **kw}))

    sides: dict[str, Callable[..., Any]] = {"jax": jax_side}
    if torch is not None:
        import torch_prior_reference as tpr

        device = args.torch_device
        model = tpr.from_flax(prior).to(device)
        torch_labels = torch.from_numpy(labels).to(device)

        def torch_side(decode_step: Callable | None) -> Callable[..., np.ndarray]:
            def run(**kw: Any) -> np.ndarray:
                generator = torch.Generator(device).manual_seed(0)
                kw = {**options, **kw, "labels": torch_labels, "decode_step": decode_step}
                return tpr.sample(model, batch, generator, **kw).cpu().numpy()

            return run

        sides["torch"] = torch_side(None)
        if args.torch_compile:
            # Cold, as JAX's compile: inductor's on-disk caches would time a lookup instead.
            torch._inductor.config.force_disable_caches = True
            sides["torch_compile"] = torch_side(torch.compile(model.decode_step, dynamic=False))
    first: dict[str, float] = {}
    for name, side in list(sides.items()):
        t0 = time.perf_counter()
        try:
            side()  # compiles the compiled sides
        except Exception as e:  # torch.compile failing is a finding to report, not a crash
            if name != "torch_compile":
                raise
            del sides[name]
            notes.append(f"torch.compile of the decode step failed: {type(e).__name__}: {e}")
            continue
        first[name] = round(time.perf_counter() - t0, 2)
    info = {"compile_s": first["jax"]}
    if "torch_compile" in first:
        info["torch_compile_s"] = first["torch_compile"]
    return sides, info


def prior_line(args, batch, torch, rounds, k, warmup, notes) -> dict[str, Any]:
    """One sampling record: the sides of :func:`prior_sides` alternating, ``batch`` maps a call.

    First the sides sample greedily (``top_k=1``) and must agree on every code: else they do
    not compute the same function, and timing them would compare nothing.
    """
    load_before = os.getloadavg()[0]
    notes = list(notes)
    sides, info = prior_sides(args, batch, torch, notes)
    # Full float32 matmuls: a GPU's TF32 default would flip near-tied argmaxes of one side.
    with jax.default_matmul_precision("highest"):
        greedy = {name: side(top_k=1) for name, side in sides.items()}
    for name, codes in greedy.items():
        if not np.array_equal(codes, greedy["jax"]):
            differ = int((codes != greedy["jax"]).sum())
            raise SystemExit(
                f"greedy codes of {name} differ from JAX's in {differ} of {codes.size} places: "
                "the sides do not sample the same prior; fix the model before timing it."
            )
    alternate(sides, 1, warmup)
    times = alternate(sides, rounds, k)
    med = {name: statistics.median(t) for name, t in times.items()}
    out: dict[str, Any] = {"mode": "prior", "batch": batch}
    for name, seconds in med.items():
        out[f"{name}_ms_per_sample"] = round(1e3 * seconds, 2)
        out[f"{name}_images_per_s"] = round(batch / seconds, 1)
    out.setdefault("torch_ms_per_sample", None)
    out.setdefault("torch_images_per_s", None)
    out["ratio"] = round(med["torch"] / med["jax"], 3) if "torch" in med else None
    if "torch_compile" in med:
        out["ratio_vs_compile"] = round(med["torch_compile"] / med["jax"], 3)
    out["codes_match"] = len(greedy) > 1 or None
    out.update(info)
    out.update(
        num_codes=args.num_codes,
        code_map=list(PRIOR_CODE_MAP),
        num_classes=PRIOR_CLASSES,
        dim=args.prior_dim,
        depth=args.prior_depth,
        heads=args.prior_heads,
        temperature=args.temperature,
        top_k=args.top_k,
        device=str(jax.devices()[0].device_kind),
        steps=len(times["jax"]),
        small=args.small,
        load_avg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
        notes=notes,
    )
    return out


def peak_device_mb() -> float | None:
    """Peak bytes the first device's allocator has held, in MB (None on the CPU)."""
    stats = jax.local_devices()[0].memory_stats()
    return round(stats["peak_bytes_in_use"] / 2**20, 1) if stats else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", action="append", help='batch sizes, e.g. "32,256" (default)')
    p.add_argument("--steps", type=int, default=None, help="timed steps per side (default 20)")
    p.add_argument("--quick", action="store_true", help="few steps: a smoke test")
    p.add_argument("--small", action="store_true", help="tiny model sizes (smoke tests)")
    p.add_argument("--decay", type=float, default=0.0, help="EMA decay; 0 = plain VQ")
    p.add_argument("--no-torch", action="store_true", help="time the JAX side only")
    p.add_argument(
        "--torch-compile",
        action="store_true",
        help="also time PyTorch under torch.compile (inductor; compiles for 15-25 s first); "
        "ratio_vs_compile = its ms / JAX ms",
    )
    p.add_argument(
        "--layers", action="store_true", help="per-layer forward + backward instead of the step"
    )
    p.add_argument("--loop", action="store_true", help="loop with a host sync per step vs without")
    p.add_argument(
        "--prior",
        action="store_true",
        help="sampling speed of the cifar10 transformer prior preset (code maps per second)",
    )
    prior = p.add_argument_group("--prior sizes (--small: 16 codes, dim 16, depth 1, 2 heads)")
    prior.add_argument("--num-codes", type=int, default=512, help="K (default 512)")
    prior.add_argument("--prior-dim", type=int, default=CIFAR10_PRIOR.dim)
    prior.add_argument("--prior-depth", type=int, default=CIFAR10_PRIOR.depth)
    prior.add_argument("--prior-heads", type=int, default=CIFAR10_PRIOR.heads)
    prior.add_argument("--temperature", type=float, default=1.0)
    prior.add_argument("--top-k", type=int, default=None, help="default: all codes")
    p.add_argument("--conv-form", default="auto", choices=["auto", "xla", "im2col"])
    p.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--torch-device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--torch-threads", type=int, default=os.cpu_count(), help="default: os.cpu_count()"
    )
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="simulate N CPU devices and shard the batch over them (measures the "
        "data-parallel overhead; expect no speed-up on 2 cores)",
    )
    args = p.parse_args(argv)
    if args.small:
        vars(args).update(SMALL_PRIOR)
    return args


def bench_config(args: argparse.Namespace, batch: int) -> TrainConfig:
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.devices:
        jax.config.update("jax_num_cpu_devices", args.devices)
    retain_host_memory()  # as training does: XLA's freed temporaries stay in the process

    batches = parse_batches(args.batch or ["32,256"])
    steps = args.steps or (3 if args.quick else 20)
    k = 1 if args.quick else 2
    rounds = max(1, -(-steps // k))
    warmup = 1 if args.quick else 3

    torch = None if args.no_torch else import_torch()
    notes = []
    if torch is not None:
        torch.set_num_threads(args.torch_threads)
        notes.append(f"torch.set_num_threads({args.torch_threads}), device {args.torch_device}")
    elif not args.no_torch:
        notes.append("torch is not installed: JAX side only")
        print(json.dumps({"note": notes[-1]}), file=sys.stderr)
    if args.layers:
        for batch in batches:
            for line in layer_lines(batch, torch, args.small, rounds, k, warmup):
                print(json.dumps(line), flush=True)
        return
    if args.prior:
        for batch in parse_batches(args.batch or ["1,64"]):
            print(json.dumps(prior_line(args, batch, torch, rounds, k, warmup, notes)), flush=True)
        return
    if args.loop:
        for batch in batches:
            data = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, 3, 32, 32))
            line = loop_line(bench_config(args, batch), data.astype(np.float32), rounds, 5)
            print(json.dumps(line), flush=True)
        return
    size = 1024 if args.quick else 2048
    machine = matmul_gflop_per_s(size, 2 if args.quick else 5, torch, args.torch_device)
    for batch in batches:
        line = step_line(args, batch, torch, machine, rounds, k, warmup, notes)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
