"""What the model-using scripts share: the --model flags, loading, and failing politely.

The policy behind them (what ``--out`` may be, how images are found and read, how the model
runs on them) is the library's: :mod:`jaxbasics.train.files`, :mod:`jaxbasics.tasks.vqvae.apply`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NamedTuple

import numpy as np

from jaxbasics.data.images import MAX_PIXELS
from jaxbasics.data.transforms import to_model_input
from jaxbasics.tasks.vqvae.apply import ModelFns, gather_inputs, model_fns
from jaxbasics.tasks.vqvae.trained import Loaded, load


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` as the scripts show it: the docstring as written, each flag's default (unless
    it is None or the help already names it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


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
    parser = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, help=out_help)
    add_max_pixels(parser, "images of more pixels (width x height, read before decoding")
    add_model_args(parser, images=True)
    return parser.parse_args(argv)


def add_max_pixels(parser: argparse.ArgumentParser, refused: str) -> None:
    """--max-pixels: the largest image a script reads or writes (``refused``: what is refused)."""
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"refuse {refused}): a tiny file can decode to gigabytes",
    )


class Inputs(NamedTuple):
    """A loaded model and the images to run it on."""

    loaded: Loaded
    fns: ModelFns  # its jitted encode / decode
    images: list  # the found files (jaxbasics.data.images.InputImage)
    pixels: list[np.ndarray]  # their uint8 (H, W, 3) pixels, as read
    x: list[np.ndarray]  # the same as model inputs


def model_and_images(args: argparse.Namespace, outputs: Any = None) -> Inputs:
    """Read ``args.inputs`` and load ``--model``, ending the script politely if either fails or
    ``--out`` could overwrite them (:func:`~jaxbasics.tasks.vqvae.apply.gather_inputs`:
    ``outputs(images)`` names the files written in the folder ``--out``; None: ``--out`` is the
    one file written)."""
    try:  # the images first: a typo in a path should not wait for the model to load
        images, pixels = gather_inputs(
            args.inputs,
            args.out,
            args.model,
            resize=args.resize,
            center_crop=args.center_crop,
            max_pixels=args.max_pixels,
            outputs=outputs,
        )
    except (OSError, ValueError) as e:
        sys.exit(fail(e))
    loaded = load_model(args.model, args.step)
    side = 4 * loaded.model.palette_slots  # a palette's colour row needs that many codes
    narrow = next((i for i, p in zip(images, pixels, strict=True) if p.shape[1] < side), None)
    if narrow is not None:
        sys.exit(
            fail(
                ValueError(
                    f"{narrow.path} is narrower than {side} pixels, the least {args.model}'s "
                    f"palette of {side // 4} colours takes (a code map {side // 4} codes wide). "
                    f"Pass --resize S --center-crop S with S a multiple of 4, at least {side}."
                )
            )
        )
    x = [to_model_input(p) for p in pixels]
    return Inputs(loaded, model_fns(loaded.model), images, pixels, x)


def fail(error: BaseException) -> int:
    """Print ``error`` as a one-line message for people (no traceback); exit status 1."""
    print(f"error: {error}", file=sys.stderr)
    return 1


def load_model(path: str, step: int | None = None) -> Loaded:
    """:func:`jaxbasics.tasks.vqvae.trained.load`, ending the script with a message if it cannot."""
    try:
        return load(path, step)
    except (OSError, ValueError) as e:  # missing, unreadable or incompatible: one line
        sys.exit(fail(e))


def subset(total: int, num: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``num`` of ``total`` items drawn by ``seed``; all when ``num`` is None
    or at least ``total``.

    >>> subset(10, 4, seed=0).tolist() == subset(10, 4, seed=0).tolist()
    True
    >>> subset(3, 5, seed=0).tolist()
    [0, 1, 2]
    """
    if num is None or num >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, num, replace=False))
