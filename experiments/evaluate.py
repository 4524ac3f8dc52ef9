"""Evaluate a run's newest readable checkpoint on the whole test split of its dataset.

  python experiments/evaluate.py --workdir runs/quickstart

Prints one JSON line (``step``, ``recon_error``, ``perplexity``, ``split_perplexity``,
``used_codes``, ``usage_entropy`` in bits) and writes ``<workdir>/eval_reconstructions.png``
(originals over reconstructions) and ``<workdir>/codebook.png`` (test-split code usage,
sorted, and a PCA map of the codebook coloured by usage). The run's ``config.json``
supplies the model and the dataset; ``--data-dir`` points at the data if it moved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from common import fail
from jaxbasics.data.base import DatasetNotFoundError
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.data import sources
from jaxbasics.tasks.vqvae.evaluate import evaluate, save_figures
from jaxbasics.tasks.vqvae.train import VQVAETask, codebook_of, make_eval_step, structure
from jaxbasics.train.saved import read_run, saved_config
from jaxbasics.train.sharding import make_shardings, placed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", required=True, help="a run directory of train_vqvae.py")
    parser.add_argument("--data-dir", default=None, help="override the run's --data-dir")
    parser.add_argument(
        "--out",
        default=None,
        help="reconstruction grid path (default <workdir>/eval_reconstructions.png)",
    )
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    try:
        config = saved_config(workdir, VQVAEConfig).config  # config.json, else a checkpoint's
    except ValueError as e:  # a damaged config.json
        return fail(e)
    if config is None:
        return fail(
            FileNotFoundError(
                f"{workdir}/config.json not found; is {workdir} a train_vqvae.py workdir?"
            )
        )
    if args.data_dir:
        config = config.replace(data_dir=args.data_dir)
    try:
        data = sources(config, workdir, load_train=False)
    except DatasetNotFoundError as e:
        return fail(e)
    shardings = make_shardings(config.batch_size)
    try:
        run = read_run(
            workdir,
            VQVAEConfig,
            lambda saved, meta: placed(structure(saved).abstract, shardings.replicated),
            items=("state",),
            migratable=VQVAETask.migratable,
        )
    except (OSError, ValueError) as e:  # none, none readable, another version's, edited
        return fail(e)
    ev = evaluate(
        make_eval_step(config),
        run.state,
        data.test,
        data.variance,
        config.batch_size,
        sharding=shardings.batch,
    )
    out = Path(args.out) if args.out else workdir / "eval_reconstructions.png"
    save_figures(ev, np.asarray(codebook_of(config, run.state)), out, workdir / "codebook.png")
    print(json.dumps({"step": run.step, **ev.metrics, "num_examples": len(data.test)}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
