"""Evaluate a run's latest checkpoint on the whole test split of its dataset.

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

    from jaxbasics.train.config import load_config

    config = load_config(workdir)
    if config is None:
        print(
            f"error: {workdir}/config.json not found; is {workdir} a train_vqvae.py workdir?",
            file=sys.stderr,
        )
        return 1
    if args.data_dir:
        config = config.replace(data_dir=args.data_dir)

    from jaxbasics import plots
    from jaxbasics.data.sources import DatasetNotFoundError
    from jaxbasics.train.checkpoint import Checkpointer
    from jaxbasics.train.loop import (
        abstract_train_state,
        data_variance,
        evaluate,
        mesh_and_shardings,
        sources,
    )
    from jaxbasics.train.state import codebook_of

    try:
        train_source, test_source = sources(config)
    except DatasetNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    variance = data_variance(config, train_source, workdir)
    _, batch_sharding, replicated = mesh_and_shardings(config.batch_size)
    abstract = abstract_train_state(config, replicated)
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints)
    restored = ckpt.restore_latest(abstract)
    ckpt.close()
    if restored is None:
        print(f"error: no readable checkpoint under {workdir}/checkpoints", file=sys.stderr)
        return 1
    metrics, (originals, recons), counts = evaluate(
        config, restored.state, test_source, variance, sharding=batch_sharding
    )
    out = Path(args.out) if args.out else workdir / "eval_reconstructions.png"
    n = min(16, originals.shape[0])
    plots.save(plots.image_grid([originals[:n], recons[:n]], ["originals", "reconstructions"]), out)
    plots.save(
        plots.codebook_figure(np.asarray(codebook_of(restored.state)), counts),
        workdir / "codebook.png",
    )
    print(json.dumps({"step": restored.step, **metrics, "num_examples": len(test_source)}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
