"""Train the VQ-VAE: the main job.

  python experiments/train_vqvae.py                       # the quickstart: embedded data, ~90 s
  python experiments/train_vqvae.py --preset cifar10 --data-dir ~/tensorflow_datasets
  python experiments/train_vqvae.py --preset cifar10 --help   # that preset's values

Every TrainConfig field is a flag (``batch_size`` -> ``--batch-size``); ``--preset`` picks
their starting values (quickstart, cifar10 or notes) and ``--faithful`` turns off what the
defaults change from the notes. Rerunning the same command resumes from the latest
checkpoint in ``--workdir``: an existing run keeps its saved config (if config.json is lost,
the one saved with the newest checkpoint), and a flag you give that contradicts it is
refused. A workdir belongs to one run at a time: a second run on it stops at once, naming
the first. Exit codes: 0 done, 1 error (the message says what to do), 2 bad flags, 128+N
stopped by signal N (checkpoint saved; rerun to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from simple_parsing import ArgumentParser, DashVariant, SimpleHelpFormatter

from jaxbasics.train.config import TrainConfig
from jaxbasics.train.presets import (
    PRESETS,
    preset,
    warmup_within_run,
    whole_splits_on_other_data,
)

log = logging.getLogger("jaxbasics")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _preset_args(argv: list[str]) -> argparse.Namespace:
    """``--preset`` and ``--faithful``, read first: they set every other flag's default."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="quickstart")
    pre.add_argument("--faithful", action="store_true")
    return pre.parse_known_args(argv)[0]


def build_parser(preset_name: str = "quickstart", faithful: bool = False) -> ArgumentParser:
    """The CLI: --preset, --faithful, --workdir, the multi-host flags and one flag per field.

    Field flags default to the chosen preset's values, so ``--preset X --help`` shows X's.
    """
    parser = ArgumentParser(
        description=__doc__,
        formatter_class=SimpleHelpFormatter,
        add_option_string_dash_variants=DashVariant.DASH,
        add_config_path_arg=False,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quickstart",
        help="starting values of every field: quickstart (embedded data, small model, ~90 s "
        "on 2 CPU cores), cifar10 (the notes' setting on real CIFAR-10, remedies on) or "
        "notes (the notes exactly)",
    )
    parser.add_argument(
        "--faithful",
        action="store_true",
        help="reproduce the notes' quantiser exactly: their EMA init, straight-through, a "
        "constant learning rate, no dead-code restart or k-means init",
    )
    parser.add_argument(
        "--workdir",
        type=str,
        metavar="DIR",
        default=None,
        help="run directory; None means runs/<preset>. Reusing it resumes",
    )
    parser.add_argument(
        "--compilation-cache",
        type=str,
        metavar="DIR",
        default=str(Path.home() / ".cache/jaxbasics/xla"),
        help="persistent XLA compilation cache dir ('' disables); reruns and resumes start faster",
    )
    dist = parser.add_argument_group(
        "multi-host (one process per host; all three, or the JAX_* environment variables)"
    )
    dist.add_argument(
        "--coordinator-address",
        type=str,
        metavar="HOST:PORT",
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
    parser.add_arguments(TrainConfig, dest="config", default=preset(preset_name, faithful=faithful))
    return parser


def explicit_fields(argv: list[str]) -> set[str]:
    """The TrainConfig fields whose flags appear in ``argv``.

    >>> sorted(explicit_fields(["--batch-size", "8", "--progress=false", "--noprogress"]))
    ['batch_size', 'progress']
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    out = set()
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name not in names and name.startswith("no") and name[2:] in names:
            name = name[2:]  # --noprogress
        if name in names:
            out.add(name)
    return out


def preset_given(argv: list[str]) -> bool:
    """Whether ``argv`` names a preset (``--preset``) or ``--faithful`` itself.

    >>> preset_given(["--preset=cifar10"]), preset_given(["--batch-size", "8"])
    (True, False)
    """
    return any(a in ("--preset", "--faithful") or a.startswith("--preset=") for a in argv)


def resolve_config(requested: TrainConfig, explicit: set[str], workdir: Path) -> TrainConfig:
    """The config to run: ``requested`` for a new workdir; for an existing run, its saved
    config (:func:`~jaxbasics.train.workdir.saved_config`: ``config.json``, or if that is lost,
    the newest checkpoint's) with only the explicitly given flags applied (fit refuses
    incompatible ones)."""
    from jaxbasics.train.workdir import saved_config

    saved = saved_config(workdir).config
    if saved is None:
        return requested
    return saved.replace(**{k: getattr(requested, k) for k in explicit})


def setup_logging() -> None:
    """Every message of the run (warnings, progress notes, errors) goes to stderr through
    the ``jaxbasics`` logger, above the progress bar; stdout carries only the JSON summary."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pre = _preset_args(argv)
    parser = build_parser(pre.preset, pre.faithful)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or f"runs/{args.preset}")
    given = explicit_fields(argv)
    explicit = set(given)
    if preset_given(argv):  # an explicit preset asks for all its values, even on a saved run
        explicit |= {f.name for f in dataclasses.fields(TrainConfig)} - TrainConfig.RESUMABLE
    requested = whole_splits_on_other_data(args.config, args.preset, given)
    requested = warmup_within_run(requested, given)
    setup_logging()

    import jax

    init_distributed(args)
    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    from jaxbasics.data.sources import DatasetNotFoundError
    from jaxbasics.train.checkpoint import IncompatibleCheckpointError
    from jaxbasics.train.config import ConfigMismatchError
    from jaxbasics.train.loop import NonFiniteError, fit
    from jaxbasics.train.workdir import WorkdirInUseError, hold

    if workdir.exists() and not workdir.is_dir():
        log.error("error: --workdir %s is a file; give a folder (created if needed).", workdir)
        return 1
    try:
        # Held from the first read of the saved run to the end (fit's own hold nests in it).
        with hold(workdir):
            config = resolve_config(requested, explicit, workdir)  # ConfigFileError: exit 1
            try:
                config.validate()
            except ValueError as e:
                parser.error(str(e))
            log.info("workdir: %s  devices: %s", workdir.absolute(), jax.devices())
            result = fit(config, workdir)
    except (
        WorkdirInUseError,
        DatasetNotFoundError,
        ConfigMismatchError,
        IncompatibleCheckpointError,
        NonFiniteError,
        ValueError,  # ConfigFileError among them: a damaged config.json
        OSError,  # a workdir that cannot be written (a file, read-only, a full disk)
    ) as e:
        log.error("error: %s", e)
        if isinstance(e, ConfigMismatchError) and preset_given(argv):
            log.error(
                "(--preset and --faithful set every setting to the preset's value; leave them "
                "out to resume with the saved config.)"
            )
        return 1
    if result.interrupted:
        return 128 + result.interrupted
    if jax.process_index() == 0:
        print(json.dumps({"step": result.step, **result.eval_metrics, "workdir": str(workdir)}))
        log.info(
            "wrote %s/: curves.png, reconstructions.png, codebook.png, metrics.jsonl, eval.jsonl "
            "and checkpoints/",
            workdir,
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
