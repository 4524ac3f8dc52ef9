"""Every reformulated layer computes exactly the plain layer's function: values and gradients.

The fast forms (im2col + matmul convolutions, the sub-pixel transposed conv) keep the
reference parameterisation, so the PyTorch weight converter stays valid; these tests
pin that they also keep the reference function, at the model's layer shapes (scaled
down) and at odd ones.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbasics.vqvae.model import (
    VQVAE,
    apply_conv,
    conv2d,
    conv2d_reference,
    conv_transpose_4x4s2,
    conv_transpose_4x4s2_reference,
    create_vqvae,
)


def _grads(fn, *args):
    """Gradients of a non-linear scalar of ``fn(*args)`` with respect to every argument."""

    def loss(*a):
        return jnp.sum(jnp.sin(fn(*a)))

    return jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))(*args)


@pytest.mark.parametrize(
    "k, stride, padding, cin, cout, hw, bias",
    [
        (4, 2, 1, 3, 8, 16, True),  # encoder conv_1
        (4, 2, 1, 8, 16, 8, True),  # encoder conv_2
        (3, 1, 1, 16, 16, 4, True),  # encoder conv_3, decoder conv_1
        (3, 1, 1, 16, 4, 4, False),  # residual 3x3
        (1, 1, 0, 4, 16, 4, False),  # residual 1x1
        (1, 1, 0, 16, 8, 4, True),  # pre-quantiser 1x1
        (2, 1, 0, 5, 12, 5, False),  # the sub-pixel transposed conv's 2x2
        (3, 2, 1, 3, 5, 7, True),  # odd size, stride 2
    ],
)
def test_conv2d_equals_lax_conv(k, stride, padding, cin, cout, hw, bias):
    # numpy draws: jax.random would compile a generator per shape, which is slow on CPU
    rng = np.random.default_rng(k * 100 + cin)
    x = jnp.asarray(rng.normal(size=(2, hw, hw, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
    b = jnp.asarray(rng.normal(size=(cout,)), jnp.float32) if bias else None
    fwd = jax.jit(conv2d, static_argnums=(3, 4))
    ref = jax.jit(conv2d_reference, static_argnums=(3, 4))
    np.testing.assert_allclose(
        fwd(x, w, b, stride, padding), ref(x, w, b, stride, padding), atol=1e-5
    )
    args = (x, w) if b is None else (x, w, b)

    def fast(*a):
        return conv2d(*a[:2], a[2] if bias else None, stride, padding)

    def plain(*a):
        return conv2d_reference(*a[:2], a[2] if bias else None, stride, padding)

    for g_fast, g_plain in zip(_grads(fast, *args), _grads(plain, *args), strict=True):
        np.testing.assert_allclose(g_fast, g_plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kernel_size, strides, padding",
    [((4, 4), 2, 1), ((3, 3), 1, 1), ((1, 1), 1, "SAME"), ((1, 1), 1, 0), ((3, 3), 1, "VALID")],
)
def test_apply_conv_equals_nnx_conv(kernel_size, strides, padding):
    layer = nnx.Conv(6, 5, kernel_size, strides=strides, padding=padding, rngs=nnx.Rngs(0))
    layer.bias[...] = jax.random.normal(jax.random.key(1), (5,))
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 6))
    np.testing.assert_allclose(apply_conv(layer, x), layer(x), atol=1e-5)


@pytest.mark.parametrize("cin, cout, hw", [(16, 8, 4), (8, 3, 8)])
def test_conv_transpose_equals_lax_conv_transpose(cin, cout, hw):
    keys = jax.random.split(jax.random.key(cin), 3)
    x = jax.random.normal(keys[0], (2, hw, hw, cin))
    k = jax.random.normal(keys[1], (4, 4, cin, cout)) / np.sqrt(4 * cin)
    b = jax.random.normal(keys[2], (cout,))
    np.testing.assert_allclose(
        conv_transpose_4x4s2(x, k, b), conv_transpose_4x4s2_reference(x, k, b), atol=1e-5
    )
    fast = _grads(conv_transpose_4x4s2, x, k, b)
    plain = _grads(conv_transpose_4x4s2_reference, x, k, b)
    for g_fast, g_plain in zip(fast, plain, strict=True):
        np.testing.assert_allclose(g_fast, g_plain, atol=1e-4, rtol=1e-4)


def _fast_forward(model: VQVAE, x: jax.Array):
    return model(x).recon


def _plain_forward(model: VQVAE, x: jax.Array):
    """The whole model with every layer through Flax's own nnx.Conv / lax.conv_transpose."""
    enc, dec = model.encoder, model.decoder

    def stack(s, h):
        for layer in s.layers:
            h = jax.nn.relu(h)
            h = h + layer.conv_1x1(jax.nn.relu(layer.conv_3x3(h)))
        return jax.nn.relu(h)

    def convt(layer, h):
        return conv_transpose_4x4s2_reference(h, layer.kernel[...], layer.bias[...])

    h = jax.nn.relu(enc.conv_2(jax.nn.relu(enc.conv_1(x))))
    z = model.pre_vq_conv(stack(enc.residual_stack, enc.conv_3(h)))
    q = model.vq(z).quantized
    return convt(
        dec.conv_trans_2,
        jax.nn.relu(convt(dec.conv_trans_1, stack(dec.residual_stack, dec.conv_1(q)))),
    )


@pytest.fixture(scope="module")
def model():
    return create_vqvae(
        0,
        num_hiddens=16,
        num_residual_hiddens=4,
        num_residual_layers=2,
        embedding_dim=8,
        num_embeddings=16,
    )


def test_whole_model_equals_plain_layers(model):
    x = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3), minval=-0.5, maxval=0.5)
    graphdef, state = nnx.split(model)
    fast = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x).recon)(state, x)
    plain = jax.jit(lambda s, x: _plain_forward(nnx.merge(graphdef, s), x))(state, x)
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def test_whole_model_parameter_gradients_equal_plain_layers(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.uniform(jax.random.key(4), (2, 32, 32, 3), minval=-0.5, maxval=0.5)

    def loss(p, forward):
        return jnp.sum(jnp.sin(4.0 * forward(nnx.merge(graphdef, p, rest), x)))

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    fast = nnx.to_pure_dict(grad(params, _fast_forward))
    plain = nnx.to_pure_dict(grad(params, _plain_forward))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4), fast, plain)
