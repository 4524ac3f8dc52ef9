"""The settings FSQ decides: ``--fsq-levels`` as typed, and the values an FSQ run has in the
fields it has no use for (:class:`~jaxbasics.tasks.vqvae.config.VQVAEConfig` checks them).
"""

from __future__ import annotations

import math
import re
from typing import Any

from jaxbasics.vqvae.fsq import check_levels

# The VQ-only settings and the value each has under FSQ, which has no codebook to learn.
VQ_ONLY: dict[str, Any] = {
    "commitment_cost": 0.0,
    "decay": 0.0,
    "estimator": "ste",
    "ema_init": "consistent",  # VQVAEConfig's default
    "dead_code_threshold": 0.0,
    "kmeans_init_steps": 0,
}


# Levels as typed: ASCII digits and commas, spaces allowed around the commas. Python's int()
# alone would also read "8_8" as 88, "+8" and non-ASCII digits.
LEVELS_PATTERN = re.compile(r"\s*[0-9]+(\s*,\s*[0-9]+)*\s*")


def parse_levels(text: str) -> tuple[int, ...]:
    """``--fsq-levels`` text, ``"8,5,5,5"``, as integers; a one-line ValueError if it cannot
    work (:func:`jaxbasics.vqvae.fsq.check_levels`).

    >>> parse_levels("8, 8,8")
    (8, 8, 8)
    >>> parse_levels("8_8")
    Traceback (most recent call last):
    ...
    ValueError: fsq_levels must be integers separated by commas, e.g. 8,8,8 or 8,5,5,5; got '8_8'.
    """
    if not LEVELS_PATTERN.fullmatch(text):
        raise ValueError(
            f"fsq_levels must be integers separated by commas, e.g. 8,8,8 or 8,5,5,5; got {text!r}."
        )
    return check_levels(tuple(int(part) for part in text.split(",")))


def fsq_settings(config: Any) -> dict[str, Any]:
    """The values an FSQ run has in every field FSQ decides: the VQ-only settings off
    (:data:`VQ_ONLY`), ``num_embeddings`` and ``embedding_dim`` from the levels (left out
    when the levels cannot work: validation says why).

    >>> from jaxbasics.tasks.vqvae.config import VQVAEConfig
    >>> s = fsq_settings(VQVAEConfig(quantizer="fsq", fsq_levels="8,5,5,5"))
    >>> s["num_embeddings"], s["embedding_dim"], s["decay"]
    (1000, 4, 0.0)
    """
    try:
        levels = config.levels
    except ValueError:
        return dict(VQ_ONLY)
    return {**VQ_ONLY, "num_embeddings": math.prod(levels), "embedding_dim": len(levels)}
