"""Any folder of images as a dataset, read with Pillow: torchvision's ImageFolder or a flat tree.

:func:`folder` lists the image files once and decodes them on read, each centre-cropped to a
square and resized to ``image_size`` (:func:`~jaxbasics.data.images.read_image`). Two
layouts, told apart by contents:

* **ImageFolder** (torchvision's): ``root/train/<class>/...`` and ``root/test/<class>/...``
  (``root/val`` if there is no ``root/test``). Labels index the sorted class folder names of
  both splits together, so a class has the same label in both. Files directly in ``root/train``
  (outside any class folder) are ignored, as torchvision does.
* **Flat**: any other tree of images under ``root``, nested as deep as you like. A file belongs
  to the test split when a hash of its path relative to ``root`` falls below ``eval_fraction``,
  so a file's split depends on its own path only: adding, removing or moving other files never
  moves it to the other split, and the split is the same on every machine. Labels are all 0.

Files are in a fixed order: by their POSIX path relative to ``root`` (Python string order),
within each class in label order for ImageFolder. Hidden files and folders (a name starting
with ``.``) are skipped, and so are training workdirs (a folder holding ``config.json`` and
``checkpoints/``: a run kept next to its data does not train on its own plots); only
:data:`IMAGE_EXTENSIONS` count (case-insensitive), and symbolic links to files and folders are
followed.

>>> import tempfile
>>> from PIL import Image
>>> root = Path(tempfile.mkdtemp())
>>> for i in range(40):
...     Image.new("RGB", (48, 40), (i, 2 * i, 3 * i)).save(root / f"img{i:02}.png")
>>> train = folder(root, "train", eval_fraction=0.25)
>>> test = folder(root, "test", eval_fraction=0.25)
>>> len(train), len(test), train[0]["image"].shape, train[0]["label"]
(36, 4, (32, 32, 3), 0)
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxbasics.data.base import (
    Batch,
    DatasetNotFoundError,
    Example,
    check_index,
    check_split,
    indices_in,
    split_batch,
)
from jaxbasics.data.images import (  # ImageReadError: raised when a file is read
    IMAGE_EXTENSIONS,
    ImageReadError,  # noqa: F401
    read_image,
)


@dataclass(frozen=True, eq=False)
class FolderSource:
    """Image files under ``root`` decoded on read, as ``{"image": uint8 (S, S, 3), "label"}``.

    Made by :func:`folder`. Each read opens and decodes the files (no caching); for many epochs
    over data that fits in memory, read it once with :func:`~jaxbasics.data.sources.in_memory`.
    """

    root: Path
    split: str
    files: tuple[str, ...] = field(repr=False)  # POSIX paths relative to root
    labels: np.ndarray = field(repr=False)  # (N,) int32
    classes: tuple[str, ...] = field(repr=False)  # ImageFolder class names (labels index them)
    image_size: int = 32

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Example:
        i = check_index(index, len(self))
        return {"image": self._read(i), "label": int(self.labels[i])}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return split_batch(self.read_batch(indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        idx = indices_in(indices, len(self))
        images = np.empty((len(idx), self.image_size, self.image_size, 3), np.uint8)
        for k, i in enumerate(idx):
            images[k] = self._read(i)
        return {"image": images, "label": self.labels[idx]}

    def _read(self, i: int) -> np.ndarray:
        return read_image(self.root / self.files[i], image_size=self.image_size)


def folder(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    image_size: int = 32,
    eval_fraction: float = 0.1,
) -> FolderSource:
    """Returns one split of a folder of images, like torchvision's ``ImageFolder(root/split)``.

    See the module docstring for the two layouts (ImageFolder, or a flat tree split by a hash
    of each file's relative path) and which files count.

    Args:
      root: the data folder.
      split: ``"train"`` or ``"test"``.
      image_size: side of the square images (each file is centre-cropped and resized).
      eval_fraction: flat layout only: the share of files (by hash) that form the test split.

    Returns:
      A :class:`FolderSource` of ``{"image": uint8 (image_size, image_size, 3), "label": int}``.

    Raises:
      DatasetNotFoundError: ``root`` is missing or empty, holds no image files, or the split
        has none; the message names the folder, says what was found and how to fix it.
      ImageReadError: when a file is read and cannot be decoded.
    """
    check_split(split)
    if not isinstance(image_size, int | np.integer) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetNotFoundError(
            f"--dataset folder: {root} {what}. Pass --data-dir a folder of images: either "
            "train/<class>/ and test/<class>/ folders (torchvision's ImageFolder layout), or "
            "image files in any tree (split into train and test by file name)."
        )
    if (root / "train").is_dir():
        return _image_folder(root, split, image_size)
    if stray := [name for name in ("test", "val") if (root / name).is_dir()]:
        raise DatasetNotFoundError(
            f"{root} has a {stray[0]}/ folder but no train/ folder, so it is neither "
            f"torchvision's ImageFolder layout (needs {root / 'train'}/<class>/ too) nor a flat "
            f"tree. Add the train/ folder, or rename {root / stray[0]} so all images are split "
            "by file name."
        )
    return _flat(root, split, image_size, eval_fraction)


@dataclass
class _Listing:
    """The image files under a folder, relative to it, sorted; and what else was there."""

    images: list[str]
    others: collections.Counter[str]  # suffix -> count of non-image files


def _list_images(top: Path) -> _Listing:
    images, others = [], collections.Counter()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") and not _is_workdir(Path(dirpath, d))
        ]
        rel = Path(dirpath).relative_to(top).as_posix()
        prefix = "" if rel == "." else rel + "/"
        for name in filenames:
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in IMAGE_EXTENSIONS:
                images.append(prefix + name)
            else:
                others[suffix or "(no extension)"] += 1
    return _Listing(sorted(images), others)


def _report_skipped(where: Path, others: collections.Counter[str]) -> None:
    """Log how many files under ``where`` are not images and were left out, by suffix."""
    if others:
        kinds = ", ".join(f"{n} {suffix}" for suffix, n in others.most_common(5))
        logging.getLogger(__name__).info(
            "%s: left out %d files that are not images (%s)", where, sum(others.values()), kinds
        )


def _is_workdir(path: Path) -> bool:
    """A training run's folder (``config.json`` and ``checkpoints/``): its plots are not data."""
    return (path / "config.json").is_file() and (path / "checkpoints").is_dir()


def _no_images(where: Path, listing: _Listing, fix: str) -> DatasetNotFoundError:
    seen = sum(listing.others.values())
    if not seen:
        found = f"{where} is empty (hidden files are skipped)"
    else:
        common = ", ".join(f"{n} {s}" for s, n in listing.others.most_common(5))
        found = f"{where} holds {seen} files but none is an image: {common}"
    return DatasetNotFoundError(
        f"--dataset folder: {found}. Image files are those ending in "
        f"{', '.join(IMAGE_EXTENSIONS)} (any case). {fix}"
    )


def _subfolders(path: Path) -> list[str]:
    return [p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _image_folder(root: Path, split: str, image_size: int) -> FolderSource:
    split_dirs = {"train": root / "train", "test": root / "test"}
    if not split_dirs["test"].is_dir():
        split_dirs["test"] = root / "val"
    if not split_dirs["test"].is_dir():
        raise DatasetNotFoundError(
            f"{root} has a train/ folder, so it is read as torchvision's ImageFolder layout, but "
            f"it has no test/ (or val/) folder. Add {root / 'test'}/<class>/ with some images, "
            "or move the class folders out of train/ to have the files split by name."
        )
    classes = sorted(set(_subfolders(split_dirs["train"])) | set(_subfolders(split_dirs["test"])))
    base = split_dirs[split]
    files, labels, others = [], [], collections.Counter()
    for label, name in enumerate(classes):
        if (base / name).is_dir():
            listing = _list_images(base / name)
            files += [f"{base.name}/{name}/{f}" for f in listing.images]
            labels += [label] * len(listing.images)
            others += listing.others
    if split == "train":
        _report_skipped(base, others)
    if not files:
        loose = _list_images(base).images  # the class folders hold none: these lie in base
        hint = f" ({len(loose)} images lie directly in {base}, outside any class folder)"
        raise _no_images(
            base,
            _Listing([], others),
            f"In the ImageFolder layout each split needs images in class folders, "
            f"{base}/<class>/<image>{hint if loose else ''}.",
        )
    return FolderSource(
        root, split, tuple(files), np.asarray(labels, np.int32), tuple(classes), image_size
    )


def split_fraction(relative_path: str) -> float:
    """The hash of a relative POSIX path as a number in [0, 1): the flat layout's split key.

    A file is in the test split when this is below ``eval_fraction``. The path is
    NFC-normalised first, so a name spelt with composed or decomposed accents (macOS writes
    the latter) gives the same split.

    >>> split_fraction("cats/001.jpg") == split_fraction("cats/001.jpg") < 1.0
    True
    """
    key = unicodedata.normalize("NFC", relative_path).encode("utf-8")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _flat(root: Path, split: str, image_size: int, eval_fraction: float) -> FolderSource:
    listing = _list_images(root)
    if not listing.images:
        raise _no_images(root, listing, "Put images in it (in any subfolders).")
    if split == "train":
        _report_skipped(root, listing.others)
    files = tuple(
        f for f in listing.images if (split_fraction(f) < eval_fraction) == (split == "test")
    )
    if not files:
        raise DatasetNotFoundError(
            f"--dataset folder: none of the {len(listing.images)} images under {root} falls in "
            f"the {split!r} split (eval_fraction={eval_fraction}: each file goes to test when a "
            "hash of its path is below it). Add images, or change --eval-fraction."
        )
    return FolderSource(root, split, files, np.zeros(len(files), np.int32), (), image_size)
