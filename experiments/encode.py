"""Encode your own images to VQ-VAE code maps: ``codes.npz``.

  python experiments/encode.py photos/ --model runs/quickstart --out codes.npz

Stores every image's (H/4, W/4) code map in the smallest integer dtype that holds K, the
image names (relative to the folder they were found in), the model's config and a
fingerprint of its codebook (see :mod:`jaxbasics.tasks.vqvae.codes`); ``decode.py`` turns them back
into images. Prints one JSON summary line.
"""

from __future__ import annotations

import json
import os
import sys

from common import fail, image_args, model_and_images
from jaxbasics.tasks.vqvae.apply import PIXEL_BUDGET, run_batched
from jaxbasics.tasks.vqvae.codes import write_codes


def main(argv: list[str] | None = None) -> int:
    args = image_args(__doc__, "the .npz file to write", argv)
    loaded, fns, images, _, x = model_and_images(args)
    codes = run_batched(
        fns.encode, x, budget=PIXEL_BUDGET, progress=len(images) > 32, desc="encode"
    )
    names = [i.name for i in images]
    try:
        path = write_codes(args.out, names, codes, loaded.model, loaded.config)
    except OSError as e:
        return fail(e)
    shapes = sorted({tuple(c.shape) for c in codes})
    summary = {
        "images": len(images),
        "code_shapes": [list(s) for s in shapes],
        "num_embeddings": loaded.config.num_embeddings,
        "num_codes": loaded.config.num_codes,
        "out": str(path),
        "bytes": path.stat().st_size,
        "model_step": loaded.step,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
