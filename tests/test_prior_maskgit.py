"""The masked prior (MaskGIT): its schedule, its masks, parallel decoding, learning."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbasics.prior import MaskGITPrior, nll_bits, sample
from jaxbasics.prior.maskgit import _hidden_after, decode_step, mask_ratio, random_mask
from jaxbasics.prior.sampling import multinomial

K, H, W, C = 16, 4, 4, 3
N = H * W
LABELS = jnp.array([0, 1, 2, 1])


@functools.cache
def _prior(seed=0):
    return MaskGITPrior(K, H, W, num_classes=C, dim=16, depth=2, heads=2, rngs=nnx.Rngs(seed))


def test_cosine_schedule_by_hand():
    # cos(pi/2 r): 1 at 0, cos(pi/6) = sqrt(3)/2 at 1/3, 1/sqrt(2) at 1/2, 0 at 1.
    got = [float(mask_ratio(r)) for r in (0.0, 1 / 3, 0.5, 1.0)]
    np.testing.assert_allclose(got, [1.0, math.sqrt(3) / 2, 1 / math.sqrt(2), 0.0], atol=1e-6)


def test_hidden_counts_after_each_step_by_hand():
    # N = 64, T = 4: floor(64 cos(pi/8)) = 59, floor(64 cos(pi/4)) = 45, floor(64 cos(3pi/8)) = 24.
    assert [int(_hidden_after(t, 4, 64)) for t in range(4)] == [59, 45, 24, 0]
    assert int(_hidden_after(0, 1, 64)) == 0  # one step fills everything


def test_random_masks_hide_between_one_and_all_and_two_thirds_on_average():
    mask = np.asarray(random_mask(jax.random.key(0), 4000, N))
    counts = mask.sum(axis=1)
    assert counts.min() >= 1 and counts.max() <= N
    # E[ceil(N cos(pi/2 U))] / N is a little above E[cos(pi/2 U)] = 2/pi.
    assert 2 / math.pi < counts.mean() / N < 2 / math.pi + 1 / N
    # Positions are uniform: every position is hidden about equally often.
    assert np.ptp(mask.mean(axis=0)) < 0.05


def test_hidden_codes_do_not_reach_the_logits_and_visible_ones_reach_every_position():
    prior, rng = _prior(), np.random.default_rng(0)
    codes = rng.integers(0, K, (1, H, W))
    mask = np.zeros((1, H, W), bool)
    mask[0, 1, 2] = True
    other = codes.copy()
    other[0, 1, 2] = (codes[0, 1, 2] + 1) % K
    np.testing.assert_array_equal(prior(codes, None, mask), prior(other, None, mask))
    # A visible code changes the logits everywhere, before and after it (bidirectional).
    changed = codes.copy()
    changed[0, 2, 3] = (codes[0, 2, 3] + 1) % K
    diff = np.abs(np.asarray(prior(changed, None, mask) - prior(codes, None, mask))).max(-1)
    assert (diff > 0).all()


def test_labels_reach_every_position_and_none_is_the_null_label():
    prior = _prior()
    codes, mask = jnp.zeros((4, H, W), jnp.int32), jnp.ones((4, H, W), bool)
    a, b = prior(codes, LABELS, mask), prior(codes, jnp.array([1, 1, 2, 1]), mask)
    assert (np.abs(np.asarray(a[0] - b[0])).max(-1) > 0).all()
    np.testing.assert_array_equal(a[1:], b[1:])
    null = prior.logits(jnp.full((4, N), K), jnp.full(4, C)).reshape(4, H, W, K)
    np.testing.assert_array_equal(prior(codes, None, mask), null)


@settings(max_examples=8, deadline=None)  # each number of steps compiles its own loop
@given(steps=st.sampled_from([1, 2, 3, 7, N, 2 * N + 1]), seed=st.integers(0, 2**31 - 1))
def test_any_number_of_steps_fills_every_position_with_a_code(steps, seed):
    codes = np.asarray(sample(_prior(), 2, jax.random.key(seed), steps=steps))
    assert codes.shape == (2, H, W) and codes.min() >= 0 and codes.max() < K


def test_each_step_keeps_its_codes_and_leaves_the_scheduled_number_hidden():
    prior, steps = _prior(), 5
    tokens = jnp.full((4, N), K, jnp.int32)
    ids = LABELS
    for t in range(steps):
        logits = prior.logits(tokens, ids)
        new = decode_step(t, tokens, logits, jax.random.key(t), steps, multinomial)
        known = np.asarray(tokens != K)
        np.testing.assert_array_equal(np.asarray(new)[known], np.asarray(tokens)[known])
        before = np.asarray(tokens == K).sum(axis=1)
        want = np.maximum(np.minimum(int(_hidden_after(t, steps, N)), before - 1), 0)
        np.testing.assert_array_equal(np.asarray(new == K).sum(axis=1), want)
        tokens = new
    assert not (np.asarray(tokens) == K).any()


def test_a_step_unmasks_at_least_one_code_even_past_the_schedule():
    # 20 steps over 16 codes: the schedule would keep some hidden for a while; every step
    # still fills at least one code while any is hidden, and the last fills the rest.
    prior, tokens = _prior(), jnp.full((1, N), K, jnp.int32)
    for t in range(20):
        before = int((tokens == K).sum())
        tokens = decode_step(
            t, tokens, prior.logits(tokens, LABELS[:1]), jax.random.key(t), 20, multinomial
        )
        assert int((tokens == K).sum()) <= max(before - 1, 0)


def test_sampling_is_deterministic_per_key_and_varies_with_it():
    prior = _prior()
    a = sample(prior, 4, jax.random.key(0), labels=LABELS, steps=6)
    np.testing.assert_array_equal(a, sample(prior, 4, jax.random.key(0), labels=LABELS, steps=6))
    assert (a != sample(prior, 4, jax.random.key(1), labels=LABELS, steps=6)).any()


def test_greedy_one_step_decoding_is_the_argmax_of_the_all_hidden_logits():
    prior = _prior()
    got = sample(prior, 4, jax.random.key(0), labels=LABELS, steps=1, top_k=1)
    logits = prior(jnp.zeros((4, H, W), jnp.int32), LABELS, jnp.ones((4, H, W), bool))
    np.testing.assert_array_equal(got, np.asarray(logits).argmax(-1))


def test_masked_prior_options_are_checked_in_one_line():
    prior = _prior()
    with pytest.raises(ValueError, match=r"^steps must be"):
        sample(prior, 2, jax.random.key(0), steps=0)
    with pytest.raises(ValueError, match=r"^confidence_noise must be in"):
        sample(prior, 2, jax.random.key(0), confidence_noise=-1.0)
    with pytest.raises(ValueError, match="no exact likelihood"):
        nll_bits(prior, jnp.zeros((1, H, W), jnp.int32))


def test_a_masked_prior_learns_to_fill_in_structured_maps():
    """Maps whose every row repeats one code, the code given by the label: a trained masked
    prior fills an all-hidden map greedily with exactly that map."""
    rows = jnp.array([3, 7, 11])
    codes = jnp.broadcast_to(rows[:, None, None], (3, H, W)).astype(jnp.int32)
    labels = jnp.arange(3)
    model = MaskGITPrior(K, H, W, num_classes=C, dim=32, depth=1, heads=2, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, key):
        loss, grads = jax.value_and_grad(lambda p: nnx.merge(graphdef, p).loss(codes, labels, key))(
            params
        )
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    first = None
    for i in range(150):
        params, opt, loss = step(params, opt, jax.random.key(i))
        first = float(loss) if first is None else first
    assert float(loss) < 0.05 * first
    got = sample(nnx.merge(graphdef, params), 3, jax.random.key(0), labels=labels, top_k=1)
    np.testing.assert_array_equal(got, codes)


@pytest.mark.parametrize(
    "mask", [np.ones((1, H, W), np.int32), np.ones((1, H, W - 1), bool), [[True]]]
)
def test_a_mask_of_another_shape_or_dtype_is_one_line(mask):
    with pytest.raises(ValueError, match=r"^mask must be a bool array of the codes' shape"):
        _prior()(jnp.zeros((1, H, W), jnp.int32), None, mask=mask)
