"""What the model-using scripts share: the --model flag, loading, failing politely, PNGs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NamedTuple

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


def image_args(doc: str, out_help: str, argv: list[str] | None) -> argparse.Namespace:
    """The command line of a script that runs a model on images: inputs, --out, --model..."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, help=out_help)
    add_model_args(parser, images=True)
    return parser.parse_args(argv)


class Inputs(NamedTuple):
    """A loaded model and the images to run it on."""

    loaded: Any  # jaxbasics.train.io.Loaded
    fns: Any  # its jitted encode / decode (jaxbasics.train.codes.model_fns)
    images: list  # the found files (jaxbasics.train.codes.find_images)
    pixels: list[np.ndarray]  # their uint8 (H, W, 3) pixels, as read
    x: list[np.ndarray]  # the same as model inputs


def model_and_images(args: argparse.Namespace, out_folder: str | None = None) -> Inputs:
    """Load ``--model`` and read ``args.inputs``, ending the script politely if either fails.

    With ``out_folder``, an output folder that is or holds one of the inputs is refused (its
    PNGs could overwrite the images), and one inside an input folder is not read as input.
    """
    from jaxbasics.train.codes import find_images, model_fns, read_inputs, to_model_input

    try:  # the images first: a typo in a path should not wait for the model to load
        if out_folder is not None:
            check_out_folder(out_folder, args.inputs)
        images = find_images(args.inputs, exclude=out_folder)
        pixels = read_inputs(images, resize=args.resize, center_crop=args.center_crop)
    except (OSError, ValueError) as e:
        sys.exit(fail(e))
    loaded = load_model(args.model, args.step)
    x = [to_model_input(p) for p in pixels]
    return Inputs(loaded, model_fns(loaded.model), images, pixels, x)


def check_out_folder(out: str, inputs: list[str]) -> None:
    """Refuse an output folder that is a file, or that is or holds one of the inputs."""
    folder = Path(out).absolute()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder (it is created if needed).")
    for given in map(lambda i: Path(i).absolute(), inputs):
        if given == folder or given.is_relative_to(folder):
            raise ValueError(
                f"--out {out} holds the input {given}: the PNGs written there could overwrite "
                "your images. Choose a new folder (a subfolder of the inputs is fine)."
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
    except (FileNotFoundError, ValueError, IncompatibleModelError) as e:
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
