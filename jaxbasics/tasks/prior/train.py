"""Training a prior over a VQ-VAE's codes: its state, steps and Task (stage two, shared loop).

A prior run models the code maps of a trained VQ-VAE (:mod:`jaxbasics.tasks.prior.data`)
with a :class:`~jaxbasics.prior.TransformerPrior`, :class:`~jaxbasics.prior.PixelCNNPrior` or
:class:`~jaxbasics.prior.MaskGITPrior`, trained by its ``loss`` (cross-entropy of every code,
or of the hidden codes under a random mask, drawn from the step's key) with Adam. With
class labels, each step replaces a tenth of them (``label_dropout``) by the "no class"
label, so the one model samples with and without a class, and with classifier-free
guidance. A step's key is ``fold_in(base, step)`` (:func:`~jaxbasics.train.state.step_key`).

What it writes besides the loop's files:

* ``metrics.jsonl``: ``loss`` (nats per code), ``bits_per_code`` and ``images_per_s`` (code
  maps per second) of the interval's last step;
* ``eval.jsonl``: the held-out ``bits_per_code`` (given the label, when there are labels;
  a masked prior's: per hidden code, under fixed random masks of the schedule),
  ``bits_per_code_unconditional`` (the "no class" label), and the two floors: ``uniform_bits``
  (log2 K) and ``entropy_bits`` (the entropy of the training codes' frequencies); with
  ``--judge``, ``class_accuracy``: the share of the ``samples.png`` samples that a held-out
  judge recognises as their class (:mod:`jaxbasics.tasks.prior.samples`);
* ``samples.png`` at every evaluation (one row per class, or two rows without classes),
  decoded by the VQ-VAE; ``curves.png`` at the end; ``prior_codes.npz``, the cached codes.

:func:`~jaxbasics.tasks.prior.trained.load_prior` reads a trained prior back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxbasics import plots
from jaxbasics.judge import load_judge
from jaxbasics.prior import MaskGITPrior, PixelCNNPrior, TransformerPrior
from jaxbasics.prior import drop_labels as drop
from jaxbasics.tasks.prior.config import PriorConfig
from jaxbasics.tasks.prior.data import (
    CACHE,
    check_same_stats,
    code_data,
    read_cache,
    same_maps,
    vqvae_of,
)
from jaxbasics.tasks.prior.samples import class_accuracy, judge_of, sample_rows
from jaxbasics.train.files import save_figure
from jaxbasics.train.optim import make_optimizer
from jaxbasics.train.saved import data_stats
from jaxbasics.train.sharding import eval_batches, placed
from jaxbasics.train.state import all_finite, init_key, per_compile_key, split_init, step_key
from jaxbasics.train.task import TaskData, register


@flax.struct.dataclass
class PriorState:
    """What a prior's training step reads and writes.

    Attributes:
      params: the prior's ``nnx.Param`` arrays.
      opt_state: the optax (Adam) state.
      step: int32 scalar, the number of updates applied.
      rng: the run's base key data (:func:`~jaxbasics.train.state.split_init`).
    """

    params: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array


class PriorMetrics(NamedTuple):
    """One training step's report: ``loss`` (nats per code), ``bits_per_code``, ``finite``."""

    loss: jax.Array
    bits_per_code: jax.Array
    finite: jax.Array


class PriorShape(NamedTuple):
    """What the codes fix of a prior: K, the map's (h, w), and the number of classes (0 for
    an unconditional prior)."""

    num_codes: int
    height: int
    width: int
    num_classes: int

    @classmethod
    def of(cls, stats: dict[str, Any], config: PriorConfig) -> PriorShape:
        """The shape of ``config``'s prior on codes described by ``stats``
        (:meth:`~jaxbasics.tasks.prior.data.CodeData.stats`)."""
        classes = len(stats["class_names"]) if config.conditional else 0
        return cls(stats["num_codes"], stats["height"], stats["width"], classes)


def make_prior(config: PriorConfig, shape: PriorShape, rngs: nnx.Rngs) -> Any:
    """The prior ``config`` selects, for codes of ``shape``.

    >>> p = make_prior(PriorConfig(dim=16, depth=1, heads=2), PriorShape(8, 2, 2, 0), nnx.Rngs(0))
    >>> p(jnp.zeros((1, 2, 2), jnp.int32)).shape
    (1, 2, 2, 8)
    """
    common = dict(num_classes=shape.num_classes, rngs=rngs)
    if config.prior == "pixelcnn":
        return PixelCNNPrior(
            shape.num_codes,
            shape.height,
            shape.width,
            channels=config.channels,
            num_layers=config.num_layers,
            kernel_size=config.kernel_size,
            **common,
        )
    model = MaskGITPrior if config.prior == "maskgit" else TransformerPrior
    return model(
        shape.num_codes,
        shape.height,
        shape.width,
        dim=config.dim,
        depth=config.depth,
        heads=config.heads,
        **common,
    )


class Structure(NamedTuple):
    """Everything static about a prior run, derived once per compile key and shape.

    Attributes:
      graphdef: the prior's graph; ``nnx.merge(graphdef, params)`` is the model.
      abstract: the :class:`PriorState` as shapes and dtypes.
      init: ``init(key) -> PriorState``, compiled.
      train_step: ``(state, (codes, labels)) -> (state, PriorMetrics)``, compiled, donating.
      eval_step: ``(state, (codes, labels, mask)) -> sums`` of bits over the real maps.
    """

    graphdef: nnx.GraphDef
    abstract: PriorState
    init: Any
    train_step: Any
    eval_step: Any


@per_compile_key
def structure(config: PriorConfig, shape: PriorShape) -> Structure:
    """The :class:`Structure` of a prior run of ``shape``, once per compile key and shape.

    >>> s = structure(PriorConfig(dim=16, depth=1, heads=2), PriorShape(8, 2, 2, 3))
    >>> int(s.init(init_key(0)).step)
    0
    """
    graphdef = nnx.split(nnx.eval_shape(lambda: make_prior(config, shape, nnx.Rngs(0))))[0]
    tx = make_optimizer(config)
    classes = shape.num_classes

    @jax.jit
    def init(rng: jax.Array) -> PriorState:
        model_key, state_rng = split_init(rng)
        params = nnx.split(make_prior(config, shape, nnx.Rngs(params=model_key)))[1]
        return PriorState(params, tx.init(params), jnp.zeros((), jnp.int32), state_rng)

    def train_step(state: PriorState, inputs: Any) -> tuple[PriorState, PriorMetrics]:
        codes, labels = inputs
        key = step_key(state.rng, state.step)
        mask = jax.random.fold_in(key, 1)
        if classes:
            labels = drop(labels, key, num_classes=classes, rate=config.label_dropout)
        else:
            labels = None

        def loss_fn(params: Any) -> jax.Array:  # a masked prior draws its masks with `mask`
            return nnx.merge(graphdef, params).loss(codes, labels, mask)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = PriorMetrics(
            loss=loss,
            bits_per_code=loss / math.log(2.0),
            finite=jnp.isfinite(loss) & all_finite(params),
        )
        return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics

    def eval_step(state: PriorState, inputs: Any) -> dict[str, jax.Array]:
        codes, labels, mask = inputs
        model = nnx.merge(graphdef, state.params)
        w = mask.astype(jnp.float32)
        sums = {"maps": jnp.sum(w)}
        key = jax.random.key(config.seed)  # a masked prior's masks: the same at every eval

        def bits(labels: jax.Array | None) -> jax.Array:
            return model.loss(codes, labels, key, per_example=True) / math.log(2.0)

        sums["bits_unconditional"] = jnp.sum(bits(None) * w)
        if classes:
            sums["bits"] = jnp.sum(bits(labels) * w)
        return sums

    abstract = jax.eval_shape(init, init_key(config.seed))
    return Structure(
        graphdef, abstract, init, jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)
    )


class PriorEvaluation(NamedTuple):
    """A prior's evaluation: ``metrics`` is the ``eval.jsonl`` record; ``samples``, the
    judged samples' ``(rows, titles)`` (:func:`sample_rows`), or None without a judge."""

    metrics: dict[str, Any]
    samples: Any = None


class _LastStep:
    """A prior's log interval: its record is the interval's last step (nothing to sum)."""

    def add(self, metrics: Any) -> None:
        pass

    def records(self, history: dict[str, Any], images_per_s: float) -> dict[str, dict]:
        bits = history["train_bits_per_code"][-1]
        return {
            "metrics": {
                "loss": history["loss"],
                "bits_per_code": bits,
                "images_per_s": images_per_s,
            }
        }

    def saved(self) -> dict[str, Any]:
        return {}


class PriorTask:
    """Stage two: a prior over a VQ-VAE's code maps (see the module docstring).

    Args:
      config: the run's :class:`~jaxbasics.tasks.prior.config.PriorConfig`.
    """

    histories = ("train_bits_per_code",)
    logs = ()
    shown = ("bits_per_code", "images_per_s")
    migratable: dict[str, Any] = {}

    def __init__(self, config: PriorConfig):
        self.config = config
        self.loaded: Any = None  # the VQ-VAE (tasks.vqvae.trained.Loaded), once load_data ran
        self.data: Any = None  # its CodeData
        self.stats: dict[str, Any] = {}
        self.judge: Any = None  # --judge's judge, once load_data ran

    @property
    def structure(self) -> Structure:
        return structure(self.config, PriorShape.of(self.stats, self.config))

    def load_data(self, workdir: Path) -> TaskData:
        cache = read_cache(workdir / CACHE) if (workdir / CACHE).exists() else None
        saved = data_stats(workdir)
        trained_on = [
            f for f in (cache and cache.codebook_sha256, (saved or {}).get("codebook_sha256")) if f
        ]
        judge = self._judge(workdir) if self.config.judge is not None else None
        self.loaded, fingerprint = vqvae_of(self.config.model, workdir, trained_on)
        self.data = cache or code_data(self.config, self.loaded, fingerprint)
        codes = self.config.codes
        if cache and codes is not None and Path(codes).exists():  # moved away: the cache holds
            if not same_maps(cache, code_data(self.config, self.loaded, fingerprint)):
                raise ValueError(
                    f"--codes {codes} holds other code maps than {workdir} was trained on (its "
                    f"{CACHE}); resume with the file it started from, or start a new --workdir."
                )
        source = f"--codes {codes}" if codes else f"the codes of --model {self.config.model}"
        check_same_stats(saved, self.data, str(workdir / CACHE) if cache else source, workdir)
        self.stats = self.data.stats()
        if judge is not None:  # read before the codes are encoded; its classes now
            self.judge = judge_of(judge, self.config.judge, self.stats["class_names"])
        if len(self.data.train) < self.config.batch_size:
            raise ValueError(
                f"the prior's train split has {len(self.data.train)} code maps, fewer than one "
                f"batch of {self.config.batch_size}; use a smaller --batch-size or more maps."
            )
        write = None if cache else (lambda w: self.data.save(w / CACHE))
        return TaskData(self.data.train, self.stats, write)

    def _judge(self, workdir: Path) -> tuple[Any, dict]:
        """``--judge``'s judge and settings, read before anything is encoded or written."""
        folder = Path(self.config.judge)
        if folder.resolve() == workdir.resolve():
            raise ValueError(f"--workdir {workdir} is --judge's folder; pass another --workdir.")
        try:
            return load_judge(folder)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"--judge {folder} holds no judge (no judge.json): pass the folder judge.py "
                "made, or a bare --judge to judge none."
            ) from None

    def abstract_state(self, sharding: Any) -> Any:
        return placed(self.structure.abstract, sharding)

    def fresh_state(self, dataset: Any, shardings: Any) -> PriorState:
        return jax.device_put(self.structure.init(init_key(self.config.seed)), shardings.replicated)

    def train_step(self) -> Any:
        return self.structure.train_step

    def step_inputs(self, batch: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return batch["codes"], batch["label"]

    def step_history(self, metrics: Any) -> dict[str, float]:
        return {"train_bits_per_code": float(metrics.bits_per_code)}

    def interval(self, saved: dict[str, Any] | None) -> _LastStep:
        return _LastStep()

    def evaluate(self, state: PriorState, max_batches: int, sharding: Any) -> PriorEvaluation:
        """Held-out bits per code, given the label and with none, against the two floors."""
        eval_step = self.structure.eval_step
        batches = eval_batches(
            self.data.test,
            self.config.batch_size,
            ("codes", "label", "mask"),
            sharding,
            max_batches,
        )
        sums = [eval_step(state, inputs) for _, inputs in batches]
        total = {k: float(sum(s[k] for s in jax.device_get(sums))) for k in sums[0]}
        maps = total["maps"]
        record = {"bits_per_code": total.get("bits", total["bits_unconditional"]) / maps}
        if "bits" in total:  # a conditional prior: also without the label
            record["bits_per_code_unconditional"] = total["bits_unconditional"] / maps
        record |= {k: self.stats[k] for k in ("uniform_bits", "entropy_bits")}
        record["num_maps"] = int(maps)
        if self.judge is None:
            return PriorEvaluation(record)
        samples = self._samples(state)
        record["class_accuracy"] = class_accuracy(self.judge, samples[0])
        record["judged_samples"] = sum(len(row) for row in samples[0])
        return PriorEvaluation(record, samples)

    def _samples(self, state: PriorState) -> tuple[list[np.ndarray], list[str]]:
        prior = nnx.merge(self.structure.graphdef, state.params)
        return sample_rows(prior, self.loaded.model, self.stats["class_names"], self.config.seed)

    def describe(self, metrics: dict[str, Any]) -> str:
        per = "hidden code" if self.config.prior == "maskgit" else "code"
        judged = (
            f"; the judge recognises {metrics['class_accuracy']:.0%} of the samples"
            if "class_accuracy" in metrics
            else ""
        )
        return (
            f"held-out {metrics['bits_per_code']:.3f} bits per {per} (uniform "
            f"{metrics['uniform_bits']:.2f}, code frequencies {metrics['entropy_bits']:.2f})"
            + judged
        )

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"codes": self.stats}

    def figures(
        self, workdir: Path, history: dict[str, Any], evaluation: Any, state: Any, final: bool
    ) -> None:
        """``samples.png`` after every evaluation (the judged samples, when there is a
        judge); ``curves.png`` at the end too."""
        rows, titles = getattr(evaluation, "samples", None) or self._samples(state)
        save_figure(plots.image_grid(rows, titles), workdir / "samples.png")
        if final:
            save_figure(
                plots.training_curve(history["train_bits_per_code"], "bits per code (train)"),
                workdir / "curves.png",
            )


register(PriorConfig, PriorTask)
