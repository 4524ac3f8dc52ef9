"""The VQ-VAE model: shapes, bad inputs, encode/decode, and the fast transposed conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import SIZES
from jaxbasics.tasks.vqvae.train import init_state, make_train_step, to_model
from jaxbasics.vqvae.ema import VectorQuantizerEMA
from jaxbasics.vqvae.layers import ConvTranspose4x4s2
from jaxbasics.vqvae.model import VQVAE, vqvae_loss
from jaxbasics.vqvae.quantizer import VectorQuantizer


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def test_forward_shapes_and_fields(model):
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-0.5, maxval=0.5)
    out = model(x)
    assert out.recon.shape == x.shape
    assert out.quantized.shape == (2, 8, 8, 8)
    assert out.indices.shape == (2, 8, 8) and out.indices.dtype == jnp.int32
    assert out.vq_loss.shape == () and out.perplexity.shape == ()
    assert 1.0 <= float(out.perplexity) <= 16.0


def test_encode_decode_roundtrip_equals_forward(model):
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-0.5, maxval=0.5)
    idx = model.encode(x)
    np.testing.assert_array_equal(idx, model(x).indices)
    np.testing.assert_allclose(model.decode_indices(idx), model(x).recon, atol=1e-5)


def test_nchw_input_names_the_converter(model):
    with pytest.raises(ValueError, match="bchw_to_bhwc"):
        model(jnp.zeros((2, 3, 32, 32)))


def test_integer_pixels_are_refused_with_the_scaling(model):
    with pytest.raises(ValueError, match=r"got uint8 values.*x / 255 - 0.5"):
        model.encode(jnp.zeros((2, 32, 32, 3), jnp.uint8))


@pytest.mark.parametrize(
    "shape, match",
    [((2, 32, 32, 4), "3 channels"), ((2, 30, 32, 3), "divisible by 4"), ((32, 32, 3), "batch")],
)
def test_bad_input_shapes_raise(model, shape, match):
    with pytest.raises(ValueError, match=match):
        model(jnp.zeros(shape))


def test_loss_is_recon_error_plus_vq_loss(model):
    x = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3), minval=-0.5, maxval=0.5)
    out = model(x)
    expected = float(jnp.mean((out.recon - x) ** 2)) / 0.06 + float(out.vq_loss)
    np.testing.assert_allclose(vqvae_loss(out, x, 0.06), expected, rtol=1e-5)


def test_decay_selects_ema_quantizer():
    assert isinstance(nnx.eval_shape(lambda: VQVAE(**SIZES, rngs=nnx.Rngs(0))).vq, VectorQuantizer)
    ema = nnx.eval_shape(lambda: VQVAE(**SIZES, decay=0.99, rngs=nnx.Rngs(0)))
    assert isinstance(ema.vq, VectorQuantizerEMA)


def test_fast_conv_transpose_matches_flax_conv_transpose():
    """Same parameters, same function as nnx.ConvTranspose with PyTorch's padding=1."""
    layer = ConvTranspose4x4s2(6, 4, rngs=nnx.Rngs(0))
    ref = nnx.ConvTranspose(6, 4, (4, 4), strides=2, padding=((2, 2), (2, 2)), rngs=nnx.Rngs(0))
    ref.kernel[...] = layer.kernel[...]
    x = jax.random.normal(jax.random.key(5), (1, 5, 5, 6))
    np.testing.assert_allclose(layer(x), ref(x), atol=1e-5)


def test_bfloat16_compute_keeps_params_quantiser_and_outputs_float32():
    """Mixed precision: activations and matmuls in bf16; params, distances, EMA in float32."""
    from conftest import small_config

    f32, bf16 = small_config(decay=0.99), small_config(decay=0.99, compute_dtype="bfloat16")
    state = init_state(f32)
    m32 = to_model(f32, state.params, state.ema)
    m16 = to_model(bf16, state.params, state.ema)
    x = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3), minval=-0.5, maxval=0.5)
    assert m16.encoder(x).dtype == jnp.bfloat16
    assert m16.latents(x).dtype == jnp.float32 and m16(x).recon.dtype == jnp.float32
    np.testing.assert_allclose(m16(x).recon, m32(x).recon, atol=0.05)
    new, metrics = make_train_step(bf16, 0.06)(init_state(bf16), x)
    assert {a.dtype for a in jax.tree.leaves(new.params)} == {jnp.dtype("float32")}
    assert {a.dtype for a in jax.tree.leaves(new.ema)} == {jnp.dtype("float32")}
    assert {a.dtype for a in jax.tree.leaves(new.opt_state)} <= {
        jnp.dtype("float32"),
        jnp.dtype("int32"),
    }
    assert bool(metrics.finite) and metrics.loss.dtype == jnp.float32
