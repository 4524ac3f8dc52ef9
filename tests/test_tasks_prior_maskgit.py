"""The masked prior on the shared loop: its run, a bitwise resume, sample.py --steps, judge.py."""

import dataclasses
import json
import shutil

import jax
import numpy as np

import decode
import judge
import sample
from common import subset
from conftest import (
    JUDGE_FLAGS,
    PRIOR_STEPS,
    interrupt_after,
    prior_config,
)
from jaxbasics import judge as J
from jaxbasics.data.shapes import SHAPES_CLASSES
from jaxbasics.data.sources import get_source
from jaxbasics.data.transforms import to_pixels
from jaxbasics.tasks.prior.samples import SAMPLES_PER_ROW, sample_rows
from jaxbasics.tasks.prior.trained import load_prior
from jaxbasics.tasks.vqvae.trained import load
from jaxbasics.train import fit
from jaxbasics.train.files import save_png
from jaxbasics.train.metrics import read_jsonl


def test_a_masked_prior_learns_hidden_codes_on_the_shared_loop(maskgit_workdir):
    last = read_jsonl(maskgit_workdir / "eval.jsonl")[-1]
    assert last["step"] == PRIOR_STEPS and last["uniform_bits"] == 4.0
    assert last["bits_per_code"] < last["uniform_bits"]
    assert "bits_per_code_unconditional" in last
    assert type(load_prior(maskgit_workdir).prior).__name__ == "MaskGITPrior"
    for name in ("samples.png", "curves.png", "prior_codes.npz"):
        assert (maskgit_workdir / name).stat().st_size > 0, name


def test_a_stopped_masked_prior_resumes_bitwise(maskgit_workdir, workdir, tmp_path, monkeypatch):
    """Its masks come from the step's key: stopped after step 5 and rerun, the same weights
    and the same metrics as the uninterrupted run."""
    config = prior_config(workdir, prior="maskgit")
    with monkeypatch.context() as m:
        interrupt_after(m, 5 * 2)  # codes and labels: two arrays per step
        assert fit(config, tmp_path).step == 5
    assert fit(config, tmp_path).step == PRIOR_STEPS
    a, b = (jax.tree.leaves(load_prior(w).prior) for w in (maskgit_workdir, tmp_path))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)

    def losses(w):
        return [(r["step"], r["loss"]) for r in read_jsonl(w / "metrics.jsonl")]

    assert losses(tmp_path) == losses(maskgit_workdir)


def test_sample_steps_are_reproducible_and_decode_py_gives_the_same_pngs(
    maskgit_workdir, workdir, tmp_path, capsys
):
    flags = ["--prior", str(maskgit_workdir), "--model", str(workdir), "--num", "6"]
    flags += ["--all-classes", "--steps", "3", "--guidance", "1"]
    for out in ("a", "b"):
        assert sample.main(flags + ["--out", str(tmp_path / out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3
    a, b = (np.load(tmp_path / o / "codes.npz")["codes"] for o in "ab")
    np.testing.assert_array_equal(a, b)
    labels = json.loads((tmp_path / "a" / "labels.json").read_text())
    assert labels["classes"][:3] == ["ellipse", "rectangle", "triangle"]
    assert labels["names"][0] == "sample_000"
    out = tmp_path / "decoded"
    argv = [str(tmp_path / "a" / "codes.npz"), "--model", str(workdir), "--out", str(out)]
    assert decode.main(argv) == 0
    for i in range(6):
        name = f"sample_{i:03d}.png"
        assert (out / name).read_bytes() == (tmp_path / "a" / "samples" / name).read_bytes()


def test_steps_for_an_autoregressive_prior_is_one_line(prior_workdir, workdir, tmp_path, capsys):
    flags = ["--prior", str(prior_workdir), "--model", str(workdir), "--steps", "4"]
    assert sample.main(flags + ["--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--steps is for a masked prior" in err
    assert not (tmp_path / "s").exists()


def test_judge_refuses_unconditional_samples_and_a_damaged_judge_in_one_line(
    tiny_judge, maskgit_workdir, workdir, tmp_path, capsys
):
    out = tmp_path / "s"
    flags = ["--prior", str(maskgit_workdir), "--model", str(workdir), "--num", "2"]
    assert sample.main(flags + ["--out", str(out)]) == 0
    capsys.readouterr()
    assert judge.main(["--judge", str(tiny_judge), *JUDGE_FLAGS, "--samples", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sampled without a class" in err
    damaged = shutil.copytree(tiny_judge, tmp_path / "judge")
    (damaged / "weights.msgpack").write_bytes(b"\x93garbage")
    assert judge.main(["--judge", str(damaged), *JUDGE_FLAGS]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unreadable" in err and "delete" in err


def test_judge_scores_sample_folders_by_the_class_they_were_drawn_for(
    tiny_judge, maskgit_workdir, workdir, tmp_path, capsys
):
    out = tmp_path / "s"
    flags = ["--prior", str(maskgit_workdir), "--model", str(workdir), "--num", "10"]
    assert sample.main(flags + ["--all-classes", "--out", str(out)]) == 0
    # An image folder with a subfolder per class: real test images, so the judge knows them.
    test = get_source("shapes", "test")  # judge.py's 20: drawn across the split by seed 0
    for i in subset(len(test), 20, seed=0):
        ex = test[int(i)]
        save_png(tmp_path / "real" / SHAPES_CLASSES[ex["label"]] / f"{i}.png", ex["image"])
    capsys.readouterr()
    flags = ["--judge", str(tiny_judge), *JUDGE_FLAGS]
    flags += ["--samples", str(out), str(tmp_path / "real")]
    assert judge.main(flags) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[str(out)]["num"] == 10 and 0 <= report[str(out)]["accuracy"] <= 1
    # The same 20 real images, read from PNGs: the same verdicts as from memory.
    assert report[str(tmp_path / "real")]["accuracy"] == report["real"]
    meta = json.loads((tiny_judge / "judge.json").read_text())
    assert meta["dataset"] == "shapes" and meta["steps"] == 200
    # Retrained from nothing with the same seed: the same judge, the same verdicts.
    again = tmp_path / "again"
    assert judge.main(["--judge", str(again), *flags[2:]]) == 0
    assert json.loads(capsys.readouterr().out) == report


def test_judge_refuses_other_training_flags_a_workdir_and_odd_folders_before_training(
    tiny_judge, maskgit_workdir, tmp_path, capsys
):
    def one_line(argv, *expected):
        capsys.readouterr()
        assert judge.main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        for text in expected:
            assert text in err, err

    one_line(["--judge", str(tiny_judge), "--steps", "300"], "other steps", "steps=200")
    # A training workdir is the run's: nothing is written there, before any training.
    one_line(["--judge", str(maskgit_workdir), *JUDGE_FLAGS], "training workdir")
    assert not (maskgit_workdir / "judge.json").exists()
    mixed = tmp_path / "mixed"
    save_png(mixed / "ring" / "a.png", np.zeros((32, 32, 3), np.uint8))
    save_png(mixed / "ring" / "b.png", np.zeros((48, 48, 3), np.uint8))
    new = str(tmp_path / "new")  # checked before a judge would be trained there
    one_line(["--judge", new, *JUDGE_FLAGS, "--samples", str(mixed)], "b.png, of another size")
    save_png(tmp_path / "typo" / "Ring" / "a.png", np.zeros((32, 32, 3), np.uint8))
    one_line(["--judge", new, *JUDGE_FLAGS, "--samples", str(tmp_path / "typo")], "'Ring'")
    assert not (tmp_path / "new").exists()


def test_a_judge_scores_the_pictured_samples_at_every_evaluation(
    tiny_judge, maskgit_workdir, workdir, tmp_path, capsys
):
    """--judge on a resumed run (a judge only scores: it may join later): each evaluation's
    class_accuracy is the judge's verdict on the very samples of samples.png, recomputed
    here from the saved prior; an evaluation without a judge has none."""
    run = shutil.copytree(maskgit_workdir, tmp_path / "run")
    config = prior_config(workdir, prior="maskgit", judge=str(tiny_judge))
    assert fit(dataclasses.replace(config, num_training_updates=PRIOR_STEPS + 6), run).step == 18
    before, after = read_jsonl(run / "eval.jsonl")[-2:]
    assert "class_accuracy" not in before and after["step"] == PRIOR_STEPS + 6
    assert after["judged_samples"] == 10 * SAMPLES_PER_ROW
    rows, _ = sample_rows(load_prior(run).prior, load(workdir).model, SHAPES_CLASSES, 0)
    judged = J.load_judge(tiny_judge)[0]
    images = to_pixels(np.concatenate(rows))
    labels = np.repeat(np.arange(10), SAMPLES_PER_ROW)
    assert after["class_accuracy"] == J.accuracy(judged, images, labels)
