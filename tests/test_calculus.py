"""Tests for jaxbasics.calculus: the notes' limit table, grad derivatives, the tangent line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbasics import calculus as C

HS = 10.0 ** np.arange(-1, -6, -1)


def f(x):
    return 3 * x**2 - 4 * x


def test_numerical_derivative_python_floats():
    # (f(1 + h) - f(1)) / h = 2 + 3h exactly for this quadratic.
    assert C.numerical_derivative(f, 1.0, 0.1) == pytest.approx(2.3, abs=1e-12)
    assert C.numerical_derivative(f, 2.0, 1.0) == pytest.approx(6 * 2 - 4 + 3, abs=1e-12)


def test_limit_table_reproduces_the_notes():
    rows = C.limit_table(f, 1.0, HS)
    printed = [f"h={h:.5f}, numerical limit={v:.5f}" for h, v in rows]
    assert printed == [
        "h=0.10000, numerical limit=2.30000",
        "h=0.01000, numerical limit=2.03000",
        "h=0.00100, numerical limit=2.00300",
        "h=0.00010, numerical limit=2.00030",
        "h=0.00001, numerical limit=2.00003",
    ]
    for row in rows:
        assert isinstance(row, C.LimitRow) and isinstance(row.value, float)
        assert row.value == pytest.approx(2 + 3 * row.h, abs=1e-9)


def test_limit_table_float32_shows_cancellation():
    value = C.limit_table(f, 1.0, [1e-5], x64=False)[0].value
    assert abs(value - 2.00003) > 1e-4  # float32 has ~7 digits; 2 are lost per decade of h


def test_limit_table_does_not_leak_x64():
    C.limit_table(f, 1.0, HS)
    assert jnp.asarray(1.0).dtype == jnp.float32
    with pytest.raises(ZeroDivisionError):
        C.limit_table(lambda x: 1 / 0, 1.0, HS)
    assert jnp.asarray(1.0).dtype == jnp.float32
    assert not jax.config.jax_enable_x64


@settings(max_examples=25, deadline=None)
@given(x=st.floats(-10, 10))
def test_derivative_is_six_x_minus_four(x):
    assert float(C.derivative(f)(x)) == pytest.approx(6 * x - 4, rel=1e-5, abs=1e-4)


def test_derivative_of_sin_is_cos():
    xs = jnp.linspace(-3, 3, 7)
    np.testing.assert_allclose(jax.vmap(C.derivative(jnp.sin))(xs), jnp.cos(xs), rtol=1e-6)


def test_tangent_line_at_one_is_2x_minus_3_not_the_notes_2x_minus_1():
    slope, intercept = C.tangent_line(f, 1.0)
    assert (float(slope), float(intercept)) == (2.0, -3.0)
    assert float(slope) * 1 + float(intercept) == f(1.0) == -1.0


@pytest.mark.parametrize("x0", [-2.0, 0.0, 0.5, 3.0])
def test_tangent_line_general_point(x0):
    slope, intercept = C.tangent_line(f, x0)
    # f'(x0) = 6 x0 - 4 and the line passes through (x0, f(x0)): intercept = -3 x0².
    assert float(slope) == pytest.approx(6 * x0 - 4)
    assert float(intercept) == pytest.approx(-3 * x0**2, abs=1e-5)


def test_tangent_line_is_jittable():
    slope, intercept = jax.jit(lambda x0: C.tangent_line(f, x0))(1.0)
    assert (float(slope), float(intercept)) == (2.0, -3.0)


def test_plot_tangent_draws_f_and_its_tangent(tmp_path):
    fig = C.plot_tangent(f, 1.0)
    ax = fig.axes[0]
    curve, tangent = ax.get_lines()
    xs, ys = tangent.get_data()
    np.testing.assert_allclose(ys, 2 * np.asarray(xs) - 3, atol=1e-5)
    np.testing.assert_allclose(curve.get_ydata(), f(np.asarray(curve.get_xdata())), atol=1e-4)
    assert ax.get_title() == "y = 2x - 3"
    out = tmp_path / "tangent.svg"
    fig.savefig(out)
    assert out.read_text().lstrip().startswith("<?xml")


def test_plot_tangent_custom_xs():
    fig = C.plot_tangent(f, 0.0, xs=[0.0, 1.0, 2.0], title="t")
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 3
    assert fig.axes[0].get_title() == "t"
