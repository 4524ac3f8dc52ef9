"""What every image source is: the element and batch types, the protocol, index checks, arrays.

A source is what Grain calls a random-access data source (``len(source)``, ``source[i]``,
``source.__getitems__(indices)``), plus a vectorised ``source.read_batch(indices)``. Elements are
``{"image": uint8 (H, W, 3) NHWC, "label": int}``; batches from :func:`read_batch` are
``{"image": uint8 (B, H, W, 3), "label": int32 (B,)}``. NCHW data is converted to NHWC where it
is read, exactly once. The datasets (:mod:`~jaxbasics.data.shapes`,
:mod:`~jaxbasics.data.cifar10`, :mod:`~jaxbasics.data.folder`) build on these;
:func:`~jaxbasics.data.sources.get_source` picks one by name.

>>> src = ArraySource(np.zeros((3, 2, 2, 3), np.uint8), np.arange(3, dtype=np.int32))
>>> read_batch(src, [2, 0])["label"].tolist()
[2, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

import numpy as np

SPLITS = ("train", "test")


class Example(TypedDict):
    """One element of a source."""

    image: np.ndarray  # (H, W, 3) uint8, NHWC; 32x32 except for folder data
    label: int


class Batch(TypedDict):
    """A batch read with :func:`read_batch`."""

    image: np.ndarray  # (B, H, W, 3) uint8
    label: np.ndarray  # (B,) int32


class Source(Protocol):
    """A random-access source of :class:`Example` (Grain's ``RandomAccessDataSource``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they were looked for; the message says how to get them."""


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")


def check_index(index: int, length: int) -> int:
    index = int(index)
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for a source of length {length}.")
    return index % length


def indices_in(indices: Sequence[int] | np.ndarray, length: int) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < -length or idx.max() >= length):
        bad = idx[(idx < -length) | (idx >= length)][0]
        raise IndexError(f"index {bad} is out of range for a source of length {length}.")
    return idx % max(length, 1)


def split_batch(batch: Batch) -> list[Example]:
    return [
        {"image": image, "label": int(label)}
        for image, label in zip(batch["image"], batch["label"], strict=True)
    ]


@dataclass(frozen=True)
class ArraySource:
    """A source over in-memory NHWC arrays (what :func:`in_memory` and CIFAR-10 pickles give)."""

    images: np.ndarray = field(repr=False)  # (N, H, W, 3) uint8
    labels: np.ndarray = field(repr=False)  # (N,) int32
    name: str = "arrays"

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(
                f"ArraySource expects uint8 NHWC images (N, H, W, 3), got {self.images.dtype} "
                f"{self.images.shape}. NCHW arrays convert with x.transpose(0, 2, 3, 1)."
            )
        if self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"ArraySource got {len(self.images)} images but labels of shape "
                f"{self.labels.shape}; pass one label per image."
            )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Example:
        i = check_index(index, len(self))
        return {"image": self.images[i], "label": int(self.labels[i])}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return split_batch(self.read_batch(indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        idx = indices_in(indices, len(self))
        return {"image": self.images[idx], "label": self.labels[idx].astype(np.int32)}


def read_batch(source: Source, indices: Sequence[int] | np.ndarray) -> Batch:
    """Reads the elements at ``indices`` and stacks them into one batch.

    Uses the source's vectorised ``read_batch`` when it has one, else Grain's batch-read protocol
    ``__getitems__``, else one ``source[i]`` at a time, so any Grain-style source of
    ``{"image", "label"}`` dicts works.

    Args:
      source: a random-access source.
      indices: ``(B,)`` integer indices.

    Returns:
      ``{"image": uint8 (B, H, W, C), "label": int32 (B,)}``.

    >>> read_batch([{"image": np.zeros((2, 2, 3), np.uint8), "label": 7}], [0, 0])["label"]
    array([7, 7], dtype=int32)
    """
    if hasattr(source, "read_batch"):
        return source.read_batch(indices)
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if hasattr(source, "__getitems__"):
        records = source.__getitems__(idx)
    else:
        records = [source[i] for i in idx]
    return {
        "image": np.stack([np.asarray(r["image"]) for r in records]),
        "label": np.asarray([r["label"] for r in records], dtype=np.int32),
    }
