"""Vector quantisation: the pure math, then the plain quantiser as a Flax NNX module.

The math follows van den Oord et al., "Neural Discrete Representation Learning"
(2017), eq. 1-3, and the EMA codebook of its appendix A.1. Inputs are NHWC latents
``z`` of shape (B, H, W, D); they are flattened to N = B*H*W vectors of size D,
exactly as the notes' ``inputs.view(-1, embedding_dim)`` after the BCHW->BHWC
permute (our latents are NHWC already, so nothing is permuted here).

If you get a shape error here, the most likely cause is an encoder whose last
channel count differs from ``embedding_dim``: the pre-quantiser 1x1 conv must map
to exactly ``embedding_dim`` channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics.autodiff import rotation_trick, straight_through
from jaxbasics.tensors import one_hot

sg = jax.lax.stop_gradient

# How the decoder's gradient at q reaches the encoder output z (see jaxbasics.autodiff).
ESTIMATORS = {"ste": straight_through, "rotation": rotation_trick}
EMA_INITS = ("notes", "consistent")


def estimator_fn(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The gradient estimator called ``name``: ``"ste"`` or ``"rotation"``.

    >>> estimator_fn("rotation").__name__
    'rotation_trick'
    """
    if name not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {name!r}.")
    return ESTIMATORS[name]


class QuantizerOutput(NamedTuple):
    """What a vector quantiser returns.

    Attributes:
      quantized: (B, H, W, D) quantised latents: equal to the nearest codes in the forward
        pass, with the estimator's gradient to ``z`` (straight-through ``z + sg(q - z)``:
        the identity; the rotation trick: ``lambda R^T``).
      indices: (B, H, W) int32 index of the nearest code for every latent vector.
      encodings: (N, K) float32 one-hot rows of ``indices`` (N = B*H*W).
      loss: scalar VQ loss (codebook + commitment terms; see the quantiser).
      perplexity: scalar exp(entropy) of the average code usage in this batch.
      distances: (N, K) squared Euclidean distances to every code; None for FSQ
        (:mod:`jaxbasics.vqvae.fsq`), which rounds each channel and measures no distance.
    """

    quantized: jax.Array
    indices: jax.Array
    encodings: jax.Array
    loss: jax.Array
    perplexity: jax.Array
    distances: jax.Array | None = None


def distances(flat: jax.Array, codebook: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``||x||^2 + ||e||^2 - 2 x.e`` between rows.

    The notes' ``torch.sum(x**2, dim=1, keepdim=True) + torch.sum(w**2, dim=1)
    - 2 * torch.matmul(x, w.t())``: one matmul instead of an (N, K, D) difference.

    Args:
      flat: (N, D) input vectors.
      codebook: (K, D) code vectors.

    Returns:
      (N, K) distances.

    >>> d = distances(jnp.array([[0.0, 0.0], [1.0, 1.0]]), jnp.array([[1.0, 0.0], [1.0, 1.0]]))
    >>> d.tolist()
    [[1.0, 2.0], [1.0, 0.0]]
    """
    return (
        jnp.sum(flat**2, axis=1, keepdims=True)
        + jnp.sum(codebook**2, axis=1)
        - 2.0 * flat @ codebook.T
    )


def nearest_code(dist: jax.Array) -> jax.Array:
    """Index of the closest code for every row (``torch.argmin(distances, dim=1)``).

    Ties go to the lowest index, as in PyTorch.

    Args:
      dist: (N, K) distances.

    Returns:
      (N,) int32 code indices.

    >>> nearest_code(jnp.array([[3.0, 1.0, 2.0], [0.5, 0.5, 9.0]])).tolist()
    [1, 0]
    """
    return jnp.argmin(dist, axis=1).astype(jnp.int32)


def lookup(codebook: jax.Array, indices: jax.Array) -> jax.Array:
    """Gather the code vectors for ``indices``: ``codebook[indices]``.

    The notes write ``torch.matmul(encodings, embedding.weight)``, a one-hot matmul of
    N*K*D multiply-adds; a gather gives the same vectors with N*D reads.

    Args:
      codebook: (K, D) code vectors.
      indices: int array of any shape S.

    Returns:
      Array of shape S + (D,).

    >>> lookup(jnp.array([[0.0, 1.0], [2.0, 3.0]]), jnp.array([1, 0, 1])).tolist()
    [[2.0, 3.0], [0.0, 1.0], [2.0, 3.0]]
    """
    return jnp.take(codebook, indices, axis=0)


def code_counts(indices: jax.Array, num_embeddings: int) -> jax.Array:
    """How many vectors chose each code: ``encodings.sum(0)`` without the one-hot.

    Args:
      indices: int array of code indices, any shape.
      num_embeddings: K.

    Returns:
      (K,) float32 counts.

    >>> code_counts(jnp.array([0, 2, 2]), 4).tolist()
    [1.0, 0.0, 2.0, 0.0]
    """
    flat = indices.reshape(-1)
    return jax.ops.segment_sum(jnp.ones(flat.shape, jnp.float32), flat, num_embeddings)


def perplexity(counts: jax.Array) -> jax.Array:
    """exp(-sum p log p) of the code-usage distribution p = counts / sum(counts).

    It equals the number of codes in use when usage is uniform over them: K for
    all-codes-equally, 1 when everything maps to a single code. The 1e-10 inside
    the log is the notes' (and the reference's) guard for unused codes.

    Args:
      counts: (K,) usage counts (or the mean one-hot ``encodings.mean(0)``).

    Returns:
      Scalar perplexity.

    >>> float(perplexity(jnp.array([5.0, 5.0, 5.0, 5.0])))
    4.0
    >>> float(perplexity(jnp.array([0.0, 7.0, 0.0])))
    1.0
    """
    p = counts / jnp.sum(counts)
    return jnp.exp(-jnp.sum(p * jnp.log(p + 1e-10)))


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared error, ``F.mse_loss(a, b)``.

    >>> float(mse(jnp.array([1.0, 2.0]), jnp.array([1.0, 4.0])))
    2.0
    """
    return jnp.mean((a - b) ** 2)


def vq_loss(z: jax.Array, q: jax.Array, commitment_cost: float) -> jax.Array:
    """The VQ-VAE loss terms of eq. 3: ``mse(q, sg(z)) + beta * mse(sg(q), z)``.

    The first (codebook) term moves codes towards encoder outputs; the second
    (commitment) term keeps encoder outputs near their codes.

    Args:
      z: encoder outputs, any shape.
      q: their nearest codes, same shape.
      commitment_cost: beta.

    Returns:
      Scalar loss.

    >>> float(vq_loss(jnp.zeros(4), jnp.ones(4), 0.25))
    1.25
    """
    return mse(q, sg(z)) + commitment_cost * mse(sg(q), z)


def _check_latents(z: jax.Array, embedding_dim: int) -> None:
    if z.ndim < 2 or z.shape[-1] != embedding_dim:
        raise ValueError(
            f"expected latents of shape (..., {embedding_dim}) (last axis = embedding_dim), "
            f"got shape {tuple(z.shape)} with last dimension {z.shape[-1] if z.ndim else None}. "
            "The pre-quantiser conv must output embedding_dim channels, in NHWC layout."
        )


def assign(z: jax.Array, codebook: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Flatten latents and find each vector's nearest code.

    Args:
      z: (..., D) latents.
      codebook: (K, D) codes.

    Returns:
      ``(flat, dist, idx)``: (N, D) vectors, (N, K) distances, (N,) int32 indices.

    >>> assign(jnp.ones((1, 2, 2, 3)), jnp.eye(3))[2].tolist()
    [0, 0, 0, 0]
    """
    _check_latents(z, codebook.shape[1])
    flat = z.reshape(-1, codebook.shape[1])  # (N, D)
    dist = distances(flat, codebook)  # (N, K)
    idx = nearest_code(dist)  # (N,)
    return flat, dist, idx


def quantize(
    z: jax.Array, codebook: jax.Array, commitment_cost: float, estimator: str = "ste"
) -> QuantizerOutput:
    """Quantise ``z`` to its nearest codes; gradients reach ``z`` through ``estimator``.

    Mirrors the notes' ``VectorQuantizer.forward``: distances, argmin, one-hot
    encodings, ``loss = q_latent_loss + beta * e_latent_loss`` and
    ``quantized = inputs + (quantized - inputs).detach()``.

    Args:
      z: (B, H, W, D) encoder outputs (NHWC; any leading shape works).
      codebook: (K, D) code vectors.
      commitment_cost: beta of the commitment term (the reference uses 0.25).
      estimator: ``"ste"`` (the notes' straight-through) or ``"rotation"`` (the rotation
        trick, :func:`jaxbasics.autodiff.rotation_trick`).

    Returns:
      A :class:`QuantizerOutput`.

    >>> out = quantize(jnp.array([[[[0.9, 0.1]]]]), jnp.array([[1.0, 0.0], [0.0, 1.0]]), 0.25)
    >>> out.indices.tolist(), out.quantized.tolist()
    ([[[0]]], [[[[1.0, 0.0]]]])
    """
    flat, dist, idx = assign(z, codebook)
    num_embeddings = codebook.shape[0]
    q = lookup(codebook, idx).reshape(z.shape)
    return QuantizerOutput(
        quantized=estimator_fn(estimator)(z, q),
        indices=idx.reshape(z.shape[:-1]),
        encodings=one_hot(idx, num_embeddings),
        loss=vq_loss(z, q, commitment_cost),
        perplexity=perplexity(code_counts(idx, num_embeddings)),
        distances=dist,
    )


class Quantizer(nnx.Module):
    """What the VQ-VAE asks of any quantiser besides quantising (``__call__``).

    ``codebook[...]`` is the (K, D) array of codes (a parameter, an EMA statistic, or FSQ's
    fixed grid), :meth:`indices` encodes latents to code indices and :meth:`lookup` decodes
    them: the model's ``encode`` and ``decode_indices``, the figures and the codes'
    fingerprint use only these. ``learned`` says whether training moves the codes. The
    defaults here serve a stored codebook: the nearest code, and a gather.

    >>> vq = VectorQuantizer(4, 2, 0.25, rngs=nnx.Rngs(0))
    >>> z = vq.codebook[...][jnp.array([[3, 1]])][..., None, :]   # (1, 2, 1, 2) latents
    >>> vq.indices(z).tolist(), bool((vq.lookup(vq.indices(z)) == z).all())
    ([[[3], [1]]], True)
    """

    learned: ClassVar[bool] = True
    codebook: Any
    num_embeddings: int  # K

    def indices(self, z: jax.Array) -> jax.Array:
        """(..., D) latents -> (...) int32 index of each vector's code. Updates nothing."""
        _, _, idx = assign(z, self.codebook[...])
        return idx.reshape(z.shape[:-1])

    def lookup(self, indices: jax.Array) -> jax.Array:
        """(...) code indices -> (..., D) code vectors."""
        return lookup(self.codebook[...], indices)


class VectorQuantizer(Quantizer):
    """The notes' ``VectorQuantizer``: a learned codebook trained by the VQ loss.

    Codebook init is uniform(-1/K, 1/K), as in the reference. Loss is
    ``mse(q, sg(z)) + beta * mse(sg(q), z)``.

    Args:
      num_embeddings: K, the number of codes (reference 512).
      embedding_dim: D, the code size (reference 64).
      commitment_cost: beta (reference 0.25).
      estimator: ``"ste"`` (straight-through, the notes') or ``"rotation"``.
      rngs: NNX random streams (``params`` is used).

    >>> vq = VectorQuantizer(8, 4, 0.25, rngs=nnx.Rngs(0))
    >>> vq(jnp.zeros((2, 3, 3, 4))).indices.shape
    (2, 3, 3)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        commitment_cost: float,
        *,
        estimator: str = "ste",
        rngs: nnx.Rngs,
    ):
        k = num_embeddings
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_cost = commitment_cost
        estimator_fn(estimator)
        self.estimator = estimator
        self.codebook = nnx.Param(
            jax.random.uniform(rngs.params(), (k, embedding_dim), minval=-1.0 / k, maxval=1.0 / k)
        )

    def __call__(self, z: jax.Array) -> QuantizerOutput:
        return quantize(z, self.codebook[...], self.commitment_cost, self.estimator)


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
