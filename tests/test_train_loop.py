"""fit(): outputs, checkpoints, the three restore cases, refusals, the non-finite guard.

These run in-process with one small config, so the compiled steps are shared.
"""

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import optax
import pytest

from conftest import interrupt_after, small_config
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.data import sources
from jaxbasics.tasks.vqvae.evaluate import evaluate
from jaxbasics.tasks.vqvae.train import make_eval_step
from jaxbasics.train import NonFiniteError, fit, loop
from jaxbasics.train.checkpoint import (
    Checkpointer,
    CheckpointWriteError,
    IncompatibleCheckpointError,
)
from jaxbasics.train.metrics import read_jsonl
from jaxbasics.train.resume import ConfigFileError, ConfigMismatchError, load_config

SMALL = small_config()


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def _ckpt_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _hashes(workdir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(workdir.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(workdir)) + "/": "dir" for p in workdir.rglob("*") if p.is_dir()}


def test_fit_writes_outputs_and_learns(tmp_path):
    result = fit(SMALL.replace(num_training_updates=20), tmp_path)
    assert result.step == 20 and not result.interrupted
    for name in (
        "config.json",
        "metrics.jsonl",
        "eval.jsonl",
        "curves.png",
        "reconstructions.png",
        "codebook.png",
        "data_stats.json",
    ):
        assert (tmp_path / name).exists(), name
    assert _ckpt_steps(tmp_path) == [10, 15, 20]  # keep_checkpoints=3
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [5, 10, 15, 20]
    assert set(metrics[0]) >= {"step", "loss", "recon_error", "perplexity", "images_per_s"}
    assert [r["step"] for r in read_jsonl(tmp_path / "eval.jsonl")] == [5, 10, 15, 20]
    meta = json.loads((tmp_path / "checkpoints/20/meta/metadata").read_text())
    assert meta["iteration"] == 20 and len(meta["train_res_recon_error"]) == 20
    assert len(meta["train_res_perplexity"]) == 20 and np.isfinite(meta["loss"])
    errors = meta["train_res_recon_error"]
    assert np.mean(errors[-5:]) < np.mean(errors[:5])  # it learns
    # the logged values are the per-step history's, at the logged steps
    assert [r["recon_error"] for r in metrics] == [errors[s - 1] for s in (5, 10, 15, 20)]
    assert set(result.eval_metrics) >= {"recon_error", "perplexity", "used_codes"}


def test_resume_continues_exactly_in_process(tmp_path):
    straight = fit(SMALL, tmp_path / "a")
    fit(SMALL.replace(num_training_updates=5), tmp_path / "b")
    resumed = fit(SMALL, tmp_path / "b")
    for x, y in zip(_leaves(straight.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)
    # Rerunning the finished run changes no record and no setting; going back is refused.
    logs = {n: (tmp_path / "b" / n).read_bytes() for n in ("eval.jsonl", "metrics.jsonl")}
    again = fit(SMALL, tmp_path / "b")
    assert again.step == 10 and again.eval_metrics == resumed.eval_metrics
    assert {n: (tmp_path / "b" / n).read_bytes() for n in logs} == logs
    with pytest.raises(ValueError, match="is at step 10, past --num-training-updates 5"):
        fit(SMALL.replace(num_training_updates=5), tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["num_training_updates"] == 10


def test_truncated_newest_checkpoint_is_quarantined_and_logs_kept(tmp_path, caplog):
    fit(SMALL, tmp_path)
    before = read_jsonl(tmp_path / "metrics.jsonl")
    latest = tmp_path / "checkpoints" / "10"
    for f in (latest / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "METADATA" not in f.name:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated on disk
    with caplog.at_level(logging.INFO, logger="jaxbasics"):
        result = fit(SMALL.replace(num_training_updates=12), tmp_path)
    assert result.step == 12
    assert "checkpoint 10 is unreadable" in caplog.text
    assert "Resuming from checkpoint at step 5" in caplog.text
    quarantined = list((tmp_path / "corrupt_checkpoints").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith("10-")  # kept, not deleted
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == [5, 10, 12]  # the redone steps are logged once
    # the rewound line (step 10 of the first run) was set aside, not deleted
    side = read_jsonl(tmp_path / "metrics.jsonl.rewound-5")
    assert side == [r for r in before if r["step"] > 5]
    assert read_jsonl(tmp_path / "eval.jsonl.rewound-5")[0]["step"] == 10


def test_incompatible_config_is_refused_with_field_names(tmp_path):
    fit(SMALL.replace(num_training_updates=5), tmp_path)
    with pytest.raises(ConfigMismatchError, match=r"batch_size: saved 8, requested 4") as e:
        fit(SMALL.replace(batch_size=4, learning_rate=0.01), tmp_path)
    assert "learning_rate" in str(e.value) and "--workdir" in str(e.value)
    # a longer run of the same experiment is fine
    assert fit(SMALL.replace(num_training_updates=6), tmp_path).step == 6


COSINE = SMALL.replace(lr_schedule="cosine", warmup_steps=3)


def test_cosine_schedule_resumes_exactly_and_refuses_a_new_length(tmp_path, monkeypatch):
    straight = fit(COSINE, tmp_path / "a")
    with monkeypatch.context() as m:
        interrupt_after(m, 5)
        stopped = fit(COSINE, tmp_path / "b")
    assert stopped.interrupted == signal.SIGINT and stopped.step == 5
    resumed = fit(COSINE, tmp_path / "b")
    assert resumed.step == 10
    for x, y in zip(_leaves(straight.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)
    # the schedule's position is the optimiser's own step count, saved with it
    counts = [s.count for s in resumed.state.opt_state if isinstance(s, optax.ScaleByScheduleState)]
    assert [int(c) for c in counts] == [10]
    # the run's length is part of its schedule: a longer cosine run is another experiment
    with pytest.raises(ConfigMismatchError, match=r"num_training_updates: saved 10, requested 20"):
        fit(COSINE.replace(num_training_updates=20), tmp_path / "b")


@pytest.mark.parametrize("change", ["layout", "sizes", "edited"])
def test_incompatible_checkpoint_is_refused_and_nothing_changes(tmp_path, change):
    """A checkpoint from an older state layout, or from other model sizes, is refused; so is
    a config.json edited to disagree with the checkpoint, as the edit it is."""
    fit(SMALL.replace(num_training_updates=5), tmp_path)
    if change in ("sizes", "edited"):
        # config.json says 32 codes; the checkpoint holds 16 (a lost config.json is taken
        # from the checkpoint: test_a_lost_config_json_is_the_checkpoints). "sizes": the
        # config saved with the checkpoint says 32 as well, as if its arrays were another's.
        config = SMALL.replace(num_embeddings=32)
        (tmp_path / "config.json").write_text(config.replace(num_training_updates=5).to_json())
        if change == "sizes":
            meta_file = tmp_path / "checkpoints/5/meta/metadata"
            meta = json.loads(meta_file.read_text())
            meta["config"]["num_embeddings"] = 32
            meta_file.write_text(json.dumps(meta))
    else:
        # another version's TrainState, without rng (not migratable): hide it in the metadata
        config = SMALL
        meta_file = tmp_path / "checkpoints/5/state/_METADATA"
        meta = json.loads(meta_file.read_text())
        tree = meta["tree_metadata"]
        meta["tree_metadata"] = {k: v for k, v in tree.items() if "rng" not in k}
        meta_file.write_text(json.dumps(meta))
    before = _hashes(tmp_path)
    if change == "edited":
        with pytest.raises(ConfigFileError, match=r"num_embeddings: 32 in config.json, 16 in th"):
            fit(config, tmp_path)
    else:
        with pytest.raises(IncompatibleCheckpointError, match="Differing leaves") as e:
            fit(config, tmp_path)
        assert ("rng: expected but not saved" if change == "layout" else "(32, 8)") in str(e.value)
        assert "--workdir" in str(e.value)
    assert _hashes(tmp_path) == before  # byte-identical: nothing moved, written or deleted


def test_non_finite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(
    tmp_path, monkeypatch
):
    calls = []

    def nan_at_step_7(local, sharding):
        calls.append(1)
        if len(calls) == 7:
            local = np.full_like(local, np.nan)
        return jax.make_array_from_process_local_data(sharding, local)

    monkeypatch.setattr(loop, "global_batch", nan_at_step_7)
    with pytest.raises(NonFiniteError, match=r"^step 7 produced.*last good checkpoint \(step 5\)"):
        fit(SMALL.replace(kmeans_init_steps=0), tmp_path)
    assert _ckpt_steps(tmp_path) == [5]


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    """A huge learning rate overflows the parameters; the guard names the step."""
    with pytest.raises(NonFiniteError, match=r"^step (\d+) produced") as e:
        fit(SMALL.replace(learning_rate=1e38, num_training_updates=20), tmp_path)
    bad = int(e.value.args[0].split()[1])
    steps = _ckpt_steps(tmp_path)
    assert all(s < bad for s in steps)
    if steps:
        from conftest import restore

        restored = restore(tmp_path)
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.state))


def test_cifar10_through_tfds_mock(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        result = fit(
            SMALL.replace(
                dataset="cifar10",
                num_training_updates=3,
                eval_every=3,
                num_train_examples=None,
                num_eval_examples=None,
                kmeans_init_steps=2,
            ),
            tmp_path,
        )
    assert result.step == 3 and np.isfinite(result.eval_metrics["recon_error"])
    assert json.loads(Path(tmp_path / "config.json").read_text())["dataset"] == "cifar10"


def test_evaluation_pictures_leave_out_the_padding_rows(tmp_path):
    config = SMALL.replace(num_training_updates=1, num_eval_examples=5)  # batch 8: 3 padding
    result = fit(config, tmp_path)
    data = sources(config)
    eval_step = make_eval_step(config)
    evaluation = evaluate(eval_step, result.state, data.test, data.variance, config.batch_size)
    assert evaluation.originals.shape[0] == evaluation.reconstructions.shape[0] == 5
    expected = np.stack([data.test[i]["image"] for i in range(5)]) / 255.0 - 0.5
    np.testing.assert_allclose(evaluation.originals, expected, atol=1e-6)


def test_a_lost_config_json_is_the_checkpoints(workdir, tmp_path, caplog):
    """Without config.json the newest checkpoint's config is the run's: new settings are
    refused naming the fields, and a compatible rerun resumes and writes config.json again."""
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    (copy / "config.json").unlink()
    with pytest.raises(ConfigMismatchError) as e:
        fit(SMALL.replace(learning_rate=0.01, seed=3), copy)
    assert "learning_rate: saved 0.002, requested 0.01" in str(e.value)
    assert "seed: saved 0, requested 3" in str(e.value)
    assert not (copy / "config.json").exists()  # refused: nothing written
    with caplog.at_level(logging.INFO, logger="jaxbasics"):
        assert fit(SMALL.replace(num_training_updates=11), copy).step == 11
    assert "config.json is missing: the run's config is the one saved with checkpoint 10" in (
        caplog.text
    )
    assert "Resuming from checkpoint at step 10" in caplog.text
    assert load_config(copy, VQVAEConfig) == SMALL.replace(num_training_updates=11)


def test_damaged_metadata_is_unreadable_not_incompatible(tmp_path, caplog):
    """Garbled or missing state metadata, and a junk step folder, are damage like truncated
    arrays: each is moved to corrupt_checkpoints/ and training resumes from the newest intact
    checkpoint."""
    fit(SMALL.replace(num_training_updates=15), tmp_path)
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "15/state/_METADATA").write_text("{garbled")
    (checkpoints / "10/state/_METADATA").unlink()
    (checkpoints / "20").mkdir()
    with caplog.at_level(logging.INFO, logger="jaxbasics"):
        assert fit(SMALL.replace(num_training_updates=16), tmp_path).step == 16
    assert "Resuming from checkpoint at step 5" in caplog.text
    moved = sorted(p.name.split("-")[0] for p in (tmp_path / "corrupt_checkpoints").iterdir())
    assert moved == ["10", "15", "20"]


def test_a_checkpoint_without_code_usage_is_migrated(tmp_path, caplog):
    """A checkpoint an older version wrote, without code_usage (and without the open log
    interval in its meta), is restored with code_usage at its starting value; training
    continues from its step with its logs."""
    from conftest import restore

    fit(SMALL.replace(num_training_updates=5), tmp_path)
    full = restore(tmp_path)
    shutil.rmtree(tmp_path / "checkpoints/5")
    names = [f.name for f in dataclasses.fields(full.state) if f.name != "code_usage"]
    meta = {k: v for k, v in full.meta.items() if k != "open_interval"}
    older = Checkpointer(tmp_path)
    older.save(5, {name: getattr(full.state, name) for name in names}, meta, full.data_iter)
    older.close()
    migrated = restore(tmp_path)
    np.testing.assert_array_equal(migrated.state.code_usage, np.ones(16, np.float32))
    for x, y in zip(_leaves(migrated.state.opt_state), _leaves(full.state.opt_state), strict=True):
        np.testing.assert_array_equal(x, y)
    with caplog.at_level(logging.INFO, logger="jaxbasics"):
        assert fit(SMALL, tmp_path).step == 10
    assert "checkpoint 5 was written by an older version, without code_usage" in caplog.text
    assert "Resuming from checkpoint at step 5" in caplog.text
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [5, 10]
    assert not (tmp_path / "corrupt_checkpoints").exists()


def test_usage_logs_are_exact_across_a_stop(tmp_path, monkeypatch):
    """Stopped at step 3, inside the log interval of steps 1-5, and resumed: the usage
    histograms and counts logged equal the uninterrupted run's."""
    fit(SMALL, tmp_path / "a")
    with monkeypatch.context() as m:
        interrupt_after(m, 3)
        assert fit(SMALL, tmp_path / "b").step == 3
    fit(SMALL, tmp_path / "b")
    usage = [read_jsonl(tmp_path / run / "codebook_usage.jsonl") for run in "ab"]
    assert [r["step"] for r in usage[1]] == [5, 10] and usage[0] == usage[1]
    assert sum(usage[1][0]["counts"]) == 5 * SMALL.batch_size * 8 * 8  # every latent of 5 steps
    metrics = [read_jsonl(tmp_path / run / "metrics.jsonl") for run in "ab"]
    untimed = [[{k: v for k, v in r.items() if k != "images_per_s"} for r in m] for m in metrics]
    assert untimed[0] == untimed[1]


def test_a_failed_save_is_one_line_and_leaves_no_temporary_files(
    tmp_path, monkeypatch, capfd, caplog
):
    """A full disk while a checkpoint is written: one line naming the checkpoint, its folder
    and the cause; what Orbax reports about it goes to the debug level; no temporary folder is
    left."""
    import orbax.checkpoint as ocp

    async def disk_full(self, item, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", disk_full)
    with pytest.raises(CheckpointWriteError) as e:
        fit(SMALL, tmp_path)
    message = str(e.value)
    assert message.startswith(f"could not write checkpoint 5 in {tmp_path / 'checkpoints'} (")
    assert "No space left on device" in message and "\n" not in message
    assert not list((tmp_path / "checkpoints").glob("*orbax-checkpoint-tmp*"))
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # Orbax's I/O threads, finishing after the failure into event loops it closed
    printed = []
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    Checkpointer(tmp_path, read_only=True).close()
    closed, other = (
        SimpleNamespace(exc_value=e) for e in (RuntimeError("Event loop is closed"), KeyError())
    )
    sys.unraisablehook(closed)
    sys.unraisablehook(other)
    assert printed == [other]
