"""Orbax checkpoints of a run: save asynchronously, keep the last few, restore the latest good one.

Each checkpoint ``<workdir>/checkpoints/<step>/`` holds what the notes' checkpoint holds,
plus what an exact resume needs:

* ``state``: the :class:`~jaxbasics.train.state.TrainState` (model params, EMA
  statistics, Adam state, step, RNG), saved with ``StandardSave``;
* ``meta`` (JSON): ``iteration``, ``train_res_recon_error``, ``train_res_perplexity``,
  ``loss`` (the last one), the ``config`` and the ``data_variance``;
* ``data_iter`` (JSON): the Grain iterator state, so the resumed run reads exactly
  the batches the uninterrupted run would have.

Saves are asynchronous: :meth:`Checkpointer.save` returns once the state is copied off the
device, and the files are written in the background while training goes on. Orbax writes
into a temporary directory and renames it when complete, so a kill mid-save leaves the
previous checkpoints intact; old checkpoints are only deleted after a newer one is finalised.

Restoring tells three cases apart (:meth:`Checkpointer.restore_latest`), by comparing each
checkpoint's stored tree metadata (paths, shapes, dtypes) with the state the current code
expects *before* reading any array:

* **incompatible** (another code version's state layout, other model sizes):
  :class:`IncompatibleCheckpointError`, naming the differing leaves; nothing is moved;
* **unreadable** (truncated or garbled files): that checkpoint alone is moved to
  ``<workdir>/corrupt_checkpoints/`` (never deleted) and the previous one is tried;
* **none**: None, a fresh start.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

ITEMS = ("state", "meta", "data_iter")


class IncompatibleCheckpointError(ValueError):
    """A checkpoint's state does not fit the current code or config; nothing was changed."""


class UnreadableCheckpointError(OSError):
    """A checkpoint's files cannot be read (truncated, garbled or missing)."""


class Restored(NamedTuple):
    """A restored checkpoint: the step, the state, the JSON meta and the data state."""

    step: int
    state: Any
    meta: dict
    data_iter: Any


def layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``path -> (shape, dtype)`` of every array leaf of ``tree`` (arrays, abstract arrays or
    Orbax's stored metadata), with paths spelled the way Orbax stores them.

    >>> import jax.numpy as jnp
    >>> layout({"a": {"b": jnp.zeros((2, 3))}, "c": [jnp.ones((), jnp.int32)]})
    {'a/b': ((2, 3), 'float32'), 'c/0': ((), 'int32')}
    """
    import orbax.checkpoint as ocp

    flat = ocp.tree.to_flat_dict(tree)
    return {
        "/".join(str(k) for k in path): (tuple(v.shape), str(np.dtype(v.dtype)))
        for path, v in flat.items()
    }


def layout_differences(saved: dict, expected: dict, limit: int = 12) -> list[str]:
    """Human-readable differences between two :func:`layout` s, at most ``limit`` of them.

    >>> for line in layout_differences({"a": ((2,), "float32"), "b": ((1,), "int32")},
    ...                                {"a": ((3,), "float32"), "c": ((1,), "int32")}):
    ...     print(line)
    a: saved (2,) float32, expected (3,) float32
    b: saved but not expected
    c: expected but not saved
    """
    lines = []
    for path in sorted(set(saved) | set(expected)):
        if path not in expected:
            lines.append(f"{path}: saved but not expected")
        elif path not in saved:
            lines.append(f"{path}: expected but not saved")
        elif saved[path] != expected[path]:
            (s_shape, s_dtype), (e_shape, e_dtype) = saved[path], expected[path]
            lines.append(f"{path}: saved {s_shape} {s_dtype}, expected {e_shape} {e_dtype}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


def _drop_read_only_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Given directory is read only")


def read_only_options(ocp: Any) -> Any:
    """Orbax options to read checkpoints, already in the form Orbax's read-only mode wants.

    (Given as they are, Orbax does not log a warning for each setting it would override; its
    one remaining notice, that the directory is read-only, is what was asked for and dropped.)
    """
    absl = logging.getLogger("absl")
    if _drop_read_only_notice not in absl.filters:
        absl.addFilter(_drop_read_only_notice)
    return ocp.CheckpointManagerOptions(
        read_only=True,
        create=False,
        max_to_keep=None,
        save_interval_steps=0,
        save_root_metadata=False,
        cleanup_tmp_directories=False,
    )


class Checkpointer:
    """Save and restore a run's checkpoints under ``workdir/checkpoints``.

    Args:
      workdir: the run directory.
      keep: how many recent checkpoints to keep (``CheckpointManagerOptions.max_to_keep``).
      read_only: open without the right to write, move or delete anything (evaluation,
        loading a model, and the checks before a resume).
    """

    def __init__(self, workdir: str | Path, keep: int = 3, *, read_only: bool = False):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.workdir = Path(workdir).absolute()
        self.directory = self.workdir / "checkpoints"
        self.read_only = read_only
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=read_only_options(ocp)
            if read_only
            else ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, save_root_metadata=False
            ),
            item_names=ITEMS,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
                "data_iter": ocp.JsonCheckpointHandler(),
            },
        )

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, data_iter: Any) -> None:
        """Start writing checkpoint ``step``; returns once ``state`` is copied off the device.

        The previous save, if still writing, is finished first (Orbax serialises saves).
        """
        args = self._ocp.args
        self.manager.save(
            step,
            args=args.Composite(
                state=args.StandardSave(state),
                meta=args.JsonSave(meta),
                data_iter=args.JsonSave(data_iter),
            ),
            force=True,
        )

    def wait(self) -> None:
        """Block until every started save is complete on disk."""
        self.manager.wait_until_finished()

    def check(self, step: int, abstract_state: Any) -> None:
        """Raise unless checkpoint ``step`` holds a state shaped like ``abstract_state``.

        Reads only the stored tree metadata, never an array.

        Raises:
          IncompatibleCheckpointError: the stored paths, shapes or dtypes differ; the
            message lists them.
          UnreadableCheckpointError: the metadata itself cannot be read.
        """
        try:
            saved = layout(self.manager.item_metadata(step)["state"])
        except Exception as e:  # noqa: BLE001 - whatever Orbax raises, the files are bad
            raise UnreadableCheckpointError(
                f"checkpoint {step}: its metadata cannot be read ({type(e).__name__}: {e})"
            ) from e
        diffs = layout_differences(saved, layout(abstract_state))
        if diffs:
            raise IncompatibleCheckpointError(
                f"checkpoint {step} in {self.directory} does not fit the current model and "
                "training state; it was written by another version of jaxbasics or with other "
                "model sizes. Differing leaves:\n  "
                + "\n  ".join(diffs)
                + "\nNothing was changed. Resume it with the code version that wrote it, or "
                "start a new run with another --workdir."
            )

    def restore(self, step: int, abstract_state: Any, items: tuple[str, ...] = ITEMS) -> Restored:
        """Restore checkpoint ``step`` after :meth:`check`; ``items`` picks what to read.

        Raises:
          IncompatibleCheckpointError, UnreadableCheckpointError: as :meth:`check`, or the
            arrays or JSON files cannot be read.
        """
        self.check(step, abstract_state)
        args = self._ocp.args
        restore = {
            "state": args.StandardRestore(abstract_state),
            "meta": args.JsonRestore(),
            "data_iter": args.JsonRestore(),
        }
        try:
            out = self.manager.restore(
                step, args=args.Composite(**{k: v for k, v in restore.items() if k in items})
            )
        except Exception as e:  # noqa: BLE001 - the layout matched, so the files are bad
            raise UnreadableCheckpointError(f"checkpoint {step}: {type(e).__name__}: {e}") from e
        return Restored(step, out.get("state"), out.get("meta"), out.get("data_iter"))

    def restore_latest(
        self,
        abstract_state: Any,
        *,
        on_unreadable: Callable[[int, Exception], None] | None = None,
        quarantine: bool = False,
        items: tuple[str, ...] = ITEMS,
    ) -> Restored | None:
        """Restore the newest readable checkpoint; None if there is none.

        Args:
          abstract_state: the state's structure, shapes, dtypes and shardings (see
            :func:`jaxbasics.train.state.abstract_state`), the target of the restore. The
            shardings may differ from the saving run's: a checkpoint written on 8 devices
            restores on 1 and the other way round.
          on_unreadable: called with the step and the error for each unreadable checkpoint.
          quarantine: move an unreadable checkpoint to ``corrupt_checkpoints/`` so training
            can write that step again (process 0 moves, the others wait).
          items: which of ``state``, ``meta`` and ``data_iter`` to read.

        Raises:
          IncompatibleCheckpointError: the newest checkpoint does not fit ``abstract_state``;
            nothing is moved, older checkpoints are not tried.
        """
        for step in reversed(self.steps()):
            try:
                return self.restore(step, abstract_state, items)
            except UnreadableCheckpointError as e:
                if on_unreadable is not None:
                    on_unreadable(step, e)
                if quarantine:
                    self._quarantine(step)
        return None

    def _quarantine(self, step: int) -> None:
        """Move checkpoint ``step`` to ``corrupt_checkpoints/<step>-<time>`` (process 0)."""
        if self.read_only:
            raise PermissionError("a read-only Checkpointer moves nothing")
        if jax.process_index() == 0:
            bad = self.workdir / "corrupt_checkpoints" / f"{step}-{int(time.time())}"
            bad.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), bad)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxbasics quarantine {step}")
        self.manager.reload()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.close()
