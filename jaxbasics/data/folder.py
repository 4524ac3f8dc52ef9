"""Any folder of images as a dataset, read with Pillow: torchvision's ImageFolder or a flat tree.

:func:`folder` lists the image files once and decodes them on read, each centre-cropped to a
square and resized to ``image_size`` (:func:`read_image`). Two layouts, told apart by contents:

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
from typing import TYPE_CHECKING

import numpy as np

from jaxbasics.data.sources import (
    Batch,
    DatasetNotFoundError,
    Example,
    check_index,
    check_split,
    indices_in,
    split_batch,
)

if TYPE_CHECKING:
    from PIL import Image

# torchvision's IMG_EXTENSIONS: what ImageFolder users already have, all of which Pillow reads.
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


# A JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8, in the DCT) only down to twice the
# final side, so the antialiased resize still does the last reduction of at least 2x: Pillow's
# own Image.thumbnail uses the same margin (its reducing_gap).
_DRAFT_MARGIN = 2


class ImageReadError(ValueError):
    """An image file could not be decoded; the message names the file and what to do."""


def read_image(
    path: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    center_crop: int | None = None,
    resize: int | None = None,
) -> np.ndarray:
    """Reads one image file as uint8 RGB, NHWC: what ``PIL.Image.open(path).convert("RGB")`` gives.

    Every mode Pillow opens comes out RGB through Pillow's own ``convert("RGB")``, as in
    torchvision's ``ImageFolder`` loader: grey (``L``, ``1``), palette (``P``), ``CMYK`` and
    ``YCbCr`` are converted, and an alpha channel (``RGBA``, ``LA``, ``PA``) is dropped, keeping
    the colours stored under it. The one exception is 16-bit grey (``I;16``), which Pillow would
    clip at 255 (most of such an image white): its top 8 bits are kept instead. Multi-frame files
    (GIF, TIFF) give their first frame. EXIF orientation is not applied (as in torchvision).

    Geometry, in pixels (Pillow's bilinear filter, antialiased when shrinking: torchvision's
    ``Resize`` default on PIL images):

    * ``image_size=S``: centre-crop the largest square, then resize it to ``S x S``. This is
      what :func:`folder` does; it cannot be combined with the other two.
    * ``resize=S``: scale so the shorter side is ``S``, keeping the aspect ratio; the longer
      side becomes ``int(S * long / short)`` (torchvision's ``Resize(S)``).
    * ``center_crop=C``: cut the central ``C x C`` (offsets ``round((W - C) / 2)`` and
      ``round((H - C) / 2)`` with Python's rounding: torchvision's ``CenterCrop(C)``, except
      that an image smaller than ``C`` is an error, not padded). With ``resize`` too, the
      resize comes first, so ``resize=S, center_crop=S`` is torchvision's
      ``Compose([Resize(S), CenterCrop(S)])`` pixel for pixel.

    With ``image_size`` (training on a folder, where decoding speed matters), when shrinking a
    JPEG Pillow decodes it at 1/2, 1/4 or 1/8 scale directly (``Image.draft``),
    never below twice the final side, so the final resize still does an antialiased 2x or more.
    A 1024x1024 photo decodes several times faster; pixels differ from a full-scale decode by
    less than one grey level on average.

    Args:
      path: the image file.
      image_size: side of the square output.
      center_crop: side of the central square to keep.
      resize: length of the shorter side after resizing.

    Returns:
      ``uint8 (H, W, 3)``.

    Raises:
      ImageReadError: the file is missing, not an image, truncated or corrupt, or has pixels
        with no fixed range (32-bit ``I`` or float ``F``); the message names the file.
      ValueError: bad sizes, or ``center_crop`` larger than the image.

    >>> import tempfile
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "wide.png"
    >>> Image.new("LA", (60, 40), (200, 255)).save(path)
    >>> read_image(path).shape, read_image(path, image_size=16).shape
    ((40, 60, 3), (16, 16, 3))
    >>> read_image(path, resize=20).shape, read_image(path, resize=20, center_crop=20)[0, 0]
    ((20, 30, 3), array([200, 200, 200], dtype=uint8))
    """
    from PIL import Image

    sizes = {"image_size": image_size, "center_crop": center_crop, "resize": resize}
    for name, value in sizes.items():
        if value is not None and (not isinstance(value, int | np.integer) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
    if image_size is not None and (center_crop is not None or resize is not None):
        raise ValueError(
            "image_size (crop the largest square, then resize it) replaces center_crop and "
            f"resize; got image_size={image_size} with center_crop={center_crop}, "
            f"resize={resize}. Pass image_size alone, or resize and center_crop."
        )
    try:
        # The whole decode runs inside the try: Pillow reads lazily, so a truncated or corrupt
        # file only fails in load(). ImageFile.LOAD_TRUNCATED_IMAGES is left False, its
        # default: True would fill the missing part with grey and train on it silently.
        with Image.open(path) as im:
            if image_size is not None:
                im.draft(None, (_DRAFT_MARGIN * image_size, _DRAFT_MARGIN * image_size))
            im.load()
            rgb = _to_rgb(im, path)
    except ImageReadError:
        raise
    except FileNotFoundError as e:
        raise ImageReadError(
            f"cannot read {path}: it does not exist (was it moved or deleted after the folder "
            "was listed?). Put it back, or rerun so the folder is listed again."
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageReadError(
            f"cannot read {path} as an image ({type(e).__name__}: {e}). Open it in an image "
            "viewer: if it is broken, delete it or re-save it; if it is not an image, move it "
            "out of the data folder."
        ) from e
    if image_size is not None:
        w, h = rgb.size
        side = min(w, h)
        left, top = _offset(w, side), _offset(h, side)
        rgb = rgb.crop((left, top, left + side, top + side))
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    if resize is not None:
        w, h = rgb.size
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    if center_crop is not None:
        w, h = rgb.size
        if center_crop > min(w, h):
            raise ValueError(
                f"cannot crop the central {center_crop}x{center_crop} pixels of {path}: it is "
                f"{w}x{h}{' after resizing' if resize is not None else ''}. Resize it to at "
                f"least {center_crop} first (--resize {center_crop}, or resize={center_crop})."
            )
        left, top = _offset(w, center_crop), _offset(h, center_crop)
        rgb = rgb.crop((left, top, left + center_crop, top + center_crop))
    return np.array(rgb, dtype=np.uint8)


def _offset(size: int, crop: int) -> int:
    """Where a centred crop starts: torchvision's ``int(round((size - crop) / 2.0))``."""
    return int(round((size - crop) / 2.0))


def _to_rgb(im: Image.Image, path: str | os.PathLike[str]) -> Image.Image:
    """A decoded image in any mode -> RGB (``convert("RGB")``, 16-bit grey scaled, not clipped)."""
    from PIL import Image

    if im.mode.startswith("I;16"):
        # Pillow's own I;16 -> RGB conversion clips at 255, which turns most of a 16-bit image
        # white; scale instead.
        grey = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if im.mode in ("I", "F"):
        raise ImageReadError(
            f"{path} has {im.mode} pixels (32-bit {'integer' if im.mode == 'I' else 'float'}), "
            "which have no fixed range to map to 0..255. Save it as an 8-bit image."
        )
    return im if im.mode == "RGB" else im.convert("RGB")


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
