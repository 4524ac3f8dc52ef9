"""What the model-using scripts share: the --model flag, loading, failing politely, PNGs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
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
    add_max_pixels(parser, "images of more pixels (width x height, read before decoding")
    add_model_args(parser, images=True)
    return parser.parse_args(argv)


def add_max_pixels(parser: argparse.ArgumentParser, refused: str) -> None:
    """--max-pixels: the largest image a script reads or writes (``refused``: what is refused)."""
    from jaxbasics.data.images import MAX_PIXELS

    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"refuse {refused}; default %(default)s): a tiny file can decode to gigabytes",
    )


class Inputs(NamedTuple):
    """A loaded model and the images to run it on."""

    loaded: Any  # jaxbasics.train.io.Loaded
    fns: Any  # its jitted encode / decode (jaxbasics.train.codes.model_fns)
    images: list  # the found files (jaxbasics.train.codes.find_images)
    pixels: list[np.ndarray]  # their uint8 (H, W, 3) pixels, as read
    x: list[np.ndarray]  # the same as model inputs


def model_and_images(
    args: argparse.Namespace, outputs: Callable[[list], list[str]] | None = None
) -> Inputs:
    """Load ``--model`` and read ``args.inputs``, ending the script politely if either fails,
    or if ``--out`` could overwrite them (:func:`check_out`).

    ``--out`` is the file written, or, with ``outputs``, the folder of the files
    ``outputs(images)`` names; images already under that folder are not read as inputs.
    """
    from jaxbasics.train.codes import find_images, model_fns, read_inputs, to_model_input

    try:  # the images first: a typo in a path should not wait for the model to load
        given = [*args.inputs, args.model]
        # Checked before listing too: skipping --out's contents would hide the inputs it holds.
        check_out(args.out, given, [] if outputs else None)
        images = find_images(args.inputs, exclude=args.out if outputs else None)
        given += [i.path for i in images]
        check_out(args.out, given, outputs(images) if outputs else None)
        pixels = read_inputs(
            images, resize=args.resize, center_crop=args.center_crop, max_pixels=args.max_pixels
        )
    except (OSError, ValueError) as e:
        sys.exit(fail(e))
    loaded = load_model(args.model, args.step)
    x = [to_model_input(p) for p in pixels]
    return Inputs(loaded, model_fns(loaded.model), images, pixels, x)


def check_out(
    out: str | Path, inputs: Iterable[str | Path], names: Sequence[str] | None = None
) -> Path:
    """The rule every script's ``--out`` goes through: nothing given is ever written over,
    nothing is written outside ``--out``.

    ``out`` is the file a script writes, or, with ``names`` (relative paths), the folder it
    writes ``out/name`` into. Symbolic links are followed. Refused, before anything is written:
    a file that is one of ``inputs``; a folder that is a file, or is or holds one of
    ``inputs`` (a folder inside an input folder is fine); a name no file system takes
    (:func:`~jaxbasics.train.codes.name_problem`); a file to be written that is a link (it is
    never written through), or that a linked folder places outside ``out``; anything written
    inside a training workdir (a folder holding ``config.json`` and ``checkpoints/``: it
    belongs to the run); a file to be written where a folder must go for another (``x.png``
    and ``x.png/y.png``).

    Returns:
      ``out``, absolute, links resolved.

    Raises:
      ValueError or FileExistsError: one line naming what would be overwritten.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> check_out(d / "out", [d / "in.png"], ["a.png"]) == (d / "out").resolve()
    True
    >>> check_out(d / "in.png", [d / "in.png"])
    Traceback (most recent call last):
    ...
    ValueError: --out ... is one of the inputs: it would be written over. Choose a new file.
    """
    from jaxbasics.train.codes import name_problem, shorten

    target = Path(os.path.realpath(out))
    given = {Path(os.path.realpath(i)) for i in inputs}
    if names is None:
        written = [target]
        if target in given:
            raise ValueError(
                f"--out {out} is one of the inputs: it would be written over. Choose a new file."
            )
    else:
        if target.exists() and not target.is_dir():
            raise FileExistsError(
                f"--out {out} is a file; give a folder (it is created if needed)."
            )
        held = next((g for g in given if g.is_relative_to(target)), None)
        if held is not None:
            raise ValueError(
                f"--out {out} holds the input {held}: the files written there could overwrite "
                "it. Choose a new folder (a subfolder of the inputs is fine)."
            )
        for name in names:
            if (problem := name_problem(name)) is not None:
                raise ValueError(f"--out {out}: the file name {shorten(name)!r} {problem}.")
        written = [Path(os.path.realpath(target / n)) for n in names]
        hit = next((w for w in written if w in given), None)
        if hit is not None:
            raise ValueError(f"--out {out}: {hit} is one of the inputs, reached through a link.")
        _check_paths(out, target, names, written)
        clash = {d.as_posix() for n in names for d in PurePosixPath(n).parents} & set(names)
        if clash:
            raise ValueError(f"--out {out}: {clash.pop()} would be both a file and a folder.")
    _check_no_workdir(out, {target, *(w.parent for w in written)})
    return target


# Linux's PATH_MAX, in bytes with the closing NUL: a longer path cannot be opened.
PATH_MAX = 4096


def _check_paths(
    out: str | Path, target: Path, names: Sequence[str], written: Sequence[Path]
) -> None:
    """Refuse writing to a path too long to open, through a link at ``target / name``, or to a
    file a linked folder takes outside ``target`` (``written``: each name resolved)."""
    from jaxbasics.train.codes import shorten

    for name, path in zip(names, written, strict=True):
        if len(os.fsencode(path)) >= PATH_MAX:
            raise ValueError(
                f"--out {out}: {shorten(str(path))} is longer than the {PATH_MAX - 1} bytes a "
                "path may have. Choose a folder with a shorter path."
            )
        if (target / name).is_symlink():
            raise ValueError(
                f"--out {out}: {shorten(str(target / name), 200)} is a link, which would be "
                "written through. Remove it, or choose a new folder."
            )
        if not path.is_relative_to(target):
            raise ValueError(
                f"--out {out}: {shorten(name)} would be written to {shorten(str(path), 200)}, "
                "outside it, through a linked folder. Remove the link, or choose a new folder."
            )


def _check_no_workdir(out: str | Path, folders: Iterable[Path]) -> None:
    """Refuse writing into any of ``folders`` if it, or a folder above it, is a training run."""
    seen: set[Path] = set()
    for folder in folders:
        for p in (folder, *folder.parents):
            if p in seen:
                break
            seen.add(p)
            if (p / "config.json").is_file() and (p / "checkpoints").is_dir():
                raise ValueError(
                    f"--out {out} is inside the training workdir {p}, which belongs to the run "
                    "(writing there could break it). Choose a folder outside it."
                )


def fail(error: BaseException) -> int:
    """Print ``error`` as a one-line message for people (no traceback); exit status 1."""
    print(f"error: {error}", file=sys.stderr)
    return 1


def load_model(path: str, step: int | None = None) -> Any:
    """``jaxbasics.train.load(path)``, ending the script with a message if it cannot."""
    from jaxbasics.train.io import load

    try:
        return load(path, step)
    except (OSError, ValueError) as e:  # missing, unreadable or incompatible: one line
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
