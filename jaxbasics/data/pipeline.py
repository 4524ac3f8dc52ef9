"""Grain input pipelines: shuffled, sharded, batched training data and padded evaluation passes.

Both pipelines pick a whole batch of indices first and then read and transform it at once: sources
render or gather a whole batch with a few vectorised NumPy ops, and the transform (by default the
notes' ``x / 255 - 0.5``) runs once per batch, not once per image. Batches are
``{"image": float32 (B, H, W, 3), "label": int32 (B,)}`` (plus ``"mask"`` for evaluation);
a source with other fields (a prior's ``{"codes", "label"}``) gets them batched untransformed.

The training iterator is checkpointable. Its state is a small JSON-able dict, in Grain 0.2.18
``{"next_index": k}`` where ``k`` is the number of batches already produced, i.e. the step:

>>> import json
>>> from jaxbasics.data.shapes import shapes
>>> ds = train_dataset(shapes(num_examples=32), batch_size=8, seed=0)
>>> it = iter(ds)
>>> first = next(it)
>>> state = json.dumps(it.get_state())  # save this next to the model checkpoint
>>> resumed = iter(ds)
>>> resumed.set_state(json.loads(state))
>>> bool((next(resumed)["image"] == next(it)["image"]).all())
True

Reads run in threads (``grain.ReadOptions``), never in worker processes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxbasics.data.base import Source, read_batch
from jaxbasics.data.transforms import cifar_transform

if TYPE_CHECKING:
    import grain

Transform = Callable[[np.ndarray], np.ndarray]

# Two threads match the two cores of a small machine; each prefetched element is a whole batch,
# so a buffer of 4 holds 4 batches (Grain's default of 500 would hold 500).
DEFAULT_NUM_THREADS = 2
DEFAULT_PREFETCH = 4


def _read_options(num_threads: int, prefetch: int) -> grain.ReadOptions:
    import grain

    return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)


def _check_sharding(batch_size: int, process_index: int, process_count: int) -> int:
    """Returns the per-process batch size."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index must be in [0, process_count), got process_index={process_index}, "
            f"process_count={process_count}. Use jax.process_index() and jax.process_count()."
        )
    if batch_size < 1 or batch_size % process_count:
        raise ValueError(
            f"batch_size is the global batch and must be a positive multiple of process_count; "
            f"got batch_size={batch_size}, process_count={process_count}. Use a batch_size "
            f"divisible by {process_count}, e.g. {_round_up(batch_size, process_count)}."
        )
    return batch_size // process_count


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of epoch ``epoch``: a permutation of ``range(n)`` drawn from (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False  # cached and shared between reader threads
    return order


@dataclass(frozen=True)
class _ReadTrainBatch:
    """Global step -> this process's slice of that step's batch, read and transformed."""

    source: Source
    transform: Transform
    seed: int
    batch_size: int
    start: int
    stop: int

    def __call__(self, step: int, step_in_epoch: int) -> dict[str, np.ndarray]:
        epoch = step // (len(self.source) // self.batch_size)
        order = _epoch_permutation(self.seed, epoch, len(self.source))
        first = step_in_epoch * self.batch_size
        indices = order[first + self.start : first + self.stop]  # (b,) of the global batch
        return _transformed(read_batch(self.source, indices), self.transform)


@dataclass(frozen=True)
class _ReadPaddedBatch:
    """Number of a global eval batch -> this process's slice, padded and masked."""

    source: Source
    transform: Transform
    batch_size: int
    start: int
    stop: int

    def __call__(self, batch_number: int) -> dict[str, np.ndarray]:
        indices = batch_number * self.batch_size + np.arange(self.start, self.stop)
        mask = indices < len(self.source)
        # A slice that is all padding still reads example 0, for the fields' shapes and dtypes.
        real = read_batch(self.source, indices[mask] if mask.any() else [0])
        padded = {}
        for name, values in real.items():
            padded[name] = np.zeros((len(indices), *values.shape[1:]), values.dtype)
            if mask.any():
                padded[name][mask] = values
        return {**_transformed(padded, self.transform), "mask": mask}


def _transformed(batch: dict[str, np.ndarray], transform: Transform) -> dict[str, np.ndarray]:
    """The batch with ``transform`` applied to its images; other fields (labels, a prior's
    code maps) pass through as they are."""
    return {k: transform(v) if k == "image" else v for k, v in batch.items()}


def train_dataset(
    source: Source,
    *,
    batch_size: int,
    seed: int,
    transform: Transform | None = None,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = DEFAULT_NUM_THREADS,
    prefetch: int = DEFAULT_PREFETCH,
) -> grain.IterDataset:
    """Returns an endless, shuffled stream of training batches, like ``DataLoader(shuffle=True)``.

    Mirrors ``DataLoader(dataset, batch_size, shuffle=True, drop_last=True)`` iterated forever:

    * every epoch is a new permutation of the whole source, drawn from ``(seed, epoch)`` with
      ``np.random.default_rng``, so different seeds give unrelated orders;
    * batches never straddle epochs, and the last ``len(source) % batch_size`` examples of each
      epoch's permutation are dropped (``drop_remainder=True``), so every batch has one shape;
    * ``transform`` runs once per batch, on the uint8 ``(b, H, W, 3)`` images;
    * with several processes, every process draws the same global batch of ``batch_size``
      indices and reads only its own contiguous ``batch_size // process_count`` of them: shards
      are disjoint, together they are exactly the single-process batch, and all processes take
      the same number of steps per epoch.

    Args:
      source: a random-access source of ``{"image": uint8, "label": int}``.
      batch_size: the global batch size, across all processes.
      seed: the data-order seed (any non-negative integer).
      transform: maps a uint8 image batch to model input; default ``x / 255 - 0.5``.
      process_index: this process, ``jax.process_index()``.
      process_count: number of processes, ``jax.process_count()``; must divide ``batch_size``.
      num_threads: threads reading and transforming batches ahead of time.
      prefetch: number of batches read ahead.

    Returns:
      A ``grain.IterDataset`` of ``{"image": float32 (b, H, W, 3), "label": int32 (b,)}`` with
      ``b = batch_size // process_count``. ``iter(ds)`` gives a checkpointable iterator; see the
      module docstring.

    >>> from jaxbasics.data.shapes import shapes
    >>> it = iter(train_dataset(shapes(num_examples=20), batch_size=8, seed=1))
    >>> batch = next(it)
    >>> batch["image"].shape, batch["image"].dtype, batch["label"].dtype
    ((8, 32, 32, 3), dtype('float32'), dtype('int32'))
    """
    import grain

    local = _check_sharding(batch_size, process_index, process_count)
    if len(source) < batch_size:
        raise ValueError(
            f"The source has {len(source)} examples, fewer than one batch of {batch_size}; "
            "with drop_remainder=True no batch could be made. Lower batch_size or use more data."
        )
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    read = _ReadTrainBatch(
        source,
        cifar_transform() if transform is None else transform,
        int(seed),
        batch_size,
        process_index * local,
        (process_index + 1) * local,
    )
    # Grain's own `.shuffle(seed).batch(...)` also reshuffles every epoch (with seed + epoch),
    # but it shuffles and batches one index at a time in Python: ~9 ms of GIL-bound work per
    # batch of 256 here, more than reading the batch. One vectorised permutation per epoch costs
    # ~1 ms per epoch instead. Grain still does the iteration, threads, prefetch and state.
    steps_per_epoch = len(source) // batch_size
    ds = grain.MapDataset.range(steps_per_epoch).repeat().map_with_index(read)
    return ds.to_iter_dataset(_read_options(num_threads, prefetch))


def eval_dataset(
    source: Source,
    *,
    batch_size: int,
    transform: Transform | None = None,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = DEFAULT_NUM_THREADS,
    prefetch: int = DEFAULT_PREFETCH,
) -> grain.IterDataset:
    """Returns one ordered pass over the source with a padded last batch and a ``"mask"``.

    Like ``DataLoader(dataset, batch_size, shuffle=False, drop_last=False)``, except that the
    last batch is padded up to ``batch_size``, so a jitted eval step compiles for one shape only.
    Padding examples are zero images (then transformed) with label 0, and ``mask`` is False for
    them: weight per-example metrics by ``mask`` and divide by ``mask.sum()``. Every example of
    the source appears exactly once, with ``mask`` True. With several processes each process
    reads its contiguous ``batch_size // process_count`` slice of every global batch.

    Args:
      source: a random-access source of ``{"image": uint8, "label": int}``.
      batch_size: the global batch size, across all processes.
      transform: maps a uint8 image batch to model input; default ``x / 255 - 0.5``.
      process_index: this process, ``jax.process_index()``.
      process_count: number of processes; must divide ``batch_size``.
      num_threads: threads reading and transforming batches ahead of time.
      prefetch: number of batches read ahead.

    Returns:
      A finite ``grain.IterDataset`` of ``ceil(len(source) / batch_size)`` batches
      ``{"image": float32 (b, H, W, 3), "label": int32 (b,), "mask": bool (b,)}`` with
      ``b = batch_size // process_count``.

    >>> from jaxbasics.data.shapes import shapes
    >>> batches = list(eval_dataset(shapes("test", num_examples=10), batch_size=4))
    >>> [int(b["mask"].sum()) for b in batches], batches[-1]["image"].shape
    ([4, 4, 2], (4, 32, 32, 3))
    """
    import grain

    local = _check_sharding(batch_size, process_index, process_count)
    if len(source) == 0:
        raise ValueError("eval_dataset got an empty source; there is nothing to evaluate.")
    read = _ReadPaddedBatch(
        source,
        cifar_transform() if transform is None else transform,
        batch_size,
        process_index * local,
        (process_index + 1) * local,
    )
    num_batches = -(-len(source) // batch_size)
    ds = grain.MapDataset.range(num_batches).map(read)
    return ds.to_iter_dataset(_read_options(num_threads, prefetch))


def iterator_state(iterator: Any) -> dict[str, Any]:
    """Returns a pipeline iterator's position as a JSON-serialisable dict.

    Args:
      iterator: ``iter(train_dataset(...))`` or ``iter(eval_dataset(...))``.

    Returns:
      ``iterator.get_state()``, checked to be JSON-serialisable; store it with ``json.dumps``
      and give it back to :func:`restore_iterator`.

    >>> from jaxbasics.data.shapes import shapes
    >>> it = iter(train_dataset(shapes(num_examples=16), batch_size=4, seed=0))
    >>> _ = next(it), next(it)
    >>> iterator_state(it)
    {'next_index': 2}
    """
    import json

    state = iterator.get_state()
    try:
        json.dumps(state)
    except TypeError as e:
        raise TypeError(
            f"The iterator state {state!r} is not JSON-serialisable; this Grain version stores "
            "more than indices. Save it with pickle, or pin grain to a version whose state is a "
            "dict of numbers."
        ) from e
    return state


def restore_iterator(dataset: grain.IterDataset, state: dict[str, Any]) -> Any:
    """Returns a fresh iterator over ``dataset`` positioned at a saved ``state``.

    The next batch is exactly the one an uninterrupted iterator would have produced, provided
    ``dataset`` was built with the same source, batch size, seed and sharding.

    Args:
      dataset: the same pipeline the state was taken from.
      state: a dict from :func:`iterator_state` (after ``json.loads``).

    Returns:
      The positioned iterator.

    >>> from jaxbasics.data.shapes import shapes
    >>> ds = train_dataset(shapes(num_examples=16), batch_size=4, seed=0)
    >>> it = restore_iterator(ds, {"next_index": 5})
    >>> iterator_state(it)
    {'next_index': 5}
    """
    iterator = iter(dataset)
    iterator.set_state(state)
    return iterator
