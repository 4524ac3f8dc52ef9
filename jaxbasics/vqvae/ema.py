"""The EMA quantiser: codebook statistics updated by exponential moving averages.

The codebook follows an EMA of the encoder outputs assigned to each code (van den Oord et
al., "Neural Discrete Representation Learning", 2017, appendix A.1) instead of a gradient.
The statistics are :class:`EMAVariable`, which the optimiser never sees. The shared math
(distances, assignments, losses) is in :mod:`jaxbasics.vqvae.quantizer`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics.tensors import one_hot
from jaxbasics.vqvae.quantizer import (
    EMA_INITS,
    Quantizer,
    QuantizerOutput,
    assign,
    code_counts,
    estimator_fn,
    lookup,
    mse,
    perplexity,
    sg,
)


class EMAState(NamedTuple):
    """The EMA codebook statistics (appendix A.1 of van den Oord et al.).

    Attributes:
      codebook: (K, D) current codes ``ema_w / ema_cluster_size``.
      ema_cluster_size: (K,) Laplace-smoothed EMA of code usage counts.
      ema_w: (K, D) EMA of the per-code sums of assigned encoder outputs.
    """

    codebook: jax.Array
    ema_cluster_size: jax.Array
    ema_w: jax.Array


def ema_update(
    flat: jax.Array,
    indices: jax.Array,
    ema_cluster_size: jax.Array,
    ema_w: jax.Array,
    decay: float,
    epsilon: float,
) -> EMAState:
    """One EMA codebook update from a batch's assignments (made before the update).

    N_i <- decay N_i + (1 - decay) n_i; N_i <- (N_i + eps) / (sum N + K eps) * sum N
    (Laplace smoothing); m_i <- decay m_i + (1 - decay) sum_{j: idx_j = i} z_j;
    e_i <- m_i / N_i. The sums are segment sums rather than the notes'
    ``encodings.t() @ flat`` one-hot matmul: same numbers, N*D instead of N*K*D work.

    Args:
      flat: (N, D) encoder outputs (gradients are stopped).
      indices: (N,) their code indices.
      ema_cluster_size: (K,) current smoothed cluster sizes.
      ema_w: (K, D) current EMA sums.
      decay: EMA decay, e.g. 0.99.
      epsilon: Laplace smoothing, e.g. 1e-5.

    Returns:
      The new :class:`EMAState`.

    >>> s = ema_update(jnp.array([[2.0], [4.0]]), jnp.array([0, 0]), jnp.ones(2),
    ...                jnp.ones((2, 1)), decay=0.5, epsilon=0.0)
    >>> s.ema_cluster_size.tolist(), s.ema_w.tolist(), s.codebook.round(4).tolist()
    ([1.5, 0.5], [[3.5], [0.5]], [[2.3333], [1.0]])
    """
    num_embeddings = ema_cluster_size.shape[0]
    flat = sg(flat)
    counts = code_counts(indices, num_embeddings)
    cluster_size = ema_cluster_size * decay + (1.0 - decay) * counts
    n = jnp.sum(cluster_size)
    cluster_size = (cluster_size + epsilon) / (n + num_embeddings * epsilon) * n
    dw = jax.ops.segment_sum(flat, indices, num_embeddings)  # (K, D)
    new_w = ema_w * decay + (1.0 - decay) * dw
    return EMAState(new_w / cluster_size[:, None], cluster_size, new_w)


class EMAVariable(nnx.Variable):
    """Non-trainable state updated by EMA, never by the optimiser.

    ``nnx.split(model, nnx.Param, ...)`` leaves these out of the trainable params,
    so optax never sees them.
    """


class VectorQuantizerEMA(Quantizer):
    """The notes' ``VectorQuantizerEMA``: codes follow an EMA of their assignments.

    The codebook, ``ema_cluster_size`` and ``ema_w`` are :class:`EMAVariable`, not
    params. In training mode (``use_running_average=False``, NNX's ``model.train()``)
    each call updates them from this batch's assignments, made before the update;
    the quantised output uses the codes from before the update, as in the reference.
    In eval mode (``model.eval()``) they are read only. The loss is the commitment
    term ``beta * mse(sg(q), z)`` alone.

    Init (``init``):

    * ``"notes"``: the reference's. Codebook and ``ema_w`` are drawn independently from a
      standard normal and the cluster sizes start at 0. After the first update every code
      that the first batch did not choose has ``N ~ epsilon`` after Laplace smoothing, so
      ``e = ema_w / N`` jumps to a norm of ~1e5 and stays unreachable until ``ema_w`` has
      decayed, for hundreds of steps: the codebook collapses to the few codes chosen at step 1.
    * ``"consistent"``: the same standard-normal codebook, with ``ema_cluster_size = 1`` and
      ``ema_w = codebook``, i.e. each code starts as the mean of one pseudo-observation at
      itself. An unused code then decays in ``N`` and ``ema_w`` alike and stays where it is.

    Args:
      num_embeddings: K.
      embedding_dim: D.
      commitment_cost: beta.
      decay: EMA decay (reference 0.99).
      epsilon: Laplace smoothing (reference 1e-5).
      estimator: ``"ste"`` (straight-through, the notes') or ``"rotation"``.
      init: ``"notes"`` or ``"consistent"``, see above.
      rngs: NNX random streams (``params`` is used).

    >>> vq = VectorQuantizerEMA(8, 4, 0.25, rngs=nnx.Rngs(0))
    >>> before = vq.ema_w[...]
    >>> _ = vq(jnp.ones((1, 2, 2, 4)))          # training mode: statistics move
    >>> bool(jnp.any(vq.ema_w[...] != before))
    True
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        commitment_cost: float,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        *,
        estimator: str = "ste",
        init: str = "notes",
        rngs: nnx.Rngs,
    ):
        if init not in EMA_INITS:
            raise ValueError(f"init must be one of {EMA_INITS}, got {init!r}.")
        estimator_fn(estimator)
        self.estimator = estimator
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_cost = commitment_cost
        self.decay = decay
        self.epsilon = epsilon
        self.use_running_average = False
        key_codebook, key_w = jax.random.split(rngs.params())
        shape = (num_embeddings, embedding_dim)
        codebook = jax.random.normal(key_codebook, shape)
        self.codebook = EMAVariable(codebook)
        if init == "notes":
            self.ema_cluster_size = EMAVariable(jnp.zeros((num_embeddings,)))
            self.ema_w = EMAVariable(jax.random.normal(key_w, shape))
        else:
            self.ema_cluster_size = EMAVariable(jnp.ones((num_embeddings,)))
            self.ema_w = EMAVariable(codebook)

    def __call__(self, z: jax.Array) -> QuantizerOutput:
        codebook = self.codebook[...]
        flat, dist, idx = assign(z, codebook)
        q = lookup(codebook, idx).reshape(z.shape)
        if not self.use_running_average:
            new = ema_update(
                flat, idx, self.ema_cluster_size[...], self.ema_w[...], self.decay, self.epsilon
            )
            self.codebook[...] = new.codebook
            self.ema_cluster_size[...] = new.ema_cluster_size
            self.ema_w[...] = new.ema_w
        return QuantizerOutput(
            quantized=estimator_fn(self.estimator)(z, q),
            indices=idx.reshape(z.shape[:-1]),
            encodings=one_hot(idx, self.num_embeddings),
            loss=self.commitment_cost * mse(sg(q), z),
            perplexity=perplexity(code_counts(idx, self.num_embeddings)),
            distances=dist,
        )
