"""What a workdir holds, read back: its run's config, checked against its checkpoints, and the
one reader of a saved run.

* :func:`saved_config` is the config of the run a workdir holds: its ``config.json`` or, if that
  is missing, the config saved with its newest checkpoint, so a lost ``config.json`` never
  lets a rerun adopt new settings.
* :func:`written_with` / :func:`check_written_with` refuse a ``config.json`` edited to disagree
  with the config a checkpoint was written with.
* :func:`read` is training's fallback for readers: the newest readable checkpoint, moving
  nothing. :func:`read_run` is what every reader of a saved run calls (loading a model or a
  prior, evaluating, a study's table): the config, then the checkpoint, checked, in one call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from jaxbasics.train.checkpoint import (
    ITEMS,
    Checkpointer,
    IncompatibleCheckpointError,
    Migratable,
    Restored,
    UnreadableCheckpointError,
)
from jaxbasics.train.config import RunConfig
from jaxbasics.train.files import shorten
from jaxbasics.train.resume import (
    ConfigFileError,
    incompatible_fields,
    kind_mismatch,
    load_config,
    other_kind,
)

log = logging.getLogger(__name__)


class SavedConfig(NamedTuple):
    """The config of the run in a workdir, and the checkpoint step it was read from.

    Attributes:
      config: the run's config; None if the workdir holds no run.
      step: the checkpoint whose saved config it is, when ``config.json`` was missing;
        else None.
    """

    config: RunConfig | None
    step: int | None


def saved_config(workdir: str | Path, cls: type[RunConfig], *, starts: bool = True) -> SavedConfig:
    """The config of the run in ``workdir``: ``config.json``, else its newest checkpoint's
    (``starts``: the caller would start a run in a new folder, as the refusal of another kind of
    run then says; see :func:`~jaxbasics.train.resume.kind_mismatch`).

    Reads only. An unreadable checkpoint is skipped (training moves it aside later).

    >>> import tempfile
    >>> saved_config(tempfile.mkdtemp(), RunConfig)
    SavedConfig(config=None, step=None)

    Raises:
      ConfigFileError: ``config.json`` is damaged, or it is missing and no checkpoint
        holds a config.
    """
    workdir = Path(workdir)
    config = load_config(workdir, cls, starts=starts)
    if config is not None or not (workdir / "checkpoints").is_dir():
        return SavedConfig(config, None)
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        steps = ckpt.steps()
        for step in reversed(steps):
            try:
                meta = ckpt.restore(step, None, items=("meta",)).meta
            except (UnreadableCheckpointError, FileNotFoundError):  # an older one may do
                continue
            if isinstance(meta, dict) and "config" in meta:
                text = json.dumps(meta["config"])
                try:
                    return SavedConfig(cls.from_json(text), step)
                except ValueError as e:
                    if (other := other_kind(text.encode(), cls)) is not None:
                        raise kind_mismatch(workdir, other, cls, starts=starts) from e
                    raise ConfigFileError(
                        f"{workdir}/config.json is missing and the config saved with checkpoint "
                        f"{step} is damaged ({str(e).rstrip('.')}); restore config.json, or pass "
                        "another --workdir."
                    ) from e
    finally:
        ckpt.close()
    if not steps:
        return SavedConfig(None, None)
    raise ConfigFileError(
        f"{workdir}/config.json is missing and none of its checkpoints {steps} holds a "
        "readable config; restore config.json, or pass another --workdir."
    )


def data_stats(workdir: str | Path) -> dict[str, Any] | None:
    """The run's ``data_stats.json`` (what its task kept of its data), or None if it has none.

    Raises:
      ValueError: the file is damaged (one line: delete it, and the run writes it again).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> data_stats(d) is None
    True
    >>> _ = (d / "data_stats.json").write_text('{"data_variance": 0.06')
    >>> data_stats(d)
    Traceback (most recent call last):
    ...
    ValueError: .../data_stats.json is damaged (Expecting ',' delimiter: ...); delete it, and the
    run writes it again from its data.
    """
    path = Path(workdir) / "data_stats.json"
    try:
        stats = json.loads(path.read_bytes())
        if not isinstance(stats, dict):
            raise ValueError(f"a JSON {type(stats).__name__}, not an object")
    except FileNotFoundError:
        return None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(
            f"{path} is damaged ({shorten(str(e))}); delete it, and the run writes it again from "
            "its data."
        ) from None
    return stats


def written_with(config: RunConfig, abstract_state: Any, workdir: str | Path) -> Any:
    """``abstract_state`` (see :meth:`~jaxbasics.train.checkpoint.Checkpointer.restore_latest`)
    as a function of a checkpoint's step and meta that first runs :func:`check_written_with`:
    a restore then refuses an edited ``config.json`` before it compares any shape, so the
    refusal names the edit, not another version's layout.

    >>> meta = {"config": json.loads(RunConfig().to_json())}
    >>> written_with(RunConfig(), "the state", "r")(5, meta)
    'the state'
    """

    def checked(step: int, meta: Any) -> Any:
        check_written_with(config, meta, workdir, step)
        return abstract_state(step, meta) if callable(abstract_state) else abstract_state

    return checked


def check_written_with(config: RunConfig, meta: Any, workdir: str | Path, step: int) -> None:
    """Refuse a ``config.json`` that disagrees with the config checkpoint ``step`` was written
    with (its ``meta``), beyond what a resume may change: an edited or replaced file would
    build another model around the weights (FSQ levels in another order load without
    complaint and reconstruct worse). A meta without a readable config is not checked.

    >>> meta = {"config": json.loads(RunConfig().to_json())}
    >>> check_written_with(RunConfig(num_training_updates=9), meta, "r", 5)  # resumable
    >>> check_written_with(RunConfig(batch_size=8), meta, "r", 5)
    Traceback (most recent call last):
    ...
    jaxbasics.train.resume.ConfigFileError: r/config.json disagrees with the config that ...

    Raises:
      ConfigFileError: one line naming the differing fields and the way out.
    """
    try:
        written = type(config).from_json(json.dumps(meta["config"]))
    except (TypeError, KeyError, ValueError):
        return
    diff = incompatible_fields(written, config)
    if diff:
        fields = "; ".join(
            f"{k}: {new!r} in config.json, {old!r} in the checkpoint"
            for k, (old, new) in diff.items()
        )
        raise ConfigFileError(
            f"{workdir}/config.json disagrees with the config that checkpoint {step} was "
            f"written with ({fields}): it was edited or replaced. Restore it, or delete it: "
            "the run's config is then read from its newest checkpoint."
        )


def read(
    workdir: str | Path,
    abstract_state: Any,
    *,
    step: int | None = None,
    keep: int = 3,
    items: tuple[str, ...] = ITEMS,
    fields: tuple[str, ...] | None = None,
    migratable: Migratable | None = None,
) -> Restored:
    """Read checkpoint ``step`` of ``workdir``, or its newest readable one; moves nothing.

    Training's fallback for readers (the models' ``load`` and ``export``, evaluation): an
    unreadable checkpoint is skipped and the previous one tried, and a warning names the step
    read, the ones skipped and why. One the run writing ``workdir`` is deleting is skipped
    silently.

    Args:
      workdir: a training workdir.
      abstract_state: see :meth:`Checkpointer.restore_latest`.
      step: the checkpoint to read; None = the newest readable one.
      keep: the run's ``keep_checkpoints`` (see :class:`Checkpointer`).
      items, fields: as for :meth:`Checkpointer.restore`.
      migratable: as for :class:`Checkpointer`.

    Raises:
      FileNotFoundError: there is no checkpoint (at ``step``).
      UnreadableCheckpointError: ``step``, or every checkpoint, cannot be read; one line
        naming the readable ones.
      IncompatibleCheckpointError: the checkpoint does not fit ``abstract_state``.
    """
    ckpt = Checkpointer(workdir, keep, read_only=True, migratable=migratable)
    try:
        steps = ckpt.steps()
        if not steps or (step is not None and step not in steps):
            raise FileNotFoundError(
                f"{ckpt.directory} holds {steps or 'no checkpoints'}"
                + (f"; there is no step {step}." if step is not None else ".")
            )
        if step is None:
            skipped: list[str] = []
            restored = ckpt.restore_latest(
                abstract_state,
                on_unreadable=lambda s, e: skipped.append(str(e)),
                items=items,
                fields=fields,
            )
            if restored is None:
                raise UnreadableCheckpointError(
                    f"no checkpoint in {ckpt.directory} can be read: " + "; ".join(skipped)
                )
            if skipped:
                log.warning(
                    "read checkpoint %d of %s, the newest readable one; skipped %s",
                    restored.step,
                    ckpt.workdir,
                    "; ".join(skipped),
                )
            return restored
        try:
            return ckpt.restore(step, abstract_state, items, fields)
        except UnreadableCheckpointError as e:
            if ckpt._rotated(step):
                raise FileNotFoundError(
                    f"checkpoint {step} in {ckpt.directory} was deleted, while being read, by "
                    f"the run writing there (it keeps its newest {keep}); it now holds "
                    f"{ckpt.steps()}."
                ) from e
            readable = [
                s for s in ckpt.steps() if s != step and _fits(ckpt, s, abstract_state, fields)
            ]
            raise UnreadableCheckpointError(
                f"{e} (in {ckpt.directory}); readable: {readable or 'none'}. Choose one of "
                "them, or none for the newest readable one."
            ) from e
    finally:
        ckpt.close()


def _fits(ckpt: Checkpointer, step: int, abstract_state: Any, fields: Any) -> bool:
    """Whether checkpoint ``step``'s metadata reads and fits (no array is read)."""
    try:
        ckpt.check(step, abstract_state, fields)
    except (UnreadableCheckpointError, IncompatibleCheckpointError):
        return False
    return True


class SavedRun(NamedTuple):
    """What :func:`read_run` returns: the run's config, and the checkpoint read (``state``,
    ``meta`` and ``data_iter`` are None where not asked for)."""

    config: Any
    step: int
    state: Any
    meta: dict | None
    data_iter: Any = None


def read_run(
    workdir: str | Path,
    cls: type[RunConfig],
    abstract: Callable[[Any, dict], Any] | None = None,
    *,
    step: int | None = None,
    items: tuple[str, ...] = ("state", "meta"),
    fields: tuple[str, ...] | None = None,
    migratable: Migratable | None = None,
) -> SavedRun:
    """Read the run ``workdir`` holds: its ``cls`` config (:func:`saved_config`), then its
    checkpoint ``step`` or newest readable one (:func:`read`), each checkpoint checked against
    that config first (:func:`check_written_with`). Moves nothing, takes no lock.

    Args:
      workdir: a training workdir.
      cls: the config class of the kind of run expected there.
      abstract: ``abstract(config, meta)``: the train state's shapes and dtypes (and
        placement) that a checkpoint of ``meta`` restores into; needed to read ``"state"``.
      step, items, fields, migratable: as for :func:`read`.

    Raises:
      FileNotFoundError: ``workdir`` holds no run (or no checkpoint at ``step``).
      ConfigFileError, ConfigMismatchError: its config is damaged, edited, or another kind's.
      UnreadableCheckpointError, IncompatibleCheckpointError: as :func:`read`.
    """
    workdir = Path(workdir)
    config = saved_config(workdir, cls, starts=False).config
    if config is None:
        raise FileNotFoundError(
            f"{workdir} holds no {cls.KIND} run: it has neither a config.json nor a checkpoint."
        )

    def target(at: int, meta: Any) -> Any:
        return None if abstract is None else abstract(config, meta)

    restored = read(
        workdir,
        written_with(config, target, workdir),
        step=step,
        keep=config.keep_checkpoints,
        items=items,
        fields=fields,
        migratable=migratable,
    )
    return SavedRun(config, *restored)
