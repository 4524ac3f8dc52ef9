"""A third kind of run, defined here, plugs into the machinery through its registry alone: it
trains, resumes bitwise after a stop, and a mismatched config is refused. Nothing in
jaxbasics.train names it (test_structure.py checks that the machinery names no model)."""

import dataclasses
import json
import math
import os
import signal
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbasics.train import TaskData, fit, read_run, register, run, task_for
from jaxbasics.train.config import RunConfig
from jaxbasics.train.optim import make_optimizer
from jaxbasics.train.resume import ConfigMismatchError
from jaxbasics.train.sharding import placed
from jaxbasics.train.signals import StopFlag
from jaxbasics.train.state import all_finite, init_key, per_compile_key, split_init, step_key


@dataclasses.dataclass(frozen=True)
class LineConfig(RunConfig):
    """A least-squares line through noisy points: y = slope x + intercept."""

    KIND: ClassVar[str] = "line"
    POSITIVE: ClassVar[tuple[str, ...]] = (*RunConfig.POSITIVE, "num_points")

    num_points: int = 64
    """How many (x, y) points to fit."""
    noise: float = 0.1
    """Standard deviation of the noise added to y, which a step draws with its key."""


@dataclasses.dataclass(frozen=True)
class Points:
    """A random-access source of ``{"x", "y"}`` points on the line y = 2x - 1."""

    x: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def read_batch(self, indices):
        x = self.x[np.asarray(indices)]
        return {"x": x, "y": 2 * x - 1}


@flax.struct.dataclass
class LineState:
    params: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array


class LineMetrics(flax.struct.PyTreeNode):
    loss: jax.Array
    finite: jax.Array


@per_compile_key
def _programs(config: LineConfig):
    tx = make_optimizer(config)

    @jax.jit
    def init(rng):
        model_key, state_rng = split_init(rng)
        params = {"w": jax.random.normal(model_key, (2,))}
        return LineState(params, tx.init(params), jnp.zeros((), jnp.int32), state_rng)

    def train_step(state, inputs):
        x, y = inputs
        y = y + config.noise * jax.random.normal(step_key(state.rng, state.step), y.shape)

        def loss_fn(params):
            return jnp.mean((params["w"][0] * x + params["w"][1] - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & all_finite(params)
        new = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
        return new, LineMetrics(loss, finite)

    abstract = jax.eval_shape(init, init_key(0))
    return init, jax.jit(train_step, donate_argnums=0), abstract


class _Last:
    def __init__(self, saved):
        self.losses = list((saved or {}).get("losses", []))

    def add(self, metrics):
        self.losses.append(float(metrics.loss))

    def records(self, history, images_per_s):
        return {"metrics": {"loss": history["loss"], "mean_loss": float(np.mean(self.losses))}}

    def saved(self):
        return {"losses": self.losses}


class LineTask:
    histories = ("train_loss",)
    logs = ()
    shown = ("loss",)
    migratable: ClassVar[dict] = {}

    def __init__(self, config: LineConfig):
        self.config = config

    def load_data(self, workdir):
        x = np.linspace(-1, 1, self.config.num_points, dtype=np.float32)
        return TaskData(Points(x), {"num_examples": len(x)})

    def abstract_state(self, sharding):
        return placed(_programs(self.config)[2], sharding)

    def fresh_state(self, dataset, shardings):
        state = _programs(self.config)[0](init_key(self.config.seed))
        return jax.device_put(state, shardings.replicated)

    def train_step(self):
        return _programs(self.config)[1]

    def step_inputs(self, batch):
        return batch["x"], batch["y"]

    def step_history(self, metrics):
        return {"train_loss": float(metrics.loss)}

    def interval(self, saved):
        return _Last(saved)

    def evaluate(self, state, max_batches, sharding):
        w = np.asarray(state.params["w"])
        return type("Evaluation", (), {"metrics": {"slope": float(w[0]), "intercept": float(w[1])}})

    def describe(self, metrics):
        return f"y = {metrics['slope']:.3f} x + {metrics['intercept']:.3f}"

    def checkpoint_meta(self):
        return {}

    def figures(self, workdir, history, evaluation, state, final):
        if final:
            (workdir / "line.json").write_text(json.dumps(evaluation.metrics))


register(LineConfig, LineTask)

CONFIG = LineConfig(
    batch_size=8,
    num_training_updates=60,
    learning_rate=0.1,
    log_every=10,
    eval_every=30,
    checkpoint_every=20,
    progress=False,
)


def _weights(workdir):
    run = read_run(workdir, LineConfig, lambda config, meta: _programs(config)[2])
    return run.step, np.asarray(run.state.params["w"]), run.meta["train_loss"]


def test_a_task_defined_outside_the_library_trains_through_fit(tmp_path):
    assert isinstance(task_for(CONFIG), LineTask)
    result = fit(CONFIG, tmp_path)
    assert result.step == 60 and not result.interrupted
    assert math.isclose(result.eval_metrics["slope"], 2.0, abs_tol=0.1)
    assert math.isclose(result.eval_metrics["intercept"], -1.0, abs_tol=0.1)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50, 60]
    assert (tmp_path / "line.json").exists()
    assert json.loads((tmp_path / "config.json").read_text())["num_points"] == 64


def test_a_resumed_run_of_it_is_bitwise_the_uninterrupted_one(tmp_path):
    """Run to step 25 (its last checkpoint there), then rerun to 60: the same weights, history
    and logs as a run straight to 60."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    fit(CONFIG, straight)
    assert fit(CONFIG.replace(num_training_updates=25), resumed).step == 25
    assert fit(CONFIG, resumed).step == 60
    (s1, w1, h1), (s2, w2, h2) = _weights(straight), _weights(resumed)
    assert s1 == s2 == 60 and h1 == h2
    np.testing.assert_array_equal(w1, w2)
    losses = [
        {
            r["step"]: r["loss"]
            for r in map(json.loads, (w / "metrics.jsonl").read_text().splitlines())
        }
        for w in (straight, resumed)
    ]
    assert losses[0].items() <= losses[1].items()  # the run to 25 logged step 25 too


def test_its_workdir_refuses_another_experiment_and_another_kind(tmp_path, workdir):
    fit(CONFIG.replace(num_training_updates=10), tmp_path)
    with pytest.raises(ConfigMismatchError, match=r"noise: saved 0.1, requested 0.5"):
        fit(CONFIG.replace(num_training_updates=20, noise=0.5), tmp_path)
    with pytest.raises(ConfigMismatchError, match="holds a VQ-VAE run, not a line's"):
        fit(CONFIG, workdir)


def test_a_second_config_class_of_the_same_kind_is_refused():
    @dataclasses.dataclass(frozen=True)
    class OtherLine(RunConfig):
        KIND: ClassVar[str] = "line"

    with pytest.raises(ValueError, match=r"test_train_task.LineConfig already trains 'line' runs"):
        register(OtherLine, LineTask)
    register(LineConfig, LineTask)  # the same class again (its module imported twice): fine
    assert type(task_for(CONFIG)) is LineTask


def test_names_earlier_versions_had_in_jaxbasics_train_say_where_they_went():
    import jaxbasics.train

    with pytest.raises(AttributeError, match=r"moved to jaxbasics.tasks.vqvae.load"):
        jaxbasics.train.load  # noqa: B018
    with pytest.raises(AttributeError, match=r"has no attribute 'nonsense'"):
        jaxbasics.train.nonsense  # noqa: B018


class StoppedWhileStarting(LineTask):
    """Ctrl-C while the run starts: before its data is read, or while its state is made."""

    when = "load_data"

    def load_data(self, workdir):
        if self.when == "load_data":
            os.kill(os.getpid(), signal.SIGINT)
        return super().load_data(workdir)

    def fresh_state(self, dataset, shardings):
        if self.when == "fresh_state":
            os.kill(os.getpid(), signal.SIGINT)
        return super().fresh_state(dataset, shardings)


def test_a_stop_while_a_new_run_starts_leaves_no_workdir(tmp_path, caplog):
    result = run(StoppedWhileStarting(CONFIG), tmp_path / "run")
    assert result.interrupted == signal.SIGINT and result.step == 0
    assert not (tmp_path / "run").exists()  # no config.json, data_stats.json, checkpoints/
    assert "before the first step; nothing was changed" in caplog.text


def test_a_stop_the_caller_caught_before_the_run_began_is_the_runs(tmp_path):
    """The CLI holds a StopFlag from before it reads the saved run: a signal then reaches the
    run's own StopFlag, which stops before writing anything."""
    with StopFlag() as outer:
        os.kill(os.getpid(), signal.SIGINT)
        result = run(LineTask(CONFIG), tmp_path / "run")
    assert outer.signum == result.interrupted == signal.SIGINT and result.step == 0
    assert not (tmp_path / "run").exists()


def test_a_stop_once_its_files_are_written_stops_after_one_step_with_a_checkpoint(tmp_path):
    task = StoppedWhileStarting(CONFIG)
    task.when = "fresh_state"
    result = run(task, tmp_path)
    assert result.interrupted == signal.SIGINT and result.step == 1
    assert fit(CONFIG.replace(num_training_updates=20), tmp_path).step == 20


def test_a_stop_while_a_saved_run_starts_changes_nothing(tmp_path):
    fit(CONFIG.replace(num_training_updates=10), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert run(StoppedWhileStarting(CONFIG.replace(num_training_updates=20)), tmp_path).interrupted
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert fit(CONFIG.replace(num_training_updates=20), tmp_path).step == 20
