"""Process-wide settings of the host a run works on (the shell's, never a pure function's):
glibc keeping XLA's freed temporaries (:func:`retain_host_memory`), and Orbax's own log records
routed to the debug level (:func:`quiet_orbax`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

# Where Orbax's records go (the checkpoint module's logger, at debug level).
log = logging.getLogger("jaxbasics.train.checkpoint")

# glibc's mallopt parameters (malloc.h) and whether retain_host_memory has applied them.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_HOST_MEMORY_RETAINED: list[bool] = []


def retain_host_memory() -> bool:
    """Keep the host memory that XLA:CPU frees after each step in the process for the next one.

    Every execution of a compiled program allocates its temporary buffer (55 MB for the
    VQ-VAE's training step at batch 32, 427 MB at batch 256) and frees it at the
    end. glibc's malloc serves blocks that large with a fresh ``mmap`` and unmaps them on
    ``free``, so every step page-faults its whole temporary buffer in again: 16% of the
    step's CPU samples at batch 32 under ``perf``. With ``mmap`` off (``M_MMAP_MAX=0``) and
    no trimming (``M_TRIM_THRESHOLD``), large blocks come from the heap and stay there, and
    the next step reuses them: the batch-32 step took 14% less time, the batch-256 one 5%
    less (``docs/speed.md``). The process then keeps its peak heap until it exits, which a
    training process reaches within its first steps anyway.

    Applied once per process, and only on Linux with glibc and the CPU backend; set
    ``JAXBASICS_RETAIN_HOST_MEMORY=0`` to leave malloc alone. Training
    (:func:`jaxbasics.train.loop.run`), evaluation and the benchmark call it.

    Returns:
      Whether the setting is in effect.
    """
    if not _HOST_MEMORY_RETAINED:
        _HOST_MEMORY_RETAINED.append(_set_malloc_retention())
    return _HOST_MEMORY_RETAINED[0]


def _set_malloc_retention() -> bool:
    if os.environ.get("JAXBASICS_RETAIN_HOST_MEMORY", "1") == "0":
        return False
    if not sys.platform.startswith("linux") or jax.default_backend() != "cpu":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to set
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # -1 is SIZE_MAX as glibc's size_t threshold: the heap's top is never trimmed
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))


def _orbax_to_debug(record: logging.LogRecord) -> bool:
    """A filter routing Orbax's warnings and errors (its threads' tracebacks, and asyncio's
    about its tasks) to the checkpoint module's debug level: every failure they describe
    reaches the checkpoint module's caller, as one line."""
    if record.levelno < logging.WARNING:
        return True
    frame = sys._getframe(1)
    while frame is not None and "orbax" not in Path(frame.f_code.co_filename).parts:
        frame = frame.f_back
    if frame is None and "/orbax/" not in record.getMessage():  # not Orbax's
        return True
    log.debug("orbax: %s", record.getMessage(), exc_info=record.exc_info)
    return False


def _closed_loops_to_debug(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """``sys.unraisablehook`` routing what Orbax's I/O threads leave behind to the checkpoint
    module's debug level: after a failed save or read, its pending I/O completes into event
    loops it already closed ("Event loop is closed"), and the coroutines of a damaged array's
    read end with an exception nobody awaits (a many-line TensorStore dump). The failure
    itself reaches the caller as one line."""

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        closed = isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
        if closed or _from_orbax(getattr(unraisable, "exc_traceback", None)):
            log.debug("an Orbax I/O task ended after its caller: %s", str(error).split("\n")[0])
        else:
            previous(unraisable)

    hook.closed_loops_to_debug = True
    return hook


def _from_orbax(tb: Any) -> bool:
    """Whether a traceback passes through Orbax's code."""
    while tb is not None:
        if "orbax" in Path(tb.tb_frame.f_code.co_filename).parts:
            return True
        tb = tb.tb_next
    return False


def quiet_orbax() -> None:
    """Route Orbax's own warnings and errors to the debug level, once per process.

    Every failure they describe reaches the caller of :mod:`jaxbasics.train.checkpoint` as one
    line; Orbax would print each again, as multi-line tracebacks from its threads
    (:func:`_orbax_to_debug`, :func:`_closed_loops_to_debug`).
    """
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if _orbax_to_debug not in logger.filters:
            logger.addFilter(_orbax_to_debug)
    # The read of a damaged array leaves this coroutine of Orbax's behind, unawaited.
    message = "coroutine '_read_array_index_and_device_put' was never awaited"
    warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
    if not getattr(sys.unraisablehook, "closed_loops_to_debug", False):
        sys.unraisablehook = _closed_loops_to_debug(sys.unraisablehook)
