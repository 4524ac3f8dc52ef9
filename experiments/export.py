"""Export a training run's model to one self-describing file (weights only).

  python experiments/export.py runs/quickstart model.msgpack [--step N]

The file holds the config, the data variance, the step, the parameters and the codebook: what
encoding and decoding need, and no training state (no optimiser moments or history, no EMA
running sums); ``jaxbasics.tasks.vqvae.trained`` and every script's ``--model`` read it. Prints one
JSON line with its size and the newest checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import HelpFormatter, fail
from jaxbasics.tasks.vqvae.trained import export
from jaxbasics.train.files import check_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("workdir", help="a train_vqvae.py workdir")
    parser.add_argument("out", help="the file to write, e.g. model.msgpack")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    args = parser.parse_args(argv)

    try:
        check_out(args.out, [args.workdir])
        path = export(args.workdir, args.out, args.step)
    except (OSError, ValueError) as e:  # IncompatibleModelError is a ValueError
        return fail(e)
    checkpoints = Path(args.workdir) / "checkpoints"
    newest = max((p for p in checkpoints.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    full = sum(f.stat().st_size for f in newest.rglob("*") if f.is_file())
    summary = {"out": str(path), "bytes": path.stat().st_size, "checkpoint_bytes": full}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
