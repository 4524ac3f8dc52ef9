"""Tests for jaxbasics.tensors: values against hand-derived math, properties, error paths."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbasics import tensors as T

SETTINGS = settings(max_examples=25, deadline=None)


# --------------------------------------------------------------------------- creation


def test_arange_is_float32_zero_to_n_minus_one():
    x = T.arange(12)
    assert x.dtype == jnp.float32
    np.testing.assert_array_equal(x, np.arange(12.0))


def test_randn_is_deterministic_per_key_and_accepts_both_shape_forms():
    key = jax.random.key(0)
    a, b = T.randn(key, 3, 4), T.randn(key, (3, 4))
    assert a.shape == (3, 4) and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, T.randn(jax.random.key(1), 3, 4))


def test_normal_is_mean_plus_sqrt_variance_times_standard_normal():
    key = jax.random.key(3)
    z = T.normal(key, (3, 4), mean=5.0, variance=2.0)
    np.testing.assert_allclose(z, 5.0 + np.sqrt(2.0) * T.randn(key, 3, 4), rtol=1e-6)


def test_normal_moments():
    z = np.asarray(T.normal(jax.random.key(0), (200_000,), mean=5.0, variance=2.0))
    # Standard errors: sqrt(2/n) ≈ 0.003 for the mean, 2*sqrt(2/n) ≈ 0.006 for the variance.
    assert abs(z.mean() - 5.0) < 0.02
    assert abs(z.var() - 2.0) < 0.04


def test_normal_rejects_negative_variance():
    with pytest.raises(ValueError, match="variance must be >= 0, got -1.0"):
        T.normal(jax.random.key(0), (2,), 0.0, -1.0)


def test_tensor_zeros_ones_zeros_like():
    t = T.tensor([[2, 1, 4, 3], [1, 2, 3, 4], [4, 3, 2, 1]])
    assert t.shape == (3, 4) and jnp.issubdtype(t.dtype, jnp.integer)
    assert T.tensor([1.0, 2]).dtype == jnp.float32
    np.testing.assert_array_equal(T.zeros((2, 3, 4)), np.zeros((2, 3, 4)))
    np.testing.assert_array_equal(T.ones((2, 3, 4)), np.ones((2, 3, 4)))
    assert T.zeros(5).shape == (5,)
    z = T.zeros_like(jnp.ones((2, 2), jnp.int32))
    assert z.dtype == jnp.int32 and not z.any()


# --------------------------------------------------------------------------- shape


def test_numel_and_item():
    assert T.numel(T.zeros((2, 3, 4))) == 24
    assert T.numel(jnp.float32(1)) == 1
    assert T.item(T.tensor([1.0])) == 1.0
    assert isinstance(T.item(T.tensor([[3]])), int)


@pytest.mark.parametrize("shape", [(2,), (2, 2), (0,)])
def test_item_rejects_other_than_one_element(shape):
    with pytest.raises(ValueError, match=rf"exactly one element, got shape \({shape[0]}"):
        T.item(jnp.zeros(shape))


@pytest.mark.parametrize("shape", [(3, 4), (-1, 4), (3, -1), (2, -1, 3), (-1,)])
def test_reshape_infers_minus_one(shape):
    x = T.arange(12)
    y = T.reshape(x, shape)
    assert y.size == 12
    assert all(s == t for s, t in zip(shape, y.shape, strict=True) if s != -1)
    np.testing.assert_array_equal(y.ravel(), x)


@SETTINGS
@given(
    dims=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    which=st.integers(0, 3),
    data=st.data(),
)
def test_reshape_with_minus_one_matches_numpy(dims, which, data):
    n = int(np.prod(dims))
    x = np.arange(n, dtype=np.float32)
    target = data.draw(st.permutations(dims))
    target[which % len(target)] = -1
    np.testing.assert_array_equal(T.reshape(x, tuple(target)), x.reshape(target))


def test_reshape_errors_name_both_shapes():
    x = T.arange(12)
    with pytest.raises(ValueError, match=r"shape \(12,\).*into shape \(5, -1\)"):
        T.reshape(x, (5, -1))
    with pytest.raises(ValueError, match=r"shape \(12,\).*into shape \(5, 3\)"):
        T.reshape(x, (5, 3))
    with pytest.raises(ValueError, match=r"only one dimension can be inferred.*\(-1, -1\)"):
        T.reshape(x, (-1, -1))
    with pytest.raises(ValueError, match="invalid size"):
        T.reshape(x, (-2, -6))


def test_cat_shapes_and_values():
    X = T.reshape(T.arange(12), (3, 4))
    Y = T.tensor([[2.0, 1, 4, 3], [1, 2, 3, 4], [4, 3, 2, 1]])
    P, Q = T.cat((X, Y), dim=0), T.cat((X, Y), dim=1)
    assert P.shape == (6, 4) and Q.shape == (3, 8)
    np.testing.assert_array_equal(P[3:], Y)
    np.testing.assert_array_equal(Q[:, :4], X)
    np.testing.assert_array_equal(T.cat([X, Y], dim=-1), Q)


def test_cat_errors_name_axis_and_shapes():
    with pytest.raises(ValueError, match=r"axis 1 differs: shapes \[\(3, 4\), \(3, 5\)\]"):
        T.cat([jnp.zeros((3, 4)), jnp.zeros((3, 5))], dim=0)
    with pytest.raises(ValueError, match=r"same number of axes.*\(3, 4\).*\(3,\)"):
        T.cat([jnp.zeros((3, 4)), jnp.zeros(3)], dim=0)
    with pytest.raises(ValueError, match="non-empty"):
        T.cat([], dim=0)
    with pytest.raises(IndexError, match=r"dim 2 is out of range.*\[-2, 1\]"):
        T.cat([jnp.zeros((3, 4))], dim=2)


# --------------------------------------------------------------------------- layout


def test_layout_round_trip_and_element_positions():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)  # (B, C, H, W)
    y = T.bchw_to_bhwc(x)
    assert y.shape == (2, 4, 5, 3)
    assert y[1, 2, 3, 0] == x[1, 0, 2, 3]
    np.testing.assert_array_equal(T.bhwc_to_bchw(y), x)
    assert T.bchw_to_bhwc(T.zeros((256, 64, 8, 8))).shape == (256, 8, 8, 64)


@pytest.mark.parametrize("fn", [T.bchw_to_bhwc, T.bhwc_to_bchw])
def test_layout_rejects_non_4d(fn):
    with pytest.raises(ValueError, match=r"expected a 4-D array.*got shape \(3, 8, 8\).*x\[None\]"):
        fn(jnp.zeros((3, 8, 8)))


def test_flatten_vectors():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    f = T.flatten_vectors(x)
    assert f.shape == (24, 5)
    np.testing.assert_array_equal(f[7], x[0, 1, 3])
    assert T.flatten_vectors(jnp.zeros(5)).shape == (1, 5)
    assert T.flatten_vectors(jnp.zeros((0, 5))).shape == (0, 5)
    with pytest.raises(ValueError, match="got a scalar"):
        T.flatten_vectors(jnp.float32(1))


# --------------------------------------------------------------------------- scatter


def scatter_reference(x, dim, index, src):
    """The loop in torch's docs: out[..., index[p], ...] = src[p] for every position p."""
    out = np.array(x)
    dim %= out.ndim
    for p in np.ndindex(index.shape):
        target = list(p)
        target[dim] = index[p]
        out[tuple(target)] = src if np.ndim(src) == 0 else src[p]
    return out


def random_scatter_case(seed):
    """x, dim, a duplicate-free index (smaller than x off dim) and a larger src."""
    rng = np.random.default_rng(seed)
    ndim = rng.integers(1, 4)
    shape = tuple(int(s) for s in rng.integers(1, 5, size=ndim))
    dim = int(rng.integers(-ndim, ndim))
    d = dim % ndim
    ishape = tuple(int(rng.integers(1, s + 1)) for s in shape)
    # A random permutation along dim, cut to size, gives distinct targets per line.
    perm = np.argsort(rng.random(ishape[:d] + (shape[d],) + ishape[d + 1 :]), axis=d)
    index = np.take(perm, np.arange(ishape[d]), axis=d)
    src = rng.normal(size=tuple(s + int(rng.integers(0, 2)) for s in ishape)).astype(np.float32)
    x = rng.normal(size=shape).astype(np.float32)
    return x, dim, index, src


@settings(max_examples=15, deadline=None)  # every new shape triple compiles a scatter
@given(seed=st.integers(0, 2**32 - 1), scalar=st.booleans())
def test_scatter_matches_reference_loop(seed, scalar):
    x, dim, index, src = random_scatter_case(seed)
    if scalar:
        src = 7.5
    out = T.scatter(x, dim, index, src)
    np.testing.assert_array_equal(out, scatter_reference(x, dim, index, src))
    assert out.shape == x.shape and out.dtype == jnp.float32


def test_scatter_hand_examples():
    x = np.zeros((2, 2, 3), np.float32)
    index = np.array([[[2, 0, 1]], [[0, 0, 0]]])  # shape (2, 1, 3)
    src = np.arange(1.0, 7.0).reshape(2, 1, 3)
    out = T.scatter(x, 2, index, src)
    expected = x.copy()
    expected[0, 0] = [2.0, 3.0, 1.0]  # out[0][0][index[0][0][k]] = src[0][0][k]
    # index[1, 0] repeats target 0, so only the first row of batch 1 changes.
    assert out[1, 0, 1] == 0 and out[1, 0, 2] == 0 and out[1, 0, 0] in (4.0, 5.0, 6.0)
    np.testing.assert_array_equal(out[0], expected[0])
    np.testing.assert_array_equal(out[:, 1], 0)
    out0 = T.scatter(np.zeros((3, 2)), 0, np.array([[2, 0]]), np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(out0, [[0, 2], [0, 0], [1, 0]])


def test_scatter_is_pure():
    x = jnp.zeros((2, 3))
    T.scatter(x, 1, jnp.array([[1], [2]]), 5.0)
    assert not x.any()


def test_scatter_casts_src_to_x_dtype():
    out = T.scatter(jnp.zeros(3, jnp.int32), 0, jnp.array([1]), 2)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, [0, 2, 0])


@pytest.mark.parametrize("bad", [3, 7, -1, -3])
def test_scatter_out_of_range_raises_with_value_dim_and_range(bad):
    with pytest.raises(IndexError, match=rf"index value {bad} .*dim 1 of size 3.*0\.\.2"):
        T.scatter(jnp.zeros((2, 3)), 1, jnp.array([[0], [bad]]), 1.0)


def test_scatter_under_jit_drops_out_of_range_updates_only():
    f = jax.jit(lambda x, i, s: T.scatter(x, 1, i, s))
    x = jnp.arange(6.0).reshape(2, 3)
    index = jnp.array([[0, 3], [-1, 2]])
    out = f(x, index, jnp.array([[10.0, 11.0], [12.0, 13.0]]))
    # (0, 0) <- 10 and (1, 2) <- 13 happen; index 3 and -1 are dropped, not wrapped or clamped.
    np.testing.assert_array_equal(out, [[10.0, 1.0, 2.0], [3.0, 4.0, 13.0]])


def test_scatter_argument_errors():
    x = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="integer array, got dtype float32"):
        T.scatter(x, 1, jnp.array([[0.0]]), 1.0)
    with pytest.raises(ValueError, match=r"as many axes as x.*\(2, 3\).*\(2,\)"):
        T.scatter(x, 1, jnp.array([0, 1]), 1.0)
    with pytest.raises(ValueError, match=r"larger than x shape \(2, 3\) on axis 0"):
        T.scatter(x, 1, jnp.zeros((3, 1), jnp.int32), 1.0)
    with pytest.raises(ValueError, match=r"src shape \(1, 2\), index shape \(2, 2\)"):
        T.scatter(x, 1, jnp.zeros((2, 2), jnp.int32), jnp.ones((1, 2)))
    with pytest.raises(IndexError, match="dim 2 is out of range"):
        T.scatter(x, 2, jnp.zeros((2, 1), jnp.int32), 1.0)


# --------------------------------------------------------------------------- one-hot


@SETTINGS
@given(
    # Few distinct shapes: each new shape compiles, the seed varies the values.
    n=st.sampled_from([0, 1, 7, 64]),
    k=st.sampled_from([1, 3, 10]),
    seed=st.integers(0, 2**32 - 1),
)
def test_one_hot_equals_jax_nn_one_hot(n, k, seed):
    idx = np.random.default_rng(seed).integers(0, k, size=n)
    out = T.one_hot(idx, k)
    assert out.dtype == jnp.float32 and out.shape == (n, k)
    np.testing.assert_array_equal(out, jax.nn.one_hot(idx, k))


def test_one_hot_multi_dim_and_jit():
    idx = jnp.array([[0, 3], [2, 1]])
    np.testing.assert_array_equal(T.one_hot(idx, 4), jax.nn.one_hot(idx, 4))
    f = jax.jit(lambda i: T.one_hot(i, 4))
    bad = jnp.array([1, 4, -1])
    # Under jit, out-of-range rows are all zeros, like jax.nn.one_hot.
    np.testing.assert_array_equal(f(bad), jax.nn.one_hot(bad, 4))
    with pytest.raises(IndexError, match="index value 4"):
        T.one_hot(bad, 4)


# --------------------------------------------------------------------------- saving memory


def test_add_donates_and_reuses_the_buffer():
    x = jnp.arange(1024.0)
    y = jnp.ones(1024)
    before = x.unsafe_buffer_pointer()
    out = T.add_(x, y)
    assert out.unsafe_buffer_pointer() == before
    assert x.is_deleted()
    np.testing.assert_array_equal(out, np.arange(1024.0) + 1)


def test_plain_add_allocates_a_new_buffer():
    x = jnp.arange(8.0)
    before = x.unsafe_buffer_pointer()
    y = x + 1
    assert y.unsafe_buffer_pointer() != before and not x.is_deleted()


def test_module_imports_pull_in_only_jax_and_numpy():
    heavy = ["matplotlib", "torch", "flax", "optax", "orbax", "grain", "tensorflow", "tqdm"]
    modules = ", ".join(
        f"jaxbasics.{m}" for m in ["tensors", "calculus", "autodiff", "docs", "debug"]
    )
    code = f"import sys, {modules}; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
