"""The reference CIFAR-10 VQ-VAE in Flax NNX: encoder, residual stacks, quantiser, decoder.

Layout is NHWC throughout. Images are float32 in [-0.5, 0.5] (the notes' ``x/255 - 0.5``);
PyTorch-layout (NCHW) batches must be converted once with :func:`jaxbasics.tensors.bchw_to_bhwc`
before they reach the model. Any height and width divisible by 4 works (32x32 gives an 8x8
latent grid, 64x64 a 16x16 one).

Initialisers are Flax's defaults (lecun_normal kernels, zero biases): on real CIFAR-10 they
trained better than PyTorch's defaults (``docs/design.md``). How each convolution is evaluated
(``conv_form``) and in which dtype (``compute_dtype``) are construction options; neither
changes the parameters (:mod:`jaxbasics.vqvae.layers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics import checks
from jaxbasics.vqvae.ema import VectorQuantizerEMA
from jaxbasics.vqvae.fsq import FSQuantizer, check_levels
from jaxbasics.vqvae.layers import ConvTranspose4x4s2, conv
from jaxbasics.vqvae.quantizer import Quantizer, VectorQuantizer, mse

# The quantisers: vq (a learned codebook, plain or EMA) or fsq (finite scalar quantisation).
QuantizerKind = Literal["vq", "fsq"]
QUANTIZERS = get_args(QuantizerKind)


class Residual(nnx.Module):
    """ReLU -> Conv3x3(no bias) -> ReLU -> Conv1x1(no bias), plus the skip.

    The skip carries ``relu(x)``, not ``x``: the notes' PyTorch block starts with
    ``nn.ReLU(inplace=True)``, which overwrites ``x`` before ``x + self._block(x)``
    adds it. We compute that same function, so weights trained from the notes
    reproduce their reconstructions exactly.

    >>> Residual(8, 4, rngs=nnx.Rngs(0))(jnp.ones((1, 4, 4, 8))).shape
    (1, 4, 4, 8)
    """

    def __init__(
        self,
        num_hiddens: int,
        num_residual_hiddens: int,
        *,
        form: str = "auto",
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        opts = dict(use_bias=False, form=form, dtype=dtype, rngs=rngs)
        self.conv_3x3 = conv(num_hiddens, num_residual_hiddens, 3, padding=1, **opts)
        self.conv_1x1 = conv(num_residual_hiddens, num_hiddens, 1, **opts)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(x)
        return x + self.conv_1x1(jax.nn.relu(self.conv_3x3(x)))


class ResidualStack(nnx.Module):
    """``num_residual_layers`` residual blocks followed by a ReLU.

    >>> ResidualStack(8, 2, 4, rngs=nnx.Rngs(0))(-jnp.ones((1, 4, 4, 8))).min() >= 0
    Array(True, dtype=bool)
    """

    def __init__(
        self,
        num_hiddens: int,
        num_residual_layers: int,
        num_residual_hiddens: int,
        *,
        form: str = "auto",
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.layers = nnx.List(
            [
                Residual(num_hiddens, num_residual_hiddens, form=form, dtype=dtype, rngs=rngs)
                for _ in range(num_residual_layers)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return jax.nn.relu(x)


class Encoder(nnx.Module):
    """(B, H, W, 3) images -> (B, H/4, W/4, num_hiddens) features.

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
        form: str = "auto",
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        half = num_hiddens // 2
        opts = dict(form=form, dtype=dtype, rngs=rngs)
        self.conv_1 = conv(in_channels, half, 4, stride=2, padding=1, **opts)
        self.conv_2 = conv(half, num_hiddens, 4, stride=2, padding=1, **opts)
        self.conv_3 = conv(num_hiddens, num_hiddens, 3, padding=1, **opts)
        self.residual_stack = ResidualStack(
            num_hiddens, num_residual_layers, num_residual_hiddens, **opts
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv_1(x))
        x = jax.nn.relu(self.conv_2(x))
        return self.residual_stack(self.conv_3(x))


class Decoder(nnx.Module):
    """(B, h, w, D) latents -> (B, 4h, 4w, out_channels) images.

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
        form: str = "auto",
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        half = num_hiddens // 2
        opts = dict(form=form, dtype=dtype, rngs=rngs)
        self.conv_1 = conv(in_channels, num_hiddens, 3, padding=1, **opts)
        self.residual_stack = ResidualStack(
            num_hiddens, num_residual_layers, num_residual_hiddens, **opts
        )
        self.conv_trans_1 = ConvTranspose4x4s2(num_hiddens, half, **opts)
        self.conv_trans_2 = ConvTranspose4x4s2(half, out_channels, **opts)

    def features(self, x: jax.Array) -> jax.Array:
        """The input of the last layer, ``conv_trans_2`` (where VQGAN balances its losses)."""
        return jax.nn.relu(self.conv_trans_1(self.residual_stack(self.conv_1(x))))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv_trans_2(self.features(x))


class VQVAEOutput(NamedTuple):
    """What :class:`VQVAE` returns.

    Attributes:
      recon: (B, H, W, 3) reconstructed images.
      quantized: (B, H/4, W/4, D) straight-through quantised latents (FSQ: codes in [-1, 1]).
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
            f"{shape[1]}x{shape[2]}. Crop or resize the images, e.g. to 32x32."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"expected float images scaled as in training, x / 255 - 0.5, got {x.dtype} "
            "values. Convert uint8 pixels with x / 255 - 0.5 "
            "(jaxbasics.data.transforms.cifar_transform()(x))."
        )


class VQVAE(nnx.Module):
    """The reference CIFAR-10 VQ-VAE: Encoder -> 1x1 conv -> quantiser -> Decoder.

    ``quantizer="vq"``: ``decay > 0`` selects the EMA quantiser (:class:`VectorQuantizerEMA`),
    otherwise the plain one. ``quantizer="fsq"``: finite scalar quantisation
    (:class:`~jaxbasics.vqvae.fsq.FSQuantizer`) with ``fsq_levels``; the 1x1 conv then maps to
    D = len(fsq_levels) channels, K = prod(fsq_levels), and ``embedding_dim``,
    ``num_embeddings``, ``commitment_cost``, ``decay``, ``epsilon``, ``estimator`` and
    ``ema_init`` are not used. Call it on NHWC float images in [-0.5, 0.5].

    Args:
      num_hiddens: encoder/decoder width (reference 128).
      num_residual_hiddens: residual bottleneck width (reference 32).
      num_residual_layers: residual blocks per stack (reference 2).
      embedding_dim: code size D (reference 64).
      num_embeddings: number of codes K (reference 512).
      commitment_cost: beta (reference 0.25).
      decay: EMA decay; 0 selects the plain quantiser (reference notebook: 0.99 for EMA).
      epsilon: EMA Laplace smoothing.
      estimator: ``"ste"`` (straight-through, the notes') or ``"rotation"`` (rotation trick).
      ema_init: ``"notes"`` or ``"consistent"`` EMA statistics (:class:`VectorQuantizerEMA`).
      quantizer: ``"vq"`` or ``"fsq"``, see above.
      fsq_levels: FSQ's levels per channel, e.g. (8, 8, 8): 512 codes of 3 dimensions.
      conv_form: ``"auto"``, ``"xla"`` or ``"im2col"`` (:mod:`jaxbasics.vqvae.layers`).
      compute_dtype: dtype of the encoder's and decoder's activations and matmuls, e.g.
        ``"bfloat16"``; None keeps float32. Parameters, the quantiser (distances, codebook
        updates, FSQ's rounding) and the outputs stay float32.
      rngs: NNX random streams.

    >>> model = VQVAE(num_hiddens=16, num_residual_hiddens=4, num_residual_layers=1,
    ...               embedding_dim=8, num_embeddings=16, rngs=nnx.Rngs(0))
    >>> out = model(jnp.zeros((2, 32, 32, 3)))
    >>> out.recon.shape, out.indices.shape
    ((2, 32, 32, 3), (2, 8, 8))
    >>> fsq = VQVAE(16, 4, 1, quantizer="fsq", fsq_levels=(8, 5, 5, 5), rngs=nnx.Rngs(0))
    >>> fsq.vq.num_embeddings, fsq.latents(jnp.zeros((2, 32, 32, 3))).shape
    (1000, (2, 8, 8, 4))
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
        estimator: str = "ste",
        ema_init: str = "notes",
        quantizer: str = "vq",
        fsq_levels: Sequence[int] = (8, 8, 8),
        conv_form: str = "auto",
        compute_dtype: str | None = None,
        rngs: nnx.Rngs,
    ):
        if quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}.")
        self.in_channels = 3
        dtype = None if compute_dtype in (None, "float32") else jnp.dtype(compute_dtype)
        opts = dict(form=conv_form, dtype=dtype, rngs=rngs)
        if quantizer == "fsq":  # one channel per level
            embedding_dim = len(check_levels(fsq_levels))
        self.encoder = Encoder(3, num_hiddens, num_residual_layers, num_residual_hiddens, **opts)
        self.pre_vq_conv = conv(num_hiddens, embedding_dim, 1, **opts)
        self.vq: Quantizer
        if quantizer == "fsq":
            self.vq = FSQuantizer(fsq_levels)
        elif decay > 0.0:
            self.vq = VectorQuantizerEMA(
                num_embeddings,
                embedding_dim,
                commitment_cost,
                decay,
                epsilon,
                estimator=estimator,
                init=ema_init,
                rngs=rngs,
            )
        else:
            self.vq = VectorQuantizer(
                num_embeddings, embedding_dim, commitment_cost, estimator=estimator, rngs=rngs
            )
        self.decoder = Decoder(
            embedding_dim, num_hiddens, num_residual_layers, num_residual_hiddens, **opts
        )

    def latents(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) images -> (B, H/4, W/4, D) float32 encoder outputs z (before quantising).

        >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
        >>> model.latents(jnp.zeros((1, 32, 32, 3))).shape
        (1, 8, 8, 8)
        """
        check_images(x, self.in_channels)
        return self.pre_vq_conv(self.encoder(x)).astype(jnp.float32)

    def decode(self, quantized: jax.Array) -> jax.Array:
        """(B, h, w, D) quantised latents -> (B, 4h, 4w, 3) float32 images.

        >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
        >>> model.decode(jnp.zeros((1, 8, 8, 8))).shape
        (1, 32, 32, 3)
        """
        return self.decoder(quantized).astype(jnp.float32)

    def __call__(self, x: jax.Array) -> VQVAEOutput:
        vq = self.vq(self.latents(x))
        return VQVAEOutput(
            recon=self.decode(vq.quantized),
            quantized=vq.quantized,
            indices=vq.indices,
            vq_loss=vq.loss,
            perplexity=vq.perplexity,
        )

    def encode(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) images -> (B, H/4, W/4) int32 code indices. Never updates EMA state.

        >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
        >>> model.encode(jnp.zeros((1, 32, 32, 3))).shape
        (1, 8, 8)
        """
        return self.vq.indices(self.latents(x))

    def decode_indices(self, indices: jax.Array) -> jax.Array:
        """(B, h, w) code indices in [0, K) -> (B, 4h, 4w, 3) images.

        Raises:
          ValueError: indices not integers in [0, K) (values checked outside ``jit``): a code
            past the codebook would decode to NaN, or under FSQ wrap around to another code.

        >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
        >>> model.decode_indices(jnp.zeros((1, 8, 8), jnp.int32)).shape
        (1, 32, 32, 3)
        >>> model.decode_indices(jnp.full((1, 8, 8), 16))
        Traceback (most recent call last):
        ...
        ValueError: indices must be integers in [0, 16), got 16.
        """
        if jnp.ndim(indices) != 3:
            raise ValueError(
                f"indices must be (B, h, w) code maps, got shape {jnp.shape(indices)}."
            )
        return self.decode(
            self.vq.lookup(checks.indices("indices", indices, self.vq.num_embeddings))
        )


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
