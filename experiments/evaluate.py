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

    from jaxbasics.train.workdir import saved_config

    try:
        config = saved_config(workdir).config  # config.json, or if it is lost the checkpoint's
    except ValueError as e:  # a damaged config.json
        print(f"error: {e}", file=sys.stderr)
        return 1
    if config is None:
        print(
            f"error: {workdir}/config.json not found; is {workdir} a train_vqvae.py workdir?",
            file=sys.stderr,
        )
        return 1
    if args.data_dir:
        config = config.replace(data_dir=args.data_dir)

    from jaxbasics.data.sources import DatasetNotFoundError
    from jaxbasics.train.checkpoint import read
    from jaxbasics.train.data import sources
    from jaxbasics.train.evaluate import evaluate, save_figures
    from jaxbasics.train.sharding import abstract_state, make_shardings
    from jaxbasics.train.state import codebook_of
    from jaxbasics.train.workdir import written_with

    try:
        data = sources(config, workdir, load_train=False)
    except DatasetNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shardings = make_shardings(config.batch_size)
    try:
        restored = read(
            workdir,
            written_with(config, abstract_state(config, shardings.replicated), workdir),
            keep=config.keep_checkpoints,
            items=("state",),
        )
    except (OSError, ValueError) as e:  # none, none readable, another version's, edited
        print(f"error: {e}", file=sys.stderr)
        return 1
    ev = evaluate(config, restored.state, data.test, data.variance, sharding=shardings.batch)
    out = Path(args.out) if args.out else workdir / "eval_reconstructions.png"
    save_figures(ev, np.asarray(codebook_of(config, restored.state)), out, workdir / "codebook.png")
    print(json.dumps({"step": restored.step, **ev.metrics, "num_examples": len(data.test)}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
