"""Does keeping the codebook alive help? Four runs, same seeds, data and steps.

  python experiments/codebook_study.py --steps 300 --out runs/codebook_study

Trains the quickstart preset (embedded ``shapes`` data) four ways with
:func:`jaxbasics.train.loop.fit`, each in its own ``<out>/<name>`` workdir:

* ``plain``: the plain VQ quantiser (codebook trained by the VQ loss);
* ``ema``: the EMA quantiser, decay 0.99;
* ``ema_restart``: EMA plus dead-code restart (``--threshold``, usage relative to
  uniform, see :mod:`jaxbasics.vqvae.codebook`);
* ``ema_kmeans``: EMA plus k-means initialisation from the first ``--kmeans-steps``
  batches.

Then prints a Markdown table (test-split recon error, perplexity, used codes, usage
entropy, codes restarted, wall time) and writes it to ``<out>/codebook_study.md``.
Rerunning resumes or reuses finished runs (their workdirs hold checkpoints).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def runs(args: argparse.Namespace) -> dict[str, dict]:
    """The four configurations' overrides of the quickstart preset."""
    ema = {"decay": 0.99}
    return {
        "plain": {"decay": 0.0},
        "ema": ema,
        "ema_restart": {**ema, "dead_code_threshold": args.threshold},
        "ema_kmeans": {**ema, "kmeans_init_steps": args.kmeans_steps},
    }


def table(rows: list[dict]) -> str:
    """The Markdown results table.

    >>> row = {"run": "a", "recon_error": 0.1, "perplexity": 2.0, "split_perplexity": 3.0,
    ...        "used_codes": 4, "usage_entropy": 1.5, "restarted": 0, "seconds": 9.0}
    >>> print(table([row]).splitlines()[-1])
    | a | 0.1000 | 2.0 | 3.0 | 4 | 1.50 | 0 | 9 |
    """
    head = (
        "| run | test recon error | perplexity (batch mean) | split perplexity | used codes "
        "| usage entropy (bits) | codes restarted | wall s |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['run']} | {r['recon_error']:.4f} | {r['perplexity']:.1f} "
        f"| {r['split_perplexity']:.1f} | {r['used_codes']} | {r['usage_entropy']:.2f} "
        f"| {r['restarted']} | {r['seconds']:.0f} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--out", default="runs/codebook_study", help="parent of the workdirs")
    parser.add_argument("--seed", type=int, default=0, help="model and data seed of every run")
    parser.add_argument(
        "--threshold", type=float, default=0.25, help="dead-code threshold of ema_restart"
    )
    parser.add_argument("--kmeans-steps", type=int, default=4, help="k-means batches (ema_kmeans)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names")
    args = parser.parse_args(argv)

    from jaxbasics.train.config import preset
    from jaxbasics.train.loop import fit
    from jaxbasics.train.metrics import read_jsonl

    out = Path(args.out)
    rows = []
    for name, overrides in runs(args).items():
        if args.only and name not in args.only:
            continue
        config = preset(
            "quickstart",
            num_training_updates=args.steps,
            eval_every=args.steps,
            checkpoint_every=args.steps,
            seed=args.seed,
            data_seed=args.seed,
            progress=False,
            **overrides,
        )
        t = time.perf_counter()
        result = fit(config, out / name)
        seconds = time.perf_counter() - t
        metrics = read_jsonl(out / name / "metrics.jsonl")
        restarted = sum(r.get("restarted_codes", 0) for r in metrics)
        row = {"run": name, **result.eval_metrics, "restarted": restarted, "seconds": seconds}
        rows.append(row)
        print(f"{name}: {result.eval_metrics} ({seconds:.0f} s)", flush=True)
    text = table(rows)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codebook_study.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
