"""Exploring an API from Python: the JAX counterparts of ``dir(...)`` and ``help(...)``."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

__all__ = ["describe", "public_api"]


def public_api(module: ModuleType) -> list[str]:
    """The sorted public names of a module (``dir(module)`` without ``_``-prefixed names).

    The notes' ``dir(torch.distributions)``; try ``public_api(jax.random)``.

    Args:
      module: any object with attributes, usually a module.

    Returns:
      The names not starting with an underscore, sorted.

    Example:
      >>> import jax
      >>> names = public_api(jax.random)
      >>> "normal" in names, "split" in names, any(n.startswith("_") for n in names)
      (True, True, False)
    """
    return sorted(name for name in dir(module) if not name.startswith("_"))


def describe(obj: Any) -> str:
    """A short ``help(obj)``: the name, the signature and the first docstring paragraph.

    The notes' ``help(torch.ones)``; try ``print(describe(jnp.ones))``.

    Args:
      obj: a function, class, method or module.

    Returns:
      A string: ``module.name(signature)`` (the signature where ``inspect`` can
      find one), a blank line, and the docstring's first paragraph (or
      "(no docstring)").

    Example:
      >>> import jax.numpy as jnp
      >>> print(describe(jnp.ones))  # doctest: +ELLIPSIS
      jax.numpy.ones(shape: ..., dtype: ... = None, *, ...) -> ...
      <BLANKLINE>
      Create an array full of ones.
    """
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    module = getattr(obj, "__module__", None)
    if module and not inspect.ismodule(obj):
        name = f"{module}.{name}"
    header = name
    if callable(obj):
        try:
            header += str(inspect.signature(obj))
        except (TypeError, ValueError):
            pass  # builtins and some C callables have no introspectable signature
    doc = inspect.getdoc(obj)
    summary = doc.strip().split("\n\n", 1)[0] if doc else "(no docstring)"
    return f"{header}\n\n{summary}"
