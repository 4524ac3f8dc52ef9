"""Random-access image sources: the embedded ``shapes`` dataset and real CIFAR-10.

A source is what Grain calls a random-access data source (``len(source)``, ``source[i]``,
``source.__getitems__(indices)``), plus a vectorised ``source.read_batch(indices)``. Elements are
``{"image": uint8 (32, 32, 3) NHWC, "label": int}``; batches from :func:`read_batch` are
``{"image": uint8 (B, 32, 32, 3), "label": int32 (B,)}``. NCHW data (torchvision's CIFAR-10
pickles) is converted to NHWC here, exactly once.

Sources:

* :func:`shapes`: embedded, procedurally generated 32x32 RGB images of ten shape classes. No
  download; any index in any order gives the same bytes on every run.
* :func:`cifar10`: real CIFAR-10, from a torchvision ``cifar-10-batches-py`` folder or a prepared
  TFDS data dir (array_record). Never downloads.

For multi-epoch training, :func:`in_memory` reads a source once into an :class:`ArraySource`.

>>> src = shapes("train", num_examples=8)
>>> ex = src[3]
>>> ex["image"].shape, ex["image"].dtype, SHAPES_CLASSES[ex["label"]] in SHAPES_CLASSES
((32, 32, 3), dtype('uint8'), True)
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

import numpy as np

SPLITS = ("train", "test")
DATASETS = ("shapes", "cifar10")

SHAPES_CLASSES = (
    "ellipse",
    "rectangle",
    "triangle",
    "ring",
    "diamond",
    "cross",
    "flower",
    "hexagon",
    "half_disk",
    "frame",
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

_SHAPES_SIZES = {"train": 50_000, "test": 10_000}
_SPLIT_IDS = {"train": 0, "test": 1}
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


class Example(TypedDict):
    """One element of a source."""

    image: np.ndarray  # (32, 32, 3) uint8, NHWC
    label: int


class Batch(TypedDict):
    """A batch read with :func:`read_batch`."""

    image: np.ndarray  # (B, 32, 32, 3) uint8
    label: np.ndarray  # (B,) int32


class Source(Protocol):
    """A random-access source of :class:`Example` (Grain's ``RandomAccessDataSource``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they were looked for; the message says how to get them."""


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")


def _check_index(index: int, length: int) -> int:
    index = int(index)
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for a source of length {length}.")
    return index % length


def _indices(indices: Sequence[int] | np.ndarray, length: int) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < -length or idx.max() >= length):
        bad = idx[(idx < -length) | (idx >= length)][0]
        raise IndexError(f"index {bad} is out of range for a source of length {length}.")
    return idx % max(length, 1)


def _split_batch(batch: Batch) -> list[Example]:
    return [
        {"image": image, "label": int(label)}
        for image, label in zip(batch["image"], batch["label"], strict=True)
    ]


# --- shapes: the embedded dataset -------------------------------------------------------------

# splitmix64 (Steele et al., "Fast splittable pseudorandom number generators", OOPSLA 2014): a
# counter-based hash, so the random numbers of image i depend on (seed, split, i) only and a batch
# of any indices is drawn in a few vectorised ops. np.random.default_rng([seed, split, i]) would
# do the same but costs ~50 us per image just to build the generator.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _uniforms(seed: int, split_id: int, indices: np.ndarray, k: int) -> np.ndarray:
    """(B,) indices -> (B, k) float32 uniforms in [0, 1): a pure function of (seed, split, i)."""
    key = _mix(np.array([seed], dtype=np.uint64) + _GOLDEN)
    key = _mix(key ^ np.uint64(split_id))
    per_index = _mix(key + indices.astype(np.uint64) * _GOLDEN)  # (B,)
    counters = np.arange(1, k + 1, dtype=np.uint64) * _GOLDEN  # (k,)
    z = _mix(per_index[:, None] + counters[None, :])  # (B, k)
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


_SIZE = 32
# Pixel centres in [-1, 1]; one pixel is 2 / 32 = 1 / 16 units wide.
_GRID = (np.arange(_SIZE, dtype=np.float32) + 0.5) / (_SIZE / 2) - 1.0
_YY, _XX = np.meshgrid(_GRID, _GRID, indexing="ij")  # (32, 32) each
_PX_PER_UNIT = _SIZE / 2

# Columns of the per-image uniform draws.
_BG = 0  # type, colour1 (3), colour2 (3), angle, freq, phase
_NDIST = 10
_SLOT0 = 11  # 3 slots of: type, cx, cy, size, aspect, angle, colour (3)
_SLOT_W = 9
_NOISE = _SLOT0 + 3 * _SLOT_W  # bank, dy, dx, amplitude
_NUM_UNIFORMS = _NOISE + 4
_NUM_BACKGROUNDS = 5  # solid, linear gradient, stripes, checkers, radial gradient

# Shape metrics m(p, q) on rotated coordinates scaled by the shape's radii: inside is m <= 1.
# The second number converts one unit of m into radii, for a one-pixel anti-aliased edge.
# Python floats, not NumPy float64 scalars, so the float32 planes are not promoted to float64.
_TRI = [(float(np.cos(a)), float(np.sin(a))) for a in np.pi / 2 + 2 * np.pi * np.arange(3) / 3]
_HEX = [(float(np.cos(a)), float(np.sin(a))) for a in np.pi * np.arange(3) / 3]


def _metric(kind: int, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, float]:
    match SHAPES_CLASSES[kind]:
        case "ellipse":
            return np.sqrt(p * p + q * q), 1.0
        case "rectangle":
            return np.maximum(np.abs(p), np.abs(q)), 1.0
        case "triangle":  # equilateral, inradius 0.5
            return np.maximum.reduce([(c * p + s * q) / 0.5 for c, s in _TRI]), 0.5
        case "ring":
            return np.abs(np.sqrt(p * p + q * q) - 0.72) / 0.28, 0.28
        case "diamond":
            return np.abs(p) + np.abs(q), 0.7
        case "cross":
            ap, aq = np.abs(p), np.abs(q)
            arm = np.minimum(np.maximum(ap, aq / 0.34), np.maximum(ap / 0.34, aq))
            return arm, 0.34
        case "flower":  # five smooth petals: radius 0.62 + 0.38 cos(5 phi)
            rho = np.sqrt(p * p + q * q) + 1e-6
            c2, s2 = (p / rho) ** 2, (q / rho) ** 2
            cos5 = (p / rho) * (c2 * c2 - 10 * c2 * s2 + 5 * s2 * s2)  # cos(5 phi), no arctan2
            return rho / (0.62 + 0.38 * cos5), 0.6
        case "hexagon":
            return np.maximum.reduce([np.abs(c * p + s * q) for c, s in _HEX]) / 0.866, 0.87
        case "half_disk":  # flat edge below the centre, so the shape is centred
            q = q + 0.4
            return np.maximum(np.sqrt(p * p + q * q), 1.0 - q), 1.0
        case _:  # "frame": a square outline
            return np.abs(np.maximum(np.abs(p), np.abs(q)) - 0.78) / 0.22, 0.22


# Rendering works on channel planes (b, 3, 32, 32) in chunks of 128 images: NumPy broadcasts a
# per-pixel alpha over a trailing axis of size 3 about 3x slower than over whole planes, and
# 128-image chunks stay in cache. Images are written out as NHWC at the end.
_CHUNK = 128


@functools.cache
def _noise_windows() -> np.ndarray:
    """Every 32x32 crop of eight fixed (3, 64, 64) noise fields: (8, 3, 33, 33, 32, 32) view."""
    idx = np.arange(8 * 3 * 64 * 64, dtype=np.int64)
    bank = (_uniforms(0x5EED, 7, idx, 1).reshape(8, 3, 64, 64) - 0.5) * np.float32(np.sqrt(12))
    return np.lib.stride_tricks.sliding_window_view(bank, (_SIZE, _SIZE), axis=(2, 3))


def _background(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(b, K) draws -> (b, 3, 32, 32) float32 backgrounds and their (b, 3) mean colours."""
    kind = np.minimum((u[:, _BG] * _NUM_BACKGROUNDS).astype(np.int64), _NUM_BACKGROUNDS - 1)
    c1, c2 = u[:, _BG + 1 : _BG + 4], u[:, _BG + 4 : _BG + 7]
    angle = u[:, _BG + 7] * np.float32(2 * np.pi)
    freq, phase = u[:, _BG + 8], u[:, _BG + 9]
    t = np.zeros((len(u), _SIZE, _SIZE), np.float32)  # mix of colour1 (0) and colour2 (1)
    for k in range(1, _NUM_BACKGROUNDS):
        sel = np.flatnonzero(kind == k)
        if not sel.size:
            continue
        cos, sin = np.cos(angle[sel])[:, None, None], np.sin(angle[sel])[:, None, None]
        along = _XX * cos + _YY * sin  # (s, 32, 32), in [-sqrt 2, sqrt 2]
        f = freq[sel][:, None, None]
        ph = phase[sel][:, None, None]
        if k == 1:  # linear gradient
            t[sel] = np.clip(along / 2.8 + 0.5, 0.0, 1.0)
        elif k == 2:  # stripes, 2 to 6 periods across the image
            wave = np.sin(np.float32(np.pi) * (along * (2 + 4 * f) + 2 * ph))
            t[sel] = np.clip(0.5 + 2.0 * wave, 0.0, 1.0)
        elif k == 3:  # checkers, cells of 4 to 12 pixels
            across = _YY * cos - _XX * sin
            cells = 1.3 + 2.7 * f
            t[sel] = (np.floor(along * cells + ph) + np.floor(across * cells)) % 2
        else:  # radial gradient around a random centre
            r = np.sqrt((_XX - (2 * f - 1)) ** 2 + (_YY - (2 * ph - 1)) ** 2)
            t[sel] = np.clip(r / 2.0, 0.0, 1.0)
    mean = np.where((kind == 0)[:, None], c1, 0.5 * (c1 + c2))
    img = t[:, None] * (c2 - c1)[:, :, None, None]  # (b, 3, 32, 32)
    img += c1[:, :, None, None]
    return img, mean


def _render_chunk(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(b, K) draws -> (b, 3, 32, 32) float32 images in [0, 1] (before clipping), (b,) labels."""
    batch = len(u)
    img, bg_mean = _background(u)
    num_distractors = np.minimum((u[:, _NDIST] * 3).astype(np.int64), 2)  # 0, 1 or 2
    labels = np.zeros(batch, np.int32)
    # Slots 0 and 1 are small distractors, drawn first; slot 2 is the labelled main shape, drawn
    # last and large, so it stays visible.
    for slot in range(3):
        main = slot == 2
        active = np.arange(batch) if main else np.flatnonzero(num_distractors > slot)
        if not active.size:
            continue
        c = _SLOT0 + slot * _SLOT_W
        kind = np.minimum((u[active, c] * len(SHAPES_CLASSES)).astype(np.int64), 9)
        # Sorted by kind, each kind's images are one contiguous slice: views, not fancy copies.
        order = np.argsort(kind, kind="stable")
        active, kind = active[order], kind[order]
        s = u[active, c : c + _SLOT_W]
        spread = 0.45 if main else 0.8
        cx, cy = (2 * s[:, 1] - 1) * spread, (2 * s[:, 2] - 1) * spread
        radius = 0.38 + 0.32 * s[:, 3] if main else 0.12 + 0.22 * s[:, 3]
        aspect = 0.75 + 0.55 * s[:, 4]
        rx, ry = radius * aspect, radius / aspect
        angle = s[:, 5] * np.float32(2 * np.pi)
        colour = s[:, 6:9]
        # A colour too close to the background's mean moves half-way around the colour cube.
        close = np.linalg.norm(colour - bg_mean[active], axis=1) < 0.45
        colour = np.where(close[:, None], (colour + 0.5) % 1.0, colour)
        cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        dx, dy = _XX - cx[:, None, None], _YY - cy[:, None, None]
        p = dx * cos
        p += dy * sin
        p /= rx[:, None, None]  # (a, 32, 32)
        q = dy * cos
        q -= dx * sin
        q /= ry[:, None, None]
        # One unit of the metric spans `width` pixels; alpha ramps over one pixel at the edge.
        edge_px = (np.minimum(rx, ry) * _PX_PER_UNIT)[:, None, None]
        alpha = np.empty_like(p)
        bounds = np.searchsorted(kind, np.arange(len(SHAPES_CLASSES) + 1))
        for k in range(len(SHAPES_CLASSES)):
            lo, hi = bounds[k], bounds[k + 1]
            if lo == hi:
                continue
            m, scale = _metric(k, p[lo:hi], q[lo:hi])
            width = scale * edge_px[lo:hi]
            m *= -width
            m += width + 0.5
            np.clip(m, 0.0, 1.0, out=alpha[lo:hi])
        # In-place updates: on fresh temporaries these ops run several times slower.
        if main:
            inverse = np.argsort(order)
            alpha, colour, labels = alpha[inverse], colour[inverse], kind[inverse].astype(np.int32)
            over = img - colour[:, :, None, None]
            over *= alpha[:, None]
            img -= over
        else:
            part = img[active]
            over = part - colour[:, :, None, None]
            over *= alpha[:, None]
            part -= over
            img[active] = part
    bank = np.minimum((u[:, _NOISE] * 8).astype(np.int64), 7)
    oy, ox = (u[:, _NOISE + 1] * 33).astype(np.int64), (u[:, _NOISE + 2] * 33).astype(np.int64)
    noise = _noise_windows()[bank, :, oy, ox]  # (b, 3, 32, 32)
    noise *= (0.04 * u[:, _NOISE + 3])[:, None, None, None]
    img += noise
    return img, labels


def _render_shapes(indices: np.ndarray, seed: int, split_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(B,) indices -> (B, 32, 32, 3) uint8 NHWC images and (B,) int32 labels."""
    u = _uniforms(seed, split_id, indices, _NUM_UNIFORMS)  # (B, K)
    images = np.empty((len(indices), _SIZE, _SIZE, 3), np.uint8)
    labels = np.empty(len(indices), np.int32)
    for start in range(0, len(indices), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        planes, labels[chunk] = _render_chunk(u[chunk])
        planes *= 255
        planes += 0.5
        np.clip(planes, 0, 255, out=planes)
        for channel in range(3):
            images[chunk, :, :, channel] = planes[:, channel]
    return images, labels


@dataclass(frozen=True)
class ShapesSource:
    """The embedded dataset; build it with :func:`shapes`."""

    split: str
    num_examples: int
    seed: int

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Example:
        return _split_batch(self.read_batch([_check_index(index, len(self))]))[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return _split_batch(self.read_batch(indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        idx = _indices(indices, len(self))
        images, labels = _render_shapes(idx, self.seed, _SPLIT_IDS[self.split])
        return {"image": images, "label": labels}


def shapes(split: str = "train", num_examples: int | None = None, seed: int = 0) -> ShapesSource:
    """Returns the embedded dataset: procedurally generated 32x32 RGB images of ten shapes.

    Each image has a background (solid, linear gradient at a random angle, stripes, checkers or a
    radial gradient), zero to two small distractor shapes, and one large main shape drawn last,
    with anti-aliased edges and mild noise. The label is the class of the main shape, an index
    into ``SHAPES_CLASSES``. Image ``i`` is a pure function of ``(seed, split, i)``: any index can
    be read in any order, in any process, and gives the same bytes. The two splits use different
    streams, so train and test images differ. Sizes default to CIFAR-10's: 50,000 / 10,000.

    Args:
      split: ``"train"`` or ``"test"``.
      num_examples: number of images; defaults to 50,000 for train and 10,000 for test.
      seed: non-negative integer; a different seed gives a different dataset.

    Returns:
      A random-access source of ``{"image": uint8 (32, 32, 3), "label": int}``.

    >>> src = shapes("test", num_examples=4, seed=1)
    >>> len(src), src.read_batch([0, 3])["image"].shape
    (4, (2, 32, 32, 3))
    >>> bool((src[2]["image"] == src.read_batch([2])["image"][0]).all())
    True
    """
    _check_split(split)
    n = _SHAPES_SIZES[split] if num_examples is None else int(num_examples)
    if n < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples}.")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}.")
    return ShapesSource(split, n, int(seed))


# --- CIFAR-10 ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySource:
    """A source over in-memory NHWC arrays (torchvision's CIFAR-10 folder loads into one)."""

    images: np.ndarray = field(repr=False)  # (N, 32, 32, 3) uint8
    labels: np.ndarray = field(repr=False)  # (N,) int32
    name: str = "arrays"

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(
                f"ArraySource expects uint8 NHWC images (N, H, W, 3), got {self.images.dtype} "
                f"{self.images.shape}. NCHW arrays convert with x.transpose(0, 2, 3, 1)."
            )
        if self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"ArraySource got {len(self.images)} images but labels of shape "
                f"{self.labels.shape}; pass one label per image."
            )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Example:
        i = _check_index(index, len(self))
        return {"image": self.images[i], "label": int(self.labels[i])}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return _split_batch(self.read_batch(indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        idx = _indices(indices, len(self))
        return {"image": self.images[idx], "label": self.labels[idx].astype(np.int32)}


@dataclass(frozen=True)
class TfdsSource:
    """Wraps a ``tfds.data_source`` so elements are just ``{"image", "label"}``."""

    data_source: Any
    batched_reads: bool = True

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int) -> Example:
        record = self.data_source[_check_index(index, len(self))]
        return {"image": np.asarray(record["image"]), "label": int(record["label"])}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return _split_batch(self.read_batch(indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        idx = _indices(indices, len(self)).tolist()
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
    with path.open("rb") as f:
        # latin1, as torchvision does, so Python 2 pickles of NumPy arrays load.
        d = _CifarUnpickler(f, encoding="latin1").load()
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
    _check_split(split)
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

    source = tfds.data_source(
        f"cifar10:{version_dir.name}", split=split, data_dir=str(root), download=False
    )
    return TfdsSource(source)


# --- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    """The first ``num_examples`` elements of a source."""

    source: Any
    num_examples: int

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Example:
        return self.source[_check_index(index, len(self))]

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return _split_batch(self.read_batch(indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        return read_batch(self.source, _indices(indices, len(self)))


def get_source(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    num_examples: int | None = None,
    seed: int = 0,
) -> Source:
    """Returns the named dataset's split: the CLI's ``--dataset`` / ``--data-dir`` dispatcher.

    Args:
      name: ``"shapes"`` (embedded) or ``"cifar10"``.
      split: ``"train"`` or ``"test"``.
      data_dir: where CIFAR-10 lives (see :func:`cifar10`); ignored by ``shapes``.
      num_examples: ``shapes``: how many images to generate; ``cifar10``: keep only the first
        ``num_examples`` (for quick runs). None keeps the full split.
      seed: ``shapes`` only: which generated dataset.

    Returns:
      A random-access source of ``{"image": uint8 (32, 32, 3), "label": int}``.

    >>> len(get_source("shapes", "test", num_examples=10))
    10
    """
    if name == "shapes":
        return shapes(split, num_examples=num_examples, seed=seed)
    if name == "cifar10":
        source = cifar10(split, data_dir=data_dir)
        if num_examples is not None and num_examples < len(source):
            return _Head(source, int(num_examples))
        return source
    raise ValueError(f"Unknown dataset {name!r}; valid names are {DATASETS}.")


def read_batch(source: Source, indices: Sequence[int] | np.ndarray) -> Batch:
    """Reads the elements at ``indices`` and stacks them into one batch.

    Uses the source's vectorised ``read_batch`` when it has one, else Grain's batch-read protocol
    ``__getitems__``, else one ``source[i]`` at a time, so any Grain-style source of
    ``{"image", "label"}`` dicts works.

    Args:
      source: a random-access source.
      indices: ``(B,)`` integer indices.

    Returns:
      ``{"image": uint8 (B, H, W, C), "label": int32 (B,)}``.

    >>> read_batch([{"image": np.zeros((2, 2, 3), np.uint8), "label": 7}], [0, 0])["label"]
    array([7, 7], dtype=int32)
    """
    if hasattr(source, "read_batch"):
        return source.read_batch(indices)
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if hasattr(source, "__getitems__"):
        records = source.__getitems__(idx)
    else:
        records = [source[i] for i in idx]
    return {
        "image": np.stack([np.asarray(r["image"]) for r in records]),
        "label": np.asarray([r["label"] for r in records], dtype=np.int32),
    }


def in_memory(source: Source, chunk_size: int = 1024) -> ArraySource:
    """Reads a whole source into memory once, so later reads are plain array gathers.

    Worth it whenever training runs for several epochs: CIFAR-10 from TFDS decodes a PNG per
    read and ``shapes`` renders each image on every read (~0.1 ms each), while a gather from
    memory costs microseconds per batch. A 50,000-image split of 32x32x3 uint8 takes 150 MB.

    Args:
      source: any source of ``{"image": uint8, "label": int}``.
      chunk_size: images per batch read while loading.

    Returns:
      An :class:`ArraySource` with the same elements in the same order.

    >>> src = shapes("test", num_examples=5)
    >>> mem = in_memory(src, chunk_size=2)
    >>> bool((mem.images == src.read_batch(range(5))["image"]).all()), len(mem)
    (True, 5)
    """
    if isinstance(source, ArraySource):
        return source
    parts = [
        read_batch(source, np.arange(start, min(start + chunk_size, len(source))))
        for start in range(0, len(source), chunk_size)
    ]
    if not parts:
        raise ValueError("in_memory got an empty source.")
    images = np.concatenate([p["image"] for p in parts])
    labels = np.concatenate([p["label"] for p in parts]).astype(np.int32)
    return ArraySource(images, labels, name=f"in_memory({source!r})")


def data_variance(source: Source, max_examples: int | None = None, chunk_size: int = 1024) -> float:
    """Returns the variance of the source's pixels scaled to [0, 1], over all pixels and channels.

    The notes' ``np.var(training_data.data / 255.0)``, the normaliser of the VQ-VAE's
    reconstruction error. The images are read in chunks of ``chunk_size`` and reduced to a
    256-bin histogram of pixel values, so the result is exact (float64) with O(chunk) memory.

    Args:
      source: a source of uint8 images (use the train split).
      max_examples: use only the first ``max_examples`` images; None uses all.
      chunk_size: images per batch read.

    Returns:
      The variance as a Python float.

    >>> src = shapes(num_examples=16)
    >>> images = src.read_batch(range(16))["image"]
    >>> bool(np.isclose(data_variance(src, chunk_size=5), np.var(images / 255.0)))
    True
    """
    n = len(source) if max_examples is None else min(int(max_examples), len(source))
    if n <= 0:
        raise ValueError(f"data_variance needs at least one image, got {n} (len {len(source)}).")
    counts = np.zeros(256, np.int64)
    for start in range(0, n, chunk_size):
        images = read_batch(source, np.arange(start, min(start + chunk_size, n)))["image"]
        if images.dtype != np.uint8:
            raise TypeError(f"data_variance expects uint8 images, got dtype {images.dtype}.")
        counts += np.bincount(images.reshape(-1), minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    mean = (counts * values).sum() / total
    return float((counts * (values - mean) ** 2).sum() / total)
