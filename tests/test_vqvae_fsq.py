"""FSQ (jaxbasics.vqvae.fsq): the code grid, the bound, the gradient, and a model trained with it.

The math is checked against hand-derived values; one tiny FSQ run (module-scoped) is shared by
the tests of everything a VQ model works with: load, export, the scripts, a prior on its codes.
"""

import itertools
import json
import math
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import decode as decode_script
import encode as encode_script
import evaluate as evaluate_script
import reconstruct as reconstruct_script
from conftest import RUN, TRAIN, prior_config, run
from jaxbasics.tasks.vqvae.codes import codebook_fingerprint
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.presets import preset
from jaxbasics.tasks.vqvae.train import init_state, to_model
from jaxbasics.tasks.vqvae.trained import export, load
from jaxbasics.train import fit
from jaxbasics.train.metrics import read_jsonl
from jaxbasics.train.resume import load_config
from jaxbasics.vqvae import fsq
from jaxbasics.vqvae.fsq import FSQuantizer

LEVEL_SETS = [(8, 8, 8), (8, 5, 5, 5), (3, 2), (2,), (7, 4, 6)]


def _shift(levels):
    """The bound's shift by hand: atanh(offset / h), 0 at L = 2 (whose range misses 0)."""
    levels = np.asarray(levels, np.float64)
    h = (levels - 1) * (1 - fsq.EPS) / 2
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    return np.arctanh(np.where(offset < h, offset / h, 0.0)), h, offset


STEPS = 20
LEVELS = "4,2,2"  # 16 codes of 3 dimensions; L = 2 included


def fsq_config(**overrides):
    values = dict(num_hiddens=16, num_residual_hiddens=4, num_residual_layers=2)
    run = {**RUN, "num_training_updates": STEPS, "eval_every": 10, "checkpoint_every": 10}
    return preset("quickstart", quantizer="fsq", fsq_levels=LEVELS, **values, **run, **overrides)


def _images(n=3, seed=7):
    return jax.random.uniform(jax.random.key(seed), (n, 32, 32, 3), minval=-0.5, maxval=0.5)


# --- the code grid ---------------------------------------------------------------------------


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_every_index_round_trips_through_its_code(levels):
    k = math.prod(levels)
    idx = jnp.arange(k)
    codes = fsq.indices_to_codes(idx, levels)
    np.testing.assert_array_equal(fsq.codes_to_indices(codes, levels), idx)
    # channel i takes exactly the L_i values (d - L_i//2) / (L_i//2), d = 0..L_i-1
    for i, n in enumerate(levels):
        expected = [(d - n // 2) / (n // 2) for d in range(n)]
        np.testing.assert_allclose(sorted(set(np.asarray(codes[:, i]).tolist())), expected)
    # the mixed radix: index = d_0 + L_0 d_1 + L_0 L_1 d_2 + ..., the first digit fastest
    digits = list(itertools.product(*[range(n) for n in reversed(levels)]))
    by_hand = [sum(d * math.prod(levels[:i]) for i, d in enumerate(reversed(ds))) for ds in digits]
    assert sorted(by_hand) == list(range(k))
    hw = np.asarray(levels) // 2
    np.testing.assert_allclose(
        codes[np.asarray(by_hand)], (np.asarray(digits)[:, ::-1] - hw) / hw, atol=1e-7
    )
    np.testing.assert_array_equal(FSQuantizer(levels).codebook, codes)


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_every_code_is_reached_by_some_latent(levels):
    """Invert the bound by hand: the latent whose bounded value sits inside code k's bin,
    for every k, is quantised to code k."""
    k = math.prod(levels)
    shift, h, offset = _shift(levels)
    target = np.asarray(fsq.indices_to_codes(jnp.arange(k), levels), np.float64) * (
        np.asarray(levels) // 2
    )
    inside = np.clip(target, -h - offset + 0.01, h - offset - 0.01)  # the ends' bins are cut
    z = np.arctanh((inside + offset) / h) - shift
    quantizer = FSQuantizer(levels)
    np.testing.assert_array_equal(
        quantizer.indices(jnp.asarray(z, jnp.float32)[None]), np.arange(k)[None]
    )


# --- the bound, the rounding and the gradient ------------------------------------------------

floats = st.floats(allow_nan=False, width=32)  # any float32, infinities and 3e38 included


@given(st.sampled_from(LEVEL_SETS), st.lists(floats, min_size=8, max_size=8))
def test_bound_and_codes_stay_in_range_for_any_input(levels, values):
    z = jnp.resize(jnp.asarray(values, jnp.float32), (4, len(levels)))
    hw = np.asarray(levels) // 2
    b = np.asarray(fsq.bound(z, levels))
    assert np.all(np.abs(b) <= hw)
    q = np.asarray(fsq.quantize(z, levels))
    assert np.all(np.abs(q) <= 1.0)
    rounded = np.round(q * hw)
    np.testing.assert_allclose(q * hw, rounded, atol=1e-6)  # integers over L // 2
    assert np.all(rounded >= -hw) and np.all(rounded <= (np.asarray(levels) - 1) // 2)
    np.testing.assert_array_equal(rounded, np.round(b))  # the nearest integer to the bound
    idx = np.asarray(fsq.codes_to_indices(jnp.asarray(q), levels))
    assert np.all((idx >= 0) & (idx < math.prod(levels)))


def test_bound_maps_zero_to_zero_and_two_levels_to_the_boundary():
    np.testing.assert_allclose(fsq.bound(jnp.zeros(4), (8, 5, 4, 3)), 0.0, atol=1e-6)
    # L = 2: codes -1 and 0; the bound is tanh(z) h - 1/2, a sign around -1/2
    assert float(fsq.bound(jnp.zeros(1), (2,))[0]) == -0.5
    np.testing.assert_array_equal(fsq.quantize(jnp.array([[-0.1], [0.1]]), (2,)), [[-1.0], [0.0]])


@pytest.mark.parametrize("levels", [(8, 5, 3, 2), (4, 6, 7, 8)])
def test_gradient_is_straight_through_times_the_bounds_slope(levels):
    """d q / d z = h (1 - tanh^2(z + shift)) / (L // 2): rounding passes the gradient as the
    identity, and tanh' = 1 - tanh^2."""
    shift, h, _ = _shift(levels)
    z = (
        jnp.asarray(np.random.default_rng(0).normal(0, 1.5, (5, len(levels))), jnp.float32)
        .at[0]
        .set(0.0)
    )
    w = jnp.arange(1.0, 1.0 + z.size).reshape(z.shape)  # a different cotangent per entry
    grad = jax.grad(lambda z: jnp.sum(w * fsq.quantize(z, levels)))(z)
    by_hand = (
        w * h * (1 - np.tanh(np.asarray(z, np.float64) + shift) ** 2) / (np.asarray(levels) // 2)
    )
    np.testing.assert_allclose(grad, by_hand, rtol=1e-5, atol=2e-6)  # 1 - tanh^2 in float32


def test_the_quantizer_returns_codes_usage_and_no_loss():
    levels = (4, 3)
    z = jax.random.normal(jax.random.key(0), (2, 3, 5, 2)) * 2
    out = FSQuantizer(levels)(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 3, 5)
    np.testing.assert_array_equal(out.quantized, fsq.indices_to_codes(out.indices, levels))
    assert float(out.loss) == 0.0 and out.distances is None
    flat = np.asarray(out.indices).reshape(-1)
    np.testing.assert_array_equal(out.encodings, np.eye(12)[flat])
    p = np.bincount(flat, minlength=12) / flat.size
    expected = np.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))
    np.testing.assert_allclose(out.perplexity, expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\).*levels \(4, 3\)"):
        FSQuantizer(levels)(jnp.zeros((1, 2, 2, 3)))


@pytest.mark.parametrize(
    "levels, match",
    [((8, 1), "each be >= 2"), ((), "one or more integers"), ((64, 64, 64), "262144 codes")],
)
def test_levels_that_cannot_work_are_refused(levels, match):
    with pytest.raises(ValueError, match=match) as e:
        FSQuantizer(levels)
    assert "\n" not in str(e.value)


# --- the model ---------------------------------------------------------------------------------


def _run(model, x):
    """What the tests read of ``model`` on ``x``, in one compiled call (eager ops compile one
    by one: seconds)."""

    def outputs(model, x):
        out = model(x)
        idx = model.encode(x)
        return model.latents(x), model.encoder(x), idx, out, model.decode_indices(idx)

    return nnx.jit(outputs)(model, x)


@pytest.fixture(scope="module")
def fsq_state():
    """The initial state of :func:`fsq_config`'s model (its compiled init, shared with the run)."""

    return init_state(fsq_config())


def test_an_fsq_model_has_one_latent_channel_per_level_and_no_codebook_to_learn(fsq_state):
    model = to_model(fsq_config(), fsq_state.params, fsq_state.ema)
    assert "vq" not in nnx.to_pure_dict(nnx.state(model))  # nothing stored, nothing learned
    assert model.decoder.conv_1.kernel.shape[2] == 3  # one channel per level
    assert model.vq.codebook.shape == (16, 3)
    z, _, idx, out, decoded = _run(model, _images(2, seed=1))
    assert z.shape == (2, 8, 8, 3) and idx.shape == (2, 8, 8) and int(idx.max()) < 16
    np.testing.assert_array_equal(idx, out.indices)
    np.testing.assert_allclose(decoded, out.recon, atol=1e-6)
    np.testing.assert_array_equal(out.quantized, fsq.indices_to_codes(idx, (4, 2, 2)))


def test_bfloat16_compute_quantises_in_float32(fsq_state):
    """The encoder may run in bf16; its latents reach the quantiser as float32, and the codes
    are those of float32 math on the same latents (float64 by hand agrees)."""

    bf16 = fsq_config(compute_dtype="bfloat16")
    m32 = to_model(fsq_config(), fsq_state.params, fsq_state.ema)
    m16 = to_model(bf16, fsq_state.params, fsq_state.ema)
    z, features, idx, out16, _ = _run(m16, _images(4, seed=2))
    assert features.dtype == jnp.bfloat16 and z.dtype == jnp.float32
    assert out16.quantized.dtype == jnp.float32
    np.testing.assert_array_equal(m32.vq.indices(z), idx)
    np.testing.assert_array_equal(out16.indices, idx)
    shift, h, offset = _shift((4, 2, 2))
    by_hand = np.round(np.tanh(np.asarray(z, np.float64) + shift) * h - offset)
    np.testing.assert_array_equal(idx, (by_hand + [2, 1, 1]) @ np.array([1, 4, 8]))
    # bf16 latents handed to the quantiser directly are widened first
    assert FSQuantizer((4, 2, 2))(z.astype(jnp.bfloat16)).quantized.dtype == jnp.float32


# --- the config ------------------------------------------------------------------------------


def test_fsq_turns_the_presets_vq_settings_off_and_takes_its_sizes_from_the_levels():
    for name in ("quickstart", "cifar10", "notes"):
        c = preset(name, quantizer="fsq", fsq_levels="8,5,5,5").validate()
        assert (c.num_embeddings, c.embedding_dim) == (1000, 4)
        assert (c.decay, c.commitment_cost, c.dead_code_threshold, c.kmeans_init_steps) == (
            0.0,
            0.0,
            0.0,
            0,
        )
        assert c.estimator == "ste"
        assert c.num_hiddens == preset(name).num_hiddens  # the rest is the preset's
    assert preset("quickstart", quantizer="fsq", decay=0.0).decay == 0.0  # explicit, but off


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(decay=0.99), "--decay 0.99 is a VQ setting"),
        (dict(estimator="rotation"), "--estimator rotation is a VQ setting"),
        (dict(kmeans_init_steps=4), "--kmeans-init-steps 4 is a VQ setting"),
        (dict(dead_code_threshold=0.1), "--dead-code-threshold 0.1 is a VQ setting"),
        (dict(commitment_cost=0.25), "--commitment-cost 0.25 is a VQ setting"),
        (dict(ema_init="notes"), "--ema-init notes is a VQ setting"),
        (dict(num_embeddings=16), "num_embeddings follows from --fsq-levels 8,8,8: 512, not 16"),
        (dict(embedding_dim=8), "embedding_dim follows from --fsq-levels 8,8,8: 3, not 8"),
        (dict(fsq_levels="8,x"), "integers separated by commas"),
        (dict(fsq_levels="8,1"), "each be >= 2"),
        (dict(fsq_levels="256,256,2"), "131072 codes; at most 65536"),
    ],
)
def test_settings_fsq_would_ignore_are_refused_in_one_line(overrides, match):
    with pytest.raises(ValueError, match=match) as e:
        preset("quickstart", quantizer="fsq", **overrides).validate()
    assert "\n" not in str(e.value)


def test_fsq_levels_without_fsq_are_refused():
    with pytest.raises(ValueError, match="applies to --quantizer fsq only"):
        VQVAEConfig(fsq_levels="8,5,5,5").validate()
    with pytest.raises(ValueError, match="applies to --quantizer fsq only"):
        VQVAEConfig().check_given({"fsq_levels"})  # the default levels, given for a VQ run


@pytest.mark.parametrize("text", ["8_8", "+8,5", "\u0668,5", "8,-5", "8;5", "8,5,"])
def test_levels_are_ascii_digits_and_commas(text):
    with pytest.raises(ValueError, match="integers separated by commas"):
        VQVAEConfig(quantizer="fsq", fsq_levels=text).validate()


def test_levels_have_one_spelling_so_a_resume_compares_levels_not_typing():
    spaced = VQVAEConfig(quantizer="fsq", fsq_levels=" 8, 05 ,5,5")
    assert spaced.fsq_levels == "8,5,5,5" and spaced == VQVAEConfig(
        quantizer="fsq", fsq_levels="8,5,5,5"
    )
    assert VQVAEConfig.from_json(spaced.to_json()) == spaced


def test_a_config_json_from_before_fsq_is_a_vq_run(tmp_path):
    saved = json.loads(VQVAEConfig(decay=0.0).to_json())
    del saved["quantizer"], saved["fsq_levels"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert load_config(tmp_path, VQVAEConfig) == VQVAEConfig(decay=0.0)
    assert VQVAEConfig.LEGACY_VALUES["quantizer"] == "vq"


# --- a tiny FSQ run, and everything a VQ model works with ------------------------------------


@pytest.fixture(scope="module")
def fsq_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fsq_run")
    fit(fsq_config(), workdir)
    return workdir


def test_a_tiny_fsq_run_trains_and_logs_its_code_usage(fsq_run):
    metrics = read_jsonl(fsq_run / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [5, 10, 15, 20]
    for r in metrics:
        assert r["loss"] == r["recon_error"]  # no codebook or commitment loss
        assert r["restarted_codes"] == 0 and r["used_codes"] + r["dead_codes"] == 16
        assert 1.0 <= r["perplexity"] <= 16.0
    usage = read_jsonl(fsq_run / "codebook_usage.jsonl")
    assert [sum(u["counts"]) for u in usage] == [5 * 8 * 64] * 4  # steps x batch x 8x8 codes
    assert read_jsonl(fsq_run / "eval.jsonl")[-1]["used_codes"] >= 2
    assert (fsq_run / "codebook.png").stat().st_size > 0  # the grid, coloured by usage
    assert metrics[-1]["recon_error"] < 1.0 and math.isfinite(metrics[-1]["loss"])


def test_load_export_and_the_export_encode_and_decode_alike_bitwise(fsq_run, tmp_path):
    loaded = load(fsq_run)
    assert isinstance(loaded.model.vq, FSQuantizer) and loaded.config == fsq_config()
    path = export(fsq_run, tmp_path / "model.msgpack")
    again = load(path)
    assert again.config == loaded.config and again.step == STEPS
    x = _images()
    for a, b in zip(_run(loaded.model, x), _run(again.model, x), strict=True):
        for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(leaf_a, leaf_b)  # codes, decoded codes, the forward


def test_an_edited_config_json_is_refused_not_read_into_another_model(fsq_run, tmp_path, capsys):
    """Levels in another order have the same weight shapes but another grid: loading,
    evaluating and resuming a copy whose config.json says so are refused in one line."""
    copy = shutil.copytree(fsq_run, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    config["fsq_levels"] = ",".join(reversed(LEVELS.split(",")))  # 2,2,4: 16 codes of 3 dims
    (copy / "config.json").write_text(json.dumps(config))
    message = f"{copy}/config.json disagrees with the config that checkpoint {STEPS} was written"
    with pytest.raises(ValueError, match="fsq_levels: '2,2,4' in config.json, '4,2,2' in the"):
        load(copy)
    assert evaluate_script.main(["--workdir", str(copy)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="it was edited or replaced"):
        fit(fsq_config().replace(fsq_levels="2,2,4"), copy)
    config.update(fsq_levels="4,2,2,2", num_embeddings=32, embedding_dim=4)  # other shapes too
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="fsq_levels: '4,2,2,2' in config.json"):
        load(copy)
    (copy / "config.json").unlink()  # the way out the message gives: the checkpoint's config
    assert load(copy).config == fsq_config()


def test_a_resumed_fsq_run_may_repeat_its_levels_without_the_quantizer(
    fsq_run, tmp_path, xla_cache
):
    copy = shutil.copytree(fsq_run, tmp_path / "copy")
    cmd = [sys.executable, TRAIN, "--workdir", str(copy), "--fsq-levels", LEVELS]
    r = run([*cmd, "--progress", "false", "--compilation-cache", xla_cache])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["step"] == STEPS


def test_the_scripts_run_an_fsq_model_and_its_codes_decode_bitwise(fsq_run, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate((32, 32, 64)):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(photos / f"{i}.png")
    model = export(fsq_run, tmp_path / "model.msgpack")

    def main(script, *args):
        code = script.main([str(a) for a in args])
        return code, capsys.readouterr().out

    assert main(reconstruct_script, photos, "--model", model, "--out", tmp_path / "recon")[0] == 0
    assert main(encode_script, photos, "--model", fsq_run, "--out", tmp_path / "codes.npz")[0] == 0
    with np.load(tmp_path / "codes.npz") as f:
        assert f["codes"].max() < 16
    assert (
        main(decode_script, tmp_path / "codes.npz", "--model", model, "--out", tmp_path / "d")[0]
        == 0
    )
    for i in range(3):
        a = np.asarray(Image.open(tmp_path / f"recon/{i}.png"))
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"d/{i}.png")), a)
    code, out = main(evaluate_script, "--workdir", fsq_run, "--out", tmp_path / "eval.png")
    assert code == 0 and json.loads(out.splitlines()[-1])["step"] == STEPS


def test_codes_belong_to_their_fsq_model_not_to_every_model_of_those_levels(fsq_run, capsys):
    """FSQ models with the same levels share the grid; the fingerprint still tells them apart."""

    loaded = load(fsq_run)
    fresh = init_state(fsq_config())
    other = to_model(fsq_config(), fresh.params, fresh.ema)
    np.testing.assert_array_equal(other.vq.codebook, loaded.model.vq.codebook)
    assert codebook_fingerprint(other) != codebook_fingerprint(loaded.model)
    assert codebook_fingerprint(load(fsq_run).model) == codebook_fingerprint(loaded.model)


def test_a_prior_trains_on_an_fsq_models_codes(fsq_run, tmp_path):
    result = fit(prior_config(fsq_run, num_training_updates=6, eval_every=6), tmp_path)
    assert result.step == 6
    stats = json.loads((tmp_path / "data_stats.json").read_text())
    assert stats["num_codes"] == 16
    last = read_jsonl(tmp_path / "eval.jsonl")[-1]
    assert last["uniform_bits"] == 4.0 and math.isfinite(last["bits_per_code"])
