"""Sampling a prior of the cifar10 preset's sizes: JAX's compiled loop against its PyTorch twin,
eager and under ``torch.compile``, after a greedy check that every side draws the same codes.

``--prior-kind transformer`` (the preset's autoregressive prior, one code per step) or
``maskgit`` (the masked prior at the same sizes, ``--mask-steps`` parallel steps)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import alternate
from jaxbasics.prior import sample
from jaxbasics.tasks.prior.config import PRESETS
from jaxbasics.tasks.prior.train import PriorShape, make_prior

# The cifar10 prior preset's transformer, on the cifar10 VQ-VAE's 8x8 maps of 512 codes and
# CIFAR-10's 10 classes; ``--small`` shrinks it for smoke tests.
CIFAR10_PRIOR = PRESETS("cifar10")
PRIOR_CODE_MAP = (8, 8)
PRIOR_CLASSES = 10
SMALL_PRIOR = dict(prior_dim=16, prior_depth=1, prior_heads=2, num_codes=16)


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

    >>> args = argparse.Namespace(prior_dim=16, prior_depth=1, prior_heads=2, num_codes=16,
    ...                           temperature=1.0, top_k=None, prior_kind="maskgit", mask_steps=4)
    >>> sides, info = prior_sides(args, 2, None, [])
    >>> sorted(sides), sides["jax"]().shape, sorted(info)
    (['jax'], (2, 8, 8), ['compile_s'])
    """
    kind = args.prior_kind
    masked = kind == "maskgit"
    config = PRESETS(
        "cifar10", prior=kind, dim=args.prior_dim, depth=args.prior_depth, heads=args.prior_heads
    )
    prior = make_prior(
        config, PriorShape(args.num_codes, *PRIOR_CODE_MAP, PRIOR_CLASSES), nnx.Rngs(0)
    )
    labels = np.arange(batch) % PRIOR_CLASSES
    options = dict(temperature=args.temperature, top_k=args.top_k)
    if masked:
        options["steps"] = args.mask_steps
    jax_labels, key = jnp.asarray(labels), jax.random.key(0)

    def jax_side(**kw: Any) -> np.ndarray:
        return np.asarray(sample(prior, batch, key, labels=jax_labels, **{**options, **kw}))

    sides: dict[str, Callable[..., Any]] = {"jax": jax_side}
    if torch is not None:
        import torch_maskgit_reference as tmr
        import torch_prior_reference as tpr

        twin = tmr if masked else tpr
        device = args.torch_device
        model = twin.from_flax(prior).to(device)
        torch_labels = torch.from_numpy(labels).to(device)

        def torch_side(decode_step: Callable | None) -> Callable[..., np.ndarray]:
            def run(**kw: Any) -> np.ndarray:
                generator = torch.Generator(device).manual_seed(0)
                kw = {**options, **kw, "labels": torch_labels}
                if not masked:
                    kw["decode_step"] = decode_step
                return twin.sample(model, batch, generator, **kw).cpu().numpy()

            return run

        sides["torch"] = torch_side(None)
        if args.torch_compile and masked:
            notes.append("torch.compile: not timed for the masked prior (eager twin only)")
        elif args.torch_compile:
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
        # A masked prior's confidence noise is random: greedy is top_k=1 without it.
        exact = {"confidence_noise": 0.0} if args.prior_kind == "maskgit" else {}
        greedy = {name: side(top_k=1, **exact) for name, side in sides.items()}
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
        prior_kind=args.prior_kind,
        mask_steps=args.mask_steps if args.prior_kind == "maskgit" else None,
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
