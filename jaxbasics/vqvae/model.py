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
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxbasics.vqvae.palette as palette
from jaxbasics import checks
from jaxbasics.vqvae.ema import VectorQuantizerEMA
from jaxbasics.vqvae.fsq import FSQuantizer, check_levels
from jaxbasics.vqvae.layers import ConvTranspose4x4s2, conv
from jaxbasics.vqvae.quantizer import Quantizer, VectorQuantizer, VQVAEOutput, mse

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


class VQVAE(nnx.Module):
    """The reference CIFAR-10 VQ-VAE: Encoder -> 1x1 conv -> quantiser -> Decoder.

    ``quantizer="vq"``: ``decay > 0`` selects the EMA quantiser (:class:`VectorQuantizerEMA`),
    otherwise the plain one. ``quantizer="fsq"``: finite scalar quantisation
    (:class:`~jaxbasics.vqvae.fsq.FSQuantizer`) with ``fsq_levels``; the 1x1 conv then maps to
    D = len(fsq_levels) channels, K = prod(fsq_levels), and ``embedding_dim``,
    ``num_embeddings``, ``commitment_cost``, ``decay``, ``epsilon``, ``estimator`` and
    ``ema_init`` are not used. Call it on NHWC float images in [-0.5, 0.5].

    ``palette_slots = J > 0`` makes it a palette tokenizer (:mod:`jaxbasics.vqvae.palette`):
    the encoder sees colour distances, the decoder paints J colours read off the image, and a
    code map gains a first row of J colour codes (``num_codes = K + 513``).

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
      palette_slots: J colours per image (a palette tokenizer, see above); 0 = off.
      rngs: NNX random streams.

    >>> model = VQVAE(num_hiddens=16, num_residual_hiddens=4, num_residual_layers=1,
    ...               embedding_dim=8, num_embeddings=16, rngs=nnx.Rngs(0))
    >>> out = model(jnp.zeros((2, 32, 32, 3)))
    >>> out.recon.shape, out.indices.shape
    ((2, 32, 32, 3), (2, 8, 8))
    >>> fsq = VQVAE(16, 4, 1, quantizer="fsq", fsq_levels=(8, 5, 5, 5), rngs=nnx.Rngs(0))
    >>> fsq.vq.num_embeddings, fsq.latents(jnp.zeros((2, 32, 32, 3))).shape
    (1000, (2, 8, 8, 4))
    >>> pal = VQVAE(16, 4, 1, quantizer="fsq", fsq_levels=(5, 5, 5), palette_slots=5,
    ...             rngs=nnx.Rngs(0))
    >>> pal.num_codes, pal.encode(jnp.zeros((2, 32, 32, 3))).shape
    (638, (2, 9, 8))
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
        palette_slots: int = 0,
        rngs: nnx.Rngs,
    ):
        if quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}.")
        self.in_channels = 3
        self.palette_slots = checks.count("palette_slots", palette_slots, low=0)
        if palette_slots == 1:  # a softmax over one slot is 1: nothing to learn
            raise ValueError("palette_slots must be 0 (off) or at least 2, got 1.")
        enc_in = palette.INPUT_CHANNELS if palette_slots else 3
        dtype = None if compute_dtype in (None, "float32") else jnp.dtype(compute_dtype)
        opts = dict(form=conv_form, dtype=dtype, rngs=rngs)
        if quantizer == "fsq":  # one channel per level
            embedding_dim = len(check_levels(fsq_levels))
        sizes = (num_hiddens, num_residual_layers, num_residual_hiddens)
        self.encoder = Encoder(enc_in, *sizes, **opts)
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
        self.decoder = Decoder(embedding_dim, *sizes, palette_slots or 3, **opts)

    @property
    def num_codes(self) -> int:
        """The codes a code map may hold: K, plus the palette's colour and padding codes.

        >>> VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0)).num_codes
        16
        """
        k = self.vq.num_embeddings
        return k + palette.CODES + 1 if self.palette_slots else k

    def allowed_codes(self, rows: int, width: int) -> np.ndarray | None:
        """(rows, width, num_codes) bool: the codes each position of a code map may hold
        (:func:`jaxbasics.vqvae.palette.vocabulary`); None when any code may go anywhere.

        >>> VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0)).allowed_codes(8, 8) is None
        True
        """
        if not self.palette_slots:
            return None
        return palette.vocabulary(rows, width, self.vq.num_embeddings, self.palette_slots)

    def latents(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) images -> (B, H/4, W/4, D) float32 encoder outputs z (before quantising).

        >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
        >>> model.latents(jnp.zeros((1, 32, 32, 3))).shape
        (1, 8, 8, 8)
        """
        checks.images(x, self.in_channels)
        if self.palette_slots:
            x = palette.distances(x)
        return self.pre_vq_conv(self.encoder(x)).astype(jnp.float32)

    def decode(self, quantized: jax.Array) -> jax.Array:
        """(B, h, w, D) quantised latents -> (B, 4h, 4w, 3) float32 images (a palette
        tokenizer: (B, 4h, 4w, J) softmax masks, painted by :func:`~jaxbasics.vqvae.palette.paint`).

        >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
        >>> model.decode(jnp.zeros((1, 8, 8, 8))).shape
        (1, 32, 32, 3)
        """
        out = self.decoder(quantized).astype(jnp.float32)
        return jax.nn.softmax(out, axis=-1) if self.palette_slots else out

    def __call__(self, x: jax.Array) -> VQVAEOutput:
        vq = self.vq(self.latents(x))
        recon = self.decode(vq.quantized)
        return VQVAEOutput(
            recon=palette.paint(recon, x) if self.palette_slots else recon,
            quantized=vq.quantized,
            indices=vq.indices,
            vq_loss=vq.loss,
            perplexity=vq.perplexity,
        )

    def encode(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) images -> (B, H/4, W/4) int32 code indices. Never updates EMA state.

        A palette tokenizer's maps have one more row first, the palette's colour codes
        (:func:`jaxbasics.vqvae.palette.colour_row`).

        >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
        >>> model.encode(jnp.zeros((1, 32, 32, 3))).shape
        (1, 8, 8)
        """
        indices = self.vq.indices(self.latents(x))
        if not self.palette_slots:
            return indices
        masks = self.decode(self.vq.lookup(indices))
        return palette.encode_map(indices, masks, x, self.vq.num_embeddings)

    def decode_indices(self, indices: jax.Array) -> jax.Array:
        """(B, h, w) code indices in [0, K) -> (B, 4h, 4w, 3) images (a palette tokenizer:
        (B, h + 1, w) maps, each position's codes as :meth:`allowed_codes` says, -> (B, 4h,
        4w, 3)).

        Raises:
          ValueError: indices not integers in [0, num_codes) (values checked outside ``jit``):
            a code past the codebook would decode to NaN, or under FSQ wrap around to another.
            A palette map's codes are checked against their rows' vocabularies the same way
            (under ``jit``, a code outside its row's is clipped into it).

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
        indices = checks.indices("indices", indices, self.num_codes)
        if not self.palette_slots:
            return self.decode(self.vq.lookup(indices))
        k, slots = self.vq.num_embeddings, self.palette_slots
        structure, colours = palette.split_map(indices, k, slots)
        return palette.compose(self.decode(self.vq.lookup(structure)), colours)


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
