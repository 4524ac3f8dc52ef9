"""The command line of every training script: one :class:`Script` each, :func:`main` for all.

A script (``experiments/train_vqvae.py``, ``experiments/train_prior.py``) says what it trains:
its config class and presets, its default workdir, its help texts and how it adjusts the
config it is asked for. :func:`main` does the rest, the same for every script: one flag per
config field (defaults: the chosen preset's values), the multi-host flags, the workdir lock,
resuming with the saved config, validation, :func:`~jaxbasics.train.loop.fit`, one-line
errors, exit codes (0 done, 1 error, 2 bad flags, 128+N stopped by signal N) and the JSON
summary line on stdout.

>>> from jaxbasics.train.config import TrainConfig
>>> sorted(explicit_fields(["--batch-size", "8", "--workdir", "w"], TrainConfig))
['batch_size']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from simple_parsing import ArgumentParser, DashVariant, SimpleHelpFormatter

from jaxbasics.train.config import RunConfig
from jaxbasics.train.presets import warmup_within_run

log = logging.getLogger("jaxbasics")


@dataclasses.dataclass(frozen=True)
class Script:
    """What makes one training script its own; :func:`main` does the rest.

    Attributes:
      config: the config class: one flag per field.
      presets: the named presets' values; their names are ``--preset``'s choices.
      preset: the named preset as a config, ``preset(name)``; ``preset(name, faithful=True)``
        under ``--faithful``.
      description: the top of ``--help`` (the script's docstring).
      preset_help: ``--preset``'s help: what each preset is.
      workdir: the default workdir, ``{preset}`` standing for the preset's name.
      wrote: what a finished run leaves in its workdir (the last line of the log).
      adjust: ``adjust(config, preset_name, given)``: the script's own changes to the config
        the flags ask for (``given``: the fields set by a flag), before the warm-up is fitted
        to the run (:func:`~jaxbasics.train.presets.warmup_within_run`).
      faithful: ``--faithful``'s help; None: the script has no ``--faithful``.
      default_preset: the preset of a command line without ``--preset``.
    """

    config: type[RunConfig]
    presets: Mapping[str, Mapping[str, Any]]
    preset: Callable[..., RunConfig]
    description: str
    preset_help: str
    workdir: str
    wrote: str
    adjust: Callable[[RunConfig, str, set[str]], RunConfig] | None = None
    faithful: str | None = None
    default_preset: str = "quickstart"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _preset_args(script: Script, argv: list[str]) -> argparse.Namespace:
    """``--preset`` (and ``--faithful``), read first: they set every other flag's default."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", choices=sorted(script.presets), default=script.default_preset)
    pre.set_defaults(faithful=False)
    if script.faithful is not None:
        pre.add_argument("--faithful", action="store_true")
    return pre.parse_known_args(argv)[0]


def build_parser(script: Script, preset_name: str, faithful: bool = False) -> ArgumentParser:
    """The CLI: --preset, --faithful, --workdir, the multi-host flags and one flag per field.

    Field flags default to preset ``preset_name``'s values, so ``--preset X --help`` shows X's.
    """
    parser = ArgumentParser(
        description=script.description,
        formatter_class=SimpleHelpFormatter,
        add_option_string_dash_variants=DashVariant.DASH,
        add_config_path_arg=False,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--preset",
        choices=sorted(script.presets),
        default=script.default_preset,
        help=script.preset_help,
    )
    if script.faithful is not None:
        parser.add_argument("--faithful", action="store_true", help=script.faithful)
    parser.add_argument(
        "--workdir",
        type=str,
        metavar="DIR",
        default=None,
        help=f"run directory; None means {script.workdir.format(preset='<preset>')}. "
        "Reusing it resumes",
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
    defaults = script.preset(preset_name, faithful=True) if faithful else script.preset(preset_name)
    parser.add_arguments(script.config, dest="config", default=defaults)
    return parser


def explicit_fields(argv: list[str], cls: type[RunConfig]) -> set[str]:
    """The fields of config class ``cls`` whose flags appear in ``argv``.

    >>> from jaxbasics.train.config import TrainConfig
    >>> argv = ["--batch-size", "8", "--progress=false", "--noprogress"]
    >>> sorted(explicit_fields(argv, TrainConfig))
    ['batch_size', 'progress']
    """
    names = {f.name for f in dataclasses.fields(cls)}
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


def resolve_config(requested: RunConfig, explicit: set[str], workdir: Path) -> RunConfig:
    """The config to run: ``requested`` for a new workdir; for an existing run, its saved
    config (:func:`~jaxbasics.train.workdir.saved_config`: ``config.json``, or if that is lost,
    the newest checkpoint's) with only the explicitly given flags applied (fit refuses
    incompatible ones).

    >>> import tempfile
    >>> from jaxbasics.train.config import TrainConfig
    >>> resolve_config(TrainConfig(seed=3), set(), Path(tempfile.mkdtemp())).seed
    3
    """
    from jaxbasics.train.workdir import saved_config

    saved = saved_config(workdir, type(requested)).config
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


def main(script: Script, argv: list[str] | None = None) -> int:
    """Train as ``script``'s command line ``argv`` (default ``sys.argv[1:]``) asks; the exit code.

    Returns:
      0 done, 1 an error (one line on stderr says what to do), 128+N stopped by signal N
      (checkpoint saved; rerun to resume). Bad flags exit 2 (``SystemExit``).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else argv
    pre = _preset_args(script, argv)
    parser = build_parser(script, pre.preset, pre.faithful)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or script.workdir.format(preset=args.preset))
    given = explicit_fields(argv, script.config)
    explicit = set(given)
    if preset_given(argv):  # an explicit preset asks for all its values, even on a saved run
        explicit |= {f.name for f in dataclasses.fields(script.config)} - script.config.RESUMABLE
    requested = args.config
    if script.adjust is not None:
        requested = script.adjust(requested, args.preset, given)
        # What it changed follows from the flags given, so a saved run is asked for it too
        # (--quantizer fsq on a VQ run: the VQ settings off, refused as a mismatch by fit).
        explicit |= {
            f.name
            for f in dataclasses.fields(requested)
            if getattr(requested, f.name) != getattr(args.config, f.name)
        }
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
            # The warm-up rule again on the run's real length (a saved run keeps its own)
            config = warmup_within_run(config, given)
            try:
                config.check_given(given)
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
            named = (
                ("--preset and --faithful set", "them")
                if script.faithful
                else ("--preset sets", "it")
            )
            log.error(
                "(%s every setting to the preset's value; leave %s out to resume with the "
                "saved config.)",
                *named,
            )
        return 1
    if result.interrupted:
        return 128 + result.interrupted
    if jax.process_index() == 0:
        print(json.dumps({"step": result.step, **result.eval_metrics, "workdir": str(workdir)}))
        log.info("wrote %s/: %s", workdir, script.wrote)
    return 0
