"""A causal decoder-only transformer prior over raster-ordered code maps, with a KV cache.

The (B, h, w) code map is read row by row as a sequence of N = h*w codes. Input token i is
the start token (the class embedding; the null label's when unconditional) for i = 0 and
the embedding of code i-1 otherwise, plus the learned position of code i (a row embedding
plus a column embedding); the output at token i is the logits of code i. So code i is
predicted from the label and codes < i only, as in the GPT-style priors over VQ codes
(Esser et al., "Taming Transformers", 2021).

Every block is pre-norm: ``x + attn(LN(x))`` then ``x + MLP(LN(x))``, with a GELU MLP
(PyTorch's exact ``nn.GELU()``) and LayerNorm epsilon 1e-5 (PyTorch's), so
``experiments/torch_prior_reference.py`` computes the same function.

Decoding one token at a time (:meth:`TransformerPrior.decode_step`) keeps every layer's
keys and values in a :class:`KVCache`; the full forward is the same computation on all N
tokens at once, starting from an empty cache.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics import checks
from jaxbasics.prior.common import Autoregressive, label_ids


class KVCache(NamedTuple):
    """One layer's attention keys and values for the tokens decoded so far.

    A model's cache is a tuple of these, one per block: one array per layer, as a layer's
    slice of a stacked (depth, ...) array was copied out before attention could read it
    (8 MB per layer per step at B = 64 on the CPU, a third of the sampling time).

    Attributes:
      keys: (B, heads, N, dim/heads) float32; positions at or after the next one are unused
        (zeros until written). Heads before positions, as attention batches over them:
        each step then reads the cache where it lies, with no transposed copy.
      values: same shape as ``keys``.
    """

    keys: jax.Array
    values: jax.Array


def causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, query_positions: jax.Array
) -> jax.Array:
    """Softmax attention where the query at position p sees keys 0..p only.

    ``F.scaled_dot_product_attention(q, k, v, attn_mask)`` with a causal mask; the queries
    may be a chunk of positions (one position when decoding with a cache).

    Args:
      q: (B, heads, T, dh) queries.
      k: (B, heads, N, dh) keys of positions 0..N-1.
      v: (B, heads, N, dh) values.
      query_positions: (T,) position of each query.

    Returns:
      (B, heads, T, dh).

    >>> x = jnp.ones((1, 2, 3, 4))
    >>> causal_attention(x, x, jnp.arange(3.0)[None, None, :, None] * x, jnp.arange(3))[0, 0, :, 0]
    Array([0. , 0.5, 1. ], dtype=float32)
    """
    visible = jnp.arange(k.shape[2])[None, :] <= query_positions[:, None]  # (T, N)
    return attention(q, k, v, visible)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, visible: jax.Array | None = None):
    """Softmax attention ``softmax(q k^T / sqrt(dh)) v``: ``F.scaled_dot_product_attention``.

    Args:
      q: (B, heads, T, dh) queries.
      k: (B, heads, N, dh) keys.
      v: (B, heads, N, dh) values.
      visible: (T, N) bool, which keys each query sees; None: all (bidirectional).

    Returns:
      (B, heads, T, dh).

    >>> x = jnp.ones((1, 1, 2, 4))
    >>> attention(x, x, jnp.arange(2.0)[None, None, :, None] * x)[0, 0, :, 0]
    Array([0.5, 0.5], dtype=float32)
    """
    scores = q @ jnp.swapaxes(k, -1, -2) / jnp.sqrt(q.shape[-1]).astype(q.dtype)  # (B, H, T, N)
    if visible is not None:
        scores = jnp.where(visible, scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1) @ v


class Block(nnx.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``.

    >>> block = Block(8, 2, 4, rngs=nnx.Rngs(0))
    >>> cache = KVCache(jnp.zeros((1, 2, 5, 4)), jnp.zeros((1, 2, 5, 4)))
    >>> y, cache = block(jax.random.normal(jax.random.key(0), (1, 5, 8)), cache, jnp.arange(5))
    >>> y.shape, bool(cache.keys.any())
    ((1, 5, 8), True)
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.ln_1 = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)
        self.fc_1 = nnx.Linear(dim, mlp_ratio * dim, rngs=rngs)
        self.fc_2 = nnx.Linear(mlp_ratio * dim, dim, rngs=rngs)

    def __call__(
        self, x: jax.Array, cache: KVCache, positions: jax.Array
    ) -> tuple[jax.Array, KVCache]:
        """Run tokens at consecutive ``positions``, writing their keys and values to the cache.

        Args:
          x: (B, T, dim) tokens.
          cache: this block's cache.
          positions: (T,) consecutive positions of the tokens.

        Returns:
          ``(y, cache)``: (B, T, dim) outputs and the cache with these tokens' keys and values.
        """
        q, k, v = self._qkv(x)  # each (B, heads, T, dh)
        at = (0, 0, positions[0], 0)  # XLA writes the update in place
        cache = KVCache(
            jax.lax.dynamic_update_slice(cache.keys, k, at),
            jax.lax.dynamic_update_slice(cache.values, v, at),
        )
        return self._rest(x, causal_attention(q, cache.keys, cache.values, positions)), cache

    def bidirectional(self, x: jax.Array) -> jax.Array:
        """The same block with every token seeing every other (no cache): a masked prior's.

        >>> block = Block(8, 2, 4, rngs=nnx.Rngs(0))
        >>> block.bidirectional(jnp.ones((1, 5, 8))).shape
        (1, 5, 8)
        """
        return self._rest(x, attention(*self._qkv(x)))

    def _qkv(self, x: jax.Array) -> jax.Array:
        """(B, T, dim) -> (3, B, heads, T, dh): queries, keys and values."""
        b, t, _ = x.shape
        return self.qkv(self.ln_1(x)).reshape(b, t, 3, self.heads, -1).transpose(2, 0, 3, 1, 4)

    def _rest(self, x: jax.Array, attn: jax.Array) -> jax.Array:
        """The residual attention output, then the residual MLP."""
        b, t, dim = x.shape
        x = x + self.proj(attn.transpose(0, 2, 1, 3).reshape(b, t, dim))
        return x + self.fc_2(jax.nn.gelu(self.fc_1(self.ln_2(x)), approximate=False))


class TransformerPrior(Autoregressive, nnx.Module):
    """Autoregressive prior p(codes | label) = prod_i p(code_i | label, codes < i).

    Args:
      num_codes: K, the codes a map may hold (the VQ-VAE's ``num_codes``).
      height: h of the code map (8 for 32x32 images).
      width: w of the code map.
      num_classes: C for a class-conditional prior (labels in [0, C), C = null); 0 for none.
      dim: token width.
      depth: number of blocks.
      heads: attention heads (must divide ``dim``).
      mlp_ratio: MLP hidden width / dim.
      rngs: NNX random streams (``params`` is used).

    Raises:
      ValueError: ``heads`` does not divide ``dim``.

    >>> prior = TransformerPrior(16, 4, 4, num_classes=3, dim=8, depth=1, heads=2,
    ...                          rngs=nnx.Rngs(0))
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
        dim: int = 256,
        depth: int = 8,
        heads: int = 8,
        mlp_ratio: int = 4,
        rngs: nnx.Rngs,
    ):
        if dim % heads:
            raise ValueError(f"heads must divide dim, got dim={dim} and heads={heads}.")
        self.num_codes, self.height, self.width = num_codes, height, width
        self.num_classes, self.dim, self.depth, self.heads = num_classes, dim, depth, heads
        self.mlp_ratio = mlp_ratio
        embed = nnx.initializers.normal(0.02)
        self.code_embed = nnx.Embed(num_codes, dim, embedding_init=embed, rngs=rngs)
        self.class_embed = nnx.Embed(num_classes + 1, dim, embedding_init=embed, rngs=rngs)
        self.row_embed = nnx.Embed(height, dim, embedding_init=embed, rngs=rngs)
        self.col_embed = nnx.Embed(width, dim, embedding_init=embed, rngs=rngs)
        self.blocks = nnx.List([Block(dim, heads, mlp_ratio, rngs=rngs) for _ in range(depth)])
        self.ln_f = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)
        self.head = nnx.Linear(dim, num_codes, rngs=rngs)

    def init_cache(self, batch: int) -> tuple[KVCache, ...]:
        """An empty cache for decoding ``batch`` code maps from position 0, one per block.

        >>> prior = TransformerPrior(16, 4, 4, num_classes=3, dim=8, depth=2, heads=2,
        ...                          rngs=nnx.Rngs(0))
        >>> cache = prior.init_cache(5)
        >>> len(cache), cache[0].keys.shape  # depth, (B, heads, h*w, dim/heads)
        (2, (5, 2, 16, 4))
        """
        shape = (batch, self.heads, self.height * self.width, self.dim // self.heads)
        zeros = jnp.zeros(shape, jnp.float32)
        return tuple(KVCache(zeros, zeros) for _ in range(self.depth))

    def _tokens(self, prev: jax.Array, positions: jax.Array, labels: jax.Array) -> jax.Array:
        """(B, T) previous codes at (T,) positions -> (B, T, dim) input tokens."""
        start = self.class_embed(labels)[:, None, :]
        tokens = jnp.where((positions == 0)[None, :, None], start, self.code_embed(prev))
        return (
            tokens
            + self.row_embed(positions // self.width)
            + self.col_embed(positions % self.width)
        )

    def _run(
        self, prev: jax.Array, positions: jax.Array, labels: jax.Array, cache: tuple[KVCache, ...]
    ) -> tuple[jax.Array, tuple[KVCache, ...]]:
        """Logits (B, T, K) for codes at ``positions`` given the previous codes and the cache."""
        x = self._tokens(prev, positions, labels)
        caches = []
        for block, layer_cache in zip(self.blocks, cache, strict=True):
            x, layer_cache = block(x, layer_cache, positions)
            caches.append(layer_cache)
        return self.head(self.ln_f(x)).astype(jnp.float32), tuple(caches)

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
        flat = codes.reshape(b, -1)
        prev = jnp.pad(flat[:, :-1], ((0, 0), (1, 0)))  # code i-1 feeds token i
        positions = jnp.arange(flat.shape[1])
        ids = label_ids(labels, b, self.num_classes)
        logits, _ = self._run(prev, positions, ids, self.init_cache(b))
        return logits.reshape(b, self.height, self.width, self.num_codes)

    def decode_step(
        self,
        cache: tuple[KVCache, ...],
        prev: jax.Array,
        position: jax.Array | int,
        labels: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[KVCache, ...]]:
        """Logits of the code at raster ``position``, given the cache of positions before it.

        Args:
          cache: the cache holding positions 0..position-1 (:meth:`init_cache` at 0).
          prev: (B,) int code at ``position - 1`` (ignored at position 0: the start token).
          position: raster index in [0, h*w), may be traced.
          labels: (B,) int labels, or None (the null label).

        Returns:
          ``(logits, cache)``: (B, K) float32 logits and the cache holding ``position`` too.

        >>> prior = TransformerPrior(16, 4, 4, num_classes=3, dim=8, depth=1, heads=2,
        ...                          rngs=nnx.Rngs(0))
        >>> logits, cache = prior.decode_step(prior.init_cache(2), jnp.zeros(2, jnp.int32), 0)
        >>> logits.shape
        (2, 16)
        """
        b = prev.shape[0]
        positions = jnp.asarray(position, jnp.int32).reshape(1)
        ids = label_ids(labels, b, self.num_classes)
        logits, cache = self._run(prev.astype(jnp.int32)[:, None], positions, ids, cache)
        return logits[:, 0], cache
