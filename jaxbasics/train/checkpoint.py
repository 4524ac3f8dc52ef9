"""Orbax checkpoints of a run: save asynchronously, keep the last few, restore the newest good one.

The one module that speaks Orbax. Training writes and restores through :class:`Checkpointer`;
everything that reads a saved run goes through :mod:`jaxbasics.train.saved`, which uses it.

Each checkpoint ``<workdir>/checkpoints/<step>/`` holds three items:

* ``state``: the task's train state (a pytree of arrays: parameters, optimiser state, the
  step, the RNG and whatever else the model keeps), an Orbax PyTree;
* ``meta`` (JSON): the step (``iteration``), the per-step histories, the last loss, the
  ``config``, the open log interval and what the task adds (its data statistics);
* ``data_iter`` (JSON): the Grain iterator state, so the resumed run reads exactly
  the batches the uninterrupted run would have.

Saves are asynchronous: :meth:`Checkpointer.save` returns once the state is copied off the
device, and the files are written while training goes on, into a temporary directory renamed
when complete: a kill mid-save leaves the previous checkpoints intact, and old ones are only
deleted after a newer one is finalised. A failed save (a full disk) is one line,
:class:`CheckpointWriteError`, and leaves no temporary directory behind.

Restoring compares each checkpoint's stored tree metadata (paths, shapes, dtypes) with the
state the current code expects *before* reading any array, and tells four cases apart:

* **incompatible** (readable metadata of another layout, other model sizes):
  :class:`IncompatibleCheckpointError`, naming the differing leaves; nothing is moved;
* **older** (it lacks only leaves a newer version added, the task's ``migratable`` fields):
  restored with those leaves at their starting value, and a log line saying so;
* **unreadable** (missing or garbled metadata, truncated arrays): the previous checkpoint is
  tried; training moves the unreadable one to ``<workdir>/corrupt_checkpoints/`` (never
  deleted), readers move nothing;
* **none**: None, a fresh start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxbasics.train.host import quiet_orbax
from jaxbasics.train.layout import layout, layout_differences

log = logging.getLogger(__name__)

ITEMS = ("state", "meta", "data_iter")

# A train state field a version added, and the value a checkpoint written without it gets.
Migratable = dict[str, Callable[[jax.ShapeDtypeStruct], np.ndarray]]


class IncompatibleCheckpointError(ValueError):
    """A checkpoint's state does not fit the current code or config; nothing was changed."""


class UnreadableCheckpointError(OSError):
    """A checkpoint's files cannot be read (truncated, garbled or missing)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk); nothing half-written is left."""


class Restored(NamedTuple):
    """A restored checkpoint: the step, the state, the JSON meta and the data state."""

    step: int
    state: Any
    meta: dict
    data_iter: Any


def _cause(error: BaseException, limit: int = 200) -> str:
    """An error in one short line: its type and the first line of its message (without the
    TensorStore spec Orbax appends)."""
    lines = str(error).split(" See full TensorStore details")[0].strip().splitlines() or [""]
    text = f"{type(error).__name__}: {lines[0]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _options(ocp: Any, keep: int, read_only: bool) -> Any:
    """Orbax's options: read-only ones already in the form Orbax's read-only mode wants (given
    otherwise, it warns about each setting it overrides); a writer cleans up what a killed save
    left."""
    if read_only:
        return ocp.CheckpointManagerOptions(
            read_only=True, create=False, max_to_keep=None, save_interval_steps=0,
            save_root_metadata=False, cleanup_tmp_directories=False,
        )  # fmt: skip
    return ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, save_root_metadata=False, cleanup_tmp_directories=True
    )


def _fields(abstract_state: Any, fields: tuple[str, ...] | None) -> dict[str, Any]:
    """The fields of ``abstract_state`` a restore reads (``fields``, or all), by name."""
    names = [f.name for f in dataclasses.fields(abstract_state)]
    return {n: getattr(abstract_state, n) for n in names if fields is None or n in fields}


class Checkpointer:
    """Save and restore a run's checkpoints under ``workdir/checkpoints``.

    Args:
      workdir: the run directory.
      keep: how many recent checkpoints the run keeps (``CheckpointManagerOptions.max_to_keep``);
        a reader uses it to tell a checkpoint the run is deleting from a damaged one.
      read_only: open without the right to write, move or delete anything (evaluation,
        loading a model, and the checks before a resume).
      migratable: the state's fields a newer version added, each with the value a checkpoint
        written without it is restored with (the task's ``migratable``).
    """

    def __init__(
        self,
        workdir: str | Path,
        keep: int = 3,
        *,
        read_only: bool = False,
        migratable: Migratable | None = None,
    ):
        import orbax.checkpoint as ocp

        quiet_orbax()
        self._ocp = ocp
        self.workdir = Path(workdir).absolute()
        self.directory = self.workdir / "checkpoints"
        self.keep = keep
        self.read_only = read_only
        self.migratable = migratable or {}
        self._writing: int | None = None  # the step of a save that may still be writing
        self._failed = False
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=_options(ocp, keep, read_only),
            item_names=ITEMS,
            item_handlers={
                "state": ocp.PyTreeCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
                "data_iter": ocp.JsonCheckpointHandler(),
            },
        )

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, data_iter: Any) -> None:
        """Start writing checkpoint ``step``; returns once ``state`` is copied off the device
        (the previous save, if still writing, is finished first: Orbax serialises saves).

        Raises:
          CheckpointWriteError: this save or the previous one failed; the message names the
            step and the cause, and no temporary directory is left.
        """
        self.wait()
        args = self._ocp.args
        with self._write_of(step):
            self.manager.save(
                step,
                args=args.Composite(
                    state=args.PyTreeSave(state),
                    meta=args.JsonSave(meta),
                    data_iter=args.JsonSave(data_iter),
                ),
                force=True,
            )
            self._writing = step

    def wait(self) -> None:
        """Return once the last save, if any, is complete on disk (or raise as :meth:`save`)."""
        if self._writing is not None:
            with self._write_of(self._writing):
                self.manager.wait_until_finished()
            self._writing = None

    @contextlib.contextmanager
    def _write_of(self, step: int) -> Iterator[None]:
        """Report a failed write of checkpoint ``step`` in one line, removing what it left."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - Orbax re-raises its threads' errors as they are
            self._failed, self._writing = True, None
            self._remove_temporary()
            raise CheckpointWriteError(
                f"could not write checkpoint {step} in {self.directory} ({_cause(e)}); the "
                "checkpoints before it are intact: make room (or fix the permissions) and rerun "
                "the same command to resume."
            ) from e

    def _remove_temporary(self) -> None:
        """Delete the ``*.orbax-checkpoint-tmp*`` folders failed saves left (process 0), until
        none is seen twice in a row 0.1 s apart (at most 2 s): Orbax's other writer threads
        may still be adding to a folder while it is removed."""
        if jax.process_index() != 0:
            return
        clear = 0
        for _ in range(20):
            left = list(self.directory.glob("*.orbax-checkpoint-tmp*"))
            for tmp in left:
                shutil.rmtree(tmp, ignore_errors=True)
            clear = 0 if left else clear + 1
            if clear == 2:
                return
            time.sleep(0.1)

    def check(
        self, step: int, abstract_state: Any, fields: tuple[str, ...] | None = None
    ) -> list[str]:
        """Raise unless checkpoint ``step`` can restore ``abstract_state`` (or its ``fields``).

        Reads only the stored tree metadata, never an array, and returns the ``migratable``
        leaves the checkpoint lacks (an older version wrote it).

        Raises:
          IncompatibleCheckpointError: the stored paths, shapes or dtypes differ otherwise;
            the message lists them.
          UnreadableCheckpointError: the metadata is missing or cannot be read.
        """
        abstract_state = self._abstract_of(step, abstract_state)
        try:
            stored = self.manager.item_metadata(step)["state"]
            saved = {} if stored is None else layout(stored)
        except Exception as e:  # noqa: BLE001 - whatever Orbax raises, the files are bad
            raise UnreadableCheckpointError(
                f"checkpoint {step}: its metadata cannot be read ({_cause(e)})"
            ) from e
        if not saved:
            raise UnreadableCheckpointError(f"checkpoint {step}: its state metadata is missing")
        if fields is not None:
            saved = {k: v for k, v in saved.items() if k.split("/")[0] in fields}
        expected = layout(_fields(abstract_state, fields))
        missing = sorted((set(expected) - set(saved)) & set(self.migratable))
        diffs = layout_differences(saved, {k: v for k, v in expected.items() if k not in missing})
        if diffs:
            raise IncompatibleCheckpointError(
                f"checkpoint {step} in {self.directory} does not fit the current model and "
                "training state; it was written by another version of jaxbasics or with other "
                "model sizes. Differing leaves:\n  "
                + "\n  ".join(diffs)
                + "\nNothing was changed. Use it with the jaxbasics version that wrote it, or "
                "start a new run with another --workdir."
            )
        return missing

    def restore(
        self,
        step: int,
        abstract_state: Any,
        items: tuple[str, ...] = ITEMS,
        fields: tuple[str, ...] | None = None,
    ) -> Restored:
        """Restore checkpoint ``step`` after :meth:`check`; ``items`` picks what to read.

        Args:
          step: the checkpoint.
          abstract_state: see :meth:`restore_latest`; None to read no ``state``.
          items: which of ``state``, ``meta`` and ``data_iter`` to read.
          fields: the state's fields to read (None: all). The others are None in the
            result; their stored leaves are neither read nor compared.

        Raises:
          IncompatibleCheckpointError, UnreadableCheckpointError: as :meth:`check`, or the
            arrays or JSON files cannot be read.
        """
        ocp = self._ocp
        args = {"meta": ocp.args.JsonRestore(), "data_iter": ocp.args.JsonRestore()}
        missing = []
        if "state" in items:
            abstract_state = self._abstract_of(step, abstract_state)
            missing = self.check(step, abstract_state, fields)
            wanted = _fields(abstract_state, fields)
            read = {name: leaf for name, leaf in wanted.items() if name not in missing}
            args["state"] = ocp.args.PyTreeRestore(
                read,
                restore_args=ocp.checkpoint_utils.construct_restore_args(read),
                # Orbax's partial restore fails on the optimiser state's tuples: only if needed.
                partial_restore=fields is not None,
            )
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**{k: args[k] for k in items}))
        except Exception as e:  # noqa: BLE001 - the layout matched, so the files are bad
            raise UnreadableCheckpointError(f"checkpoint {step}: {_cause(e)}") from e
        state = out.get("state")
        if state is not None:
            for name in missing:
                leaf = wanted[name]
                state[name] = jax.device_put(self.migratable[name](leaf), leaf.sharding)
            names = (f.name for f in dataclasses.fields(abstract_state))
            state = abstract_state.replace(**{name: state.get(name) for name in names})
        if missing:
            what = "checkpoint %d was written by an older version, without %s: restored with them"
            log.info(what + " at their starting value", step, ", ".join(missing))
        return Restored(step, state, out.get("meta"), out.get("data_iter"))

    def _abstract_of(self, step: int, abstract_state: Any) -> Any:
        """``abstract_state``, or, if it is a function of a checkpoint's step and ``meta`` (a
        state whose shapes the meta decides, or a caller's check of the meta), its value for
        checkpoint ``step``."""
        if not callable(abstract_state):
            return abstract_state
        meta = self.restore(step, None, items=("meta",)).meta
        try:
            return abstract_state(step, meta)
        except (KeyError, TypeError, AttributeError) as e:  # a meta without what it needs
            raise UnreadableCheckpointError(
                f"checkpoint {step}: its meta lacks what the state's shapes follow from "
                f"({_cause(e)})"
            ) from e

    def restore_latest(
        self,
        abstract_state: Any,
        *,
        on_unreadable: Callable[[int, Exception], None] | None = None,
        quarantine: bool = False,
        items: tuple[str, ...] = ITEMS,
        fields: tuple[str, ...] | None = None,
    ) -> Restored | None:
        """Restore the newest readable checkpoint; None if there is none.

        A read-only Checkpointer skips, silently, a checkpoint the run writing the workdir
        deleted while it was being read (it is gone, or ``keep`` newer ones exist), and tries
        the newest one again.

        Args:
          abstract_state: the state's structure, shapes, dtypes and shardings (the task's
            ``abstract_state``); the shardings may differ from the saving run's (8 devices to
            1 and back). Or a function of a checkpoint's step and ``meta`` that returns it:
            each checkpoint is then read with its own shapes (a prior's follow its meta) and
            after the caller's check of its meta (:func:`~jaxbasics.train.saved.written_with`).
          on_unreadable: called with the step and the error for each unreadable checkpoint.
          quarantine: move an unreadable checkpoint to ``corrupt_checkpoints/`` so training
            can write that step again (process 0 moves, the others wait).
          items: which of ``state``, ``meta`` and ``data_iter`` to read.
          fields: as for :meth:`restore`.

        Raises:
          IncompatibleCheckpointError: the newest checkpoint does not fit ``abstract_state``;
            nothing is moved, older checkpoints are not tried.
        """
        tried: set[int] = set()
        while left := [s for s in self.steps() if s not in tried]:
            tried.add(left[-1])
            try:
                return self.restore(left[-1], abstract_state, items, fields)
            except UnreadableCheckpointError as e:
                if self._rotated(left[-1]):
                    log.debug("checkpoint %d was deleted by its run while being read", left[-1])
                    continue
                if on_unreadable is not None:
                    on_unreadable(left[-1], e)
                if quarantine:
                    self._quarantine(left[-1])
        return None

    def _rotated(self, step: int) -> bool:
        """Whether a reader's failure on ``step`` is the writing run deleting it."""
        if not self.read_only:
            return False  # the writer itself deletes only after its saves
        self.manager.reload()
        newer = [s for s in self.steps() if s > step]
        return not (self.directory / str(step)).exists() or len(newer) >= self.keep

    def _quarantine(self, step: int) -> None:
        """Move checkpoint ``step`` to ``corrupt_checkpoints/<step>-<time>`` (process 0)."""
        if self.read_only:
            raise PermissionError("a read-only Checkpointer moves nothing")
        if jax.process_index() == 0:
            bad = self.workdir / "corrupt_checkpoints" / f"{step}-{int(time.time())}"
            bad.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), bad)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"jaxbasics quarantine {step}")
        self.manager.reload()

    def close(self) -> None:
        """Finish pending saves and release the manager.

        Raises:
          CheckpointWriteError: the last save failed (as for :meth:`save`).
        """
        try:
            self.wait()
        finally:
            try:
                self.manager.close()
            except Exception:  # noqa: BLE001 - Orbax raises the failure again, already reported
                if not self._failed:
                    raise
            if self._failed:
                self._remove_temporary()  # and what the failed save's other threads wrote since
