"""How fast a folder of images decodes, to compare with training's images_per_s.

Times, for ``--dataset folder`` at each ``--image-size``: one thread decoding batches
(``FolderSource.read_batch``), the training pipeline decoding in 1 and 2 reader threads
(``train_dataset(..., num_threads=n)``, nothing else running), and reading the split into
memory once (``in_memory``). Without ``--data-dir`` it first writes ``--count`` synthetic
photo-like JPEGs (smooth colour fields plus noise, quality 90) of ``--source-size`` pixels.
Prints one JSON line per image size::

    python experiments/decode_benchmark.py --source-size 256 --image-size 32,64
    python experiments/decode_benchmark.py --data-dir ~/photos --image-size 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxbasics.data.folder import folder
from jaxbasics.data.pipeline import train_dataset
from jaxbasics.data.sources import in_memory


def write_photos(root: Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` synthetic size x size JPEGs in a flat folder: smooth gradients plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    for i in range(count):
        f = rng.uniform(2, 9, 3)
        base = np.stack([np.sin(f[0] * x + i), np.cos(f[1] * y - i), np.sin(f[2] * x * y)], -1)
        noise = rng.normal(0, 12, (size, size, 3))
        img = (base * 90 + 128 + noise).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i:06}.jpg", quality=90)


def images_per_s(fn, images: int) -> float:
    t0 = time.perf_counter()
    fn()
    return images / (time.perf_counter() - t0)


def measure(data_dir: Path, image_size: int, batch: int, batches: int) -> dict:
    source = folder(data_dir, "train", image_size=image_size)
    n = min(batches, len(source) // batch)
    out = {"image_size": image_size, "files": len(source), "batch": batch}
    out["read_batch_1_thread"] = images_per_s(
        lambda: [source.read_batch(np.arange(k * batch, (k + 1) * batch)) for k in range(n)],
        n * batch,
    )
    for threads in (1, 2):
        it = iter(train_dataset(source, batch_size=batch, seed=0, num_threads=threads))
        out[f"pipeline_{threads}_threads"] = images_per_s(
            lambda it=it: [next(it) for _ in range(n)], n * batch
        )
        it.close()
    out["in_memory"] = images_per_s(lambda: in_memory(source), len(source))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", type=Path, default=None, help="a folder of images to time")
    p.add_argument("--count", type=int, default=2000, help="synthetic images to write")
    p.add_argument("--source-size", type=int, default=256, help="side of the synthetic images")
    p.add_argument("--image-size", default="32,64", help='sides to decode to, e.g. "32,64"')
    p.add_argument("--batch", type=int, default=32, help="batch size")
    p.add_argument("--batches", type=int, default=40, help="batches timed per measurement")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(tmp)
            write_photos(data_dir, args.count, args.source_size)
        for size in (int(s) for s in args.image_size.split(",")):
            line = {"source_size": args.source_size if args.data_dir is None else None}
            line |= measure(data_dir, size, args.batch, args.batches)
            print(
                json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in line.items()})
            )


if __name__ == "__main__":
    main()
