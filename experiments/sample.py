"""Generate new images: sample code maps from a trained prior, decode them with its VQ-VAE.

  python experiments/sample.py --out samples/                      # the quickstart's prior
  python experiments/sample.py --prior runs/prior-cifar10 --model runs/cifar10 \\
      --num 64 --class cat --guidance 2 --seed 1 --out cats/

Writes ``OUT/grid.png`` (all samples, 8 a row), ``OUT/samples/sample_000.png``... (one PNG
per sample), ``OUT/labels.json`` (each sample's class, for judge.py) and ``OUT/codes.npz``,
the sampled code maps in encode.py's format:
``decode.py OUT/codes.npz --model MODEL --out DIR`` gives the same PNGs, bit for bit. The
same seed (and options) gives the same samples. Prints one JSON summary line.

Sampling options: ``--temperature`` divides the logits (below 1: safer, less varied);
``--top-k`` draws from the k likeliest codes only; ``--class`` conditions on a class the prior
was trained with; ``--all-classes`` cycles through all of them (sample i has class i mod C: a
class-balanced set, as FID against a balanced test split wants); ``--guidance G`` (with either)
pushes the class's logits away from the unconditional ones: ``cond + G * (cond - uncond)``
(classifier-free guidance; 0 = none). A masked prior (``train_prior.py --prior maskgit``)
fills each map in ``--steps`` parallel steps (default 10); the others draw one code per step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import numpy as np

from common import HelpFormatter, fail
from jaxbasics import plots
from jaxbasics.data.transforms import to_pixels
from jaxbasics.prior import sample
from jaxbasics.prior.maskgit import DEFAULT_STEPS
from jaxbasics.tasks.prior.data import vqvae_of
from jaxbasics.tasks.prior.trained import load_prior
from jaxbasics.tasks.vqvae.apply import CODE_BUDGET, model_fns, run_batched
from jaxbasics.tasks.vqvae.codes import write_codes
from jaxbasics.train.files import check_out, save_figure, save_png, write_atomic
from jaxbasics.train.workdir import WorkdirInUseError, hold

# The most samples one run draws: all are sampled at once, ~140 kB of memory each.
MAX_NUM = 10_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--prior", default="runs/prior-quickstart", help="a prior's training workdir")
    p.add_argument(
        "--model",
        default=None,
        help="the VQ-VAE that decodes (a workdir or export); default: the one the prior was "
        "trained on",
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--num", type=int, default=64, help="how many images")
    classes = p.add_mutually_exclusive_group()
    classes.add_argument("--class", dest="class_name", default=None, help="a class name")
    classes.add_argument(
        "--all-classes",
        action="store_true",
        help="sample i gets class i mod C, all the prior's C classes in turn (class-balanced)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; 1 samples the prior")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest codes")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance, >= 0")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="a masked prior's parallel decoding steps (default 10); autoregressive priors "
        "draw one code per step and take no --steps",
    )
    p.add_argument("--seed", type=int, default=0, help="the samples' PRNG seed")
    p.add_argument("--step", type=int, default=None, help="the prior's checkpoint step")
    return p.parse_args(argv)


def class_labels(args: argparse.Namespace, loaded_prior) -> np.ndarray | None:
    """The ``(num,)`` labels of ``--class`` or ``--all-classes``; None without either.
    One-line errors for a class the prior does not know, or a prior trained without classes."""
    if args.class_name is None and not args.all_classes:
        return None
    flag = "--all-classes" if args.all_classes else f"--class {args.class_name}"
    classes = loaded_prior.codes["class_names"] if loaded_prior.prior.num_classes else []
    if not classes:
        raise ValueError(
            f"{flag}: this prior was trained without class labels; leave {flag.split()[0]} out."
        )
    if args.all_classes:
        return np.arange(args.num) % len(classes)
    if args.class_name not in classes:
        raise ValueError(
            f"--class {args.class_name!r} is not one of the prior's classes: {classes}."
        )
    return np.full(args.num, classes.index(args.class_name))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        if not 1 <= args.num <= MAX_NUM:
            more = "; for more, run again with another --seed and --out" if args.num > 1 else ""
            raise ValueError(
                f"--num must be in [1, {MAX_NUM}] (one run samples them all at once in memory), "
                f"got {args.num}{more}."
            )
        if not -(2**63) <= args.seed < 2**63:
            raise ValueError(f"--seed must fit in 64 bits, got {args.seed}.")
        if args.guidance and args.class_name is None and not args.all_classes:
            raise ValueError(
                "--guidance needs --class NAME or --all-classes: it steers samples towards a class."
            )
        loaded_prior = load_prior(args.prior, args.step)
        model_path = args.model or loaded_prior.config.model
        if not args.model and not os.path.exists(model_path):
            raise FileNotFoundError(
                f"the VQ-VAE {args.prior} was trained on, {model_path} (as its config.json "
                "names it), does not exist here; pass --model with its workdir or export."
            )
        labels = class_labels(args, loaded_prior)
        if args.steps is not None and loaded_prior.config.prior != "maskgit":
            raise ValueError(
                f"--steps is for a masked prior (train_prior.py --prior maskgit); {args.prior} "
                f"is a {loaded_prior.config.prior}, which draws one code per step: leave "
                "--steps out."
            )
        names = [f"sample_{i:03d}" for i in range(args.num)]
        check_targets(out, [args.prior, model_path], names)  # before --out is made
        loaded, _ = vqvae_of(model_path, args.prior, [loaded_prior.codes["codebook_sha256"]])
        # One writer per --out: a second sample.py would mix its files with this one's. The
        # checks run again once it is held: another may have written there meanwhile.
        with hold(out, "--out", "sample.py"):
            check_targets(out, [args.prior, model_path], names)
            return generate(args, out, loaded_prior, loaded, labels, names)
    except (OSError, ValueError, WorkdirInUseError) as e:
        return fail(e)


def check_targets(out: Path, inputs: list, names: list[str]) -> None:
    """Refuse an ``out`` that would overwrite a file this run did not make, or that holds
    samples this run would not replace (its codes.npz and grid would not match them)."""
    files = ["codes.npz", "grid.png", "labels.json", *(f"samples/{n}.png" for n in names)]
    check_out(out, inputs, files)
    stale = sorted(
        {p.name for p in (out / "samples").glob("sample_*.png")} - {f"{n}.png" for n in names}
    )
    if stale:
        raise FileExistsError(
            f"{out / 'samples'} holds {len(stale)} samples this run would not replace "
            f"({stale[0]}...): its codes.npz and grid would not match them. Pass an empty "
            "--out, or delete them."
        )


def generate(args, out: Path, loaded_prior, loaded, labels, names: list[str]) -> int:
    """Sample, decode with ``loaded`` (the VQ-VAE) and write everything under ``out``; print
    the summary line. Returns 0."""
    codes = sample(
        loaded_prior.prior,
        args.num,
        jax.random.key(args.seed),
        labels=labels,
        temperature=args.temperature,
        top_k=args.top_k,
        guidance=args.guidance,
        steps=args.steps,
        allowed=loaded.model.allowed_codes(loaded_prior.prior.height, loaded_prior.prior.width),
    )
    maps = list(np.asarray(codes))
    write_codes(out / "codes.npz", names, maps, loaded.model, loaded.config)
    fns = model_fns(loaded.model)
    # Decoded exactly as decode.py decodes codes.npz, so its PNGs are these, bit for bit.
    images = run_batched(fns.decode, maps, budget=CODE_BUDGET, progress=args.num > 32)
    for name, image in zip(names, images, strict=True):
        save_png(out / "samples" / f"{name}.png", to_pixels(image))
    class_names = loaded_prior.codes["class_names"]
    classes = [None] * args.num if labels is None else [class_names[c] for c in labels]
    record = {"class_names": class_names, "names": names, "classes": classes}
    write_atomic(out / "labels.json", json.dumps(record))
    rows = [np.stack(images[i : i + 8]) for i in range(0, len(images), 8)]
    save_figure(plots.image_grid(rows), out / "grid.png")
    summary = {"images": args.num, "out": str(out), "prior_step": loaded_prior.step}
    which = "all" if args.all_classes else args.class_name
    summary |= {"class": which, "guidance": args.guidance, "seed": args.seed}
    steps = args.steps or (DEFAULT_STEPS if loaded_prior.config.prior == "maskgit" else None)
    summary |= {"temperature": args.temperature, "top_k": args.top_k, "steps": steps}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
