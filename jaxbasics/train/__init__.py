"""The run machinery every model trains on; it names no model.

:func:`fit` trains (or resumes) the run a config describes, with the :class:`Task` its kind
registered (:func:`register`); :func:`run` trains a task directly. Around the task's pure step
the machinery owns the workdir and its lock (:mod:`~jaxbasics.train.workdir`), the config base
and the resume rules (:mod:`~jaxbasics.train.config`, :mod:`~jaxbasics.train.resume`), Orbax
checkpoints and their fallback (:mod:`~jaxbasics.train.checkpoint`), the one reader of a saved
run (:mod:`~jaxbasics.train.saved`), stop signals, the device mesh, metric writers, atomic
writes and the ``--out`` policy (:mod:`~jaxbasics.train.files`), the optimiser
(:mod:`~jaxbasics.train.optim`), the keys and compile cache (:mod:`~jaxbasics.train.state`)
and the command line (:mod:`~jaxbasics.train.cli`). The models' own training lives in
:mod:`jaxbasics.tasks`.

>>> import jaxbasics.tasks  # registers the VQ-VAE's and the priors' training
>>> {"VQ-VAE", "prior"} <= {kind.KIND for kind in kinds()}
True
"""

from jaxbasics.train.config import Presets, RunConfig
from jaxbasics.train.loop import FitResult, NonFiniteError, fit, run
from jaxbasics.train.saved import SavedRun, read_run
from jaxbasics.train.task import Interval, Task, TaskData, kinds, register, task_for
from jaxbasics.train.workdir import WorkdirInUseError, hold

__all__ = [
    "FitResult",
    "Interval",
    "NonFiniteError",
    "Presets",
    "RunConfig",
    "SavedRun",
    "Task",
    "TaskData",
    "WorkdirInUseError",
    "fit",
    "hold",
    "kinds",
    "read_run",
    "register",
    "run",
    "task_for",
]

# What earlier versions had here, and where it is now.
_MOVED = {
    "load": "jaxbasics.tasks.vqvae.load",
    "export": "jaxbasics.tasks.vqvae.export",
    "TrainConfig": "jaxbasics.tasks.vqvae.config.VQVAEConfig",
}


def __getattr__(name: str):
    if name in _MOVED:
        raise AttributeError(
            f"jaxbasics.train.{name} moved to {_MOVED[name]} (jaxbasics.train names no model)."
        )
    raise AttributeError(f"module 'jaxbasics.train' has no attribute {name!r}")
