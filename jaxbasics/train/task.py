"""The seam between the run machinery and a model: what a model supplies to train in ``fit``.

:func:`jaxbasics.train.loop.run` owns everything a training run needs whatever it trains: the
workdir and its lock, the resume rules (check, then restore, then write), Orbax checkpoints and
their fallback, stop signals and their agreement across processes, the device mesh and global
batches, log intervals fetched in one transfer, the finite check, the metric writers and the
progress bar. A :class:`Task` supplies the rest: its data, its state and how to start one, its
jitted step, what a log record and an evaluation say, and its figures. Two tasks exist:
:class:`~jaxbasics.train.vqvae_task.VQVAETask` (stage one) and
:class:`~jaxbasics.train.prior_task.PriorTask` (stage two).

A step's metrics are a pytree with at least ``loss`` (scalar) and ``finite`` (bool scalar:
the loss and every new parameter and statistic are finite); nothing non-finite is saved.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol


class TaskData(NamedTuple):
    """A task's data, read before anything is written.

    Attributes:
      train: the train split, a random-access source for
        :func:`~jaxbasics.data.pipeline.train_dataset`.
      stats: what ``data_stats.json`` keeps of it (a resume compares it with the data then).
      write: writes what else the run keeps of its data into the workdir (the prior's
        code cache), once every check has passed; None if nothing.
    """

    train: Any
    stats: dict[str, Any]
    write: Callable[[Path], None] | None = None


class Interval(Protocol):
    """A task's accumulators over one log interval (between two ``metrics.jsonl`` records)."""

    def add(self, metrics: Any) -> None:
        """Take one step's metrics, fetched to the host."""

    def records(self, history: dict[str, Any], images_per_s: float) -> dict[str, dict]:
        """The interval's records by log name: ``"metrics"`` and each of ``Task.logs``."""

    def saved(self) -> dict[str, Any]:
        """What a checkpoint keeps of an open interval (JSON), so that the record after a
        resume is the uninterrupted run's."""


class Task(Protocol):
    """A model plugged into :func:`jaxbasics.train.loop.run`.

    Attributes:
      config: the run's :class:`~jaxbasics.train.config.RunConfig` (subclass).
      histories: names of the per-step histories kept in checkpoints (the notes'
        ``train_res_recon_error`` ...); :meth:`step_history` gives one value of each.
      logs: JSONL logs the interval writes besides ``metrics.jsonl``.
    """

    config: Any
    histories: tuple[str, ...]
    logs: tuple[str, ...]

    def load_data(self, workdir: Path) -> TaskData:
        """Read (or for a resume, check) the run's data; write nothing."""

    def abstract_state(self, sharding: Any) -> Any:
        """The train state's shapes, dtypes and ``sharding``: the target of a restore."""

    def fresh_state(self, dataset: Any, shardings: Any) -> Any:
        """The state a new run starts from, on the devices (``dataset``: the train batches)."""

    def train_step(self) -> Callable[[Any, Any], tuple[Any, Any]]:
        """The compiled ``step(state, inputs) -> (state, metrics)``, state donated."""

    def step_inputs(self, batch: dict[str, Any]) -> Any:
        """The step's inputs (host arrays, this process's rows) from a pipeline batch."""

    def step_history(self, metrics: Any) -> dict[str, float]:
        """One step's value of each of :attr:`histories`."""

    def interval(self, saved: dict[str, Any] | None) -> Interval:
        """A new log interval, continuing ``saved`` (a checkpoint's open interval) if given."""

    def evaluate(self, state: Any, max_batches: int, sharding: Any) -> Any:
        """Evaluate on the test split (all of it if ``max_batches`` is 0); ``.metrics`` is
        the ``eval.jsonl`` record."""

    def describe(self, metrics: dict[str, Any]) -> str:
        """The log line of an evaluation's metrics."""

    def checkpoint_meta(self) -> dict[str, Any]:
        """What a checkpoint's meta keeps besides the config, histories and interval."""

    def figures(
        self, workdir: Path, history: dict[str, Any], evaluation: Any, state: Any, final: bool
    ) -> None:
        """Write the run's figures (process 0): after each evaluation, and ``final``ly at
        the end."""
