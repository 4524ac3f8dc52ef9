"""What the model-using scripts share: the --model flag, loading, failing politely, PNGs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np


def add_model_args(parser: argparse.ArgumentParser, *, images: bool) -> None:
    """--model (and, for scripts that read images, --resize / --center-crop)."""
    parser.add_argument(
        "--model", required=True, help="a training workdir or a file written by export.py"
    )
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (workdir only)")
    if images:
        parser.add_argument(
            "--resize", type=int, default=None, help="scale each image's shorter side to S first"
        )
        parser.add_argument(
            "--center-crop", type=int, default=None, help="keep the central S x S pixels"
        )


def fail(error: BaseException) -> int:
    """Print ``error`` as a one-line message for people (no traceback); exit status 1."""
    print(f"error: {error}", file=sys.stderr)
    return 1


def load_model(path: str, step: int | None = None) -> Any:
    """``jaxbasics.train.load(path)``, ending the script with a message if it cannot."""
    from jaxbasics.train.io import IncompatibleModelError, load

    try:
        return load(path, step)
    except (FileNotFoundError, IncompatibleModelError) as e:
        sys.exit(fail(e))


def save_png(path: Path, pixels: np.ndarray, suffix: str | None = None) -> Path:
    """Write uint8 (H, W, 3) pixels losslessly (PNG), creating folders as needed."""
    from PIL import Image

    path = Path(path)
    if suffix is not None:
        path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path)
    return path
