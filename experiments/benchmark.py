"""Training throughput and FLOP utilisation of jaxbasics' VQ-VAE against the PyTorch reference.

By default it times the real jitted, donating ``train_step`` against the notes' PyTorch loop
body on the same batch (:mod:`benchmarks.step`); ``--layers`` times each convolution
(:mod:`benchmarks.layers`), ``--loop`` the host's syncing (:mod:`benchmarks.loop`),
``--prior`` the prior's sampling (:mod:`benchmarks.prior`) and ``--sharp`` the VQGAN-style
step against today's (:mod:`benchmarks.sharp`). The two sides alternate in rounds of a few
steps inside one process, so machine load hits both alike; medians are over the timed steps
after warm-up (:mod:`benchmarks.timing`).

PyTorch runs with ``torch.set_num_threads(os.cpu_count())``. It is optional: without it
(or with ``--no-torch``) only the JAX side is timed.

Prints one JSON line per batch size::

    python experiments/benchmark.py --batch 32,256
    python experiments/benchmark.py --batch 32,256 --torch-compile  # also torch.compile
    python experiments/benchmark.py --quick --small --batch 4     # smoke test, seconds
    python experiments/benchmark.py --layers --batch 32,256        # per-layer forward + backward
    python experiments/benchmark.py --prior --batch 1,64 --torch-compile  # prior sampling
    python experiments/benchmark.py --sharp --batch 32                     # cifar10-sharp step
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from benchmarks.layers import layer_lines
from benchmarks.loop import loop_line
from benchmarks.prior import CIFAR10_PRIOR, SMALL_PRIOR, prior_line
from benchmarks.sharp import sharp_line
from benchmarks.step import bench_config, step_line
from benchmarks.timing import import_torch, matmul_gflop_per_s, parse_batches
from jaxbasics.train.host import retain_host_memory


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
    p.add_argument("--sharp", action="store_true", help="cifar10-sharp's step against cifar10's")
    p.add_argument(
        "--check",
        action="store_true",
        help="every measurement of experiments/device_check.sh in one process: the step against "
        "PyTorch, the step in im2col form and in bfloat16 (JAX alone), the loop, and sampling "
        "the prior at --prior-batch",
    )
    p.add_argument("--prior-batch", default="1,64", help="--check: the prior's batch sizes")
    p.add_argument(
        "--prior",
        action="store_true",
        help="sampling speed of the cifar10 prior preset's sizes (code maps per second)",
    )
    prior = p.add_argument_group("--prior sizes (--small: 16 codes, dim 16, depth 1, 2 heads)")
    prior.add_argument("--num-codes", type=int, default=512, help="K (default 512)")
    prior.add_argument("--prior-dim", type=int, default=CIFAR10_PRIOR.dim)
    prior.add_argument("--prior-depth", type=int, default=CIFAR10_PRIOR.depth)
    prior.add_argument("--prior-heads", type=int, default=CIFAR10_PRIOR.heads)
    prior.add_argument("--temperature", type=float, default=1.0)
    prior.add_argument("--top-k", type=int, default=None, help="default: all codes")
    kinds = ["transformer", "maskgit"]  # one code per step, or --mask-steps parallel steps
    prior.add_argument("--prior-kind", default="transformer", choices=kinds)
    prior.add_argument("--mask-steps", type=int, default=10, help="maskgit: decoding steps")
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


class Timing(NamedTuple):
    """How many timed rounds of ``k`` steps a side, after ``warmup`` untimed ones."""

    rounds: int
    k: int
    warmup: int


def lines(args: argparse.Namespace, torch: Any, notes: list[str], t: Timing) -> Iterator[dict]:
    """The records of the benchmark the flags choose (see the module docstring)."""
    batches = parse_batches(args.batch or ["32,256"])
    if args.layers:
        for batch in batches:
            yield from layer_lines(batch, torch, args.small, *t)
    elif args.prior:
        for batch in parse_batches(args.batch or ["1,64"]):
            yield prior_line(args, batch, torch, *t, notes)
    elif args.sharp:
        for batch in batches:
            yield sharp_line(args, batch, t.rounds, t.k, t.warmup)
    elif args.loop:
        for batch in batches:
            data = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, 3, 32, 32))
            yield loop_line(bench_config(args, batch), data.astype(np.float32), t.rounds, 5)
    else:
        size = 1024 if args.quick else 2048
        machine = matmul_gflop_per_s(size, 2 if args.quick else 5, torch, args.torch_device)
        for batch in batches:
            yield step_line(args, batch, torch, machine, *t, notes)


def check_lines(args: argparse.Namespace, torch: Any, notes: list[str], t: Timing) -> Iterator:
    """``--check``: the step against PyTorch, in im2col form and in bfloat16, the loop, and the
    prior's sampling, one after the other in this process."""
    plain = dict(check=False, layers=False, prior=False, loop=False, sharp=False)
    yield from lines(argparse.Namespace(**{**vars(args), **plain}), torch, notes, t)
    for change in ({"conv_form": "im2col"}, {"compute_dtype": "bfloat16"}, {"loop": True}):
        yield from lines(argparse.Namespace(**{**vars(args), **plain, **change}), None, [], t)
    prior = {**plain, "prior": True, "batch": [args.prior_batch]}
    yield from lines(argparse.Namespace(**{**vars(args), **prior}), torch, notes, t)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.devices:
        jax.config.update("jax_num_cpu_devices", args.devices)
    retain_host_memory()  # as training does: XLA's freed temporaries stay in the process
    steps = args.steps or (3 if args.quick else 20)
    k = 1 if args.quick else 2
    timing = Timing(max(1, -(-steps // k)), k, 1 if args.quick else 3)
    torch = None if args.no_torch else import_torch()
    notes = []
    if torch is not None:
        torch.set_num_threads(args.torch_threads)
        notes.append(f"torch.set_num_threads({args.torch_threads}), device {args.torch_device}")
    elif not args.no_torch:
        notes.append("torch is not installed: JAX side only")
        print(json.dumps({"note": notes[-1]}), file=sys.stderr)
    for line in (check_lines if args.check else lines)(args, torch, notes, timing):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
