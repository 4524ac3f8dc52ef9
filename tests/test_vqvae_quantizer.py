"""Quantizer math against hand-computed cases, the straight-through gradient, and EMA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbasics.vqvae import ema
from jaxbasics.vqvae import quantizer as q

CODEBOOK = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])


def test_distances_hand_computed():
    flat = jnp.array([[1.0, 1.0], [0.0, 2.0]])
    expected = [[2.0, 1.0, 2.0], [4.0, 5.0, 0.0]]
    np.testing.assert_allclose(q.distances(flat, CODEBOOK), expected, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 20), st.integers(1, 9), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_distances_match_brute_force_and_argmin(n, k, d, seed):
    rng = np.random.default_rng(seed)
    flat, book = rng.normal(size=(n, d)), rng.normal(size=(k, d))
    brute = ((flat[:, None, :] - book[None]) ** 2).sum(-1)
    got = q.distances(jnp.asarray(flat, jnp.float32), jnp.asarray(book, jnp.float32))
    np.testing.assert_allclose(got, brute, rtol=1e-4, atol=1e-4)
    # the chosen code is (one of) the closest
    idx = np.asarray(q.nearest_code(got))
    assert np.allclose(brute[np.arange(n), idx], brute.min(1), atol=1e-4)


def test_quantize_fields_and_loss_hand_computed():
    z = jnp.array([[[[0.9, 0.1], [0.1, 1.5]]]])  # (1, 1, 2, 2)
    out = q.quantize(z, CODEBOOK, commitment_cost=0.25)
    assert out.indices.shape == (1, 1, 2) and out.indices.tolist() == [[[1, 2]]]
    np.testing.assert_allclose(out.quantized, [[[[1.0, 0.0], [0.0, 2.0]]]], atol=1e-6)
    np.testing.assert_allclose(out.encodings, [[0, 1, 0], [0, 0, 1]])
    sq = (0.1**2 + 0.1**2 + 0.1**2 + 0.5**2) / 4  # mse(q, z)
    np.testing.assert_allclose(out.loss, sq * 1.25, rtol=1e-5)
    np.testing.assert_allclose(out.perplexity, 2.0, rtol=1e-5)
    assert out.distances.shape == (2, 3)


def test_perplexity_uniform_and_single_code():
    np.testing.assert_allclose(q.perplexity(q.code_counts(jnp.arange(8), 8)), 8.0, rtol=1e-5)
    np.testing.assert_allclose(q.perplexity(q.code_counts(jnp.zeros(8, jnp.int32), 8)), 1.0)


def test_gather_lookup_equals_one_hot_matmul():
    rng = np.random.default_rng(0)
    book = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    idx = jnp.asarray(rng.integers(0, 16, size=40))
    onehot = jax.nn.one_hot(idx, 16)
    np.testing.assert_allclose(q.lookup(book, idx), onehot @ book, atol=1e-6)


def test_straight_through_gradients():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(1, 2, 2, 2)), jnp.float32)

    # d(quantized)/dz is the identity
    jac = jax.jacobian(lambda z: q.quantize(z, CODEBOOK, 0.25).quantized)(z)
    np.testing.assert_allclose(jac.reshape(8, 8), np.eye(8), atol=1e-6)

    # the codebook gets gradient only through the codebook term mse(q, sg(z))
    def total(book, z):
        out = q.quantize(z, book, 0.25)
        return jnp.sum(out.quantized) + out.loss

    g_book = jax.grad(total)(CODEBOOK, z)
    out = q.quantize(z, CODEBOOK, 0.25)
    qv = q.lookup(CODEBOOK, out.indices.reshape(-1)).reshape(z.shape)
    g_expected = jax.grad(
        lambda b: q.mse(q.lookup(b, out.indices.reshape(-1)).reshape(z.shape), z)
    )(CODEBOOK)
    np.testing.assert_allclose(g_book, g_expected, atol=1e-6)
    # and z gets the commitment gradient plus the identity from the straight-through sum
    g_z = jax.grad(total, argnums=1)(CODEBOOK, z)
    np.testing.assert_allclose(g_z, 1.0 + 0.25 * 2 * (z - qv) / z.size, atol=1e-6)


def test_wrong_latent_dim_raises_naming_both_sizes():
    vq = q.VectorQuantizer(4, 3, 0.25, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\).*last dimension 5"):
        vq(jnp.zeros((1, 2, 2, 5)))


def test_vq_codebook_init_range():
    vq = q.VectorQuantizer(512, 64, 0.25, rngs=nnx.Rngs(0))
    book = np.asarray(vq.codebook[...])
    assert book.shape == (512, 64)
    assert book.min() >= -1 / 512 and book.max() <= 1 / 512 and book.std() > 1e-4


def _numpy_ema(flat, idx, cluster, w, decay, eps):
    k = cluster.shape[0]
    enc = np.eye(k)[idx]
    cluster = cluster * decay + (1 - decay) * enc.sum(0)
    n = cluster.sum()
    cluster = (cluster + eps) / (n + k * eps) * n
    w = w * decay + (1 - decay) * enc.T @ flat
    return w / cluster[:, None], cluster, w


def test_ema_module_update_matches_numpy_and_uses_pre_update_codes():
    vq = ema.VectorQuantizerEMA(6, 3, 0.25, decay=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    book0, cluster0, w0 = (np.asarray(v[...]) for v in (vq.codebook, vq.ema_cluster_size, vq.ema_w))
    z = np.random.default_rng(0).normal(size=(2, 2, 2, 3)).astype(np.float32)
    out = vq(jnp.asarray(z))
    flat = z.reshape(-1, 3)
    idx = ((flat[:, None] - book0[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(np.asarray(out.indices).reshape(-1), idx)
    np.testing.assert_allclose(out.quantized, book0[idx].reshape(z.shape), atol=1e-5)
    book1, cluster1, w1 = _numpy_ema(flat, idx, cluster0, w0, 0.9, 1e-5)
    np.testing.assert_allclose(vq.ema_cluster_size[...], cluster1, rtol=1e-5)
    np.testing.assert_allclose(vq.ema_w[...], w1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vq.codebook[...], book1, rtol=1e-4, atol=1e-5)
    # loss is the commitment term only
    np.testing.assert_allclose(
        out.loss, 0.25 * np.mean((book0[idx].reshape(z.shape) - z) ** 2), rtol=1e-5
    )


def test_ema_eval_mode_leaves_statistics_unchanged():
    vq = ema.VectorQuantizerEMA(6, 3, 0.25, rngs=nnx.Rngs(0))
    vq.eval()
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(vq)))
    vq(jnp.ones((1, 2, 2, 3)))
    after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(vq)))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    vq.train()
    vq(jnp.ones((1, 2, 2, 3)))
    assert not np.array_equal(before["ema_w"], np.asarray(vq.ema_w[...]))


def test_ema_statistics_are_not_params():
    vq = ema.VectorQuantizerEMA(6, 3, 0.25, rngs=nnx.Rngs(0))
    assert len(jax.tree.leaves(nnx.state(vq, nnx.Param))) == 0
    assert len(jax.tree.leaves(nnx.state(vq, ema.EMAVariable))) == 3


def _norm_growth(init, steps=5):
    """Largest ||e_k|| after / before ``steps`` EMA updates on small latents, over all codes."""
    vq = ema.VectorQuantizerEMA(64, 8, 0.25, decay=0.99, init=init, rngs=nnx.Rngs(0))
    before = np.linalg.norm(np.asarray(vq.codebook[...]), axis=1)
    rng = np.random.default_rng(0)
    for _ in range(steps):  # early encoder outputs: small, far inside the N(0, 1) codebook
        vq(jnp.asarray(0.1 * rng.normal(size=(4, 4, 4, 8)), jnp.float32))
    after = np.linalg.norm(np.asarray(vq.codebook[...]), axis=1)
    return float(np.max(after / before)), float(np.max(after))


def test_consistent_ema_init_keeps_unused_codes_where_they_are():
    growth, largest = _norm_growth("consistent")
    assert growth < 10.0 and largest < 10.0, (growth, largest)


def test_notes_ema_init_throws_unused_codes_to_norm_1e5():
    """Documents the reference's bug: ema_w drawn apart from the codebook and cluster sizes 0.

    After the first update every code the batch did not choose has a Laplace-smoothed
    cluster size of ~epsilon = 1e-5, so e = ema_w / N has a norm of ~1e5: out of reach of
    every encoder output until ema_w decays (hundreds of steps at decay 0.99).
    """
    growth, largest = _norm_growth("notes")
    assert growth > 1e4 and largest > 1e4, (growth, largest)


@pytest.mark.parametrize("make", [q.VectorQuantizer, ema.VectorQuantizerEMA])
def test_indices_and_lookup_are_the_quantisers_own_assignment_and_codes(make):
    """The model's encode and decode go through these: the forward pass's indices, the codes."""
    vq = make(6, 3, 0.25, rngs=nnx.Rngs(0))
    vq.eval()  # the EMA statistics stay as they are
    z = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    idx = vq.indices(z)
    np.testing.assert_array_equal(idx, vq(z).indices)
    np.testing.assert_array_equal(vq.lookup(idx), np.asarray(vq.codebook[...])[np.asarray(idx)])
    assert vq.learned
