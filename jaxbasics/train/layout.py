"""A pytree's layout, its array paths with their shapes and dtypes, and how two layouts differ.

What a checkpoint's or an export's stored arrays are compared with before any is read: the
paths are spelled the way Orbax stores them (``params/encoder/conv_1/kernel``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``path -> (shape, dtype)`` of every array leaf of ``tree`` (arrays, abstract arrays or
    Orbax's stored metadata), with paths spelled the way Orbax stores them.

    >>> import jax.numpy as jnp
    >>> layout({"a": {"b": jnp.zeros((2, 3))}, "c": [jnp.ones((), jnp.int32)]})
    {'a/b': ((2, 3), 'float32'), 'c/0': ((), 'int32')}
    """
    import orbax.checkpoint as ocp

    flat = ocp.tree.to_flat_dict(tree)
    return {
        "/".join(str(k) for k in path): (tuple(v.shape), str(np.dtype(v.dtype)))
        for path, v in flat.items()
    }


def layout_differences(saved: dict, expected: dict, limit: int = 12) -> list[str]:
    """Human-readable differences between two :func:`layout` s, at most ``limit`` of them.

    >>> for line in layout_differences({"a": ((2,), "float32"), "b": ((1,), "int32")},
    ...                                {"a": ((3,), "float32"), "c": ((1,), "int32")}):
    ...     print(line)
    a: saved (2,) float32, expected (3,) float32
    b: saved but not expected
    c: expected but not saved
    """
    lines = []
    for path in sorted(set(saved) | set(expected)):
        if path not in expected:
            lines.append(f"{path}: saved but not expected")
        elif path not in saved:
            lines.append(f"{path}: expected but not saved")
        elif saved[path] != expected[path]:
            (s_shape, s_dtype), (e_shape, e_dtype) = saved[path], expected[path]
            lines.append(f"{path}: saved {s_shape} {s_dtype}, expected {e_shape} {e_dtype}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines
