"""The datasets by name, in-memory copies and the data variance.

The datasets, each in its own module, picked by name with :func:`get_source`:

* ``shapes`` (:mod:`jaxbasics.data.shapes`): embedded, procedurally generated 32x32 images.
* ``cifar10`` (:mod:`jaxbasics.data.cifar10`): real CIFAR-10 from a torchvision folder or TFDS.
* ``folder`` (:mod:`jaxbasics.data.folder`): any folder of images, decoded with Pillow.

For multi-epoch training, :func:`in_memory` reads a source once into an
:class:`~jaxbasics.data.base.ArraySource`; :func:`data_variance` is the notes'
``np.var(train_images / 255)``.

>>> src = get_source("shapes", "train", num_examples=8)
>>> read_batch(src, [0, 3])["image"].shape
(2, 32, 32, 3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from jaxbasics.data.base import (
    ArraySource,
    Batch,
    DatasetNotFoundError,
    Example,
    Source,
    check_index,
    indices_in,
    read_batch,
    split_batch,
)
from jaxbasics.data.cifar10 import cifar10
from jaxbasics.data.folder import folder
from jaxbasics.data.shapes import shapes

# The datasets get_source knows (the --dataset choices).
Dataset = Literal["shapes", "cifar10", "folder"]
DATASETS = get_args(Dataset)


@dataclass(frozen=True)
class _Head:
    """The first ``num_examples`` elements of a source."""

    source: Any
    num_examples: int

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Example:
        return self.source[check_index(index, len(self))]

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return split_batch(self.read_batch(indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        return read_batch(self.source, indices_in(indices, len(self)))


def get_source(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    num_examples: int | None = None,
    seed: int = 0,
    image_size: int = 32,
    eval_fraction: float = 0.1,
) -> Source:
    """Returns the named dataset's split: the CLI's ``--dataset`` / ``--data-dir`` dispatcher.

    Args:
      name: ``"shapes"`` (embedded), ``"cifar10"`` or ``"folder"``.
      split: ``"train"`` or ``"test"``.
      data_dir: where CIFAR-10 lives (see :func:`~jaxbasics.data.cifar10.cifar10`), or the
        folder of images (see :func:`~jaxbasics.data.folder.folder`); ignored by ``shapes``.
      num_examples: ``shapes``: how many images to generate; ``cifar10`` and ``folder``: keep
        only the first ``num_examples`` (for quick runs). None keeps the full split.
      seed: ``shapes`` only: which generated dataset.
      image_size: ``folder`` only: side of the square images.
      eval_fraction: ``folder`` only, flat layout: the share of files in the test split.

    Returns:
      A random-access source of ``{"image": uint8 (S, S, 3), "label": int}``; ``S`` is 32 but
      for ``folder``, where it is ``image_size``.

    >>> len(get_source("shapes", "test", num_examples=10))
    10
    """
    if name == "shapes":
        return shapes(split, num_examples=num_examples, seed=seed)
    if name == "cifar10":
        source = cifar10(split, data_dir=data_dir)
    elif name == "folder":
        if data_dir is None:
            raise DatasetNotFoundError(
                "--dataset folder needs --data-dir: a folder of images (train/<class>/ and "
                "test/<class>/ folders, or images in any tree)."
            )
        source = folder(data_dir, split, image_size=image_size, eval_fraction=eval_fraction)
    else:
        raise ValueError(f"Unknown dataset {name!r}; valid names are {DATASETS}.")
    if num_examples is not None and num_examples < len(source):
        return _Head(source, int(num_examples))
    return source


def in_memory(source: Source, chunk_size: int = 1024) -> ArraySource:
    """Reads a whole source into memory once, so later reads are plain array gathers.

    Worth it whenever training runs for several epochs: CIFAR-10 from TFDS decodes a PNG per
    read and ``shapes`` renders each image on every read (~0.1 ms each), while a gather from
    memory costs microseconds per batch. A 50,000-image split of 32x32x3 uint8 takes 150 MB.

    Args:
      source: any source of ``{"image": uint8, "label": int}``.
      chunk_size: images per batch read while loading.

    Returns:
      An :class:`ArraySource` with the same elements in the same order.

    >>> from jaxbasics.data.shapes import shapes
    >>> src = shapes("test", num_examples=5)
    >>> mem = in_memory(src, chunk_size=2)
    >>> bool((mem.images == src.read_batch(range(5))["image"]).all()), len(mem)
    (True, 5)
    """
    if isinstance(source, ArraySource):
        return source
    parts = [
        read_batch(source, np.arange(start, min(start + chunk_size, len(source))))
        for start in range(0, len(source), chunk_size)
    ]
    if not parts:
        raise ValueError("in_memory got an empty source.")
    images = np.concatenate([p["image"] for p in parts])
    labels = np.concatenate([p["label"] for p in parts]).astype(np.int32)
    return ArraySource(images, labels, name=f"in_memory({source!r})")


def data_variance(source: Source, max_examples: int | None = None, chunk_size: int = 1024) -> float:
    """Returns the variance of the source's pixels scaled to [0, 1], over all pixels and channels.

    The notes' ``np.var(training_data.data / 255.0)``, the normaliser of the VQ-VAE's
    reconstruction error. The images are read in chunks of ``chunk_size`` and reduced to a
    256-bin histogram of pixel values, so the result is exact (float64) with O(chunk) memory.

    Args:
      source: a source of uint8 images (use the train split).
      max_examples: use only the first ``max_examples`` images; None uses all.
      chunk_size: images per batch read.

    Returns:
      The variance as a Python float.

    >>> from jaxbasics.data.shapes import shapes
    >>> src = shapes(num_examples=16)
    >>> images = src.read_batch(range(16))["image"]
    >>> bool(np.isclose(data_variance(src, chunk_size=5), np.var(images / 255.0)))
    True
    """
    n = len(source) if max_examples is None else min(int(max_examples), len(source))
    if n <= 0:
        raise ValueError(f"data_variance needs at least one image, got {n} (len {len(source)}).")
    counts = np.zeros(256, np.int64)
    for start in range(0, n, chunk_size):
        images = read_batch(source, np.arange(start, min(start + chunk_size, n)))["image"]
        if images.dtype != np.uint8:
            raise TypeError(f"data_variance expects uint8 images, got dtype {images.dtype}.")
        counts += np.bincount(images.reshape(-1), minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    mean = (counts * values).sum() / total
    return float((counts * (values - mean) ** 2).sum() / total)
