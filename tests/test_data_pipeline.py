"""Tests for jaxbasics.data.pipeline: order, epochs, checkpointing, sharding, padded eval."""

import itertools
import json

import numpy as np
import pytest

from jaxbasics.data.pipeline import (
    eval_dataset,
    iterator_state,
    restore_iterator,
    train_dataset,
)
from jaxbasics.data.shapes import shapes
from jaxbasics.data.sources import ArraySource
from jaxbasics.data.transforms import to_unit_float


def _indexed(n: int) -> ArraySource:
    """A source whose label is the example's index, so batches show which examples they hold."""
    images = np.broadcast_to(
        (np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, 32, 32, 3)
    ).copy()
    return ArraySource(images, np.arange(n, dtype=np.int32))


def _labels(it, steps: int) -> list[list[int]]:
    return [next(it)["label"].tolist() for _ in range(steps)]


def test_train_batches_shapes_dtypes_and_ranges():
    src = shapes(num_examples=64)
    it = iter(train_dataset(src, batch_size=16, seed=0))
    for batch in itertools.islice(it, 5):  # past the end of the first epoch (4 batches)
        assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
        assert -0.5 <= batch["image"].min() and batch["image"].max() <= 0.5
        assert 0 <= batch["label"].min() and batch["label"].max() < 10


def test_train_images_are_the_transformed_source_images():
    src = _indexed(40)
    batch = next(iter(train_dataset(src, batch_size=8, seed=3)))
    expected = src.images[batch["label"]] / 255.0 - 0.5
    np.testing.assert_allclose(batch["image"], expected, atol=1e-6)
    custom = next(iter(train_dataset(src, batch_size=8, seed=3, transform=to_unit_float)))
    np.testing.assert_allclose(custom["image"], src.images[custom["label"]] / 255.0, atol=1e-6)


def test_order_follows_the_seed():
    src = _indexed(50)
    first = _labels(iter(train_dataset(src, batch_size=10, seed=0)), 6)
    again = _labels(iter(train_dataset(src, batch_size=10, seed=0)), 6)
    other = _labels(iter(train_dataset(src, batch_size=10, seed=1)), 6)
    assert first == again
    assert first != other
    assert first[0] != list(range(10))  # shuffled


def test_every_epoch_is_a_new_permutation_with_the_remainder_dropped():
    src = _indexed(23)  # 23 = 5 batches of 4 + 3 dropped per epoch
    steps = _labels(iter(train_dataset(src, batch_size=4, seed=0)), 15)
    epochs = [sum(steps[e * 5 : (e + 1) * 5], []) for e in range(3)]
    for epoch in epochs:
        assert len(set(epoch)) == 20 and set(epoch) <= set(range(23))  # no repeats in an epoch
    assert epochs[0] != epochs[1] != epochs[2]
    assert len({tuple(sorted(set(range(23)) - set(e))) for e in epochs}) > 1  # dropped ones vary


@pytest.mark.parametrize("stop_at", [3, 5, 7])  # mid-epoch, at the boundary, in epoch 2
def test_checkpoint_restore_continues_exactly(stop_at):
    src = shapes(num_examples=20)  # 5 batches of 4 per epoch
    ds = train_dataset(src, batch_size=4, seed=7)
    uninterrupted = iter(ds)
    reference = [next(uninterrupted) for _ in range(stop_at + 4)]

    it = iter(ds)
    for _ in range(stop_at):
        next(it)
    saved = json.dumps(iterator_state(it))  # what goes into the Orbax checkpoint
    assert json.loads(saved) == {"next_index": stop_at}

    resumed = restore_iterator(train_dataset(src, batch_size=4, seed=7), json.loads(saved))
    for expected in reference[stop_at:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])
    plain = iter(ds)  # plain Grain API works the same
    plain.set_state(json.loads(saved))
    np.testing.assert_array_equal(next(plain)["label"], reference[stop_at]["label"])


def test_process_shards_are_disjoint_and_make_up_the_global_batch():
    src = _indexed(48)
    whole = _labels(iter(train_dataset(src, batch_size=12, seed=5)), 8)
    shards = [
        _labels(
            iter(train_dataset(src, batch_size=12, seed=5, process_index=p, process_count=3)), 8
        )
        for p in range(3)
    ]
    for step in range(8):
        parts = [shards[p][step] for p in range(3)]
        assert all(len(part) == 4 for part in parts)
        assert sum(parts, []) == whole[step]
        assert len(set(sum(parts, []))) == 12


def test_sharding_errors():
    src = shapes(num_examples=32)
    with pytest.raises(ValueError, match=r"multiple of process_count.*batch_size=10.*e\.g\. 12"):
        train_dataset(src, batch_size=10, seed=0, process_count=4)
    with pytest.raises(ValueError, match="multiple of process_count"):
        eval_dataset(src, batch_size=10, process_count=3)
    with pytest.raises(ValueError, match="process_index must be in"):
        train_dataset(src, batch_size=8, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_dataset(src, batch_size=64, seed=0)


def test_eval_pass_covers_every_example_once_with_padding_and_mask():
    src = _indexed(23)
    batches = list(eval_dataset(src, batch_size=8))
    assert len(batches) == 3
    for b in batches:
        assert b["image"].shape == (8, 32, 32, 3) and b["image"].dtype == np.float32
        assert b["mask"].dtype == np.bool_ and b["label"].dtype == np.int32
    labels = np.concatenate([b["label"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert labels[mask].tolist() == list(range(23))  # ordered, each exactly once
    assert mask.tolist() == [True] * 23 + [False]
    last = batches[-1]
    np.testing.assert_allclose(last["image"][~last["mask"]], -0.5)  # zero image, transformed
    np.testing.assert_allclose(
        last["image"][last["mask"]], src.images[16:23] / 255.0 - 0.5, atol=1e-6
    )


def test_sharded_eval_covers_every_example_once():
    src = _indexed(21)
    seen = []
    for p in range(4):
        batches = list(eval_dataset(src, batch_size=8, process_index=p, process_count=4))
        assert len(batches) == 3 and all(b["label"].shape == (2,) for b in batches)
        seen += [int(label) for b in batches for label in b["label"][b["mask"]]]
    assert sorted(seen) == list(range(21))
    # The last global batch holds 5 examples, so process 3's slice of it is all padding.
    last = list(eval_dataset(src, batch_size=8, process_index=3, process_count=4))[-1]
    assert not last["mask"].any()
