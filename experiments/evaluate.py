"""Evaluate a run's newest readable checkpoint on the whole test split of its dataset.

  python experiments/evaluate.py --workdir runs/quickstart

Prints one JSON line (``step``, ``recon_error``, ``perplexity``, ``split_perplexity``,
``used_codes``, ``usage_entropy`` in bits) and writes ``<workdir>/eval_reconstructions.png``
(originals over reconstructions) and ``<workdir>/eval_codebook.png`` (test-split code usage,
sorted, and a PCA map of the codebook coloured by usage; training's own ``codebook.png`` is
left alone), or both where ``--out`` says. The
JSON line comes first: a workdir that cannot be written (read-only) loses no result, and the
figures it cannot take are one line of error. The run's ``config.json`` supplies the model and
the dataset; ``--data-dir`` points at the data if it moved. Like every script's ``--out``,
the one given here is never written over; evaluate.py's own files in the workdir are replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from common import HelpFormatter, fail
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.data import sources
from jaxbasics.tasks.vqvae.evaluate import evaluate, save_figures
from jaxbasics.tasks.vqvae.train import VQVAETask, codebook_of, make_eval_step, structure
from jaxbasics.train.files import check_out
from jaxbasics.train.saved import read_run, saved_config
from jaxbasics.train.sharding import make_shardings, placed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--workdir", required=True, help="a run directory of train_vqvae.py")
    parser.add_argument("--data-dir", default=None, help="override the run's --data-dir")
    parser.add_argument(
        "--out",
        default=None,
        help="the reconstruction grid's path; eval_codebook.png goes beside it (default: "
        "<workdir>/eval_reconstructions.png and <workdir>/eval_codebook.png)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir)
    out = Path(args.out) if args.out else workdir / "eval_reconstructions.png"
    figures = [out, out.parent / "eval_codebook.png"]
    try:
        for figure in figures if args.out else ():  # the workdir's own figures are evaluate's
            check_out(figure, [workdir])
        # config.json, else a checkpoint's; evaluate.py starts no run (starts=False)
        config = saved_config(workdir, VQVAEConfig, starts=False).config
        if config is None:
            raise FileNotFoundError(
                f"{workdir}/config.json not found; is {workdir} a train_vqvae.py workdir?"
            )
        config = config.replace(data_dir=args.data_dir) if args.data_dir else config
        data = sources(config, workdir, load_train=False)  # DatasetNotFoundError: an OSError
        shardings = make_shardings(config.batch_size)
        run = read_run(
            workdir,
            VQVAEConfig,
            lambda saved, meta: placed(structure(saved).abstract, shardings.replicated),
            items=("state",),
            migratable=VQVAETask.migratable,
        )
    except (OSError, ValueError) as e:  # damaged, none readable, another version's, edited
        return fail(e)
    step = make_eval_step(config)
    ev = evaluate(
        step, run.state, data.test, data.variance, config.batch_size, sharding=shardings.batch
    )
    # The result first: a workdir that cannot be written (read-only) loses no evaluation.
    print(json.dumps({"step": run.step, **ev.metrics, "num_examples": len(data.test)}), flush=True)
    try:
        save_figures(ev, np.asarray(codebook_of(config, run.state)), *figures)
    except OSError as e:
        message = f"the figures could not be written ({e}); the evaluation is above. Pass "
        return fail(OSError(message + "--out FILE.png in a folder you can write."))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
