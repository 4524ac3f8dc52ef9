"""The train state pytree and its initialisation.

The model is split once: ``graphdef`` (static structure) plus arrays. The arrays
that change during training live in :class:`TrainState`, a plain pytree that
``jax.jit`` can donate and Orbax can save.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbasics.train.config import TrainConfig
from jaxbasics.vqvae.model import VQVAE, init_key
from jaxbasics.vqvae.quantizer import EMAVariable


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
    )


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam with the config's learning rate, as in the notes (``torch.optim.Adam``).

    ``amsgrad=False`` and PyTorch's eps 1e-8 match optax's defaults.
    """
    return optax.adam(config.learning_rate)


def graphdefs(config: TrainConfig) -> tuple[nnx.GraphDef, nnx.GraphDef]:
    """Static model structure in training and in eval mode (no arrays are allocated).

    Eval mode differs only in that the EMA quantiser reads its statistics instead of
    updating them.
    """
    abstract = nnx.eval_shape(lambda: VQVAE(**model_kwargs(config), rngs=nnx.Rngs(0)))
    abstract.train()
    train_def = nnx.split(abstract, nnx.Param, EMAVariable)[0]
    abstract.eval()
    eval_def = nnx.split(abstract, nnx.Param, EMAVariable)[0]
    return train_def, eval_def


def init_state(config: TrainConfig) -> TrainState:
    """A fresh :class:`TrainState` from ``config.seed``, built in one compiled program.

    The compiled initialiser is cached per model configuration, so resumes and tests
    in one process compile it once. Keys are "rbg" keys (see
    :func:`jaxbasics.vqvae.model.init_key`): far faster to compile on CPU.

    >>> from jaxbasics.train.config import preset
    >>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
    ...              num_embeddings=8)
    >>> int(init_state(cfg).step)
    0
    """
    return _compiled_init(config.compile_key())(init_key(config.seed))


@functools.lru_cache(maxsize=8)
def _compiled_init(config: TrainConfig) -> Callable:
    tx = make_optimizer(config)

    @jax.jit
    def init(key):
        model_key, state_key = jax.random.split(key)
        model = VQVAE(**model_kwargs(config), rngs=nnx.Rngs(params=model_key))
        _, params, ema = nnx.split(model, nnx.Param, EMAVariable)
        return TrainState(
            params=params,
            ema=ema,
            opt_state=tx.init(params),
            code_usage=jnp.ones((config.num_embeddings,), jnp.float32),
            step=jnp.zeros((), jnp.int32),
            rng=jax.random.key_data(state_key),
        )

    return init


def codebook_of(state: TrainState) -> jax.Array:
    """The (K, D) codebook of ``state``: an EMA statistic or a parameter.

    >>> from jaxbasics.train.config import preset
    >>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
    ...              num_embeddings=8)
    >>> codebook_of(init_state(cfg)).shape
    (8, 4)
    """
    holder = state.ema if "vq" in state.ema else state.params
    return holder["vq"]["codebook"][...]


def to_model(config: TrainConfig, state: TrainState, *, train: bool = False) -> VQVAE:
    """A :class:`VQVAE` holding ``state``'s arrays (eval mode unless ``train``)."""
    train_def, eval_def = graphdefs(config)
    return nnx.merge(train_def if train else eval_def, state.params, state.ema)
