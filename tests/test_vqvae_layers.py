"""Every convolution form computes the plain layer's function: values and gradients.

The fast forms (im2col + matmul convolutions, the sub-pixel transposed conv) keep the
reference parameterisation, so the PyTorch weight converter and every checkpoint stay valid
under any form; these tests pin that they also keep the reference function, at the model's
layer shapes (scaled down) and at odd ones, and that the whole model agrees across forms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbasics.tasks.vqvae.train import init_state, to_model
from jaxbasics.vqvae import wgrad
from jaxbasics.vqvae.layers import (
    conv,
    conv2d,
    conv2d_reference,
    conv_transpose_4x4s2,
    conv_transpose_4x4s2_reference,
    resolve_form,
)
from jaxbasics.vqvae.model import VQVAE
from jaxbasics.vqvae.wgrad import chunked_wgrad_conv2d


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
    "batch, chunk_positions, padding, cin, cout",
    [
        (5, 32, 1, 6, 4),  # 2 images per chunk: chunks of 2, 2, 1
        (4, 16, 1, 3, 5),  # one image per chunk
        (3, 4, 0, 4, 4),  # fewer positions per chunk than one image: still one image
        (2, 10**6, 1, 4, 3),  # one chunk: the plain convolution
    ],
)
def test_chunked_wgrad_conv_equals_lax_conv(batch, chunk_positions, padding, cin, cout):
    rng = np.random.default_rng(batch * 10 + cin)
    x = jnp.asarray(rng.normal(size=(batch, 4, 4, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32)

    def chunked(x, w):
        return chunked_wgrad_conv2d(x, w, padding, chunk_positions)

    def plain(x, w):
        return conv2d_reference(x, w, None, 1, padding)

    np.testing.assert_allclose(jax.jit(chunked)(x, w), jax.jit(plain)(x, w), atol=1e-5)
    for g_fast, g_plain in zip(_grads(chunked, x, w), _grads(plain, x, w), strict=True):
        np.testing.assert_allclose(g_fast, g_plain, atol=1e-4, rtol=1e-4)


def test_chunked_wgrad_conv_keeps_the_compute_dtype():
    x = jnp.ones((4, 4, 4, 2), jnp.bfloat16)
    w = jnp.ones((3, 3, 2, 3), jnp.bfloat16)
    dw = jax.grad(lambda w: jnp.sum(chunked_wgrad_conv2d(x, w, 1, 16), dtype=jnp.float32))(w)
    dw_plain = jax.grad(lambda w: jnp.sum(conv2d_reference(x, w, None, 1, 1), dtype=jnp.float32))
    dw_plain = dw_plain(w)
    assert dw.dtype == jnp.bfloat16
    np.testing.assert_allclose(dw.astype(np.float32), dw_plain.astype(np.float32))


@pytest.mark.parametrize("form", ["im2col", "xla"])
@pytest.mark.parametrize("kernel, stride, padding", [(4, 2, 1), (3, 1, 1), (1, 1, 0), (3, 1, 0)])
def test_conv_layer_equals_nnx_conv_in_every_form(form, kernel, stride, padding):
    layer = conv(6, 5, kernel, stride=stride, padding=padding, form=form, rngs=nnx.Rngs(0))
    plain = nnx.Conv(6, 5, (kernel, kernel), strides=stride, padding=padding, rngs=nnx.Rngs(0))
    bias = jax.random.normal(jax.random.key(1), (5,))
    layer.bias[...] = plain.bias[...] = bias
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 6))
    np.testing.assert_allclose(layer(x), plain(x), atol=1e-5)


def test_auto_form_follows_the_backend():
    assert resolve_form("auto") == "im2col"  # the tests run on the CPU
    assert (resolve_form("auto", "gpu"), resolve_form("auto", "tpu")) == ("im2col", "xla")
    with pytest.raises(ValueError, match="conv_form must be one of"):
        resolve_form("cudnn")


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


def _model(form: str, **kw) -> VQVAE:
    """The tiny model in ``form``, with the same parameters in every form."""
    from conftest import small_config

    config = small_config(decay=0.0, conv_form=form, **kw)
    state = init_state(small_config(decay=0.0))
    return to_model(config, state.params, state.ema)


def _plain_forward(model: VQVAE, x: jax.Array):
    """The whole model with every layer through Flax's own nnx.Conv / lax.conv_transpose."""
    enc, dec = model.encoder, model.decoder

    def c(layer, h):
        k = layer.kernel[...]
        pad = (k.shape[0] - 1) // 2 if k.shape[0] != 4 else 1
        stride = 2 if k.shape[0] == 4 else 1
        return conv2d_reference(h, k, layer.bias[...] if layer.use_bias else None, stride, pad)

    def stack(s, h):
        for layer in s.layers:
            h = jax.nn.relu(h)
            h = h + c(layer.conv_1x1, jax.nn.relu(c(layer.conv_3x3, h)))
        return jax.nn.relu(h)

    def convt(layer, h):
        return conv_transpose_4x4s2_reference(h, layer.kernel[...], layer.bias[...])

    h = jax.nn.relu(c(enc.conv_2, jax.nn.relu(c(enc.conv_1, x))))
    z = c(model.pre_vq_conv, stack(enc.residual_stack, c(enc.conv_3, h)))
    q = model.vq(z).quantized
    return convt(
        dec.conv_trans_2,
        jax.nn.relu(convt(dec.conv_trans_1, stack(dec.residual_stack, c(dec.conv_1, q)))),
    )


@pytest.mark.parametrize("form", ["im2col", "xla"])
def test_whole_model_equals_plain_layers(form):
    model = _model(form)
    x = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3), minval=-0.5, maxval=0.5)
    graphdef, state = nnx.split(model)
    fast = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x).recon)(state, x)
    plain = jax.jit(lambda s, x: _plain_forward(nnx.merge(graphdef, s), x))(state, x)
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def test_whole_model_parameter_gradients_agree_across_forms(monkeypatch):
    # 16 positions, less than one 8x8 latent map: one image per chunk, so the stride-1 convs'
    # kernel gradients (chunked on the CPU in the im2col form) are sums of two chunks
    monkeypatch.setattr(wgrad, "WGRAD_CHUNK_POSITIONS", 16)
    x = jax.random.uniform(jax.random.key(4), (2, 32, 32, 3), minval=-0.5, maxval=0.5)
    grads = {}
    for form in ("im2col", "xla"):
        graphdef, params, rest = nnx.split(_model(form), nnx.Param, ...)

        def loss(p, graphdef=graphdef, rest=rest):
            return jnp.sum(jnp.sin(4.0 * nnx.merge(graphdef, p, rest)(x).recon))

        grads[form] = nnx.to_pure_dict(jax.jit(jax.grad(loss))(params))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
        grads["im2col"],
        grads["xla"],
    )
