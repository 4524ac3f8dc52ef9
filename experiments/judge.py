"""Does each generated image show its class? A held-out classifier's verdict.

  python experiments/judge.py --samples samples/ --model runs/quickstart
  python experiments/judge.py --dataset folder --data-dir cifar10/ --samples s_g0/ s_g2/

A small classifier (``jaxbasics.judge``) is trained on the dataset's real *training* images
once and kept in ``--judge`` (default ``runs/judge-DATASET``; later runs load it). It then
reports, as one JSON line:

* ``real``: its accuracy on the first ``--num-test`` real test images (its own skill);
* ``reconstructions``: on the VQ-VAE ``--model``'s reconstructions of them (the tokenizer's
  ceiling: samples are decoded by the same decoder);
* ``samples``: for each ``--samples`` folder, the share of images it classifies as the class
  they were sampled for, overall and per class. A folder is a ``sample.py --out`` (its
  ``labels.json`` names each sample's class) or an image folder with one subfolder per class.

The judge is never trained on generated images, nor used to tune a generator's training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import flax.serialization
import numpy as np
from flax import nnx

from common import HelpFormatter, fail
from jaxbasics import judge as J
from jaxbasics.data.cifar10 import CIFAR10_CLASSES
from jaxbasics.data.images import find_images, read_image
from jaxbasics.data.shapes import SHAPES_CLASSES
from jaxbasics.data.sources import DATASETS, get_source, read_batch
from jaxbasics.data.transforms import to_model_input, to_pixels
from jaxbasics.tasks.vqvae import load
from jaxbasics.tasks.vqvae.apply import model_fns
from jaxbasics.train.files import write_atomic

# Meta and weights files inside --judge.
META, WEIGHTS = "judge.json", "weights.msgpack"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="shapes", choices=DATASETS, help="the real images")
    p.add_argument("--data-dir", default=None, help="cifar10 or folder: where the images are")
    p.add_argument("--judge", default=None, help="the judge's folder (default runs/judge-DATASET)")
    p.add_argument("--samples", nargs="*", default=[], help="sample folders to judge")
    p.add_argument("--model", default=None, help="a VQ-VAE: also judge its reconstructions")
    p.add_argument("--num-test", type=int, default=1000, help="real test images judged")
    p.add_argument("--steps", type=int, default=6000, help="the judge's training steps")
    p.add_argument("--num-train", type=int, default=None, help="train images (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the judge's seed")
    return p.parse_args(argv)


def source(args: argparse.Namespace, split: str, num: int | None = None):
    return get_source(args.dataset, split, data_dir=args.data_dir, num_examples=num)


def class_names(args: argparse.Namespace, src) -> list[str]:
    """The dataset's class names, in label order."""
    if args.dataset == "shapes":
        return list(SHAPES_CLASSES)
    return list(CIFAR10_CLASSES if args.dataset == "cifar10" else src.classes)


def get_judge(args: argparse.Namespace, names: list[str]) -> tuple[J.Judge, dict]:
    """The judge in ``--judge``, or a new one trained on the train split and saved there."""
    folder = Path(args.judge or f"runs/judge-{args.dataset}")
    want = {"dataset": args.dataset, "data_dir": args.data_dir, "classes": names}
    if (folder / META).exists():
        meta = json.loads((folder / META).read_text())
        if {k: meta.get(k) for k in want} != want:
            raise ValueError(
                f"{folder} holds a judge of other data ({meta.get('dataset')}, "
                f"{meta.get('data_dir')}); pass another --judge for this one."
            )
        judge = J.Judge(len(names), width=meta["width"], rngs=nnx.Rngs(0))
        state = nnx.state(judge)
        saved = (folder / WEIGHTS).read_bytes()
        state.replace_by_pure_dict(flax.serialization.from_bytes(state.to_pure_dict(), saved))
        nnx.update(judge, state)
        judge.eval()
        return judge, meta
    train = source(args, "train", args.num_train)
    batch = read_batch(train, np.arange(len(train)))
    judge = J.train_judge(
        batch["image"],
        batch["label"],
        len(names),
        steps=args.steps,
        seed=args.seed,
        progress=True,
    )
    meta = want | {
        "width": judge.width,
        "steps": args.steps,
        "seed": args.seed,
        "train_images": len(train),
    }
    write_atomic(folder / WEIGHTS, flax.serialization.to_bytes(nnx.state(judge).to_pure_dict()))
    write_atomic(folder / META, json.dumps(meta, indent=1))
    return judge, meta


def sample_folder(path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The images of a sample folder and the class each was sampled for."""
    if (path / "labels.json").exists():
        record = json.loads((path / "labels.json").read_text())
        files = [path / "samples" / f"{n}.png" for n in record["names"]]
        labels = [names.index(c) for c in record["classes"]]
        return np.stack([read_image(f) for f in files]), np.array(labels)
    images, labels = [], []
    for c, name in enumerate(names):
        if (path / name).is_dir():
            found = find_images([str(path / name)])
            images += [read_image(f.path) for f in found]
            labels += [c] * len(found)
    if not images:
        raise FileNotFoundError(
            f"{path} has no labels.json (from sample.py --class or --all-classes) and no "
            f"subfolder named after a class ({names[0]}, ...); nothing to judge."
        )
    return np.stack(images), np.array(labels)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        test = source(args, "test")
        names = class_names(args, test)
        judge, _ = get_judge(args, names)
        real = read_batch(test, np.arange(min(args.num_test, len(test))))
        report = {"real": J.accuracy(judge, real["image"], real["label"])}
        if args.model:
            fns = model_fns(load(args.model).model)
            recon = to_pixels(
                np.asarray(fns.decode(np.asarray(fns.encode(to_model_input(real["image"])))))
            )
            report["reconstructions"] = J.accuracy(judge, recon, real["label"])
            report["reconstructions_per_class"] = per_class(judge, recon, real["label"], names)
        for folder in args.samples:
            images, labels = sample_folder(Path(folder), names)
            report[folder] = {
                "accuracy": J.accuracy(judge, images, labels),
                "num": len(images),
                "per_class": per_class(judge, images, labels, names),
            }
        print(json.dumps(report))
        return 0
    except (OSError, ValueError) as e:
        return fail(e)


def per_class(judge, images, labels, names) -> dict[str, float]:
    got = J.per_class_accuracy(judge, images, labels)
    return {names[c]: round(a, 3) for c, a in got.items()}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
