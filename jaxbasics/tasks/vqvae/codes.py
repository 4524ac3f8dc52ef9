"""``codes.npz``: the code maps of a user's images, the file ``encode.py`` writes and
``decode.py`` and ``train_prior.py --codes`` read, and which model codes belong to.

``codes.npz`` holds:

* ``codes``: every code map, flattened and concatenated, in the smallest unsigned integer
  dtype that holds K (uint8 for K <= 256);
* ``shapes``: (N, 2) int32, each map's (h, w); :func:`read_codes` splits ``codes`` back;
* ``names``: (N,) each image's path relative to the input it was found under;
* ``config``: the model's config as JSON text; ``codebook_sha256``: a fingerprint of the
  codebook (:func:`codebook_fingerprint`), so that codes are only ever decoded by the model
  that made them (:func:`check_codes_fit`).

:func:`read_codes` checks the whole file before anything is built from it: a damaged or
crafted file is one line, never a traceback or a machine out of memory.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import jax
import numpy as np
from flax import nnx

from jaxbasics.data.images import MAX_PIXELS
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.export_file import model_differences
from jaxbasics.train.files import name_problem, shorten, write_atomic
from jaxbasics.vqvae import palette


def codebook_fingerprint(model: Any) -> str:
    """SHA-256 of the model's codebook (float32 bytes): which model codes belong to.

    An FSQ codebook is the fixed grid of its levels, the same in every FSQ model with those
    levels; there the decoder's weights, which give the codes their meaning, are hashed after
    it, so codes still belong to one model.
    """
    digest = hashlib.sha256(np.asarray(model.vq.codebook[...], np.float32).tobytes())
    if not model.vq.learned:
        for leaf in jax.tree.leaves(nnx.state(model.decoder, nnx.Param)):
            digest.update(np.asarray(leaf, np.float32).tobytes())
    return digest.hexdigest()


def code_dtype(num_embeddings: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds codes 0..K-1.

    >>> code_dtype(256), code_dtype(257), code_dtype(70000)
    (dtype('uint8'), dtype('uint16'), dtype('uint32'))
    """
    for dtype in (np.uint8, np.uint16, np.uint32):
        if num_embeddings - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"num_embeddings {num_embeddings} does not fit in 32 bits.")


def write_codes(
    path: str | Path, names: Sequence[str], codes: Sequence[np.ndarray], model: Any, config: Any
) -> Path:
    """Write ``codes.npz`` (see the module docstring) atomically."""

    def write(file: BinaryIO) -> None:
        np.savez_compressed(
            file,
            codes=np.concatenate([c.reshape(-1) for c in codes]).astype(
                code_dtype(config.num_codes)
            ),
            shapes=np.array([c.shape for c in codes], np.int32).reshape(-1, 2),
            names=np.array(list(names), dtype=str),
            config=np.array(config.to_json()),
            codebook_sha256=np.array(codebook_fingerprint(model)),
        )

    return write_atomic(path, write)


class Codes(NamedTuple):
    """What :func:`read_codes` returns: names, (h, w) code maps, and the encoding model's
    config and codebook fingerprint."""

    names: list[str]
    maps: list[np.ndarray]
    config: Any
    codebook_sha256: str


_FIELDS = ("codes", "shapes", "names", "config", "codebook_sha256")


def memory_budget() -> int:
    """Bytes a ``codes.npz`` may unpack to: a quarter of this machine's memory, or of the
    container's limit (cgroup v2 ``memory.max``) where that is lower. Its members' sizes are
    read from the archive's directory first, so a crafted file (a compressed "zip bomb", or
    an array header declaring a huge shape) is refused instead of filling memory.

    >>> memory_budget() > 2**20
    True
    """
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        memory = min(memory, int(Path("/sys/fs/cgroup/memory.max").read_text()))
    except (OSError, ValueError):  # no cgroup v2, or "max": no limit
        pass
    return memory // 4


def read_codes(
    path: str | Path, max_pixels: int = MAX_PIXELS, *, limit_flag: str | None = "--max-pixels"
) -> Codes:
    """Read a ``codes.npz`` written by :func:`write_codes` (or ``experiments/encode.py``),
    checking all of it first, so that a damaged or crafted file is refused before a script
    writes anything. ``limit_flag``: the caller's flag that raises ``max_pixels``, named in the
    refusal of a larger map (None: it has none).

    The checks: integer codes (not bool, float or complex), each in [0, K) for the K of the
    file's config; one positive (h, w) per map, adding up to the codes, none decoding to more
    than ``max_pixels`` pixels (``16 h w``; checked before the codes are read); one name per
    map, each a path that stays inside the output folder (:func:`name_problem`), none repeated.

    Raises:
      FileNotFoundError: there is no such file.
      ValueError: anything else; one line naming the file and the problem.
    """
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # EOFError: an empty file
        if isinstance(e, FileNotFoundError):
            raise FileNotFoundError(f"{path} does not exist.") from e
        raise ValueError(
            f"{path} is not a codes.npz written by encode.py (it is not an .npz archive). "
            "Pass the file encode.py --out wrote."
        ) from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not a codes.npz written by encode.py.")
    with npz as f:
        missing = set(_FIELDS) - set(f.files)
        if missing:
            raise ValueError(
                f"{path} is not a codes.npz from encode.py: it lacks {sorted(missing)}."
            )
        unpacked = sum(info.file_size for info in f.zip.infolist())
        if unpacked > memory_budget():
            raise ValueError(
                f"{path} unpacks to {unpacked / 2**30:.1f} GiB, more than this machine can "
                f"hold for it ({memory_budget() / 2**30:.1f} GiB, a quarter of its memory); "
                "encode the images in several smaller files."
            )
        config, sha = (_read(f, k, path) for k in ("config", "codebook_sha256"))
        for name, text in (("config", config), ("codebook_sha256", sha)):
            if text.shape or text.dtype.kind != "U":
                raise _bad(path, f"{name} is a {text.dtype} array of shape {text.shape}, not text")
        try:
            config = VQVAEConfig.from_json(str(config))
        except (ValueError, TypeError, AttributeError) as e:
            raise _bad(path, f"its config is not a model config ({e})") from e
        k = config.num_embeddings
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise _bad(path, f"its config's num_embeddings is {k!r}, not a positive integer")
        shapes = _checked_shapes(path, _read(f, "shapes", path), max_pixels, limit_flag)
        if type(config.palette_slots) is not int or config.palette_slots < 0:
            raise _bad(path, f"its config's palette_slots is {config.palette_slots!r}")
        maps = _checked_maps(path, _read(f, "codes", path), shapes, config.num_codes)
        names = _checked_names(path, _read(f, "names", path), len(maps))
    return Codes(names, maps, config, str(sha))


def _read(npz: Any, key: str, path: str | Path) -> np.ndarray:
    """Array ``key`` of an open ``.npz``, or an error naming the file."""
    try:
        return npz[key]
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error) as e:
        raise _bad(path, f"its {key} cannot be read ({type(e).__name__}: {e})") from e


def _checked_shapes(
    path: str | Path, shapes: np.ndarray, max_pixels: int, flag: str | None
) -> np.ndarray:
    """The (N, 2) int64 map shapes of a ``codes.npz``: positive, none over ``max_pixels``."""
    if shapes.ndim != 2 or shapes.shape[1:] != (2,) or shapes.dtype.kind not in "iu":
        raise _bad(path, f"shapes are {shapes.dtype} {shapes.shape}, not (N, 2) integers")
    if not len(shapes):
        raise _bad(path, "it holds no code maps")
    if shapes.min() < 1:
        raise _bad(path, "a map's (h, w) is below 1")
    pixels = 16 * shapes[:, 0].astype(np.float64) * shapes[:, 1]  # exact below 2**53
    big = int(np.argmax(pixels))
    if pixels[big] > max_pixels:
        h, w = (int(side) for side in shapes[big])
        fix = f"raise the limit: {flag} {16 * h * w}" if flag else "encode smaller images"
        raise ValueError(
            f"{path}: code map {big} is {h}x{w} codes, which decode to a {4 * w}x{4 * h} image "
            f"of {16 * h * w:,} pixels, more than the limit of {max_pixels:,}. If you trust the "
            f"file, {fix} (max_pixels= in Python)."
        )
    return shapes.astype(np.int64)


def _checked_maps(path: str | Path, flat: np.ndarray, shapes: np.ndarray, k: int) -> list:
    """The (h, w) int32 code maps of a ``codes.npz``, once its arrays have passed every check."""
    if flat.ndim != 1 or flat.dtype.kind not in "iu":
        raise _bad(path, f"codes are {flat.dtype} of shape {flat.shape}, not a 1-D integer array")
    if flat.size and (flat.min() < 0 or flat.max() >= k):
        bad = int(flat.min()) if flat.min() < 0 else int(flat.max())
        raise _bad(path, f"it holds code {bad}, outside 0..{k - 1} (its model's {k} codes)")
    if shapes.max() > flat.size:
        raise _bad(path, "a map's (h, w) is beyond the number of codes")
    ends = np.cumsum(shapes.prod(axis=1))
    if ends[-1] != flat.size:
        raise _bad(path, f"its {len(shapes)} map shapes do not add up to its {flat.size} codes")
    pieces = np.split(flat.astype(np.int32), ends[:-1])
    return [m.reshape(hw) for m, hw in zip(pieces, shapes, strict=True)]


def _checked_names(path: str | Path, names: np.ndarray, count: int) -> list[str]:
    """The names of a ``codes.npz``: ``count`` distinct relative paths, or an error."""
    if names.shape != (count,) or names.dtype.kind != "U":
        raise _bad(path, f"names are {names.dtype} {names.shape}, not {count} strings")
    names = [str(n) for n in names]
    for name in names:
        problem = name_problem(name)
        if problem is not None:
            raise _bad(path, f"name {shorten(name)!r} {problem}")
    repeated = next((n for n, c in Counter(names).items() if c > 1), None)
    if repeated is not None:
        raise _bad(path, f"name {shorten(repeated)!r} is repeated")
    return names


def _bad(path: str | Path, problem: str) -> ValueError:
    return ValueError(f"{path} is not a valid codes.npz: {problem}. Encode the images again.")


def check_codes_fit(
    codes: Codes,
    model: Any,
    config: Any,
    where: str | Path,
    fix: str = "Decode it with --model pointing at the run (and step) or export that encoded it.",
) -> None:
    """Refuse codes made by another model: other K or code size, or another codebook (``fix``:
    what to do, in the refusal).

    Raises:
      ValueError: naming what differs and what to do.
    """
    diff = model_differences(codes.config, config, ("codes", "model"))
    if diff:
        raise ValueError(
            f"{where} was encoded by a model of other sizes than this one ({diff}). {fix}"
        )
    if codes.codebook_sha256 != codebook_fingerprint(model):
        raise ValueError(
            f"{where} was encoded by another model: the codebooks differ (same sizes, other "
            f"weights), so its codes would decode to nonsense. {fix}"
        )
    if model.palette_slots:  # each row of a palette map holds its own codes
        for shape in sorted({m.shape for m in codes.maps}):
            maps = np.stack([m for m in codes.maps if m.shape == shape])
            try:
                palette.split_map(maps, model.vq.num_embeddings, model.palette_slots)
            except ValueError as e:
                raise ValueError(f"{where}: {e} {fix}") from e
