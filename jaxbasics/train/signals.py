"""Stopping cleanly: catch SIGTERM/SIGINT, and agree across processes on when to stop.

A signal only sets a flag; the loop finishes the current step, saves a checkpoint and
returns. With several processes a signal may reach only one of them (a scheduler that
preempts one host, a Ctrl-C in one terminal), yet every process must stop after the same
step and write one checkpoint together. :class:`StopAgreement` settles that through the
devices: each step, every process contributes its flag to a tiny compiled ``max`` over a
``data``-sharded array, and every process reads the result of the step :data:`LAG` steps
back, which has long finished, so the loop never waits on the step it just dispatched.
All processes read the same value at the same step, so they all stop after that step.
"""

from __future__ import annotations

import collections
import os
import signal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbasics.train.sharding import global_batch

# How many steps back the agreed flag is read: the collective of step n is read at step n + LAG.
LAG = 2


class StopFlag:
    """SIGTERM/SIGINT handler: remember the signal; a second signal stops at once.

    The first SIGTERM or SIGINT sets :attr:`signum`; the loop stops after the current step
    with a checkpoint. A second one gets the default action (the process ends at once); the
    last finished checkpoint stays intact, since Orbax renames a checkpoint into place only
    when it is complete. Two signals that reach the process before Python runs the handler
    (the main thread busy in XLA or Orbax) count as two: the C-level handler writes each one
    into a wakeup pipe (``signal.set_wakeup_fd``), which the handler reads. Two ``kill()``
    calls within microseconds of each other reach it as one, whatever it does: the kernel keeps
    one pending SIGINT at a time. A StopFlag entered while another is active (the CLI's, around
    the run's) starts with the signal the outer one caught. The handler never raises: a signal
    while the run starts up is read by :func:`jaxbasics.train.loop.run` once its checks and
    restore are done, before it writes anything (it then leaves the workdir as it was).
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None
        self._wakeup: int | None = None  # the wakeup fd before ours, once ours is set

    def __enter__(self) -> StopFlag:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
            outer = getattr(self._previous[signal.SIGINT], "__self__", None)
            if isinstance(outer, StopFlag):  # entered inside another: its signal is ours too
                self.signum = outer.signum
            self._pipe = os.pipe()
            for fd in self._pipe:
                os.set_blocking(fd, False)
            self._wakeup = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _delivered(self) -> int:
        """How many stop signals the C-level handler has seen since the last call."""
        if self._pipe is None:  # a signal while __enter__ runs: before the pipe is set
            return 0
        try:
            pending = os.read(self._pipe[0], 4096)
        except BlockingIOError:
            return 0
        return sum(b in (signal.SIGINT, signal.SIGTERM) for b in pending)

    def _handle(self, signum: int, frame: Any) -> None:
        delivered = max(1, self._delivered())
        if self.signum or delivered > 1:  # a second signal: say so, then the default action
            os.write(
                2,
                b"\nSecond stop signal: stopping now. Rerun the same command to resume from the "
                b"last finished checkpoint.\n",
            )
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        os.write(
            2,
            b"\nStopping after this step, with a checkpoint (signal again to stop at once).\n",
        )

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._wakeup)
            self._wakeup = None
        for fd in self._pipe or ():
            os.close(fd)
        self._pipe = None


class StopAgreement:
    """Turn per-process stop flags into one decision that every process takes at the same step.

    With one process, :meth:`update` returns the local flag at once. With several, it returns
    the largest signal number any process had raised :data:`LAG` steps ago (0 if none).

    Args:
      shardings: the run's :class:`~jaxbasics.train.sharding.Shardings`.
    """

    def __init__(self, shardings: Any):
        self.enabled = jax.process_count() > 1
        self._sharding = shardings.batch
        self._queue: collections.deque = collections.deque()
        if self.enabled:
            self._max = jax.jit(jnp.max, out_shardings=shardings.replicated)

    def update(self, local_signum: int) -> int:
        """Contribute this step's flag; return the agreed signal number (0: keep going)."""
        if not self.enabled:
            return local_signum
        flags = np.full((jax.local_device_count(),), local_signum, np.int32)
        self._queue.append(self._max(global_batch(flags, self._sharding)))
        if len(self._queue) <= LAG:
            return 0
        return int(self._queue.popleft())
