"""The train state pytree, the model structure derived once per config, and the state's init.

The model is split once: ``graphdef`` (static structure) plus arrays. The arrays that change
during training live in :class:`TrainState`, a plain pytree that ``jax.jit`` can donate and
Orbax can save. Everything static that a config implies (the graphdefs in training and eval
mode, the optimiser, the abstract state, the compiled programs) is derived once per
:meth:`~jaxbasics.train.config.TrainConfig.compile_key` by :func:`structure`, the one cache
of the training shell.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbasics.train.config import RunConfig, TrainConfig
from jaxbasics.vqvae import codebook, fsq
from jaxbasics.vqvae.ema import EMAVariable
from jaxbasics.vqvae.model import VQVAE


@flax.struct.dataclass
class TrainState:
    """Everything a training step reads and writes.

    Attributes:
      params: trainable ``nnx.Param`` arrays of the model.
      ema: the EMA codebook statistics (``EMAVariable``); empty for plain VQ.
      opt_state: the optax (Adam) state.
      code_usage: (K,) float32 EMA of each code's share of a step's assignments,
        relative to uniform (1 = fair share; see :mod:`jaxbasics.vqvae.codebook`).
        Tracked for both quantisers, outside the model, so the model's state (and
        the PyTorch converter) is unchanged; the dead-code restart reads it.
      step: int32 scalar, the number of updates applied.
      rng: uint32 key data of the run's base "rbg" key
        (``jax.random.wrap_key_data(rng, impl="rbg")``); a step's key is
        ``jax.random.fold_in(key, step)``, so the stream needs no bookkeeping.
    """

    params: Any
    ema: Any
    opt_state: Any
    code_usage: jax.Array
    step: jax.Array
    rng: jax.Array


class Structure(NamedTuple):
    """What a config implies before any array exists; see :func:`structure`.

    Attributes:
      config: the compile key it was derived from.
      train_def: the model's graphdef in training mode (the EMA quantiser updates).
      eval_def: the graphdef in eval mode (the EMA statistics are only read).
      tx: the optimiser.
      abstract: the :class:`TrainState` as ``jax.ShapeDtypeStruct`` leaves.
      init: ``init(key) -> TrainState``, compiled.
      compiled: the compiled steps of :mod:`jaxbasics.train.step`, by name.
    """

    config: TrainConfig
    train_def: nnx.GraphDef
    eval_def: nnx.GraphDef
    tx: optax.GradientTransformation
    abstract: TrainState
    init: Callable[[jax.Array], TrainState]
    compiled: dict[Any, Callable]


def model_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The :class:`VQVAE` constructor arguments a config selects.

    >>> model_kwargs(TrainConfig())["num_embeddings"]
    512
    """
    return dict(
        num_hiddens=config.num_hiddens,
        num_residual_hiddens=config.num_residual_hiddens,
        num_residual_layers=config.num_residual_layers,
        embedding_dim=config.embedding_dim,
        num_embeddings=config.num_embeddings,
        commitment_cost=config.commitment_cost,
        decay=config.decay,
        estimator=config.estimator,
        ema_init=config.ema_init,
        quantizer=config.quantizer,
        fsq_levels=config.levels,
        conv_form=config.conv_form,
        compute_dtype=config.compute_dtype,
    )


def learning_rate(config: RunConfig) -> float | optax.Schedule:
    """The learning rate: a constant, or warm-up plus cosine decay to 0 over the run.

    >>> sched = learning_rate(TrainConfig(lr_schedule="cosine", warmup_steps=10,
    ...                                   num_training_updates=110, learning_rate=1.0))
    >>> [round(float(sched(s)), 3) for s in (0, 5, 10, 60, 110)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if config.lr_schedule == "constant":
        return config.learning_rate
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=max(config.num_training_updates, config.warmup_steps + 1),
        end_value=0.0,
    )


def make_optimizer(config: RunConfig) -> optax.GradientTransformation:
    """Adam, as in the notes (``torch.optim.Adam(model.parameters(), lr=learning_rate)``).

    PyTorch's defaults (betas 0.9/0.999, eps 1e-8, no amsgrad) are optax's. A schedule
    adds its step count to the optimiser state, so a resumed run continues it exactly.
    """
    return optax.adam(learning_rate(config))


def init_key(seed: int) -> jax.Array:
    """The PRNG key a run's state is initialised from: ``jax.random.key(seed, impl="rbg")``.

    XLA:CPU compiles the default threefry generator slowly: initialising this model
    in one jitted program took ~35 s to compile with threefry keys and ~4 s with
    "rbg" keys (RngBitGenerator). Values are reproducible for a seed on a given
    backend; they may differ between CPU and GPU.

    >>> init_key(0).dtype
    key<rbg>
    """
    return jax.random.key(seed, impl="rbg")


@functools.lru_cache(maxsize=8)
def _structure(key: TrainConfig) -> Structure:
    abstract_model = nnx.eval_shape(lambda: VQVAE(**model_kwargs(key), rngs=nnx.Rngs(0)))
    abstract_model.train()
    train_def = nnx.split(abstract_model, nnx.Param, EMAVariable)[0]
    abstract_model.eval()
    eval_def = nnx.split(abstract_model, nnx.Param, EMAVariable)[0]
    tx = make_optimizer(key)

    @jax.jit
    def init(rng: jax.Array) -> TrainState:
        model_key, state_key = jax.random.split(rng)
        model = VQVAE(**model_kwargs(key), rngs=nnx.Rngs(params=model_key))
        _, params, ema = nnx.split(model, nnx.Param, EMAVariable)
        return TrainState(
            params=params,
            ema=ema,
            opt_state=tx.init(params),
            code_usage=jnp.ones((key.num_embeddings,), jnp.float32),
            step=jnp.zeros((), jnp.int32),
            rng=jax.random.key_data(state_key),
        )

    abstract = jax.eval_shape(init, init_key(key.seed))
    return Structure(key, train_def, eval_def, tx, abstract, init, {})


def structure(config: TrainConfig) -> Structure:
    """The :class:`Structure` of ``config``, derived once per compile key and process.

    Runs and tests that differ only in seed, logging, data or (at a constant learning rate)
    length share it, and with it every compiled program, so a resume in the same process
    compiles nothing again.

    >>> from jaxbasics.train.presets import preset
    >>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
    ...              num_embeddings=8)
    >>> structure(cfg) is structure(cfg.replace(eval_every=3, seed=1))
    True
    >>> cfg.lr_schedule, structure(cfg) is structure(cfg.replace(num_training_updates=3))
    ('cosine', False)
    >>> structure(cfg).abstract.code_usage.shape
    (8,)
    """
    return _structure(config.compile_key())


def init_state(config: TrainConfig) -> TrainState:
    """A fresh :class:`TrainState` from ``config.seed``, built in one compiled program.

    >>> from jaxbasics.train.presets import preset
    >>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
    ...              num_embeddings=8)
    >>> int(init_state(cfg).step)
    0
    """
    return structure(config).init(init_key(config.seed))


def codebook_of(config: TrainConfig, state: TrainState) -> jax.Array:
    """The (K, D) codebook of ``state``: an EMA statistic, a parameter, or under FSQ the fixed
    grid of its levels (:func:`jaxbasics.vqvae.fsq.grid`), which no state holds.

    >>> from jaxbasics.train.presets import preset
    >>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
    ...              num_embeddings=8)
    >>> codebook_of(cfg, init_state(cfg)).shape
    (8, 4)
    """
    if config.quantizer == "fsq":
        return fsq.grid(config.levels)
    return codebook.codebook_of(state.params, state.ema, ema_quantizer=config.decay > 0)


def to_model(config: TrainConfig, params: Any, ema: Any, *, train: bool = False) -> VQVAE:
    """A :class:`VQVAE` holding ``params`` and ``ema`` (eval mode unless ``train``).

    What :func:`jaxbasics.train.io.load` returns and the tests run; the arrays are used as
    they are, nothing is copied.

    >>> from jaxbasics.train.presets import preset
    >>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
    ...              num_embeddings=8)
    >>> state = init_state(cfg)
    >>> to_model(cfg, state.params, state.ema).encode(jnp.zeros((1, 32, 32, 3))).shape
    (1, 8, 8)
    """
    s = structure(config)
    return nnx.merge(s.train_def if train else s.eval_def, params, ema)
