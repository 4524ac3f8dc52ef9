"""Train the VQ-VAE: the main job.

  python experiments/train_vqvae.py                       # the quickstart: embedded data, ~90 s
  python experiments/train_vqvae.py --preset cifar10 --data-dir ~/tensorflow_datasets
  python experiments/train_vqvae.py --preset cifar10 --help   # that preset's values
  python experiments/train_vqvae.py --quantizer fsq --fsq-levels 8,5,5,5 --workdir runs/fsq
  python experiments/train_vqvae.py --preset cifar10-sharp --data-dir DIR  # + discriminator, LPIPS
  python experiments/train_vqvae.py --preset shapes-palette   # a palette tokenizer, for generation

Every VQVAEConfig field is a flag (``batch_size`` -> ``--batch-size``); ``--preset`` picks
their starting values (quickstart, shapes-palette, cifar10, cifar10-sharp or notes) and
``--faithful`` turns off what the defaults change from the notes. Rerunning the same command
resumes from the latest checkpoint in ``--workdir``: an existing run keeps its saved config (if
config.json is lost, the one saved with the newest checkpoint), and a flag you give that
contradicts it is refused. A workdir belongs to one run at a time: a second run on it stops at
once, naming the first. Exit codes: 0 done, 1 error (the message says what to do), 2 bad flags,
128+N stopped by signal N (checkpoint saved; rerun to resume).
"""

from __future__ import annotations

import sys

import early_stop  # noqa: F401  (first: a stop while the libraries load ends it at once)
from jaxbasics.tasks.vqvae.presets import FAITHFUL, PRESETS
from jaxbasics.train import cli

SCRIPT = cli.Script(
    presets=PRESETS,
    description=__doc__,
    preset_help="starting values of every field: quickstart (embedded data, small model, "
    "~90 s on 2 CPU cores), shapes-palette (the quickstart as a palette tokenizer: 125 "
    "colour-blind structure codes and 5 colours per image, for the prior; ~100 s), "
    "cifar10 (the notes' setting on real CIFAR-10, remedies on), cifar10-sharp (cifar10 "
    "trained VQGAN-style: a discriminator and LPIPS; needs the lpips extra) or notes (the "
    "notes exactly)",
    workdir="runs/{preset}",
    wrote="curves.png, reconstructions.png, codebook.png, metrics.jsonl, eval.jsonl and "
    "checkpoints/",
    faithful=(
        "reproduce the notes' quantiser exactly: their EMA init, straight-through, a constant "
        "learning rate, no dead-code restart or k-means init",
        FAITHFUL,
    ),
)

if __name__ == "__main__":
    sys.exit(cli.main(SCRIPT))
