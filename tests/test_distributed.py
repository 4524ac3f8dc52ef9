"""Data parallelism: 8 simulated CPU devices, 2 processes on localhost, portable checkpoints.

Every multi-device run is a subprocess (device count is fixed at JAX start-up); the
1-device runs happen in this process and share its compiled steps.
"""

import dataclasses
import signal
import socket
import subprocess
import sys

import jax
import numpy as np

from conftest import (
    EXPERIMENTS,
    checkpoint_steps,
    cli_env,
    restore,
    small_config,
    train_cmd,
    wait_for,
)
from jaxbasics.tasks.prior.config import SIZE_FIELDS
from jaxbasics.tasks.prior.trained import load_prior
from jaxbasics.train import fit
from jaxbasics.train.metrics import read_jsonl


def _cli(workdir, cache, devices=8, env=None, **overrides):
    return subprocess.Popen(
        train_cmd(workdir, cache, **overrides),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(devices, **(env or {})),
    )


def _ok(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    return out + err


def _assert_close(a, b, tol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_eight_devices_follow_the_one_device_trajectory(tmp_path, xla_cache):
    """Plain VQ, 6 steps: 8 devices end where one does (8-way sharded sums, another order)."""
    steps = 6
    config = small_config(num_training_updates=steps, eval_every=steps, decay=0.0)
    one = fit(config, tmp_path / "one")
    flags = dict(num_training_updates=steps, eval_every=steps, decay=0.0)
    out = _ok(_cli(tmp_path / "eight", xla_cache, **flags))
    assert "devices: [" in out and out.count("CpuDevice") == 8
    eight = restore(tmp_path / "eight")
    assert eight.step == steps
    _assert_close(one.state, eight.state)


def test_a_vqgan_run_on_eight_devices_follows_the_one_device_run(tmp_path, xla_cache):
    """The discriminator, its Adam state and LeCam anchors live in the same replicated state and
    see the same global batch: 8 devices end where one does, past the discriminator's start."""
    gan = dict(
        num_training_updates=6,
        eval_every=6,
        decay=0.0,
        disc_weight=0.5,
        disc_start=2,
        disc_channels=4,
        lecam_weight=0.1,
    )
    one = fit(small_config(**gan), tmp_path / "one")
    _ok(_cli(tmp_path / "eight", xla_cache, **gan))
    eight = restore(tmp_path / "eight")
    assert eight.step == 6 and int(eight.state.disc.opt_state[0].count) == 4
    _assert_close(one.state, eight.state, tol=1e-4)


# The EMA quantiser with restarts forced (threshold 0.95) and k-means init: draws over the
# global batch must not depend on how the batch is sharded.
EMA = dict(decay=0.99, dead_code_threshold=0.95, kmeans_init_steps=2)


def test_checkpoints_move_between_device_counts(tmp_path, xla_cache):
    """Steps 1-6 on 8 devices follow the 1-device run (EMA statistics and perplexity over the
    global batch, restarts and k-means alike); the checkpoint then moves to 1 device for steps
    7-9 and back to 8 for 10-12, and ends where an unmoved run does."""
    config = small_config(num_training_updates=12, **EMA)
    first = fit(config.replace(num_training_updates=6), tmp_path / "straight")
    w = tmp_path / "moved"
    out = _ok(_cli(w, xla_cache, num_training_updates=6, **EMA))  # 8 devices: steps 1-6
    assert out.count("CpuDevice") == 8
    eight = restore(w)
    _assert_close(first.state, eight.state)
    np.testing.assert_allclose(
        eight.meta["train_res_perplexity"],
        restore(tmp_path / "straight").meta["train_res_perplexity"],
        rtol=1e-5,
    )
    assert sum(r["restarted_codes"] for r in read_jsonl(w / "metrics.jsonl")) > 0
    straight = fit(config, tmp_path / "straight")  # the same run, on to step 12
    fit(config.replace(num_training_updates=9), w)  # 1 device: steps 7-9
    _ok(_cli(w, xla_cache, num_training_updates=12, **EMA))  # 8 devices again: steps 10-12
    moved = restore(w)
    assert moved.step == 12
    # 12 steps of float reductions in another order (8-way sharded sums) drift a little
    _assert_close(straight.state, moved.state, tol=1e-4)
    # logged every 5 steps and at the end of each of the three runs, never twice
    assert [r["step"] for r in read_jsonl(w / "metrics.jsonl")] == [5, 6, 9, 10, 12]


def test_batch_must_divide_across_devices(tmp_path, xla_cache):
    proc = _cli(tmp_path, xla_cache, batch_size=12)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "batch_size 12 does not divide across 8 devices" in err and "16" in err


def test_a_prior_on_eight_devices_follows_the_one_device_run(prior_workdir, tmp_path, xla_cache):
    """train_prior.py's data parallelism is the loop's: the shared 1-device prior run, repeated
    on 8 devices (its batch of 8 split 1 per device), ends at the same weights and NLL."""

    one = load_prior(prior_workdir)
    config = one.config
    flags = []
    unused = SIZE_FIELDS["pixelcnn"]  # a transformer's run refuses a PixelCNN's size flags
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is not None and field.name not in unused:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags += ["--" + field.name.replace("_", "-"), text]
    eight = tmp_path / "eight"
    cmd = [sys.executable, str(EXPERIMENTS / "train_prior.py"), *flags, "--workdir", str(eight)]
    proc = subprocess.run(
        [*cmd, "--compilation-cache", xla_cache],
        capture_output=True,
        text=True,
        env=cli_env(8),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (proc.stdout + proc.stderr).count("CpuDevice") == 8
    many = load_prior(eight)
    assert one.step == many.step == config.num_training_updates
    # The logits, not the weights: the keys' bias has gradient exactly 0 (softmax ignores a
    # shift shared by all keys), and Adam turns its round-off into steps of the learning rate.
    p = one.prior
    codes = np.random.default_rng(0).integers(0, p.num_codes, (4, p.height, p.width))
    labels = np.arange(4) % p.num_classes
    np.testing.assert_allclose(one.prior(codes, labels), many.prior(codes, labels), atol=1e-4)
    last = [read_jsonl(w / "eval.jsonl")[-1]["bits_per_code"] for w in (prior_workdir, eight)]
    np.testing.assert_allclose(*last, rtol=1e-4)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(workdir, cache, port, **overrides):
    return [
        _cli(
            workdir,
            cache,
            devices=1,
            env={
                "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
            **overrides,
        )
        for i in range(2)
    ]


def test_two_processes_on_localhost_match_one_process(tmp_path, xla_cache):
    steps = 6
    config = small_config(num_training_updates=steps, eval_every=steps)
    one = fit(config, tmp_path / "one")
    for p in _two_processes(
        tmp_path / "two", xla_cache, _free_port(), num_training_updates=steps, eval_every=steps
    ):
        _ok(p, timeout=300)
    two = restore(tmp_path / "two")
    assert two.step == steps
    _assert_close(one.state, two.state)
    # one process writes the logs: no duplicated lines
    assert [r["step"] for r in read_jsonl(tmp_path / "two" / "metrics.jsonl")] == [5, 6]


def test_sigterm_to_one_process_stops_both_after_the_same_step(tmp_path, xla_cache):
    """A signal that reaches one process stops every process, with one checkpoint."""
    w, long = tmp_path / "w", dict(num_training_updates=3000, checkpoint_every=1000, log_every=10)
    procs = _two_processes(w, xla_cache, _free_port(), **long)
    wait_for(lambda: (w / "metrics.jsonl").exists(), procs[0], timeout=300)
    procs[1].send_signal(signal.SIGTERM)  # only process 1 hears it
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [143, 143], outs
    (stopped,) = checkpoint_steps(w)  # one checkpoint, written by both together
    assert 10 <= stopped < 3000
    assert restore(w).step == stopped
    # rerunning the command resumes exactly: bitwise the state of an uninterrupted run
    more = {**long, "num_training_updates": stopped + 4}
    for p in _two_processes(w, xla_cache, _free_port(), **more):
        assert "Resuming from checkpoint at step" in _ok(p, timeout=300)
    for p in _two_processes(tmp_path / "straight", xla_cache, _free_port(), **more):
        _ok(p, timeout=300)
    resumed, straight = restore(w), restore(tmp_path / "straight")
    assert resumed.step == straight.step == stopped + 4
    for x, y in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(straight.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
