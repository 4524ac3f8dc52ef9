"""``fit(config, workdir)``: the training loop (the imperative shell around the pure step).

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

Rerunning the same command resumes from the latest good checkpoint, with the same
batches and bitwise the same parameters as an uninterrupted run. SIGTERM/SIGINT
save a checkpoint and stop cleanly.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxbasics.train.config import TrainConfig, incompatible_fields, load_config


class ConfigMismatchError(ValueError):
    """The workdir holds a run whose config is incompatible with the requested one."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped without saving that state."""


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


def sources(config: TrainConfig):
    """The run's (train, test) sources, read into memory once (CIFAR-10 is 150 MB)."""
    from jaxbasics.data.sources import get_source, in_memory

    kw = dict(data_dir=config.data_dir, seed=config.data_seed)
    train = get_source(config.dataset, "train", num_examples=config.num_train_examples, **kw)
    test = get_source(config.dataset, "test", num_examples=config.num_eval_examples, **kw)
    return in_memory(train), in_memory(test)


def data_variance(config: TrainConfig, train_source, workdir: Path) -> float:
    """The notes' ``np.var(train_images / 255)``, cached in ``workdir/data_stats.json``."""
    from jaxbasics.data.sources import data_variance as compute

    path = workdir / "data_stats.json"
    if path.exists():
        return float(json.loads(path.read_text())["data_variance"])
    var = float(compute(train_source))
    if jax.process_index() == 0:
        path.write_text(json.dumps({"data_variance": var, "num_examples": len(train_source)}))
    return var


def _check_workdir_config(config: TrainConfig, workdir: Path) -> None:
    old = load_config(workdir)
    if old is not None:
        diff = incompatible_fields(old, config)
        if diff:
            lines = "\n".join(
                f"  {k}: saved {a!r}, requested {b!r}"
                for k, a, b in ((k, *v) for k, v in sorted(diff.items()))
            )
            raise ConfigMismatchError(
                f"{workdir} holds a run with a different config; resuming would mix two "
                f"experiments. Differing fields:\n{lines}\n"
                "Rerun with the saved values to resume, or pass a new --workdir to start fresh."
            )
    if jax.process_index() == 0:
        tmp = workdir / "config.json.tmp"
        tmp.write_text(config.to_json())
        tmp.replace(workdir / "config.json")


def mesh_and_shardings(batch_size: int):
    """A 1-D ``data`` mesh over all devices, and (batch, replicated) shardings.

    Raises:
      ValueError: if ``batch_size`` does not divide across the devices.
    """
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

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
    return mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P())


def abstract_train_state(config: TrainConfig, sharding=None):
    """Shapes, dtypes and (replicated) shardings of the train state: a restore target.

    Args:
      config: the run's config.
      sharding: where restored arrays go; default: replicated over all devices.
    """
    from jaxbasics.train.state import init_state

    if sharding is None:
        sharding = mesh_and_shardings(jax.device_count())[2]
    abstract = jax.eval_shape(lambda: init_state(config))
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract
    )


def global_batch(local: np.ndarray, sharding) -> jax.Array:
    """This process's slice of the batch -> the global batch array, sharded on ``data``.

    With one process the slice is the whole batch; with several, each process read
    its own shard and the global array is assembled without copying between hosts.
    """
    return jax.make_array_from_process_local_data(sharding, local)


def host_local(x: jax.Array, sharding=None) -> np.ndarray:
    """The rows of a ``data``-sharded global array that this process fed in."""
    if sharding is None or jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(
        multihost_utils.global_array_to_host_local_array(x, sharding.mesh, sharding.spec)
    )


def evaluate(config, state, source, variance: float, *, max_batches: int = 0, sharding=None):
    """Evaluate ``state`` on ``source`` (the whole split unless ``max_batches``).

    Returns:
      ``(metrics, (originals, reconstructions), counts)``: the images are the first
      batch's; ``counts`` (K,) is how often each code was chosen over the evaluated batches.
    """
    from jaxbasics.data.pipeline import eval_dataset
    from jaxbasics.train.step import finalize_eval, make_eval_step

    eval_step = _cached(("eval", config.compile_key()), lambda: make_eval_step(config))
    sums, first = [], None
    batches = eval_dataset(
        source,
        batch_size=config.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        images, mask = batch["image"], batch["mask"]
        if sharding is not None:
            images, mask = global_batch(images, sharding), global_batch(mask, sharding)
        s, recon = eval_step(state, images, mask)
        sums.append(jax.device_get(s))
        if first is None:
            first = (np.asarray(batch["image"]), host_local(recon, sharding))
    counts = np.sum([np.asarray(s.code_counts) for s in sums], axis=0)
    return finalize_eval(sums, variance), first, counts


_COMPILED: dict[Any, Any] = {}


def _cached(key, build):
    """Compiled steps are shared by every fit/evaluate in this process (tests, resumes)."""
    if key not in _COMPILED:
        _COMPILED[key] = build()
    return _COMPILED[key]


class _StopFlag:
    """SIGTERM/SIGINT handler: remember the signal; stop after the current step."""

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        # A second signal gets the default behaviour (a hard stop).
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def fit(config: TrainConfig, workdir: str | Path) -> FitResult:
    """Train (or resume training) the VQ-VAE described by ``config`` in ``workdir``.

    Args:
      config: the run's :class:`TrainConfig`.
      workdir: where checkpoints, metrics and plots go; reusing it resumes.

    Returns:
      A :class:`FitResult`.

    Raises:
      ConfigMismatchError: ``workdir`` holds a run with an incompatible config.
      NonFiniteLossError: the loss became NaN/inf (the step is named; the last good
        checkpoint is kept).
    """
    from tqdm.auto import tqdm

    from jaxbasics import plots
    from jaxbasics.data.pipeline import iterator_state, restore_iterator, train_dataset
    from jaxbasics.train.checkpoint import Checkpointer
    from jaxbasics.train.metrics import MetricWriter
    from jaxbasics.train.state import codebook_of, init_state
    from jaxbasics.train.step import make_kmeans_init, make_train_step

    config.validate()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_workdir_config(config, workdir)
    train_source, test_source = sources(config)
    variance = data_variance(config, train_source, workdir)
    _, batch_sharding, replicated = mesh_and_shardings(config.batch_size)

    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints)
    abstract = abstract_train_state(config, replicated)
    dataset = train_dataset(
        train_source,
        batch_size=config.batch_size,
        seed=config.data_seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    restored = ckpt.restore_latest(abstract, quarantine=True)
    if restored is None:
        state = jax.device_put(init_state(config), replicated)
        if config.kmeans_init_steps:
            # A second iterator over the same dataset yields exactly the first training
            # batches and leaves the training iterator (and so resume) untouched.
            first_batches = iter(dataset)
            images = tuple(
                global_batch(next(first_batches)["image"], batch_sharding)
                for _ in range(config.kmeans_init_steps)
            )
            kmeans_init = _cached(
                ("kmeans", config.compile_key()), lambda: make_kmeans_init(config, replicated)
            )
            state = kmeans_init(state, images)
        batches = iter(dataset)
        history = {"train_res_recon_error": [], "train_res_perplexity": [], "loss": None}
        start = 0
    else:
        state, start = restored.state, restored.step
        batches = restore_iterator(dataset, restored.data_iter)
        history = {
            k: restored.meta[k] for k in ("train_res_recon_error", "train_res_perplexity", "loss")
        }
        print(f"Resuming from checkpoint at step {start} in {workdir}", flush=True)

    is_main = jax.process_index() == 0  # one process writes logs and plots
    writers = {name: MetricWriter(workdir, name, enabled=is_main) for name in ("metrics", "eval")}
    writers["usage"] = MetricWriter(workdir, "codebook_usage", tensorboard=False, enabled=is_main)
    for w in writers.values():
        w.truncate_after(start)

    train_step = _cached(
        ("train", config.compile_key(), variance), lambda: make_train_step(config, variance)
    )

    def save(step):
        meta = {
            "iteration": step,
            **history,
            "config": json.loads(config.to_json()),
            "data_variance": variance,
        }
        ckpt.save(step, state, meta, iterator_state(batches))

    def run_eval(step):
        metrics, first, counts = evaluate(
            config,
            state,
            test_source,
            variance,
            max_batches=config.eval_batches,
            sharding=batch_sharding,
        )
        writers["eval"].write(step, metrics)
        return metrics, first, counts

    step, last_saved, eval_metrics = start, start, {}
    bar = tqdm(
        total=config.num_training_updates,
        initial=start,
        disable=not (config.progress and is_main),
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    t_log, n_log = time.perf_counter(), 0
    interval_counts = np.zeros(config.num_embeddings, np.int64)
    interval_restarts = 0
    try:
        with _StopFlag() as stop:
            while step < config.num_training_updates and not stop.signum:
                images = next(batches)["image"]
                if step + 1 == config.debug_nan_step:
                    images = np.full_like(images, np.nan)
                state, metrics = train_step(state, global_batch(images, batch_sharding))
                metrics = jax.device_get(metrics)
                m = {k: float(v) for k, v in metrics._asdict().items() if k != "code_counts"}
                interval_counts += np.asarray(metrics.code_counts, np.int64)
                interval_restarts += int(m["restarted_codes"])
                step += 1
                if not math.isfinite(m["loss"]):
                    raise NonFiniteLossError(
                        f"non-finite loss ({m['loss']}) at step {step}; training stopped. The "
                        f"last good checkpoint (step {last_saved}) is kept in {ckpt.directory}. "
                        "Try a lower --learning-rate, or check the data for NaNs."
                    )
                history["train_res_recon_error"].append(m["recon_error"])
                history["train_res_perplexity"].append(m["perplexity"])
                history["loss"] = m["loss"]
                n_log += images.shape[0] * jax.process_count()
                bar.update(1)
                if step % config.log_every == 0 or step == config.num_training_updates:
                    now = time.perf_counter()
                    ips = n_log / (now - t_log)
                    t_log, n_log = now, 0
                    used = int(np.sum(interval_counts > 0))
                    writers["metrics"].write(
                        step,
                        {
                            "loss": m["loss"],
                            "recon_error": m["recon_error"],
                            "perplexity": m["perplexity"],
                            "images_per_s": ips,
                            "used_codes": used,
                            "dead_codes": config.num_embeddings - used,
                            "restarted_codes": interval_restarts,
                        },
                    )
                    writers["usage"].write(step, {"counts": interval_counts.tolist()})
                    interval_counts[:] = 0
                    interval_restarts = 0
                    bar.set_postfix(
                        recon=f"{m['recon_error']:.4f}",
                        perplexity=f"{m['perplexity']:.1f}",
                        img_s=f"{ips:.0f}",
                    )
                if step % config.eval_every == 0:
                    eval_metrics, _, eval_counts = run_eval(step)
                    bar.write(
                        f"step {step}: test recon_error {eval_metrics['recon_error']:.4f} "
                        f"perplexity {eval_metrics['perplexity']:.1f}"
                    )
                if step % config.checkpoint_every == 0:
                    save(step)
                    last_saved = step
            if step != last_saved:
                save(step)
                last_saved = step
        bar.close()
        if stop.signum:
            print(
                f"Stopped by signal {stop.signum} at step {step}; checkpoint saved. Rerun "
                "the same command to resume.",
                flush=True,
            )
            return FitResult(step, state, eval_metrics, stop.signum)
        if step % config.eval_every or not eval_metrics:
            eval_metrics, first, eval_counts = run_eval(step)
        else:
            _, first, _ = evaluate(
                config, state, test_source, variance, max_batches=1, sharding=batch_sharding
            )
        if is_main:
            plots.save(
                plots.training_curves(
                    history["train_res_recon_error"], history["train_res_perplexity"]
                ),
                workdir / "curves.png",
            )
            n = min(16, first[0].shape[0])
            plots.save(
                plots.image_grid([first[0][:n], first[1][:n]], ["originals", "reconstructions"]),
                workdir / "reconstructions.png",
            )
            plots.save(
                plots.codebook_figure(np.asarray(codebook_of(state)), eval_counts),
                workdir / "codebook.png",
            )
        return FitResult(step, state, eval_metrics, 0)
    finally:
        bar.close()
        for w in writers.values():
            w.close()
        ckpt.close()
