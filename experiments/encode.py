"""Encode your own images to VQ-VAE code maps: ``codes.npz``.

  python experiments/encode.py photos/ --model runs/quickstart --out codes.npz

Stores every image's (H/4, W/4) code map in the smallest integer dtype that holds K, the
image names (relative to the folder they were found in), the model's config and a
fingerprint of its codebook (see :mod:`jaxbasics.train.codes`); ``decode.py`` turns them back
into images. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from common import add_model_args, fail, load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, help="the .npz file to write")
    add_model_args(parser, images=True)
    args = parser.parse_args(argv)

    from jaxbasics.train.codes import (
        find_images,
        model_fns,
        read_inputs,
        run_batched,
        to_model_input,
        write_codes,
    )

    loaded = load_model(args.model, args.step)
    try:
        images = find_images(args.inputs)
        pixels = read_inputs(images, resize=args.resize, center_crop=args.center_crop)
    except (OSError, ValueError) as e:
        return fail(e)
    fns = model_fns(loaded.model)
    codes = run_batched(
        fns.encode, [to_model_input(p) for p in pixels], progress=len(images) > 32, desc="encode"
    )
    path = write_codes(args.out, [i.name for i in images], codes, loaded.model, loaded.config)
    shapes = sorted({tuple(c.shape) for c in codes})
    summary = {
        "images": len(images),
        "code_shapes": [list(s) for s in shapes],
        "num_embeddings": loaded.config.num_embeddings,
        "out": str(path),
        "bytes": path.stat().st_size,
        "model_step": loaded.step,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
