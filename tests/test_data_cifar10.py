"""jaxbasics.data.cifar10: both CIFAR-10 layouts, never a download, errors that say what to do."""

import io
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from jaxbasics.data.cifar10 import CIFAR10_CLASSES, cifar10
from jaxbasics.data.sources import DatasetNotFoundError, data_variance, get_source, read_batch

# --- torchvision's cifar-10-batches-py ------------------------------------------------------


def _known_images(n: int, offset: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8 NHWC images whose pixels encode (image, row, col, channel)."""
    i, y, x, c = np.meshgrid(
        np.arange(n), np.arange(32), np.arange(32), np.arange(3), indexing="ij"
    )
    return ((offset + i * 7 + y * 3 + x * 5 + c * 85) % 256).astype(np.uint8)


def _write_torchvision_folder(root: Path, per_batch: int = 10) -> dict[str, np.ndarray]:
    """Writes a tiny cifar-10-batches-py in the real format; returns the NHWC images per split."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {"train": [], "test": []}
    for b, name in enumerate(names):
        images = _known_images(per_batch, offset=b * 40)
        chw_rows = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # the real file layout
        d = {
            b"batch_label": f"batch {b}".encode(),
            b"labels": [(b + k) % 10 for k in range(per_batch)],
            b"data": chw_rows,
            b"filenames": [f"img_{b}_{k}.png".encode() for k in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
        written["test" if name == "test_batch" else "train"].append(images)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, f)
    return {k: np.concatenate(v) for k, v in written.items()}


def test_torchvision_folder_is_read_as_nhwc(tmp_path):
    expected = _write_torchvision_folder(tmp_path)
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py", str(tmp_path)):
        train = cifar10("train", data_dir=data_dir)
        assert len(train) == 50
        np.testing.assert_array_equal(train.read_batch(np.arange(50))["image"], expected["train"])
    test = cifar10("test", data_dir=tmp_path)
    assert len(test) == 10 and test[3]["label"] == (5 + 3) % 10
    np.testing.assert_array_equal(test.read_batch(np.arange(10))["image"], expected["test"])
    # One pixel by hand: the file's row is CHW, so (row 1, col 2, green) is at 1024 + 32 + 2.
    raw = expected["train"][0].transpose(2, 0, 1).reshape(-1)
    assert train[0]["image"][1, 2, 1] == raw[1024 + 1 * 32 + 2]
    assert train[0]["image"].flags.c_contiguous


def test_torchvision_loader_refuses_foreign_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": print, b"labels": []}, f)  # a global outside the allow-list
    with pytest.raises(
        ValueError, match="test_batch cannot be read as a CIFAR-10 batch.*not allowed"
    ):
        cifar10("test", data_dir=tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "a list"])
def test_damaged_torchvision_batches_name_the_file(tmp_path, damage):
    _write_torchvision_folder(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    raw = path.read_bytes()
    path.write_bytes(
        {
            "garbage": b"\x05" + raw[1:200],
            "truncated": raw[: len(raw) // 2],
            "empty": b"",
            "a list": pickle.dumps([1, 2, 3]),
        }[damage]
    )
    with pytest.raises(ValueError, match=f"{path}.* (cannot be read as|is not) a CIFAR-10 batch"):
        cifar10("test", data_dir=tmp_path)


def test_damaged_tfds_dir_is_reported_not_a_traceback(tmp_path):
    _write_tfds_dir(tmp_path, {"train": 2, "test": 2})
    (next(tmp_path.glob("cifar10/*")) / "dataset_info.json").write_text("{}")
    with pytest.raises(DatasetNotFoundError, match="cannot be read by TFDS"):
        cifar10("train", data_dir=tmp_path)


def test_torchvision_folder_missing_files(tmp_path):
    _write_torchvision_folder(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DatasetNotFoundError, match=r"lacks \['data_batch_3'\]"):
        cifar10("train", data_dir=tmp_path)
    assert len(cifar10("test", data_dir=tmp_path)) == 10


# --- TFDS -----------------------------------------------------------------------------------


def test_tfds_under_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        src = cifar10("train")
        assert len(src) == 12
        ex = src[3]
        assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
        assert isinstance(ex["label"], int)
        batch = read_batch(src, [0, 3, 11])
        assert batch["image"].shape == (3, 32, 32, 3) and batch["label"].dtype == np.int32
        np.testing.assert_array_equal(batch["image"][1], ex["image"])
        assert len(cifar10("test", data_dir="/nonexistent/dir")) == 12  # the mock ignores dirs
        assert 0 < data_variance(src) < 0.2
        assert len(get_source("cifar10", "train", num_examples=5)) == 5


def _write_tfds_dir(data_dir: Path, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Writes a tiny prepared cifar10 (array_record) the way TFDS would, without TensorFlow."""
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordWriter
    from PIL import Image
    from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

    builder = tfds.builder("cifar10", data_dir=str(data_dir), file_format="array_record")
    version_dir = Path(builder.data_path)
    version_dir.mkdir(parents=True)
    splits, images = [], {}
    for s, (split, n) in enumerate(sizes.items()):
        images[split] = _known_images(n, offset=100 * s)
        path = version_dir / f"cifar10-{split}.array_record-00000-of-00001"
        writer = ArrayRecordWriter(str(path), "group_size:1")
        for i, image in enumerate(images[split]):
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            feature = {
                "id": tf_feature_pb2.Feature(
                    bytes_list=tf_feature_pb2.BytesList(value=[f"{split}_{i}".encode()])
                ),
                "image": tf_feature_pb2.Feature(
                    bytes_list=tf_feature_pb2.BytesList(value=[png.getvalue()])
                ),
                "label": tf_feature_pb2.Feature(int64_list=tf_feature_pb2.Int64List(value=[i])),
            }
            example = tf_example_pb2.Example(features=tf_feature_pb2.Features(feature=feature))
            writer.write(example.SerializeToString())
        writer.close()
        splits.append(tfds.core.SplitInfo(split, [n], path.stat().st_size))
    builder.info.set_splits(tfds.core.SplitDict(splits))
    builder.info.write_to_directory(version_dir)
    return images


def test_tfds_prepared_array_record_dir(tmp_path):
    expected = _write_tfds_dir(tmp_path, {"train": 6, "test": 4})
    train = cifar10("train", data_dir=tmp_path)
    assert len(train) == 6 and train[5]["label"] == 5
    np.testing.assert_array_equal(train.read_batch(np.arange(6))["image"], expected["train"])
    test = get_source("cifar10", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(read_batch(test, [3, 0])["image"], expected["test"][[3, 0]])


def _assert_not_found_fast(data_dir, split="train", match="not found under"):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match=match) as info:
        cifar10(split, data_dir=data_dir)
    assert time.perf_counter() - start < 3.0  # no network, no download attempt
    return str(info.value)


def test_missing_dataset_explains_what_and_how(tmp_path):
    message = _assert_not_found_fast(tmp_path / "nowhere")
    assert "does not exist" in message
    for looked_for in (
        "cifar-10-batches-py",
        "dataset_info.json",
        "array_record",
        "download_and_prepare()",
        "file_format='array_record'",
        "--data-dir",
        "--dataset shapes",
    ):
        assert looked_for in message
    assert str(tmp_path / "nowhere") in message
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


def test_wrong_layout_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "readme.txt").write_text("not cifar")
    message = _assert_not_found_fast(tmp_path, "test", match="there is no .*cifar10 folder")
    assert "cifar-10-batches-py" in message and "cifar10-test.array_record" in message


def test_unfinished_and_tfrecord_tfds_dirs(tmp_path):
    version = tmp_path / "cifar10" / "3.0.2"
    version.mkdir(parents=True)
    _assert_not_found_fast(tmp_path, match="dataset_info.json")
    (version / "dataset_info.json").write_text("{}")
    (version / "cifar10-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="prepared as tfrecord"):
        cifar10("train", data_dir=tmp_path)
    _assert_not_found_fast(tmp_path, "test", match="no cifar10-test.array_record")


def test_default_data_dir_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    message = _assert_not_found_fast(None)
    assert str(tmp_path) in message


# --- get_source and data_variance -----------------------------------------------------------


def test_get_source_reads_cifar10_and_keeps_the_first_examples(tmp_path):
    _write_torchvision_folder(tmp_path)
    head = get_source("cifar10", "train", data_dir=tmp_path, num_examples=4)
    assert len(head) == 4 and read_batch(head, [3])["image"].shape == (1, 32, 32, 3)
    with pytest.raises(IndexError):
        head[4]
