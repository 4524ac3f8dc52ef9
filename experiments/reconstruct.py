"""Reconstruct your own images with a trained VQ-VAE: originals over reconstructions.

  python experiments/reconstruct.py photos/ more.jpg --model runs/quickstart --out recon/

Each image (PNG, JPEG... given directly or found under a folder) is encoded to codes and
decoded back; the reconstruction is exactly what ``decode.py`` makes of ``encode.py``'s codes.
Writes ``<out>/<name>.png`` (each reconstruction), ``<out>/grids/grid_<i>.png`` (originals
over reconstructions, 16 per grid) and ``<out>/recon_errors.jsonl`` (each image's
``mse / data_variance``, the notes' recon error), and prints one JSON summary line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from common import image_args, model_and_images
from jaxbasics.data.transforms import to_pixels
from jaxbasics.tasks.vqvae.apply import CODE_BUDGET, PIXEL_BUDGET, batches, run_batched
from jaxbasics.train.files import output_names, save_png

GRID = 16
ERRORS = "recon_errors.jsonl"


def _grid(i: int) -> str:
    return f"grids/grid_{i:03d}.png"


def png_names(images: list) -> list[str]:
    """Each image's reconstruction under --out, kept apart from the grids and the errors file
    (n images make at most n grids)."""
    taken = [ERRORS, *map(_grid, range(len(images)))]
    return output_names([i.name for i in images], taken=taken)


def outputs(images: list) -> list[str]:
    """Every file this script may write under --out, for ``check_out``."""
    return [*png_names(images), ERRORS, *map(_grid, range(len(images)))]


def save_grids(out: Path, originals: list[np.ndarray], recons: list[np.ndarray]) -> int:
    """Originals over reconstructions, up to GRID same-sized pairs per PNG; returns the count."""
    count = 0
    for members in batches([x.shape for x in originals], GRID):
        top = np.concatenate([originals[i] for i in members], axis=1)
        bottom = np.concatenate([recons[i] for i in members], axis=1)
        save_png(out / _grid(count), np.concatenate([top, bottom], axis=0))
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    args = image_args(__doc__, "output folder", argv)
    loaded, fns, images, pixels, x = model_and_images(args, outputs)
    many = len(images) > 32
    codes = run_batched(fns.encode, x, budget=PIXEL_BUDGET, progress=many, desc="encode")
    recons = run_batched(fns.decode, codes, budget=CODE_BUDGET, progress=many, desc="decode")
    out = Path(args.out)
    errors = []
    out.mkdir(parents=True, exist_ok=True)
    with (out / ERRORS).open("w") as f:
        for image, name, xi, ri in zip(images, png_names(images), x, recons, strict=True):
            error = float(np.mean((ri - xi) ** 2) / loaded.data_variance)
            errors.append(error)
            f.write(json.dumps({"name": image.name, "png": name, "recon_error": error}) + "\n")
            save_png(out / name, to_pixels(ri))
    grids = save_grids(out, pixels, [to_pixels(r) for r in recons])
    summary = {
        "images": len(images),
        "mean_recon_error": float(np.mean(errors)),
        "grids": grids,
        "out": str(out),
        "model_step": loaded.step,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
