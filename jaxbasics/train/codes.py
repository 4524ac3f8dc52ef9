"""A trained model on image files: read inputs, encode and decode in batches, ``codes.npz``.

What ``experiments/reconstruct.py``, ``encode.py`` and ``decode.py`` are made of. The model
runs through two compiled functions, ``encode`` (images -> code maps) and ``decode`` (code maps
-> images), on batches of a fixed size (the last one padded), grouped by image size in order
of first appearance. A reconstruction is ``decode(encode(x))``, so decoding the codes that
``encode.py`` stored gives exactly, bit for bit, what ``reconstruct.py`` shows.

``codes.npz`` holds:

* ``codes``: every code map, flattened and concatenated, in the smallest unsigned integer
  dtype that holds K (uint8 for K <= 256);
* ``shapes``: (N, 2) int32, each map's (h, w); :func:`read_codes` splits ``codes`` back;
* ``names``: (N,) each image's path relative to the input it was found under;
* ``config``: the model's config as JSON text; ``codebook_sha256``: a fingerprint of the
  codebook, so that codes are only ever decoded by the model that made them.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import secrets
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import jax
import numpy as np

from jaxbasics.data.images import MAX_PIXELS

BATCH = 32


class InputImage(NamedTuple):
    """An image file found under one of the inputs: its path and its name relative to that."""

    path: Path
    name: str


def find_images(
    inputs: Sequence[str | Path], *, exclude: str | Path | None = None
) -> list[InputImage]:
    """The image files given directly or found (recursively, sorted) under the given folders.

    Each image is named by its path relative to the deepest folder that holds every input (a
    single folder's images by their path inside it), so two inputs never share a name. Hidden
    files and folders, non-image files and anything under ``exclude`` (e.g. the output folder
    of an earlier run) are skipped; a file given twice is read once.

    Raises:
      FileNotFoundError: an input does not exist, or a folder holds no image files.

    >>> import tempfile
    >>> from PIL import Image
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "a").mkdir(); Image.new("RGB", (8, 8)).save(d / "a" / "x.png")
    >>> [i.name for i in find_images([d])], [i.name for i in find_images([d / "a", d / "a/x.png"])]
    (['a/x.png'], ['x.png'])
    """
    from jaxbasics.data.images import IMAGE_EXTENSIONS

    given = [Path(os.path.abspath(i)) for i in inputs]
    skip = Path(os.path.abspath(exclude)) if exclude is not None else None
    for path in given:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist.")
    root = Path(os.path.commonpath([g if g.is_dir() else g.parent for g in given]))
    found: dict[Path, InputImage] = {}
    for path in given:
        if path.is_file():
            files = [path]
        else:
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and (skip is None or not p.is_relative_to(skip))
            )
            if not files:
                raise FileNotFoundError(
                    f"{path} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})."
                )
        for p in files:
            found.setdefault(p, InputImage(p, p.relative_to(root).as_posix()))
    return list(found.values())


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


def read_inputs(
    images: Sequence[InputImage],
    *,
    resize: int | None,
    center_crop: int | None,
    max_pixels: int = MAX_PIXELS,
) -> list[np.ndarray]:
    """Read every image as uint8 (H, W, 3), checking that both sides are multiples of 4.

    ``max_pixels``: the largest image (width x height) read; its header is checked first.

    Raises:
      ValueError: a side is not a multiple of 4, or an image is unreadable or over
        ``max_pixels``; the message names the file and the fix.
    """
    from jaxbasics.data.images import read_image

    arrays = []
    for image in images:
        x = read_image(image.path, resize=resize, center_crop=center_crop, max_pixels=max_pixels)
        if x.shape[0] % 4 or x.shape[1] % 4:
            raise ValueError(
                f"{image.path} is {x.shape[1]}x{x.shape[0]} pixels"
                f"{' after resizing / cropping' if resize or center_crop else ''}; the model "
                "needs both sides "
                "to be multiples of 4 (two stride-2 convolutions). Pass --resize S --center-crop S "
                "with S a multiple of 4, e.g. the training --image-size (--resize alone keeps "
                "the aspect ratio, so the longer side may still not fit)."
            )
        arrays.append(x)
    return arrays


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-0.5, 0.5], the notes' ``x / 255 - 0.5``.

    >>> to_model_input(np.array([0, 255], np.uint8)).tolist()
    [-0.5, 0.5]
    """
    return np.asarray(images, np.float32) / 255 - 0.5


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Model output in [-0.5, 0.5] -> uint8 pixels (rounded, clipped).

    >>> to_pixels(np.array([-0.6, 0.0, 0.5])).tolist()
    [0, 128, 255]
    """
    return np.clip(np.rint((np.asarray(images, np.float32) + 0.5) * 255), 0, 255).astype(np.uint8)


class ModelFns(NamedTuple):
    """The two compiled functions of a loaded model (see :func:`model_fns`)."""

    encode: Callable[[np.ndarray], jax.Array]
    decode: Callable[[np.ndarray], jax.Array]


def model_fns(model: Any) -> ModelFns:
    """``encode(images) -> codes`` and ``decode(codes) -> images``, jit-compiled once."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x))
    decode = jax.jit(lambda s, c: nnx.merge(graphdef, s).decode_indices(c))
    return ModelFns(lambda x: encode(state, x), lambda c: decode(state, c))


def batches(
    shapes: Sequence[tuple[int, ...]], size: int = BATCH, budget: int | None = None
) -> Iterator[list[int]]:
    """Index batches: same-shape items together (groups in order of first appearance), at
    most ``size`` each, items in input order within a group. With ``budget``, a group's
    batches hold at most ``budget // (h * w)`` items (at least one), ``(h, w)`` being the
    first two sides of its shape, so large images go through in small batches.

    >>> list(batches([(4, 4), (8, 8), (4, 4), (4, 4)], size=2))
    [[0, 2], [3], [1]]
    >>> list(batches([(4, 4), (8, 8), (4, 4), (8, 8)], size=4, budget=64))
    [[0, 2], [1], [3]]
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    for shape, members in groups.items():
        n = batch_rows(shape, size, budget)
        for start in range(0, len(members), n):
            yield members[start : start + n]


def batch_rows(shape: tuple[int, ...], size: int = BATCH, budget: int | None = None) -> int:
    """How many items of ``shape`` one batch holds (see :func:`batches`)."""
    if budget is None:
        return size
    return max(1, min(size, budget // max(1, math.prod(shape[:2]))))


# Pixels per encode batch: 32 images of 64x64. Bigger images go through fewer at a time, so
# memory stays about that of a 64x64 batch (a 1024x768 photo alone, not padded to 32 copies).
PIXEL_BUDGET = BATCH * 64 * 64
# The same for decode batches, counted in code positions (one per 4x4 pixels).
CODE_BUDGET = PIXEL_BUDGET // 16


class Batch(NamedTuple):
    """One batch of :func:`each_batch`: which items it held, and their results in that order."""

    members: list[int]
    results: np.ndarray


def each_batch(
    fn: Callable[[np.ndarray], jax.Array],
    items: Sequence[np.ndarray],
    *,
    size: int = BATCH,
    budget: int | None = None,
    progress: bool = False,
    desc: str = "",
) -> Iterator[Batch]:
    """``fn`` over ``items`` in padded batches, one :class:`Batch` at a time (so a caller that
    writes each batch's results keeps no more than one batch in memory).

    Items of one shape go in batches of exactly :func:`batch_rows` ``(shape, size, budget)``
    rows (the last is padded with copies of its first item; padding rows are dropped from the
    results), so every image of a given size goes through one and the same compiled program,
    whatever the other images.

    >>> [b.members for b in each_batch(lambda x: x, [np.zeros(2), np.zeros(3), np.ones(2)])]
    [[0, 2], [1]]
    """
    from tqdm.auto import tqdm

    groups = list(batches([x.shape for x in items], size, budget))
    for members in tqdm(groups, desc=desc, unit="batch", disable=not progress):
        rows = batch_rows(items[members[0]].shape, size, budget)
        stack = np.stack([items[i] for i in members])
        if len(members) < rows:
            stack = np.concatenate([stack, np.repeat(stack[:1], rows - len(members), 0)])
        yield Batch(members, np.asarray(fn(stack))[: len(members)])


def run_batched(
    fn: Callable[[np.ndarray], jax.Array], items: Sequence[np.ndarray], **kwargs: Any
) -> list[np.ndarray]:
    """``fn`` over ``items`` in padded batches (:func:`each_batch`); one result per item, in
    order.

    >>> [r.tolist() for r in run_batched(lambda x: 2 * x, [np.ones(2), np.ones(3)], size=4)]
    [[2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    out: list[Any] = [None] * len(items)
    for members, results in each_batch(fn, items, **kwargs):
        for i, result in zip(members, results, strict=True):
            out[i] = result
    return out


def codebook_fingerprint(model: Any) -> str:
    """SHA-256 of the model's codebook (float32 bytes): which model codes belong to.

    An FSQ codebook is the fixed grid of its levels, the same in every FSQ model with those
    levels; there the decoder's weights, which give the codes their meaning, are hashed after
    it, so codes still belong to one model.
    """
    from flax import nnx

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


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None], example: str) -> Path:
    """Write ``path`` through ``write(file)``: into a new file next to it, then renamed into
    place, so it is never half-written and no other file is ever written over.

    Raises:
      IsADirectoryError: ``path`` is a folder (``example`` names a file to suggest in it).

    >>> import tempfile
    >>> path = write_atomically(Path(tempfile.mkdtemp()) / "a.bin", lambda f: f.write(b"hi"), "a")
    >>> path.read_bytes(), [p.name for p in path.parent.iterdir()]
    (b'hi', ['a.bin'])
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name, e.g. {path}/{example}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    file = tmp.open("xb")  # "x": a name that exists already (not ours) is an error, not overwritten
    try:
        with file:
            write(file)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_codes(
    path: str | Path, names: Sequence[str], codes: Sequence[np.ndarray], model: Any, config: Any
) -> Path:
    """Write ``codes.npz`` (see the module docstring) atomically."""

    def write(file: BinaryIO) -> None:
        np.savez_compressed(
            file,
            codes=np.concatenate([c.reshape(-1) for c in codes]).astype(
                code_dtype(config.num_embeddings)
            ),
            shapes=np.array([c.shape for c in codes], np.int32).reshape(-1, 2),
            names=np.array(list(names), dtype=str),
            config=np.array(config.to_json()),
            codebook_sha256=np.array(codebook_fingerprint(model)),
        )

    return write_atomically(path, write, "codes.npz")


class Codes(NamedTuple):
    """What :func:`read_codes` returns: names, (h, w) code maps, and the encoding model's
    config and codebook fingerprint."""

    names: list[str]
    maps: list[np.ndarray]
    config: Any
    codebook_sha256: str


_FIELDS = ("codes", "shapes", "names", "config", "codebook_sha256")
# What a name may be: parts of at most NAME_MAX bytes (the file systems' limit), at most
# MAX_DEPTH of them (pathlib's mkdir recurses once per missing folder).
NAME_MAX = 255
MAX_DEPTH = 32


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


def read_codes(path: str | Path, max_pixels: int = MAX_PIXELS) -> Codes:
    """Read a ``codes.npz`` written by :func:`write_codes` (or ``experiments/encode.py``),
    checking all of it first, so that a damaged or crafted file is refused before a script
    writes anything.

    The checks: integer codes (not bool, float or complex), each in [0, K) for the K of the
    file's config; one positive (h, w) per map, adding up to the codes, none decoding to more
    than ``max_pixels`` pixels (``16 h w``; checked before the codes are read); one name per
    map, each a path that stays inside the output folder (:func:`name_problem`), none repeated.

    Raises:
      FileNotFoundError: there is no such file.
      ValueError: anything else; one line naming the file and the problem.
    """
    from jaxbasics.train.config import TrainConfig

    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
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
            config = TrainConfig.from_json(str(config))
        except (ValueError, TypeError, AttributeError) as e:
            raise _bad(path, f"its config is not a model config ({e})") from e
        k = config.num_embeddings
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise _bad(path, f"its config's num_embeddings is {k!r}, not a positive integer")
        shapes = _checked_shapes(path, _read(f, "shapes", path), max_pixels)
        maps = _checked_maps(path, _read(f, "codes", path), shapes, k)
        names = _checked_names(path, _read(f, "names", path), len(maps))
    return Codes(names, maps, config, str(sha))


def _read(npz: Any, key: str, path: str | Path) -> np.ndarray:
    """Array ``key`` of an open ``.npz``, or an error naming the file."""
    try:
        return npz[key]
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error) as e:
        raise _bad(path, f"its {key} cannot be read ({type(e).__name__}: {e})") from e


def _checked_shapes(path: str | Path, shapes: np.ndarray, max_pixels: int) -> np.ndarray:
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
        raise ValueError(
            f"{path}: code map {big} is {h}x{w} codes, which decode to a {4 * w}x{4 * h} image "
            f"of {16 * h * w:,} pixels, more than the limit of {max_pixels:,}. If you trust the "
            f"file, raise the limit: --max-pixels {16 * h * w} (max_pixels= in Python)."
        )
    return shapes.astype(np.int64)


def _checked_maps(path: str | Path, flat: np.ndarray, shapes: np.ndarray, k: int) -> list:
    """The (h, w) int32 code maps of a ``codes.npz``, once its arrays have passed every check."""
    if flat.ndim != 1 or flat.dtype.kind not in "iu":
        raise _bad(path, f"codes are {flat.dtype} of shape {flat.shape}, not a 1-D integer array")
    if flat.size and (flat.min() < 0 or flat.max() >= k):
        bad = int(flat.min()) if flat.min() < 0 else int(flat.max())
        raise _bad(path, f"it holds code {bad}, outside 0..{k - 1} (K = {k})")
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


def check_codes_fit(codes: Codes, model: Any, config: Any, where: str | Path) -> None:
    """Refuse codes made by another model: other K or code size, or another codebook.

    Raises:
      ValueError: naming what differs and what to do.
    """
    from jaxbasics.train.io import MODEL_FIELDS

    diff = [
        f"{k}: codes {getattr(codes.config, k)!r}, model {getattr(config, k)!r}"
        for k in MODEL_FIELDS
        if getattr(codes.config, k) != getattr(config, k)
    ]
    if diff:
        raise ValueError(
            f"{where} was encoded by a model of other sizes than this one:\n  "
            + "\n  ".join(diff)
            + "\nDecode it with --model pointing at the run or export that encoded it."
        )
    if codes.codebook_sha256 != codebook_fingerprint(model):
        raise ValueError(
            f"{where} was encoded by another model: the codebooks differ (same sizes, other "
            "weights), so its codes would decode to nonsense. Decode it with --model pointing "
            "at the run (and step) or export that encoded it."
        )
