"""Stage two on the shared loop: a prior's run, its resume, its data, and sampling from it."""

import fcntl
import hashlib
import json
import logging
import shutil
import signal

import jax
import numpy as np
import pytest

import sample
import train_vqvae
from conftest import PRIOR_STEPS, cli_flags, interrupt_after, main_in_process, prior_config
from jaxbasics.prior import sample as sample_codes
from jaxbasics.tasks.prior.config import PriorConfig
from jaxbasics.tasks.prior.trained import load_prior
from jaxbasics.tasks.vqvae.apply import model_fns
from jaxbasics.tasks.vqvae.codes import write_codes
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.export_file import Weights, save_model
from jaxbasics.tasks.vqvae.train import init_state, to_model
from jaxbasics.tasks.vqvae.trained import load
from jaxbasics.train import fit
from jaxbasics.train.metrics import read_jsonl
from jaxbasics.train.resume import ConfigMismatchError, load_config


def _params(workdir):
    return jax.tree.leaves(load_prior(workdir).prior)


def test_a_prior_run_learns_the_codes_and_writes_its_files(prior_workdir):
    last = read_jsonl(prior_workdir / "eval.jsonl")[-1]
    assert last["step"] == PRIOR_STEPS and last["num_maps"] == 12
    assert last["uniform_bits"] == 4.0  # K = 16 codes
    # better than knowing only how often each code is used: it learned where codes go
    assert last["bits_per_code"] < last["entropy_bits"] < last["uniform_bits"]
    assert "bits_per_code_unconditional" in last  # shapes has classes: both are measured
    for name in ("samples.png", "curves.png", "prior_codes.npz", "config.json"):
        assert (prior_workdir / name).stat().st_size > 0, name
    stats = json.loads((prior_workdir / "data_stats.json").read_text())
    assert (stats["height"], stats["width"], stats["num_codes"]) == (8, 8, 16)
    assert stats["class_names"][:2] == ["ellipse", "rectangle"]
    steps = [r["step"] for r in read_jsonl(prior_workdir / "metrics.jsonl")]
    assert steps == [4, 8, 12]


def test_a_stopped_prior_resumes_bitwise(prior_workdir, workdir, tmp_path, monkeypatch):
    """Stopped by a signal after step 5, then rerun: the same parameters as the shared
    uninterrupted run, and the same metrics records."""
    with monkeypatch.context() as m:
        interrupt_after(m, 5 * 2)  # codes and labels: two arrays per step
        stopped = fit(prior_config(workdir), tmp_path)
    assert stopped.interrupted == signal.SIGINT and stopped.step == 5
    assert fit(prior_config(workdir), tmp_path).step == PRIOR_STEPS
    for x, y in zip(_params(prior_workdir), _params(tmp_path), strict=True):
        np.testing.assert_array_equal(x, y)

    def bits(w):
        return [(r["step"], r["bits_per_code"]) for r in read_jsonl(w / "metrics.jsonl")]

    assert bits(tmp_path) == bits(prior_workdir)


def test_a_prior_run_written_before_train_maps_existed_still_samples(
    prior_workdir, workdir, tmp_path
):
    """A run whose config.json predates the --train-maps field (a field added since takes its
    LEGACY_VALUES value: the run's own train split) loads as the same run and samples."""
    old = tmp_path / "old"
    shutil.copytree(prior_workdir, old)
    saved = json.loads((old / "config.json").read_text())
    del saved["train_maps"]
    (old / "config.json").write_text(json.dumps(saved))
    assert load_config(old, PriorConfig) == load_config(prior_workdir, PriorConfig)
    flags = ["--model", str(workdir), "--num", "2", "--out", str(tmp_path / "s")]
    assert sample.main(["--prior", str(old), *flags]) == 0


def test_a_prior_falls_back_past_a_damaged_newest_checkpoint(
    prior_workdir, workdir, tmp_path, caplog
):
    """Truncated arrays in checkpoint 12: loading reads checkpoint 6 and says so; training
    resumes from 6 (moving 12 aside) and ends where the undamaged run ended, bitwise."""
    copy = shutil.copytree(prior_workdir, tmp_path / "prior")
    for f in (copy / "checkpoints" / str(PRIOR_STEPS) / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "METADATA" not in f.name:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="jaxbasics"):
        assert load_prior(copy).step == 6
    assert any("read checkpoint 6 of" in r.getMessage() for r in caplog.records)
    assert fit(prior_config(workdir), copy).step == PRIOR_STEPS
    assert [p.name.split("-")[0] for p in (copy / "corrupt_checkpoints").iterdir()] == ["12"]
    for x, y in zip(_params(prior_workdir), _params(copy), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_prior_is_refused_on_another_codebooks_codes(prior_workdir, workdir, tmp_path, capsys):
    """The prior's cached codes belong to one codebook: resuming it, or sampling it, with
    another VQ-VAE is a one-line error; nothing in the prior's workdir changes."""

    config = load_config(workdir, VQVAEConfig)
    state = init_state(config.replace(seed=1))  # same sizes, other weights
    other = tmp_path / "other.msgpack"
    save_model(other, Weights(config, state.params, state.ema, data_variance=0.06, step=1))

    copy = shutil.copytree(prior_workdir, tmp_path / "prior")
    before = {p: hashlib.sha256(p.read_bytes()).digest() for p in copy.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="another codebook"):
        fit(prior_config(other, num_training_updates=20), copy)
    after = {p: hashlib.sha256(p.read_bytes()).digest() for p in copy.rglob("*") if p.is_file()}
    assert after == before

    capsys.readouterr()
    code = sample.main(["--prior", str(copy), "--model", str(other), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1 and "another codebook" in err and err.count("\n") == 1
    assert "weights" not in err  # an FSQ model's grid is no weights
    assert not (tmp_path / "s").exists()


def test_samples_repeat_with_their_seed_and_decode_py_reproduces_them(
    prior_workdir, workdir, tmp_path, capsys
):
    import decode

    args = ["--prior", str(prior_workdir), "--model", str(workdir), "--num", "9"]
    assert (
        sample.main([*args, "--class", "ring", "--guidance", "2", "--out", str(tmp_path / "a")])
        == 0
    )
    assert (
        sample.main([*args, "--class", "ring", "--guidance", "2", "--out", str(tmp_path / "b")])
        == 0
    )
    assert sample.main([*args, "--seed", "1", "--out", str(tmp_path / "c")]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["images"] == 9 and summary["prior_step"] == PRIOR_STEPS

    def maps(d):
        with np.load(d / "codes.npz") as z:
            return z["codes"]

    np.testing.assert_array_equal(maps(tmp_path / "a"), maps(tmp_path / "b"))
    assert not np.array_equal(maps(tmp_path / "a"), maps(tmp_path / "c"))
    assert (
        decode.main(
            [str(tmp_path / "a/codes.npz"), "--model", str(workdir), "--out", str(tmp_path / "d")]
        )
        == 0
    )
    pngs = sorted((tmp_path / "a/samples").iterdir())
    assert len(pngs) == 9 and (tmp_path / "a/grid.png").exists()
    for png in pngs:
        assert png.read_bytes() == (tmp_path / "d" / png.name).read_bytes(), png.name


def test_all_classes_cycles_the_labels_through_the_samples(prior_workdir, workdir, tmp_path):
    """``--all-classes``: sample i has label i mod C, as the library samples with those labels."""
    import jax

    flags = ["--num", "7", "--guidance", "1", "--seed", "3", "--all-classes"]
    out = tmp_path / "all"
    assert (
        sample.main(
            ["--prior", str(prior_workdir), "--model", str(workdir), *flags, "--out", str(out)]
        )
        == 0
    )
    prior = load_prior(prior_workdir).prior
    labels = np.arange(7) % prior.num_classes
    expected = sample_codes(prior, 7, jax.random.key(3), labels=labels, guidance=1.0)
    with np.load(out / "codes.npz") as z:
        np.testing.assert_array_equal(z["codes"], np.asarray(expected).reshape(-1))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--class", "dog"], "'dog' is not one of the prior's classes"),
        (["--temperature", "0"], "temperature must be > 0"),
        (["--guidance", "2"], "--guidance needs --class"),
        (["--top-k", "0"], "top_k must be an integer in [1, 16], got 0"),
        (
            ["--num", "0"],
            "--num must be in [1, 10000] (one run samples them all at once in memory), got 0.\n",
        ),
        (["--all-classes", "--guidance", "-1"], "guidance must be"),
        (["--temperature", "nan"], "temperature must be in"),
        (["--class", "ring", "--guidance", "inf"], "guidance must be in"),
        (["--num", "10001"], "--num must be in [1, 10000]"),
        (["--seed", str(2**70)], "--seed must fit in 64 bits"),
    ],
)
def test_bad_sampling_options_are_one_line(
    prior_workdir, workdir, tmp_path, capsys, flags, message
):
    args = ["--prior", str(prior_workdir), "--model", str(workdir), "--out", str(tmp_path / "s")]
    assert sample.main(args + flags) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_sample_out_is_one_writer_and_stays_inside(prior_workdir, workdir, tmp_path, capsys):
    """A second sample.py on a folder being written is refused (their files would mix); a
    linked OUT/samples that leads elsewhere is refused before writing."""
    args = ["--prior", str(prior_workdir), "--model", str(workdir), "--num", "2"]
    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / "run.lock", "w") as held:  # as another process holding it would
        fcntl.flock(held, fcntl.LOCK_EX)
        assert sample.main([*args, "--out", str(busy)]) == 1
    assert "in use by another sample.py" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["run.lock"]  # nothing of this run's
    (busy / "run.lock").unlink()
    (tmp_path / "precious").write_text("keep")
    (busy / "run.lock").symlink_to(tmp_path / "precious")  # a planted lock: not written through
    assert sample.main([*args, "--out", str(busy)]) == 1
    assert (tmp_path / "precious").read_text() == "keep" and "run.lock" in capsys.readouterr().err
    elsewhere, linked = tmp_path / "elsewhere", tmp_path / "linked"
    elsewhere.mkdir()
    linked.mkdir()
    (linked / "samples").symlink_to(elsewhere)
    assert sample.main([*args, "--out", str(linked)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert not any(elsewhere.iterdir()) and not (linked / "codes.npz").exists()
    # a folder of more samples: the extra PNGs would pass for this run's
    (tmp_path / "o/samples").mkdir(parents=True)
    (tmp_path / "o/samples/sample_005.png").write_bytes(b"an older run's")
    assert sample.main([*args, "--out", str(tmp_path / "o")]) == 1
    assert "holds 1 samples this run would not replace (sample_005.png" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["codes.npz", "grid.png", "samples/sample_001.png"])
def test_sample_writes_over_no_file_it_did_not_make(prior_workdir, workdir, tmp_path, capsys, name):
    """A codes.npz (the name encode.py writes), a grid.png or a sample PNG already in --out,
    a user's or an earlier run's, is refused in one line; nothing is written."""
    out = tmp_path / "out"
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(b"a user's")
    args = ["--prior", str(prior_workdir), "--model", str(workdir), "--num", "2"]
    assert sample.main([*args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert (
        f"{name} exists" in err and "no script writes over a file" in err and err.count("\n") == 1
    )
    assert (out / name).read_bytes() == b"a user's"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [name]


def test_a_prior_on_a_codes_file_is_unconditional(workdir, tmp_path, capsys):
    """``--codes``: a user's codes.npz (no labels), its last tenth held out; the PixelCNN."""

    loaded = load(workdir)
    images = np.random.default_rng(0).uniform(-0.5, 0.5, (40, 32, 32, 3)).astype(np.float32)
    maps = list(np.asarray(model_fns(loaded.model).encode(images)))
    codes = write_codes(
        tmp_path / "codes.npz", [f"{i}.png" for i in range(40)], maps, loaded.model, loaded.config
    )
    config = prior_config(
        workdir, codes=str(codes), prior="pixelcnn", num_training_updates=4, eval_every=4
    )
    result = fit(config, tmp_path / "prior")
    assert set(result.eval_metrics) == {"bits_per_code", "uniform_bits", "entropy_bits", "num_maps"}
    assert result.eval_metrics["num_maps"] == 4
    assert json.loads((tmp_path / "prior/data_stats.json").read_text())["class_names"] == []
    args = ["--prior", str(tmp_path / "prior"), "--out", str(tmp_path / "s"), "--all-classes"]
    assert sample.main(args) == 1
    err = capsys.readouterr().err
    assert "trained without class labels; leave --all-classes out" in err
    assert err.count("\n") == 1


def test_a_codes_file_of_another_model_is_refused(workdir, tmp_path):
    config = load_config(workdir, VQVAEConfig)
    state = init_state(config.replace(seed=1))  # same sizes, another codebook
    other = to_model(config, state.params, state.ema)
    maps = [np.zeros((8, 8), np.int32)] * 20
    codes = write_codes(tmp_path / "c.npz", [f"{i}" for i in range(20)], maps, other, config)
    with pytest.raises(ValueError, match="encoded by another model") as e:
        fit(prior_config(workdir, codes=str(codes)), tmp_path / "prior")
    assert str(e.value).endswith("Pass the --model that encoded it.")  # nothing to decode here
    assert not (tmp_path / "prior").exists()


def test_a_workdir_of_the_other_kind_is_named_not_called_damaged(prior_workdir, workdir, capsys):
    """train_vqvae.py --workdir on a prior's run (or the reverse) says which run it holds,
    instead of calling its config.json damaged and suggesting to delete it."""

    with pytest.raises(ConfigMismatchError, match="holds a prior run, not a VQ-VAE's"):
        load_config(prior_workdir, VQVAEConfig)
    with pytest.raises(ConfigMismatchError, match="holds a VQ-VAE run, not a prior's"):
        load_config(workdir, PriorConfig)
    code, _, err = main_in_process(
        train_vqvae, [*cli_flags(), "--workdir", str(prior_workdir)], capsys
    )
    assert code == 1 and err.strip().splitlines() == [
        f"error: {prior_workdir} holds a prior run, not a VQ-VAE's; name a VQ-VAE's run (or a "
        "new folder, to start one)."
    ]  # and no hint about --preset, which has nothing to do with it


def test_the_prior_docs_snippet_runs(prior_workdir, workdir):
    """docs/prior.md's Python block, as written, on the shared runs."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "prior.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    block = block.replace("runs/prior-quickstart", str(prior_workdir))
    namespace: dict = {}
    exec(block.replace("runs/quickstart", str(workdir)), namespace)
    assert namespace["codes"].shape == (16, 8, 8)
    assert namespace["images"].shape == (16, 32, 32, 3)


def _codes_file(workdir, path, seed=0, count=40):
    loaded = load(workdir)
    rng = np.random.default_rng(seed)
    images = rng.uniform(-0.5, 0.5, (count, 32, 32, 3)).astype(np.float32)
    maps = list(np.asarray(model_fns(loaded.model).encode(images)))
    names = [f"{i}.png" for i in range(count)]
    return write_codes(path, names, maps, loaded.model, loaded.config)


def test_a_resume_with_another_codes_file_is_refused(workdir, tmp_path):
    """The cache holds a.npz's maps; --codes b.npz on the rerun (other maps) is refused, while a
    copy of a.npz elsewhere, or a.npz gone, resumes from the cache."""
    a, b = _codes_file(workdir, tmp_path / "a.npz"), _codes_file(workdir, tmp_path / "b.npz", 1)
    config = prior_config(workdir, codes=str(a), num_training_updates=4, eval_every=4)
    fit(config, tmp_path / "prior")
    with pytest.raises(ValueError, match="holds other code maps than .* was trained on"):
        fit(config.replace(codes=str(b), num_training_updates=8), tmp_path / "prior")
    moved = shutil.copy(a, tmp_path / "moved.npz")
    a.unlink()
    assert (
        fit(config.replace(codes=str(moved), num_training_updates=6), tmp_path / "prior").step == 6
    )
    assert fit(config.replace(num_training_updates=8), tmp_path / "prior").step == 8  # a.npz gone
    (tmp_path / "prior" / "prior_codes.npz").unlink()  # the cache gone too: data_stats.json holds
    with pytest.raises(ValueError, match=r"--codes .*b.npz holds other code maps .*entropy_bits"):
        fit(config.replace(codes=str(b), num_training_updates=10), tmp_path / "prior")


def test_labels_out_of_range_in_the_cache_are_named(prior_workdir, workdir, tmp_path):
    copy = shutil.copytree(prior_workdir, tmp_path / "prior")
    with np.load(copy / "prior_codes.npz") as z:
        arrays = dict(z)
    arrays["train_labels"] = np.full_like(arrays["train_labels"], 50)
    np.savez_compressed(copy / "prior_codes.npz", **arrays)
    with pytest.raises(ValueError, match=r"holds labels outside \[0, 10\)"):
        fit(prior_config(workdir, num_training_updates=20), copy)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a.update(train_labels=a["train_labels"] + 0.5), "train_labels holds float64"),
        (lambda a: a.update(test_codes=a["test_codes"] + 0.5), "test_codes holds float64"),
        (lambda a: a.update(num_codes=np.array(32)), "prior_codes.npz holds other code maps"),
        (lambda a: a.update(train_codes=a["train_codes"][:, :4, :4]), "height: 8 then, 4 now"),
    ],
)
def test_an_edited_cache_is_named_in_one_line(prior_workdir, workdir, tmp_path, edit, message):
    copy = shutil.copytree(prior_workdir, tmp_path / "prior")
    with np.load(copy / "prior_codes.npz") as z:
        arrays = dict(z)
    edit(arrays)
    np.savez_compressed(copy / "prior_codes.npz", **arrays)
    with pytest.raises(ValueError, match=message) as e:
        fit(prior_config(workdir, num_training_updates=20), copy)
    assert "\n" not in str(e.value)


def test_codes_files_train_prior_cannot_use_are_one_line_naming_no_missing_flag(workdir, tmp_path):
    """An empty file, and one declaring maps larger than any image: train_prior.py has no
    --max-pixels to suggest."""
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a codes.npz written by encode.py"):
        fit(prior_config(workdir, codes=str(tmp_path / "empty.npz")), tmp_path / "p1")
    real = _codes_file(workdir, tmp_path / "real.npz", count=20)
    with np.load(real) as z:
        arrays = dict(z)
    arrays["shapes"] = arrays["shapes"].copy()
    arrays["shapes"][0] = (10**5, 10**5)
    np.savez(tmp_path / "huge.npz", **arrays)
    with pytest.raises(ValueError) as e:
        fit(prior_config(workdir, codes=str(tmp_path / "huge.npz")), tmp_path / "p2")
    assert "more than the limit" in str(e.value) and "encode smaller images" in str(e.value)
    assert "--max-pixels" not in str(e.value)
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()


def test_model_users_name_a_prior_workdir_without_offering_to_start_a_run(prior_workdir):
    with pytest.raises(ValueError) as e:
        load(prior_workdir)
    assert (
        str(e.value) == f"{prior_workdir} holds a prior run, not a VQ-VAE's; name a VQ-VAE's run."
    )


def test_sample_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        sample.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "how many images (default: 64)" in text and "workdir (default: runs/prior-" in text


def test_train_maps_encodes_more_of_the_generated_data_than_the_vqvae_saw(workdir, tmp_path):
    """The tiny VQ-VAE trained on shapes' first images; the prior can encode 40 of them."""
    result = fit(prior_config(workdir, train_maps=40, num_training_updates=1), tmp_path)
    assert result.step == 1
    assert len(np.load(tmp_path / "prior_codes.npz")["train_codes"]) == 40
    with pytest.raises(ValueError, match="leave --train-maps out"):
        prior_config(workdir, train_maps=40, codes="c.npz").validate()
    with pytest.raises(ValueError, match="train_maps must be >= 1"):
        prior_config(workdir, train_maps=0).validate()
