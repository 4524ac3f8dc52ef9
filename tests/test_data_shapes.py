"""jaxbasics.data.shapes: the embedded dataset is sized, pure, varied and checked."""

import numpy as np
import pytest

from jaxbasics.data.shapes import SHAPES_CLASSES, shapes


def test_shapes_sizes_default_to_cifar10():
    assert len(shapes("train")) == 50_000 and len(shapes("test")) == 10_000
    assert len(shapes("train", num_examples=7)) == 7


def test_shapes_elements_and_batches():
    src = shapes(num_examples=64)
    ex = src[5]
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    assert isinstance(ex["label"], int) and 0 <= ex["label"] < len(SHAPES_CLASSES)
    batch = src.read_batch(np.arange(64))
    assert batch["image"].shape == (64, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
    listed = src.__getitems__([5, 9])
    assert np.array_equal(listed[0]["image"], ex["image"]) and listed[1]["label"] == src[9]["label"]


def test_shapes_are_a_pure_function_of_seed_split_and_index():
    src = shapes(num_examples=64)
    forward = src.read_batch(np.arange(64))
    backward = src.read_batch(np.arange(63, -1, -1))
    np.testing.assert_array_equal(forward["image"], backward["image"][::-1])
    np.testing.assert_array_equal(forward["label"], backward["label"][::-1])
    # One at a time, in a scrambled order, and from a fresh source object: the same bytes.
    again = shapes(num_examples=64)
    for i in np.random.default_rng(0).permutation(64)[:10]:
        assert again[int(i)]["image"].tobytes() == forward["image"][i].tobytes()
    # The split's size does not change the images either.
    np.testing.assert_array_equal(
        shapes(num_examples=8).read_batch(range(8))["image"], forward["image"][:8]
    )


def test_shapes_seeds_and_splits_differ():
    a = shapes("train", num_examples=32, seed=0).read_batch(range(32))["image"]
    b = shapes("train", num_examples=32, seed=1).read_batch(range(32))["image"]
    t = shapes("test", num_examples=32, seed=0).read_batch(range(32))["image"]
    for other in (b, t):
        assert not any(np.array_equal(a[i], other[i]) for i in range(32))
    assert len({img.tobytes() for img in a}) == 32


def test_shapes_are_varied():
    batch = shapes(num_examples=256).read_batch(range(256))
    images = batch["image"]
    assert images.min() == 0 and images.max() == 255
    per_image_std = (images / 255.0).std(axis=(1, 2, 3))
    assert (per_image_std > 0.05).mean() > 0.9  # hardly any flat images
    colours = np.unique(images.reshape(-1, 3), axis=0)
    assert len(colours) > 50_000
    assert set(batch["label"].tolist()) == set(range(len(SHAPES_CLASSES)))
    assert np.bincount(batch["label"]).min() >= 10  # roughly balanced classes
    mean_colours = images.reshape(256, -1, 3).mean(axis=1)
    assert mean_colours.std(axis=0).min() > 20  # backgrounds vary in every channel


def test_shapes_errors():
    with pytest.raises(ValueError, match="split must be one of"):
        shapes("validation")
    with pytest.raises(IndexError, match="out of range"):
        shapes(num_examples=4)[4]
    with pytest.raises(IndexError, match="out of range"):
        shapes(num_examples=4).read_batch([0, 9])
    assert shapes(num_examples=4)[-1]["label"] == shapes(num_examples=4)[3]["label"]
