"""Tests for jaxbasics.docs: dir()-like listing and help()-like summaries."""

import types

import jax
import jax.numpy as jnp

from jaxbasics import docs


def test_public_api_sorted_without_underscores():
    mod = types.ModuleType("fake")
    mod.beta, mod.alpha, mod._hidden, mod.__dunder__ = 1, 2, 3, 4
    assert docs.public_api(mod) == ["alpha", "beta"]


def test_public_api_of_jax_random():
    names = docs.public_api(jax.random)
    assert names == sorted(names)
    assert {"key", "split", "normal", "uniform"} <= set(names)
    assert not any(n.startswith("_") for n in names)


def test_describe_jnp_ones():
    text = docs.describe(jnp.ones)
    first, blank, summary = text.split("\n", 2)
    assert first.startswith("jax.numpy.ones(shape")
    assert "dtype" in first
    assert blank == ""
    assert summary == "Create an array full of ones."


def test_describe_keeps_only_the_first_paragraph():
    def area(width: float, height: float = 1.0) -> float:
        """Area of a rectangle.

        More detail that should not appear.
        """
        return width * height

    text = docs.describe(area)
    assert text.endswith("area(width: float, height: float = 1.0) -> float\n\nArea of a rectangle.")
    assert "More detail" not in text


def test_describe_module_and_objects_without_signature_or_docstring():
    assert docs.describe(jax.random).startswith("jax.random\n\nUtilities for pseudo-random")
    assert docs.describe(max).startswith("builtins.max\n\n")

    def bare():
        pass

    assert docs.describe(bare).endswith("bare()\n\n(no docstring)")


def test_every_name_in_the_pytorch_table_exists():
    """Each jaxbasics name the docs/pytorch-to-jax.md rows give resolves to a real object."""
    import importlib
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "pytorch-to-jax.md").read_text()
    rows = [line.split(" | ")[1] for line in text.splitlines() if line.count(" | ") >= 2]
    packages = "tensors|calculus|autodiff|docs|debug|data|vqvae|prior|train|tasks"
    pattern = rf"`[^`]*?\b((?:{packages})(?:\.\w+)+)"
    names = {m for row in rows for m in re.findall(pattern, row)}
    assert len(names) > 40
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module prefix
            try:
                obj = importlib.import_module("jaxbasics." + ".".join(parts[:cut]))
                break
            except ModuleNotFoundError:
                continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)  # AttributeError names what the table gets wrong
