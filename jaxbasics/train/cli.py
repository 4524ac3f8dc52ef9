"""The command line of every training script: one :class:`Script` each, :func:`main` for all.

A script (``experiments/train_vqvae.py``, ``experiments/train_prior.py``) says what it trains:
its presets (and with them its config class), its default workdir, its help texts and, for
the VQ-VAE, ``--faithful``. :func:`main` does the rest, the same for every script: one flag per
config field (defaults: the chosen preset's values), the multi-host flags, the workdir lock,
resuming with the saved config, validation, :func:`~jaxbasics.train.loop.fit`, one-line
errors, exit codes (0 done, 1 error, 2 bad flags, 128+N stopped by signal N) and the JSON
summary line on stdout.

>>> sorted(explicit_fields(["--batch-size", "8", "--workdir", "w"], RunConfig))
['batch_size']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
from simple_parsing import ArgumentParser, DashVariant, SimpleHelpFormatter

from jaxbasics.data.base import DatasetNotFoundError
from jaxbasics.train.checkpoint import IncompatibleCheckpointError
from jaxbasics.train.config import Presets, RunConfig, warmup_within_run
from jaxbasics.train.loop import FitResult, NonFiniteError, fit
from jaxbasics.train.resume import ConfigMismatchError, KindMismatchError
from jaxbasics.train.saved import saved_config
from jaxbasics.train.signals import StopFlag
from jaxbasics.train.workdir import WorkdirInUseError, hold

log = logging.getLogger("jaxbasics")


@dataclasses.dataclass(frozen=True)
class Script:
    """What makes one training script its own; :func:`main` does the rest.

    Attributes:
      presets: the config class's named presets (``--preset``'s choices; their ``adjust``
        drops a preset's values that do not apply to the flags given).
      description: the top of ``--help`` (the script's docstring).
      preset_help: ``--preset``'s help: what each preset is.
      workdir: the default workdir, ``{preset}`` standing for the preset's name.
      wrote: what a finished run leaves in its workdir (the last line of the log).
      faithful: ``(help, values)`` of ``--faithful``, values applied over the preset and under
        the flags; None: the script has no ``--faithful``.
      default_preset: the preset of a command line without ``--preset``.
    """

    presets: Presets
    description: str
    preset_help: str
    workdir: str
    wrote: str
    faithful: tuple[str, Mapping[str, Any]] | None = None
    default_preset: str = "quickstart"

    @property
    def config(self) -> type[RunConfig]:
        """The config class: one flag per field."""
        return self.presets.config

    def preset(self, name: str, faithful: bool = False, **overrides: Any) -> RunConfig:
        """Preset ``name`` (with ``--faithful``'s values if ``faithful``) and ``overrides``."""
        under = self.faithful[1] if faithful and self.faithful else None
        return self.presets(name, under=under, **overrides)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _preset_args(script: Script, argv: list[str]) -> argparse.Namespace:
    """``--preset`` (and ``--faithful``), read first: they set every other flag's default."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", choices=script.presets.names, default=script.default_preset)
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
        choices=script.presets.names,
        default=script.default_preset,
        help=script.preset_help,
    )
    if script.faithful is not None:
        parser.add_argument("--faithful", action="store_true", help=script.faithful[0])
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
    parser.add_arguments(script.config, dest="config", default=script.preset(preset_name, faithful))
    return parser


def explicit_fields(argv: list[str], cls: type[RunConfig]) -> set[str]:
    """The fields of config class ``cls`` whose flags appear in ``argv``.

    >>> argv = ["--batch-size", "8", "--progress=false", "--noprogress"]
    >>> sorted(explicit_fields(argv, RunConfig))
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
    config (:func:`~jaxbasics.train.saved.saved_config`: ``config.json``, or if that is lost,
    the newest checkpoint's) with only the explicitly given flags applied (fit refuses
    incompatible ones).

    >>> import tempfile
    >>> resolve_config(RunConfig(seed=3), set(), Path(tempfile.mkdtemp())).seed
    3
    """
    saved = saved_config(workdir, type(requested)).config
    if saved is None:
        return requested
    return saved.replace(**{k: getattr(requested, k) for k in explicit})


def setup_logging() -> None:
    """Every message of the run (warnings, progress notes, errors) goes to stderr through
    the ``jaxbasics`` logger, above the progress bar; stdout carries only the JSON summary.
    Called again (a second run in one process), it replaces its handler, never adds one."""
    for handler in [h for h in log.handlers if getattr(h, "from_cli", False)]:
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.from_cli = True
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
    if jax.config.jax_platforms in (None, "", "cpu"):
        # CPU devices in different processes talk through gloo.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )


class _Request:
    """A command line, parsed: the config it asks for and what it named explicitly."""

    def __init__(self, script: Script, argv: list[str]):
        pre = _preset_args(script, argv)
        self.parser = build_parser(script, pre.preset, pre.faithful)
        self.args = self.parser.parse_args(argv)
        self.workdir = Path(self.args.workdir or script.workdir.format(preset=self.args.preset))
        self.given = explicit_fields(argv, script.config)
        self.preset_given = preset_given(argv)
        self.explicit = set(self.given)
        if self.preset_given:  # an explicit preset asks for all its values, even on a saved run
            names = {f.name for f in dataclasses.fields(script.config)}
            self.explicit |= names - script.config.RESUMABLE
        flags = self.args.config
        self.config = script.presets.adjust_given(flags, self.args.preset, self.given)
        # What the preset's adjustment changed follows from the flags given, so a saved run is
        # asked for it too (--quantizer fsq on a VQ run: the VQ settings off, refused by fit).
        self.explicit |= {
            f.name
            for f in dataclasses.fields(flags)
            if getattr(self.config, f.name) != getattr(flags, f.name)
        }
        self.config = warmup_within_run(self.config, self.given)

    def resolved(self) -> RunConfig:
        """The config to run, against the saved run if any (hold the workdir first)."""
        config = resolve_config(self.config, self.explicit, self.workdir)  # ConfigFileError
        # The warm-up rule again, on the run's real length (a saved run keeps its own).
        config = warmup_within_run(config, self.given)
        try:
            config.check_given(self.given)
            config.validate()
        except ValueError as e:
            self.parser.error(str(e))
        return config


# What a run that cannot go on raises; each is one line on stderr and exit status 1.
_REFUSED = (
    WorkdirInUseError,
    DatasetNotFoundError,
    ConfigMismatchError,
    IncompatibleCheckpointError,
    NonFiniteError,
    ValueError,  # ConfigFileError among them: a damaged config.json
    OSError,  # a workdir that cannot be written (a file, read-only, a full disk)
)


def main(script: Script, argv: list[str] | None = None) -> int:
    """Train as ``script``'s command line ``argv`` (default ``sys.argv[1:]``) asks; the exit code.

    Returns:
      0 done, 1 an error (one line on stderr says what to do), 128+N stopped by signal N
      (checkpoint saved; rerun to resume). Bad flags exit 2 (``SystemExit``).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    request = _Request(script, sys.argv[1:] if argv is None else argv)
    setup_logging()
    init_distributed(request.args)
    workdir = request.workdir
    if workdir.exists() and not workdir.is_dir():
        log.error("error: --workdir %s is a file; give a folder (created if needed).", workdir)
        return 1
    try:
        # Held from the first read of the saved run to the end (fit's own hold nests in it);
        # a stop signal from here on is the run's (fit's StopFlag takes it over).
        with StopFlag(), hold(workdir):
            config = request.resolved()
            if request.args.compilation_cache:  # only for a run that goes ahead
                jax.config.update("jax_compilation_cache_dir", request.args.compilation_cache)
            log.info("workdir: %s  devices: %s", workdir.absolute(), jax.devices())
            result = fit(config, workdir)
    except _REFUSED as e:
        log.error("error: %s", e)
        if (
            isinstance(e, ConfigMismatchError)
            and not isinstance(e, KindMismatchError)
            and request.preset_given
        ):
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
    return _finish(script, workdir, result)


def _finish(script: Script, workdir: Path, result: FitResult) -> int:
    """The exit code of a finished or stopped run; a finished one prints its summary line.

    The run is over and saved: from here a stop signal gets Python's own handling (after a
    stop, the default action at once: no traceback from the interpreter's exit)."""
    stopped = bool(result.interrupted)
    signal.signal(signal.SIGINT, signal.SIG_DFL if stopped else signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if result.interrupted:
        return 128 + result.interrupted
    if jax.process_index() == 0:
        print(json.dumps({"step": result.step, **result.eval_metrics, "workdir": str(workdir)}))
        log.info("wrote %s/: %s", workdir, script.wrote)
    return 0
