"""Real CIFAR-10, from a torchvision ``cifar-10-batches-py`` folder or a prepared TFDS data dir.

Never downloads. The torchvision pickles are NCHW rows; they are converted to NHWC here, exactly
once. TFDS data must be prepared in the array_record format, which allows random access.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxbasics.data.base import (
    ArraySource,
    Batch,
    DatasetNotFoundError,
    Example,
    Source,
    check_index,
    check_split,
    indices_in,
    split_batch,
)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_TORCHVISION_FOLDER = "cifar-10-batches-py"
_TORCHVISION_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_PREPARE_COMMAND = (
    'pip install tensorflow && python -c "import tensorflow_datasets as tfds; '
    "tfds.builder('cifar10', data_dir='{data_dir}', file_format='array_record')"
    '.download_and_prepare()"'
)


@dataclass(frozen=True)
class TfdsSource:
    """Wraps a ``tfds.data_source`` so elements are just ``{"image", "label"}``."""

    data_source: Any
    batched_reads: bool = True

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int) -> Example:
        record = self.data_source[check_index(index, len(self))]
        return {"image": np.asarray(record["image"]), "label": int(record["label"])}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return split_batch(self.read_batch(indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        idx = indices_in(indices, len(self)).tolist()
        if self.batched_reads:
            records = self.data_source.__getitems__(idx)
        else:
            records = [self.data_source[i] for i in idx]
        return {
            "image": np.stack([np.asarray(r["image"]) for r in records]).astype(np.uint8),
            "label": np.asarray([r["label"] for r in records], dtype=np.int32),
        }


class _CifarUnpickler(pickle.Unpickler):
    """Loads only what CIFAR-10 pickles contain (dicts, lists, bytes and NumPy arrays)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles from Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"{module}.{name} is not allowed in a CIFAR-10 batch file; this file is not the "
                "official cifar-10-batches-py data."
            )
        return super().find_class(module, name)


def _load_torchvision_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (N, 32, 32, 3) uint8 NHWC images and (N,) int32 labels."""
    try:
        with path.open("rb") as f:
            # latin1, as torchvision does, so Python 2 pickles of NumPy arrays load.
            d = _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{path} cannot be read as a CIFAR-10 batch ({type(e).__name__}: {e}); it is damaged "
            "or not the official cifar-10-batches-py data. Download and extract it again."
        ) from e
    if not isinstance(d, dict):
        raise ValueError(
            f"{path} is not a CIFAR-10 batch: expected a pickled dict, got {type(d).__name__}."
        )
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(
            f"{path} is not a CIFAR-10 batch: expected a dict with 'data' and 'labels', got keys "
            f"{sorted(d)}."
        )
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d["labels"], dtype=np.int32)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(
            f"{path}: expected data of shape (N, 3072) and N labels, got data {data.shape} and "
            f"{len(labels)} labels."
        )
    # Rows are CHW, row-major: the one NCHW -> NHWC conversion in the library.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _torchvision_folder(root: Path) -> Path | None:
    for folder in (root, root / _TORCHVISION_FOLDER):
        if any(
            (folder / name).is_file() for files in _TORCHVISION_FILES.values() for name in files
        ):
            return folder
    return None


def _load_torchvision(folder: Path, split: str) -> ArraySource:
    paths = [folder / name for name in _TORCHVISION_FILES[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"CIFAR-10 {split!r} split: the torchvision folder {folder} lacks {missing}. "
            f"Expected {list(_TORCHVISION_FILES[split])} there; re-download it with "
            "torchvision.datasets.CIFAR10(root, download=True), or use a TFDS data dir."
        )
    parts = [_load_torchvision_batch(p) for p in paths]
    images = np.ascontiguousarray(np.concatenate([im for im, _ in parts]))
    labels = np.concatenate([lab for _, lab in parts])
    return ArraySource(images, labels, name=f"cifar10/{split} from {folder}")


def _not_found(root: Path, split: str, detail: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"CIFAR-10 ({split!r} split) not found under {root}: {detail}\n"
        "Looked for:\n"
        f"  - a torchvision folder: {root / _TORCHVISION_FOLDER} (or {root} itself) holding "
        "data_batch_1 .. data_batch_5 and test_batch;\n"
        f"  - a TFDS data dir: {root}/cifar10/<version>/dataset_info.json with "
        f"cifar10-{split}.array_record-* files.\n"
        "To fix, either:\n"
        "  - prepare it once with TFDS (needs network and TensorFlow, once):\n"
        f"      {_PREPARE_COMMAND.format(data_dir=root)}\n"
        "  - or pass --data-dir pointing at an existing torchvision download (the folder holding "
        f"{_TORCHVISION_FOLDER}, or that folder itself);\n"
        "  - or train on the embedded dataset: --dataset shapes."
    )


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in path.name.split("."))
    except ValueError:
        return (-1,)


def _tfds_version_dir(root: Path, split: str) -> Path:
    """Checks ``root`` holds a prepared array_record cifar10; returns its version folder."""
    if not root.is_dir():
        raise _not_found(root, split, "that folder does not exist.")
    if not (root / "cifar10").is_dir():
        raise _not_found(root, split, f"there is no {root / 'cifar10'} folder.")
    versions = sorted(
        (p.parent for p in (root / "cifar10").glob("*/dataset_info.json")), key=_version_key
    )
    if not versions:
        detail = f"{root / 'cifar10'} has no <version>/dataset_info.json (unfinished prepare?)."
        raise _not_found(root, split, detail)
    version_dir = versions[-1]
    if any(version_dir.glob(f"cifar10-{split}.array_record*")):
        return version_dir
    if any(version_dir.glob(f"cifar10-{split}.tfrecord*")):
        raise DatasetNotFoundError(
            f"CIFAR-10 in {version_dir} was prepared as tfrecord, which has no random access. "
            "Prepare it again as array_record into a new data dir (needs network and TensorFlow, "
            f"once):\n    {_PREPARE_COMMAND.format(data_dir='NEW_DIR')}\n"
            f"or pass --data-dir pointing at a torchvision {_TORCHVISION_FOLDER} folder."
        )
    raise _not_found(root, split, f"{version_dir} has no cifar10-{split}.array_record-*.")


def _tfds_mock_active(tfds: Any) -> bool:
    # tfds.testing.mock_data swaps DatasetBuilder.__init__ for a function defined in
    # tensorflow_datasets.testing.mocking and ignores every data_dir: the file checks in
    # cifar10() would fail on data that the mock serves from memory.
    return tfds.core.DatasetBuilder.__init__.__module__ == "tensorflow_datasets.testing.mocking"


def cifar10(split: str = "train", data_dir: str | os.PathLike[str] | None = None) -> Source:
    """Returns real CIFAR-10 as a source, like torchvision ``datasets.CIFAR10(root, train=...)``.

    Never downloads. ``data_dir`` may be, told apart by its contents:

    * a torchvision folder: ``data_dir`` is, or contains, ``cifar-10-batches-py/`` with the
      ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` pickles. They are read without torch
      and converted from CHW rows to NHWC once, here. Pickle can run code from a crafted file:
      only point this at files you trust (the loader also refuses anything but NumPy arrays).
    * a TFDS data dir with ``cifar10/<version>/`` prepared in array_record format, read with
      ``tfds.data_source(..., download=False)`` (no TensorFlow needed to read). The files are
      checked first, so a missing dataset fails fast with :class:`DatasetNotFoundError` instead of
      a download attempt or a misleading TFDS error.

    ``data_dir=None`` means TFDS's default data dir (``$TFDS_DATA_DIR`` or
    ``~/tensorflow_datasets``). Under ``tfds.testing.mock_data`` the mock serves the data, as it
    does for any TFDS call, unless ``data_dir`` is a torchvision folder.

    Args:
      split: ``"train"`` (50,000 images) or ``"test"`` (10,000), for both layouts.
      data_dir: the folder described above, or None.

    Returns:
      A random-access source of ``{"image": uint8 (32, 32, 3), "label": int}`` (labels index
      ``CIFAR10_CLASSES``).

    Raises:
      DatasetNotFoundError: when neither layout is found; the message lists what was looked for
        where and how to get the data.

    >>> import tempfile
    >>> try:
    ...     cifar10("test", data_dir=tempfile.mkdtemp())
    ... except DatasetNotFoundError as e:
    ...     print(str(e).splitlines()[0])
    CIFAR-10 ('test' split) not found under ...: there is no .../cifar10 folder.
    """
    check_split(split)
    # The same default as tfds.core.constants.get_default_data_dir(), without importing tfds.
    default = os.environ.get("TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))
    root = Path(default if data_dir is None else data_dir).expanduser()
    if (folder := _torchvision_folder(root)) is not None:
        return _load_torchvision(folder, split)
    loaded_tfds = sys.modules.get("tensorflow_datasets")  # a mock needs tfds imported already
    if loaded_tfds is not None and _tfds_mock_active(loaded_tfds):
        # The mock's __getitems__ is broken in tfds 4.9.10 (it drops `self`): read one by one.
        source = loaded_tfds.data_source("cifar10", split=split, download=False)
        return TfdsSource(source, batched_reads=False)
    version_dir = _tfds_version_dir(root, split)  # fails fast, before tfds is even imported
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(
            f"cifar10:{version_dir.name}", split=split, data_dir=str(root), download=False
        )
    except Exception as e:  # TFDS raises many kinds (protobuf, assertion...) for damaged files
        raise DatasetNotFoundError(
            f"CIFAR-10 in {version_dir} cannot be read by TFDS ({type(e).__name__}: {e}). Its "
            "files look damaged: prepare it again into a new data dir, or pass --data-dir a "
            "torchvision cifar-10-batches-py download."
        ) from e
    return TfdsSource(source)
