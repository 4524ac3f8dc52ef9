"""What every model's train state and step share: its keys, the finite check, and the one cache
of compiled programs.

* A run's randomness is one base key, :func:`init_key` ``(config.seed)``: the model's
  initial weights come from its first half and the state keeps the second (:func:`split_init`)
  as raw key data (a plain array: Orbax saves it, ``jit`` donates it). The key of step ``s``
  is ``fold_in(base, s)`` (:func:`step_key`), so a resumed run draws exactly what the
  uninterrupted run would have, with no bookkeeping; a draw outside the steps (the VQ-VAE's
  k-means init) takes its own stream, ``fold_in(base, stream)`` with a stream no step reaches
  (steps stay below ``2**32 - 1``).
* :func:`all_finite` is the check each step reports in ``metrics.finite``.
* :func:`per_compile_key` caches what a config implies (graphdefs, the abstract state, the
  compiled init and steps) once per :meth:`~jaxbasics.train.config.RunConfig.compile_key`:
  runs and tests that differ only in length, logging, seed or data location share it, so a
  resume in the same process compiles nothing twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

F = TypeVar("F", bound=Callable[..., Any])


def init_key(seed: int) -> jax.Array:
    """The PRNG key a run's state is initialised from: ``jax.random.key(seed, impl="rbg")``.

    XLA:CPU compiles the default threefry generator slowly: initialising the VQ-VAE in one
    jitted program took ~35 s to compile with threefry keys and ~4 s with "rbg" keys
    (RngBitGenerator). Values are reproducible for a seed on a given backend; they may differ
    between CPU and GPU.

    >>> init_key(0).dtype
    key<rbg>
    """
    return jax.random.key(seed, impl="rbg")


def split_init(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(model_key, state_rng)``: the key of the model's initial weights, and the key data the
    state keeps (the base of every :func:`step_key`), from the :func:`init_key` ``rng``.

    >>> model_key, state_rng = split_init(init_key(0))
    >>> state_rng.dtype, state_rng.shape
    (dtype('uint32'), (4,))
    """
    model_key, state_key = jax.random.split(rng)
    return model_key, jax.random.key_data(state_key)


def step_key(rng: jax.Array, step: jax.Array | int) -> jax.Array:
    """The key of the step a state at ``step`` is about to take: ``fold_in(base, step)``, where
    ``rng`` is the state's key data (:func:`split_init`).

    >>> _, rng = split_init(init_key(0))
    >>> bool((jax.random.key_data(step_key(rng, 3)) == jax.random.key_data(step_key(rng, 3))).all())
    True
    """
    return jax.random.fold_in(jax.random.wrap_key_data(rng, impl="rbg"), step)


def all_finite(*trees: Any) -> jax.Array:
    """Whether every array of ``trees`` is finite, as a bool scalar (traceable).

    >>> bool(all_finite({"a": jnp.ones(2)}, [jnp.array([1.0, jnp.nan])]))
    False
    """
    leaves = [x for t in trees for x in jax.tree.leaves(t)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def per_compile_key(build: F) -> F:
    """``build(config, *args, **kwargs)``, computed once per ``(config.compile_key(), *args,
    **kwargs)`` and process.

    ``build`` is called with ``config.compile_key()``, not ``config``: the fields that cannot
    change a compiled program (seed, run length, paths...) are at their defaults there, so
    ``build`` must not read them (the key is an argument of what it builds).

    >>> from jaxbasics.train.config import RunConfig
    >>> calls = []
    >>> @per_compile_key
    ... def build(config, scale):
    ...     calls.append(config.seed)
    ...     return config.learning_rate * scale
    >>> build(RunConfig(seed=1), 2) == build(RunConfig(seed=2), 2), len(calls)
    (True, 1)
    """
    cached = functools.lru_cache(maxsize=8)(build)

    @functools.wraps(build)
    def get(config: Any, *args: Any, **kwargs: Any) -> Any:
        return cached(config.compile_key(), *args, **kwargs)

    get.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return get  # type: ignore[return-value]
