"""Each convolution of the reference model, forward + backward, JAX (as the model evaluates it)
against PyTorch's ``nn.Conv2d`` / ``nn.ConvTranspose2d``."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import alternate
from jaxbasics.tensors import bchw_to_bhwc
from jaxbasics.vqvae.layers import ConvTranspose4x4s2, conv

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
