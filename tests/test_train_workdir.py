"""One run per workdir, a run's config from its own files, damaged files named in one line."""

import dataclasses
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import train_vqvae
from conftest import (
    TRAINED_STEPS,
    cli_env,
    cli_flags,
    main_in_process,
    restore,
    start,
    train_cmd,
    wait_for,
)
from jaxbasics.tasks.prior.config import PriorConfig
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.train import config as config_module
from jaxbasics.train.files import write_atomic
from jaxbasics.train.metrics import read_jsonl
from jaxbasics.train.resume import ConfigFileError, load_config
from jaxbasics.train.workdir import LOCK, WorkdirInUseError, hold


def _records(workdir: Path, name: str) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "images_per_s"}
        for r in read_jsonl(workdir / f"{name}.jsonl")
    ]


def test_a_second_run_on_a_held_workdir_stops_at_once(tmp_path, workdir, xla_cache, capsys):
    """The first run (held still while the second starts, here) ends as if it had been alone:
    the same records, once each, and the same parameters as the shared finished run."""
    w = tmp_path / "run"
    first = start(train_cmd(w, xla_cache, num_training_updates=TRAINED_STEPS, eval_every=5))
    wait_for(lambda: (w / LOCK).exists() and str(first.pid) in (w / LOCK).read_text(), first)
    os.kill(first.pid, signal.SIGSTOP)  # it holds the lock, and cannot finish meanwhile
    try:
        t = time.time()
        argv = [*cli_flags(num_training_updates=TRAINED_STEPS, eval_every=5), "--workdir", str(w)]
        code, out, err = main_in_process(train_vqvae, argv, capsys)
        waited = time.time() - t
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert code == 1, out + err
    error = err.strip().splitlines()[-1]
    assert f"{w.absolute()} is in use by another training run" in error
    assert f"pid {first.pid}" in error and "another --workdir" in error
    assert "Traceback" not in err and waited < 60
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out
    for name in ("metrics", "eval", "codebook_usage"):
        assert _records(w, name) == _records(workdir, name), name
    assert not list(w.glob("*.rewound-*")) and not (w / LOCK).exists()
    alone, shared = restore(w), restore(workdir)
    for x, y in zip(jax.tree.leaves(alone.state), jax.tree.leaves(shared.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_the_lock_names_its_holder_and_a_stale_one_never_blocks(tmp_path):
    w = tmp_path / "run"
    w.mkdir()
    (w / LOCK).write_text('{"host": "gone", "pid": 999999}')  # a killed run's: no flock
    with hold(w):
        assert json.loads((w / LOCK).read_text())["pid"] == os.getpid()
    assert not (w / LOCK).exists()  # released and removed

    (w / LOCK).write_text('{"host": "elsewhere", "pid": 4242}')
    fd = os.open(w / LOCK, os.O_RDWR)  # another run's hold
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(WorkdirInUseError, match=r"\(host elsewhere, pid 4242\); wait for"):
            with hold(w):
                pass
    finally:
        os.close(fd)
    assert (w / LOCK).exists()  # the holder's file is left alone

    (w / LOCK).unlink()
    (tmp_path / "precious").write_text("keep")
    (w / LOCK).symlink_to(tmp_path / "precious")  # planted: the lock is never written through
    with pytest.raises(OSError):
        with hold(w):
            pass
    assert (tmp_path / "precious").read_text() == "keep"


def test_every_process_of_a_multi_process_run_stops_on_a_held_workdir(tmp_path, xla_cache):
    """Process 0 finds the workdir held; the other process hears it instead of waiting."""
    (tmp_path / LOCK).write_text('{"host": "elsewhere", "pid": 4242}')
    fd = os.open(tmp_path / LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    try:
        procs = [
            start(
                train_cmd(tmp_path, xla_cache),
                env=cli_env(
                    JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                    JAX_NUM_PROCESSES="2",
                    JAX_PROCESS_ID=str(i),
                ),
            )
            for i in range(2)
        ]
        outs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        os.close(fd)
    assert [p.returncode for p in procs] == [1, 1], outs
    assert "(host elsewhere, pid 4242)" in outs[0]
    assert "process 0 could not take the lock" in outs[1]
    assert "Traceback" not in outs[0] + outs[1]


def test_a_workdir_made_for_a_run_that_cannot_start_is_removed(tmp_path):
    with pytest.raises(FileNotFoundError):
        with hold(tmp_path / "new" / "run"):
            raise FileNotFoundError("no data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "value, expected",
    [
        ("16", "batch_size must be an int, got '16'"),
        (8.0, "batch_size must be an int, got 8.0"),
        (None, "batch_size must be an int, got None"),
        ([8], "batch_size must be an int, got [8]"),
        (True, "batch_size must be an int, got True"),
    ],
)
def test_wrong_types_in_config_json_are_named(tmp_path, value, expected):
    (tmp_path / "config.json").write_text(json.dumps({"batch_size": value}))
    with pytest.raises(ConfigFileError) as e:
        load_config(tmp_path, VQVAEConfig)
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'config.json'} is damaged: {expected}. Fix it")
    assert "\n" not in message


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"dataset": "imagenet"}, "dataset must be one of ['shapes', 'cifar10', 'folder']"),
        ({"progress": 1}, "progress must be true or false, got 1"),
        ({"num_train_examples": "5"}, "num_train_examples must be an int or null, got '5'"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ],
)
def test_unknown_and_invalid_values_are_named(tmp_path, fields, expected):
    (tmp_path / "config.json").write_text(_config_json(**fields))
    with pytest.raises(ConfigFileError, match="is damaged") as e:
        load_config(tmp_path, VQVAEConfig)
    assert expected in str(e.value)


def _config_json(**changes) -> str:
    """A whole config.json, with ``changes``."""
    return json.dumps({**json.loads(VQVAEConfig().to_json()), **changes})


def test_types_that_fit(tmp_path):
    (tmp_path / "config.json").write_text(
        _config_json(learning_rate=1, num_train_examples=None, data_dir="d")
    )
    config = load_config(tmp_path, VQVAEConfig)
    assert config.learning_rate == 1 and config.num_train_examples is None
    assert VQVAEConfig.from_json(VQVAEConfig().to_json()) == VQVAEConfig()


@pytest.mark.parametrize("damage", ["truncated", "wrong type"])
def test_the_cli_names_a_damaged_config_json_in_one_line(tmp_path, damage, capsys):
    text = VQVAEConfig().to_json()
    (tmp_path / "config.json").write_text(
        text[: len(text) // 2]
        if damage == "truncated"
        else text.replace('"batch_size": 32', '"batch_size": "16"')
    )
    code, _, err = main_in_process(train_vqvae, [*cli_flags(), "--workdir", str(tmp_path)], capsys)
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{tmp_path / 'config.json'} is damaged" in errors[0]
    assert "usage:" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_the_cli_names_a_damaged_data_stats_json_in_one_line(workdir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    (copy / "data_stats.json").write_text('{"data_variance": ')
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    code, _, err = main_in_process(train_vqvae, [*cli_flags(), "--workdir", str(copy)], capsys)
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data_stats.json is damaged" in errors[0], err
    assert "delete it" in errors[0] and "Traceback" not in err
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_the_cli_refuses_new_settings_on_a_run_that_lost_its_config_json(workdir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    (copy / "config.json").unlink()
    argv = [*cli_flags(), "--workdir", str(copy), "--learning-rate", "0.01", "--seed", "3"]
    code, _, err = main_in_process(train_vqvae, argv, capsys)
    assert code == 1, err
    assert "config.json is missing: the run's config is the one saved with checkpoint 10" in err
    assert "learning_rate: saved 0.002, requested 0.01" in err
    assert "seed: saved 0, requested 3" in err and "Resuming" not in err
    assert not (copy / "config.json").exists()


@pytest.mark.parametrize("exists", [False, True])
def test_write_atomic_leaves_no_temporary_file_when_the_disk_is_full(tmp_path, exists):
    path = tmp_path / "config.json"
    if exists:
        path.write_text("old")

    def full_disk(file):
        file.write(b"new")  # part of it reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, full_disk)
    assert [p.name for p in tmp_path.iterdir()] == (["config.json"] if exists else [])
    assert not exists or path.read_text() == "old"


def test_write_atomic_writes_nothing_over_a_file_it_did_not_create(tmp_path, monkeypatch):
    """Its temporary name is opened exclusively: a file already there under that name (planted,
    or another writer's) is neither written nor removed."""
    path = tmp_path / "codes.npz"
    monkeypatch.setattr("secrets.token_hex", lambda n: "feed")
    planted = tmp_path / ".codes.npz.feed.tmp"
    planted.write_text("someone else's")
    with pytest.raises(FileExistsError):
        write_atomic(path, b"ours")
    assert planted.read_text() == "someone else's" and not path.exists()


def test_write_atomic_takes_a_name_as_long_as_the_file_system_allows(tmp_path):
    path = tmp_path / ("x" * 250 + ".png")
    assert write_atomic(path, b"ours").read_bytes() == b"ours"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_presets_live_with_their_model():
    assert not hasattr(config_module, "preset") and not hasattr(config_module, "PRESETS")


def test_a_config_json_lacking_a_field_is_refused_unless_older_versions_lacked_it(tmp_path):
    """A default would silently change the run (another learning rate, CIFAR-10 for shapes);
    only the fields added since older versions (LEGACY_VALUES) may be missing."""
    saved = json.loads(VQVAEConfig(learning_rate=0.002, dataset="shapes").to_json())
    for removed, expected in [
        (["learning_rate"], "['learning_rate']"),
        (list(saved), "['batch_size', 'checkpoint_every', "),
    ]:
        (tmp_path / "config.json").write_text(
            json.dumps({k: v for k, v in saved.items() if k not in removed})
        )
        with pytest.raises(ConfigFileError, match="is damaged: the config lacks the fields") as e:
            load_config(tmp_path, VQVAEConfig)
        assert expected in str(e.value) and "\n" not in str(e.value)
    older = {k: v for k, v in saved.items() if k not in VQVAEConfig.LEGACY_VALUES}
    (tmp_path / "config.json").write_text(json.dumps(older))
    assert load_config(tmp_path, VQVAEConfig) == VQVAEConfig(
        learning_rate=0.002, dataset="shapes", **VQVAEConfig.LEGACY_VALUES
    )


# The fields of the first config.json each kind of run wrote, frozen here. A field added
# since needs a LEGACY_VALUES entry (what those runs did), or their workdirs can no longer
# be read (a prior run from before --train-maps once could not be sampled).
RUN_FIELDS = """batch_size checkpoint_every data_seed eval_batches eval_every keep_checkpoints
learning_rate log_every num_training_updates progress seed""".split()
FIRST_FIELDS = {
    VQVAEConfig: RUN_FIELDS
    + """commitment_cost data_dir dataset dead_code_threshold decay embedding_dim
    kmeans_init_steps num_embeddings num_eval_examples num_hiddens num_residual_hiddens
    num_residual_layers num_train_examples""".split(),
    PriorConfig: RUN_FIELDS
    + """channels codes conditional depth dim heads kernel_size label_dropout model
    num_layers prior""".split(),
}


@pytest.mark.parametrize("cls", FIRST_FIELDS, ids=lambda c: c.__name__)
def test_every_field_added_since_the_first_runs_has_a_legacy_value(cls):
    added = {f.name for f in dataclasses.fields(cls)} - set(FIRST_FIELDS[cls])
    assert added <= set(cls.LEGACY_VALUES), f"give {added - set(cls.LEGACY_VALUES)} one"


def test_a_config_json_that_is_a_folder_is_named_in_one_line(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigFileError, match="config.json is a folder, not the run's config"):
        load_config(tmp_path, VQVAEConfig)
