"""jaxbasics.data.sources: dispatch by name, in-memory copies and the data variance."""

import numpy as np
import pytest

from jaxbasics.data.shapes import shapes
from jaxbasics.data.sources import (
    DATASETS,
    ArraySource,
    data_variance,
    get_source,
    in_memory,
)


def test_get_source_dispatch():
    src = get_source("shapes", "test", num_examples=3, seed=2)
    assert np.array_equal(src[1]["image"], shapes("test", 3, seed=2)[1]["image"])
    with pytest.raises(ValueError, match=r"valid names are \('shapes', 'cifar10', 'folder'\)"):
        get_source("mnist")
    assert DATASETS == ("shapes", "cifar10", "folder")


def test_data_variance_matches_numpy():
    src = shapes(num_examples=64)
    images = src.read_batch(np.arange(64))["image"]
    assert data_variance(src, chunk_size=10) == pytest.approx(np.var(images / 255.0), rel=1e-12)
    assert data_variance(src, max_examples=20) == pytest.approx(
        np.var(images[:20] / 255.0), rel=1e-12
    )
    rng = np.random.default_rng(0)
    arrays = ArraySource(
        rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), np.zeros(30, np.int32)
    )
    assert data_variance(arrays, chunk_size=7) == pytest.approx(
        np.var(arrays.images / 255.0), rel=1e-12
    )
    with pytest.raises(ValueError, match="at least one image"):
        data_variance(shapes(num_examples=0))


def test_in_memory_keeps_elements_and_order():
    src = shapes("test", num_examples=10, seed=3)
    mem = in_memory(src, chunk_size=4)
    np.testing.assert_array_equal(mem.images, src.read_batch(range(10))["image"])
    np.testing.assert_array_equal(mem.labels, src.read_batch(range(10))["label"])
    assert mem[7]["label"] == src[7]["label"] and in_memory(mem) is mem
