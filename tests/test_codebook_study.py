"""experiments/codebook_study.py: configurations, table and reuse, on tiny runs in-process."""

import doctest
import json

import pytest

import codebook_study
from conftest import RUN, SIZES
from jaxbasics.tasks.vqvae import presets as presets_module


def test_doctests():
    assert doctest.testmod(codebook_study).failed == 0


@pytest.fixture
def tiny_preset(monkeypatch):
    """The quickstart at the test sizes (and the test runs' data and schedule)."""
    run = {k: v for k, v in RUN.items() if k in presets_module.VALUES["quickstart"]}
    tiny = {**presets_module.VALUES["quickstart"], **SIZES, **run}
    monkeypatch.setitem(presets_module.VALUES, "tiny", tiny)
    return "tiny"


def test_study_writes_the_table_and_reuses_finished_runs(tmp_path, tiny_preset, monkeypatch):
    args = ["--preset", tiny_preset, "--steps", "4", "--seeds", "0,1", "--out", str(tmp_path)]
    # "defaults" is the preset itself: its compiled programs are the other tests' (SIZES)
    assert codebook_study.main([*args, "--only", "defaults"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "codebook_study.jsonl")]
    assert [(r["name"], r["seed"]) for r in rows] == [("defaults", 0), ("defaults", 1)]
    assert rows[1]["config"]["seed"] == rows[1]["config"]["data_seed"] == 1
    assert all(r["config"]["num_training_updates"] == 4 for r in rows)
    text = (tmp_path / "codebook_study.md").read_text()
    assert "| defaults | " in text and " ± " in text

    def no_training(*_):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(codebook_study, "fit", no_training)
    assert codebook_study.main([*args, "--only", "defaults"]) == 0
