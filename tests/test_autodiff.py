"""Tests for jaxbasics.autodiff: the notes' gradients, accumulation, straight-through."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxbasics import autodiff as A
from jaxbasics.data.shapes import shapes
from jaxbasics.tasks.vqvae.train import init_state, make_train_step

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


# --- the rotation trick, against the matrix of Fifty et al. (2024), eq. 2-4, built explicitly


def rotation_matrix(z, q):
    """lambda and the explicit D x D matrix R = I - 2 r r^T + 2 q_hat e^T, in float64."""
    z, q = np.asarray(z, np.float64), np.asarray(q, np.float64)
    e, q_hat = z / np.linalg.norm(z), q / np.linalg.norm(q)
    r = (e + q_hat) / np.linalg.norm(e + q_hat)
    eye = np.eye(z.shape[-1])
    return np.linalg.norm(q) / np.linalg.norm(z), eye - 2 * np.outer(r, r) + 2 * np.outer(q_hat, e)


def _well_posed(z, q):
    """Norms away from 0 and z, q away from antipodal, where R is well conditioned."""
    nz, nq = np.linalg.norm(z), np.linalg.norm(q)
    return nz > 1e-2 and nq > 1e-2 and np.linalg.norm(z / nz + q / nq) > 0.1


def _pair(draw, d):
    elements = st.floats(-10, 10, width=32, allow_subnormal=False)
    z = draw(hnp.arrays(np.float32, d, elements=elements))
    q = draw(hnp.arrays(np.float32, d, elements=elements))
    return z, q


@st.composite
def vector_triples(draw):
    """(z, q, g): an encoder output, its code and a decoder gradient, D in 2..8."""
    d = draw(st.integers(2, 8))
    z, q = _pair(draw, d)
    g = draw(hnp.arrays(np.float32, d, elements=st.floats(-10, 10, width=32)))
    return z, q, g


@jax.jit
def _rotation_vjp(z, q, g):
    """The gradient the rotation trick passes to z for a decoder gradient g (jit: cached)."""
    return jax.vjp(lambda z: A.rotation_trick(z, q), z)[1](g)[0]


_rotation_jit = jax.jit(A.rotation_trick)
_rotation_jacobian = jax.jit(jax.jacobian(A.rotation_trick))


def _bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**32 - 1), st.floats(0.0, 100.0))
def test_rotation_trick_forward_is_exactly_quantized(d, seed, scale):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(3, d)) * scale).astype(np.float32)
    q = rng.normal(size=(3, d)).astype(np.float32)
    q[0, 0], q[1, 0] = -0.0, 0.0  # signed zeros survive too
    np.testing.assert_array_equal(_bits(A.rotation_trick(z, q)), _bits(q))  # bitwise, eager
    np.testing.assert_array_equal(_bits(_rotation_jit(z, q)), _bits(q))  # and compiled


@settings(max_examples=60, deadline=None)
@given(vector_triples())
def test_rotation_trick_gradient_is_lambda_r_transpose_g(zqg):
    z, q, g = zqg
    assume(_well_posed(z, q))
    lam, rot = rotation_matrix(z, q)
    got = _rotation_vjp(z, q, g)
    want = lam * rot.T @ g
    scale = lam * np.linalg.norm(g) + 1e-6
    np.testing.assert_allclose(np.asarray(got) / scale, want / scale, atol=2e-4)


def test_rotation_trick_batched_gradient_is_per_vector():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 3, 4, 6)).astype(np.float32)
    q = (z + rng.normal(size=z.shape)).astype(np.float32)
    g = rng.normal(size=z.shape).astype(np.float32)
    got = np.asarray(_rotation_vjp(z, q, g))
    want = np.empty_like(got)
    for i in np.ndindex(z.shape[:-1]):
        lam, rot = rotation_matrix(z[i], q[i])
        want[i] = lam * rot.T @ g[i]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**32 - 1))
def test_rotation_trick_jacobian_is_lambda_times_a_rotation_taking_z_to_q(d, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=d).astype(np.float32)
    q = rng.normal(size=d).astype(np.float32)
    jac = np.asarray(_rotation_jacobian(z, q), np.float64)
    lam, rot = rotation_matrix(z, q)
    np.testing.assert_allclose(jac, lam * rot, atol=1e-5)
    # the explicit R: orthogonal, det +1 (a rotation, not a reflection), R e = q_hat
    np.testing.assert_allclose(rot @ rot.T, np.eye(d), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    e, q_hat = (np.float64(v) / np.linalg.norm(np.float64(v)) for v in (z, q))
    np.testing.assert_allclose(rot @ e, q_hat, atol=1e-12)
    # and the map the gradient flows through takes z onto q
    np.testing.assert_allclose(jac @ z, q, rtol=1e-5, atol=1e-5)


def test_rotation_trick_is_straight_through_when_q_equals_z():
    z = jnp.array([[0.3, -1.2, 2.0], [5.0, 0.0, -0.1]])
    jac = jax.jacobian(A.rotation_trick)(z, z).reshape(6, 6)
    np.testing.assert_allclose(jac, np.eye(6), atol=1e-6)


def test_rotation_trick_sends_no_gradient_to_quantized():
    rng = np.random.default_rng(1)
    z, q = (jnp.asarray(rng.normal(size=(2, 5)), jnp.float32) for _ in range(2))
    jac = jax.jacobian(A.rotation_trick, argnums=1)(z, q)
    np.testing.assert_array_equal(jac, np.zeros((2, 5, 2, 5)))


def test_rotation_trick_falls_back_to_straight_through_for_zero_length_z():
    z = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
    q = jnp.array([[1.0, -1.0, 0.5], [2.0, 0.0, 1.0]])
    out = A.rotation_trick(z, q)
    np.testing.assert_array_equal(out, q)
    jac = np.asarray(jax.jacobian(A.rotation_trick)(z, q))  # (2, 3, 2, 3)
    assert np.isfinite(jac).all()
    np.testing.assert_array_equal(jac[0, :, 0, :], np.eye(3))  # the zero row: identity
    np.testing.assert_array_equal(jac[0, :, 1, :], 0.0)  # rows stay independent
    lam, rot = rotation_matrix(z[1], q[1])
    np.testing.assert_allclose(jac[1, :, 1, :], lam * rot, atol=1e-6)


def test_vqvae_with_the_rotation_trick_trains():
    """A tiny VQ-VAE learns a fixed batch through the rotation trick, which is really in use."""
    from conftest import small_config

    images = jnp.asarray(shapes("train", 8).read_batch(range(8))["image"] / 255.0 - 0.5)
    # Plain VQ: the codebook learns by gradient too, so a few steps move every part.
    config = small_config(
        estimator="rotation",
        decay=0.0,
        learning_rate=2e-3,
        dead_code_threshold=0.0,
        kmeans_init_steps=0,
    )
    step = make_train_step(config, 0.07)
    state, errors = init_state(config), []
    for _ in range(12):
        state, metrics = step(state, images)
        errors.append(float(metrics.recon_error))
    assert np.isfinite(errors).all() and errors[-1] < 0.95 * errors[0], errors
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    # one step from the same state with straight-through moves the encoder differently
    ste = make_train_step(config.replace(estimator="ste"), 0.07)
    a, _ = ste(init_state(config), images)
    b, _ = make_train_step(config, 0.07)(init_state(config), images)
    enc_a, enc_b = (np.asarray(jax.tree.leaves(s.params["encoder"])[0]) for s in (a, b))
    assert not np.array_equal(enc_a, enc_b)
