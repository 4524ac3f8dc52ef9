"""Image transforms on NumPy arrays in NHWC layout: the torchvision ``transforms`` we need.

Every transform works on one image ``(H, W, C)`` or on a batch ``(..., H, W, C)``: channels are
always the last axis, so the same function runs per example or, much faster, on a whole batch
after batching. Nothing here permutes axes; data is NHWC from the source onwards.

>>> import numpy as np
>>> t = cifar_transform()
>>> t(np.array([[[0, 51, 255]]], dtype=np.uint8)).round(3).tolist()
[[[-0.5, -0.3, 0.5]]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]

CIFAR_MEAN = (0.5, 0.5, 0.5)
CIFAR_STD = (1.0, 1.0, 1.0)


def to_unit_float(x: np.ndarray) -> np.ndarray:
    """Scales uint8 pixels to float32 in [0, 1], like torchvision ``transforms.ToTensor()``.

    Unlike ``ToTensor`` the layout is kept: ``(..., H, W, C)`` in, ``(..., H, W, C)`` out, with no
    permute to CHW. Only uint8 input is accepted: a float image is ambiguous (already in [0, 1], or
    in [0, 255]?) and silently dividing it again is a classic bug, so it is refused.

    Args:
        x: uint8 array of pixels, one image ``(H, W, C)`` or a batch ``(..., H, W, C)``.

    Returns:
        float32 array of the same shape, ``x / 255``.

    >>> import numpy as np
    >>> to_unit_float(np.array([0, 51, 255], dtype=np.uint8)).tolist()
    [0.0, 0.2, 1.0]
    """
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(
            f"to_unit_float expects uint8 pixels in [0, 255], got dtype {x.dtype}. If the data is "
            "already float in [0, 1], skip this step; if it is float in [0, 255], cast it with "
            "x.astype(np.uint8) first."
        )
    out = x.astype(np.float32)
    out /= 255
    return out


@dataclass(frozen=True)
class _Normalize:
    mean: np.ndarray  # (C,) float32
    std: np.ndarray  # (C,) float32

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(
                f"normalize expects float pixels (e.g. in [0, 1]), got dtype {x.dtype}. Convert "
                "uint8 images with to_unit_float first, as torchvision's Normalize follows "
                "ToTensor."
            )
        channels = x.shape[-1] if x.ndim else 0
        if self.mean.size not in (1, channels):
            raise ValueError(
                f"normalize was built for {self.mean.size} channels but the input has shape "
                f"{x.shape} (channels last, so {channels} channels). Pass NHWC data, or build the "
                "transform with one mean/std per channel."
            )
        mean = np.broadcast_to(self.mean, (channels,))
        std = np.broadcast_to(self.std, (channels,))
        if x.ndim >= 2:
            # NumPy broadcasts a (C,) vector over a trailing axis of 3 several times slower than
            # over long rows, so view (..., W, C) as (..., W * C) and tile the vectors W times.
            width = x.shape[-2]
            rows = x.reshape(*x.shape[:-2], width * channels)
            out = np.subtract(rows, np.tile(mean, width), dtype=np.float32)
            out /= np.tile(std, width)
            return out.reshape(x.shape)
        out = np.subtract(x, mean, dtype=np.float32)
        out /= std
        return out


def normalize(mean: Sequence[float], std: Sequence[float]) -> Transform:
    """Returns ``x -> (x - mean) / std`` per channel, like torchvision ``transforms.Normalize``.

    Channels are the last axis (NHWC). Note what the notes' ``Normalize((0.5,)*3, (1.0,)*3)``
    really does: it maps [0, 1] pixels to [-0.5, 0.5] (it subtracts 0.5 and divides by 1). It does
    not standardise the data to mean 0 and standard deviation 1; that needs the data's own
    per-channel mean and std.

    Args:
        mean: per-channel means, length C (or 1 to share one value).
        std: per-channel standard deviations, same length as ``mean``, all non-zero.

    Returns:
        A transform taking float ``(..., H, W, C)`` to float32 of the same shape.

    >>> import numpy as np
    >>> norm = normalize((0.5,) * 3, (1.0,) * 3)
    >>> norm(np.array([[0.0, 0.5, 1.0]])).tolist()
    [[-0.5, 0.0, 0.5]]
    >>> normalize((0.0, 1.0), (1.0, 2.0))(np.array([1.0, 3.0])).tolist()
    [1.0, 1.0]
    """
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(-1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean_arr.shape != std_arr.shape:
        raise ValueError(
            f"normalize needs one std per mean, got {mean_arr.size} means and {std_arr.size} stds. "
            "Pass sequences of equal length, e.g. normalize((0.5,) * 3, (1.0,) * 3)."
        )
    if np.any(std_arr == 0):
        raise ValueError(
            f"normalize got std={tuple(std_arr.tolist())}; every std must be non-zero."
        )
    return _Normalize(mean_arr, std_arr)


@dataclass(frozen=True)
class _Compose:
    fns: tuple[Transform, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for fn in self.fns:
            x = fn(x)
        return x


def compose(*fns: Transform) -> Transform:
    """Chains transforms left to right, like torchvision ``transforms.Compose([...])``.

    Args:
        *fns: transforms; ``compose(f, g)(x) == g(f(x))``. Pass them as separate arguments, not as
            one list.

    Returns:
        The composed transform (the identity when no transforms are given).

    >>> compose(lambda x: x + 1, lambda x: x * 10)(1)
    20
    """
    for fn in fns:
        if not callable(fn):
            raise TypeError(
                f"compose expects callables, got {type(fn).__name__}. Unlike torchvision's "
                "Compose([...]), pass the transforms as separate arguments: compose(*transforms)."
            )
    return _Compose(tuple(fns))


def cifar_transform() -> Transform:
    """Returns the notes' CIFAR-10 transform: ``ToTensor()`` then ``Normalize((0.5,)*3, (1.0,)*3)``.

    It computes ``x / 255 - 0.5``: uint8 pixels go to float32 in [-0.5, 0.5] (not to mean 0 and
    std 1; see :func:`normalize`). NHWC in, NHWC out.

    Returns:
        A transform taking uint8 ``(..., H, W, 3)`` to float32 of the same shape.

    >>> import numpy as np
    >>> cifar_transform()(np.full((2, 32, 32, 3), 255, np.uint8)).max()
    np.float32(0.5)
    """
    return compose(to_unit_float, normalize(CIFAR_MEAN, CIFAR_STD))


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-0.5, 0.5], the notes' ``x / 255 - 0.5``.

    >>> to_model_input(np.array([0, 255], np.uint8)).tolist()
    [-0.5, 0.5]
    """
    return np.asarray(images, np.float32) / 255 - 0.5


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Model output in [-0.5, 0.5] -> uint8 pixels (rounded, clipped).

    >>> to_pixels(np.array([-0.6, 0.0, 0.5])).tolist()
    [0, 128, 255]
    """
    return np.clip(np.rint((np.asarray(images, np.float32) + 0.5) * 255), 0, 255).astype(np.uint8)
