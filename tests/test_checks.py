"""The library refuses codes, labels and counts it cannot use, in one line naming the argument,
the value and the range, as encode refuses images; a refused call leaves nothing behind."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbasics import checks
from jaxbasics.prior import PixelCNNPrior, TransformerPrior, nll_bits, sample
from jaxbasics.vqvae.model import VQVAE

K, H, W, C = 16, 4, 4, 3


@pytest.fixture(scope="module")
def prior():
    rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))
    return TransformerPrior(K, H, W, num_classes=C, dim=8, depth=1, heads=2, rngs=rngs)


@pytest.fixture(scope="module")
def pixelcnn():
    rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))
    return PixelCNNPrior(K, H, W, num_classes=0, channels=8, num_layers=2, rngs=rngs)


@given(st.integers(-(2**40), 2**40), st.integers(1, 2**20))
def test_indices_accept_exactly_the_integers_in_range(value, high):
    values = np.array([0, value])
    if 0 <= value < high:
        assert checks.indices("codes", values, high).tolist() == [0, value]
    else:
        with pytest.raises(ValueError, match=rf"codes must be integers in \[0, {high}\), got"):
            checks.indices("codes", values, high)


@given(st.one_of(st.floats(allow_nan=True), st.booleans(), st.text(max_size=3), st.none()))
def test_a_count_is_an_integer_not_a_float_a_bool_or_text(value):
    with pytest.raises(ValueError, match="n must be an integer >= 1, got"):
        checks.count("n", value)


def test_under_jit_only_the_dtype_is_checked():
    assert jax.jit(lambda c: checks.indices("codes", c, 4))(jnp.array([9])).tolist() == [9]
    with pytest.raises(ValueError, match="got float32 values"):
        jax.jit(lambda c: checks.indices("codes", c, 4))(jnp.array([1.0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": [11, 11, 11]}, r"labels must be integers in \[0, 3\), got 11"),
        ({"labels": [-1, 0, 0]}, r"labels must be integers in \[0, 3\), got -1"),
        ({"labels": [1.7, 0, 0]}, r"labels must be integers in \[0, 3\), got float64 values"),
        ({"labels": [1, 2]}, r"labels must have shape \(3,\), got \(2,\)"),
        ({"top_k": True}, r"top_k must be an integer in \[1, 16\], got True \(a bool\)"),
        ({"top_k": 17}, r"top_k must be an integer in \[1, 16\], got 17"),
        ({"temperature": True}, "temperature must be a number, got True"),
    ],
)
def test_sample_refuses_what_it_cannot_use(prior, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(prior, 3, jax.random.key(0), **kwargs)


@pytest.mark.parametrize(
    "key, shown",
    [
        (0, "0"),
        (None, "None"),
        (list(range(10**5)), "a list"),
        (jax.random.split(jax.random.key(0)), "an array of shape (2,)"),
        (jnp.array([1, 2, 3], jnp.uint32), "an array of shape (3,)"),
    ],
)
def test_sample_takes_one_prng_key_new_or_old_style(prior, key, shown):
    with pytest.raises(
        ValueError, match=rf"key must be one PRNG key, .*, got {re.escape(shown)}\.$"
    ):
        sample(prior, 2, key)
    new, old = sample(prior, 2, jax.random.key(3)), sample(prior, 2, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(new, old)  # the same key data, the same maps


def test_sample_bounds_n_and_takes_zero_d_arrays_as_numbers(prior):
    with pytest.raises(
        ValueError,
        match=r"n \(the number of code maps\) must be an integer in \[1, 65536\], got 10{12}",
    ):
        sample(prior, 10**12, jax.random.key(0))
    a = sample(prior, 2, jax.random.key(0), temperature=jnp.float32(0.5))
    b = sample(prior, jnp.array(2), jax.random.key(0), temperature=np.float64(0.5))
    np.testing.assert_array_equal(a, b)


def test_a_refused_count_leaves_no_broken_sampler_behind(prior):
    """sample(prior, 4.0, key) used to cache a sampler built for 4.0 under the key 4: every
    later sample(prior, 4, key) failed in the same process."""
    with pytest.raises(ValueError, match=r"n \(the number of code maps\) must be an integer"):
        sample(prior, 4.0, jax.random.key(0))
    assert sample(prior, 4, jax.random.key(0)).shape == (4, H, W)
    assert sample(prior, np.int64(4), jax.random.key(0)).shape == (4, H, W)


@settings(max_examples=12)
@given(st.integers(-3, K + 3))
def test_the_priors_take_codes_in_range_only(prior, pixelcnn, code):
    codes = np.zeros((1, H, W), np.int32)
    codes[0, 1, 2] = code
    for model in (prior, pixelcnn):
        if 0 <= code < K:
            assert model(codes).shape == (1, H, W, K)
            assert nll_bits(model, codes).shape == ()
        else:
            with pytest.raises(ValueError, match=rf"codes must be integers in \[0, {K}\), got"):
                nll_bits(model, codes)


def test_the_priors_name_codes_of_another_shape_or_an_unconditional_prior_given_labels(
    prior, pixelcnn
):
    with pytest.raises(ValueError, match=r"codes must have shape \(N, 4, 4\) .*got \(1, 16\)"):
        prior(np.zeros((1, H * W), np.int32))
    for model in (prior, pixelcnn):  # not an IndexError from reading the batch size first
        with pytest.raises(
            ValueError, match=r"codes must have shape \(N, 4, 4\) with N >= 1, got \(\)"
        ):
            model(np.int32(3))
        with pytest.raises(ValueError, match=r"with N >= 1, got \(0, 4, 4\)"):  # not a modulo by 0
            nll_bits(model, np.zeros((0, H, W), np.int32))
    with pytest.raises(ValueError, match="unconditional"):
        pixelcnn(np.zeros((1, H, W), np.int32), np.array([0]))
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\), got 3"):
        prior(np.zeros((1, H, W), np.int32), np.array([3]))  # 3 is the null label's index


@pytest.fixture(scope="module", params=["vq", "fsq"])
def vqvae(request):
    rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))
    if request.param == "fsq":
        return VQVAE(8, 2, 1, quantizer="fsq", fsq_levels=(2, 3), rngs=rngs)  # K = 6
    return VQVAE(8, 2, 1, 4, 6, rngs=rngs)


@settings(max_examples=12)
@given(st.integers(-2, 8))
def test_decode_indices_refuses_codes_past_the_codebook(vqvae, code):
    """A VQ code past K decoded to an all-NaN image, -1 to the last code; FSQ wrapped around."""
    codes = np.full((1, 2, 2), code)
    if 0 <= code < 6:
        assert np.isfinite(vqvae.decode_indices(codes)).all()
    else:
        with pytest.raises(ValueError, match=r"indices must be integers in \[0, 6\), got"):
            vqvae.decode_indices(codes)


def test_decode_indices_names_a_map_of_another_shape(vqvae):
    with pytest.raises(ValueError, match=r"must be \(B, h, w\) code maps, got shape \(2, 2\)"):
        vqvae.decode_indices(np.zeros((2, 2), np.int32))
