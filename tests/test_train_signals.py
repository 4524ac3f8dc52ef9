"""jaxbasics.train.signals.StopFlag: the first stop signal asks for a clean stop, a second one
ends the process at once, also when both reach it before Python runs the handler once.

A second signal kills the process it reaches, so each case runs in a small child process."""

import signal
import subprocess
import sys
import time

from conftest import ROOT, start, train_cmd

CHILD = """
import os, signal, sys, time
from jaxbasics.train.signals import StopFlag
with StopFlag() as stop:
    print("ready", flush=True)
    if sys.argv[1] == "pending":  # as the C-level handler does for two signals Python saw once
        os.write(stop._pipe[1], bytes([signal.SIGINT, signal.SIGINT]))
        os.kill(os.getpid(), signal.SIGINT)
    for _ in range(300):
        time.sleep(0.1)
        if stop.signum and sys.argv[1] == "one":
            break
    print("stopped cleanly by", stop.signum, flush=True)
"""


def _child(mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_one_signal_asks_for_a_clean_stop():
    proc = _child("one")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "stopped cleanly by 2"
    assert "Stopping after this step, with a checkpoint" in err


def test_a_second_signal_ends_the_process_at_once():
    proc = _child("two")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two kill()s in a row may reach a process as one: the kernel keeps one
    t = time.time()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT and time.time() - t < 10
    assert "stopped cleanly" not in out and "Second stop signal: stopping now" in err


def test_two_signals_the_handler_sees_once_count_as_two():
    proc = _child("pending")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT and "stopped cleanly" not in out
    assert "Second stop signal" in err and "Stopping after this step" not in err


def test_a_signal_while_the_libraries_load_is_one_line_and_writes_nothing(tmp_path, xla_cache):
    """train_vqvae.py imports experiments/early_stop.py first; JAX alone takes over a second to
    import, so a signal 0.4 s in comes while the libraries load."""
    proc = start(train_cmd(tmp_path / "w", xla_cache))
    time.sleep(0.4)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    assert out.strip() == "Stopped before the run started; nothing was written."
    assert not (tmp_path / "w").exists()
