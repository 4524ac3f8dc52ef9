"""Tests for jaxbasics.autodiff: the notes' gradients, accumulation, straight-through."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxbasics import autodiff as A

vectors = hnp.arrays(
    np.float32, st.integers(1, 8), elements=st.floats(-100, 100, width=32, allow_subnormal=False)
)


def test_grad_of_dot_notes_example():
    np.testing.assert_array_equal(A.grad_of_dot(jnp.arange(4.0)), [0.0, 4.0, 8.0, 12.0])
    np.testing.assert_array_equal(A.grad_of_dot([0, 1, 2, 3]), [0.0, 4.0, 8.0, 12.0])


@settings(max_examples=25, deadline=None)
@given(x=vectors)
def test_grad_of_dot_is_four_x(x):
    np.testing.assert_allclose(A.grad_of_dot(x), 4 * x, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(x=vectors)
def test_grad_of_sum_is_ones(x):
    np.testing.assert_array_equal(A.grad_of_sum(x), np.ones_like(x))


def linear_loss(params, batch):
    x, y = batch
    pred = x @ params["w"] + params["b"]
    return jnp.sum((pred - y) ** 2)


def make_batches(n, sizes=None):
    rng = np.random.default_rng(0)
    sizes = sizes or [4] * n
    return [
        (rng.normal(size=(s, 3)).astype(np.float32), rng.normal(size=(s,)).astype(np.float32))
        for s in sizes
    ]


PARAMS = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array(0.1)}


def test_accumulate_grads_equals_grad_of_summed_loss_for_a_pytree():
    batches = make_batches(3)
    total = A.accumulate_grads(linear_loss, PARAMS, batches)
    expected = jax.grad(lambda p: sum(linear_loss(p, b) for b in batches))(PARAMS)
    assert jax.tree.structure(total) == jax.tree.structure(PARAMS)
    for got, want in zip(jax.tree.leaves(total), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_accumulate_grads_hand_derived():
    # d/dw sum(w * x) = x, so the accumulated gradient is the sum of the batches.
    batches = [jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]), jnp.array([-1.0, 0.5])]
    total = A.accumulate_grads(lambda w, x: jnp.sum(w * x), jnp.zeros(2), batches)
    np.testing.assert_allclose(total, [3.0, 6.5])


def test_accumulate_grads_stacked_matches_sequence():
    batches = make_batches(4)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    seq = A.accumulate_grads(linear_loss, PARAMS, batches)
    scan = A.accumulate_grads(linear_loss, PARAMS, stacked, stacked=True)
    for a, b in zip(jax.tree.leaves(seq), jax.tree.leaves(scan), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def test_accumulate_grads_sequence_allows_ragged_batches():
    batches = make_batches(2, sizes=[2, 5])
    total = A.accumulate_grads(linear_loss, PARAMS, batches)
    parts = [jax.grad(linear_loss)(PARAMS, b) for b in batches]
    np.testing.assert_allclose(total["w"], parts[0]["w"] + parts[1]["w"], rtol=1e-5)


def test_accumulate_grads_of_no_batches_is_zero():
    total = A.accumulate_grads(linear_loss, PARAMS, [])
    assert all(not leaf.any() for leaf in jax.tree.leaves(total))


def test_no_grad_buffer_to_reset():
    # Two grad calls give the same answer: nothing accumulates between them (no zero_()).
    x = jnp.arange(4.0)
    np.testing.assert_array_equal(A.grad_of_dot(x), A.grad_of_dot(x))
    once = A.accumulate_grads(lambda w, _: 2 * jnp.dot(w, w), x, [None])
    twice = A.accumulate_grads(lambda w, _: 2 * jnp.dot(w, w), x, [None, None])
    np.testing.assert_array_equal(twice, 2 * once)


@pytest.fixture
def zq():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.normal(size=5), jnp.float32), jnp.asarray(
        rng.normal(size=5), jnp.float32
    )


def test_straight_through_forward_is_quantized(zq):
    z, q = zq
    np.testing.assert_allclose(A.straight_through(z, q), q, atol=1e-6)


def test_straight_through_jacobian_wrt_inputs_is_identity(zq):
    z, q = zq
    jac = jax.jacobian(A.straight_through, argnums=0)(z, q)
    np.testing.assert_array_equal(jac, np.eye(5))


def test_straight_through_sends_no_gradient_to_quantized(zq):
    z, q = zq
    jac = jax.jacobian(A.straight_through, argnums=1)(z, q)
    np.testing.assert_array_equal(jac, np.zeros((5, 5)))


def test_straight_through_under_jit_passes_upstream_gradient(zq):
    z, q = zq
    g = jax.jit(jax.grad(lambda z: jnp.sum(jnp.arange(5.0) * A.straight_through(z, q))))(z)
    np.testing.assert_array_equal(g, np.arange(5.0))
