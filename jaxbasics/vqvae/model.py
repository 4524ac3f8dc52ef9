"""The reference CIFAR-10 VQ-VAE in Flax NNX (see DESIGN.md for the architecture).

Layout is NHWC throughout. Images are float32 in [-0.5, 0.5] (the notes' ``x/255 -
0.5``); PyTorch-layout (NCHW) batches must be converted once with
:func:`jaxbasics.tensors.bchw_to_bhwc` before they reach the model.

Initialisers are Flax's defaults (lecun_normal kernels, zero biases): on real
CIFAR-10 they train better than PyTorch's defaults (DESIGN.md, "Initialisation").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics.vqvae.quantizer import (
    VectorQuantizer,
    VectorQuantizerEMA,
    assign,
    lookup,
    mse,
)


def conv2d(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stride: int = 1, padding: int = 0
) -> jax.Array:
    """``F.conv2d(x, w, b, stride, padding)`` in NHWC, evaluated as im2col + one matmul.

    Computes exactly :func:`conv2d_reference` (``lax.conv_general_dilated``) with the
    same (kH, kW, cin, cout) kernel. On XLA:CPU the convolution's gradients are slow at
    these small spatial sizes, up to 8x slower than the same multiply-adds as a dot
    (PERF-NOTES.md), while XLA's dot runs near the machine's matmul rate. Here the
    (B, Ho, Wo, kH*kW*cin) patch matrix is kH*kW strided slices of the padded input;
    autodiff turns them into pads and adds, which XLA fuses, and the two dots of the
    backward pass are plain matmuls. A 1x1 conv is just the dot.

    Args:
      x: (B, H, W, cin).
      kernel: (kH, kW, cin, cout), ``nnx.Conv``'s HWIO kernel.
      bias: (cout,) or None.
      stride: the same stride along both spatial axes.
      padding: zeros added on every spatial side (PyTorch's ``padding``).

    Returns:
      (B, Ho, Wo, cout) with Ho = (H + 2 padding - kH) // stride + 1, likewise Wo.

    >>> x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    >>> k = jax.random.normal(jax.random.key(2), (4, 4, 3, 5))
    >>> y = conv2d(x, k, None, stride=2, padding=1)
    >>> y.shape, bool(jnp.allclose(y, conv2d_reference(x, k, None, 2, 1), atol=1e-4))
    ((2, 4, 4, 5), True)
    """
    kh, kw, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
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
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stride: int = 1, padding: int = 0
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
        [(padding, padding)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y if bias is None else y + bias


def _padding(layer: nnx.Conv) -> int:
    """``layer``'s symmetric integer padding (``nnx.Conv``'s default "SAME" is 0 at 1x1)."""
    if isinstance(layer.padding, int):
        return layer.padding
    if layer.padding == "VALID" or tuple(layer.kernel_size) == (1, 1):
        return 0
    raise ValueError(f"unsupported padding {layer.padding!r} for {layer.kernel_size} kernels")


def apply_conv(layer: nnx.Conv, x: jax.Array) -> jax.Array:
    """``layer(x)`` for a square-stride, symmetric-padding ``nnx.Conv``, in its fastest form.

    1x1 and strided convs go through :func:`conv2d` (im2col + matmul), stride-1 3x3
    ones through :func:`conv2d_reference`. The layer keeps its parameters (and
    initialisers); only the evaluation differs.

    >>> layer = nnx.Conv(3, 4, (3, 3), padding=1, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((1, 5, 5, 3))
    >>> bool(jnp.allclose(apply_conv(layer, x), layer(x), atol=1e-5))
    True
    """
    strides = layer.strides
    stride = strides if isinstance(strides, int) else strides[0]
    bias = layer.bias[...] if layer.use_bias else None
    # Stride-1 3x3 convs stay XLA's: at batch 256 its conv beats the 9x larger patch
    # matrix (residual 3x3 128->32: 131 vs 232 ms forward + backward); 1x1 and strided
    # convs are 1.5-7x faster as matmuls at every batch size.
    form = conv2d_reference if stride == 1 and layer.kernel_size[0] > 1 else conv2d
    return form(x, layer.kernel[...], bias, stride, _padding(layer))


def conv_transpose_4x4s2(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """``F.conv_transpose2d(x, w, b, stride=2, padding=1)`` for 4x4 kernels, NHWC, fast.

    ``kernel`` is ``nnx.ConvTranspose``'s (4, 4, cin, cout): a correlation over the
    stride-dilated input, i.e. PyTorch's (cin, cout, 4, 4) weight spatially flipped.
    XLA:CPU's gradient of a stride-2 transposed conv is very slow (PERF-NOTES.md), so
    this evaluates the sub-pixel form: output pixel (2m + r, 2n + s) only ever sees
    the 2x2 taps ``kernel[r::2, s::2]`` over input rows m-1+r..m+r and columns
    n-1+s..n+s. One stride-1 2x2 conv of the 1-padded input to 4*cout channels
    computes all four parities at once; an interleave with a one-pixel offset per
    parity (depth-to-space) places them. Same multiply-adds as the transposed conv.
    The 2x2 conv is evaluated by :func:`conv2d` (im2col + matmul), which XLA:CPU
    differentiates 3x faster than its own convolution here.

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
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = conv2d(xp, k, None).reshape(b, h + 1, w + 1, 2, 2, cout)  # (B, H+1, W+1, r, s, co)
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
    padding=((2, 2), (2, 2)))``'s (``kernel`` (4, 4, cin, cout), ``bias``), with its
    default initialisers; only the evaluation differs (:func:`conv_transpose_4x4s2`).

    Args:
      in_features: input channels.
      out_features: output channels.
      rngs: NNX random streams.

    >>> ConvTranspose4x4s2(8, 3, rngs=nnx.Rngs(0))(jnp.ones((2, 4, 4, 8))).shape
    (2, 8, 8, 3)
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (4, 4, in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return conv_transpose_4x4s2(x, self.kernel[...], self.bias[...])


class Residual(nnx.Module):
    """ReLU -> Conv3x3(no bias) -> ReLU -> Conv1x1(no bias), plus the skip.

    The skip carries ``relu(x)``, not ``x``: the notes' PyTorch block starts with
    ``nn.ReLU(inplace=True)``, which overwrites ``x`` before ``x + self._block(x)``
    adds it. We compute that same function, so weights trained from the notes
    reproduce their reconstructions exactly.

    >>> Residual(8, 4, rngs=nnx.Rngs(0))(jnp.ones((1, 4, 4, 8))).shape
    (1, 4, 4, 8)
    """

    def __init__(self, num_hiddens: int, num_residual_hiddens: int, *, rngs: nnx.Rngs):
        self.conv_3x3 = nnx.Conv(
            num_hiddens, num_residual_hiddens, (3, 3), padding=1, use_bias=False, rngs=rngs
        )
        self.conv_1x1 = nnx.Conv(
            num_residual_hiddens, num_hiddens, (1, 1), use_bias=False, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(x)
        return x + apply_conv(self.conv_1x1, jax.nn.relu(apply_conv(self.conv_3x3, x)))


class ResidualStack(nnx.Module):
    """``num_residual_layers`` residual blocks followed by a ReLU.

    >>> ResidualStack(8, 2, 4, rngs=nnx.Rngs(0))(-jnp.ones((1, 4, 4, 8))).min() >= 0
    Array(True, dtype=bool)
    """

    def __init__(
        self, num_hiddens: int, num_residual_layers: int, num_residual_hiddens: int, *, rngs
    ):
        self.layers = nnx.List(
            [
                Residual(num_hiddens, num_residual_hiddens, rngs=rngs)
                for _ in range(num_residual_layers)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return jax.nn.relu(x)


class Encoder(nnx.Module):
    """(B, 32, 32, 3) images -> (B, 8, 8, num_hiddens) features.

    Conv(3->nh/2, k4 s2 p1), ReLU, Conv(nh/2->nh, k4 s2 p1), ReLU, Conv(nh->nh, k3 p1),
    ResidualStack.

    >>> Encoder(3, 16, 1, 4, rngs=nnx.Rngs(0))(jnp.zeros((1, 32, 32, 3))).shape
    (1, 8, 8, 16)
    """

    def __init__(
        self,
        in_channels: int,
        num_hiddens: int,
        num_residual_layers: int,
        num_residual_hiddens: int,
        *,
        rngs: nnx.Rngs,
    ):
        half = num_hiddens // 2
        self.conv_1 = nnx.Conv(in_channels, half, (4, 4), strides=2, padding=1, rngs=rngs)
        self.conv_2 = nnx.Conv(half, num_hiddens, (4, 4), strides=2, padding=1, rngs=rngs)
        self.conv_3 = nnx.Conv(num_hiddens, num_hiddens, (3, 3), padding=1, rngs=rngs)
        self.residual_stack = ResidualStack(
            num_hiddens, num_residual_layers, num_residual_hiddens, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(apply_conv(self.conv_1, x))
        x = jax.nn.relu(apply_conv(self.conv_2, x))
        return self.residual_stack(apply_conv(self.conv_3, x))


class Decoder(nnx.Module):
    """(B, 8, 8, D) latents -> (B, 32, 32, out_channels) images.

    Conv(D->nh, k3 p1), ResidualStack, ConvT(nh->nh/2, k4 s2 p1), ReLU,
    ConvT(nh/2->out, k4 s2 p1).

    >>> Decoder(4, 16, 1, 4, rngs=nnx.Rngs(0))(jnp.zeros((1, 8, 8, 4))).shape
    (1, 32, 32, 3)
    """

    def __init__(
        self,
        in_channels: int,
        num_hiddens: int,
        num_residual_layers: int,
        num_residual_hiddens: int,
        out_channels: int = 3,
        *,
        rngs: nnx.Rngs,
    ):
        half = num_hiddens // 2
        self.conv_1 = nnx.Conv(in_channels, num_hiddens, (3, 3), padding=1, rngs=rngs)
        self.residual_stack = ResidualStack(
            num_hiddens, num_residual_layers, num_residual_hiddens, rngs=rngs
        )
        self.conv_trans_1 = ConvTranspose4x4s2(num_hiddens, half, rngs=rngs)
        self.conv_trans_2 = ConvTranspose4x4s2(half, out_channels, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.residual_stack(apply_conv(self.conv_1, x))
        return self.conv_trans_2(jax.nn.relu(self.conv_trans_1(x)))


class VQVAEOutput(NamedTuple):
    """What :class:`VQVAE` returns.

    Attributes:
      recon: (B, H, W, 3) reconstructed images.
      quantized: (B, H/4, W/4, D) straight-through quantised latents.
      indices: (B, H/4, W/4) int32 code indices.
      vq_loss: scalar quantiser loss.
      perplexity: scalar code-usage perplexity of this batch.
    """

    recon: jax.Array
    quantized: jax.Array
    indices: jax.Array
    vq_loss: jax.Array
    perplexity: jax.Array


def check_images(x: jax.Array, in_channels: int = 3) -> None:
    """Raise a ValueError that says how to fix a batch the model cannot take.

    >>> try:
    ...     check_images(jnp.zeros((2, 3, 32, 32)))
    ... except ValueError as e:
    ...     print(str(e)[-57:])
    at the input edge with jaxbasics.tensors.bchw_to_bhwc(x).
    """
    shape = tuple(x.shape)
    if x.ndim != 4:
        raise ValueError(
            f"expected a batch of NHWC images of shape (B, H, W, {in_channels}), got shape "
            f"{shape}. Add a batch axis with x[None] for a single image."
        )
    if shape[-1] != in_channels:
        if shape[1] == in_channels:
            raise ValueError(
                f"expected NHWC images of shape (B, H, W, {in_channels}), got {shape}, which "
                "looks like PyTorch's NCHW layout. Convert it once at the input edge with "
                "jaxbasics.tensors.bchw_to_bhwc(x)."
            )
        raise ValueError(
            f"expected {in_channels} channels in the last axis (NHWC), got shape {shape}."
        )
    if shape[1] % 4 or shape[2] % 4:
        raise ValueError(
            f"image height and width must be divisible by 4 (two stride-2 convs), got "
            f"{shape[1]}x{shape[2]}. Crop or pad the images, e.g. to 32x32."
        )


class VQVAE(nnx.Module):
    """The reference CIFAR-10 VQ-VAE: Encoder -> 1x1 conv -> quantiser -> Decoder.

    ``decay > 0`` selects the EMA quantiser (:class:`VectorQuantizerEMA`), otherwise
    the plain one. Call it on NHWC float images in [-0.5, 0.5].

    Args:
      num_hiddens: encoder/decoder width (reference 128).
      num_residual_hiddens: residual bottleneck width (reference 32).
      num_residual_layers: residual blocks per stack (reference 2).
      embedding_dim: code size D (reference 64).
      num_embeddings: number of codes K (reference 512).
      commitment_cost: beta (reference 0.25).
      decay: EMA decay; 0 selects the plain quantiser (reference notebook: 0.99 for EMA).
      epsilon: EMA Laplace smoothing.
      rngs: NNX random streams.

    >>> model = VQVAE(num_hiddens=16, num_residual_hiddens=4, num_residual_layers=1,
    ...               embedding_dim=8, num_embeddings=16, rngs=nnx.Rngs(0))
    >>> out = model(jnp.zeros((2, 32, 32, 3)))
    >>> out.recon.shape, out.indices.shape
    ((2, 32, 32, 3), (2, 8, 8))
    """

    def __init__(
        self,
        num_hiddens: int = 128,
        num_residual_hiddens: int = 32,
        num_residual_layers: int = 2,
        embedding_dim: int = 64,
        num_embeddings: int = 512,
        commitment_cost: float = 0.25,
        decay: float = 0.0,
        epsilon: float = 1e-5,
        *,
        rngs: nnx.Rngs,
    ):
        self.in_channels = 3
        self.encoder = Encoder(3, num_hiddens, num_residual_layers, num_residual_hiddens, rngs=rngs)
        self.pre_vq_conv = nnx.Conv(num_hiddens, embedding_dim, (1, 1), rngs=rngs)
        if decay > 0.0:
            self.vq = VectorQuantizerEMA(
                num_embeddings, embedding_dim, commitment_cost, decay, epsilon, rngs=rngs
            )
        else:
            self.vq = VectorQuantizer(num_embeddings, embedding_dim, commitment_cost, rngs=rngs)
        self.decoder = Decoder(
            embedding_dim, num_hiddens, num_residual_layers, num_residual_hiddens, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> VQVAEOutput:
        check_images(x, self.in_channels)
        vq = self.vq(apply_conv(self.pre_vq_conv, self.encoder(x)))
        return VQVAEOutput(
            recon=self.decoder(vq.quantized),
            quantized=vq.quantized,
            indices=vq.indices,
            vq_loss=vq.loss,
            perplexity=vq.perplexity,
        )

    def encode(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) images -> (B, H/4, W/4) code indices. Never updates EMA state.

        >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
        >>> model.encode(jnp.zeros((1, 32, 32, 3))).shape
        (1, 8, 8)
        """
        check_images(x, self.in_channels)
        z = apply_conv(self.pre_vq_conv, self.encoder(x))
        _, _, idx = assign(z, self.vq.codebook[...])
        return idx.reshape(z.shape[:-1])

    def decode_indices(self, indices: jax.Array) -> jax.Array:
        """(B, h, w) code indices -> (B, 4h, 4w, 3) images.

        >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
        >>> model.decode_indices(jnp.zeros((1, 8, 8), jnp.int32)).shape
        (1, 32, 32, 3)
        """
        return self.decoder(lookup(self.vq.codebook[...], indices))


def recon_error(recon: jax.Array, x: jax.Array, data_variance: float) -> jax.Array:
    """``F.mse_loss(data_recon, data) / data_variance``, the notes' reconstruction error.

    >>> float(recon_error(jnp.ones(4), jnp.zeros(4), 0.5))
    2.0
    """
    return mse(recon, x) / data_variance


def vqvae_loss(model_out: VQVAEOutput, x: jax.Array, data_variance: float) -> jax.Array:
    """The notes' training loss: ``recon_error + vq_loss``.

    Args:
      model_out: what the model returned for ``x``.
      x: the (B, H, W, 3) input images.
      data_variance: variance of the training images scaled to [0, 1].

    Returns:
      Scalar loss.

    >>> out = VQVAEOutput(jnp.ones((1, 4, 4, 3)), None, None, jnp.array(0.5), None)
    >>> float(vqvae_loss(out, jnp.zeros((1, 4, 4, 3)), 0.25))
    4.5
    """
    return recon_error(model_out.recon, x, data_variance) + model_out.vq_loss


def init_key(seed: int) -> jax.Array:
    """The PRNG key models are initialised from: ``jax.random.key(seed, impl="rbg")``.

    XLA:CPU compiles the default threefry generator slowly: initialising this model
    in one jitted program took ~35 s to compile with threefry keys and ~4 s with
    "rbg" keys (RngBitGenerator). Values are reproducible for a seed on a given
    backend; they may differ between CPU and GPU.

    >>> init_key(0).dtype
    key<rbg>
    """
    return jax.random.key(seed, impl="rbg")


@functools.lru_cache(maxsize=8)
def _compiled_init(kwargs: tuple) -> Callable:
    return jax.jit(lambda key: nnx.split(VQVAE(**dict(kwargs), rngs=nnx.Rngs(params=key)))[1])


def create_vqvae(seed: int = 0, **kwargs: Any) -> VQVAE:
    """``VQVAE(**kwargs)`` initialised from ``seed``, compiled as one program (fast on CPU).

    Building ``VQVAE(..., rngs=nnx.Rngs(0))`` eagerly compiles every initialiser
    separately; this compiles them together once per configuration and process.

    Args:
      seed: the init seed (see :func:`init_key`).
      **kwargs: :class:`VQVAE` constructor arguments.

    Returns:
      The initialised model (training mode).

    >>> model = create_vqvae(0, num_hiddens=16, num_residual_hiddens=4, num_residual_layers=1,
    ...                      embedding_dim=8, num_embeddings=16)
    >>> model.encoder.conv_1.kernel.shape
    (4, 4, 3, 8)
    """
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: VQVAE(**kwargs, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, _compiled_init(tuple(sorted(kwargs.items())))(init_key(seed)))
