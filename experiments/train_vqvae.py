"""Train the VQ-VAE: the main job.

  python experiments/train_vqvae.py --preset quickstart        # embedded data, ~3 min on CPU
  python experiments/train_vqvae.py --dataset cifar10 --data-dir ~/tensorflow_datasets

Every TrainConfig field is a flag (``batch_size`` -> ``--batch-size``). Defaults come
from ``--preset`` (default: reference, the notes' CIFAR-10 setting), and flags
override them. Rerunning the same command resumes from the latest checkpoint in
``--workdir``. Exit codes: 0 done, 1 error, 128+N stopped by signal N (checkpoint
saved; rerun to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path


def _field_type(field):
    hint = typing.get_type_hints(_config_cls())[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if isinstance(hint, types.UnionType) or typing.get_origin(hint) else hint


def _config_cls():
    from jaxbasics.train.config import TrainConfig

    return TrainConfig


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def init_distributed(args: argparse.Namespace) -> None:
    """Join a multi-process run via ``jax.distributed.initialize`` when asked to."""
    given = [args.coordinator_address, args.num_processes, args.process_id]
    if all(v is None for v in given):
        return
    if any(v is None for v in given):
        raise SystemExit(
            "error: multi-host needs --coordinator-address, --num-processes and --process-id "
            "(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) together."
        )
    import jax

    if jax.config.jax_platforms in (None, "", "cpu"):
        # CPU devices in different processes talk through gloo.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per TrainConfig field, plus --preset and --workdir."""
    from jaxbasics.train.config import PRESETS, TrainConfig

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        default="reference",
        choices=sorted(PRESETS),
        help="starting values for every field (default: reference)",
    )
    parser.add_argument(
        "--workdir", default=None, help="run directory; default runs/<preset>. Reusing it resumes."
    )
    dist = parser.add_argument_group(
        "multi-host (one process per host; all three, or the JAX_* environment variables)"
    )
    dist.add_argument(
        "--coordinator-address",
        default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
        help="host:port of process 0 (env JAX_COORDINATOR_ADDRESS)",
    )
    dist.add_argument(
        "--num-processes",
        type=int,
        default=_env_int("JAX_NUM_PROCESSES"),
        help="number of processes (env JAX_NUM_PROCESSES)",
    )
    dist.add_argument(
        "--process-id",
        type=int,
        default=_env_int("JAX_PROCESS_ID"),
        help="this process, 0..num_processes-1 (env JAX_PROCESS_ID)",
    )
    parser.add_argument(
        "--compilation-cache",
        default=str(Path.home() / ".cache/jaxbasics/xla"),
        help="persistent XLA compilation cache dir ('' disables); makes "
        "reruns and resumes start faster",
    )
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        kind = _field_type(field)
        flag = "--" + field.name.replace("_", "-")
        if field.name == "dataset":
            parser.add_argument(
                flag,
                choices=["shapes", "cifar10"],
                default=None,
                help="training data (default: shapes, embedded, no network)",
            )
            continue
        parser.add_argument(
            flag,
            type=_bool if kind is bool else kind,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"default {getattr(defaults, field.name)!r} (preset may change it)",
        )
    return parser


def config_from_args(args: argparse.Namespace):
    """The TrainConfig the parsed flags ask for: preset values, then explicit flags."""
    from jaxbasics.train.config import TrainConfig, preset

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    return preset(args.preset, **overrides).validate()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    workdir = Path(args.workdir or f"runs/{args.preset}")

    import jax

    init_distributed(args)
    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    from jaxbasics.data.sources import DatasetNotFoundError
    from jaxbasics.train.loop import ConfigMismatchError, NonFiniteLossError, fit

    print(f"workdir: {workdir.absolute()}  devices: {jax.devices()}", flush=True)
    try:
        result = fit(config, workdir)
    except (DatasetNotFoundError, ConfigMismatchError, NonFiniteLossError, ValueError) as e:
        # user-facing problems (data, config, devices): the message says what to do
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.interrupted:
        return 128 + result.interrupted
    if jax.process_index() == 0:
        summary = {"step": result.step, **result.eval_metrics, "workdir": str(workdir)}
        print(json.dumps(summary), flush=True)
        print(
            f"wrote {workdir}/curves.png, {workdir}/reconstructions.png, metrics.jsonl, "
            f"eval.jsonl and checkpoints/",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
