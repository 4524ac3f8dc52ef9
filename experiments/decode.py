"""Decode ``codes.npz`` (from ``encode.py``) back into images: one PNG per code map.

  python experiments/decode.py codes.npz --model runs/quickstart --out decoded/

The file is checked whole before anything is written (codes in range, maps that decode to at
most ``--max-pixels``, names that stay inside ``--out``: see
``jaxbasics.tasks.vqvae.codes.read_codes``), and ``--out`` may not hold the codes or the model, nor
lead outside itself through links. Codes are only decoded by the model that made them: a
model of other sizes (K, code size...) or with another codebook is refused. PNGs are written
batch by batch (memory holds one batch of images); ``<out>/<name>.png`` is bit for bit what
``reconstruct.py`` writes for that image. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import HelpFormatter, add_max_pixels, add_model_args, fail, load_model
from jaxbasics.data.transforms import to_pixels
from jaxbasics.tasks.vqvae.apply import CODE_BUDGET, each_batch, model_fns
from jaxbasics.tasks.vqvae.codes import check_codes_fit, read_codes
from jaxbasics.train.files import check_out, output_names, save_png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("codes", help="a codes.npz written by encode.py")
    parser.add_argument("--out", required=True, help="output folder")
    add_max_pixels(parser, "code maps that decode to images of more pixels (16 per code")
    add_model_args(parser, images=False)
    args = parser.parse_args(argv)

    try:  # the codes first: a wrong path should not wait for the model to load
        codes = read_codes(args.codes, args.max_pixels)
        names = output_names(codes.names)
        check_out(args.out, [args.codes, args.model], names)
    except (OSError, ValueError) as e:
        return fail(e)
    loaded = load_model(args.model, args.step)
    try:
        check_codes_fit(codes, loaded.model, loaded.config, args.codes)
    except ValueError as e:
        return fail(e)
    fns = model_fns(loaded.model)
    many = len(codes.maps) > 32
    out = Path(args.out)
    try:  # each batch written as it comes: memory holds one batch of images, not all
        for members, images in each_batch(
            fns.decode, codes.maps, budget=CODE_BUDGET, progress=many, desc="decode"
        ):
            for i, image in zip(members, images, strict=True):
                save_png(out / names[i], to_pixels(image))
    except OSError as e:
        return fail(e)
    print(json.dumps({"images": len(names), "out": str(out), "model_step": loaded.step}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
