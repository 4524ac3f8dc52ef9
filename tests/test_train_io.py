"""train.io: load a run or an export in one call, export a run's model, refuse misfits."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TRAINED_STEPS, restore, small_config

from jaxbasics import train
from jaxbasics.train.io import MODEL_FIELDS, IncompatibleModelError, export, load
from jaxbasics.train.state import to_model

CONFIG = small_config(num_training_updates=TRAINED_STEPS)  # the workdir fixture's run


def _images(n=3):
    return jax.random.uniform(jax.random.key(7), (n, 32, 32, 3), minval=-0.5, maxval=0.5)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_load_a_workdir_gives_the_trained_model_in_eval_mode(workdir):
    model, config, variance, step = train.load(workdir)
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
        assert "embedding_dim: saved 8, expected 4" in str(e.value)
    assert set(MODEL_FIELDS) >= {"num_embeddings", "embedding_dim", "num_hiddens", "decay"}


def test_an_export_whose_arrays_misfit_its_config_is_refused(workdir, tmp_path):
    import flax.serialization

    path = export(workdir, tmp_path / "model.msgpack")
    payload = flax.serialization.msgpack_restore(path.read_bytes())
    payload["config"]["num_embeddings"] = 32  # the arrays still hold 16 codes
    path.write_bytes(flax.serialization.msgpack_serialize(payload))
    with pytest.raises(
        IncompatibleModelError, match=r"vq/codebook: saved \(16, 8\) float32, expected \(32, 8\)"
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


def test_the_readme_snippet_runs(workdir):
    """The README's 'Use a trained model' Python block, as written, on a real run."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 6
    batch = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    namespace = {"uint8_batch": batch}
    exec(block.replace("runs/quickstart", str(workdir)), namespace)
    assert namespace["codes"].shape == (4, 8, 8) and namespace["codes"].dtype == jnp.int32
    assert namespace["recon"].shape == (4, 32, 32, 3)
