"""Tests for jaxbasics.data.transforms: values against hand math, layout, composition, errors."""

import numpy as np
import pytest

from jaxbasics.data.transforms import cifar_transform, compose, normalize, to_unit_float


def test_to_unit_float_values_dtype_and_layout():
    x = np.array([0, 51, 102, 255], np.uint8)
    np.testing.assert_allclose(to_unit_float(x), [0.0, 0.2, 0.4, 1.0], rtol=0, atol=1e-7)
    assert to_unit_float(x).dtype == np.float32
    batch = np.zeros((2, 5, 7, 3), np.uint8)
    assert to_unit_float(batch).shape == (2, 5, 7, 3)  # NHWC kept: no CHW permute


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint16])
def test_to_unit_float_rejects_non_uint8(dtype):
    with pytest.raises(TypeError, match=r"expects uint8.*got dtype"):
        to_unit_float(np.zeros((2, 2, 3), dtype))


def test_normalize_is_per_channel_on_last_axis():
    norm = normalize((0.1, 0.2, 0.3), (1.0, 2.0, 4.0))
    x = np.ones((2, 4, 4, 3), np.float32)
    out = norm(x)
    np.testing.assert_allclose(out[0, 0, 0], [0.9, 0.4, 0.175], rtol=1e-6)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(normalize((0.5,), (0.5,))(np.array([0.0, 1.0])), [-1.0, 1.0])


def test_notes_normalize_maps_unit_interval_to_half_interval_not_standard_scores():
    x = np.random.default_rng(0).random((100, 8, 8, 3)).astype(np.float32)
    out = normalize((0.5,) * 3, (1.0,) * 3)(x)
    np.testing.assert_allclose(out, x - 0.5, rtol=0, atol=1e-7)
    assert out.min() >= -0.5 and out.max() <= 0.5
    # The spread is unchanged (std of U(0, 1) is ~0.29), so it is not standardised to std 1.
    assert abs(out.std() - x.std()) < 1e-6 and out.std() < 0.35


def test_normalize_errors():
    with pytest.raises(TypeError, match="to_unit_float"):
        normalize((0.5,) * 3, (1.0,) * 3)(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="channels"):
        normalize((0.5,) * 3, (1.0,) * 3)(np.zeros((3, 2, 2), np.float32))  # CHW by mistake
    with pytest.raises(ValueError, match="one std per mean"):
        normalize((0.5,) * 3, (1.0,) * 2)
    with pytest.raises(ValueError, match="non-zero"):
        normalize((0.5,), (0.0,))


def test_compose_applies_left_to_right():
    assert compose(lambda x: x + 1, lambda x: x * 10)(1) == 20
    assert compose(lambda x: x * 10, lambda x: x + 1)(1) == 11
    assert compose()(5) == 5
    with pytest.raises(TypeError, match="separate arguments"):
        compose([to_unit_float])


def test_cifar_transform_is_x_over_255_minus_half():
    x = np.array([0, 51, 127, 128, 255], np.uint8)
    out = cifar_transform()(x[None, None, :, None].repeat(3, axis=-1))
    expected = np.array([-0.5, 0.2 - 0.5, 127 / 255 - 0.5, 128 / 255 - 0.5, 0.5])
    np.testing.assert_allclose(out[0, 0, :, 0], expected, rtol=0, atol=1e-6)
    assert out.dtype == np.float32
    batch = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(cifar_transform()(batch), batch / 255.0 - 0.5, atol=1e-6)
