"""``fit(config, workdir)``: the training loop, the imperative shell around the pure step.

What a run leaves in ``workdir``:

* ``config.json``: the config; a rerun with an incompatible config is refused;
* ``checkpoints/<step>/``: Orbax checkpoints (see :mod:`jaxbasics.train.checkpoint`);
* ``metrics.jsonl``: every ``log_every`` steps ``step, loss, recon_error, perplexity,
  images_per_s`` and, over the steps since the last line, ``used_codes`` (codes chosen
  at least once), ``dead_codes`` (never chosen) and ``restarted_codes``;
  ``codebook_usage.jsonl``: the matching per-code histograms (``counts``, K ints);
  ``eval.jsonl``: every ``eval_every`` steps, on the test split;
* ``curves.png``, ``reconstructions.png`` and ``codebook.png`` (test-split usage,
  sorted, and a PCA map of the codes) at the end;
* ``tensorboard/`` if tensorboardX is installed.

``fit`` runs in four phases: :func:`_setup` (read-only checks, then restore or init),
:func:`_train` (the step loop), :func:`_flush` (once per log interval: the metrics come off
the device, are checked and written) and :func:`_finish` (final evaluation and figures).
The host never waits for the step it has just dispatched: metrics stay on the device until
a log, evaluation or checkpoint boundary, and the host keeps at most :data:`IN_FLIGHT` steps
queued ahead of the device.

Rerunning the same command resumes from the latest good checkpoint, with the same
batches and bitwise the same parameters as an uninterrupted run. SIGTERM/SIGINT
save a checkpoint and stop cleanly (every process of a multi-process run after the same step).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxbasics.train.config import TrainConfig, check_resumable
from jaxbasics.train.data import Sources, sources
from jaxbasics.train.metrics import open_writers, write_atomic
from jaxbasics.train.sharding import Shardings, abstract_state, global_batch, make_shardings
from jaxbasics.train.signals import StopAgreement, StopFlag
from jaxbasics.train.workdir import hold, saved_config

log = logging.getLogger(__name__)

# Steps the host may queue ahead of the device before it waits for the oldest one.
IN_FLIGHT = 2


class NonFiniteError(FloatingPointError):
    """A step produced a non-finite loss, parameter or EMA statistic; nothing was saved."""


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      step: the last completed step.
      state: the final train state.
      eval_metrics: the last evaluation (``recon_error``, ``perplexity``, ...).
      interrupted: the signal number that stopped the run early, or 0.
    """

    step: int
    state: Any
    eval_metrics: dict[str, Any]
    interrupted: int


@dataclasses.dataclass
class _Run:
    """Everything :func:`fit`'s phases share."""

    config: TrainConfig
    workdir: Path
    data: Sources
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


def _setup(config: TrainConfig, workdir: Path) -> _Run:
    """Check, then restore or initialise. Writes nothing until every check has passed."""
    from jaxbasics.data.pipeline import train_dataset
    from jaxbasics.train.checkpoint import Checkpointer

    saved = saved_config(workdir)
    if saved.step is not None:
        log.warning(
            "%s/config.json is missing: the run's config is the one saved with checkpoint %d "
            "(config.json is written again from it once the run starts).",
            workdir,
            saved.step,
        )
    check_resumable(config, saved.config, workdir)
    data = sources(config, workdir)
    shardings = make_shardings(config.batch_size)
    dataset = train_dataset(
        data.train,
        batch_size=config.batch_size,
        seed=config.data_seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    workdir.mkdir(parents=True, exist_ok=True)  # process 0's hold made it, maybe not here
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints)
    try:
        restored = ckpt.restore_latest(
            abstract_state(config, shardings.replicated),
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
    is_main = jax.process_index() == 0  # one process writes logs and plots
    if is_main:
        write_atomic(workdir / "config.json", config.to_json())
        stats = {"data_variance": data.variance, "num_examples": len(data.train)}
        if data.files_sha256 is not None:
            stats["files_sha256"] = data.files_sha256
        write_atomic(workdir / "data_stats.json", json.dumps(stats))
    state, step, batches, history = _start(config, restored, dataset, shardings)
    if restored is not None:
        log.info("Resuming from checkpoint at step %d in %s", step, workdir)
    run = _Run(config, workdir, data, shardings, ckpt, batches, state, step, history, {}, is_main)
    run.writers = open_writers(workdir, is_main, step)
    return run


def _start(config: TrainConfig, restored: Any, dataset: Any, shardings: Shardings) -> tuple:
    """``(state, step, batches, history)`` to start from: a checkpoint's, or fresh ones."""
    from jaxbasics.data.pipeline import restore_iterator

    if restored is None:
        history = {"train_res_recon_error": [], "train_res_perplexity": [], "loss": None}
        return _fresh_state(config, dataset, shardings), 0, iter(dataset), history
    history = {k: restored.meta[k] for k in ("train_res_recon_error", "train_res_perplexity")}
    history["loss"] = restored.meta["loss"]
    # The log interval the checkpoint was saved in, for _train to continue (older checkpoints
    # have none: the interval then starts afresh).
    history["open_interval"] = restored.meta.get("open_interval")
    batches = restore_iterator(dataset, restored.data_iter)
    return restored.state, restored.step, batches, history


def _fresh_state(config: TrainConfig, dataset: Any, shardings: Shardings) -> Any:
    """``init_state`` placed on the devices, k-means-initialised if the config asks."""
    from jaxbasics.train.state import init_state
    from jaxbasics.train.step import compiled

    state = jax.device_put(init_state(config), shardings.replicated)
    if config.kmeans_init_steps:
        # A second iterator over the same dataset yields exactly the first training
        # batches and leaves the training iterator (and so resume) untouched.
        first = iter(dataset)
        images = tuple(
            global_batch(next(first)["image"], shardings.batch)
            for _ in range(config.kmeans_init_steps)
        )
        state = compiled(config, "kmeans", shardings.replicated)(state, images)
    return state


def _save(run: _Run, interval: _Interval) -> None:
    from jaxbasics.data.pipeline import iterator_state

    meta = {
        "iteration": run.step,
        **run.history,
        "open_interval": interval.saved(),
        "config": json.loads(run.config.to_json()),
        "data_variance": run.data.variance,
    }
    run.ckpt.save(run.step, run.state, meta, iterator_state(run.batches))
    run.last_saved = run.step


def _evaluate(run: _Run, max_batches: int) -> Any:
    from jaxbasics.train.evaluate import evaluate

    return evaluate(
        run.config,
        run.state,
        run.data.test,
        run.data.variance,
        max_batches=max_batches,
        sharding=run.shardings.batch,
    )


class _Interval:
    """Host-side accumulators of one log interval, continuing ``saved`` (see :meth:`saved`)."""

    def __init__(self, k: int, saved: dict | None = None):
        saved = saved or {"counts": np.zeros(k), "restarts": 0}
        self.counts = np.asarray(saved["counts"], np.int64)
        self.restarts = int(saved["restarts"])
        self.images = 0
        self.t0 = time.perf_counter()

    def saved(self) -> dict[str, Any]:
        """What a checkpoint keeps of the interval, so that the log record after a resume is
        the uninterrupted run's (the images and their rate are measured anew)."""
        return {"counts": self.counts.tolist(), "restarts": self.restarts}


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
                f"EMA statistics; training stopped and nothing after step {run.last_saved} "
                f"was saved. {kept} Try a lower --learning-rate, or check the data."
            )
        run.history["train_res_recon_error"].append(float(m.recon_error))
        run.history["train_res_perplexity"].append(float(m.perplexity))
        run.history["loss"] = float(m.loss)
        interval.counts += np.asarray(m.code_counts, np.int64)
        interval.restarts += int(m.restarted_codes)
    pending.clear()


def _log(run: _Run, interval: _Interval, bar: Any) -> None:
    """Write one ``metrics.jsonl`` / ``codebook_usage.jsonl`` record and start a new interval."""
    ips = interval.images / max(time.perf_counter() - interval.t0, 1e-9)
    used = int(np.sum(interval.counts > 0))
    h = run.history
    record = {
        "loss": h["loss"],
        "recon_error": h["train_res_recon_error"][-1],
        "perplexity": h["train_res_perplexity"][-1],
        "images_per_s": ips,
        "used_codes": used,
        "dead_codes": run.config.num_embeddings - used,
        "restarted_codes": interval.restarts,
    }
    run.writers["metrics"].write(run.step, record)
    run.writers["usage"].write(run.step, {"counts": interval.counts.tolist()})
    bar.set_postfix(
        recon=f"{record['recon_error']:.4f}",
        perplexity=f"{record['perplexity']:.1f}",
        img_s=f"{ips:.0f}",
    )
    interval.__init__(run.config.num_embeddings)


def _boundaries(run: _Run, interval: _Interval, stopping: bool) -> None:
    """Evaluate and checkpoint where the schedule says (metrics already flushed)."""
    c = run.config
    if run.step % c.eval_every == 0:
        run.last_eval, run.last_eval_step = _evaluate(run, c.eval_batches), run.step
        run.eval_metrics = run.last_eval.metrics
        run.writers["eval"].write(run.step, run.eval_metrics)
        log.info(
            "step %d: test recon_error %.4f perplexity %.1f",
            run.step,
            run.eval_metrics["recon_error"],
            run.eval_metrics["perplexity"],
        )
    if (run.step % c.checkpoint_every == 0 or stopping or run.step == c.num_training_updates) and (
        run.step != run.last_saved
    ):
        _save(run, interval)


def _train(run: _Run, stop: StopFlag, bar: Any) -> int:
    """The step loop; returns the signal that stopped it early, or 0."""
    from jaxbasics.train.step import compiled

    c = run.config
    train_step = compiled(c, "train", run.data.variance)
    agreement = StopAgreement(run.shardings)
    pending: list[Any] = []
    interval = _Interval(c.num_embeddings, run.history.pop("open_interval", None))
    signum = 0
    while run.step < c.num_training_updates and not signum:
        images = next(run.batches)["image"]
        run.state, metrics = train_step(run.state, global_batch(images, run.shardings.batch))
        run.step += 1
        pending.append(metrics)
        if len(pending) > IN_FLIGHT:
            pending[-IN_FLIGHT - 1].loss.block_until_ready()  # bound the queue, not a sync
        interval.images += images.shape[0] * jax.process_count()
        bar.update(1)
        signum = agreement.update(stop.signum)
        done = run.step == c.num_training_updates
        if signum or done or any(run.step % n == 0 for n in _every(c)):
            _flush(run, pending, interval)
            if run.step % c.log_every == 0 or done:
                _log(run, interval, bar)
            _boundaries(run, interval, stopping=bool(signum))
    return signum


def _every(c: TrainConfig) -> tuple[int, int, int]:
    return (c.log_every, c.eval_every, c.checkpoint_every)


def _finish(run: _Run) -> None:
    """Final evaluation (unless the last step just had one) and the run's figures."""
    from jaxbasics import plots
    from jaxbasics.train.evaluate import save_figures
    from jaxbasics.train.metrics import read_jsonl
    from jaxbasics.train.state import codebook_of

    c = run.config
    ev = run.last_eval
    if run.last_eval_step != run.step:
        ev = _evaluate(run, 0)
        run.eval_metrics = ev.metrics
        path = run.writers["eval"].path
        logged = read_jsonl(path) if path.exists() else []
        if not logged or logged[-1].get("step") != run.step:  # a finished run rerun: logged
            run.writers["eval"].write(run.step, ev.metrics)
    if run.is_main:
        h = run.history
        plots.save(
            plots.training_curves(h["train_res_recon_error"], h["train_res_perplexity"]),
            run.workdir / "curves.png",
        )
        save_figures(
            ev,
            np.asarray(codebook_of(c, run.state)),
            run.workdir / "reconstructions.png",
            run.workdir / "codebook.png",
        )


def fit(config: TrainConfig, workdir: str | Path) -> FitResult:
    """Train (or resume training) the VQ-VAE described by ``config`` in ``workdir``.

    Args:
      config: the run's :class:`TrainConfig`.
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

    config.validate()
    with hold(workdir):
        run = _setup(config, Path(workdir))
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
            with StopFlag() as stop, logging_redirect_tqdm():
                signum = _train(run, stop, bar)
                bar.close()
                if signum:
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
