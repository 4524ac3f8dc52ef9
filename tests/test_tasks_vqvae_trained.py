"""jaxbasics.tasks.vqvae.trained and export_file: load a run or an export in one call, export a
run's model, refuse misfits."""

import errno
import gc
import json
import logging
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TRAINED_STEPS, restore, small_config
from jaxbasics.tasks import vqvae
from jaxbasics.tasks.vqvae import export_file as export_module
from jaxbasics.tasks.vqvae import trained as load_module
from jaxbasics.tasks.vqvae.export_file import MODEL_FIELDS, IncompatibleModelError
from jaxbasics.tasks.vqvae.train import to_model
from jaxbasics.tasks.vqvae.trained import export, load
from jaxbasics.train import checkpoint
from jaxbasics.train.checkpoint import UnreadableCheckpointError

CONFIG = small_config(num_training_updates=TRAINED_STEPS)  # the workdir fixture's run


def _images(n=3):
    return jax.random.uniform(jax.random.key(7), (n, 32, 32, 3), minval=-0.5, maxval=0.5)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_load_a_workdir_gives_the_trained_model_in_eval_mode(workdir):
    model, config, variance, step = vqvae.load(workdir)
    assert config == CONFIG and step == 10
    assert variance == json.loads((workdir / "data_stats.json").read_text())["data_variance"]
    full = restore(workdir)
    expected = to_model(config, full.state.params, full.state.ema)
    x = _images()
    np.testing.assert_array_equal(model.encode(x), expected.encode(x))
    np.testing.assert_array_equal(model(x).recon, expected(x).recon)
    assert model.vq.use_running_average  # eval mode: EMA statistics are read, not updated
    before = np.asarray(model.vq.ema_w[...])
    model(x)
    np.testing.assert_array_equal(model.vq.ema_w[...], before)


def test_load_picks_a_step(workdir):
    assert load(workdir, step=5).step == 5
    with pytest.raises(FileNotFoundError, match="there is no step 7"):
        load(workdir, step=7)


def test_load_never_reads_the_optimiser_state(workdir, tmp_path):
    """A checkpoint whose Adam moments no longer fit still loads: they are not read."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    meta_file = copy / "checkpoints/10/state/_METADATA"
    meta = json.loads(meta_file.read_text())
    meta["tree_metadata"] = {k: v for k, v in meta["tree_metadata"].items() if "opt_state" not in k}
    meta_file.write_text(json.dumps(meta))
    x = _images()
    np.testing.assert_array_equal(load(copy).model.encode(x), load(workdir).model.encode(x))


def _copy(workdir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    return copy


def _truncate_arrays(checkpoint: Path) -> None:
    for f in (checkpoint / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "METADATA" not in f.name:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _contents(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")
    }


def test_truncated_array_data_is_one_line_of_warning(workdir, tmp_path, capfd):
    """Only the array bytes cut short (the metadata intact): Orbax's read coroutines die with
    a many-line TensorStore spec and go unawaited; the user reads one line naming the step."""
    copy = _copy(workdir, tmp_path)
    for f in (copy / "checkpoints" / "10" / "state" / "ocdbt.process_0" / "d").iterdir():
        f.write_bytes(f.read_bytes()[:16])  # every array's data, whichever file holds it
    logger = logging.getLogger("jaxbasics")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        assert load(copy).step == 5
        gc.collect()  # the dead coroutines are reported when collected
    finally:
        logger.removeHandler(handler)
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "skipped checkpoint 10: Exception: Encountered error" in err
    assert "TensorStore" not in err and "never awaited" not in err


def test_load_falls_back_past_damaged_checkpoints_and_moves_nothing(workdir, tmp_path, caplog):
    """Truncated arrays in the newest checkpoint, and a junk folder newer still: load, export
    and the scripts' --model read checkpoint 5 as training would, say so in one line, and
    change no file."""
    from common import load_model

    copy = _copy(workdir, tmp_path)
    _truncate_arrays(copy / "checkpoints/10")
    (copy / "checkpoints/70").mkdir()
    (copy / "checkpoints/70/junk").write_text("junk")
    before = _contents(copy)
    with caplog.at_level(logging.WARNING, logger="jaxbasics"):
        loaded = load(copy)
    assert loaded.step == 5
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"read checkpoint 5 of {copy.absolute()}, the newest readable")
    assert "skipped checkpoint 70" in warning and "; checkpoint 10: " in warning
    assert "\n" not in warning
    x = _images()
    np.testing.assert_array_equal(loaded.model.encode(x), load(workdir, step=5).model.encode(x))
    assert load_model(str(copy)).step == 5
    assert load(export(copy, tmp_path / "model.msgpack")).step == 5
    assert _contents(copy) == before


def test_an_unreadable_step_or_run_is_one_line_naming_the_readable_ones(workdir, tmp_path, capsys):
    """Missing metadata is unreadable, not another version's layout: step 10 without it is
    refused naming step 5, and with every checkpoint unreadable the error names each."""
    copy = _copy(workdir, tmp_path)
    (copy / "checkpoints/10/state/_METADATA").unlink()
    with pytest.raises(UnreadableCheckpointError) as e:
        load(copy, step=10)
    assert str(e.value).startswith("checkpoint 10: its state metadata is missing")
    assert "readable: [5]" in str(e.value) and "\n" not in str(e.value)
    (copy / "checkpoints/5/state/_METADATA").write_text("{garbled")
    with pytest.raises(UnreadableCheckpointError, match="^no checkpoint in .* can be read") as e:
        load(copy)
    assert "checkpoint 10: " in str(e.value) and "checkpoint 5: " in str(e.value)
    assert "\n" not in str(e.value)
    from common import load_model  # what every --model script calls: one line, exit 1

    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        load_model(str(copy))
    assert stop.value.code == 1
    assert capsys.readouterr().err.startswith("error: no checkpoint in ")


def test_a_reader_skips_the_checkpoint_its_run_deletes_meanwhile(
    workdir, tmp_path, monkeypatch, caplog
):
    """While load reads checkpoint 10, the live run (keeping 3) saves 15, 20 and 25 and is
    deleting 10: that is no damage, so no warning; the newest checkpoint is read."""

    copy = _copy(workdir, tmp_path)
    ckpts = copy / "checkpoints"
    restore = checkpoint.Checkpointer.restore

    def run_meanwhile(self, step, *args, **kwargs):
        if step == 10 and not (ckpts / "25").exists():
            for new in (15, 20, 25):
                shutil.copytree(ckpts / "10", ckpts / str(new))
            shutil.rmtree(ckpts / "5")
            (ckpts / "10/state/_METADATA").unlink()  # the deletion of 10 under way
        return restore(self, step, *args, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpointer, "restore", run_meanwhile)
    with caplog.at_level(logging.WARNING, logger="jaxbasics"):
        assert load(copy).step == 25
    assert not caplog.records
    assert sorted(p.name for p in ckpts.iterdir()) == ["10", "15", "20", "25"]


def test_evaluate_py_reads_the_newest_readable_checkpoint(workdir, tmp_path, capsys):
    import evaluate as evaluate_script

    copy = _copy(workdir, tmp_path)
    _truncate_arrays(copy / "checkpoints/10")
    assert evaluate_script.main(["--workdir", str(copy)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 5
    assert (copy / "checkpoints/10").is_dir()  # a reader moves nothing
    (copy / "checkpoints/5/state/_METADATA").unlink()
    assert evaluate_script.main(["--workdir", str(copy)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no checkpoint in") and "\n" not in err


def test_evaluate_py_on_a_workdir_it_cannot_write_prints_its_result_first(
    workdir, capsys, monkeypatch
):
    """A read-only workdir: the evaluation is printed, then one line says the figures could
    not be written and where to put them instead."""
    import evaluate as evaluate_script

    def read_only(evaluation, codebook, grid, codebook_png):
        raise OSError(errno.EROFS, "Read-only file system", str(grid))

    monkeypatch.setattr(evaluate_script, "save_figures", read_only)
    assert evaluate_script.main(["--workdir", str(workdir)]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 10
    assert err.count("\n") == 1 and "Read-only file system" in err and "--out" in err


def test_evaluate_py_never_writes_over_a_given_out(workdir, tmp_path, capsys):
    import evaluate as evaluate_script

    (tmp_path / "eval_codebook.png").write_bytes(b"mine")
    assert evaluate_script.main(["--workdir", str(workdir), "--out", str(tmp_path / "r.png")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "eval_codebook.png exists" in err and err.count("\n") == 1
    assert (tmp_path / "eval_codebook.png").read_bytes() == b"mine"
    assert not (tmp_path / "r.png").exists()


def test_export_is_small_and_loads_to_the_same_model(workdir, tmp_path):
    path = export(workdir, tmp_path / "model.msgpack")
    checkpoint = _size(workdir / "checkpoints" / "10")
    assert checkpoint / path.stat().st_size >= 2.5, (checkpoint, path.stat().st_size)
    a, b = load(workdir), load(path)
    assert (a.config, a.data_variance, a.step) == (b.config, b.data_variance, b.step)
    x = _images()
    np.testing.assert_array_equal(
        a.model.decode_indices(a.model.encode(x)), b.model.decode_indices(b.model.encode(x))
    )


def test_a_model_of_other_sizes_is_refused_naming_the_fields(workdir, tmp_path):
    path = export(workdir, tmp_path / "model.msgpack")
    other = CONFIG.replace(num_embeddings=32, embedding_dim=4)
    for source in (workdir, path):
        with pytest.raises(IncompatibleModelError) as e:
            load(source, expect=other)
        assert "num_embeddings: saved 16, expected 32" in str(e.value)
        assert "embedding_dim: saved 8, expected 4" in str(e.value) and "\n" not in str(e.value)
    assert set(MODEL_FIELDS) >= {
        "num_embeddings",
        "embedding_dim",
        "num_hiddens",
        "decay",
        "quantizer",
        "fsq_levels",
    }


def test_an_export_whose_arrays_misfit_its_config_is_refused(workdir, tmp_path):
    import flax.serialization

    path = export(workdir, tmp_path / "model.msgpack")
    payload = flax.serialization.msgpack_restore(path.read_bytes())
    payload["config"]["num_embeddings"] = 32  # the arrays still hold 16 codes
    path.write_bytes(flax.serialization.msgpack_serialize(payload))
    with pytest.raises(
        IncompatibleModelError, match="config says num_embeddings = 32, the stored weights 16"
    ):
        load(path)
    (tmp_path / "junk.msgpack").write_bytes(b"not a model")
    with pytest.raises(IncompatibleModelError, match="is not a model file"):
        load(tmp_path / "junk.msgpack")
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="neither a training workdir"):
        load(tmp_path)
    with pytest.raises(ValueError, match="pass the training workdir to choose a checkpoint"):
        load(tmp_path / "junk.msgpack", step=3)


def test_the_readme_snippet_runs(workdir, capsys):
    """The README's 'Use a trained model' Python block runs as written (on a real run) and
    prints what the README says it prints, but for the error of this tiny model."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(block.replace("runs/quickstart", str(workdir)), namespace)
    assert namespace["codes"].shape == (4, 8, 8) and namespace["codes"].dtype == jnp.int32
    assert namespace["recon"].shape == (4, 32, 32, 3)
    printed = capsys.readouterr().out.split()
    assert printed[:4] == ["(4,", "8,", "8)", "uint8"] and 0 <= int(printed[4]) <= 255


def _tampered(payload, change):
    import copy

    payload = copy.deepcopy(payload)
    change(payload)
    return payload


# A crafted export: each change, and what the refusal must name.
CRAFTED = {
    "no params": (lambda p: p.pop("params"), "'params' field is missing"),
    "params a string": (lambda p: p.update(params="x"), "'params' field is a str"),
    "a leaf a string": (
        lambda p: p["params"]["encoder"]["conv_1"].update(kernel="x"),
        "'params' field/encoder/conv_1/kernel is a str",
    ),
    "codebook a list": (lambda p: p["ema"]["vq"].update(codebook=[1.0]), "vq/codebook is a list"),
    "ema of another shape": (
        lambda p: p["ema"].update(other=np.zeros(2, np.float32)),
        "other: saved but not expected",
    ),
    "config holding an array": (
        lambda p: p["config"].update(seed=np.zeros(2)),
        "'config' field is no config",
    ),
    "no ema": (lambda p: p.pop("ema"), "'ema' field is missing"),
    "no config": (lambda p: p.pop("config"), "'config' field is missing"),
    "config a list": (lambda p: p.update(config=[1]), "'config' field is a list"),
    "K a string": (
        lambda p: p["config"].update(num_embeddings="16"),
        "num_embeddings must be an int",
    ),
    "K a bool": (lambda p: p["config"].update(num_hiddens=True), "num_hiddens must be an int"),
    "step a string": (lambda p: p.update(step="10"), "'step' field is a str"),
    "step negative": (lambda p: p.update(step=-1), "'step' .* out of range"),
    "variance a string": (lambda p: p.update(data_variance="0.1"), "'data_variance' field"),
    "variance nan": (lambda p: p.update(data_variance=float("nan")), "out of range"),
    "version a string": (lambda p: p.update(version="1"), "'version' field is a str"),
    "no format": (lambda p: p.pop("format"), "'format' field"),
}


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
    """The msgpack payload of the trained run's export."""
    import flax.serialization

    path = export(workdir, tmp_path_factory.mktemp("export") / "model.msgpack")
    return flax.serialization.msgpack_restore(path.read_bytes())


@pytest.mark.parametrize("case", CRAFTED)
def test_a_crafted_export_is_refused_naming_the_field(case, exported, tmp_path):
    import flax.serialization

    change, message = CRAFTED[case]
    path = tmp_path / "model.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(_tampered(exported, change)))
    with pytest.raises(IncompatibleModelError, match=message) as e:
        load(path)
    assert str(e.value).startswith(str(path))
    path.write_bytes(flax.serialization.msgpack_serialize(_tampered(exported, lambda p: None)))
    assert load(path).step == TRAINED_STEPS  # the untampered payload loads


# An export whose config declares sizes its arrays do not have, and the refusal.
DECLARED = {
    "num_hiddens": (2_000_000, 16),  # np.zeros of the declared params: 116 TiB
    "num_residual_layers": (10**7, 2),  # building the abstract model: a 10**7-step loop
    "num_residual_hiddens": (10**6, 4),
    "embedding_dim": (10**6, 8),
    "num_embeddings": (10**9, 16),
}


@pytest.mark.parametrize("field", DECLARED)
def test_an_export_declaring_other_sizes_is_refused_before_anything_is_built(
    field, exported, tmp_path, monkeypatch
):
    import flax.serialization

    declared, stored = DECLARED[field]
    path = tmp_path / "model.msgpack"
    payload = _tampered(exported, lambda p: p["config"].update({field: declared}))
    path.write_bytes(flax.serialization.msgpack_serialize(payload))

    def no_building(config):
        raise AssertionError("a model was built from the declared sizes")

    monkeypatch.setattr(export_module, "structure", no_building)
    with pytest.raises(IncompatibleModelError) as e:
        load(path)
    assert str(e.value) == (
        f"{path}: its config says {field} = {declared}, the stored weights {stored}; "
        "export the run again."
    )


@pytest.mark.parametrize(
    "leaf", [("params", "encoder", "conv_1", "bias"), ("ema", "vq", "codebook")]
)
def test_an_export_of_non_finite_weights_is_refused_naming_the_array(leaf, exported, tmp_path):
    import flax.serialization

    def poison(payload):
        *folders, name = leaf
        tree = payload
        for key in folders:
            tree = tree[key]
        tree[name] = tree[name].copy()
        tree[name].flat[-1] = np.nan

    path = tmp_path / "model.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(_tampered(exported, poison)))
    with pytest.raises(IncompatibleModelError, match=f"{'/'.join(leaf)} holds NaN or infinity"):
        load(path)


def test_a_checkpoint_of_non_finite_weights_is_refused_naming_the_array(workdir, monkeypatch):
    restore = load_module._restore

    def diverged(*args):
        weights = restore(*args)
        return weights._replace(params=jax.tree.map(lambda a: a * np.inf, weights.params))

    monkeypatch.setattr(load_module, "_restore", diverged)
    with pytest.raises(IncompatibleModelError) as e:
        load(workdir)
    assert str(e.value).startswith(
        f"{workdir}: checkpoint 10's params/decoder/conv_1/bias holds NaN or infinity"
    )
    assert "\n" not in str(e.value)


def test_an_export_of_another_format_says_which(exported, tmp_path):
    import flax.serialization

    path = tmp_path / "model.msgpack"
    payload = _tampered(exported, lambda p: p.update(format="other"))
    path.write_bytes(flax.serialization.msgpack_serialize(payload))
    with pytest.raises(IncompatibleModelError, match="its format is 'other'. Pass a file"):
        load(path)


def test_an_export_from_before_fsq_loads_as_the_vq_model_it_is(exported, tmp_path):
    """Exports written before the quantizer and fsq_levels fields existed load unchanged."""
    import flax.serialization

    path = tmp_path / "model.msgpack"
    payload = _tampered(
        exported, lambda p: [p["config"].pop(k) for k in ("quantizer", "fsq_levels")]
    )
    path.write_bytes(flax.serialization.msgpack_serialize(payload))
    old = load(path)
    assert old.config == CONFIG and old.config.quantizer == "vq"
    path.write_bytes(flax.serialization.msgpack_serialize(exported))
    x = _images()
    np.testing.assert_array_equal(old.model.encode(x), load(path).model.encode(x))


def test_an_export_claiming_fsq_codes_its_levels_do_not_give_is_refused(exported, tmp_path):
    """FSQ stores no codebook, so the code count is checked against the levels instead."""
    import flax.serialization

    path = tmp_path / "model.msgpack"
    payload = _tampered(
        exported,
        lambda p: p["config"].update(
            quantizer="fsq",
            fsq_levels="2,2,2,2,2,2,2,2",
            decay=0.0,
            commitment_cost=0.0,
            dead_code_threshold=0.0,
            kmeans_init_steps=0,
            num_embeddings=16,
        ),
    )
    path.write_bytes(flax.serialization.msgpack_serialize(payload))
    with pytest.raises(IncompatibleModelError, match="num_embeddings follows from --fsq-levels"):
        load(path)
