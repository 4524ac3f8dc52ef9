"""fit(): outputs, checkpoints, fallback on a corrupt checkpoint, refusals, NaN guard.

These run in-process with one small config, so the compiled steps are shared.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxbasics.train.config import preset
from jaxbasics.train.loop import ConfigMismatchError, NonFiniteLossError, fit
from jaxbasics.train.metrics import read_jsonl

SMALL = preset(
    "quickstart",
    num_hiddens=16,
    num_residual_hiddens=4,
    embedding_dim=8,
    num_embeddings=16,
    batch_size=8,
    num_train_examples=64,
    num_eval_examples=12,
    num_training_updates=10,
    checkpoint_every=5,
    log_every=5,
    eval_every=5,
    progress=False,
)


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_fit_writes_outputs_and_learns(tmp_path):
    result = fit(SMALL.replace(num_training_updates=20), tmp_path)
    assert result.step == 20 and not result.interrupted
    for name in (
        "config.json",
        "metrics.jsonl",
        "eval.jsonl",
        "curves.png",
        "reconstructions.png",
        "data_stats.json",
    ):
        assert (tmp_path / name).exists(), name
    assert sorted(
        int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()
    ) == [10, 15, 20]  # keep_checkpoints=3
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [5, 10, 15, 20]
    assert set(metrics[0]) >= {"step", "loss", "recon_error", "perplexity", "images_per_s"}
    assert [r["step"] for r in read_jsonl(tmp_path / "eval.jsonl")] == [5, 10, 15, 20]
    meta = json.loads((tmp_path / "checkpoints/20/meta/metadata").read_text())
    assert meta["iteration"] == 20 and len(meta["train_res_recon_error"]) == 20
    assert len(meta["train_res_perplexity"]) == 20 and np.isfinite(meta["loss"])
    errors = meta["train_res_recon_error"]
    assert np.mean(errors[-5:]) < np.mean(errors[:5])  # it learns
    assert set(result.eval_metrics) >= {"recon_error", "perplexity", "used_codes"}


def test_resume_continues_exactly_in_process(tmp_path):
    straight = fit(SMALL, tmp_path / "a")
    fit(SMALL.replace(num_training_updates=5), tmp_path / "b")
    resumed = fit(SMALL, tmp_path / "b")
    for x, y in zip(_leaves(straight.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, capsys):
    fit(SMALL, tmp_path)
    latest = tmp_path / "checkpoints" / "10"
    for f in (latest / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated on disk
    result = fit(SMALL.replace(num_training_updates=12), tmp_path)
    assert result.step == 12
    assert "checkpoint 10 is unreadable" in capsys.readouterr().out
    quarantined = list((tmp_path / "corrupt_checkpoints").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith("10-")  # kept, not deleted
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == sorted(set(steps)) == [5, 10, 12]  # redone steps are not duplicated


def test_incompatible_config_is_refused_with_field_names(tmp_path):
    fit(SMALL.replace(num_training_updates=5), tmp_path)
    with pytest.raises(ConfigMismatchError, match=r"batch_size: saved 8, requested 4") as e:
        fit(SMALL.replace(batch_size=4, learning_rate=0.01), tmp_path)
    assert "learning_rate" in str(e.value) and "--workdir" in str(e.value)
    # a longer run of the same experiment is fine
    assert fit(SMALL.replace(num_training_updates=6), tmp_path).step == 6


def test_non_finite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"at step 7\b.*step 5"):
        fit(SMALL.replace(debug_nan_step=7), tmp_path)
    steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps == [5]


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
            ),
            tmp_path,
        )
    assert result.step == 3 and np.isfinite(result.eval_metrics["recon_error"])
    assert json.loads(Path(tmp_path / "config.json").read_text())["dataset"] == "cifar10"
