"""The embedded dataset: procedurally generated 32x32 RGB images of ten shape classes.

No download: image ``i`` of a split is a pure function of ``(seed, split, i)``, so any index
can be read in any order, in any process, and gives the same bytes on every run.

>>> src = shapes("train", num_examples=8)
>>> ex = src[3]
>>> ex["image"].shape, ex["image"].dtype, SHAPES_CLASSES[ex["label"]] in SHAPES_CLASSES
((32, 32, 3), dtype('uint8'), True)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jaxbasics.data.base import Batch, Example, check_index, check_split, indices_in, split_batch

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

_SHAPES_SIZES = {"train": 50_000, "test": 10_000}
_SPLIT_IDS = {"train": 0, "test": 1}


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


def _slot_alpha(kind: np.ndarray, s: np.ndarray, main: bool) -> np.ndarray:
    """Anti-aliased coverage (a, 32, 32) of one shape slot; ``kind`` sorted, ``s`` its draws."""
    spread = 0.45 if main else 0.8
    cx, cy = (2 * s[:, 1] - 1) * spread, (2 * s[:, 2] - 1) * spread
    radius = 0.38 + 0.32 * s[:, 3] if main else 0.12 + 0.22 * s[:, 3]
    aspect = 0.75 + 0.55 * s[:, 4]
    rx, ry = radius * aspect, radius / aspect
    angle = s[:, 5] * np.float32(2 * np.pi)
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
    return alpha


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
        colour = s[:, 6:9]
        # A colour too close to the background's mean moves half-way around the colour cube.
        close = np.linalg.norm(colour - bg_mean[active], axis=1) < 0.45
        colour = np.where(close[:, None], (colour + 0.5) % 1.0, colour)
        alpha = _slot_alpha(kind, s, main)
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
        return split_batch(self.read_batch([check_index(index, len(self))]))[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return split_batch(self.read_batch(indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        idx = indices_in(indices, len(self))
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
    check_split(split)
    n = _SHAPES_SIZES[split] if num_examples is None else int(num_examples)
    if n < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples}.")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}.")
    return ShapesSource(split, n, int(seed))
