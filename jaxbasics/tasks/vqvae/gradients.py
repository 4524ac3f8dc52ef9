"""The VQ-VAE's gradients (:func:`gradients_of`): the notes' loss, or VQGAN-style against a
discriminator and LPIPS; and the discriminator's own step. All run inside the one jitted
``train_step`` of :func:`jaxbasics.tasks.vqvae.train.make_train_step`, on one train state.

The notes' loss is ``recon_error + vq_loss`` (:func:`~jaxbasics.vqvae.model.vqvae_loss`). With
``config.disc_weight > 0`` it is (taming's ``VQLPIPSWithDiscriminator``)::

    recon_error + perceptual_weight * LPIPS + vq_loss + lambda * hinge_g_loss(D(recon))

where ``lambda = disc_weight * adaptive_weight`` once ``step >= disc_start`` (0 before), the
adaptive weight taken at the decoder's last layer (:func:`~jaxbasics.vqvae.adversarial.
adaptive_weight`). The discriminator D then takes one Adam step on the hinge loss of the real
batch against the reconstructions (gradients stopped), plus LeCam if ``lecam_weight > 0``.

The adaptive weight costs no second pass through the VQ-VAE: its forward pass runs once, the
gradient of each loss with respect to the reconstruction is pulled back through the last layer
alone (one vector-Jacobian product each), and the whole VQ-VAE is differentiated once, for the
weighted sum (the pull-back is linear). The discriminator adds its own forward and backward
passes: on the reconstructions for the VQ-VAE's gradient, and on both batches for its step.
Without a discriminator and with ``perceptual_weight`` only, the same path runs with
``lambda = 0`` and no D.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.vqvae import perceptual
from jaxbasics.vqvae.adversarial import (
    PatchDiscriminator,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    lecam_anchors,
    lecam_penalty,
)
from jaxbasics.vqvae.ema import EMAVariable
from jaxbasics.vqvae.model import VQVAE, recon_error, vqvae_loss
from jaxbasics.vqvae.quantizer import VQVAEOutput

# The LeCam anchors' decay (the LeCam authors' 0.99).
LECAM_DECAY = 0.99


@flax.struct.dataclass
class DiscState:
    """The discriminator's part of a train state: its ``params``, its Adam ``opt_state`` and
    the LeCam ``anchors`` (2,): running means of its logits on real images and on
    reconstructions."""

    params: Any
    opt_state: Any
    anchors: jax.Array


class Gradients(NamedTuple):
    """One step's VQ-VAE gradients and what the step reports with them: the total ``loss``,
    ``grads`` of the parameters, the updated ``ema`` statistics, the model's ``out``put, the
    ``rec``onstruction error and the ``adversarial`` metrics (empty without D or LPIPS)."""

    loss: jax.Array
    grads: Any
    ema: Any
    out: VQVAEOutput
    rec: jax.Array
    adversarial: dict[str, jax.Array]


def gradients_of(
    config: VQVAEConfig, train_def: nnx.GraphDef, data_variance: float
) -> Callable[[Any, jax.Array], Gradients]:
    """``gradients(state, images) -> Gradients`` for ``config``: :func:`vqgan_gradients` if it
    sets a discriminator or a perceptual loss, else :func:`notes_gradients`. ``train_def`` is
    the model's graphdef in training mode, ``data_variance`` that of the training images."""
    if config.adversarial or config.perceptual_weight:
        return vqgan_gradients(config, train_def, data_variance)
    return notes_gradients(train_def, data_variance)


def notes_gradients(
    train_def: nnx.GraphDef, data_variance: float
) -> Callable[[Any, jax.Array], Gradients]:
    """``gradients(state, images) -> Gradients`` of the notes' loss, ``recon_error +
    vq_loss``, by ``jax.value_and_grad`` (``loss.backward()``)."""

    def gradients(state: Any, images: jax.Array) -> Gradients:
        def loss_fn(params):
            # copy=True: fresh Variables at this trace level, so the EMA update may write them.
            model = nnx.merge(train_def, params, state.ema, copy=True)
            out = model(images)
            rec = recon_error(out.recon, images, data_variance)
            return vqvae_loss(out, images, data_variance), (out, rec, nnx.state(model, EMAVariable))

        (loss, (out, rec, ema)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return Gradients(loss, grads, ema, out, rec, {})

    return gradients


def discriminator(config: VQVAEConfig, rngs: nnx.Rngs) -> PatchDiscriminator:
    """The run's :class:`~jaxbasics.vqvae.adversarial.PatchDiscriminator`."""
    return PatchDiscriminator(config.disc_channels, form=config.conv_form, rngs=rngs)


def disc_optimizer(config: VQVAEConfig) -> optax.GradientTransformation:
    """Adam at ``disc_learning_rate`` with taming's betas (0.5, 0.9): ``torch.optim.Adam(
    disc.parameters(), lr, betas=(0.5, 0.9))``."""
    return optax.adam(config.disc_learning_rate, b1=0.5, b2=0.9)


def init_disc(config: VQVAEConfig, key: jax.Array) -> DiscState:
    """A fresh :class:`DiscState` drawn from ``key`` (traceable)."""
    params = nnx.state(discriminator(config, nnx.Rngs(params=key)), nnx.Param)
    return DiscState(params, disc_optimizer(config).init(params), jnp.zeros((2,), jnp.float32))


@functools.cache
def _graphdefs(config: VQVAEConfig) -> tuple[nnx.GraphDef, nnx.GraphDef]:
    """The discriminator's graphdef and that of the decoder's last layer (built once per
    config: the VQ-VAE's gradient and the discriminator's step both need them)."""
    disc = nnx.eval_shape(lambda: discriminator(config, nnx.Rngs(0)))
    model = nnx.eval_shape(lambda: VQVAE(**config.model_kwargs(), rngs=nnx.Rngs(0)))
    return nnx.graphdef(disc), nnx.graphdef(model.decoder.conv_trans_2)


def vqgan_gradients(
    config: VQVAEConfig, train_def: nnx.GraphDef, data_variance: float
) -> Callable[[Any, jax.Array], Gradients]:
    """``gradients(state, images) -> Gradients`` of the loss above for a state with a ``disc``
    (:class:`DiscState`), or without one when only ``perceptual_weight`` is set."""
    disc_def, last_def = _graphdefs(config)
    weight = config.perceptual_weight
    distance = perceptual.lpips(config.perceptual_net, config.conv_form) if weight else None

    def rec_loss(recon: jax.Array, images: jax.Array):
        mse = recon_error(recon, images, data_variance)
        lp = jnp.mean(distance(recon, images)) if distance else jnp.zeros(())
        return mse + config.perceptual_weight * lp, (mse, lp)

    def compute(state: Any, images: jax.Array) -> Gradients:
        def front(params):
            model = nnx.merge(train_def, params, state.ema, copy=True)
            vq = model.vq(model.latents(images))
            features = model.decoder.features(vq.quantized)
            return (features, vq.loss), (vq, nnx.state(model, EMAVariable))

        (features, vq_loss), front_vjp, (vq, ema) = jax.vjp(front, state.params, has_aux=True)
        last = state.params["decoder"]["conv_trans_2"]
        recon, last_vjp = jax.vjp(
            lambda p, f: nnx.merge(last_def, p)(f).astype(jnp.float32), last, features
        )
        (rec_total, (mse, lp)), g_rec = jax.value_and_grad(rec_loss, has_aux=True)(recon, images)
        k_rec, f_rec = last_vjp(g_rec)
        metrics = {"lpips": lp} if distance else {}
        if config.adversarial:
            g_loss, g_adv = jax.value_and_grad(
                lambda r: hinge_g_loss(nnx.merge(disc_def, state.disc.params)(r))
            )(recon)
            k_adv, f_adv = last_vjp(g_adv)
            on = (state.step >= config.disc_start).astype(jnp.float32)
            weight = adaptive_weight(k_rec["kernel"], k_adv["kernel"])
            scale = on * config.disc_weight * weight
            k_rec = jax.tree.map(lambda a, b: a + scale * b, k_rec, k_adv)
            f_rec = f_rec + (scale * f_adv).astype(f_rec.dtype)  # bfloat16 features stay so
            rec_total = rec_total + scale * g_loss
            metrics |= {"gan_loss": g_loss, "adaptive_weight": weight}
        (grads,) = front_vjp((f_rec, jnp.ones_like(vq_loss)))
        # The front pass does not use the last layer: its gradient there is zero.
        grads["decoder"]["conv_trans_2"] = k_rec
        out = VQVAEOutput(recon, vq.quantized, vq.indices, vq.loss, vq.perplexity)
        return Gradients(rec_total + vq_loss, grads, ema, out, mse, metrics)

    return compute


def train_discriminator(
    config: VQVAEConfig, disc: DiscState, step: jax.Array, images: jax.Array, recon: jax.Array
) -> tuple[DiscState, dict[str, jax.Array]]:
    """One Adam step of the discriminator on the hinge loss of ``images`` (real) against
    ``recon`` (gradients stopped), plus ``lecam_weight`` times LeCam; before ``disc_start``
    the state is returned unchanged (its optimiser's count included). ``D(recon)`` is computed
    again here rather than shared with the VQ-VAE's gradient: a different loss and parameters
    being differentiated, and XLA merges the two forward passes where it can."""
    disc_def, _ = _graphdefs(config)
    tx = disc_optimizer(config)
    fake = jax.lax.stop_gradient(recon)

    # The anchors start at the first step's mean logits (no decay then), and the penalty reads
    # them after this step's update, as the LeCam authors' code does.
    decay = jnp.where(step == config.disc_start, 0.0, LECAM_DECAY)

    def loss_fn(params):
        d = nnx.merge(disc_def, params)
        real_logits, fake_logits = d(images), d(fake)
        loss = hinge_d_loss(real_logits, fake_logits)
        anchors = lecam_anchors(disc.anchors, real_logits, fake_logits, decay)
        if config.lecam_weight:
            loss = loss + config.lecam_weight * lecam_penalty(real_logits, fake_logits, anchors)
        return loss, (real_logits, fake_logits, anchors)

    (loss, (real, fake_logits, anchors)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        disc.params
    )
    updates, opt_state = tx.update(grads, disc.opt_state, disc.params)
    trained = DiscState(optax.apply_updates(disc.params, updates), opt_state, anchors)
    on = step >= config.disc_start
    new = jax.tree.map(lambda t, o: jnp.where(on, t, o), trained, disc)
    metrics = {
        "disc_loss": loss,
        "logits_real": jnp.mean(real),
        "logits_fake": jnp.mean(fake_logits),
    }
    return new, metrics
