"""The weight converter refuses to convert silently."""

import numpy as np
import pytest
from flax import nnx

from conftest import small_config
from jaxbasics.tasks.vqvae.train import init_state, to_model
from jaxbasics.vqvae.convert import from_torch_state_dict, to_torch_state_dict
from jaxbasics.vqvae.model import VQVAE


@pytest.fixture(scope="module")
def plain(tiny_model):
    return tiny_model


def test_names_are_the_notes_names(plain):
    names = set(to_torch_state_dict(nnx.state(plain)))
    assert {
        "_encoder._conv_1.weight",
        "_encoder._residual_stack._layers.0._block.1.weight",
        "_encoder._residual_stack._layers.0._block.3.weight",
        "_pre_vq_conv.bias",
        "_vq_vae._embedding.weight",
        "_decoder._conv_trans_1.weight",
        "_decoder._conv_trans_2.bias",
    } <= names
    config = small_config(decay=0.99)
    state = init_state(config)
    ema = set(to_torch_state_dict(nnx.state(to_model(config, state.params, state.ema))))
    assert {"_vq_vae._ema_w", "_vq_vae._ema_cluster_size"} <= ema


def test_layouts(plain):
    sd = to_torch_state_dict(nnx.state(plain))
    k = np.asarray(plain.encoder.conv_1.kernel[...])  # HWIO
    np.testing.assert_array_equal(sd["_encoder._conv_1.weight"], k.transpose(3, 2, 0, 1))
    kt = np.asarray(plain.decoder.conv_trans_1.kernel[...])  # flipped (kH, kW, in, out)
    np.testing.assert_array_equal(
        sd["_decoder._conv_trans_1.weight"], kt[::-1, ::-1].transpose(2, 3, 0, 1)
    )


def test_missing_and_extra_keys_are_listed(plain):
    sd = to_torch_state_dict(nnx.state(plain))
    del sd["_encoder._conv_2.bias"]
    sd["_vq_vae._ema_w"] = np.zeros((16, 8), np.float32)
    with pytest.raises(KeyError) as e:
        from_torch_state_dict(sd, plain)
    assert "_encoder._conv_2.bias" in str(e.value) and "_vq_vae._ema_w" in str(e.value)


def test_wrong_shape_is_listed(plain):
    sd = to_torch_state_dict(nnx.state(plain))
    sd["_vq_vae._embedding.weight"] = np.zeros((32, 8), np.float32)
    with pytest.raises(ValueError, match=r"_vq_vae._embedding.weight: got \(32, 8\)"):
        from_torch_state_dict(sd, plain)


def test_an_fsq_model_is_refused_in_one_line_both_ways():
    fsq = nnx.eval_shape(lambda: VQVAE(8, 2, 1, quantizer="fsq", rngs=nnx.Rngs(0)))
    for convert in (
        lambda: to_torch_state_dict(nnx.state(fsq)),
        lambda: from_torch_state_dict({}, fsq),
    ):
        with pytest.raises(ValueError, match="converter handles VQ models only.*FSQ model") as e:
            convert()
        assert "\n" not in str(e.value)
