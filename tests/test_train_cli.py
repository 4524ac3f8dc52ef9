"""The main job as a user runs it: subprocesses of experiments/train_vqvae.py and evaluate.py
(stops, resumes, --help), and its main() in this process for flags and refusals."""

import dataclasses
import json
import signal
import sys
import time

import jax
import numpy as np

import evaluate as evaluate_script
import train_vqvae
from conftest import (
    TRAIN,
    checkpoint_steps,
    cli_flags,
    main_in_process,
    restore,
    run,
    small_config,
    start,
    train_cmd,
    wait_for,
)
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.presets import preset
from jaxbasics.train import fit
from jaxbasics.train.metrics import read_jsonl
from jaxbasics.train.resume import load_config


def test_resume_after_sigterm_and_sigkill_is_bitwise_exact(tmp_path, xla_cache, capsys):
    # The uninterrupted run: train_cmd's config, in this process (the same numbers).
    straight = fit(small_config(num_training_updates=40, eval_every=20), tmp_path / "a")
    assert straight.step == 40

    b = tmp_path / "b"
    proc = start(train_cmd(b, xla_cache))  # SIGTERM: save and stop cleanly
    wait_for(
        lambda: (
            # an existing file may still be empty: the run creates it, then writes a record
            (b / "metrics.jsonl").exists()
            and any(r["step"] >= 10 for r in read_jsonl(b / "metrics.jsonl")[-1:])
        ),
        proc,
    )
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "checkpoint saved" in out
    stopped = checkpoint_steps(b)[-1]
    assert 10 <= stopped < 40

    proc = start(train_cmd(b, xla_cache))  # SIGKILL: no chance to save anything
    wait_for(lambda: any(s > stopped + 5 for s in checkpoint_steps(b)), proc)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # it really died of SIGKILL, unfinished
    assert checkpoint_steps(b)[-1] < 40

    final = run(train_cmd(b, xla_cache))
    assert final.returncode == 0, final.stdout + final.stderr
    assert "Resuming from checkpoint" in final.stderr

    ra, rb = restore(tmp_path / "a"), restore(b)
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
    capsys.readouterr()
    assert evaluate_script.main(["--workdir", str(b)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["step"] == 40 and line["num_examples"] == 12
    assert line["recon_error"] > 0 and line["perplexity"] >= 1
    assert (b / "eval_reconstructions.png").stat().st_size > 0
    assert (b / "eval_codebook.png").stat().st_size > 0  # beside training's own codebook.png


def test_sigint_exits_130_and_a_second_one_stops_at_once(tmp_path, xla_cache):
    w = tmp_path / "w"
    proc = start(train_cmd(w, xla_cache, num_training_updates=4000, checkpoint_every=50))
    wait_for(lambda: len(checkpoint_steps(w)) >= 1, proc)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    first = checkpoint_steps(w)[-1]

    proc = start(train_cmd(w, xla_cache, num_training_updates=4000, checkpoint_every=50))
    wait_for(lambda: checkpoint_steps(w)[-1] > first, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # the impatient second Ctrl-C (test_train_signals.py: alone)
    t = time.time()
    proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT) and time.time() - t < 30
    last = checkpoint_steps(w)[-1]
    assert restore(w).step == last  # the newest finished checkpoint restores


def test_missing_cifar10_fails_fast_with_instructions(tmp_path, capsys):
    t = time.time()
    argv = [*cli_flags(), "--workdir", str(tmp_path / "run"), "--dataset", "cifar10"]
    code, _, err = main_in_process(
        train_vqvae, [*argv, "--data-dir", str(tmp_path / "nothing-here")], capsys
    )
    assert code == 1
    assert "not found" in err and "download_and_prepare" in err
    assert "cifar-10-batches-py" in err
    assert "Traceback" not in err
    assert time.time() - t < 120
    assert not (tmp_path / "run").exists()  # a run that cannot start leaves no workdir


def test_incompatible_config_is_refused_by_the_cli(tmp_path, capsys):
    code, _, err = main_in_process(
        train_vqvae, [*cli_flags(num_training_updates=2), *_at(tmp_path)], capsys
    )
    assert code == 0, err
    code, _, err = main_in_process(
        train_vqvae, [*cli_flags(num_training_updates=2, num_embeddings=32), *_at(tmp_path)], capsys
    )
    assert code == 1 and "num_embeddings: saved 16, requested 32" in err
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    # A preset named on the command line asks for all of its values, so it is refused too.
    for flags in (["--preset", "cifar10"], ["--faithful"]):
        code, _, err = main_in_process(train_vqvae, [*_at(tmp_path), *flags], capsys)
        assert code == 1 and "Traceback" not in err, err
        assert "leave them out to resume with the saved config" in err
    _, _, err = main_in_process(train_vqvae, [*_at(tmp_path), "--preset", "cifar10"], capsys)
    assert "num_hiddens: saved 16, requested 128" in err
    # --quantizer fsq turns the VQ settings off: the saved VQ run differs in all of them
    code, _, err = main_in_process(train_vqvae, [*_at(tmp_path), "--quantizer", "fsq"], capsys)
    assert code == 1 and "quantizer: saved 'vq', requested 'fsq'" in err, err
    assert "decay: saved 0.99, requested 0.0" in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def _at(workdir) -> list[str]:
    return ["--workdir", str(workdir)]


def test_an_existing_run_keeps_its_saved_config(tmp_path, capsys):
    """Rerunning without the flags (or after the presets changed) resumes the saved run."""
    code, _, err = main_in_process(
        train_vqvae, [*cli_flags(num_training_updates=2), *_at(tmp_path)], capsys
    )
    assert code == 0, err
    argv = [*_at(tmp_path), "--num-training-updates", "3", "--progress", "false"]
    code, out, err = main_in_process(train_vqvae, argv, capsys)
    assert code == 0, err
    assert "Resuming from checkpoint at step 2" in err
    assert load_config(tmp_path, VQVAEConfig).num_hiddens == 16
    assert json.loads(out)["step"] == 3


def test_every_flag_is_documented_and_the_preset_sets_the_defaults():
    from simple_parsing.docstring import get_attribute_docstring

    r = run([sys.executable, TRAIN, "--help"])
    assert r.returncode == 0
    text = " ".join(r.stdout.split())  # unwrapped
    squeezed = "".join(text.split())  # argparse also wraps at hyphens
    for name in (f.name for f in dataclasses.fields(VQVAEConfig)):
        assert "--" + name.replace("_", "-") in text, name
        doc = get_attribute_docstring(VQVAEConfig, name).docstring_below
        assert doc and "".join(doc.split()) in squeezed, name  # --help says what it does
    for flag in ("--workdir", "--preset", "--faithful", "--dataset", "--data-dir"):
        assert flag in text
    # the quickstart's values
    assert "Global batch size, over all devices and processes. (default: 16)" in text
    assert "Encoder/decoder width. (default: 64)" in text
    cifar = " ".join(run([sys.executable, TRAIN, "--preset", "cifar10", "--help"]).stdout.split())
    assert "Encoder/decoder width. (default: 128)" in cifar
    assert "(default: 25000)" in cifar
    # notes: the notebook's training exactly; cifar10: the same model and batch, with the
    # remedies and the tuned schedule (docs/codebook.md's table)
    notes = preset("notes")
    assert (notes.batch_size, notes.learning_rate, notes.lr_schedule) == (32, 3e-4, "constant")
    assert (notes.dead_code_threshold, notes.kmeans_init_steps, notes.ema_init) == (0, 0, "notes")
    differs = {
        f.name
        for f in dataclasses.fields(VQVAEConfig)
        if getattr(notes, f.name) != getattr(preset("cifar10"), f.name)
    }
    assert differs == {
        "ema_init",
        "kmeans_init_steps",
        "dead_code_threshold",
        "learning_rate",
        "lr_schedule",
        "warmup_steps",
    }


def test_bad_flag_values_are_explained(tmp_path, capsys):
    def refused(*argv):
        code, _, err = main_in_process(train_vqvae, [*argv, "--workdir", str(tmp_path)], capsys)
        return code, err

    code, err = refused("--batch-size", "0")
    assert code == 2 and "batch_size must be >= 1" in err
    code, err = refused("--learning-rate", "nan")
    assert code == 2 and "learning_rate must be a finite number > 0" in err
    (tmp_path / "a-file").write_text("")
    code, _, err = main_in_process(train_vqvae, ["--workdir", str(tmp_path / "a-file")], capsys)
    assert code == 1 and "is a file" in err and "Traceback" not in err
    code, err = refused("--estimator", "magic")
    assert code == 2 and "invalid choice: 'magic'" in err
    code, err = refused("--quantizer", "fsq", "--decay", "0.9")
    assert code == 2 and "error: --decay 0.9 is a VQ setting" in err
    code, err = refused("--quantizer", "fsq", "--fsq-levels", "8,1")
    assert code == 2 and "FSQ levels must each be >= 2" in err
    code, err = refused("--quantizer", "fsq", "--fsq-levels", "8_8")  # int() would read 88
    assert code == 2 and "got '8_8'" in err
    code, err = refused("--fsq-levels", "8,8,8")  # the default levels, given for a VQ run
    assert code == 2 and "applies to --quantizer fsq only" in err
    assert not list(tmp_path.glob("*/config.json")) and not (tmp_path / "config.json").exists()
