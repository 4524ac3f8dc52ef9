"""``run(task, workdir)``: the training loop, the imperative shell around a task's pure step.

One loop trains every model: a :class:`~jaxbasics.train.task.Task` supplies its data, state,
step, log records, evaluation and figures; this module does the rest, the same for all.
:func:`fit` trains whatever the config describes, with the task registered for its kind
(:func:`~jaxbasics.train.task.register`).

What a run leaves in ``workdir``:

* ``config.json``: the config; a rerun with an incompatible config is refused;
* ``data_stats.json``: what the task keeps of its data, compared on resume;
* ``checkpoints/<step>/``: Orbax checkpoints (see :mod:`jaxbasics.train.checkpoint`);
* ``metrics.jsonl``: every ``log_every`` steps the task's record (loss, its metrics,
  ``images_per_s``), and the task's own logs;
* ``eval.jsonl``: every ``eval_every`` steps, on the test split;
* the task's figures (``curves.png`` ...), and ``tensorboard/`` if tensorboardX is installed.

:func:`run` works in four phases: :func:`_setup` (read-only checks, then restore or init),
:func:`_train` (the step loop), :func:`_flush` (once per log interval: the metrics come off
the device, are checked and written) and :func:`_finish` (final evaluation and figures).
The host never waits for the step it has just dispatched: metrics stay on the device until
a log, evaluation or checkpoint boundary, and the host keeps at most :data:`IN_FLIGHT` steps
queued ahead of the device.

Rerunning the same command resumes from the latest good checkpoint, with the same
batches and bitwise the same parameters as an uninterrupted run. SIGTERM/SIGINT
save a checkpoint and stop cleanly (every process of a multi-process run after the same step);
one that comes before the run has written anything leaves the workdir as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax

from jaxbasics.data.pipeline import iterator_state, restore_iterator, train_dataset
from jaxbasics.train.checkpoint import Checkpointer
from jaxbasics.train.config import RunConfig
from jaxbasics.train.files import write_atomic
from jaxbasics.train.host import retain_host_memory
from jaxbasics.train.metrics import open_writers, read_jsonl
from jaxbasics.train.resume import check_resumable
from jaxbasics.train.saved import saved_config, written_with
from jaxbasics.train.sharding import Shardings, global_batch, make_shardings
from jaxbasics.train.signals import StopAgreement, StopFlag
from jaxbasics.train.task import task_for
from jaxbasics.train.workdir import hold

log = logging.getLogger(__name__)

# Steps the host may queue ahead of the device before it waits for the oldest one.
IN_FLIGHT = 2


class NonFiniteError(FloatingPointError):
    """A step produced a non-finite loss, parameter or statistic; nothing was saved."""


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      step: the last completed step.
      state: the final train state.
      eval_metrics: the last evaluation's record (the VQ-VAE's ``recon_error`` ...).
      interrupted: the signal number that stopped the run early, or 0.
    """

    step: int
    state: Any
    eval_metrics: dict[str, Any]
    interrupted: int


@dataclasses.dataclass
class _Run:
    """Everything :func:`run`'s phases share."""

    task: Any
    config: RunConfig
    workdir: Path
    shardings: Shardings
    ckpt: Any
    batches: Any
    state: Any
    step: int
    history: dict[str, Any]
    writers: dict[str, Any]
    is_main: bool
    last_saved: int = 0
    eval_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    last_eval: Any = None  # the Evaluation of the last periodic evaluation, and its step
    last_eval_step: int = -1

    def __post_init__(self) -> None:
        self.last_saved = self.step


def _setup(task: Any, workdir: Path, stop: StopFlag) -> _Run | None:
    """Check, then restore or initialise. Writes nothing until every check has passed, and
    nothing at all (returning None) if a stop signal came meanwhile."""
    config = task.config
    saved = saved_config(workdir, type(config))
    if saved.step is not None:
        log.warning(
            "%s/config.json is missing: the run's config is the one saved with checkpoint %d "
            "(config.json is written again from it once the run starts).",
            workdir,
            saved.step,
        )
    check_resumable(config, saved.config, workdir)
    data = task.load_data(workdir)
    shardings = make_shardings(config.batch_size)
    dataset = train_dataset(
        data.train,
        batch_size=config.batch_size,
        seed=config.data_seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    workdir.mkdir(parents=True, exist_ok=True)  # process 0's hold made it, maybe not here
    new_checkpoints = not (workdir / "checkpoints").exists()
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints, migratable=task.migratable)
    try:
        restored = ckpt.restore_latest(
            written_with(config, task.abstract_state(shardings.replicated), workdir),
            quarantine=True,
            on_unreadable=lambda step, e: log.warning(
                "checkpoint %d is unreadable (%s); moved to corrupt_checkpoints/, trying the "
                "previous one",
                step,
                e,
            ),
        )
        if restored is not None and restored.step > config.num_training_updates:
            raise ValueError(
                f"{workdir} is at step {restored.step}, past --num-training-updates "
                f"{config.num_training_updates}: a run cannot go back. Give at least "
                f"{restored.step} (or leave it out), or use a new --workdir."
            )
    except BaseException:
        ckpt.close()
        raise
    if stop.signum and jax.process_count() == 1:  # several processes stop together, in _train
        ckpt.close()
        if new_checkpoints and not any((workdir / "checkpoints").iterdir()):
            (workdir / "checkpoints").rmdir()
        return None
    is_main = jax.process_index() == 0  # one process writes logs and plots
    if is_main:
        write_atomic(workdir / "config.json", config.to_json())
        write_atomic(workdir / "data_stats.json", json.dumps(data.stats))
        if data.write is not None:
            data.write(workdir)
    state, step, batches, history = _start(task, restored, dataset, shardings)
    if restored is not None:
        log.info("Resuming from checkpoint at step %d in %s", step, workdir)
    run = _Run(task, config, workdir, shardings, ckpt, batches, state, step, history, {}, is_main)
    run.writers = open_writers(workdir, is_main, step, task.logs)
    return run


def _start(task: Any, restored: Any, dataset: Any, shardings: Shardings) -> tuple:
    """``(state, step, batches, history)`` to start from: a checkpoint's, or fresh ones."""
    if restored is None:
        history = {name: [] for name in task.histories} | {"loss": None}
        return task.fresh_state(dataset, shardings), 0, iter(dataset), history
    history = {k: restored.meta[k] for k in (*task.histories, "loss")}
    # The log interval the checkpoint was saved in, for _train to continue (older checkpoints
    # have none: the interval then starts afresh).
    history["open_interval"] = restored.meta.get("open_interval")
    batches = restore_iterator(dataset, restored.data_iter)
    return restored.state, restored.step, batches, history


def _save(run: _Run, interval: _Interval) -> None:
    meta = {
        "iteration": run.step,
        **run.history,
        "open_interval": interval.task.saved(),
        "config": json.loads(run.config.to_json()),
        **run.task.checkpoint_meta(),
    }
    run.ckpt.save(run.step, run.state, meta, iterator_state(run.batches))
    run.last_saved = run.step


def _evaluate(run: _Run, max_batches: int) -> Any:
    return run.task.evaluate(run.state, max_batches, run.shardings.batch)


class _Interval:
    """One log interval: the task's accumulators, and the images and time for the rate."""

    def __init__(self, task: Any):
        self.task = task
        self.images = 0
        self.t0 = time.perf_counter()


def _flush(run: _Run, pending: list[Any], interval: _Interval) -> None:
    """Fetch the metrics of the steps since the last flush, check them, record history."""
    first = run.step - len(pending) + 1
    for i, m in enumerate(jax.device_get(pending)):
        if not bool(m.finite):
            kept = (
                f"The last good checkpoint (step {run.last_saved}) is kept in {run.ckpt.directory}."
                if run.last_saved > 0 or run.ckpt.steps()
                else "No checkpoint had been written yet."
            )
            raise NonFiniteError(
                f"step {first + i} produced a non-finite loss ({float(m.loss)}), parameters or "
                f"statistics; training stopped and nothing after step {run.last_saved} "
                f"was saved. {kept} Try a lower --learning-rate, or check the data."
            )
        for name, value in run.task.step_history(m).items():
            run.history[name].append(value)
        run.history["loss"] = float(m.loss)
        interval.task.add(m)
    pending.clear()


def _log(run: _Run, interval: _Interval, bar: Any) -> _Interval:
    """Write the interval's records (``metrics.jsonl`` and the task's logs); a new interval."""
    ips = interval.images / max(time.perf_counter() - interval.t0, 1e-9)
    records = interval.task.records(run.history, ips)
    for name, record in records.items():
        run.writers[name].write(run.step, record)
    shown = run.task.shown
    bar.set_postfix({k: f"{v:.4g}" for k, v in records["metrics"].items() if k in shown})
    return _Interval(run.task.interval(None))


def _boundaries(run: _Run, interval: _Interval, stopping: bool) -> None:
    """Evaluate and checkpoint where the schedule says (metrics already flushed)."""
    c = run.config
    if run.step % c.eval_every == 0:
        run.last_eval, run.last_eval_step = _evaluate(run, c.eval_batches), run.step
        run.eval_metrics = run.last_eval.metrics
        run.writers["eval"].write(run.step, run.eval_metrics)
        log.info("step %d: %s", run.step, run.task.describe(run.eval_metrics))
        if run.is_main:
            run.task.figures(run.workdir, run.history, run.last_eval, run.state, final=False)
    if (run.step % c.checkpoint_every == 0 or stopping or run.step == c.num_training_updates) and (
        run.step != run.last_saved
    ):
        _save(run, interval)


def _train(run: _Run, stop: StopFlag, bar: Any) -> int:
    """The step loop; returns the signal that stopped it early, or 0."""
    c = run.config
    train_step = run.task.train_step()
    agreement = StopAgreement(run.shardings)
    pending: list[Any] = []
    interval = _Interval(run.task.interval(run.history.pop("open_interval", None)))
    signum = 0
    while run.step < c.num_training_updates and not signum:
        inputs = run.task.step_inputs(next(run.batches))
        rows = jax.tree.leaves(inputs)[0].shape[0]
        inputs = jax.tree.map(lambda x: global_batch(x, run.shardings.batch), inputs)
        run.state, metrics = train_step(run.state, inputs)
        run.step += 1
        pending.append(metrics)
        if len(pending) > IN_FLIGHT:
            pending[-IN_FLIGHT - 1].loss.block_until_ready()  # bound the queue, not a sync
        interval.images += rows * jax.process_count()
        bar.update(1)
        signum = agreement.update(stop.signum)
        done = run.step == c.num_training_updates
        if signum or done or any(run.step % n == 0 for n in _every(c)):
            _flush(run, pending, interval)
            if run.step % c.log_every == 0 or done:
                interval = _log(run, interval, bar)
            _boundaries(run, interval, stopping=bool(signum))
    return signum


def _every(c: RunConfig) -> tuple[int, int, int]:
    return (c.log_every, c.eval_every, c.checkpoint_every)


def _finish(run: _Run) -> None:
    """Final evaluation (unless the last step just had one) and the run's figures."""
    ev = run.last_eval
    if run.last_eval_step != run.step:
        ev = _evaluate(run, 0)
        run.eval_metrics = ev.metrics
        path = run.writers["eval"].path
        logged = read_jsonl(path) if path.exists() else []
        if not logged or logged[-1].get("step") != run.step:  # a finished run rerun: logged
            run.writers["eval"].write(run.step, ev.metrics)
    if run.is_main:
        run.task.figures(run.workdir, run.history, ev, run.state, final=True)


def fit(config: RunConfig, workdir: str | Path) -> FitResult:
    """Train (or resume training) the model ``config`` describes, in ``workdir``: :func:`run` with
    the task registered for ``config``'s kind of run (:func:`~jaxbasics.train.task.task_for`;
    the built-in kinds register when :mod:`jaxbasics.tasks` is imported)."""
    return run(task_for(config), workdir)


def run(task: Any, workdir: str | Path) -> FitResult:
    """Train (or resume training) ``task`` (a :class:`~jaxbasics.train.task.Task`) in ``workdir``.

    Args:
      task: the model to train, with its config.
      workdir: where checkpoints, metrics and plots go; reusing it resumes. It belongs to
        one run at a time (:func:`jaxbasics.train.workdir.hold`).

    Returns:
      A :class:`FitResult`.

    Raises:
      WorkdirInUseError: another run holds ``workdir`` (it belongs to one run at a time).
      ConfigMismatchError: ``workdir`` holds a run with an incompatible config (its
        ``config.json`` or, if that is lost, the config saved with its newest checkpoint).
      ConfigFileError: its ``config.json`` is damaged.
      IncompatibleCheckpointError: its checkpoint does not fit this code's state; nothing
        in ``workdir`` was changed.
      NonFiniteError: a step produced non-finite values (the step is named; the last good
        checkpoint is kept and nothing non-finite is saved).
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    config = task.config.validate()
    retain_host_memory()
    with hold(workdir), StopFlag() as stop:
        run = _setup(task, Path(workdir), stop)
        if run is None:
            log.warning(
                "Stopped by signal %d before the first step; nothing was changed.", stop.signum
            )
            return FitResult(0, None, {}, stop.signum)
        show = config.progress and run.is_main
        bar = tqdm(
            total=config.num_training_updates,
            initial=run.step,
            disable=not show,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        try:
            with logging_redirect_tqdm():
                signum = _train(run, stop, bar)
                bar.close()
                if signum:
                    run.ckpt.wait()  # "saved" only once it is: a second signal may come next
                    log.warning(
                        "Stopped by signal %d at step %d; checkpoint saved. Rerun the same command "
                        "to resume.",
                        signum,
                        run.step,
                    )
                    return FitResult(run.step, run.state, run.eval_metrics, signum)
                _finish(run)
            return FitResult(run.step, run.state, run.eval_metrics, 0)
        finally:
            bar.close()
            for w in run.writers.values():
                w.close()
            run.ckpt.close()
