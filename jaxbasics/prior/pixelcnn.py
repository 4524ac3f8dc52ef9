"""The VQ-VAE paper's prior: a gated PixelCNN over code maps, without a blind spot.

van den Oord et al., "Conditional Image Generation with PixelCNN Decoders" (2016), as used
for the (B, h, w) code maps of "Neural Discrete Representation Learning" (2017). Two stacks
of convolutions run side by side:

* the *vertical* stack sees whole rows above: its (k//2 + 1, k) convolution at (i, j) reads
  rows i-k//2..i, columns j-k//2..j+k//2 (padded on top, left and right only);
* the *horizontal* stack sees the current row to the left: its (1, k//2 + 1) convolution
  at (i, j) reads columns j-k//2..j.

Both include the current position, so what crosses into the horizontal stack is shifted so
that the logits at (i, j) depend on codes before (i, j) in raster order only: the vertical
features go down one row before they join the horizontal stack (the vertical->horizontal
link, a 1x1 convolution), and the first layer's horizontal input goes right one column (the
paper's mask "A"). A single masked 2-D convolution would miss the codes up and to the right
(the blind spot); the vertical stack covers them.

Every layer is gated: ``tanh(a + V_a y) * sigmoid(b + V_b y)`` on the two halves of the
convolution's 2p channels, where ``V y`` is the label's learned bias (eq. 4 of the paper;
the null label's when unconditional). The horizontal stack is residual after the first
layer; two 1x1 convolutions with ReLUs map its output to K logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics import checks
from jaxbasics.prior.common import Autoregressive, label_ids


def shift_down(x: jax.Array) -> jax.Array:
    """(B, h, w, C) -> the same map moved one row down, zeros in row 0.

    >>> shift_down(jnp.arange(3.0).reshape(1, 3, 1, 1))[0, :, 0, 0].tolist()
    [0.0, 0.0, 1.0]
    """
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def shift_right(x: jax.Array) -> jax.Array:
    """(B, h, w, C) -> the same map moved one column right, zeros in column 0.

    >>> shift_right(jnp.arange(3.0).reshape(1, 1, 3, 1))[0, 0, :, 0].tolist()
    [0.0, 0.0, 1.0]
    """
    return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def gate(x: jax.Array, bias: jax.Array) -> jax.Array:
    """``tanh(a) * sigmoid(b)`` of the two channel halves of ``x + bias``.

    Args:
      x: (B, h, w, 2p) pre-activations.
      bias: (B, 2p) per-example (label) bias.

    Returns:
      (B, h, w, p).

    >>> gate(jnp.zeros((1, 1, 1, 2)), jnp.array([[1.0, 0.0]]))[..., 0].item()  # tanh(1)/2
    0.3807...
    """
    a, b = jnp.split(x + bias[:, None, None, :], 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedLayer(nnx.Module):
    """One gated layer of both stacks: (v, h) -> (v', h').

    ``first`` makes it the input layer: its horizontal convolution reads the map shifted
    right (it must not see the current code) and it has no residual connection.

    >>> layer = GatedLayer(8, 3, first=False, rngs=nnx.Rngs(0))
    >>> v, h = layer(jnp.ones((2, 4, 4, 8)), jnp.ones((2, 4, 4, 8)), jnp.zeros((2, 2, 16)))
    >>> v.shape, h.shape
    ((2, 4, 4, 8), (2, 4, 4, 8))
    """

    def __init__(self, channels: int, kernel_size: int, *, first: bool, rngs: nnx.Rngs):
        self.first = first
        self.k = kernel_size // 2
        c2 = 2 * channels
        self.v_conv = nnx.Conv(channels, c2, (self.k + 1, kernel_size), padding="VALID", rngs=rngs)
        self.h_conv = nnx.Conv(channels, c2, (1, self.k + 1), padding="VALID", rngs=rngs)
        self.v_to_h = nnx.Conv(c2, c2, (1, 1), rngs=rngs)
        self.h_out = nnx.Conv(channels, channels, (1, 1), rngs=rngs)

    def __call__(self, v: jax.Array, h: jax.Array, bias: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One layer.

        Args:
          v: (B, h, w, p) vertical stack: at (i, j) it depends on rows <= i only.
          h: (B, h, w, p) horizontal stack: at (i, j) it depends on codes before (i, j)
            (and on (i, j) itself in the first layer's input, the embedding).
          bias: (B, 2, 2p) label biases of the vertical and horizontal gates.

        Returns:
          ``(v', h')`` with the same shapes and dependencies.
        """
        k = self.k
        v_pre = self.v_conv(jnp.pad(v, ((0, 0), (k, 0), (k, k), (0, 0))))
        h_in = shift_right(h) if self.first else h
        h_pre = self.h_conv(jnp.pad(h_in, ((0, 0), (0, 0), (k, 0), (0, 0))))
        h_pre = h_pre + self.v_to_h(shift_down(v_pre))
        h_new = self.h_out(gate(h_pre, bias[:, 1]))
        return gate(v_pre, bias[:, 0]), h_new if self.first else h + h_new


class PixelCNNPrior(Autoregressive, nnx.Module):
    """Gated PixelCNN prior p(codes | label) = prod_i p(code_i | label, codes < i).

    Args:
      num_codes: K, the codes a map may hold (the VQ-VAE's ``num_codes``).
      height: h of the code map (8 for 32x32 images).
      width: w of the code map.
      num_classes: C for a class-conditional prior (labels in [0, C), C = null); 0 for none.
      channels: p, the number of channels of both stacks.
      num_layers: gated layers; the receptive field grows by k//2 per layer, so with
        ``num_layers * (kernel_size // 2) >= max(h, w) - 1`` every earlier code reaches
        every later position.
      kernel_size: odd k of the stacks' convolutions.
      rngs: NNX random streams (``params`` is used).

    Raises:
      ValueError: an even or too small ``kernel_size``.

    >>> prior = PixelCNNPrior(16, 4, 4, num_classes=3, channels=8, num_layers=2,
    ...                       rngs=nnx.Rngs(0))
    >>> prior(jnp.zeros((2, 4, 4), jnp.int32), jnp.array([0, 2])).shape
    (2, 4, 4, 16)
    """

    def __init__(
        self,
        num_codes: int,
        height: int,
        width: int,
        *,
        num_classes: int = 0,
        channels: int = 128,
        num_layers: int = 12,
        kernel_size: int = 3,
        rngs: nnx.Rngs,
    ):
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and at least 3, got {kernel_size}.")
        self.num_codes, self.height, self.width = num_codes, height, width
        self.num_classes, self.channels, self.num_layers = num_classes, channels, num_layers
        # N(0, 1), nn.Embedding's init: with Flax's smaller default, a narrow prior learned
        # the toy maps of tests/test_prior.py more slowly.
        self.embed = nnx.Embed(
            num_codes, channels, embedding_init=nnx.initializers.normal(1.0), rngs=rngs
        )
        # One table holds every layer's vertical and horizontal gate biases for each label.
        self.class_bias = nnx.Embed(num_classes + 1, num_layers * 2 * 2 * channels, rngs=rngs)
        self.layers = nnx.List(
            [GatedLayer(channels, kernel_size, first=i == 0, rngs=rngs) for i in range(num_layers)]
        )
        self.out_1 = nnx.Conv(channels, channels, (1, 1), rngs=rngs)
        self.out_2 = nnx.Conv(channels, num_codes, (1, 1), rngs=rngs)

    def __call__(self, codes: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """(B, h, w) int codes -> (B, h, w, K) float32 logits; code i's from codes < i.

        Args:
          codes: (B, h, w) int code map, codes in [0, K).
          labels: (B,) int labels in [0, num_classes), or None (the null label).

        Raises:
          ValueError: codes or labels out of range, or of another shape or dtype.
        """
        codes = checks.indices(
            "codes", codes, self.num_codes, shape=(None, self.height, self.width)
        )
        b = codes.shape[0]
        ids = label_ids(labels, b, self.num_classes)
        bias = self.class_bias(ids).reshape(b, self.num_layers, 2, 2 * self.channels)
        v = h = self.embed(codes)
        for i, layer in enumerate(self.layers):
            v, h = layer(v, h, bias[:, i])
        return self.out_2(jax.nn.relu(self.out_1(jax.nn.relu(h)))).astype(jnp.float32)

    def init_cache(self, batch: int) -> jax.Array:
        """The "cache" of convolutional sampling: the (B, h, w) int32 code map so far (zeros).

        >>> prior = PixelCNNPrior(16, 4, 4, num_classes=3, channels=8, num_layers=2,
        ...                       rngs=nnx.Rngs(0))
        >>> prior.init_cache(5).shape
        (5, 4, 4)
        """
        return jnp.zeros((batch, self.height, self.width), jnp.int32)

    def decode_step(
        self,
        cache: jax.Array,
        prev: jax.Array,
        position: jax.Array | int,
        labels: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Logits of the code at raster ``position``: one full forward, read at ``position``.

        The same interface as :meth:`TransformerPrior.decode_step`, so one sampling loop
        serves both priors; a convolution has no keys and values to keep, so each step
        writes ``prev`` into the code map and runs the whole network again.

        Args:
          cache: (B, h, w) codes so far (:meth:`init_cache` at position 0).
          prev: (B,) int code at ``position - 1`` (ignored at position 0).
          position: raster index in [0, h*w), may be traced.
          labels: (B,) int labels, or None (the null label).

        Returns:
          ``(logits, cache)``: (B, K) float32 logits and the map holding ``prev``.

        >>> prior = PixelCNNPrior(16, 4, 4, num_classes=3, channels=8, num_layers=2,
        ...                       rngs=nnx.Rngs(0))
        >>> codes = jnp.arange(32).reshape(2, 4, 4) % 16
        >>> logits, cache = prior.decode_step(codes, codes[:, 1, 0], 5)
        >>> bool(jnp.allclose(logits, prior(codes)[:, 1, 1], atol=1e-6))
        True
        """
        b = cache.shape[0]
        flat = cache.reshape(b, -1)
        position = jnp.asarray(position, jnp.int32)
        # At position 0 there is no previous code; writing at index -1 would hit the last cell.
        flat = flat.at[:, jnp.maximum(position - 1, 0)].set(
            jnp.where(position > 0, prev.astype(jnp.int32), flat[:, 0])
        )
        cache = flat.reshape(cache.shape)
        logits = self(cache, labels).reshape(b, -1, self.num_codes)
        return jax.lax.dynamic_index_in_dim(logits, position, axis=1, keepdims=False), cache
