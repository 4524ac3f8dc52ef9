"""What a prior run draws at each evaluation: the rows of ``samples.png``, one per class, and
a held-out judge's verdict on them (``--judge``: ``class_accuracy`` in ``eval.jsonl``).

The samples are drawn with the run's seed, so every evaluation shows the same draws of the
prior as it learns, and the judged samples are exactly the pictured ones.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxbasics import judge as J
from jaxbasics.data.transforms import to_pixels
from jaxbasics.prior import sample
from jaxbasics.tasks.vqvae.apply import model_fns

# Maps per row of samples.png (and samples judged per class).
SAMPLES_PER_ROW = 8


def sample_rows(
    prior: Any, vqvae: Any, class_names: Any, seed: int
) -> tuple[list[np.ndarray], list[str]]:
    """Rows of decoded samples for a picture: one per class (or two unconditional rows).

    Args:
      prior: a prior; conditional ones sample one row per class.
      vqvae: the VQ-VAE whose decoder turns codes into images.
      class_names: the classes' names (titles).
      seed: the samples' key: the same seed draws the same rows.

    Returns:
      ``(rows, titles)``: (SAMPLES_PER_ROW, H, W, 3) image rows in [-0.5, 0.5], titles.
    """
    classes = prior.num_classes
    key = jax.random.key(seed)
    if classes:
        labels = np.repeat(np.arange(classes), SAMPLES_PER_ROW)
        titles = [str(n) for n in class_names][:classes]
    else:
        labels, titles = None, []
    n = len(labels) if labels is not None else 2 * SAMPLES_PER_ROW
    allowed = vqvae.allowed_codes(prior.height, prior.width)  # a palette's rows: their own
    codes = sample(prior, n, key, labels=labels, allowed=allowed)
    images = np.asarray(model_fns(vqvae).decode(np.asarray(codes)))
    return list(images.reshape(-1, SAMPLES_PER_ROW, *images.shape[1:])), titles


def class_accuracy(judge: J.Judge, rows: list[np.ndarray]) -> float:
    """The share of :func:`sample_rows`' class rows (row c drawn for class c) that ``judge``
    recognises as their row's class.

    >>> from flax import nnx
    >>> judge = J.Judge(2, width=4, rngs=nnx.Rngs(0))
    >>> 0.0 <= class_accuracy(judge, [np.zeros((8, 8, 8, 3))] * 2) <= 1.0
    True
    """
    images = to_pixels(np.concatenate(rows))
    labels = np.repeat(np.arange(len(rows)), len(rows[0]))
    return J.accuracy(judge, images, labels)


def judge_of(loaded: tuple[J.Judge, dict], folder: str, class_names: Any) -> J.Judge:
    """The judge :func:`~jaxbasics.judge.load_judge` read from ``folder``, if it knows
    exactly ``class_names``.

    >>> from flax import nnx
    >>> judge_of((J.Judge(2, rngs=nnx.Rngs(0)), {"classes": ["a", "b"]}), "j", ["a", "c"])
    Traceback (most recent call last):
    ...
    ValueError: --judge j knows the classes ['a', 'b']..., not these codes' ['a', 'c']...: ...

    Raises:
      ValueError: a judge of other classes (one line).
    """
    judge, meta = loaded
    names = [str(n) for n in class_names]
    if meta["classes"] != names:
        raise ValueError(
            f"--judge {folder} knows the classes {meta['classes'][:3]}..., not these codes' "
            f"{names[:3]}...: make a judge of --model's dataset with experiments/judge.py."
        )
    return judge
