"""Train a prior over a trained VQ-VAE's code maps: stage two.

  python experiments/train_prior.py          # the quickstart prior on runs/quickstart's VQ-VAE
  python experiments/train_prior.py --model RUN_OR_EXPORT --workdir runs/prior
  python experiments/train_prior.py --codes codes.npz     # your code maps, from encode.py
  python experiments/train_prior.py --prior pixelcnn      # the VQ-VAE paper's gated PixelCNN
  python experiments/train_prior.py --preset shapes-palette   # on runs/shapes-palette's codes

The prior models the code maps of ``--model``'s VQ-VAE (a train_vqvae.py workdir, or a file
from export.py): the codes of its own train and test images, encoded once and cached in
``--workdir``, or the maps in ``--codes``. Every PriorConfig field is a flag (``num_layers``
-> ``--num-layers``); ``--preset`` picks their starting values (quickstart, shapes-palette or
cifar10). Rerunning the same command resumes from the latest checkpoint in ``--workdir``: an
existing run keeps its saved config (if config.json is lost, the one saved with the newest
checkpoint), and a flag you give that contradicts it is refused. A workdir belongs to one
run at a time: a second run on it stops at once, naming the first. Exit codes: 0 done, 1
error (the message says what to do), 2 bad flags, 128+N stopped by signal N (checkpoint
saved; rerun to resume).
"""

from __future__ import annotations

import sys

import early_stop  # noqa: F401  (first: a stop while the libraries load ends it at once)
from jaxbasics.tasks.prior.config import PRESETS
from jaxbasics.train import cli

SCRIPT = cli.Script(
    presets=PRESETS,
    description=__doc__,
    preset_help="starting values of every field: quickstart (a small transformer on "
    "runs/quickstart's codes, ~2.5 minutes on 2 CPU cores), shapes-palette (the same on "
    "runs/shapes-palette's codes) or cifar10 (for the cifar10 VQ-VAE preset's codes, "
    "runs/cifar10)",
    workdir="runs/prior-{preset}",
    wrote="samples.png, curves.png, prior_codes.npz (the cached codes), metrics.jsonl, "
    "eval.jsonl and checkpoints/",
)

if __name__ == "__main__":
    sys.exit(cli.main(SCRIPT))
