"""What both priors share: class labels with a null token, and the losses in nats and bits.

A prior with ``num_classes = C > 0`` takes labels in [0, C); the index C is the *null*
label ("no class"). Calling a prior with ``labels=None`` uses the null label, so one network
is both the conditional and the unconditional model that classifier-free guidance needs
(Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022), once it has been trained with
:func:`drop_labels`. A prior with ``num_classes = 0`` is unconditional: its only "label" is
the null one, a learned start token or bias.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from jaxbasics import checks


def label_ids(labels: jax.Array | None, batch: int, num_classes: int) -> jax.Array:
    """(B,) int32 label indices for a prior: ``labels``, or the null label C when None.

    Args:
      labels: (B,) int labels in [0, C), or None for "no class".
      batch: B.
      num_classes: C; 0 for an unconditional prior, which refuses labels.

    Raises:
      ValueError: labels given to an unconditional prior, or labels that are not B integers
        in [0, C) (values are checked where they are known, outside ``jit``).

    >>> label_ids(None, 2, 10).tolist(), label_ids(jnp.array([3, 7]), 2, 10).tolist()
    ([10, 10], [3, 7])
    >>> label_ids([3, -1], 2, 10)
    Traceback (most recent call last):
    ...
    ValueError: labels must be integers in [0, 10), got -1.
    """
    if labels is None:
        return jnp.full((batch,), num_classes, jnp.int32)
    if num_classes == 0:
        raise ValueError("this prior is unconditional (num_classes=0); call it with labels=None.")
    return checks.indices("labels", labels, num_classes, shape=(batch,))


def drop_labels(
    labels: jax.Array, key: jax.Array, *, num_classes: int, rate: float = 0.1
) -> jax.Array:
    """Replace each label by the null label ``num_classes`` with probability ``rate``.

    Training on such labels teaches the prior the unconditional distribution too, which
    classifier-free guidance needs (Ho & Salimans 2022 drop 10-20% of the labels).

    Args:
      labels: (B,) int labels in [0, num_classes).
      key: PRNG key.
      num_classes: C, whose index is the null label.
      rate: probability of dropping each label.

    Returns:
      (B,) int32 labels.

    >>> drop_labels(jnp.arange(4), jax.random.key(0), num_classes=10, rate=1.0).tolist()
    [10, 10, 10, 10]
    """
    labels = jnp.asarray(labels, jnp.int32)
    drop = jax.random.bernoulli(key, rate, labels.shape)
    return jnp.where(drop, num_classes, labels)


def _nats(logits: jax.Array, codes: jax.Array) -> jax.Array:
    """(B, ...) logits (..., K) and codes -> (B,) mean negative log-likelihood per code."""
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), codes)
    return nll.reshape(nll.shape[0], -1).mean(axis=1)


class Autoregressive:
    """What the autoregressive priors share: every code is scored given the codes before it,
    so their loss is the exact negative log-likelihood (a masked prior's is not)."""

    def loss(
        self,
        codes: jax.Array,
        labels: jax.Array | None,
        key: jax.Array | None = None,
        *,
        per_example: bool = False,
    ) -> jax.Array:
        """The training loss: :func:`cross_entropy` of all codes in nats (``key`` unused).

        Args:
          codes: (B, h, w) int codes in [0, K).
          labels: (B,) int labels, or None (the null label).
          key: unused (a masked prior draws its masks with it).
          per_example: (B,) values instead of their mean.
        """
        nats = _nats(self(codes, labels), codes)  # type: ignore[operator]
        return nats if per_example else nats.mean()


def cross_entropy(logits: jax.Array, codes: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of ``codes`` in nats: ``F.cross_entropy(logits, codes)``.

    Args:
      logits: (B, h, w, K) prior logits (any (..., K)).
      codes: (B, h, w) int codes (the logits' shape without K).

    Returns:
      Scalar float32.

    >>> float(cross_entropy(jnp.zeros((1, 2, 2, 4)), jnp.zeros((1, 2, 2), jnp.int32)))
    1.386...
    """
    return _nats(logits, codes).mean()


def bits_per_code(logits: jax.Array, codes: jax.Array, *, per_example: bool = False) -> jax.Array:
    """Negative log2-likelihood per code: :func:`cross_entropy` / ln 2.

    A uniform prior scores log2 K bits per code, e.g. 10 for K = 1024.

    Args:
      logits: (B, h, w, K) prior logits.
      codes: (B, h, w) int codes.
      per_example: return one value per example (B,) instead of the mean.

    Returns:
      Scalar, or (B,) float32 with ``per_example``.

    >>> float(bits_per_code(jnp.zeros((1, 2, 2, 1024)), jnp.zeros((1, 2, 2), jnp.int32)))
    10.0
    """
    bits = _nats(logits, codes) / math.log(2.0)
    return bits if per_example else bits.mean()
