"""Checks of the arguments people pass the core: counts, integer codes and labels in range, images.

Every public function that takes code indices, class labels, a count or images checks them
here: a wrong value is a one-line ``ValueError`` that names the argument, what it got and the
range it takes, never a silent wrap-around, clamp or NaN. Under ``jax.jit`` values are not
known; there only the dtype and shape are checked, and the caller's own checks (the scripts',
the loaders') hold the values.

>>> indices("codes", [[0, 3]], 4).tolist()
[[0, 3]]
>>> indices("codes", [[0, 4]], 4)
Traceback (most recent call last):
...
ValueError: codes must be integers in [0, 4), got 4.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def count(name: str, value: Any, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as a Python int, if it is an integer (not a bool or a float) in
    [``low``, ``high``]; otherwise a ValueError naming ``name``.

    >>> count("n", np.int64(3))
    3
    >>> count("n", 4.0)
    Traceback (most recent call last):
    ...
    ValueError: n must be an integer >= 1, got 4.0 (float).
    """
    bound = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be an integer {bound}, got {value!r} (a bool).")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be an integer {bound}, got {value!r} ({type(value).__name__})."
        ) from None
    if number < low or (high is not None and number > high):
        raise ValueError(f"{name} must be an integer {bound}, got {number}.")
    return number


def indices(
    name: str, values: Any, high: int, *, shape: tuple[int | None, ...] | None = None
) -> Any:
    """``values`` as an int32 array, if they are integers in [0, ``high``) (and of ``shape``,
    where ``None`` takes any size but 0); otherwise a ValueError naming ``name``. Traced values
    (under ``jit``) are checked for their dtype and shape only.

    >>> indices("labels", np.array([1, 2]), 3, shape=(2,)).dtype
    dtype('int32')
    >>> indices("labels", [1.7], 3)
    Traceback (most recent call last):
    ...
    ValueError: labels must be integers in [0, 3), got float64 values.
    >>> indices("codes", 5, 8, shape=(None, 2, 2))
    Traceback (most recent call last):
    ...
    ValueError: codes must have shape (N, 2, 2) with N >= 1, got ().
    """
    traced = isinstance(values, jax.core.Tracer)
    array = values if traced or isinstance(values, jax.Array) else np.asarray(values)
    if shape is not None and (
        len(array.shape) != len(shape)
        or any(want != got for want, got in zip(shape, array.shape, strict=True) if want)
        or 0 in [got for want, got in zip(shape, array.shape, strict=True) if want is None]
    ):
        wanted = ", ".join("N" if s is None else str(s) for s in shape)
        wanted += "," if len(shape) == 1 else ""
        some = " with N >= 1" if None in shape else ""
        raise ValueError(f"{name} must have shape ({wanted}){some}, got {tuple(array.shape)}.")
    kind = np.dtype(array.dtype).kind
    if kind not in "iu":
        raise ValueError(
            f"{name} must be integers in [0, {high}), got {np.dtype(array.dtype)} values."
        )
    if not traced and array.size:
        host = np.asarray(array)  # on the host: under a trace, jnp ops on it would be staged
        low, top = int(host.min()), int(host.max())
        if low < 0 or top >= high:
            bad = low if low < 0 else top
            raise ValueError(f"{name} must be integers in [0, {high}), got {bad}.")
    return jnp.asarray(array, jnp.int32)


def images(x: jax.Array, in_channels: int = 3) -> None:
    """Raise a ValueError that says how to fix a batch the model cannot take.

    >>> try:
    ...     images(jnp.zeros((2, 3, 32, 32)))
    ... except ValueError as e:
    ...     print(str(e)[-57:])
    at the input edge with jaxbasics.tensors.bchw_to_bhwc(x).
    """
    shape = tuple(x.shape)
    if x.ndim != 4:
        raise ValueError(
            f"expected a batch of NHWC images of shape (B, H, W, {in_channels}), got shape "
            f"{shape}. Add a batch axis with x[None] for a single image."
        )
    if shape[-1] != in_channels:
        if shape[1] == in_channels:
            raise ValueError(
                f"expected NHWC images of shape (B, H, W, {in_channels}), got {shape}, which "
                "looks like PyTorch's NCHW layout. Convert it once at the input edge with "
                "jaxbasics.tensors.bchw_to_bhwc(x)."
            )
        raise ValueError(
            f"expected {in_channels} channels in the last axis (NHWC), got shape {shape}."
        )
    if shape[1] % 4 or shape[2] % 4:
        raise ValueError(
            f"image height and width must be divisible by 4 (two stride-2 convs), got "
            f"{shape[1]}x{shape[2]}. Crop or resize the images, e.g. to 32x32."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"expected float images scaled as in training, x / 255 - 0.5, got {x.dtype} "
            "values. Convert uint8 pixels with x / 255 - 0.5 "
            "(jaxbasics.data.transforms.cifar_transform()(x))."
        )
