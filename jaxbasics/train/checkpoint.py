"""Orbax checkpoints of a run: save every N steps, keep the last few, restore the latest good.

Each checkpoint ``<workdir>/checkpoints/<step>/`` holds what the notes' checkpoint
holds, plus what an exact resume needs:

* ``state``: the :class:`~jaxbasics.train.state.TrainState` (model params, EMA
  statistics, Adam state, step, RNG), saved with ``StandardSave``;
* ``meta`` (JSON): ``iteration``, ``train_res_recon_error``,
  ``train_res_perplexity``, ``loss`` (the last one) and the ``config``;
* ``data_iter`` (JSON): the Grain iterator state, so the resumed run reads exactly
  the batches the uninterrupted run would have.

Orbax writes into a temporary directory and renames it when complete, so a kill
mid-save leaves the previous checkpoints intact, and old checkpoints are only
deleted after a newer one is finalised. A checkpoint that fails to restore
(e.g. truncated on disk) is moved to ``<workdir>/corrupt_checkpoints/`` (never
deleted) and the previous one is used.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class Restored(NamedTuple):
    """A restored checkpoint: the step, the state, the JSON meta and the data state."""

    step: int
    state: Any
    meta: dict
    data_iter: Any


class Checkpointer:
    """Save and restore a run's checkpoints under ``workdir/checkpoints``.

    Args:
      workdir: the run directory.
      keep: how many recent checkpoints to keep (``CheckpointManagerOptions.max_to_keep``).
    """

    def __init__(self, workdir: str | Path, keep: int = 3):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.workdir = Path(workdir).absolute()
        self.directory = self.workdir / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=False, create=True
            ),
            item_names=("state", "meta", "data_iter"),
        )

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, data_iter: Any) -> None:
        """Write checkpoint ``step`` (blocking until it is complete on disk)."""
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
        self.manager.wait_until_finished()

    def restore_latest(self, abstract_state: Any, *, quarantine: bool = False) -> Restored | None:
        """Restore the newest checkpoint that restores; None if there is none.

        Args:
          abstract_state: the state's structure, shapes, dtypes and shardings (see
            :func:`jaxbasics.train.loop.abstract_train_state`), the target of the
            restore. The shardings may differ from the saving run's: a checkpoint
            written on 8 devices restores on 1 and the other way round.
          quarantine: move a checkpoint that fails to restore out of the way (to
            ``corrupt_checkpoints/``) so training can write that step again. Off for
            read-only use, where a failure may just mean a wrong target.
        """
        args = self._ocp.args
        for step in reversed(self.steps()):
            try:
                out = self.manager.restore(
                    step,
                    args=args.Composite(
                        state=args.StandardRestore(abstract_state),
                        meta=args.JsonRestore(),
                        data_iter=args.JsonRestore(),
                    ),
                )
                return Restored(step, out.state, out.meta, out.data_iter)
            except Exception as e:  # noqa: BLE001 - any failure means "this one is bad"
                if quarantine:
                    self._quarantine(step, e)
                else:
                    log.warning(
                        "checkpoint %d failed to restore (%s: %s); trying the previous one",
                        step,
                        type(e).__name__,
                        e,
                    )
                    print(
                        f"WARNING: checkpoint {step} failed to restore ({type(e).__name__}: "
                        f"{e}); trying the previous one.",
                        flush=True,
                    )
        return None

    def _quarantine(self, step: int, error: Exception) -> None:
        bad = self.workdir / "corrupt_checkpoints" / f"{step}-{int(time.time())}"
        bad.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(step)), bad)
        self.manager.reload()
        log.warning(
            "checkpoint at step %d failed to restore (%s: %s); moved it to %s and "
            "falling back to the previous one.",
            step,
            type(error).__name__,
            error,
            bad,
        )
        print(
            f"WARNING: checkpoint {step} is unreadable ({type(error).__name__}); moved to "
            f"{bad}; trying the previous checkpoint.",
            flush=True,
        )

    def close(self) -> None:
        """Finish pending work and release the manager."""
        self.manager.close()
