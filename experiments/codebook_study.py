"""Which codebook remedies earn their place? Six configurations, several seeds, one table.

  python experiments/codebook_study.py                        # quickstart preset, seeds 0-2
  python experiments/codebook_study.py --steps 1000 --seeds 0 --only notes defaults
  python experiments/codebook_study.py --preset cifar10 --data-dir DIR --steps 3000

Trains the preset (default ``quickstart``: the embedded ``shapes`` data) once per
configuration and seed with :func:`jaxbasics.train.fit`, each run in
``<out>/<config>-s<seed>``; the seed is both the model seed and the data seed. The
configurations (:data:`CONFIGS`) are the preset's model, data and learning rate with:

* ``notes``: the notes exactly (:data:`~jaxbasics.tasks.vqvae.presets.FAITHFUL`): their EMA
  init, straight-through, a constant learning rate, no remedies;
* ``consistent``: ``notes`` with the consistent EMA init alone;
* ``remedies``: ``consistent`` plus dead-code restart (threshold 0.25) and k-means init
  (4 batches);
* ``rotation``: ``remedies`` with the rotation trick instead of straight-through;
* ``cosine``: ``remedies`` with warm-up (``min(100, steps // 10)`` steps) and cosine decay;
* ``defaults``: the preset as it is.

A configuration identical to an earlier one (say ``defaults`` = ``remedies``) is not
trained again: its row says which one it equals.

Per configuration, mean ± standard deviation over the seeds: test-split recon error,
perplexity (batch mean, the notes' number) and codes used, the first step whose training
perplexity exceeds 20% of the codebook size K (from the per-step history saved with the
last checkpoint; ``never`` if no seed got there, ``(n/N)`` if only n did), codes restarted
and wall seconds of ``fit`` (compilation included; runs are sequential, in one process).
Prints a Markdown table and writes it to ``<out>/codebook_study.md``, the per-run rows to
``<out>/codebook_study.jsonl``. A finished run is not redone: rerunning reuses its row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.presets import preset
from jaxbasics.train import fit, read_run
from jaxbasics.train.files import write_atomic
from jaxbasics.train.metrics import read_jsonl

# What each configuration sets on top of the preset, in the order they are run.
_REMEDIES = {"ema_init": "consistent", "dead_code_threshold": 0.25, "kmeans_init_steps": 4}
CONFIGS: dict[str, dict[str, Any]] = {
    "notes": {},
    "consistent": {"ema_init": "consistent"},
    "remedies": _REMEDIES,
    "rotation": {**_REMEDIES, "estimator": "rotation"},
    "cosine": {**_REMEDIES, "lr_schedule": "cosine"},
    "defaults": {},
}
# Where training perplexity counts as "the codebook is in use".
PERPLEXITY_SHARE = 0.2


def config_for(name: str, args: argparse.Namespace, seed: int) -> VQVAEConfig:
    """The config of configuration ``name`` and ``seed``.

    >>> ns = argparse.Namespace(preset="quickstart", steps=200, data_dir=None)
    >>> c = config_for("cosine", ns, 3)
    >>> c.lr_schedule, c.warmup_steps, c.ema_init, c.seed, c.data_seed
    ('cosine', 20, 'consistent', 3, 3)
    >>> config_for("notes", ns, 0).dead_code_threshold
    0.0
    """
    base = preset(args.preset)
    steps = args.steps or base.num_training_updates
    overrides = dict(CONFIGS[name])
    if overrides.get("lr_schedule") == "cosine":
        overrides["warmup_steps"] = min(100, steps // 10)
    run = dict(
        num_training_updates=steps,
        eval_every=steps,
        checkpoint_every=steps,
        seed=seed,
        data_seed=seed,
        progress=False,
    )
    if args.data_dir:
        run["data_dir"] = args.data_dir
    return preset(args.preset, faithful=name != "defaults", **overrides, **run)


def first_step_above(history: list[float], level: float) -> int | None:
    """The first (1-based) step whose value exceeds ``level``; None if none does.

    >>> first_step_above([1.0, 3.0, 9.0, 2.0], 2.5), first_step_above([1.0], 2.0)
    (2, None)
    """
    return next((i + 1 for i, v in enumerate(history) if v > level), None)


def train(config, workdir: Path) -> dict[str, Any]:
    """Run ``fit`` and return the row of this run (reused if ``workdir`` already has it)."""
    cached = workdir / "study_row.json"
    if cached.exists():
        row = json.loads(cached.read_text())
        if row["config"] == json.loads(config.to_json()):
            return row
    t = time.perf_counter()
    result = fit(config, workdir)
    seconds = time.perf_counter() - t
    meta = read_run(workdir, VQVAEConfig, items=("meta",)).meta
    k = config.num_embeddings
    row = {
        "recon_error": result.eval_metrics["recon_error"],
        "perplexity": result.eval_metrics["perplexity"],
        "used_codes": result.eval_metrics["used_codes"],
        "first_step": first_step_above(meta["train_res_perplexity"], PERPLEXITY_SHARE * k),
        "restarted": sum(r["restarted_codes"] for r in read_jsonl(workdir / "metrics.jsonl")),
        "seconds": seconds,
        "config": json.loads(config.to_json()),
    }
    write_atomic(cached, json.dumps(row))
    return row


def _mean_sd(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(np.mean(values), fmt)} ± {format(np.std(values, ddof=1), fmt)}"


def summarize(name: str, rows: list[dict], same_as: str | None = None) -> dict[str, str]:
    """One table row: mean ± sd over seeds of every column.

    >>> rows = [{"recon_error": 0.1, "perplexity": 9.0, "used_codes": 9, "first_step": 5,
    ...          "restarted": 0, "seconds": 10.0}, {"recon_error": 0.3, "perplexity": 11.0,
    ...          "used_codes": 11, "first_step": None, "restarted": 2, "seconds": 12.0}]
    >>> s = summarize("x", rows)
    >>> s["recon error"], s["first step > 20% K"]
    ('0.2000 ± 0.1414', '5 (1/2)')
    """
    reached = [r["first_step"] for r in rows if r["first_step"] is not None]
    first = _mean_sd(reached, ".0f") if reached else "never"
    if reached and len(reached) < len(rows):
        first += f" ({len(reached)}/{len(rows)})"
    return {
        "config": name if same_as is None else f"{name} (= {same_as})",
        "recon error": _mean_sd([r["recon_error"] for r in rows], ".4f"),
        "perplexity": _mean_sd([r["perplexity"] for r in rows], ".1f"),
        "codes used": _mean_sd([float(r["used_codes"]) for r in rows], ".0f"),
        "first step > 20% K": first,
        "codes restarted": _mean_sd([float(r["restarted"]) for r in rows], ".0f"),
        "wall s": _mean_sd([r["seconds"] for r in rows], ".0f"),
    }


def table(summaries: list[dict[str, str]]) -> str:
    """The Markdown table of :func:`summarize` rows.

    >>> print(table([{"a": "1", "b": "2"}]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    head = list(summaries[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(s[h] for h in head) + " |" for s in summaries]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=0, help="steps per run (0: the preset's)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated model and data seeds")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="run only these")
    parser.add_argument("--out", default="runs/codebook_study", help="parent of the workdirs")
    parser.add_argument("--preset", default="quickstart", help="preset every config starts from")
    parser.add_argument("--data-dir", default=None, help="--data-dir of the runs (cifar10)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    summaries, done = [], {}  # done: config -> the name it was first trained under
    log: list[str] = []  # codebook_study.jsonl, rewritten whole (atomically) after each run
    for name in CONFIGS:
        if args.only and name not in args.only:
            continue
        key = config_for(name, args, seeds[0]).to_json()
        if key in done:
            summaries.append(summarize(name, done[key][1], same_as=done[key][0]))
            continue
        rows = []
        for seed in seeds:
            row = train(config_for(name, args, seed), out / f"{name}-s{seed}")
            rows.append(row)
            log.append(json.dumps({"name": name, "seed": seed, **row}) + "\n")
            write_atomic(out / "codebook_study.jsonl", "".join(log))
            print(
                f"{name} seed {seed}: recon {row['recon_error']:.4f}, perplexity "
                f"{row['perplexity']:.1f}, {row['used_codes']} codes, first step > 20% K "
                f"{row['first_step']}, {row['seconds']:.0f} s",
                flush=True,
            )
        done[key] = (name, rows)
        summaries.append(summarize(name, rows))
    config = config_for("defaults", args, seeds[0])
    text = (
        f"{args.preset} preset, {config.num_training_updates} steps, K = "
        f"{config.num_embeddings}, seeds {args.seeds}; mean ± sd over seeds; test split.\n\n"
        + table(summaries)
    )
    print(text)
    write_atomic(out / "codebook_study.md", text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
