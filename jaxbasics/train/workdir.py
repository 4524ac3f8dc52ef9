"""A workdir belongs to one run at a time.

:func:`hold` locks a workdir for a training run (and ``sample.py``'s ``--out`` for one
sampling run): ``fcntl.flock`` on ``<workdir>/run.lock``, taken before anything in the
workdir is read for resuming or written, and released when the run ends. A second run on a
held workdir is refused at once, naming the holder (the file holds its host and PID, for
that message only). The kernel releases the lock of a process that dies, so the file a
killed run leaves behind never blocks a rerun. With several JAX processes, process 0 holds
the lock and tells the others whether it got it. Readers (``load``, ``evaluate.py``) take no
lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np

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
