"""The VQ-VAE's second stage: learned priors over its code maps, and compiled sampling.

A VQ-VAE is trained in two stages. Stage one (:mod:`jaxbasics.vqvae`) learns an encoder
that maps a 32x32 image to an 8x8 map of discrete codes in [0, K), and a decoder back. Its
training assumes a uniform prior over codes, so sampling codes independently and uniformly
decodes to noise. Stage two, here, fits an autoregressive prior
p(codes) = prod_i p(code_i | codes < i) (optionally given a class label) to the code maps
of the training images; sampling it and decoding the codes generates new images.

Two floors tell whether a prior has learned anything, in bits per code
(:func:`bits_per_code`, :func:`nll_bits`):

* a uniform prior costs log2 K bits per code (9 for K = 512, 10 for K = 1024);
* a prior that only knows how often each code is used costs the entropy of the code
  frequencies, ``-sum_k p_k log2 p_k`` (``log2`` of the quantiser's perplexity). This is the
  floor a prior must beat by learning structure: which codes follow which, where.

The priors: :class:`PixelCNNPrior`, the gated PixelCNN of the VQ-VAE paper,
:class:`TransformerPrior`, a causal transformer with a key/value cache, and
:class:`MaskGITPrior`, a bidirectional transformer that fills in hidden codes in a few
parallel steps (not autoregressive: it has no exact likelihood). All take
``(codes (B, h, w), labels (B,) | None)`` and return (B, h, w, K) logits, and have
``loss(codes, labels, key)``; class-conditional ones are trained with :func:`drop_labels`
for classifier-free guidance in :func:`sample`.

>>> import jax.numpy as jnp
>>> from jaxbasics.prior import bits_per_code
>>> codes = jnp.zeros((1, 8, 8), jnp.int32)
>>> float(bits_per_code(jnp.zeros((1, 8, 8, 512)), codes))  # uniform over K = 512
9.0
"""

from jaxbasics.prior.common import bits_per_code, cross_entropy, drop_labels
from jaxbasics.prior.maskgit import MaskGITPrior
from jaxbasics.prior.pixelcnn import PixelCNNPrior
from jaxbasics.prior.sampling import nll_bits, sample
from jaxbasics.prior.transformer import TransformerPrior

__all__ = [
    "MaskGITPrior",
    "PixelCNNPrior",
    "TransformerPrior",
    "bits_per_code",
    "cross_entropy",
    "drop_labels",
    "nll_bits",
    "sample",
]
