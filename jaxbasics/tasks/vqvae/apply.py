"""A trained model on many images: compiled ``encode`` and ``decode``, run in padded batches.

What ``experiments/reconstruct.py``, ``encode.py``, ``decode.py`` and ``sample.py`` are made of.
The model runs through two compiled functions (:func:`model_fns`), ``encode`` (images -> code
maps) and ``decode`` (code maps -> images), on batches of a fixed size (the last one padded),
grouped by image size in order of first appearance. A reconstruction is
``decode(encode(x))``, so decoding the codes ``encode.py`` stored gives exactly, bit for bit,
what ``reconstruct.py`` shows. :func:`gather_inputs` finds and reads a script's input images
after checking its ``--out`` (:func:`~jaxbasics.train.files.check_out`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from jaxbasics.data.images import MAX_PIXELS, InputImage, find_images, read_inputs
from jaxbasics.train.files import check_out

BATCH = 32


class ModelFns(NamedTuple):
    """The two compiled functions of a loaded model (see :func:`model_fns`)."""

    encode: Callable[[np.ndarray], jax.Array]
    decode: Callable[[np.ndarray], jax.Array]


def model_fns(model: Any) -> ModelFns:
    """``encode(images) -> codes`` and ``decode(codes) -> images``, jit-compiled once."""
    graphdef, state = nnx.split(model)
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x))
    decode = jax.jit(lambda s, c: nnx.merge(graphdef, s).decode_indices(c))
    return ModelFns(lambda x: encode(state, x), lambda c: decode(state, c))


def batches(
    shapes: Sequence[tuple[int, ...]], size: int = BATCH, budget: int | None = None
) -> Iterator[list[int]]:
    """Index batches: same-shape items together (groups in order of first appearance), at
    most ``size`` each, items in input order within a group. With ``budget``, a group's
    batches hold at most ``budget // (h * w)`` items (at least one), ``(h, w)`` being the
    first two sides of its shape, so large images go through in small batches.

    >>> list(batches([(4, 4), (8, 8), (4, 4), (4, 4)], size=2))
    [[0, 2], [3], [1]]
    >>> list(batches([(4, 4), (8, 8), (4, 4), (8, 8)], size=4, budget=64))
    [[0, 2], [1], [3]]
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    for shape, members in groups.items():
        n = batch_rows(shape, size, budget)
        for start in range(0, len(members), n):
            yield members[start : start + n]


def batch_rows(shape: tuple[int, ...], size: int = BATCH, budget: int | None = None) -> int:
    """How many items of ``shape`` one batch holds (see :func:`batches`)."""
    if budget is None:
        return size
    return max(1, min(size, budget // max(1, math.prod(shape[:2]))))


# Pixels per encode batch: 32 images of 64x64. Bigger images go through fewer at a time, so
# memory stays about that of a 64x64 batch (a 1024x768 photo alone, not padded to 32 copies).
PIXEL_BUDGET = BATCH * 64 * 64
# The same for decode batches, counted in code positions (one per 4x4 pixels).
CODE_BUDGET = PIXEL_BUDGET // 16


class Batched(NamedTuple):
    """One batch of :func:`each_batch`: which items it held, and their results in that order."""

    members: list[int]
    results: np.ndarray


def each_batch(
    fn: Callable[[np.ndarray], jax.Array],
    items: Sequence[np.ndarray],
    *,
    size: int = BATCH,
    budget: int | None = None,
    progress: bool = False,
    desc: str = "",
) -> Iterator[Batched]:
    """``fn`` over ``items`` in padded batches, one :class:`Batched` at a time (so a caller that
    writes each batch's results keeps no more than one batch in memory).

    Items of one shape go in batches of exactly :func:`batch_rows` ``(shape, size, budget)``
    rows (the last is padded with copies of its first item; padding rows are dropped from the
    results), so every image of a given size goes through one and the same compiled program,
    whatever the other images.

    >>> [b.members for b in each_batch(lambda x: x, [np.zeros(2), np.zeros(3), np.ones(2)])]
    [[0, 2], [1]]
    """
    from tqdm.auto import tqdm

    groups = list(batches([x.shape for x in items], size, budget))
    for members in tqdm(groups, desc=desc, unit="batch", disable=not progress):
        rows = batch_rows(items[members[0]].shape, size, budget)
        stack = np.stack([items[i] for i in members])
        if len(members) < rows:
            stack = np.concatenate([stack, np.repeat(stack[:1], rows - len(members), 0)])
        yield Batched(members, np.asarray(fn(stack))[: len(members)])


def run_batched(
    fn: Callable[[np.ndarray], jax.Array], items: Sequence[np.ndarray], **kwargs: Any
) -> list[np.ndarray]:
    """``fn`` over ``items`` in padded batches (:func:`each_batch`); one result per item, in
    order.

    >>> [r.tolist() for r in run_batched(lambda x: 2 * x, [np.ones(2), np.ones(3)], size=4)]
    [[2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    out: list[Any] = [None] * len(items)
    for members, results in each_batch(fn, items, **kwargs):
        for i, result in zip(members, results, strict=True):
            out[i] = result
    return out


def gather_inputs(
    inputs: Sequence[str | Path],
    out: str | Path,
    model: str | Path,
    *,
    resize: int | None = None,
    center_crop: int | None = None,
    max_pixels: int = MAX_PIXELS,
    outputs: Callable[[list[InputImage]], list[str]] | None = None,
) -> tuple[list[InputImage], list[np.ndarray]]:
    """The image files under ``inputs`` and their uint8 (H, W, 3) pixels, read once ``out`` has
    passed :func:`~jaxbasics.train.files.check_out` against them and the ``model`` path.

    ``out`` is the file a script writes, or, with ``outputs``, the folder of the files
    ``outputs(images)`` names; images already under that folder are not read as inputs.

    Raises:
      OSError, ValueError: a missing input, an unreadable image, or an ``out`` that could
        overwrite an input (one line each).
    """
    given = [*inputs, model]
    # Checked before listing too: skipping out's contents would hide the inputs it holds.
    check_out(out, given, [] if outputs else None)
    images = find_images(inputs, exclude=out if outputs else None)
    given += [i.path for i in images]
    check_out(out, given, outputs(images) if outputs else None)
    pixels = read_inputs(images, resize=resize, center_crop=center_crop, max_pixels=max_pixels)
    return images, pixels
