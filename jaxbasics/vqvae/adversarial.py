"""The adversarial half of a VQGAN-style tokenizer: a PatchGAN discriminator and its losses.

A VQ-VAE trained on squared error alone keeps an image's layout and colours and blurs its
texture. VQGAN (Esser et al. 2021, "taming transformers") adds a discriminator that scores
patches of an image as real or reconstructed; the VQ-VAE is then also trained to make its
reconstructions score as real. The pieces here are pure functions of arrays, used by the
training step (:mod:`jaxbasics.tasks.vqvae.gradients`):

* :class:`PatchDiscriminator`: a few strided convolutions, one logit per overlapping patch;
* :func:`hinge_d_loss` and :func:`hinge_g_loss`: the hinge loss of the discriminator and of
  the generator (the VQ-VAE);
* :func:`adaptive_weight`: taming's balance of the two losses, the ratio of their gradient
  norms at the decoder's last layer;
* :func:`lecam_penalty` and :func:`lecam_anchors`: LeCam regularisation (Tseng et al. 2021),
  which keeps the discriminator's logits near running means of the other kind's.

>>> real, fake = jnp.array([2.0, 0.5]), jnp.array([-2.0, 0.0])
>>> float(hinge_d_loss(real, fake)), float(hinge_g_loss(fake))
(0.375, 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics.vqvae.layers import conv


def _norm(features: int) -> nnx.GroupNorm:
    # Group normalisation, not taming's batch norm: nothing to keep between steps, and the
    # same numbers whatever the batch is sharded over.
    return nnx.GroupNorm(features, num_groups=math.gcd(32, features), rngs=nnx.Rngs(0))


class PatchDiscriminator(nnx.Module):
    """A PatchGAN discriminator (Isola et al. 2017; taming's ``NLayerDiscriminator``) sized for
    small images: (B, H, W, 3) images in [-0.5, 0.5] -> (B, H/4 - 2, W/4 - 2) logits, one per
    patch (32x32 images: 6x6 patches of 34 pixels).

    Conv(3->c, k4 s2 p1), LeakyReLU(0.2), Conv(c->2c, k4 s2 p1), GroupNorm, LeakyReLU,
    Conv(2c->4c, k4 s1 p1), GroupNorm, LeakyReLU, Conv(4c->1, k4 s1 p1). In PyTorch the
    layers are ``nn.Conv2d``, ``nn.LeakyReLU(0.2)`` and ``nn.GroupNorm``.

    >>> d = PatchDiscriminator(8, rngs=nnx.Rngs(0))
    >>> d(jnp.zeros((2, 32, 32, 3))).shape
    (2, 6, 6)
    """

    def __init__(self, channels: int = 64, *, form: str = "auto", rngs: nnx.Rngs):
        opts = dict(form=form, rngs=rngs)
        c = channels
        self.conv_1 = conv(3, c, 4, stride=2, padding=1, **opts)
        self.conv_2 = conv(c, 2 * c, 4, stride=2, padding=1, use_bias=False, **opts)
        self.norm_2 = _norm(2 * c)
        self.conv_3 = conv(2 * c, 4 * c, 4, padding=1, use_bias=False, **opts)
        self.norm_3 = _norm(4 * c)
        self.conv_4 = conv(4 * c, 1, 4, padding=1, **opts)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.leaky_relu(self.conv_1(x), 0.2)
        x = jax.nn.leaky_relu(self.norm_2(self.conv_2(x)), 0.2)
        x = jax.nn.leaky_relu(self.norm_3(self.conv_3(x)), 0.2)
        return self.conv_4(x)[..., 0]


def hinge_d_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
    """The discriminator's hinge loss, ``(mean(relu(1 - real)) + mean(relu(1 + fake))) / 2``
    (taming's ``hinge_d_loss``): logits of real images are pushed above 1, of reconstructions
    below -1, and logits already past their margin add nothing.

    >>> float(hinge_d_loss(jnp.array([1.5, 0.0]), jnp.array([-1.0, 1.0])))
    0.75
    """
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)))


def hinge_g_loss(fake: jax.Array) -> jax.Array:
    """The generator's side, ``-mean(fake)``: the VQ-VAE lowers it by making the discriminator
    score its reconstructions as real.

    >>> float(hinge_g_loss(jnp.array([1.0, -3.0])))
    1.0
    """
    return -jnp.mean(fake)


def adaptive_weight(
    rec_grad: Any, adv_grad: Any, eps: float = 1e-4, max_weight: float = 1e4
) -> jax.Array:
    """taming's adaptive weight, ``||g_rec|| / (||g_adv|| + eps)`` clipped to ``[0,
    max_weight]``, gradients stopped: ``g_rec`` and ``g_adv`` are the gradients of the
    reconstruction loss and of the generator's adversarial loss with respect to the decoder's
    last layer, so that the adversarial term never outweighs the reconstruction at the start.

    >>> float(adaptive_weight(jnp.array([3.0, 4.0]), jnp.array([0.0, 10.0]), eps=0.0))
    0.5
    """

    def norm(tree: Any) -> jax.Array:
        return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))

    weight = norm(rec_grad) / (norm(adv_grad) + eps)
    return jax.lax.stop_gradient(jnp.clip(weight, 0.0, max_weight))


def lecam_penalty(real: jax.Array, fake: jax.Array, anchors: jax.Array) -> jax.Array:
    """LeCam regularisation (Tseng et al. 2021, eq. 3): ``mean((real - a_fake)^2) +
    mean((fake - a_real)^2)``, ``anchors = (a_real, a_fake)`` the running means of the
    discriminator's logits on real images and on reconstructions (:func:`lecam_anchors`).

    >>> float(lecam_penalty(jnp.array([2.0]), jnp.array([0.0]), jnp.array([1.0, -1.0])))
    10.0
    """
    a_real, a_fake = anchors[0], anchors[1]
    return jnp.mean(jnp.square(real - a_fake)) + jnp.mean(jnp.square(fake - a_real))


def lecam_anchors(
    anchors: jax.Array, real: jax.Array, fake: jax.Array, decay: float = 0.99
) -> jax.Array:
    """The anchors after one step: exponential moving averages (``decay``) of the mean logit on
    real images and on reconstructions, gradients stopped.

    >>> lecam_anchors(jnp.array([0.0, 0.0]), jnp.array([1.0, 3.0]), jnp.array([-4.0]), 0.5)
    Array([ 1., -2.], dtype=float32)
    """
    now = jnp.stack([jnp.mean(real), jnp.mean(fake)])
    return jax.lax.stop_gradient(decay * anchors + (1.0 - decay) * now)
