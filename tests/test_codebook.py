"""Codebook health: dead-code restart, k-means init, usage logging (jaxbasics/vqvae/codebook.py).

Pure functions first, then the train step and fit() that wire them in, then one
8-device subprocess run against the 1-device trajectory.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import small_config
from jaxbasics.tasks.vqvae.train import (
    codebook_of,
    init_state,
    latents,
    make_kmeans_init,
    make_train_step,
    to_model,
)
from jaxbasics.train import fit
from jaxbasics.train.metrics import read_jsonl
from jaxbasics.vqvae.codebook import (
    CodebookState,
    kmeans,
    quantization_error,
    restart_dead_codes,
    set_codes,
    usage_entropy,
    usage_update,
)
from jaxbasics.vqvae.codebook import (
    codebook_of as codebook_in,
)

SMALL = small_config()
VARIANCE = 0.06


def _images(seed, n=8):
    return jax.random.uniform(jax.random.key(seed), (n, 32, 32, 3)) - 0.5


def test_restart_replaces_exactly_the_codes_below_threshold_from_the_batch():
    codebook = jax.random.normal(jax.random.key(0), (6, 3))
    usage = jnp.array([1.0, 0.05, 0.2, 0.0, 0.1, 3.0])  # 0.1 itself is not below 0.1
    flat = jax.random.normal(jax.random.key(1), (50, 3)) + 10.0
    r = jax.jit(restart_dead_codes)(codebook, usage, flat, jax.random.key(2), 0.1)
    assert r.dead.tolist() == [False, True, False, True, False, False]
    new, old = np.asarray(r.codebook), np.asarray(codebook)
    np.testing.assert_array_equal(new[~r.dead], old[~r.dead])  # bit-identical
    np.testing.assert_array_equal(new[r.dead], np.asarray(flat)[np.asarray(r.sources)[r.dead]])
    # threshold 0 restarts nothing
    assert not restart_dead_codes(codebook, usage, flat, jax.random.key(2), 0.0).dead.any()


def test_usage_is_relative_to_uniform_and_entropy_is_in_bits():
    u = usage_update(jnp.ones(4), jnp.array([2.0, 2.0, 4.0, 0.0]), decay=0.0)
    assert u.tolist() == [1.0, 1.0, 2.0, 0.0]
    assert float(usage_entropy(jnp.ones(8))) == pytest.approx(3.0)


def test_kmeans_lowers_the_quantisation_error_of_the_first_batch():
    # EMA, as it also sets the statistics; the plain-VQ path is the restart's (tested below).
    config = SMALL.replace(decay=0.99, kmeans_init_steps=1)
    state = init_state(config)
    images = _images(3)
    model = to_model(config, state.params, state.ema, train=True)
    flat = latents(model, images).reshape(-1, config.embedding_dim)
    before = quantization_error(flat, codebook_of(config, state))
    new = make_kmeans_init(config)(state, (images,))
    after = quantization_error(flat, codebook_of(config, new))
    assert float(after) < 0.5 * float(before), (before, after)
    ema = new.ema["vq"]
    c = flat.shape[0] / config.num_embeddings
    np.testing.assert_allclose(ema["ema_cluster_size"][...], c)
    np.testing.assert_allclose(ema["ema_w"][...], ema["codebook"][...] * c, rtol=1e-6)


def test_kmeans_finds_separated_clusters():
    centres = jnp.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    pts = (centres[:, None] + 0.1 * jax.random.normal(jax.random.key(0), (3, 20, 2))).reshape(-1, 2)
    found = jax.jit(kmeans, static_argnums=1)(pts, 3, jax.random.key(1))
    assert float(quantization_error(pts, found)) < 0.05


@pytest.mark.parametrize("decay", [0.0, 0.99])
def test_train_step_restarts_dead_codes_and_keeps_the_rest(decay):
    config = SMALL.replace(decay=decay, dead_code_threshold=0.5)
    k = config.num_embeddings
    dead = np.arange(k) % 4 == 1
    images = _images(4)

    def fresh():
        state = init_state(config)
        return state.replace(code_usage=jnp.where(dead, 0.0, 1.0) * jnp.ones(k))

    plain, _ = make_train_step(config.replace(dead_code_threshold=0.0), VARIANCE)(fresh(), images)
    before = fresh()
    model = to_model(config, before.params, before.ema, train=True)
    z = np.asarray(latents(model, images)).reshape(-1, config.embedding_dim)
    state, metrics = make_train_step(config, VARIANCE)(fresh(), images)
    assert int(metrics.restarted_codes) == dead.sum()
    new, ref = np.asarray(codebook_of(config, state)), np.asarray(codebook_of(config, plain))
    np.testing.assert_array_equal(new[~dead], ref[~dead])
    for row in new[dead]:  # every restarted code is one of this batch's encoder outputs
        assert np.min(np.abs(z - row).max(axis=1)) < 1e-6
    np.testing.assert_array_equal(np.asarray(state.code_usage)[dead], 1.0)
    if decay:
        c = z.shape[0] / k
        np.testing.assert_allclose(np.asarray(state.ema["vq"]["ema_cluster_size"][...])[dead], c)
    else:
        mu = state.opt_state[0].mu["vq"]["codebook"][...]
        assert not np.asarray(mu)[dead].any() and np.asarray(mu)[~dead].any()


def test_fit_logs_usage_and_resumes_exactly_with_restart_and_kmeans(tmp_path):
    config = SMALL.replace(decay=0.99, dead_code_threshold=0.95, kmeans_init_steps=2)
    straight = fit(config, tmp_path / "a")
    fit(config.replace(num_training_updates=5), tmp_path / "b")
    resumed = fit(config, tmp_path / "b")
    for x, y in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    metrics = read_jsonl(tmp_path / "a" / "metrics.jsonl")
    assert all(r["used_codes"] + r["dead_codes"] == config.num_embeddings for r in metrics)
    assert sum(r["restarted_codes"] for r in metrics) > 0
    usage = read_jsonl(tmp_path / "a" / "codebook_usage.jsonl")
    assert [r["step"] for r in usage] == [5, 10] and len(usage[0]["counts"]) == 16
    assert sum(usage[0]["counts"]) == 5 * config.batch_size * 64  # 5 steps of 8x8 latents
    assert (tmp_path / "a" / "codebook.png").exists()
    assert 0.0 < straight.eval_metrics["usage_entropy"] <= 4.0  # bits, K = 16


def _parts(config):
    state = init_state(config)
    return CodebookState(state.params, state.ema, state.opt_state)


@pytest.mark.parametrize("decay", [0.0, 0.99])
def test_set_codes_edits_the_codebook_by_name_and_nothing_else(decay):
    config = SMALL.replace(decay=decay)
    parts = _parts(config)
    rows = jnp.arange(16) % 3 == 0
    codes = jnp.full((16, 8), 7.0)
    new = set_codes(parts, rows, codes, 64, ema_quantizer=decay > 0)
    book = np.asarray(codebook_in(new.params, new.ema, ema_quantizer=decay > 0))
    old = np.asarray(codebook_in(parts.params, parts.ema, ema_quantizer=decay > 0))
    np.testing.assert_array_equal(book[np.asarray(rows)], 7.0)
    np.testing.assert_array_equal(book[~np.asarray(rows)], old[~np.asarray(rows)])
    # everything that is not the quantiser's is the same array
    same = jax.tree.leaves(new.params["encoder"]) + jax.tree.leaves(new.params["decoder"])
    for x, y in zip(
        same,
        jax.tree.leaves(parts.params["encoder"]) + jax.tree.leaves(parts.params["decoder"]),
        strict=True,
    ):
        assert x is y


def test_set_codes_raises_when_the_quantiser_is_missing():
    parts = _parts(SMALL.replace(decay=0.0))
    renamed = nnx.State({"quantizer" if k == "vq" else k: v for k, v in parts.params.items()})
    with pytest.raises(KeyError, match="has no 'vq' quantiser"):
        set_codes(
            parts._replace(params=renamed),
            jnp.ones(16, bool),
            jnp.zeros((16, 8)),
            64,
            ema_quantizer=False,
        )
    with pytest.raises(KeyError, match=r"lacks \['ema_w'"):  # an EMA edit of a plain-VQ state
        set_codes(
            parts._replace(ema=nnx.State({"vq": {"codebook": parts.params["vq"]["codebook"]}})),
            jnp.ones(16, bool),
            jnp.zeros((16, 8)),
            64,
            ema_quantizer=True,
        )
