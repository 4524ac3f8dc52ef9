"""A MaskGIT-style prior: a bidirectional transformer that fills in masked codes, in parallel.

Chang et al., "MaskGIT: Masked Generative Image Transformer" (2022). The (B, h, w) code map
is read as N = h*w tokens, each a code or the [MASK] token (index K), after one class token
(the class embedding; the null label's when unconditional); every token sees every other.

* **Training** (:meth:`MaskGITPrior.loss`) hides a random share of each map, drawn from the
  cosine schedule (:func:`mask_ratio`; at least one code), and scores the hidden codes only:
  cross-entropy per hidden code.
* **Sampling** (:func:`decode`) starts from an all-[MASK] map and fills it in ``steps``
  parallel steps. Each step draws a code for every hidden position, then keeps the most
  confident draws (log-probability plus Gumbel noise annealed linearly to zero) so that
  ``N * mask_ratio((t + 1) / steps)`` stay hidden; the last step fills the rest. A kept code
  is never changed. The whole loop is one ``lax.fori_loop`` in one ``jax.jit``.

Its blocks are the autoregressive prior's (:class:`~jaxbasics.prior.transformer.Block`), run
:meth:`~jaxbasics.prior.transformer.Block.bidirectional`. It has no exact likelihood:
its held-out figure is bits per *hidden* code under random masks from the schedule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbasics import checks
from jaxbasics.prior.common import label_ids
from jaxbasics.prior.transformer import Block

# MaskGIT's default number of parallel decoding steps (the paper uses 8 to 12).
DEFAULT_STEPS = 10
# The scale of the Gumbel noise on the confidence at the first step (MaskGIT's 4.5), falling
# linearly to 0 at the last: early choices are explored, late ones are the likeliest.
CONFIDENCE_NOISE = 4.5


def mask_ratio(r: jax.Array | float) -> jax.Array:
    """The cosine schedule: the share of codes hidden at progress ``r`` in [0, 1].

    ``cos(pi/2 * r)``: all hidden at 0, none at 1. Training draws r uniformly; decoding step
    t of T leaves ``floor(N * mask_ratio((t + 1) / T))`` hidden.

    >>> [round(float(mask_ratio(r)), 3) for r in (0.0, 0.5, 1.0)]
    [1.0, 0.707, 0.0]
    """
    return jnp.cos(0.5 * jnp.pi * jnp.asarray(r, jnp.float32))


def random_mask(key: jax.Array, batch: int, num: int) -> jax.Array:
    """(batch, num) bool: True where a code is hidden, ``ceil(num * mask_ratio(r))`` of each
    row (at least 1), r ~ U[0, 1) per row, at uniformly random positions.

    >>> m = random_mask(jax.random.key(0), 3, 16)
    >>> m.shape, bool((m.sum(axis=1) >= 1).all())
    ((3, 16), True)
    """
    k_ratio, k_where = jax.random.split(key)
    r = jax.random.uniform(k_ratio, (batch,))
    count = jnp.clip(jnp.ceil(num * mask_ratio(r)), 1, num)
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(k_where, (batch, num)), axis=1), axis=1)
    return ranks < count[:, None]


class MaskGITPrior(nnx.Module):
    """p(hidden codes | visible codes, label), bidirectional (see the module docstring).

    Args:
      num_codes: K, the codes a map may hold (the VQ-VAE's ``num_codes``; [MASK] is index K).
      height: h of the code map.
      width: w of the code map.
      num_classes: C for a class-conditional prior (labels in [0, C), C = null); 0 for none.
      dim: token width.
      depth: number of blocks.
      heads: attention heads (must divide ``dim``).
      mlp_ratio: MLP hidden width / dim.
      rngs: NNX random streams.

    Raises:
      ValueError: ``heads`` does not divide ``dim``.

    >>> prior = MaskGITPrior(16, 4, 4, num_classes=3, dim=8, depth=1, heads=2, rngs=nnx.Rngs(0))
    >>> codes = jnp.zeros((2, 4, 4), jnp.int32)
    >>> prior(codes, jnp.array([0, 2]), mask=jnp.ones((2, 4, 4), bool)).shape
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
        self.code_embed = nnx.Embed(num_codes + 1, dim, embedding_init=embed, rngs=rngs)
        self.class_embed = nnx.Embed(num_classes + 1, dim, embedding_init=embed, rngs=rngs)
        self.pos_embed = nnx.Embed(height * width + 1, dim, embedding_init=embed, rngs=rngs)
        self.blocks = nnx.List([Block(dim, heads, mlp_ratio, rngs=rngs) for _ in range(depth)])
        self.ln_f = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)
        self.head = nnx.Linear(dim, num_codes, rngs=rngs)

    def logits(self, tokens: jax.Array, labels: jax.Array) -> jax.Array:
        """(B, N) tokens in [0, K] (K = [MASK]) and (B,) label ids -> (B, N, K) float32 logits.

        The unchecked core of :meth:`__call__`, for compiled loops whose inputs are known good.
        """
        x = jnp.concatenate([self.class_embed(labels)[:, None], self.code_embed(tokens)], axis=1)
        x = x + self.pos_embed(jnp.arange(x.shape[1]))
        for block in self.blocks:
            x = block.bidirectional(x)
        return self.head(self.ln_f(x[:, 1:])).astype(jnp.float32)

    def __call__(
        self, codes: jax.Array, labels: jax.Array | None = None, mask: jax.Array | None = None
    ) -> jax.Array:
        """(B, h, w) codes, with the ``mask`` positions hidden -> (B, h, w, K) float32 logits.

        Args:
          codes: (B, h, w) int codes in [0, K) (hidden ones are ignored).
          labels: (B,) int labels in [0, num_classes), or None (the null label).
          mask: (B, h, w) bool, True where a code is hidden; None hides nothing.

        Raises:
          ValueError: codes or labels out of range, or of another shape or dtype; a mask that
            is not bool of the codes' shape.
        """
        codes = checks.indices(
            "codes", codes, self.num_codes, shape=(None, self.height, self.width)
        )
        b = codes.shape[0]
        if mask is not None:
            shape = np.shape(mask)  # works on tracers too, as .dtype does
            dtype = mask.dtype if hasattr(mask, "dtype") else np.asarray(mask).dtype
            if shape != codes.shape or dtype != jnp.bool_:
                raise ValueError(
                    f"mask must be a bool array of the codes' shape {codes.shape}, got "
                    f"{shape} {dtype}."
                )
        tokens = codes if mask is None else jnp.where(mask, self.num_codes, codes)
        logits = self.logits(tokens.reshape(b, -1), label_ids(labels, b, self.num_classes))
        return logits.reshape(b, self.height, self.width, self.num_codes)

    def loss(
        self,
        codes: jax.Array,
        labels: jax.Array | None,
        key: jax.Array,
        *,
        per_example: bool = False,
    ) -> jax.Array:
        """Cross-entropy of the hidden codes in nats, under a :func:`random_mask` from ``key``.

        Args:
          codes: (B, h, w) int codes in [0, K).
          labels: (B,) int labels, or None (the null label).
          key: the masks' PRNG key.
          per_example: (B,) means over each map's hidden codes instead of the mean over all
            hidden codes of the batch.

        Returns:
          Scalar (or (B,)) float32 nats per hidden code.
        """
        b = codes.shape[0]
        mask = random_mask(key, b, self.height * self.width).reshape(codes.shape)
        logp = jax.nn.log_softmax(self(codes, labels, mask), axis=-1)
        nll = -jnp.take_along_axis(logp, codes[..., None].astype(jnp.int32), axis=-1)[..., 0]
        w = mask.astype(jnp.float32)
        if per_example:
            return (nll * w).sum(axis=(1, 2)) / w.sum(axis=(1, 2))
        return (nll * w).sum() / w.sum()


def _hidden_after(t: jax.Array, steps: int, num: int) -> jax.Array:
    """How many codes stay hidden after decoding step ``t`` of ``steps`` (0 after the last).

    >>> [int(_hidden_after(t, 4, 64)) for t in range(4)]
    [59, 45, 24, 0]
    """
    left = jnp.floor(num * mask_ratio((t + 1) / steps)).astype(jnp.int32)
    return jnp.where(t + 1 >= steps, 0, jnp.clip(left, 0, num))


def decode_step(
    t: jax.Array,
    tokens: jax.Array,
    logits: jax.Array,
    key: jax.Array,
    steps: int,
    draw,
    noise: jax.Array | float = CONFIDENCE_NOISE,
) -> jax.Array:
    """One parallel decoding step: draw every hidden code, keep the most confident ones.

    Args:
      t: the step, in [0, steps).
      tokens: (B, N) tokens, K where hidden.
      logits: (B, N, K) the (guided, tempered, top-k'd) logits at ``tokens``.
      key: this step's PRNG key.
      steps: T.
      draw: ``draw(key, logits (M, K)) -> (M,)`` codes (e.g. a multinomial).
      noise: the Gumbel noise's scale at the first step (0: keep the likeliest draws).

    Returns:
      (B, N) tokens with ``N - _hidden_after(t)`` codes known, every known one unchanged.
    """
    b, num, k = logits.shape
    k_draw, k_noise = jax.random.split(key)
    drawn = draw(k_draw, logits.reshape(b * num, k)).reshape(b, num)
    hidden = tokens == k
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), drawn[..., None], -1)[..., 0]
    gumbel = noise * (1.0 - (t + 1) / steps) * jax.random.gumbel(k_noise, (b, num))
    confidence = jnp.where(hidden, logp + gumbel, jnp.inf)  # known codes: never re-hidden
    ranks = jnp.argsort(jnp.argsort(confidence, axis=1, stable=True), axis=1, stable=True)
    stay = ranks < jnp.minimum(_hidden_after(t, steps, num), hidden.sum(axis=1) - 1)[:, None]
    return jnp.where(hidden & ~stay, drawn, tokens)


__all__ = ["CONFIDENCE_NOISE", "DEFAULT_STEPS", "MaskGITPrior", "mask_ratio", "random_mask"]
