"""Image files: one read as uint8 RGB with Pillow, the way torchvision's loader reads it, and
the image files found under folders a user gives.

:func:`read_image` is what :mod:`jaxbasics.data.folder` decodes a training image with;
:func:`find_images` and :func:`read_inputs` are how ``experiments/reconstruct.py`` and
``encode.py`` find and read your images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

# torchvision's IMG_EXTENSIONS: what ImageFolder users already have, all of which Pillow reads.
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


# A JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8, in the DCT) only down to twice the
# final side, so the antialiased resize still does the last reduction of at least 2x: Pillow's
# own Image.thumbnail uses the same margin (its reducing_gap).
_DRAFT_MARGIN = 2

# A PNG of 12000x12000 one-bit pixels is 17.5 kB on disk and several GB decoded, yet under
# Pillow's own bomb limit (about 179 megapixels), so the header is checked against this first.
MAX_PIXELS = 64_000_000


class ImageReadError(ValueError):
    """An image file could not be decoded; the message names the file and what to do."""


def read_image(
    path: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    center_crop: int | None = None,
    resize: int | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Reads one image file as uint8 RGB, NHWC: what ``PIL.Image.open(path).convert("RGB")`` gives.

    Every mode Pillow opens comes out RGB through Pillow's own ``convert("RGB")``, as in
    torchvision's ``ImageFolder`` loader: grey (``L``, ``1``), palette (``P``), ``CMYK`` and
    ``YCbCr`` are converted, and an alpha channel (``RGBA``, ``LA``, ``PA``) is dropped, keeping
    the colours stored under it. The one exception is 16-bit grey (``I;16``), which Pillow would
    clip at 255 (most of such an image white): its top 8 bits are kept instead. Multi-frame files
    (GIF, TIFF) give their first frame. EXIF orientation is not applied (as in torchvision).

    Geometry, in pixels (Pillow's bilinear filter, antialiased when shrinking: torchvision's
    ``Resize`` default on PIL images):

    * ``image_size=S``: centre-crop the largest square, then resize it to ``S x S``. This is
      what :func:`folder` does; it cannot be combined with the other two.
    * ``resize=S``: scale so the shorter side is ``S``, keeping the aspect ratio; the longer
      side becomes ``int(S * long / short)`` (torchvision's ``Resize(S)``).
    * ``center_crop=C``: cut the central ``C x C`` (offsets ``round((W - C) / 2)`` and
      ``round((H - C) / 2)`` with Python's rounding: torchvision's ``CenterCrop(C)``, except
      that an image smaller than ``C`` is an error, not padded). With ``resize`` too, the
      resize comes first, so ``resize=S, center_crop=S`` is torchvision's
      ``Compose([Resize(S), CenterCrop(S)])`` pixel for pixel.

    With ``image_size`` (training on a folder, where decoding speed matters), when shrinking a
    JPEG Pillow decodes it at 1/2, 1/4 or 1/8 scale directly (``Image.draft``),
    never below twice the final side, so the final resize still does an antialiased 2x or more.
    A 1024x1024 photo decodes several times faster; pixels differ from a full-scale decode by
    less than one grey level on average.

    Args:
      path: the image file.
      image_size: side of the square output.
      center_crop: side of the central square to keep.
      resize: length of the shorter side after resizing.
      max_pixels: the most pixels (width x height, read from the header before anything is
        decoded) an image may have; above it the file is refused. Pillow refuses images over
        about 179 megapixels whatever this says.

    Returns:
      ``uint8 (H, W, 3)``.

    Raises:
      ImageReadError: the file is missing, not an image, truncated or corrupt, has pixels
        with no fixed range (32-bit ``I`` or float ``F``), or more than ``max_pixels`` pixels;
        the message names the file.
      ValueError: bad sizes, or ``center_crop`` larger than the image.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "wide.png"
    >>> Image.new("LA", (60, 40), (200, 255)).save(path)
    >>> read_image(path).shape, read_image(path, image_size=16).shape
    ((40, 60, 3), (16, 16, 3))
    >>> read_image(path, resize=20).shape, read_image(path, resize=20, center_crop=20)[0, 0]
    ((20, 30, 3), array([200, 200, 200], dtype=uint8))
    """
    sizes = {"image_size": image_size, "center_crop": center_crop, "resize": resize}
    for name, value in sizes.items():
        if value is not None and (not isinstance(value, int | np.integer) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
    if image_size is not None and (center_crop is not None or resize is not None):
        raise ValueError(
            "image_size (crop the largest square, then resize it) replaces center_crop and "
            f"resize; got image_size={image_size} with center_crop={center_crop}, "
            f"resize={resize}. Pass image_size alone, or resize and center_crop."
        )
    rgb = _decode(path, image_size, max_pixels)
    return np.array(_geometry(rgb, path, image_size, resize, center_crop), dtype=np.uint8)


def _decode(path: str | os.PathLike[str], image_size: int | None, max_pixels: int) -> Image.Image:
    """The file at ``path`` decoded as an RGB image (at a reduced scale for ``image_size``)."""
    from PIL import Image

    try:
        # The whole decode runs inside the try: Pillow reads lazily, so a truncated or corrupt
        # file only fails in load(). ImageFile.LOAD_TRUNCATED_IMAGES is left False, its
        # default: True would fill the missing part with grey and train on it silently.
        with warnings.catch_warnings():
            # max_pixels is the guard (and its message says what to do); Pillow's own warning
            # above 89 megapixels would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            _check_pixels(im, path, max_pixels)
            if image_size is not None:
                im.draft(None, (_DRAFT_MARGIN * image_size, _DRAFT_MARGIN * image_size))
            im.load()
            return _to_rgb(im, path)
    except ImageReadError:
        raise
    except FileNotFoundError as e:
        raise ImageReadError(
            f"cannot read {path}: it does not exist (was it moved or deleted after the folder "
            "was listed?). Put it back, or rerun so the folder is listed again."
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageReadError(
            f"cannot read {path} as an image ({type(e).__name__}: {e}). Open it in an image "
            "viewer: if it is broken, delete it or re-save it; if it is not an image, move it "
            "out of the data folder."
        ) from e


def _geometry(
    rgb: Image.Image,
    path: str | os.PathLike[str],
    image_size: int | None,
    resize: int | None,
    center_crop: int | None,
) -> Image.Image:
    """``rgb`` square-cropped and resized to ``image_size``, or resized and centre-cropped."""
    from PIL import Image

    if image_size is not None:
        w, h = rgb.size
        side = min(w, h)
        left, top = _offset(w, side), _offset(h, side)
        rgb = rgb.crop((left, top, left + side, top + side))
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    if resize is not None:
        w, h = rgb.size
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    if center_crop is not None:
        w, h = rgb.size
        if center_crop > min(w, h):
            raise ValueError(
                f"cannot crop the central {center_crop}x{center_crop} pixels of {path}: it is "
                f"{w}x{h}{' after resizing' if resize is not None else ''}. Resize it to at "
                f"least {center_crop} first (--resize {center_crop}, or resize={center_crop})."
            )
        left, top = _offset(w, center_crop), _offset(h, center_crop)
        rgb = rgb.crop((left, top, left + center_crop, top + center_crop))
    return rgb


def _check_pixels(im: Image.Image, path: str | os.PathLike[str], max_pixels: int) -> None:
    """Refuse an image whose header promises more than ``max_pixels`` (nothing decoded yet)."""
    w, h = im.size
    if w * h > max_pixels:
        raise ImageReadError(
            f"{path} is {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,} that "
            "guards against decompression bombs (tiny files that decode to gigabytes). If you "
            f"trust it, raise the limit: --max-pixels {w * h} (max_pixels= in Python)."
        )


def _offset(size: int, crop: int) -> int:
    """Where a centred crop starts: torchvision's ``int(round((size - crop) / 2.0))``."""
    return int(round((size - crop) / 2.0))


def _to_rgb(im: Image.Image, path: str | os.PathLike[str]) -> Image.Image:
    """A decoded image in any mode -> RGB (``convert("RGB")``, 16-bit grey scaled, not clipped)."""
    from PIL import Image

    if im.mode.startswith("I;16"):
        # Pillow's own I;16 -> RGB conversion clips at 255, which turns most of a 16-bit image
        # white; scale instead.
        grey = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if im.mode in ("I", "F"):
        raise ImageReadError(
            f"{path} has {im.mode} pixels (32-bit {'integer' if im.mode == 'I' else 'float'}), "
            "which have no fixed range to map to 0..255. Save it as an 8-bit image."
        )
    return im if im.mode == "RGB" else im.convert("RGB")


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
