"""Write a dataset's images to a folder as PNG files: real images to compare samples with.

  python experiments/write_images.py --dataset shapes --split test --num 1000 --out real/
  python experiments/fid.py real/ samples/samples --num 1000

The embedded ``shapes`` data (or CIFAR-10, or a folder, with ``--data-dir``) as the models see
it: ``<out>/<index>.png``, uint8 RGB, 32x32 (``--image-size`` for a folder), the first
``--num`` images of the split in its order (a class-sorted folder's first images are one
class: write them all, and let fid.py draw its own ``--num``). Nothing in ``--out`` is written
over. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from tqdm.auto import tqdm

from common import HelpFormatter, fail
from jaxbasics.data.base import read_batch
from jaxbasics.data.sources import DATASETS, get_source
from jaxbasics.train.files import check_out, save_png

CHUNK = 256


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="shapes", help="which dataset")
    p.add_argument("--data-dir", default=None, help="cifar10 or folder: where the data is")
    p.add_argument("--split", choices=("train", "test"), default="test", help="which split")
    p.add_argument("--num", type=int, default=None, help="how many images (default: all)")
    p.add_argument("--image-size", type=int, default=32, help="folder only: the images' side")
    p.add_argument("--seed", type=int, default=0, help="shapes only: which generated dataset")
    p.add_argument("--out", required=True, help="the folder to write (created)")
    args = p.parse_args(argv)
    if args.num is not None and args.num < 1:
        p.error(f"--num must be at least 1, got {args.num}.")
    try:
        kw = dict(data_dir=args.data_dir, seed=args.seed, image_size=args.image_size)
        source = get_source(args.dataset, args.split, **kw)
        if args.num is not None and args.num > len(source):
            raise ValueError(
                f"--num {args.num} is more than the {len(source)} images of the {args.dataset} "
                f"{args.split} split; give at most {len(source)} (or leave --num out: all)."
            )
        if args.num is not None:
            source = get_source(args.dataset, args.split, num_examples=args.num, **kw)
        names = [f"{i:06d}.png" for i in range(len(source))]
        out = check_out(args.out, [args.data_dir] if args.data_dir else [], names)
        with tqdm(total=len(names), unit="image", disable=len(names) < 2 * CHUNK) as bar:
            for start in range(0, len(source), CHUNK):
                images = read_batch(source, np.arange(start, min(start + CHUNK, len(source))))
                for i, image in enumerate(images["image"], start):
                    save_png(out / names[i], image)
                bar.update(len(images["image"]))
    except (OSError, ValueError) as e:
        return fail(e)
    print(json.dumps({"images": len(names), "dataset": args.dataset, "out": args.out}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
