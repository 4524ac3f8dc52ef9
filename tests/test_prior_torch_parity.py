"""The transformer and masked priors against their eager PyTorch twins, weights copied from Flax."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import torch_prior_reference as tpr  # noqa: E402
from jaxbasics.prior import MaskGITPrior, TransformerPrior, sample  # noqa: E402

K, H, W, C = 16, 4, 4, 3
LABELS = np.array([0, 2, 1, 2])


@pytest.fixture(scope="module")
def pair():
    prior = TransformerPrior(K, H, W, num_classes=C, dim=16, depth=2, heads=2, rngs=nnx.Rngs(0))
    return prior, tpr.from_flax(prior)


@pytest.mark.parametrize("labels", [LABELS, None])
def test_full_forward_logits_match(pair, labels):
    prior, model = pair
    codes = np.random.default_rng(0).integers(0, K, (4, H, W))
    got = prior(jnp.asarray(codes), None if labels is None else jnp.asarray(labels))
    with torch.no_grad():
        want = model(torch.from_numpy(codes), None if labels is None else torch.from_numpy(labels))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_greedy_sampling_gives_identical_codes(pair, guidance):
    prior, model = pair
    options = dict(top_k=1, guidance=guidance)
    got = sample(prior, 4, jax.random.key(0), labels=jnp.asarray(LABELS), **options)
    generator = torch.Generator().manual_seed(0)
    want = tpr.sample(model, 4, generator, labels=torch.from_numpy(LABELS), **options)
    np.testing.assert_array_equal(got, want.numpy())


@pytest.fixture(scope="module")
def masked_pair():
    import torch_maskgit_reference as tmr

    prior = MaskGITPrior(K, H, W, num_classes=C, dim=16, depth=2, heads=2, rngs=nnx.Rngs(1))
    return prior, tmr.from_flax(prior), tmr


@pytest.mark.parametrize("labels", [LABELS, None])
def test_masked_prior_logits_match(masked_pair, labels):
    prior, model, _ = masked_pair
    rng = np.random.default_rng(0)
    codes, mask = rng.integers(0, K, (4, H, W)), rng.random((4, H, W)) < 0.5
    got = prior(jnp.asarray(codes), None if labels is None else jnp.asarray(labels), mask=mask)
    tokens = torch.from_numpy(np.where(mask, K, codes).reshape(4, -1))
    ids = torch.from_numpy(np.full(4, C) if labels is None else labels)
    with torch.no_grad():
        want = model.logits(tokens, ids).reshape(4, H, W, K)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("steps", "guidance"), [(4, 0.0), (8, 2.0), (16, 0.0)])
def test_masked_greedy_decoding_gives_identical_codes(masked_pair, steps, guidance):
    """top_k=1 and no confidence noise: the whole parallel loop is deterministic in both."""
    prior, model, tmr = masked_pair
    options = dict(top_k=1, guidance=guidance, steps=steps)
    got = sample(
        prior, 4, jax.random.key(0), labels=jnp.asarray(LABELS), confidence_noise=0.0, **options
    )
    generator = torch.Generator().manual_seed(0)
    want = tmr.sample(
        model, 4, generator, labels=torch.from_numpy(LABELS), confidence_noise=0.0, **options
    )
    np.testing.assert_array_equal(got, want.numpy())
