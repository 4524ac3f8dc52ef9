"""experiments/train_prior.py as a user runs it, and the command line it shares with
train_vqvae.py (jaxbasics.train.cli)."""

import dataclasses
import json
import shutil
import sys

import pytest

import train_prior
from conftest import EXPERIMENTS, main_in_process, run
from jaxbasics.tasks.prior.config import PRESETS as PRIOR_PRESETS
from jaxbasics.tasks.prior.config import PriorConfig
from jaxbasics.train.cli import resolve_config

TRAIN_PRIOR = str(EXPERIMENTS / "train_prior.py")


def one_line_error(stderr: str) -> str:
    """The single ``error:`` line of a refused run's stderr (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


def test_every_flag_is_documented_and_the_preset_sets_the_defaults():
    from simple_parsing.docstring import get_attribute_docstring

    r = run([sys.executable, TRAIN_PRIOR, "--help"])
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # unwrapped
    squeezed = "".join(text.split())  # argparse also wraps at hyphens
    for name in (f.name for f in dataclasses.fields(PriorConfig)):
        assert "--" + name.replace("_", "-") in text, name
        doc = get_attribute_docstring(PriorConfig, name).docstring_below
        assert doc and "".join(doc.split()) in squeezed, name  # --help says what it does
    assert "--faithful" not in text  # the VQ-VAE's flag only
    assert "runs/prior-<preset>" in text
    assert "of every block. (default: 128)" in text  # --dim: the quickstart's
    assert "workdir. (default: runs/quickstart)" in text  # --model
    cifar = run([sys.executable, TRAIN_PRIOR, "--preset", "cifar10", "--help"])
    cifar = " ".join(cifar.stdout.split())
    assert "of every block. (default: 256)" in cifar and "(default: runs/cifar10)" in cifar
    assert PRIOR_PRESETS("quickstart").dim == 128 and PRIOR_PRESETS("cifar10").dim == 256


def test_bad_flags_exit_2_with_the_reason(tmp_path, capsys):
    w = tmp_path / "run"
    argv = ["--dim", "100", "--heads", "8", "--workdir", str(w)]
    code, _, err = main_in_process(train_prior, argv, capsys)
    assert code == 2
    assert one_line_error(err).endswith(
        "error: dim (100) must be a multiple of heads (8), e.g. --dim 104."
    )
    assert not w.exists()  # a run that cannot start leaves no workdir
    code, _, err = main_in_process(train_prior, ["--faithful", "--workdir", str(w)], capsys)
    assert code == 2
    assert one_line_error(err).endswith("unrecognized arguments: --faithful")


def test_another_kind_of_priors_size_flags_are_refused(tmp_path, capsys):
    """--channels would do nothing to a transformer, --dim nothing to a PixelCNN."""
    w = tmp_path / "run"
    for argv, expected in [
        (["--channels", "8"], "error: --channels sets a pixelcnn prior's size, not a transformer"),
        (
            ["--prior", "pixelcnn", "--dim", "64", "--heads", "4"],
            "error: --dim, --heads set a transformer or maskgit prior's size, not a pixelcnn's",
        ),
    ]:
        code, _, err = main_in_process(train_prior, [*argv, "--workdir", str(w)], capsys)
        assert code == 2 and expected in one_line_error(err)
        assert not w.exists()


def test_an_existing_prior_run_keeps_its_saved_config(tmp_path):
    saved = PRIOR_PRESETS("quickstart", dim=64, num_training_updates=200)
    (tmp_path / "config.json").write_text(saved.to_json())
    requested = PRIOR_PRESETS("cifar10", num_training_updates=300)
    resolved = resolve_config(requested, {"num_training_updates"}, tmp_path)
    assert resolved == saved.replace(num_training_updates=300)


def test_a_missing_model_is_one_line(tmp_path, capsys):
    w = tmp_path / "run"
    argv = ["--model", "/nonexistent", "--workdir", str(w), "--progress", "false"]
    code, out, err = main_in_process(train_prior, argv, capsys)
    assert code == 1 and not out
    assert "/nonexistent" in one_line_error(err)
    assert not w.exists()


def test_a_judge_of_other_classes_or_none_at_all_is_one_line(tiny_judge, workdir, tmp_path, capsys):
    """Refused before anything is written: a judge of other classes, no judge, a file, and
    the judge's own folder as the workdir (a judge is an input, not a run folder)."""
    other = shutil.copytree(tiny_judge, tmp_path / "other")
    meta = json.loads((other / "judge.json").read_text())
    (other / "judge.json").write_text(json.dumps(meta | {"classes": list("abcdefghij")}))
    own = shutil.copytree(tiny_judge, tmp_path / "own")
    base = ["--model", str(workdir), "--prior", "maskgit", "--dim", "16", "--depth", "1"]
    base += ["--heads", "2", "--batch-size", "8", "--num-training-updates", "2"]
    base += ["--progress", "false"]
    w = tmp_path / "w"
    for judge_dir, run_dir, expected in [
        (other, w, "knows the classes ['a', 'b', 'c']..., not these codes'"),
        (tmp_path / "none", w, f"--judge {tmp_path / 'none'} holds no judge (no judge.json)"),
        (other / "judge.json", w, "judge.json is a file; a judge is a folder"),
        (own, own, "is --judge's folder; pass another --workdir"),
    ]:
        argv = [*base, "--judge", str(judge_dir), "--workdir", str(run_dir)]
        code, _, err = main_in_process(train_prior, argv, capsys)
        assert code == 1 and expected in one_line_error(err)
        assert not w.exists()
    assert sorted(p.name for p in own.iterdir()) == ["judge.json", "weights.msgpack"]
    with pytest.raises(ValueError, match="--judge '' names no folder"):
        PriorConfig(judge="").validate()
    with pytest.raises(ValueError, match="--judge scores class-conditional samples"):
        PriorConfig(judge=str(tiny_judge), conditional=False).validate()
