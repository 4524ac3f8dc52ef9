"""Data parallelism: a 1-D device mesh, global batches from per-process data, host-local views.

Batches are sharded over the mesh's ``data`` axis (every device of every process takes an
equal share of the global batch); the train state is replicated. With several processes,
each reads only its own rows of every global batch (:mod:`jaxbasics.data.pipeline`), and
:func:`global_batch` assembles the global array without copying between hosts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbasics.data.pipeline import eval_dataset


class Shardings(NamedTuple):
    """The mesh and the two shardings a run uses.

    Attributes:
      mesh: a 1-D ``jax.sharding.Mesh`` over all devices, axis ``data``.
      batch: ``NamedSharding(mesh, P("data"))``: the leading (batch) axis split over devices.
      replicated: ``NamedSharding(mesh, P())``: a full copy on every device.
    """

    mesh: jax.sharding.Mesh
    batch: jax.sharding.NamedSharding
    replicated: jax.sharding.NamedSharding


def make_shardings(batch_size: int) -> Shardings:
    """The :class:`Shardings` of a run with global batch ``batch_size``.

    Raises:
      ValueError: if ``batch_size`` does not divide across the devices; it names valid sizes.

    >>> s = make_shardings(4)
    >>> s.mesh.axis_names, s.batch.spec
    (('data',), P('data',))
    """
    n = jax.device_count()
    if batch_size % n:
        lower, upper = batch_size // n * n, (batch_size // n + 1) * n
        valid = ", ".join(str(b) for b in (lower, upper) if b > 0)
        raise ValueError(
            f"batch_size {batch_size} does not divide across {n} devices (each device takes "
            f"an equal share of the global batch); use a multiple of {n}, e.g. {valid}."
        )
    # Auto axes: XLA (GSPMD) propagates the batch sharding through the model.
    mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return Shardings(mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))


def global_batch(local: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """This process's rows of the batch -> the global batch array, sharded on ``data``.

    With one process the rows are the whole batch; with several, each process read its
    own rows and the global array is assembled without copying between hosts.

    >>> x = global_batch(np.ones((4, 2), np.float32), make_shardings(4).batch)
    >>> x.shape
    (4, 2)
    """
    return jax.make_array_from_process_local_data(sharding, local)


def host_local(x: jax.Array, sharding: Any = None) -> np.ndarray:
    """The rows of a ``data``-sharded global array that this process fed in.

    >>> host_local(jax.numpy.arange(3)).tolist()
    [0, 1, 2]
    """
    if sharding is None or jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(
        multihost_utils.global_array_to_host_local_array(x, sharding.mesh, sharding.spec)
    )


def placed(abstract: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """``abstract`` (a tree of shapes and dtypes) with every leaf placed on ``sharding``
    (default: replicated over all devices).

    >>> placed({"w": jax.ShapeDtypeStruct((2,), "float32")})["w"].sharding.is_fully_replicated
    True
    """
    if sharding is None:
        sharding = make_shardings(jax.device_count()).replicated
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract
    )


def eval_batches(
    source: Any,
    batch_size: int,
    keys: Sequence[str],
    sharding: Any = None,
    max_batches: int = 0,
) -> Iterator[tuple[dict[str, np.ndarray], tuple]]:
    """One evaluation pass over ``source``: this process's share of each padded batch
    (:func:`jaxbasics.data.pipeline.eval_dataset`), and its ``keys`` ready for the eval step
    (global arrays under ``sharding``; the host arrays as they are without one).

    Args:
      source: the split to evaluate.
      batch_size: the global batch size.
      keys: the batch entries the eval step takes, in its order (``"mask"`` marks padding).
      sharding: the run's batch sharding; None on one device.
      max_batches: stop after this many batches; 0 reads the whole split.

    >>> from jaxbasics.data.shapes import shapes
    >>> split = shapes("test", num_examples=5)
    >>> [int(mask.sum()) for _, (mask,) in eval_batches(split, 2, ["mask"])]
    [2, 2, 1]
    """
    batches = eval_dataset(
        source,
        batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            return
        inputs = tuple(batch[k] for k in keys)
        if sharding is not None:
            inputs = tuple(global_batch(x, sharding) for x in inputs)
        yield batch, inputs
