"""Training a VQ-VAE: its state, ``train_step``, ``eval_step`` and k-means init, and its Task.

Read it as Flax's ImageNet example's ``train.py``: :func:`init_state` creates the train state,
:func:`make_train_step` and :func:`make_eval_step` build the pure steps (compiled once per
config: :func:`~jaxbasics.train.state.per_compile_key`), and :class:`VQVAETask` plugs them into
the shared loop (:func:`jaxbasics.train.loop.run`), which owns everything else. One step:

1. ``nnx.merge(train_def, params, ema)`` is the :class:`~jaxbasics.vqvae.model.VQVAE` in
   training mode; ``model(images)`` encodes, quantises (the EMA statistics update) and decodes;
2. ``loss = recon_error + vq_loss`` (:func:`~jaxbasics.vqvae.model.vqvae_loss`), its gradient
   by ``jax.value_and_grad``, and the optax Adam update of the parameters;
3. the usage EMA of the codes, and dead codes restarted from this batch's encoder outputs;
4. ``metrics.finite``: whether every new parameter and statistic is finite.

The state buffers are donated, so XLA updates parameters and Adam moments in place. Batches may
be sharded over a device mesh's ``data`` axis; the state is replicated and every reduction
(loss, perplexity, EMA statistics) is over the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxbasics.plots import training_curves
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.data import sources
from jaxbasics.tasks.vqvae.evaluate import EvalSums, UsageInterval, evaluate, save_figures
from jaxbasics.tasks.vqvae.gradients import DiscState, gradients_of, init_disc, train_discriminator
from jaxbasics.train.files import save_figure
from jaxbasics.train.optim import make_optimizer
from jaxbasics.train.sharding import global_batch, placed
from jaxbasics.train.state import all_finite, init_key, per_compile_key, split_init, step_key
from jaxbasics.train.task import TaskData, register
from jaxbasics.vqvae import codebook, fsq, perceptual
from jaxbasics.vqvae.ema import EMAVariable
from jaxbasics.vqvae.model import VQVAE
from jaxbasics.vqvae.quantizer import code_counts, perplexity

# The k-means init's fold_in stream: one no training step reaches (steps stay below it).
KMEANS_STREAM = 2**32 - 1


@flax.struct.dataclass
class VQVAEState:
    """Everything a VQ-VAE training step reads and writes: a pytree ``jit`` donates and Orbax
    saves.

    Attributes:
      params: trainable ``nnx.Param`` arrays of the model.
      ema: the EMA codebook statistics (``EMAVariable``); empty for plain VQ and FSQ.
      opt_state: the optax (Adam) state.
      code_usage: (K,) float32 EMA of each code's share of a step's assignments, relative
        to uniform (1 = fair share; :mod:`jaxbasics.vqvae.codebook`), kept outside the
        model so that its state (and the PyTorch converter) is the notes'.
      step: int32 scalar, the number of updates applied.
      rng: the run's base key data (:func:`~jaxbasics.train.state.split_init`).
    """

    params: Any
    ema: Any
    opt_state: Any
    code_usage: jax.Array
    step: jax.Array
    rng: jax.Array


@flax.struct.dataclass
class VQGANState(VQVAEState):
    """A :class:`VQVAEState` with a discriminator (``disc_weight > 0``): its parameters,
    optimiser state and LeCam anchors (:class:`~jaxbasics.tasks.vqvae.gradients.DiscState`).
    An export keeps only ``params`` and ``ema``."""

    disc: DiscState


class Structure(NamedTuple):
    """What a config implies before any array exists (:func:`structure`): the model's graphdef
    in training mode (the EMA quantiser updates) and eval mode (it only reads), the optimiser,
    the state's shapes and dtypes, and ``init(key) -> VQVAEState``, compiled."""

    train_def: nnx.GraphDef
    eval_def: nnx.GraphDef
    tx: optax.GradientTransformation
    abstract: VQVAEState
    init: Callable[[jax.Array], VQVAEState]


@per_compile_key
def structure(config: VQVAEConfig) -> Structure:
    """The :class:`Structure` of ``config``, derived once per compile key and process.

    >>> from jaxbasics.tasks.vqvae.presets import preset
    >>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
    ...              num_embeddings=8)
    >>> structure(cfg) is structure(cfg.replace(eval_every=3, seed=1))
    True
    >>> structure(cfg).abstract.code_usage.shape
    (8,)
    """
    abstract_model = nnx.eval_shape(lambda: VQVAE(**config.model_kwargs(), rngs=nnx.Rngs(0)))
    abstract_model.train()
    train_def = nnx.split(abstract_model, nnx.Param, EMAVariable)[0]
    abstract_model.eval()
    eval_def = nnx.split(abstract_model, nnx.Param, EMAVariable)[0]
    tx = make_optimizer(config)

    @jax.jit
    def init(rng: jax.Array) -> VQVAEState:
        model_key, state_rng = split_init(rng)
        model = VQVAE(**config.model_kwargs(), rngs=nnx.Rngs(params=model_key))
        _, params, ema = nnx.split(model, nnx.Param, EMAVariable)
        usage = jnp.ones((config.num_embeddings,), jnp.float32)
        step = jnp.zeros((), jnp.int32)
        state = VQVAEState(params, ema, tx.init(params), usage, step, state_rng)
        if not config.adversarial:
            return state
        # The discriminator's own stream: the VQ-VAE starts as it would without one.
        disc = init_disc(config, jax.random.fold_in(model_key, 1))
        return VQGANState(**vars(state), disc=disc)

    abstract = jax.eval_shape(init, init_key(config.seed))
    return Structure(train_def, eval_def, tx, abstract, init)


def init_state(config: VQVAEConfig) -> VQVAEState:
    """A fresh :class:`VQVAEState` from ``config.seed`` (Flax's ``create_train_state``).

    >>> from jaxbasics.tasks.vqvae.presets import preset
    >>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
    ...              num_embeddings=8)
    >>> state = init_state(cfg)
    >>> int(state.step), codebook_of(cfg, state).shape
    (0, (8, 4))
    >>> to_model(cfg, state.params, state.ema).encode(jnp.zeros((1, 32, 32, 3))).shape
    (1, 8, 8)
    """
    return structure(config).init(init_key(config.seed))


def to_model(config: VQVAEConfig, params: Any, ema: Any, *, train: bool = False) -> VQVAE:
    """The :class:`VQVAE` holding ``params`` and ``ema`` (eval mode unless ``train``); the arrays
    are used as they are, nothing is copied."""
    s = structure(config)
    return nnx.merge(s.train_def if train else s.eval_def, params, ema)


def codebook_of(config: VQVAEConfig, state: VQVAEState) -> jax.Array:
    """The (K, D) codebook of ``state``: an EMA statistic, a parameter, or under FSQ the fixed
    grid of its levels (:func:`jaxbasics.vqvae.fsq.grid`), which no state holds."""
    if config.quantizer == "fsq":
        return fsq.grid(config.levels)
    return codebook.codebook_of(state.params, state.ema, ema_quantizer=config.decay > 0)


class TrainMetrics(NamedTuple):
    """What one training step reports (the notes' per-step histories come from these): the
    batch's ``loss``, ``recon_error``, ``vq_loss`` and ``perplexity``; ``code_counts`` (K,), how
    many latent vectors chose each code; ``restarted_codes``; ``finite``, whether the loss
    and every parameter and EMA statistic after the step are finite; and the ``adversarial``
    metrics of a VQGAN-style run (:mod:`~jaxbasics.tasks.vqvae.gradients`; else empty)."""

    loss: jax.Array
    recon_error: jax.Array
    vq_loss: jax.Array
    perplexity: jax.Array
    code_counts: jax.Array
    restarted_codes: jax.Array
    finite: jax.Array
    adversarial: dict[str, jax.Array]


def latents(model: VQVAE, images: jax.Array) -> jax.Array:
    """The encoder outputs z (B, h, w, D) that the quantiser sees, gradients stopped."""
    return jax.lax.stop_gradient(model.latents(images))


def _set_codes(config: VQVAEConfig, state: VQVAEState, rows, codes, per_step) -> VQVAEState:
    edited = codebook.set_codes(
        codebook.CodebookState(state.params, state.ema, state.opt_state),
        rows,
        codes,
        per_step,
        ema_quantizer=config.decay > 0,
    )
    return state.replace(**edited._asdict())


@per_compile_key
def make_train_step(
    config: VQVAEConfig, data_variance: float
) -> Callable[[VQVAEState, jax.Array], tuple[VQVAEState, TrainMetrics]]:
    """The jitted, donating ``train_step(state, images) -> (state, metrics)``: the notes' loop
    body (``optimizer.zero_grad(); loss.backward(); optimizer.step()``), then the usage EMA and,
    with ``config.dead_code_threshold > 0``, every code whose usage fell below it restarted
    from a random encoder output z of this (global) batch drawn with the step's key
    (:func:`~jaxbasics.vqvae.codebook.restart_dead_codes`); its usage resets to 1. With the
    threshold at 0 the restart is not even traced. ``images`` are (B, H, W, 3) float32 in
    [-0.5, 0.5]; ``data_variance`` that of the training images scaled to [0, 1].
    """
    s = structure(config)
    k = config.num_embeddings
    grads_of = gradients_of(config, s.train_def, data_variance)

    def train_step(state: VQVAEState, images: jax.Array) -> tuple[VQVAEState, TrainMetrics]:
        loss, grads, ema, out, rec, extra = grads_of(state, images)
        updates, opt_state = s.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        counts = code_counts(out.indices, k)
        usage = codebook.usage_update(state.code_usage, counts)
        new_state = state.replace(params=params, ema=ema, opt_state=opt_state, step=state.step + 1)
        if config.adversarial:
            disc, d_metrics = train_discriminator(config, state.disc, state.step, images, out.recon)
            new_state, extra = new_state.replace(disc=disc), extra | d_metrics
        restarted = jnp.zeros((), jnp.float32)
        if config.dead_code_threshold > 0:
            # z of this step's forward pass (same params; XLA shares the computation).
            z = latents(nnx.merge(s.train_def, state.params, state.ema), images)
            flat = z.reshape(-1, config.embedding_dim)
            r = codebook.restart_dead_codes(
                codebook_of(config, new_state),
                usage,
                flat,
                step_key(state.rng, state.step),
                config.dead_code_threshold,
            )
            new_state = _set_codes(config, new_state, r.dead, r.codebook, flat.shape[0])
            usage = jnp.where(r.dead, 1.0, usage)
            restarted = jnp.sum(r.dead).astype(jnp.float32)
        trained = (new_state.params, new_state.ema, new_state.disc if config.adversarial else None)
        finite = jnp.isfinite(loss) & all_finite(*trained)
        metrics = TrainMetrics(
            loss, rec, out.vq_loss, out.perplexity, counts, restarted, finite, extra
        )
        return new_state.replace(code_usage=usage), metrics

    return jax.jit(train_step, donate_argnums=0)


@per_compile_key
def make_kmeans_init(
    config: VQVAEConfig, replicated: jax.sharding.Sharding | None = None
) -> Callable[[VQVAEState, tuple[jax.Array, ...]], VQVAEState]:
    """The jitted ``kmeans_init(state, batches) -> state`` of a fresh state: the codebook becomes
    k-means++ seeds plus 10 Lloyd steps (:func:`~jaxbasics.vqvae.codebook.kmeans`) on the
    encoder outputs of ``batches`` (a tuple of image batches), its EMA statistics set to match,
    drawn with the k-means stream of the state's key (:data:`KMEANS_STREAM`).
    With ``replicated``, the outputs are gathered onto it first, so that every device clusters
    the whole set as one device would.
    """
    s = structure(config)
    k = config.num_embeddings

    def kmeans_init(state: VQVAEState, batches: tuple[jax.Array, ...]) -> VQVAEState:
        model = nnx.merge(s.train_def, state.params, state.ema)
        z = jax.lax.map(lambda x: latents(model, x), jnp.stack(batches))  # (S, B, h, w, D)
        flat = z.reshape(-1, config.embedding_dim)
        if flat.shape[0] < k:
            raise ValueError(
                f"k-means needs at least num_embeddings={k} encoder outputs, got "
                f"{flat.shape[0]} from {len(batches)} batches; raise kmeans_init_steps."
            )
        if replicated is not None:
            flat = jax.lax.with_sharding_constraint(flat, replicated)
        centers = codebook.kmeans(flat, k, step_key(state.rng, KMEANS_STREAM))
        per_step = flat.shape[0] // len(batches)
        return _set_codes(config, state, jnp.ones((k,), bool), centers, per_step)

    return jax.jit(kmeans_init)


@per_compile_key
def make_eval_step(
    config: VQVAEConfig,
) -> Callable[[VQVAEState, jax.Array, jax.Array], tuple[EvalSums, jax.Array]]:
    """The jitted ``eval_step(state, images, mask) -> (sums, recon)`` in eval mode (the EMA
    statistics are read, never updated). ``mask`` (B,) marks the real examples of a padded
    last batch; padded ones add nothing to the sums."""
    s = structure(config)
    k = config.num_embeddings

    def eval_step(state: VQVAEState, images: jax.Array, mask: jax.Array):
        out = nnx.merge(s.eval_def, state.params, state.ema)(images)
        w = mask.astype(jnp.float32)
        per_example = jnp.sum((out.recon - images) ** 2, axis=(1, 2, 3))
        idx = jnp.where(mask[:, None, None], out.indices, k)
        counts = code_counts(idx, k + 1)[:-1]  # masked -> dropped bin
        pixels = jnp.sum(w) * math.prod(images.shape[1:])
        return EvalSums(jnp.sum(per_example * w), pixels, counts, perplexity(counts)), out.recon

    return jax.jit(eval_step)


class VQVAETask:
    """Stage one as a :class:`~jaxbasics.train.task.Task`: a VQ-VAE trained on images.

    It keeps the notes' per-step histories (``train_res_recon_error``,
    ``train_res_perplexity``) in every checkpoint, writes per-code usage counts to
    ``codebook_usage.jsonl`` each log interval
    (:class:`~jaxbasics.tasks.vqvae.evaluate.UsageInterval`), and at the end draws
    ``curves.png``, ``reconstructions.png`` and ``codebook.png``.
    """

    histories = ("train_res_recon_error", "train_res_perplexity")
    logs = ("codebook_usage",)
    shown = ("recon_error", "perplexity", "images_per_s")
    # Checkpoints from before code_usage existed restore with every code at its fair share.
    migratable = {"code_usage": lambda leaf: np.ones(leaf.shape, leaf.dtype)}

    def __init__(self, config: VQVAEConfig):
        self.config = config
        if config.perceptual_weight:
            self.shown = (*self.shown, "lpips")
        if config.adversarial:
            self.shown = (*self.shown, "disc_loss")
        self.data: Any = None  # the run's image splits (sources()), once load_data has run

    def load_data(self, workdir: Path) -> TaskData:
        if self.config.perceptual_weight and not perceptual.available():
            raise ValueError(perceptual.MISSING)  # before anything is written
        self.data = sources(self.config, workdir)
        stats = {"data_variance": self.data.variance, "num_examples": len(self.data.train)}
        if self.data.files_sha256 is not None:
            stats["files_sha256"] = self.data.files_sha256
        return TaskData(self.data.train, stats)

    def abstract_state(self, sharding: Any) -> VQVAEState:
        return placed(structure(self.config).abstract, sharding)

    def fresh_state(self, dataset: Any, shardings: Any) -> VQVAEState:
        """:func:`init_state` on the devices, k-means-initialised if the config asks."""
        state = jax.device_put(init_state(self.config), shardings.replicated)
        if self.config.kmeans_init_steps:
            # A second iterator over the dataset yields exactly the first training batches and
            # leaves the training iterator (and so resume) untouched.
            first = iter(dataset)
            images = tuple(
                global_batch(next(first)["image"], shardings.batch)
                for _ in range(self.config.kmeans_init_steps)
            )
            state = make_kmeans_init(self.config, shardings.replicated)(state, images)
        return state

    def train_step(self) -> Callable:
        return make_train_step(self.config, self.data.variance)

    def step_inputs(self, batch: dict[str, Any]) -> Any:
        return batch["image"]

    def step_history(self, metrics: TrainMetrics) -> dict[str, float]:
        return {
            "train_res_recon_error": float(metrics.recon_error),
            "train_res_perplexity": float(metrics.perplexity),
        }

    def interval(self, saved: dict[str, Any] | None) -> UsageInterval:
        return UsageInterval(self.config.num_embeddings, saved)

    def evaluate(self, state: VQVAEState, max_batches: int, sharding: Any) -> Any:
        return evaluate(
            make_eval_step(self.config),
            state,
            self.data.test,
            self.data.variance,
            self.config.batch_size,
            max_batches=max_batches,
            sharding=sharding,
        )

    def describe(self, metrics: dict[str, Any]) -> str:
        return (
            f"test recon_error {metrics['recon_error']:.4f} perplexity {metrics['perplexity']:.1f}"
        )

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"data_variance": self.data.variance}

    def figures(
        self, workdir: Path, history: dict[str, Any], evaluation: Any, state: Any, final: bool
    ) -> None:
        """At the end: ``curves.png``, ``reconstructions.png`` and ``codebook.png``."""
        if not final:
            return
        curves = training_curves(history["train_res_recon_error"], history["train_res_perplexity"])
        save_figure(curves, workdir / "curves.png")
        book = np.asarray(codebook_of(self.config, state))
        save_figures(evaluation, book, workdir / "reconstructions.png", workdir / "codebook.png")


register(VQVAEConfig, VQVAETask)
