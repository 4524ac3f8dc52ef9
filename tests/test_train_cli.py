"""The main job as a user runs it: subprocesses of experiments/train_vqvae.py and evaluate.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxbasics.train.config import TrainConfig, load_config
from jaxbasics.train.metrics import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "experiments" / "train_vqvae.py")
EVALUATE = str(ROOT / "experiments" / "evaluate.py")
TINY = [
    "--preset",
    "quickstart",
    "--num-hiddens",
    "16",
    "--num-residual-hiddens",
    "4",
    "--embedding-dim",
    "8",
    "--num-embeddings",
    "16",
    "--batch-size",
    "8",
    "--num-train-examples",
    "64",
    "--num-eval-examples",
    "12",
    "--num-training-updates",
    "40",
    "--checkpoint-every",
    "5",
    "--log-every",
    "5",
    "--eval-every",
    "20",
    "--progress",
    "false",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One persistent XLA cache for every subprocess here: later runs skip compiling."""
    return str(tmp_path_factory.mktemp("xla_cache"))


def _cmd(workdir, cache, *extra):
    return [
        sys.executable,
        TRAIN,
        *TINY,
        "--workdir",
        str(workdir),
        "--compilation-cache",
        cache,
        *extra,
    ]


def _run(cmd, timeout=600):
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def _start(cmd):
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def _wait_for(predicate, proc, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended early:\n{proc.stdout.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out waiting for the run to progress")


def _ckpt_steps(workdir):
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _final_state(workdir):
    from jaxbasics.train.checkpoint import Checkpointer
    from jaxbasics.train.loop import abstract_train_state

    config = load_config(workdir)
    ckpt = Checkpointer(workdir)
    restored = ckpt.restore_latest(abstract_train_state(config))
    ckpt.close()
    return restored


def test_resume_after_sigterm_and_sigkill_is_bitwise_exact(tmp_path, cache):
    straight = _run(_cmd(tmp_path / "a", cache))
    assert straight.returncode == 0, straight.stdout + straight.stderr

    b = tmp_path / "b"
    proc = _start(_cmd(b, cache))  # SIGTERM: save and stop cleanly
    _wait_for(
        lambda: (
            (b / "metrics.jsonl").exists() and read_jsonl(b / "metrics.jsonl")[-1:][0]["step"] >= 10
        ),
        proc,
    )
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "checkpoint saved" in out
    stopped = _ckpt_steps(b)[-1]
    assert 10 <= stopped < 40

    proc = _start(_cmd(b, cache))  # SIGKILL: no chance to save anything
    _wait_for(lambda: any(s > stopped + 5 for s in _ckpt_steps(b)), proc)
    proc.kill()
    proc.wait()

    final = _run(_cmd(b, cache))
    assert final.returncode == 0, final.stdout + final.stderr
    assert "Resuming from checkpoint" in final.stdout

    ra, rb = _final_state(tmp_path / "a"), _final_state(b)
    assert ra.step == rb.step == 40
    for x, y in zip(jax.tree.leaves(ra.state), jax.tree.leaves(rb.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the notes' histories: one entry per step, no gap, no duplicate, same values
    assert rb.meta["train_res_recon_error"] == ra.meta["train_res_recon_error"]
    assert len(rb.meta["train_res_perplexity"]) == 40
    steps = [r["step"] for r in read_jsonl(b / "metrics.jsonl")]
    assert steps == list(range(5, 41, 5))
    losses = {r["step"]: r["loss"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl")}
    assert {r["step"]: r["loss"] for r in read_jsonl(b / "metrics.jsonl")} == losses

    # evaluate.py on the finished run: one JSON line and a reconstruction grid
    ev = _run([sys.executable, EVALUATE, "--workdir", str(b)])
    assert ev.returncode == 0, ev.stderr
    line = json.loads(ev.stdout.strip().splitlines()[-1])
    assert line["step"] == 40 and line["num_examples"] == 12
    assert line["recon_error"] > 0 and line["perplexity"] >= 1
    assert (b / "eval_reconstructions.png").stat().st_size > 0


def test_missing_cifar10_fails_fast_with_instructions(tmp_path, cache):
    t = time.time()
    r = _run(
        _cmd(
            tmp_path / "run",
            cache,
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path / "nothing-here"),
        )
    )
    assert r.returncode == 1
    assert "not found" in r.stderr and "download_and_prepare" in r.stderr
    assert "cifar-10-batches-py" in r.stderr
    assert "Traceback" not in r.stderr
    assert time.time() - t < 120


def test_incompatible_config_is_refused_by_the_cli(tmp_path, cache):
    ok = _run(_cmd(tmp_path, cache, "--num-training-updates", "2"))
    assert ok.returncode == 0, ok.stderr
    r = _run(_cmd(tmp_path, cache, "--num-training-updates", "2", "--num-embeddings", "32"))
    assert r.returncode == 1
    assert "num_embeddings: saved 16, requested 32" in r.stderr


def test_every_config_field_is_a_flag():
    r = _run([sys.executable, TRAIN, "--help"])
    assert r.returncode == 0
    for name in TrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in r.stdout, name
    for flag in ("--workdir", "--preset", "--dataset", "--data-dir"):
        assert flag in r.stdout


def test_bad_flag_values_are_explained(tmp_path):
    r = _run([sys.executable, TRAIN, "--batch-size", "0", "--workdir", str(tmp_path)])
    assert r.returncode == 2 and "batch_size must be >= 1" in r.stderr
