"""Parity with the notes' PyTorch model, weights copied across (random init, seed 0)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import torch_reference as tr  # noqa: E402
from jaxbasics.vqvae.convert import from_torch_state_dict, to_torch_state_dict  # noqa: E402
from jaxbasics.vqvae.model import VQVAE, vqvae_loss  # noqa: E402

SIZES = dict(
    num_hiddens=32,
    num_residual_hiddens=8,
    num_residual_layers=2,
    embedding_dim=16,
    num_embeddings=64,
)
TORCH_SIZES = dict(
    num_hiddens=32,
    num_residual_layers=2,
    num_residual_hiddens=8,
    num_embeddings=64,
    embedding_dim=16,
)
VAR = 0.06


def _pair(decay, sizes=SIZES, torch_sizes=TORCH_SIZES, form="auto"):
    torch.manual_seed(0)
    tm = tr.Model(**torch_sizes, decay=decay)
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    # abstract model: no random init to compute, every array comes from PyTorch
    model = nnx.eval_shape(lambda: VQVAE(**sizes, decay=decay, conv_form=form, rngs=nnx.Rngs(0)))
    nnx.update(model, from_torch_state_dict(sd, model))
    return tm, model, sd


def _batch(n=8):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (n, 32, 32, 3)).astype(np.float32)
    return x, torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


@pytest.mark.parametrize("form", ["im2col", "xla"])
@pytest.mark.parametrize("decay", [0.0, 0.99])
def test_forward_matches_pytorch(decay, form):
    tm, model, _ = _pair(decay, form=form)
    x, xt = _batch()
    vq_loss, recon, perplexity = tm(xt)
    out = model(jnp.asarray(x))
    np.testing.assert_allclose(out.recon, recon.detach().numpy().transpose(0, 2, 3, 1), atol=1e-4)
    np.testing.assert_allclose(out.vq_loss, vq_loss.item(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out.perplexity, perplexity.item(), atol=1e-4, rtol=1e-4)
    if decay:  # the EMA statistics moved identically
        for name in ("_vq_vae._ema_w", "_vq_vae._ema_cluster_size", "_vq_vae._embedding.weight"):
            got = to_torch_state_dict(nnx.state(model))[name]
            np.testing.assert_allclose(got, tm.state_dict()[name].numpy(), rtol=1e-4, atol=1e-5)


def test_forward_matches_pytorch_at_reference_sizes():
    tm, model, _ = _pair(0.0, sizes={}, torch_sizes={})
    x, xt = _batch(4)
    _, recon, perplexity = tm(xt)
    out = model(jnp.asarray(x))
    np.testing.assert_allclose(out.recon, recon.detach().numpy().transpose(0, 2, 3, 1), atol=1e-4)
    np.testing.assert_allclose(out.perplexity, perplexity.item(), rtol=1e-4)


@pytest.mark.parametrize("form", ["im2col", "xla"])
@pytest.mark.parametrize("decay", [0.0, 0.99])
def test_gradients_match_pytorch(decay, form):
    tm, model, _ = _pair(decay, form=form)
    x, xt = _batch()
    vq_loss, recon, _ = tm(xt)
    loss = torch.nn.functional.mse_loss(recon, xt) / VAR + vq_loss
    loss.backward()
    torch_grads = {k: p.grad.numpy() for k, p in tm.named_parameters() if p.grad is not None}

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        m = nnx.merge(graphdef, params, rest)
        return vqvae_loss(m(jnp.asarray(x)), jnp.asarray(x), VAR)

    grads = jax.grad(loss_fn)(params)
    # reuse the converter to put JAX grads into PyTorch names and layouts
    full = nnx.state(model)
    full = jax.tree.map(lambda v: v * 0, full)
    nnx.replace_by_pure_dict(full, _merge(nnx.to_pure_dict(full), nnx.to_pure_dict(grads)))
    jax_grads = to_torch_state_dict(full)
    assert set(torch_grads) <= set(jax_grads)
    if decay == 0.0:
        assert "_vq_vae._embedding.weight" in torch_grads
    for name, g in torch_grads.items():
        scale = np.abs(g).max()
        np.testing.assert_allclose(jax_grads[name], g, rtol=1e-3, atol=1e-3 * scale, err_msg=name)


def _merge(base, update):
    for k, v in update.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) else v
    return base


@pytest.mark.parametrize("decay", [0.0, 0.99])
def test_state_dict_round_trips_exactly(decay):
    tm, model, sd = _pair(decay)
    back = to_torch_state_dict(from_torch_state_dict(sd, model))
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in back.items()})
