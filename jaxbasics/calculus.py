"""Calculus: numerical derivatives, the limit table, ``jax.grad`` derivatives, tangent lines.

The running example is the notes' f(x) = 3x² − 4x, with f'(x) = 6x − 4, so
f(1) = −1 and f'(1) = 2.

Precision: the difference quotient (f(x + h) − f(x)) / h cancels catastrophically
in float32 (about 7 significant digits) once h is small; at h = 1e-5 float32 gives
≈ 2.0027 instead of 2.00003. :func:`limit_table` therefore computes in float64 by
default, inside the scoped ``jax.enable_x64(True)`` context manager (jax ≥ 0.8; it
is no longer in ``jax.experimental``). That switch is thread-local and undone on
exit, so 64-bit mode never leaks into the rest of the program. Do not set
``jax.config.update("jax_enable_x64", True)`` globally just for this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "LimitRow",
    "Tangent",
    "derivative",
    "limit_table",
    "numerical_derivative",
    "plot_tangent",
    "tangent_line",
]


class LimitRow(NamedTuple):
    """One row of :func:`limit_table`: the step ``h`` and the difference quotient."""

    h: float
    value: float


class Tangent(NamedTuple):
    """The tangent line ``y = slope * x + intercept``."""

    slope: jax.Array
    intercept: jax.Array


def numerical_derivative(f: Callable[[Any], Any], x: ArrayLike, h: ArrayLike) -> Any:
    """The forward difference quotient ``(f(x + h) - f(x)) / h``.

    Computed in the precision of ``f``, ``x`` and ``h``: plain Python floats and
    functions give float64; ``jnp`` arrays give float32 unless x64 is on (see the
    module docstring and :func:`limit_table`).

    Args:
      f: a scalar function.
      x: the point.
      h: the step.

    Returns:
      The approximation of f'(x).

    Example:
      >>> def f(x):
      ...     return 3 * x**2 - 4 * x
      >>> numerical_derivative(f, 1.0, 0.1)
      2.3
    """
    return (f(x + h) - f(x)) / h


def limit_table(
    f: Callable[[Any], Any], x: float, hs: Iterable[float], *, x64: bool = True
) -> list[LimitRow]:
    """The difference quotient of ``f`` at ``x`` for each step in ``hs``.

    The notes' ``for h in 10.0**np.arange(-1, -6, -1): (f(1+h)-f(1))/h``.

    Args:
      f: a scalar function written with Python arithmetic or ``jnp``.
      x: the point.
      hs: the steps.
      x64: compute in float64 (default), inside ``jax.enable_x64(True)`` so the
        switch is scoped to this call; with ``False`` compute in float32, which
        shows the cancellation error for small ``h``.

    Returns:
      A list of ``LimitRow(h, value)`` with Python floats.

    Example:
      >>> def f(x):
      ...     return 3 * x**2 - 4 * x
      >>> for h, v in limit_table(f, 1.0, 10.0 ** np.arange(-1, -6, -1)):
      ...     print(f"h={h:.5f}, numerical limit={v:.5f}")
      h=0.10000, numerical limit=2.30000
      h=0.01000, numerical limit=2.03000
      h=0.00100, numerical limit=2.00300
      h=0.00010, numerical limit=2.00030
      h=0.00001, numerical limit=2.00003
    """
    dtype = jnp.float64 if x64 else jnp.float32
    with jax.enable_x64(x64):
        xa = jnp.asarray(x, dtype)
        return [
            LimitRow(float(h), float(numerical_derivative(f, xa, jnp.asarray(h, dtype))))
            for h in hs
        ]


def derivative(f: Callable[..., Any]) -> Callable[..., jax.Array]:
    """The derivative function f' via reverse-mode autodiff (``jax.grad``).

    PyTorch computes a gradient as a side effect (``y.backward()`` then
    ``x.grad``); JAX transforms the function itself.

    Args:
      f: a scalar-valued function of a float argument.

    Returns:
      A function computing f'(x).

    Example:
      >>> df = derivative(lambda x: 3 * x**2 - 4 * x)
      >>> df(1.0)
      Array(2., dtype=float32, weak_type=True)
    """
    return jax.grad(f)


def tangent_line(f: Callable[[Any], Any], x0: ArrayLike) -> Tangent:
    """Slope and intercept of the tangent to ``f`` at ``x0``: y = f'(x0) x + f(x0) − f'(x0) x0.

    For f(x) = 3x² − 4x at x0 = 1: f(1) = −1 and f'(1) = 2, so the tangent is
    y = 2x − 3. The notes say "f'(1) = 3·1 − 4 = 2" and "y = 2x − 1"; both are
    wrong (f'(1) = 6·1 − 4, and 2·1 − 1 = 1 ≠ f(1)).

    Args:
      f: a scalar function differentiable at ``x0``.
      x0: the point of contact (a float).

    Returns:
      ``Tangent(slope, intercept)`` as scalar arrays; jit-friendly.

    Example:
      >>> slope, intercept = tangent_line(lambda x: 3 * x**2 - 4 * x, 1.0)
      >>> float(slope), float(intercept)
      (2.0, -3.0)
    """
    x0 = jnp.asarray(x0, dtype=jnp.result_type(float))
    value, slope = jax.value_and_grad(f)(x0)
    return Tangent(slope, value - slope * x0)


def plot_tangent(
    f: Callable[[Any], Any],
    x0: float,
    xs: ArrayLike | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """A matplotlib figure of ``f`` and its tangent line at ``x0``.

    Uses ``matplotlib.figure.Figure`` directly (no pyplot, no ``plt.show``), so
    it works on headless machines with any backend. Save it with
    ``fig.savefig("tangent.svg")``.

    Args:
      f: a scalar function written with ``jnp`` or Python arithmetic.
      x0: the point of contact.
      xs: the x values to plot; by default 200 points on [x0 − 1, x0 + 2].
      title: the axes title; by default the tangent's equation.

    Returns:
      A ``matplotlib.figure.Figure`` with one axes holding two lines.

    Example:
      >>> fig = plot_tangent(lambda x: 3 * x**2 - 4 * x, 1.0)
      >>> [line.get_label() for line in fig.axes[0].get_lines()]
      ['f(x)', 'tangent at x=1']
    """
    from matplotlib.figure import Figure

    xs = jnp.linspace(x0 - 1.0, x0 + 2.0, 200) if xs is None else jnp.asarray(xs, float)
    slope, intercept = (float(v) for v in tangent_line(f, x0))
    fig = Figure(figsize=(4.5, 3.5))
    ax = fig.add_subplot()
    ax.plot(np.asarray(xs), np.asarray(jax.vmap(f)(xs)), label="f(x)")
    ax.plot(np.asarray(xs), slope * np.asarray(xs) + intercept, "--", label=f"tangent at x={x0:g}")
    sign = "-" if intercept < 0 else "+"
    ax.set_title(title or f"y = {slope:g}x {sign} {abs(intercept):g}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend()
    fig.tight_layout()
    return fig
