"""Convolution forms: the same layers and parameters, evaluated the way each backend runs fastest.

Every convolution of the model is an ``nnx.Conv`` (kernel (kH, kW, cin, cout), HWIO) or a
:class:`ConvTranspose4x4s2` (``nnx.ConvTranspose``'s (4, 4, cin, cout) kernel). Only how they
are evaluated depends on the *form*:

* ``"xla"``: XLA's own convolutions, ``lax.conv_general_dilated`` and ``lax.conv_transpose``
  (cuDNN's kernels on a GPU, the MXU's on a TPU).
* ``"im2col"``: strided and 1x1 convolutions become im2col + one matmul (:func:`conv2d`),
  stride-1 3x3 ones stay XLA's (on the CPU with their kernel gradient summed over batch
  chunks, :func:`chunked_wgrad_conv2d`), and the 4x4 stride-2 transposed convolutions become a
  sub-pixel 2x2 convolution plus depth-to-space (:func:`conv_transpose_4x4s2`). XLA:CPU
  differentiates its own convolutions slowly at these small spatial sizes (the transposed
  conv's gradient was ~14x slower than PyTorch's at batch 32), while its dot runs near the
  machine's matmul rate. On an H200 this form was also faster than cuDNN's (a training step
  1.74 vs 2.77 ms at batch 32, 2.36 vs 4.87 ms at batch 256) and used less device memory;
  see ``docs/speed.md``.
* ``"auto"``: ``"im2col"`` on CPU and GPU, where it was measured fastest; ``"xla"`` on TPU,
  where it was not measured and XLA's convolutions are the native path (:func:`resolve_form`).

Because the parameters are the same in every form, a checkpoint or an export written under one
form loads and runs under any other, and the PyTorch weight converter is unchanged.

``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``): inputs and kernels are cast to it for
the convolution, while the parameters themselves stay float32 (``nnx.Conv``'s ``dtype`` /
``param_dtype``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics.vqvae.wgrad import chunked_wgrad_conv_general_dilated, padding_pairs

# The convolution forms (the --conv-form choices).
ConvForm = Literal["auto", "xla", "im2col"]
FORMS = get_args(ConvForm)


def resolve_form(form: str, backend: str | None = None) -> str:
    """The concrete form ``"xla"`` or ``"im2col"`` that ``form`` selects on ``backend``.

    Args:
      form: ``"auto"``, ``"xla"`` or ``"im2col"``.
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``...; default ``jax.default_backend()``.

    >>> resolve_form("auto", "cpu"), resolve_form("auto", "tpu"), resolve_form("xla", "cpu")
    ('im2col', 'xla', 'xla')
    """
    if form not in FORMS:
        raise ValueError(f"conv_form must be one of {FORMS}, got {form!r}.")
    if form != "auto":
        return form
    return "xla" if (backend or jax.default_backend()) == "tpu" else "im2col"


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    stride: int = 1,
    padding: int | Sequence[tuple[int, int]] = 0,
) -> jax.Array:
    """``F.conv2d(x, w, b, stride, padding)`` in NHWC, evaluated as im2col + one matmul.

    Computes exactly :func:`conv2d_reference` (``lax.conv_general_dilated``) with the same
    (kH, kW, cin, cout) kernel. The (B, Ho, Wo, kH*kW*cin) patch matrix is kH*kW strided
    slices of the padded input; autodiff turns them into pads and adds, which XLA fuses, and
    the two dots of the backward pass are plain matmuls. A 1x1 conv is just the dot.

    Args:
      x: (B, H, W, cin).
      kernel: (kH, kW, cin, cout), ``nnx.Conv``'s HWIO kernel.
      bias: (cout,) or None.
      stride: the same stride along both spatial axes.
      padding: zeros added on every spatial side (PyTorch's ``padding``), or
        ``((top, bottom), (left, right))``.

    Returns:
      (B, Ho, Wo, cout) with Ho = (H + top + bottom - kH) // stride + 1, likewise Wo.

    >>> x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    >>> k = jax.random.normal(jax.random.key(2), (4, 4, 3, 5))
    >>> y = conv2d(x, k, None, stride=2, padding=1)
    >>> y.shape, bool(jnp.allclose(y, conv2d_reference(x, k, None, 2, 1), atol=1e-4))
    ((2, 4, 4, 5), True)
    """
    kh, kw, cin, cout = kernel.shape
    (top, bottom), (left, right) = padding_pairs(padding)
    if top or bottom or left or right:
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    b, h, w, _ = x.shape
    ho = (h - kh) // stride + 1
    wo = (w - kw) // stride + 1
    taps = [
        x[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
        for i in range(kh)
        for j in range(kw)
    ]  # each (B, Ho, Wo, cin), in the kernel's (kH, kW) order
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    y = patches.reshape(-1, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
    y = y.reshape(b, ho, wo, cout)
    return y if bias is None else y + bias


def conv2d_reference(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    stride: int = 1,
    padding: int | Sequence[tuple[int, int]] = 0,
) -> jax.Array:
    """The plain form of :func:`conv2d`: ``lax.conv_general_dilated``, as ``nnx.Conv`` does.

    >>> conv2d_reference(jnp.ones((1, 3, 3, 1)), jnp.ones((3, 3, 1, 1)), None, 1, 1)[0, :, :, 0]
    Array([[4., 6., 4.],
           [6., 9., 6.],
           [4., 6., 4.]], dtype=float32)
    """
    y = jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        list(padding_pairs(padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y if bias is None else y + bias


def im2col_conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated``'s signature, evaluated by :func:`conv2d` (im2col + matmul).

    What ``nnx.Conv(..., conv_general_dilated=...)`` calls for the ``"im2col"`` form. Only the
    cases the model uses are supported (2-D NHWC/HWIO, equal strides, no dilation, no groups);
    anything else raises rather than computing something different.

    >>> layer = nnx.Conv(3, 4, (4, 4), strides=2, padding=1, rngs=nnx.Rngs(0),
    ...                  conv_general_dilated=im2col_conv_general_dilated)
    >>> plain = nnx.Conv(3, 4, (4, 4), strides=2, padding=1, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((1, 8, 8, 3))
    >>> bool(jnp.allclose(layer(x), plain(x), atol=1e-5))
    True
    """
    strides = tuple(window_strides)
    dilations = (tuple(lhs_dilation or (1, 1)), tuple(rhs_dilation or (1, 1)))
    if (
        lhs.ndim != 4
        or len(set(strides)) != 1
        or dilations != ((1, 1), (1, 1))
        or feature_group_count != 1
    ):
        raise NotImplementedError(
            "the im2col form supports 2-D convolutions with equal strides, no dilation and no "
            f"feature groups; got strides {strides}, dilations {dilations}, groups "
            f"{feature_group_count}. Use conv_form='xla' for this layer."
        )
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    return conv2d(lhs, rhs, None, strides[0], padding)


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = True,
    form: str = "auto",
    dtype: Any = None,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """An ``nnx.Conv`` (``nn.Conv2d(in, out, k, stride, padding)``) evaluated in ``form``.

    The parameters and initialisers are ``nnx.Conv``'s defaults in every form. In the
    ``"im2col"`` form, stride-1 kernels larger than 1x1 keep XLA's convolution: at batch 256
    it beat the 9x larger patch matrix (residual 3x3 128->32: 131 vs 232 ms forward + backward),
    while 1x1 and strided convs were 1.5-7x faster as matmuls at every batch size. On the CPU
    their kernel gradient is taken in batch chunks (:func:`chunked_wgrad_conv_general_dilated`).

    >>> conv(3, 8, 4, stride=2, padding=1, rngs=nnx.Rngs(0))(jnp.ones((1, 8, 8, 3))).shape
    (1, 4, 4, 8)
    """
    fn = jax.lax.conv_general_dilated
    if resolve_form(form) == "im2col":
        if stride > 1 or kernel_size == 1:
            fn = im2col_conv_general_dilated
        elif jax.default_backend() == "cpu":
            fn = chunked_wgrad_conv_general_dilated
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=stride,
        padding=padding,
        use_bias=use_bias,
        dtype=dtype,
        conv_general_dilated=fn,
        rngs=rngs,
    )


def conv_transpose_4x4s2(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """``F.conv_transpose2d(x, w, b, stride=2, padding=1)`` for 4x4 kernels, NHWC, sub-pixel form.

    ``kernel`` is ``nnx.ConvTranspose``'s (4, 4, cin, cout): a correlation over the
    stride-dilated input, i.e. PyTorch's (cin, cout, 4, 4) weight spatially flipped. Output
    pixel (2m + r, 2n + s) only ever sees the 2x2 taps ``kernel[r::2, s::2]`` over input rows
    m-1+r..m+r and columns n-1+s..n+s. One stride-1 2x2 conv of the 1-padded input to 4*cout
    channels computes all four parities at once; an interleave with a one-pixel offset per
    parity (depth-to-space) places them. Same multiply-adds as the transposed conv. The 2x2
    conv is evaluated by :func:`conv2d` (im2col + matmul).

    Args:
      x: (B, H, W, cin).
      kernel: (4, 4, cin, cout).
      bias: (cout,).

    Returns:
      (B, 2H, 2W, cout).

    >>> x = jax.random.normal(jax.random.key(1), (2, 4, 4, 8))
    >>> k = jax.random.normal(jax.random.key(2), (4, 4, 8, 3))
    >>> y = conv_transpose_4x4s2(x, k, jnp.zeros(3))
    >>> y.shape
    (2, 8, 8, 3)
    >>> bool(jnp.allclose(y, conv_transpose_4x4s2_reference(x, k, jnp.zeros(3)), atol=1e-4))
    True
    """
    b, h, w, cin = x.shape
    cout = kernel.shape[-1]
    # kernel[2t + r, 2u + s] is tap (t, u) of parity (r, s).
    k = kernel.reshape(2, 2, 2, 2, cin, cout)  # (t, r, u, s, ci, co)
    k = k.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, cin, 4 * cout)
    y = conv2d(x, k, None, 1, 1).reshape(b, h + 1, w + 1, 2, 2, cout)  # (B, H+1, W+1, r, s, co)
    rows = [
        jnp.stack([y[:, r : r + h, s : s + w, r, s] for s in (0, 1)], axis=3) for r in (0, 1)
    ]  # each (B, H, W, s, co)
    out = jnp.stack(rows, axis=2)  # (B, H, r, W, s, co)
    return out.reshape(b, 2 * h, 2 * w, cout) + bias


def conv_transpose_4x4s2_reference(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """The plain form of :func:`conv_transpose_4x4s2`: ``lax.conv_transpose``.

    PyTorch's padding 1 for a 4x4 kernel is lax's padding k - 1 - p = 2.

    >>> conv_transpose_4x4s2_reference(jnp.ones((1, 2, 2, 1)), jnp.ones((4, 4, 1, 1)),
    ...                                jnp.zeros(1))[0, :, :, 0].tolist()[0]
    [1.0, 2.0, 2.0, 1.0]
    """
    y = jax.lax.conv_transpose(
        x, kernel, (2, 2), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + bias


class ConvTranspose4x4s2(nnx.Module):
    """``nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)``, NHWC.

    Parameters are exactly ``nnx.ConvTranspose(cin, cout, (4, 4), strides=2,
    padding=((2, 2), (2, 2)))``'s (``kernel`` (4, 4, cin, cout), ``bias``), with its default
    initialisers; ``form`` picks :func:`conv_transpose_4x4s2` (``"im2col"``) or
    :func:`conv_transpose_4x4s2_reference` (``"xla"``).

    Args:
      in_features: input channels.
      out_features: output channels.
      form: ``"auto"``, ``"xla"`` or ``"im2col"`` (:func:`resolve_form`).
      dtype: compute dtype (None: the inputs' and parameters' float32).
      rngs: NNX random streams.

    >>> ConvTranspose4x4s2(8, 3, rngs=nnx.Rngs(0))(jnp.ones((2, 4, 4, 8))).shape
    (2, 8, 8, 3)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        form: str = "auto",
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (4, 4, in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.form = resolve_form(form)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self.kernel[...], self.bias[...]
        if self.dtype is not None:
            x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        fn = conv_transpose_4x4s2 if self.form == "im2col" else conv_transpose_4x4s2_reference
        return fn(x, kernel, bias)
