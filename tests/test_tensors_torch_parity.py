"""Parity of jaxbasics.tensors with PyTorch on random inputs (skipped without torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbasics import tensors as T

torch = pytest.importorskip("torch")

CASES = range(6)


def distinct_index(rng, shape, dim, ishape):
    """An index without repeated targets per line, so the result is well defined."""
    d = dim % len(shape)
    perm = np.argsort(rng.random(ishape[:d] + (shape[d],) + ishape[d + 1 :]), axis=d)
    return np.take(perm, np.arange(ishape[d]), axis=d)


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("scalar_src", [False, True])
@pytest.mark.parametrize("seed", range(2))
def test_scatter_matches_torch(dim, scalar_src, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(1, 6, size=3))
    ishape = tuple(int(rng.integers(1, s + 1)) for s in shape)
    index = distinct_index(rng, shape, dim, ishape)
    x = rng.normal(size=shape).astype(np.float32)
    src = 3.25 if scalar_src else rng.normal(size=tuple(s + 1 for s in ishape)).astype(np.float32)
    torch_src = src if scalar_src else torch.from_numpy(src)
    expected = torch.from_numpy(x).scatter(dim, torch.from_numpy(index), torch_src).numpy()
    np.testing.assert_array_equal(T.scatter(x, dim, index, src), expected)


def test_scatter_in_place_notes_example_matches_torch():
    idx = np.array([3, 0, 511, 7])
    encodings = torch.zeros(4, 512)
    encodings.scatter_(1, torch.from_numpy(idx).unsqueeze(1), 1)
    np.testing.assert_array_equal(T.scatter(T.zeros((4, 512)), 1, idx[:, None], 1.0), encodings)


@pytest.mark.parametrize("bad", [-1, 3])
def test_scatter_out_of_range_raises_in_both(bad):
    index = np.array([[0], [bad]])
    with pytest.raises(RuntimeError, match="out of bounds"):
        torch.zeros(2, 3).scatter(1, torch.from_numpy(index), 1.0)
    with pytest.raises(IndexError, match="out of range"):
        T.scatter(jnp.zeros((2, 3)), 1, index, 1.0)


@pytest.mark.parametrize("seed", CASES)
def test_one_hot_matches_torch(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 20))
    idx = rng.integers(0, k, size=int(rng.integers(1, 30)))
    expected = torch.nn.functional.one_hot(torch.from_numpy(idx), k).float().numpy()
    np.testing.assert_array_equal(T.one_hot(idx, k), expected)


@pytest.mark.parametrize("target", [(3, 4), (-1, 4), (3, -1), (2, -1, 2), (-1,), (12, 1, -1)])
def test_reshape_matches_torch(target):
    x = np.random.default_rng(0).normal(size=12).astype(np.float32)
    np.testing.assert_array_equal(T.reshape(x, target), torch.from_numpy(x).reshape(target))


@pytest.mark.parametrize("target", [(5, -1), (-1, -1), (5, 3)])
def test_reshape_errors_where_torch_errors(target):
    with pytest.raises(RuntimeError):
        torch.zeros(12).reshape(target)
    with pytest.raises(ValueError):
        T.reshape(jnp.zeros(12), target)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_cat_matches_torch(dim):
    rng = np.random.default_rng(dim + 10)
    base = [2, 3, 4]
    arrays = []
    for _ in range(3):
        shape = list(base)
        shape[dim] = int(rng.integers(1, 4))
        arrays.append(rng.normal(size=shape).astype(np.float32))
    expected = torch.cat([torch.from_numpy(a) for a in arrays], dim=dim).numpy()
    np.testing.assert_array_equal(T.cat(arrays, dim), expected)


def test_cat_mismatch_errors_in_both():
    a, b = np.zeros((3, 4), np.float32), np.zeros((3, 5), np.float32)
    with pytest.raises(RuntimeError):
        torch.cat([torch.from_numpy(a), torch.from_numpy(b)], dim=0)
    with pytest.raises(ValueError, match="axis 1"):
        T.cat([a, b], dim=0)


def test_layout_matches_torch_permute():
    x = np.random.default_rng(0).normal(size=(4, 6, 3, 5)).astype(np.float32)
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(T.bchw_to_bhwc(x), t.permute(0, 2, 3, 1).contiguous())
    np.testing.assert_array_equal(T.bhwc_to_bchw(x), t.permute(0, 3, 1, 2).contiguous())


def test_flatten_vectors_matches_torch_view():
    x = np.random.default_rng(0).normal(size=(4, 3, 3, 8)).astype(np.float32)
    np.testing.assert_array_equal(T.flatten_vectors(x), torch.from_numpy(x).view(-1, 8))


def test_normal_moments_match_torch():
    n = 200_000
    ours = np.asarray(T.normal(jax.random.key(0), (n,), mean=5.0, variance=2.0))
    torch.manual_seed(0)
    theirs = (5 + torch.sqrt(torch.tensor(2.0)) * torch.randn(n)).numpy()
    # Both estimate (5, 2); sample mean and variance differ by a few standard errors at most.
    assert abs(ours.mean() - theirs.mean()) < 0.03
    assert abs(ours.var() - theirs.var()) < 0.06
    q = [0.1, 0.5, 0.9]
    np.testing.assert_allclose(np.quantile(ours, q), np.quantile(theirs, q), atol=0.05)
