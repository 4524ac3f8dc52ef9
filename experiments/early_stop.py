"""A training script's first import: a stop signal while its libraries load ends it at once.

JAX, Flax and Orbax take about two seconds to import. A Ctrl-C or SIGTERM meanwhile would
otherwise print a long ``KeyboardInterrupt`` traceback, or be swallowed by a callback that
runs during the imports (and the run would go ahead). Nothing has been written yet, so this
handler writes one line and exits with 128 + the signal. The run installs its own handler
(``jaxbasics.train.signals.StopFlag``) before it writes anything.

Installed only when a script of this folder is the program (``python experiments/...``), not
when tests import the scripts.
"""

from __future__ import annotations

import os
import signal
import sys


def _stop(signum: int, frame: object) -> None:
    os.write(2, b"\nStopped before the run started; nothing was written.\n")
    os._exit(128 + signum)


_program = getattr(sys.modules.get("__main__"), "__file__", None) or ""
if os.path.dirname(os.path.abspath(_program)) == os.path.dirname(os.path.abspath(__file__)):
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, _stop)
