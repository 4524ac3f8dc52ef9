"""Does each generated image show its class? A held-out classifier's verdict.

  python experiments/judge.py --samples samples/ --model runs/quickstart
  python experiments/judge.py --dataset folder --data-dir cifar10/ --samples s_g0/ s_g2/

A small classifier (``jaxbasics.judge``) is trained on the dataset's real *training* images
once and kept in ``--judge`` (default ``runs/judge-DATASET``; later runs load it). It then
reports, as one JSON line:

* ``real``: its accuracy on ``--num-test`` real test images, drawn across the split with a
  fixed seed (the same on every run; a class-sorted folder's first ones are one class);
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

import numpy as np

from common import HelpFormatter, fail, subset
from jaxbasics import judge as J
from jaxbasics.data.cifar10 import CIFAR10_CLASSES
from jaxbasics.data.images import find_images, read_image
from jaxbasics.data.shapes import SHAPES_CLASSES
from jaxbasics.data.sources import DATASETS, get_source, read_batch
from jaxbasics.data.transforms import to_model_input, to_pixels
from jaxbasics.tasks.vqvae import load
from jaxbasics.tasks.vqvae.apply import model_fns
from jaxbasics.train.files import check_out, write_atomic
from jaxbasics.train.workdir import WorkdirInUseError, hold

# How a new judge is trained when --steps, --num-train and --seed are not given.
TRAINING = {"steps": 6000, "train_images": None, "seed": 0}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="shapes", choices=DATASETS, help="the real images")
    p.add_argument("--data-dir", default=None, help="cifar10 or folder: where the images are")
    p.add_argument("--judge", default=None, help="the judge's folder (default runs/judge-DATASET)")
    p.add_argument("--samples", nargs="*", default=[], help="sample folders to judge")
    p.add_argument("--model", default=None, help="a VQ-VAE: also judge its reconstructions")
    p.add_argument("--num-test", type=positive, default=1000, help="real test images judged")
    training = p.add_argument_group(
        "training a new judge (a saved judge is used as it is; a value given here that "
        "contradicts it is refused)"
    )
    training.add_argument("--steps", type=positive, default=None, help="default 6000")
    training.add_argument("--num-train", type=positive, default=None, help="default: all")
    training.add_argument("--seed", type=int, default=None, help="default 0")
    return p.parse_args(argv)


def class_names(args: argparse.Namespace, src) -> list[str]:
    """The dataset's class names, in label order."""
    if args.dataset == "shapes":
        return list(SHAPES_CLASSES)
    return list(CIFAR10_CLASSES if args.dataset == "cifar10" else src.classes)


def asked(args: argparse.Namespace) -> dict:
    """The training settings given on the command line."""
    given = {"steps": args.steps, "train_images": args.num_train, "seed": args.seed}
    return {k: v for k, v in given.items() if v is not None}


def read_judge(folder: Path, want: dict, args: argparse.Namespace) -> tuple[J.Judge, dict]:
    """The saved judge in ``folder``, refused in one line if damaged or of other data or
    training settings than asked for."""
    judge, meta = J.load_judge(folder)
    other = [k for k in want if meta.get(k) != want[k]]
    other += [k for k, v in asked(args).items() if meta.get(k) != v]
    if other:
        saved = ", ".join(f"{k}={meta.get(k)!r}" for k in other)
        raise ValueError(
            f"{folder} holds a judge of other {'/'.join(other)} ({saved}); pass another "
            "--judge, or leave out the training flags to use this one."
        )
    return judge, meta


def get_judge(args: argparse.Namespace, names: list[str]) -> tuple[J.Judge, dict]:
    """The judge in ``--judge``, or a new one trained on the train split and saved there
    (one judge.py at a time per folder: the second waits for nothing, it stops)."""
    folder = Path(args.judge or f"runs/judge-{args.dataset}")
    want = {"dataset": args.dataset, "data_dir": args.data_dir, "classes": names}
    if not (folder / J.META).exists():  # written last: a folder without it holds no judge
        check_out(folder, [], [J.META, J.WEIGHTS])
    with hold(folder, "--judge", "judge.py"):
        if (folder / J.META).exists():
            return read_judge(folder, want, args)
        settings = TRAINING | asked(args)
        train = get_source(
            args.dataset, "train", data_dir=args.data_dir, num_examples=settings["train_images"]
        )
        batch = read_batch(train, np.arange(len(train)))
        judge = J.train_judge(
            batch["image"],
            batch["label"],
            len(names),
            steps=settings["steps"],
            seed=settings["seed"],
            progress=True,
        )
        files = J.judge_files(judge, want | settings | {"train_images": len(train)})
        for name, content in files.items():  # the settings last
            write_atomic(folder / name, content)
        return judge, json.loads(files[J.META])  # the settings as saved, as a rerun reads them


def _labelled(path: Path, names: list[str]) -> tuple[list[Path], list[int]]:
    """The files and classes a sample.py ``labels.json`` names, checked."""
    try:
        record = json.loads((path / "labels.json").read_text())
        files, classes = list(record["names"]), list(record["classes"])
        if not files or len(files) != len(classes) or not all(isinstance(f, str) for f in files):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"{path / 'labels.json'} is not sample.py's (equal lists of names and classes); "
            "sample again into a new --out."
        ) from None
    bad = next((f for f in files if Path(f).name != f or f in ("", ".", "..")), None)
    if bad is not None:
        raise ValueError(f"{path / 'labels.json'} names {bad!r}, not a sample in {path}.")
    unknown = [c for c in classes if c not in names]
    if unknown:
        what = "were sampled without a class" if unknown[0] is None else "name other classes"
        raise ValueError(
            f"{path}'s samples {what} ({unknown[0]!r}); the judge knows {names[:3]}...: "
            "sample with --class NAME or --all-classes."
        )
    return [path / "samples" / f"{f}.png" for f in files], [names.index(c) for c in classes]


def sample_folder(path: Path, names: list[str], size: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The images of a sample folder (all of ``size``, the real images') and the class each
    was sampled for."""
    if (path / "labels.json").exists():
        files, labels = _labelled(path, names)
    elif path.is_dir():
        subfolders = sorted(p.name for p in path.iterdir() if p.is_dir())
        stray = [f for f in subfolders if f not in names]
        if stray or not subfolders:
            raise FileNotFoundError(
                f"{path} has no labels.json (from sample.py --class or --all-classes) and "
                + (
                    f"its subfolder {stray[0]!r} is no class the judge knows ({names[0]}, ...)."
                    if stray
                    else f"no subfolder named after a class ({names[0]}, ...)."
                )
            )
        found = [
            (Path(f.path), names.index(c)) for c in subfolders for f in find_images([str(path / c)])
        ]
        files, labels = [f for f, _ in found], [c for _, c in found]
    else:
        raise FileNotFoundError(f"--samples {path} does not exist or is not a folder.")
    images = [read_image(f) for f in files]
    wrong = next((f for f, x in zip(files, images, strict=True) if x.shape != size), None)
    if wrong is not None or not images:
        got = "no images" if wrong is None else f"{wrong}, of another size"
        raise ValueError(f"{path} holds {got}; the judge takes {size[1]}x{size[0]} images.")
    return np.stack(images), np.array(labels)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        test = get_source(args.dataset, "test", data_dir=args.data_dir)
        names = class_names(args, test)
        real = read_batch(test, subset(len(test), args.num_test, seed=0))
        size = real["image"].shape[1:]
        samples = {f: sample_folder(Path(f), names, size) for f in args.samples}  # checked first
        judge, meta = get_judge(args, names)
        report = {"judge": {k: meta[k] for k in TRAINING}}
        report["real"] = J.accuracy(judge, real["image"], real["label"])
        if args.model:
            fns = model_fns(load(args.model).model)
            codes = np.asarray(fns.encode(to_model_input(real["image"])))
            recon = to_pixels(np.asarray(fns.decode(codes)))
            report["reconstructions"] = J.accuracy(judge, recon, real["label"])
            report["reconstructions_per_class"] = per_class(judge, recon, real["label"], names)
        for folder, (images, labels) in samples.items():
            report[folder] = {
                "accuracy": J.accuracy(judge, images, labels),
                "num": len(images),
                "per_class": per_class(judge, images, labels, names),
            }
        print(json.dumps(report))
        return 0
    except (OSError, ValueError, WorkdirInUseError) as e:
        return fail(e)


def per_class(judge, images, labels, names) -> dict[str, float]:
    got = J.per_class_accuracy(judge, images, labels)
    return {names[c]: round(a, 3) for c, a in got.items()}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
