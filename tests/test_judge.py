"""The held-out judge: it learns separable classes, counts right answers, refuses bad input."""

import json

import numpy as np
import pytest
from flax import nnx

from jaxbasics import judge as J


def _two_colours(n=64, seed=0):
    """Class 0: dark images, class 1: bright ones, with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    base = np.where(labels[:, None, None, None] == 1, 200, 50)
    noise = rng.integers(-30, 30, (n, 8, 8, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8), labels


def test_a_judge_learns_separable_classes_and_is_deterministic():
    images, labels = _two_colours()
    a = J.train_judge(images, labels, 2, steps=40, batch_size=16, width=4, seed=3)
    b = J.train_judge(images, labels, 2, steps=40, batch_size=16, width=4, seed=3)
    test, test_labels = _two_colours(seed=1)
    assert J.accuracy(a, test, test_labels) == 1.0
    np.testing.assert_array_equal(J.predict(a, test), J.predict(b, test))


def test_accuracy_and_per_class_accuracy_count_right_answers():
    judge = J.Judge(3, width=4, rngs=nnx.Rngs(0))
    images = np.random.default_rng(0).integers(0, 255, (9, 8, 8, 3)).astype(np.uint8)
    predicted = J.predict(judge, images)
    labels = predicted.copy()
    labels[:3] = (labels[:3] + 1) % 3  # three wrong
    assert J.accuracy(judge, images, labels) == pytest.approx(6 / 9)
    per = J.per_class_accuracy(judge, images, labels)
    for c, share in per.items():
        right = (predicted == labels)[labels == c]
        assert share == pytest.approx(right.mean())


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), [0, 1], "uint8"),
        (np.zeros((2, 8, 8), np.uint8), [0, 1], r"\(N, H, W, 3\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), [0, 5], r"labels must be in \[0, 3\), got 5"),
        (np.zeros((2, 8, 8, 3), np.uint8), [0.5, 1.0], "integers"),
        (np.zeros((0, 8, 8, 3), np.uint8), [], "N, H, W >= 1"),
        (np.zeros((2, 0, 0, 3), np.uint8), [0, 1], "N, H, W >= 1"),
    ],
)
def test_bad_images_or_labels_are_one_line(images, labels, message):
    judge = J.Judge(3, width=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=message):
        J.accuracy(judge, images, np.asarray(labels))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (dict(steps=2.5), "steps must be an integer"),
        (dict(steps=True), "steps must be an integer"),
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(width=0), "width must be"),
        (dict(batch_size=0), "batch_size must be"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
    ],
)
def test_bad_training_options_are_one_line(option, message):
    images, labels = _two_colours(8)
    with pytest.raises(ValueError, match=message):
        J.train_judge(images, labels, 2, **option)


def _saved(folder, judge, meta):
    folder.mkdir()
    for name, content in J.judge_files(judge, meta).items():
        (folder / name).write_bytes(content)
    return folder


def test_a_saved_judge_loads_back_with_the_same_verdicts(tmp_path):
    judge = J.Judge(3, width=4, rngs=nnx.Rngs(1))
    folder = _saved(tmp_path / "j", judge, {"classes": ["a", "b", "c"], "dataset": "x"})
    loaded, meta = J.load_judge(folder)
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(J.predict(loaded, images), J.predict(judge, images))
    assert meta == {"classes": ["a", "b", "c"], "dataset": "x", "width": 4}


@pytest.mark.parametrize(
    "edit",
    [
        {"width": 0},
        {"width": -3},
        {"width": 10**12},
        {"width": 4.0},
        {"width": True},
        {"classes": []},
        {"classes": {"a": 1, "b": 2}},
        {"classes": ["a", 3]},
    ],
)
def test_a_damaged_judge_json_is_one_line(tmp_path, edit):
    folder = _saved(tmp_path / "j", J.Judge(2, width=4, rngs=nnx.Rngs(0)), {"classes": ["a", "b"]})
    meta = json.loads((folder / J.META).read_text())
    (folder / J.META).write_text(json.dumps(meta | edit))
    with pytest.raises(
        ValueError, match=r"judge.json is damaged; delete .* trains the judge again"
    ):
        J.load_judge(folder)
    (folder / J.META).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="judge.json is damaged"):
        J.load_judge(folder)


def test_weights_of_another_judge_are_refused_not_loaded(tmp_path):
    """flax's from_bytes takes arrays of any shape: a 3-class judge's weights under a 10-class
    judge.json once loaded, and judged with a 3-wide head."""
    folder = _saved(
        tmp_path / "j", J.Judge(10, width=4, rngs=nnx.Rngs(0)), {"classes": list("abcdefghij")}
    )
    other = J.judge_files(J.Judge(3, width=4, rngs=nnx.Rngs(0)), {"classes": list("abc")})
    (folder / J.WEIGHTS).write_bytes(other[J.WEIGHTS])
    with pytest.raises(ValueError, match="weights.msgpack holds another judge than judge.json"):
        J.load_judge(folder)


def test_a_file_or_an_empty_folder_is_no_judge(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file; a judge is a folder"):
        J.load_judge(tmp_path / "f")
    with pytest.raises(FileNotFoundError, match=r"holds no judge \(no judge.json\)"):
        J.load_judge(tmp_path)
    (tmp_path / "d" / J.META).mkdir(parents=True)  # a folder named judge.json
    with pytest.raises(ValueError, match="judge.json is damaged"):
        J.load_judge(tmp_path / "d")
