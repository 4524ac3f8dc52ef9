"""A workdir belongs to one run at a time, and its config is the run's own.

:func:`hold` locks a workdir for a training run (and ``sample.py``'s ``--out`` for one
sampling run): ``fcntl.flock`` on ``<workdir>/run.lock``, taken before anything in the
workdir is read for resuming or written, and released when the run ends. A second run on a
held workdir is refused at once, naming the holder (the file holds its host and PID, for
that message only). The kernel releases the lock of a process that dies, so the file a
killed run leaves behind never blocks a rerun. With several JAX processes, process 0 holds
the lock and tells the others whether it got it. Readers (``load``, ``evaluate.py``) take no
lock.

:func:`saved_config` is the config of the run a workdir holds: its ``config.json`` or, if
that is missing, the config saved with its newest checkpoint, so a lost ``config.json`` never
lets a rerun adopt new settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxbasics.train.config import (
    ConfigFileError,
    RunConfig,
    TrainConfig,
    incompatible_fields,
    kind_mismatch,
    load_config,
    other_kind,
)

LOCK = "run.lock"

# The workdirs this process holds: a nested hold (the CLI's, then fit's) is already granted.
_held: set[Path] = set()


class WorkdirInUseError(RuntimeError):
    """Another training run holds the workdir."""


@contextlib.contextmanager
def hold(
    workdir: str | Path, flag: str = "--workdir", what: str = "training run"
) -> Iterator[None]:
    """Hold ``workdir`` for one run for the duration of the ``with`` block.

    Creates ``workdir`` if needed; if it was created here and is still empty when the block
    ends (a run that could not start), it is removed again. ``flag`` and ``what`` word the
    refusal: the command-line flag that named the folder, and what kind of run holds it
    (``sample.py`` holds its ``--out`` with ``hold(out, "--out", "sample.py")``).

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp()) / "run"
    >>> with hold(run):
    ...     (run / LOCK).exists()
    True
    >>> run.exists()  # nothing was written: no empty workdir is left behind
    False

    Raises:
      WorkdirInUseError: another run holds it; the message names its host and PID.
    """
    path = Path(workdir).absolute()
    if path in _held:
        yield
        return
    created = [p for p in (path, *path.parents) if not p.exists()]
    fd = None
    try:
        fd = _agree(path, flag, what)
        _held.add(path)
        yield
    finally:
        _held.discard(path)
        if fd is not None:
            (path / LOCK).unlink(missing_ok=True)  # while still locked: see _lock
            os.close(fd)
        for p in created:
            try:
                p.rmdir()
            except OSError:  # not empty: the run started
                break


def _agree(path: Path, flag: str, what: str) -> int | None:
    """Process 0 takes the lock (its fd is returned); every process learns whether it got it."""
    fd, error = None, None
    if jax.process_index() == 0:
        try:
            fd = _lock(path, flag, what)
        except Exception as e:  # noqa: BLE001 - the other processes must hear of any failure
            error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        got = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not got and error is None:
            error = WorkdirInUseError(
                f"process 0 could not take the lock on {path}; its error message says why."
            )
    if error is not None:
        raise error
    return fd


def _lock(path: Path, flag: str, what: str) -> int:
    """Lock ``path/LOCK`` and write this host and PID into it; the open, locked fd."""
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK
    while True:
        # Never through a link: a run.lock planted as one would have us write its target.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 1024).decode(errors="replace")
            os.close(fd)
            raise WorkdirInUseError(_in_use(path, holder, flag, what)) from None
        except BaseException:
            os.close(fd)
            raise
        # A holder removes the file before it unlocks: if it did so between our open and
        # our flock, we hold a lock on a file nobody else will open; take the new one.
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode())
    except BaseException:
        os.unlink(lock)
        os.close(fd)
        raise
    return fd


def _in_use(path: Path, holder: str, flag: str, what: str) -> str:
    """The refusal: who holds ``path`` (as its lock file says) and what to do."""
    try:
        info = json.loads(holder)
        who = f"host {info['host']}, pid {info['pid']}"
    except (ValueError, TypeError, KeyError):
        who = "host and pid not written yet"
    return (
        f"{path} is in use by another {what} ({who}); wait for it to end or stop it, "
        f"or pass another {flag}."
    )


class SavedConfig(NamedTuple):
    """The config of the run in a workdir, and the checkpoint step it was read from.

    Attributes:
      config: the run's config; None if the workdir holds no run.
      step: the checkpoint whose saved config it is, when ``config.json`` was missing;
        else None.
    """

    config: RunConfig | None
    step: int | None


def saved_config(workdir: str | Path, cls: type[RunConfig] = TrainConfig) -> SavedConfig:
    """The config of the run in ``workdir``: ``config.json``, else its newest checkpoint's.

    Reads only. An unreadable checkpoint is skipped (training moves it aside later).

    >>> import tempfile
    >>> saved_config(tempfile.mkdtemp())
    SavedConfig(config=None, step=None)

    Raises:
      ConfigFileError: ``config.json`` is damaged, or it is missing and no checkpoint
        holds a config.
    """
    workdir = Path(workdir)
    config = load_config(workdir, cls)
    if config is not None or not (workdir / "checkpoints").is_dir():
        return SavedConfig(config, None)
    from jaxbasics.train.checkpoint import Checkpointer, UnreadableCheckpointError

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
                        raise kind_mismatch(workdir, other, cls) from e
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


def written_with(config: RunConfig, abstract_state: Any, workdir: str | Path) -> Any:
    """``abstract_state`` (see :meth:`~jaxbasics.train.checkpoint.Checkpointer.restore_latest`)
    as a function of a checkpoint's step and meta that first runs :func:`check_written_with`:
    a restore then refuses an edited ``config.json`` before it compares any shape, so the
    refusal names the edit, not another version's layout.

    >>> meta = {"config": json.loads(TrainConfig().to_json())}
    >>> written_with(TrainConfig(), "the state", "r")(5, meta)
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

    >>> meta = {"config": json.loads(TrainConfig().to_json())}
    >>> check_written_with(TrainConfig(num_training_updates=9), meta, "r", 5)  # resumable
    >>> check_written_with(TrainConfig(decay=0.0), meta, "r", 5)
    Traceback (most recent call last):
    ...
    jaxbasics.train.config.ConfigFileError: r/config.json disagrees with the config that ...

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
