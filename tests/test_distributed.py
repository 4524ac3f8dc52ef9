"""Data parallelism: 8 simulated CPU devices, 2 processes on localhost, portable checkpoints.

Every multi-device run is a subprocess (device count is fixed at JAX start-up); the
1-device runs happen in this process and share its compiled steps.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_train_cli import TINY
from test_train_loop import SMALL

from jaxbasics.train.checkpoint import Checkpointer
from jaxbasics.train.loop import abstract_train_state, fit
from jaxbasics.train.metrics import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "experiments" / "train_vqvae.py")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla_cache"))


def _cli(workdir, cache, *extra, devices=8, env=None):
    cmd = [
        sys.executable,
        TRAIN,
        *TINY,
        "--workdir",
        str(workdir),
        "--compilation-cache",
        cache,
        *extra,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices), **(env or {})}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )


def _ok(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    return out


def _state(workdir, config):
    ckpt = Checkpointer(workdir)
    restored = ckpt.restore_latest(abstract_train_state(config))
    ckpt.close()
    return restored


def _assert_close(a, b, tol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("decay", [0.0, 0.99])
def test_eight_devices_follow_the_one_device_trajectory(tmp_path, cache, decay):
    steps = 6
    config = SMALL.replace(decay=decay, num_training_updates=steps, eval_every=steps)
    one = fit(config, tmp_path / "one")
    out = _ok(
        _cli(
            tmp_path / "eight",
            cache,
            "--decay",
            str(decay),
            "--num-training-updates",
            str(steps),
            "--eval-every",
            str(steps),
        )
    )
    assert "devices: [" in out and out.count("CpuDevice") == 8
    eight = _state(tmp_path / "eight", config)
    assert eight.step == steps
    _assert_close(one.state, eight.state)
    # perplexity and EMA statistics are over the global batch, not per device
    np.testing.assert_allclose(
        eight.meta["train_res_perplexity"],
        _state(tmp_path / "one", config).meta["train_res_perplexity"],
        rtol=1e-5,
    )


def test_checkpoints_move_between_device_counts(tmp_path, cache):
    config = SMALL.replace(num_training_updates=12)
    straight = fit(config, tmp_path / "straight")
    w = tmp_path / "moved"
    _ok(_cli(w, cache, "--num-training-updates", "4"))  # 8 devices: steps 1-4
    fit(config.replace(num_training_updates=8), w)  # 1 device: steps 5-8
    _ok(_cli(w, cache, "--num-training-updates", "12"))  # 8 devices again: steps 9-12
    moved = _state(w, config)
    assert moved.step == 12
    _assert_close(straight.state, moved.state)
    # logged every 5 steps and at the end of each of the three runs, never twice
    assert [r["step"] for r in read_jsonl(w / "metrics.jsonl")] == [4, 5, 8, 10, 12]


def test_batch_must_divide_across_devices(tmp_path, cache):
    proc = _cli(tmp_path, cache, "--batch-size", "12")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "batch_size 12 does not divide across 8 devices" in err and "16" in err


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_match_one_process(tmp_path, cache):
    steps = 6
    config = SMALL.replace(num_training_updates=steps, eval_every=steps)
    one = fit(config, tmp_path / "one")
    port = _free_port()
    procs = [
        _cli(
            tmp_path / "two",
            cache,
            "--num-training-updates",
            str(steps),
            "--eval-every",
            str(steps),
            devices=1,
            env={
                "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
        )
        for i in range(2)
    ]
    for p in procs:
        _ok(p, timeout=300)
    two = _state(tmp_path / "two", config)
    assert two.step == steps
    _assert_close(one.state, two.state)
    # one process writes the logs: no duplicated lines
    assert [r["step"] for r in read_jsonl(tmp_path / "two" / "metrics.jsonl")] == [5, 6]
