"""A held-out judge of "does this image show its class": a small classifier and its accuracy.

Generated images are judged by a classifier trained on the dataset's *real* training images
only, and never used to train or tune a generator (it stays held out). Its accuracy on three
sets tells how well a class-conditional generator works:

* real test images: the judge's own skill (the scale of the other two);
* the VQ-VAE's reconstructions of them: the tokenizer's ceiling, since samples are decoded by
  the same decoder and can hardly show more than reconstructions do;
* class-conditional samples: the share recognised as the class they were asked for.

This is the classification accuracy of generated samples (e.g. the "Inception accuracy" of
class-conditional GANs); training a classifier on samples and testing it on real images is
its converse, the Classification Accuracy Score of Ravuri & Vinyals (2019).

:class:`Judge` is a small all-convolutional network (any image size: it pools globally);
:func:`train_judge` fits it with Adam and cross-entropy, ``torch.nn.CrossEntropyLoss``;
:func:`predict` and :func:`accuracy` apply it in batches; :func:`judge_files` and
:func:`load_judge` keep one in a folder (``experiments/judge.py``'s ``--judge``).

>>> judge = Judge(10, width=4, rngs=nnx.Rngs(0))  # train_judge(images, labels, 10) fits one
>>> images, labels = np.zeros((5, 32, 32, 3), np.uint8), np.arange(5)
>>> predict(judge, images).shape, 0.0 <= accuracy(judge, images, labels) <= 1.0
((5,), True)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxbasics import checks
from jaxbasics.data.transforms import to_model_input

__all__ = [
    "Judge",
    "accuracy",
    "judge_files",
    "load_judge",
    "per_class_accuracy",
    "predict",
    "train_judge",
]

# A judge's folder: its settings (written last: a folder without them holds no judge) and
# its weights.
META, WEIGHTS = "judge.json", "weights.msgpack"

# Images per forward when predicting: bounds the memory of a large set.
PREDICT_BATCH = 500


class Judge(nnx.Module):
    """Five 3x3 conv-BatchNorm-GELU layers at three widths (two strided), then the mean and
    the max over positions (a small shape anywhere counts) and a linear head.

    Args:
      num_classes: C, the logits' width.
      width: channels of the first layer (then 2x and 4x).
      rngs: NNX random streams.

    >>> judge = Judge(10, width=8, rngs=nnx.Rngs(0))
    >>> judge.eval(); judge(jnp.zeros((2, 32, 32, 3))).shape
    (2, 10)
    """

    def __init__(self, num_classes: int, *, width: int = 16, rngs: nnx.Rngs):
        self.num_classes, self.width = num_classes, width
        chans = [3, width, 2 * width, 2 * width, 4 * width, 4 * width]
        strides = [1, 2, 1, 2, 1]
        self.convs = nnx.List(
            nnx.Conv(a, b, (3, 3), strides=s, use_bias=False, rngs=rngs)
            for a, b, s in zip(chans[:-1], chans[1:], strides, strict=True)
        )
        self.norms = nnx.List(nnx.BatchNorm(b, momentum=0.9, rngs=rngs) for b in chans[1:])
        self.head = nnx.Linear(8 * width, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) images in [-0.5, 0.5] -> (B, C) logits."""
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = jax.nn.gelu(norm(conv(x)))
        return self.head(jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1))


def _checked(images: Any, labels: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or not images.size:
        raise ValueError(
            f"images must be (N, H, W, 3) uint8 pixels with N, H, W >= 1, got {images.shape} "
            f"{images.dtype}."
        )
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be {len(images)} integers, got {labels.shape} {labels.dtype}."
        )
    if len(labels) and not (0 <= labels.min() and labels.max() < num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"labels must be in [0, {num_classes}), got {bad}.")
    return images, labels.astype(np.int32)


def train_judge(
    images: Any,
    labels: Any,
    num_classes: int,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    width: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> Judge:
    """Fit a :class:`Judge` to real images: Adam, cosine-decayed rate, random horizontal flips.

    Args:
      images: (N, H, W, 3) uint8 training images (real ones only: the judge stays held out).
      labels: (N,) int labels in [0, num_classes).
      num_classes: C.
      steps: training steps; each draws ``batch_size`` images (with replacement).
      batch_size: images per step.
      learning_rate: Adam's peak rate.
      width: the judge's first width.
      seed: the initialisation's and the batches' seed: the same seed, the same judge.
      progress: show a tqdm bar.

    Returns:
      The trained judge.

    Raises:
      ValueError: images or labels of the wrong shape, dtype or range; steps, batch_size or
        width not a positive integer; a learning rate not finite and > 0 (one line each).
    """
    images, labels = _checked(images, labels, num_classes)
    steps, batch_size = checks.count("steps", steps), checks.count("batch_size", batch_size)
    width = checks.count("width", width)
    if not (isinstance(learning_rate, int | float) and 0 < learning_rate < math.inf):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}.")
    judge = Judge(num_classes, width=width, rngs=nnx.Rngs(seed))
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    optimizer = nnx.Optimizer(judge, tx, wrt=nnx.Param)

    @nnx.jit
    def step(judge: Judge, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> None:
        def loss_fn(judge: Judge) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(judge(x), y).mean()

        optimizer.update(judge, nnx.grad(loss_fn)(judge))

    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    judge.train()
    for _ in tqdm(range(steps), desc="train judge", unit="step", disable=not progress):
        idx = rng.integers(0, len(images), batch_size)
        x = images[idx]
        flip = rng.random(batch_size) < 0.5
        x[flip] = x[flip, :, ::-1]
        step(judge, optimizer, to_model_input(x), labels[idx])
    judge.eval()
    return judge


@nnx.jit
def _logits(judge: Judge, x: jax.Array) -> jax.Array:
    return judge(x)


def predict(judge: Judge, images: Any) -> np.ndarray:
    """(N,) int predicted classes of (N, H, W, 3) uint8 images, in batches.

    >>> judge = Judge(3, width=4, rngs=nnx.Rngs(0))
    >>> predict(judge, np.zeros((5, 8, 8, 3), np.uint8)).shape
    (5,)
    """
    images = np.asarray(images)
    judge.eval()
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be (N, H, W, 3) uint8 pixels, got {images.shape} {images.dtype}."
        )
    out = []
    for start in range(0, len(images), PREDICT_BATCH):
        chunk = images[start : start + PREDICT_BATCH]
        out.append(np.asarray(_logits(judge, to_model_input(chunk))).argmax(-1))
    return np.concatenate(out) if out else np.zeros((0,), np.int64)


def accuracy(judge: Judge, images: Any, labels: Any) -> float:
    """The share of ``images`` the judge classifies as their ``labels``.

    Raises:
      ValueError: images or labels of the wrong shape, dtype or range, or no images.
    """
    images, labels = _checked(images, labels, judge.num_classes)
    return float(np.mean(predict(judge, images) == labels))


def per_class_accuracy(judge: Judge, images: Any, labels: Any) -> dict[int, float]:
    """:func:`accuracy` for each class present in ``labels``.

    >>> judge = Judge(3, width=4, rngs=nnx.Rngs(0))
    >>> sorted(per_class_accuracy(judge, np.zeros((4, 8, 8, 3), np.uint8), [0, 0, 2, 2]))
    [0, 2]
    """
    images, labels = _checked(images, labels, judge.num_classes)
    right = predict(judge, images) == labels
    return {int(c): float(right[labels == c].mean()) for c in np.unique(labels)}


def judge_files(judge: Judge, meta: dict[str, Any]) -> dict[str, bytes]:
    """What a judge's folder holds, in the order to write it: ``{WEIGHTS: ..., META: ...}``,
    the weights (Flax msgpack) and the settings ``meta`` (JSON; e.g. the dataset and the
    class names) with the judge's width added. Write each atomically, the settings last, so
    that an interrupted save leaves a folder :func:`load_judge` calls empty.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> judge = Judge(3, width=4, rngs=nnx.Rngs(0))
    >>> for name, content in judge_files(judge, {"classes": ["a", "b", "c"]}).items():
    ...     _ = (folder / name).write_bytes(content)
    >>> judge, meta = load_judge(folder)
    >>> judge.num_classes, judge.width, meta["classes"]
    (3, 4, ['a', 'b', 'c'])
    """
    weights = flax.serialization.to_bytes(nnx.state(judge).to_pure_dict())
    return {WEIGHTS: weights, META: json.dumps(meta | {"width": judge.width}, indent=1).encode()}


# The widest judge a judge.json may ask for (the default is 16).
MAX_WIDTH = 1024


def load_judge(folder: str | Path) -> tuple[Judge, dict[str, Any]]:
    """The judge kept in ``folder`` (:func:`judge_files`), in eval mode, and its settings.

    >>> load_judge("no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no/such/folder holds no judge (no judge.json): ...

    Raises:
      FileNotFoundError: ``folder`` holds no judge.
      ValueError: ``folder`` is a file, or its files are damaged or do not match each other
        (one line, saying to delete the folder).
    """
    folder = Path(folder)
    if folder.is_file():
        raise ValueError(f"{folder} is a file; a judge is a folder, as judge.py --judge makes.")
    if not (folder / META).exists():
        raise FileNotFoundError(
            f"{folder} holds no judge (no {META}): judge.py --judge FOLDER makes one."
        )
    damaged = f"delete {folder} and judge.py trains the judge again."
    try:
        meta = json.loads((folder / META).read_text())
        width, classes = meta["width"], meta["classes"]
        if not (type(width) is int and 1 <= width <= MAX_WIDTH):
            raise ValueError
        if not (isinstance(classes, list) and len(classes) >= 2):
            raise ValueError
        if not all(isinstance(c, str) for c in classes):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise ValueError(f"{folder / META} is damaged; {damaged}") from None
    judge = Judge(len(classes), width=width, rngs=nnx.Rngs(0))
    state = nnx.state(judge)
    target = state.to_pure_dict()
    try:
        saved = flax.serialization.from_bytes(target, (folder / WEIGHTS).read_bytes())
        same = jax.tree.map(lambda a, b: np.shape(a) == np.shape(b), target, saved)
    except Exception as e:  # any damage to the file: one line, and how to get a new one
        raise ValueError(
            f"{folder / WEIGHTS} is unreadable ({type(e).__name__}); {damaged}"
        ) from None
    if not all(jax.tree.leaves(same)):
        raise ValueError(f"{folder / WEIGHTS} holds another judge than {META} describes; {damaged}")
    state.replace_by_pure_dict(saved)
    nnx.update(judge, state)
    judge.eval()
    return judge, meta
