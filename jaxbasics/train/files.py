"""File safety, the same for every run and script: atomic writes and the ``--out`` policy.

* :func:`write_atomic` is the one way anything is written: into a new file next to the target,
  then renamed into place, so a file is never half-written (a kill, a full disk) and no other
  file is written over. :func:`save_figure` and :func:`save_png` write through it.
* :func:`check_out` is the rule every script's ``--out`` goes through before anything is
  written: nothing given is ever written over, nothing is written outside ``--out`` or inside a
  training workdir, and every name is one a file system takes (:func:`name_problem`).
  :func:`output_names` gives each output its own path.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# What a name may be: parts of at most NAME_MAX bytes (the file systems' limit), at most
# MAX_DEPTH of them (pathlib's mkdir recurses once per missing folder).
NAME_MAX = 255
MAX_DEPTH = 32
# Linux's PATH_MAX, in bytes with the closing NUL: a longer path cannot be opened.
PATH_MAX = 4096


def write_atomic(path: str | Path, content: str | bytes | Callable[[BinaryIO], Any]) -> Path:
    """Write ``content`` (text, bytes, or a function writing to a binary file) to ``path`` at once.

    It goes into a new file next to ``path`` (a random name, opened exclusively: nothing else is
    ever written over), which is then renamed into place; a failed write (a full disk) leaves
    ``path`` as it was and no temporary file behind. Text or bytes equal to what ``path``
    already holds leave it untouched, modification time included.

    Raises:
      IsADirectoryError: ``path`` is a folder.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "config.json"
    >>> _ = write_atomic(path, "{}")
    >>> path.read_text(), [p.name for p in path.parent.iterdir()]
    ('{}', ['config.json'])
    >>> write_atomic(path, lambda f: f.write(b"[]")).read_text()
    '[]'
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name.")
    data = content.encode() if isinstance(content, str) else content
    if isinstance(data, bytes) and path.is_file() and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # The name's first 64 characters say whose it is; all of it could pass the 255-byte limit.
    tmp = path.with_name(f".{path.name[:64]}.{secrets.token_hex(4)}.tmp")
    file = tmp.open("xb")  # "x": a name that exists (not ours) is never written or removed
    try:
        with file:
            if isinstance(data, bytes):
                file.write(data)
            else:
                data(file)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save a matplotlib figure as a PNG (:func:`write_atomic`) and close it.

    >>> import tempfile
    >>> from jaxbasics import plots
    >>> fig = plots.training_curve([3.0, 2.0, 1.0], "loss")
    >>> save_figure(fig, Path(tempfile.mkdtemp()) / "loss.png").stat().st_size > 0
    True
    """
    import matplotlib.pyplot as plt

    try:
        return write_atomic(path, lambda file: fig.savefig(file, format="png", dpi=100))
    finally:
        plt.close(fig)


def save_png(path: str | Path, pixels: np.ndarray) -> Path:
    """Write uint8 (H, W, 3) pixels losslessly as a PNG (:func:`write_atomic`), creating folders.

    >>> import tempfile
    >>> save_png(Path(tempfile.mkdtemp()) / "a/b.png", np.zeros((4, 4, 3), np.uint8)).name
    'b.png'
    """
    from PIL import Image

    image = Image.fromarray(np.asarray(pixels, np.uint8))
    return write_atomic(path, lambda file: image.save(file, format="PNG"))


def name_problem(name: str) -> str | None:
    r"""Why ``name`` cannot be a file's path inside a folder it is joined to, or None if it can.

    It must stay inside (no absolute path, no ``..``, ``.`` or empty part, ``/`` or ``\``
    separated, no NUL) and be a path file systems take: parts of at most :data:`NAME_MAX`
    bytes (as the file system encodes them), at most :data:`MAX_DEPTH` of them.

    >>> [name_problem(n) is None for n in ["a/x.png", "../x", "/x", "a//x", "./x", "a\\..\\x", ""]]
    [True, False, False, False, False, False, False]
    >>> name_problem("x" * 256), name_problem("d/" * 32 + "x")
    ('has a part of 256 bytes (at most 255)', 'is 33 parts deep (at most 32)')
    """
    parts = name.replace("\\", "/").split("/")
    if "\0" in name or any(part in ("", ".", "..") for part in parts):
        return "is not a relative path inside the output folder"
    try:
        longest = max(len(os.fsencode(part)) for part in parts)
    except UnicodeEncodeError:
        return "holds characters that no file name can (a lone surrogate)"
    if longest > NAME_MAX:
        return f"has a part of {longest} bytes (at most {NAME_MAX})"
    if len(parts) > MAX_DEPTH:
        return f"is {len(parts)} parts deep (at most {MAX_DEPTH})"
    return None


def shorten(text: str, limit: int = 60) -> str:
    """``text``, cut to ``limit`` characters with ``...`` if longer (names in messages).

    >>> shorten("abcdef", 5)
    'ab...'
    """
    return text if len(text) <= limit else text[: limit - 3] + "..."


def output_names(names: Sequence[str], taken: Collection[str] = ()) -> list[str]:
    """Where each image's PNG goes: its name with ``.png`` for its suffix, or, where two names
    would meet (``x.jpg`` and ``x.png``), the whole name plus ``.png``; a name that still meets
    another, or one of ``taken`` (the script's other outputs), gets ``~1``, ``~2``... before
    ``.png``. No two outputs ever share a path.

    >>> output_names(["a/x.jpg", "x.jpg", "y.jpg", "y.png"])
    ['a/x.png', 'x.png', 'y.jpg.png', 'y.png.png']
    >>> output_names(["y.jpg", "y.png", "y.jpg.png", "g.png"], taken={"g.png"})
    ['y.jpg~1.png', 'y.png.png', 'y.jpg~2.png', 'g~1.png']
    """
    plain = [Path(n).with_suffix(".png").as_posix() for n in names]
    counts = Counter(plain)
    first = [p if counts[p] == 1 else n + ".png" for n, p in zip(names, plain, strict=True)]
    clashes = Counter(first) + Counter(set(taken))
    used = set(taken) | set(first)
    out = []
    for name in first:
        if clashes[name] > 1:
            name = next(u for k in itertools.count(1) if (u := f"{name[:-4]}~{k}.png") not in used)
            used.add(name)
        out.append(name)
    return out


def check_out(
    out: str | Path, inputs: Iterable[str | Path], names: Sequence[str] | None = None
) -> Path:
    """The rule every script's ``--out`` goes through: nothing given is ever written over,
    nothing is written outside ``--out``.

    ``out`` is the file a script writes, or, with ``names`` (relative paths), the folder it
    writes ``out/name`` into. Symbolic links are followed. Refused, before anything is written:
    a file to be written that exists already (a user's, or an earlier run's: nothing is ever
    written over); a file that is one of ``inputs``; a folder that is a file, or is or holds one of
    ``inputs`` (a folder inside an input folder is fine); a name no file system takes
    (:func:`name_problem`); a file to be written that is a link (it is never written through),
    or that a linked folder places outside ``out``; anything written inside a training workdir
    (a folder holding ``config.json`` and ``checkpoints/``: it belongs to the run); a file to
    be written where a folder must go for another (``x.png`` and ``x.png/y.png``).

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
    target = Path(os.path.realpath(out))
    given = {Path(os.path.realpath(i)) for i in inputs}
    if names is None:
        written = [target]
        if target in given:
            raise ValueError(
                f"--out {out} is one of the inputs: it would be written over. Choose a new file."
            )
        if os.path.islink(out):  # even one leading nowhere: it is someone's link
            raise ValueError(
                f"--out {out} is a link, which would be replaced or written through. Choose a "
                "new file."
            )
    else:
        written = _check_folder(out, target, given, names)
    _check_no_workdir(out, {target, *(w.parent for w in written)})
    _check_folders_above(out, written)
    existing = [w for w in written if os.path.lexists(w)]
    if existing:
        more = f" (and {len(existing) - 1} more this run would write)" if len(existing) > 1 else ""
        raise FileExistsError(
            f"--out {out}: {shorten(str(existing[0]), 200)} exists{more}; no script writes over "
            "a file it did not make in this run. Choose a new --out, or move them away."
        )
    return target


def _check_folder(out: str | Path, target: Path, given: set[Path], names: Sequence[str]) -> list:
    """:func:`check_out` for a folder ``out`` (``target``: resolved) and the ``names`` written
    in it; returns each written path, resolved."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder (it is created if needed).")
    held = next((g for g in given if g.is_relative_to(target)), None)
    if held is not None:
        raise ValueError(
            f"--out {out} holds the input {held}: the files written there could overwrite "
            "it. Choose a new folder"
            + ("." if _is_workdir(target) else " (a subfolder of the inputs is fine).")
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
    return written


def _check_paths(
    out: str | Path, target: Path, names: Sequence[str], written: Sequence[Path]
) -> None:
    """Refuse writing to a path too long to open, through a link at ``target / name``, or to a
    file a linked folder takes outside ``target`` (``written``: each name resolved)."""
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


def _check_folders_above(out: str | Path, written: Iterable[Path]) -> None:
    """Refuse a file to be written below a file (``x.png/codes.npz``, ``x.png`` a file)."""
    for path in written:
        above = next((p for p in path.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise ValueError(
                f"--out {out}: {shorten(str(above), 200)} is a file, so nothing can be written "
                "inside it. Choose another folder."
            )


def _check_no_workdir(out: str | Path, folders: Iterable[Path]) -> None:
    """Refuse writing into any of ``folders`` if it, or a folder above it, is a training run."""
    seen: set[Path] = set()
    for folder in folders:
        for p in (folder, *folder.parents):
            if p in seen:
                break
            seen.add(p)
            if _is_workdir(p):
                raise ValueError(
                    f"--out {out} is inside the training workdir {p}, which belongs to the run "
                    "(writing there could break it). Choose a folder outside it."
                )


def _is_workdir(folder: Path) -> bool:
    """Whether ``folder`` is a training run's workdir (it holds a run's files)."""
    return (folder / "config.json").is_file() and (folder / "checkpoints").is_dir()
