"""The resume rules: when a workdir's saved run may go on with a requested config, and when not.

A rerun of a workdir resumes its run only with a config that differs in nothing but what a
resume may change (the config class's ``RESUMABLE`` fields: the run length, logging, where
the data lives); anything else would mix two experiments, and :func:`check_resumable` refuses
it naming each differing field. A workdir of another kind of run (a prior's given where a
VQ-VAE's is asked for) is named as such (:func:`other_kind`, :func:`kind_mismatch`), looked up
among the registered kinds (:func:`jaxbasics.train.task.kinds`).

>>> check_resumable(RunConfig(num_training_updates=9), RunConfig(), Path("run"))  # may change
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from jaxbasics.train.config import C, RunConfig
from jaxbasics.train.task import kinds


class ConfigMismatchError(ValueError):
    """The workdir holds a run whose config is incompatible with the requested one."""


class KindMismatchError(ConfigMismatchError):
    """The workdir holds another kind of run (a prior's where a VQ-VAE's was asked for)."""


class ConfigFileError(ValueError):
    """A run's saved config cannot be read (damaged JSON, a wrong type, an invalid value)."""


def check_resumable(config: RunConfig, old: RunConfig | None, workdir: Path) -> None:
    """Refuse to resume the run in ``workdir``, saved with ``old``, with an incompatible
    ``config``; None (no saved run) passes.

    >>> check_resumable(RunConfig(batch_size=8), RunConfig(), Path("run"))
    Traceback (most recent call last):
    ...
    jaxbasics.train.resume.ConfigMismatchError: run holds a run with a different config; ...
    """
    diff = incompatible_fields(old, config) if old is not None else {}
    if diff:
        lines = "\n".join(
            f"  {k}: saved {a!r}, requested {b!r}" for k, (a, b) in sorted(diff.items())
        )
        why = ""
        if "num_training_updates" in diff and old.lr_schedule != "constant":
            why = (
                f"(num_training_updates cannot change under the {old.lr_schedule} learning-rate "
                "schedule: its decay ends at the saved step count. A run meant to be extended "
                "uses --lr-schedule constant.)\n"
            )
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config; resuming would mix two "
            f"experiments. Differing fields:\n{lines}\n{why}"
            "Rerun with the saved values to resume, or pass a new --workdir to start fresh."
        )


def incompatible_fields(old: RunConfig, new: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Fields that differ between ``old`` and ``new`` and forbid resuming.

    Under a cosine schedule the run length is part of the schedule, so it may not change.
    Configs of two kinds of run (a VQ-VAE's and a prior's) differ in their kind.

    >>> incompatible_fields(RunConfig(), RunConfig(num_training_updates=5, batch_size=8))
    {'batch_size': (32, 8)}
    >>> cosine = RunConfig(lr_schedule="cosine")
    >>> incompatible_fields(cosine, cosine.replace(num_training_updates=5))
    {'num_training_updates': (25000, 5)}
    """
    if type(old) is not type(new):
        return {"kind of run": (type(old).__name__, type(new).__name__)}
    resumable = old.RESUMABLE
    if old.lr_schedule != "constant":
        resumable = resumable - {"num_training_updates"}
    out = {}
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b and f.name not in resumable:
            out[f.name] = (a, b)
    return out


def other_kind(text: bytes, cls: type[RunConfig]) -> type[RunConfig] | None:
    """The kind of run (a registered config class other than ``cls``) whose config ``text``
    is, if it is a readable one; None otherwise.

    >>> from jaxbasics.train.task import register
    >>> class Other(RunConfig):
    ...     KIND = "other"
    >>> register(Other, lambda config: None)
    >>> other_kind(Other().to_json().encode(), RunConfig).KIND
    'other'
    >>> other_kind(b"{", RunConfig) is None
    True
    """
    for kind in kinds():
        if kind is cls:
            continue
        try:
            kind.from_json(text.decode("utf-8"))
        except ValueError:
            continue
        return kind
    return None


def kind_mismatch(
    workdir: str | Path, other: type[RunConfig], cls: type[RunConfig], *, starts: bool = True
) -> Exception:
    """The refusal of a workdir that holds ``other``'s kind of run where ``cls``'s was asked for
    (``starts``: the caller would start a run in a new folder; a reader of trained models would
    not).

    >>> class Prior(RunConfig):
    ...     KIND = "prior"
    >>> class VQVAE(RunConfig):
    ...     KIND = "VQ-VAE"
    >>> print(kind_mismatch("runs/prior", Prior, VQVAE))
    runs/prior holds a prior run, not a VQ-VAE's; name a VQ-VAE's run (or a new folder, to
    start one).
    >>> print(kind_mismatch("runs/prior", Prior, VQVAE, starts=False))
    runs/prior holds a prior run, not a VQ-VAE's; name a VQ-VAE's run.
    """
    new = " (or a new folder, to start one)" if starts else ""
    return KindMismatchError(
        f"{workdir} holds a {other.KIND} run, not a {cls.KIND}'s; name a {cls.KIND}'s run{new}."
    )


def load_config(workdir: str | Path, cls: type[C], *, starts: bool = True) -> C | None:
    """The ``cls`` config saved in ``workdir/config.json``, or None if there is none
    (``starts``: as for :func:`kind_mismatch`).

    Raises:
      ConfigFileError: the file is damaged (not JSON, unknown or missing fields, wrong types
        or invalid values) or is a folder; the one-line message names it and the way out.
    """
    path = Path(workdir) / "config.json"
    if not path.exists():
        return None
    if path.is_dir():
        raise ConfigFileError(
            f"{path} is a folder, not the run's config file; move it away: training then takes "
            "the run's config from its newest checkpoint."
        )
    try:
        return cls.from_json(path.read_text()).validate()
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        if (other := other_kind(path.read_bytes(), cls)) is not None:
            raise kind_mismatch(workdir, other, cls, starts=starts) from e
        raise ConfigFileError(
            f"{path} is damaged: {str(e).rstrip('.')}. Fix it, or delete it: training then "
            "takes the run's config from its newest checkpoint."
        ) from e
