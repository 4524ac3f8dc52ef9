"""The seam between the run machinery and a model: the :class:`Task` a model supplies, and the
registry that finds it.

:func:`jaxbasics.train.loop.run` owns everything a training run needs whatever it trains: the
workdir and its lock, the resume rules (check, then restore, then write), Orbax checkpoints and
their fallback, stop signals and their agreement across processes, the device mesh and global
batches, log intervals fetched in one transfer, the finite check, the metric writers and the
progress bar. A :class:`Task` supplies the rest: its data, its state and how to start one, its
jitted step, what a log record and an evaluation say, and its figures.

A model registers its task under its config class (:func:`register`): ``fit(config, workdir)``,
the command line and the question "which kind of run does this workdir hold?" look it up
there (:func:`task_for`, :func:`kinds`), so the machinery names no model. The built-in ones
(the VQ-VAE, the priors) register when :mod:`jaxbasics.tasks` is imported.

A step's metrics are a pytree with at least ``loss`` (scalar) and ``finite`` (bool scalar:
the loss and every new parameter and statistic are finite); nothing non-finite is saved.

>>> from jaxbasics.train.config import RunConfig
>>> class Example(RunConfig):
...     KIND = "example"
>>> register(Example, lambda config: ("a task for", config.KIND))
>>> task_for(Example())
('a task for', 'example')
>>> Example in kinds()
True
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from jaxbasics.train.config import RunConfig


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
      shown: the ``metrics.jsonl`` fields the progress bar shows.
      migratable: fields of the train state that a newer version added, each with the value
        a checkpoint written without it is restored with
        (:class:`~jaxbasics.train.checkpoint.Checkpointer`).
    """

    config: Any
    histories: tuple[str, ...]
    logs: tuple[str, ...]
    shown: tuple[str, ...]
    migratable: dict[str, Callable[[Any], Any]]

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


# The registered tasks: config KIND -> (config class, task factory). The newest registration of
# a kind wins (a module reloaded in one process registers its classes again).
_TASKS: dict[str, tuple[type[RunConfig], Callable[[Any], Task]]] = {}


def register(config: type[RunConfig], task: Callable[[Any], Task]) -> None:
    """Train runs whose config is a ``config`` (named by its ``KIND``) with ``task(config)``.

    Registering the same class again (its module imported twice) replaces the entry.

    Raises:
      ValueError: another config class already registered that ``KIND``.
    """
    old = _TASKS.get(config.KIND)
    if old is not None and _name(old[0]) != _name(config):
        raise ValueError(
            f"{_name(old[0])} already trains {config.KIND!r} runs; give {_name(config)} a "
            "KIND of its own."
        )
    _TASKS[config.KIND] = (config, task)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def task_for(config: RunConfig) -> Task:
    """The registered task of ``config``'s kind of run.

    Raises:
      ValueError: no task is registered for it.
    """
    registered = _TASKS.get(type(config).KIND)
    if registered is None or registered[0] is not type(config):
        raise ValueError(
            f"no task is registered for {type(config).__name__} runs: import the module that "
            "calls jaxbasics.train.task.register for it (the built-in ones: jaxbasics.tasks)."
        )
    return registered[1](config)


def kinds() -> tuple[type[RunConfig], ...]:
    """The config classes of every registered kind of run."""
    return tuple(config for config, _ in _TASKS.values())
