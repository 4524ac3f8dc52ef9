"""FID of sets of images against one reference set, e.g. samples and reconstructions
against real test images.

  python experiments/fid.py real.npz samples/ --num 1000
  python experiments/fid.py data/test/ recon/ samples_g0/ samples_g2/ --num 1000 --exclude grids

The first argument is the reference; each further one is compared with it (the reference is
embedded once). Each is a folder of images (PNG, JPEG..., found recursively, in sorted path
order, all of one size) or an ``.npz`` of uint8 ``(N, H, W, 3)`` images (its array
``images``, or its only array). ``--num N`` keeps N images of each side, drawn at random with
``--seed`` (the same ones on every run; not the first N: a class-sorted folder's first N would
be one class). Prints one JSON line per compared set, ``{"fid": ..., "num_a": ...,
"num_b": ..., "images_b": ...}``. FID is biased upwards at small N: compare only FIDs of the
same N against the same reference. Needs ``pip install -e '.[fid]'``; nothing is downloaded
(see ``jaxbasics.fid``). A CPU embeds about 5-10 images a second; ``--device cuda`` is much
faster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile

import numpy as np

from common import HelpFormatter, fail, subset
from jaxbasics.data.images import find_images, read_image
from jaxbasics.fid import fids


def load_images(
    path: str, num: int | None = None, exclude: str | None = None, seed: int = 0
) -> np.ndarray:
    """``num`` images (all if None) of a folder or an ``.npz``, uint8 (N, H, W, 3).

    The ``num`` are drawn without replacement by ``seed`` and kept in path (or array) order.

    Raises:
      FileNotFoundError: ``path`` does not exist, or the folder holds no images.
      ValueError: the ``.npz`` is unreadable or its array ambiguous, the folder's images
        differ in size, or there are fewer than ``num`` (an FID at another N than asked for
        compares with nothing).
    """
    if path.endswith(".npz"):
        images = _load_npz(path)
        return images[subset(_enough(path, len(images), num), num, seed)]
    found = find_images([path], exclude=exclude)
    found = [found[i] for i in subset(_enough(path, len(found), num), num, seed)]
    pixels = [read_image(image.path) for image in found]
    for image, x in zip(found, pixels, strict=True):
        if x.shape != pixels[0].shape:
            raise ValueError(
                f"{image.path} is {x.shape[1]}x{x.shape[0]} but {found[0].path} is "
                f"{pixels[0].shape[1]}x{pixels[0].shape[0]}; FID compares images of one size "
                "(reconstruct.py's --out also holds grids/: pass --exclude OUT/grids; "
                "sample.py's holds grid.png: pass OUT/samples)."
            )
    return np.stack(pixels)


def _enough(path: str, total: int, num: int | None) -> int:
    """``total``, the number of images ``path`` holds, if it is at least ``num``."""
    if num is not None and total < num:
        raise ValueError(
            f"{path} holds {total} images, fewer than --num {num}: FIDs compare only at the same "
            f"N. Pass --num {total} (for every set), or more images."
        )
    return total


def _load_npz(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz (the zip archive np.savez writes).")
    with np.load(path, allow_pickle=False) as data:
        names = data.files
        if "images" not in names and len(names) != 1:
            raise ValueError(
                f"{path} holds the arrays {names}; name the images 'images' "
                "(np.savez(path, images=x)) or store them alone."
            )
        return data["images" if "images" in names else names[0]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("images_a", help="the reference: a folder of images or an .npz")
    parser.add_argument(
        "images_b", nargs="+", help="one or more sets to compare with it (folders or .npz)"
    )
    parser.add_argument(
        "--num", type=int, default=None, help="use N images of each side, drawn by --seed"
    )
    parser.add_argument("--seed", type=int, default=0, help="which N images --num draws")
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--exclude", default=None, help="skip images under this folder")
    args = parser.parse_args(argv)
    if args.num is not None and args.num < 2:
        parser.error(f"--num must be at least 2 (a covariance), got {args.num}.")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}.")

    try:
        a, *b = (
            load_images(p, args.num, args.exclude, args.seed)
            for p in (args.images_a, *args.images_b)
        )
    except (OSError, ValueError, ImportError) as e:
        return fail(e)
    try:
        results = fids(a, b, batch_size=args.batch_size, device=args.device)
    except (ValueError, ImportError) as e:
        return fail(e)
    except (RuntimeError, AssertionError) as e:  # torch on a device it cannot use
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return fail(RuntimeError(f"--device {args.device}: {first}"))
    for path, result in zip(args.images_b, results, strict=True):
        print(json.dumps(result._asdict() | {"images_b": path}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
