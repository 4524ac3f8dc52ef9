"""The priors over code maps: causality (and no blind spot), the KV cache, sampling, learning."""

import functools
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxbasics.prior import (
    PixelCNNPrior,
    TransformerPrior,
    bits_per_code,
    cross_entropy,
    drop_labels,
    nll_bits,
    sample,
    sampling,
)
from jaxbasics.prior.sampling import guide, multinomial

K, H, W, C = 16, 4, 4, 3
N = H * W
LABELS = jnp.array([0, 1, 2, 1])


def _transformer(seed=0, num_classes=C):
    return TransformerPrior(
        K, H, W, num_classes=num_classes, dim=16, depth=2, heads=2, rngs=nnx.Rngs(seed)
    )


def _pixelcnn(seed=0, num_classes=C):
    # 3 layers of 3x3: enough for every code of a 4x4 map to reach every later position.
    return PixelCNNPrior(
        K, H, W, num_classes=num_classes, channels=16, num_layers=3, rngs=nnx.Rngs(seed)
    )


PRIORS = {"transformer": _transformer, "pixelcnn": _pixelcnn}


@functools.cache
def _shared(name):
    """One conditional prior of each kind for the tests that do not train it."""
    return PRIORS[name]()


@pytest.fixture(params=list(PRIORS))
def prior(request):
    return _shared(request.param)


@nnx.jit
def forward(prior, codes, labels):
    """(B, h, w) codes -> (B, h*w, K) logits, compiled once per prior and shape."""
    return prior(codes, labels).reshape(len(codes), N, K)


def _random_codes(n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, K, (n, H, W)), jnp.int32)


def test_logits_at_q_depend_on_exactly_the_codes_before_q(prior):
    """Changing code p changes the logits at every q > p and at no q <= p.

    The p < q include the codes above and to the right of q, which a single stack of masked
    convolutions never sees (its blind spot).

    Each code is changed three ways: one change can leave a position's logits exactly equal
    when every feature it moves is cut off by a ReLU.
    """
    base = np.random.default_rng(0).integers(0, K, N)
    maps = np.tile(base, (3 * N + 1, 1))
    p = np.tile(np.arange(N), 3)
    maps[1 + np.arange(3 * N), p] = (base[p] + np.repeat(np.arange(1, 4), N)) % K
    logits = forward(prior, jnp.asarray(maps.reshape(-1, H, W)), jnp.full((len(maps),), 1))
    moved = jnp.abs(logits[1:] - logits[:1]).max(-1).reshape(3, N, N).max(0)
    changed = np.asarray(moved > 1e-6)  # [p, q]
    np.testing.assert_array_equal(changed, np.triu(np.ones((N, N), bool), k=1))


def test_labels_change_the_logits_and_the_null_label_is_labels_none(prior):
    codes = _random_codes(4)
    null = forward(prior, codes, jnp.full((4,), C))
    np.testing.assert_array_equal(forward(prior, codes, None), null)
    assert float(jnp.abs(forward(prior, codes, LABELS) - null).max()) > 1e-4


def test_unconditional_prior_refuses_labels():
    with pytest.raises(ValueError, match="unconditional.*labels=None"):
        _transformer(num_classes=0)(_random_codes(1), jnp.array([0]))


def test_kv_cache_decoding_equals_the_full_forward():
    prior = _shared("transformer")
    codes = _random_codes(4, seed=1)
    full = forward(prior, codes, LABELS)
    step = nnx.jit(lambda m, cache, prev, i: m.decode_step(cache, prev, i, LABELS))
    cache, prev = prior.init_cache(4), jnp.zeros((4,), jnp.int32)
    for i in range(N):
        logits, cache = step(prior, cache, prev, jnp.int32(i))
        np.testing.assert_allclose(logits, full[:, i], atol=1e-5, rtol=1e-5)
        prev = codes.reshape(4, N)[:, i]


def test_sampling_is_deterministic_per_key(prior):
    a = sample(prior, 4, jax.random.key(0), labels=LABELS)
    assert a.shape == (4, H, W) and a.dtype == jnp.int32
    assert int(a.min()) >= 0 and int(a.max()) < K
    np.testing.assert_array_equal(a, sample(prior, 4, jax.random.key(0), labels=LABELS))
    assert not np.array_equal(a, sample(prior, 4, jax.random.key(1), labels=LABELS))


def _greedy_reference(prior, labels, guidance=0.0):
    """Step-by-step argmax from full forwards, in Python: no cache, no compiled loop."""
    null = jnp.full_like(labels, C)
    codes = jnp.zeros((len(labels), N), jnp.int32)
    for i in range(N):
        maps = codes.reshape(-1, H, W)
        logits = forward(prior, maps, labels)[:, i]
        if guidance:
            uncond = forward(prior, maps, null)[:, i]
            logits = logits + guidance * (logits - uncond)
        codes = codes.at[:, i].set(jnp.argmax(logits, -1))
    return np.asarray(codes.reshape(-1, H, W))


def test_top_k_1_is_greedy_argmax(prior):
    got = sample(prior, 4, jax.random.key(3), labels=LABELS, top_k=1, temperature=0.5)
    np.testing.assert_array_equal(got, _greedy_reference(prior, LABELS))


def test_guided_greedy_sampling_follows_the_guidance_formula():
    prior = _shared("transformer")
    got = sample(prior, 4, jax.random.key(0), labels=LABELS, top_k=1, guidance=3.0)
    np.testing.assert_array_equal(got, _greedy_reference(prior, LABELS, guidance=3.0))
    assert not np.array_equal(got, _greedy_reference(prior, LABELS))


def test_guidance_zero_is_conditional_sampling(prior):
    """Also through the batched cond+uncond forward: a vanishing scale draws the same codes."""
    key = jax.random.key(5)
    cond = sample(prior, 4, key, labels=LABELS)
    np.testing.assert_array_equal(sample(prior, 4, key, labels=LABELS, guidance=0.0), cond)
    np.testing.assert_array_equal(sample(prior, 4, key, labels=LABELS, guidance=1e-7), cond)


def test_multinomial_draws_each_index_with_its_softmax_probability():
    logits = jnp.log(jnp.array([0.5, 0.0, 0.1, 0.3, 0.1]))  # index 1 never, edges included
    draws = np.asarray(multinomial(jax.random.key(0), jnp.tile(logits, (40_000, 1))))
    frequencies = np.bincount(draws, minlength=5) / len(draws)
    np.testing.assert_allclose(frequencies, [0.5, 0.0, 0.1, 0.3, 0.1], atol=0.01)
    assert frequencies[1] == 0


def test_guide_is_cond_plus_scale_times_cond_minus_uncond():
    cond, uncond = jnp.array([[1.0, -2.0]]), jnp.array([[0.5, 1.0]])
    np.testing.assert_allclose(guide(jnp.concatenate([cond, uncond]), 2.0), [[2.0, -8.0]])


def test_temperature_divides_logits():
    """At a high temperature samples spread over many codes; at a low one they concentrate."""
    prior = _shared("transformer")
    hot = sample(prior, 4, jax.random.key(0), temperature=100.0)
    cold = sample(prior, 4, jax.random.key(0), temperature=1e-3)
    np.testing.assert_array_equal(cold, _greedy_reference(prior, jnp.full((4,), C)))
    assert len(np.unique(hot)) > len(np.unique(cold))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(temperature=0.0), "temperature must be > 0"),
        # float32 turns these into 0, a denormal or nan: every code would come out 0
        (dict(temperature=1e-45), r"temperature must be in \[1e-06, 1e\+06\]"),
        (dict(temperature=float("nan")), "temperature must be in"),
        (dict(temperature=float("inf")), "temperature must be in"),
        (dict(guidance=float("inf"), labels=jnp.zeros(4, jnp.int32)), "guidance must be in"),
        (dict(guidance=float("nan"), labels=jnp.zeros(4, jnp.int32)), "guidance must be in"),
        (dict(top_k=K + 1), "top_k must be an integer in"),
        (dict(guidance=1.0), "guidance needs labels"),
        (dict(labels=jnp.zeros(3, jnp.int32)), r"labels must have shape \(4,\)"),
    ],
)
def test_bad_sampling_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        sample(_shared("transformer"), 4, jax.random.key(0), **options)


def test_sampler_compiles_once_per_graph_and_options():
    before = sampling._sampler.cache_info()
    # Other parameters (a second model) and another temperature: no recompile.
    for prior, temperature in [(_shared("transformer"), 1.0), (_transformer(seed=1), 0.7)]:
        sample(prior, 2, jax.random.key(0), temperature=temperature)
    after = sampling._sampler.cache_info()
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= 1
    graphdef, _ = nnx.split(_shared("transformer"))
    assert sampling._sampler(graphdef, 2, None, False, False, None, False)._cache_size() == 1


def test_drop_labels_replaces_about_rate_of_the_labels_by_null():
    labels = jnp.arange(200_000) % C
    dropped = np.asarray(drop_labels(labels, jax.random.key(0), num_classes=C, rate=0.1))
    is_null = dropped == C
    assert abs(is_null.mean() - 0.1) < 0.005
    np.testing.assert_array_equal(dropped[~is_null], np.asarray(labels)[~is_null])


def test_bits_are_nats_over_ln2_and_uniform_logits_cost_log2_k():
    codes = _random_codes(3)
    logits = jax.random.normal(jax.random.key(0), (3, H, W, K))
    np.testing.assert_allclose(
        bits_per_code(logits, codes), cross_entropy(logits, codes) / math.log(2), rtol=1e-6
    )
    per = bits_per_code(logits, codes, per_example=True)
    assert per.shape == (3,)
    np.testing.assert_allclose(per.mean(), bits_per_code(logits, codes), rtol=1e-6)
    np.testing.assert_allclose(
        bits_per_code(jnp.zeros_like(logits), codes), math.log2(K), rtol=1e-6
    )


def _row_maps(rng, n):
    """Maps whose every row repeats one uniform code: 4 bits per row, 1 bit per code."""
    return jnp.asarray(np.repeat(rng.integers(0, K, (n, H, 1)), W, axis=2), jnp.int32)


@pytest.mark.parametrize("name", list(PRIORS))
def test_a_prior_learns_repeated_rows_far_below_log2_k_bits(name):
    prior = PRIORS[name](num_classes=0)
    optimizer = nnx.Optimizer(prior, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(prior, optimizer, codes):
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(codes), codes))(prior)
        optimizer.update(prior, grads)
        return loss

    rng = np.random.default_rng(0)
    held_out = _row_maps(np.random.default_rng(1), 256)
    start = float(nll_bits(prior, held_out))
    losses = [float(step(prior, optimizer, _row_maps(rng, 32))) for _ in range(50)]
    end = float(nll_bits(prior, held_out))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert start > 0.9 * math.log2(K) and end < 1.6, (start, end)  # floor: 1 bit per code


def test_prior_is_not_imported_by_jaxbasics_and_imports_no_shell():
    code = (
        "import sys, jaxbasics; eager = 'jaxbasics.prior' in sys.modules; import jaxbasics.prior; "
        "print(eager, [m for m in sys.modules if m.startswith(('jaxbasics.train', "
        "'jaxbasics.data'))])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False []"
