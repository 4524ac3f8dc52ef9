"""The palette tokenizer (jaxbasics.vqvae.palette and VQVAE(palette_slots=J)): the colour-blind
input, the palette read off the image, the code map's colour row, the samplers' per-position
vocabularies, and a tiny run through both stages."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import encode as encode_script
from conftest import RUN, prior_config
from jaxbasics.prior import MaskGITPrior, TransformerPrior, sample
from jaxbasics.tasks.prior.data import vqvae_of
from jaxbasics.tasks.prior.samples import sample_rows
from jaxbasics.tasks.prior.trained import load_prior
from jaxbasics.tasks.vqvae.apply import model_fns
from jaxbasics.tasks.vqvae.codes import Codes, check_codes_fit, read_codes, write_codes
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.presets import preset
from jaxbasics.train import fit
from jaxbasics.vqvae import palette
from jaxbasics.vqvae.convert import to_torch_state_dict
from jaxbasics.vqvae.model import VQVAE

K, J = 8, 3  # structure codes (FSQ 2,2,2) and palette slots of the tiny models


def tiny(slots: int = J, seed: int = 0) -> VQVAE:
    return VQVAE(
        16, 4, 1, quantizer="fsq", fsq_levels=(2, 2, 2), palette_slots=slots, rngs=nnx.Rngs(seed)
    )


def fits(allowed: np.ndarray, codes: np.ndarray) -> bool:
    """Whether every (B, h, w) code is one its position may hold."""
    rows, width = np.indices(allowed.shape[:2])
    return bool(allowed[rows, width, np.asarray(codes)].all())


def images(n: int = 4, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (n, 16, 16, 3), minval=-0.5, maxval=0.5)


@given(st.integers(0, 2**31 - 1))
def test_colour_distances_ignore_any_rotation_or_reflection_of_colour_space(seed):
    x = np.asarray(images(2, seed % 1000))
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))  # orthogonal
    shift = np.random.default_rng(seed + 1).normal(size=3)
    moved = x @ q.T + shift
    np.testing.assert_allclose(palette.distances(moved), palette.distances(x), atol=2e-5)


def test_colour_distances_by_hand():
    x = jnp.zeros((1, 4, 4, 3)).at[0, 0, 1].set(jnp.array([0.3, 0.0, 0.4]))  # |d| = 0.5
    d = np.asarray(palette.distances(x))
    right = palette.OFFSETS.index((0, 1))
    assert d[0, 0, 0, right] == pytest.approx(np.tanh(np.sqrt(0.25 + 1e-6) / 0.1), abs=1e-6)
    assert d[0, 2, 2, right] == pytest.approx(np.tanh(1e-3 / 0.1), abs=1e-6)  # 0 -> sqrt(eps)
    # The corners: (0, 0) is black like (3, 3), so (0, 1) stands 0.5 from both.
    assert d[0, 0, 1, -4] == d[0, 0, 1, -1] == pytest.approx(d[0, 0, 0, right])


def test_the_palette_is_the_rounded_mean_under_each_mask():
    x = jnp.zeros((1, 2, 2, 3)).at[0, 0, 0].set(0.5).at[0, 0, 1].set(0.2)  # mean 0.35
    m = jnp.zeros((1, 2, 2, 2)).at[0, 0, :, 0].set(1.0).at[0, 1, :, 1].set(1.0)
    c = np.asarray(palette.read_palette(m, x))
    level = round((0.35 / (2 + 1e-3) * 2 + 0.5) * 7)  # the mean, its level of 0..7
    np.testing.assert_allclose(c[0, 0], level / 7 - 0.5, atol=1e-6)
    np.testing.assert_allclose(c[0, 1], 0.0 - 0.5 + 4 / 7, atol=1e-6)  # grey 0: level 3.5 -> 4
    paint = palette.compose(m, jnp.asarray(c))
    np.testing.assert_allclose(paint[0, 0, 0], c[0, 0])
    np.testing.assert_allclose(paint[0, 1, 1], c[0, 1])


def test_rounding_passes_the_gradient_straight_through():
    g = jax.grad(lambda c: palette.round_colours(c).sum())(jnp.array([0.1, -0.2]))
    np.testing.assert_allclose(g, [1.0, 1.0], rtol=1e-6)


def test_every_colour_code_maps_to_its_colour_and_back():
    codes = jnp.arange(palette.CODES)
    colours = palette.index_colours(codes)
    assert len(np.unique(np.asarray(colours), axis=0)) == palette.CODES
    np.testing.assert_array_equal(palette.colour_indices(colours), codes)
    np.testing.assert_array_equal(palette.colour_indices(palette.round_colours(colours)), codes)


def test_a_code_map_is_a_colour_row_then_colour_blind_structure():
    model, x = tiny(), images()
    codes = np.asarray(model.encode(x))
    assert codes.shape == (4, 5, 4) and model.num_codes == K + 513
    allowed = model.allowed_codes(5, 4)
    assert fits(allowed, codes)
    # A channel permutation and a negation (an orthogonal map of colour space, about
    # grey) leave the structure codes as they were; the colours follow the image.
    moved = -x[..., ::-1]
    moved_codes = np.asarray(model.encode(moved))
    np.testing.assert_array_equal(moved_codes[:, 1:], codes[:, 1:])
    colours = palette.index_colours(codes[:, 0, :J] - K)
    np.testing.assert_allclose(
        palette.index_colours(moved_codes[:, 0, :J] - K), -colours[..., ::-1], atol=1e-6
    )


def test_decoding_a_code_map_gives_the_reconstruction():
    model, x = tiny(), images()
    out = model(x)
    np.testing.assert_allclose(model.decode_indices(model.encode(x)), out.recon, atol=1e-5)
    assert out.indices.shape == (4, 4, 4) and int(out.indices.max()) < K  # structure only


def test_the_loss_reaches_every_parameter():
    model, x = tiny(), images()
    grads = nnx.grad(lambda m: jnp.mean((m(x).recon - x) ** 2))(model)
    norms = {
        jax.tree_util.keystr(p): float(jnp.abs(g).sum())
        for p, g in jax.tree.leaves_with_path(grads)
    }
    assert all(v > 0 for v in norms.values()), norms


def test_bad_maps_and_narrow_images_are_one_line_errors():
    model = tiny()
    with pytest.raises(
        ValueError, match=r"holds code 2 at row 0, column 0, where only codes in \[8, 519\]"
    ):
        model.decode_indices(jnp.full((1, 5, 4), 2))
    with pytest.raises(ValueError, match=r"\(B, h \+ 1, w\) with w >= 3"):
        model.decode_indices(jnp.zeros((1, 5, 2), jnp.int32))
    with pytest.raises(ValueError, match="at least 12 pixels wide, got 8"):
        model.encode(jnp.zeros((1, 16, 8, 3)))
    with pytest.raises(ValueError, match="palette_slots must be"):
        tiny(slots=-1)
    with pytest.raises(ValueError, match="palette_slots must be 0 \\(off\\) or at least 2, got 1"):
        tiny(slots=1)
    with pytest.raises(ValueError, match=r"indices must be integers in \[0, 521\), got -1"):
        palette.split_map(np.full((1, 5, 4), -1), K, J)
    with pytest.raises(ValueError, match="the PyTorch converter handles the notes' VQ-VAE only"):
        to_torch_state_dict(nnx.state(VQVAE(16, 4, 1, 8, 16, palette_slots=J, rngs=nnx.Rngs(0))))


def test_under_jit_a_code_outside_its_rows_codes_is_clipped_into_them():
    model = tiny()
    bad = jnp.zeros((1, 5, 4), jnp.int32).at[0, 1:].set(K + 7)  # colour codes in the structure
    decode = nnx.jit(lambda m, c: m.decode_indices(c))
    fixed = bad.at[0, 0, :J].set(K).at[0, 0, J:].set(K + 512).at[0, 1:].set(K - 1)
    np.testing.assert_array_equal(decode(model, bad), decode(model, fixed))


@pytest.mark.parametrize("kind", ["transformer", "maskgit"])
def test_samplers_draw_each_position_from_its_own_codes(kind):
    allowed = palette.vocabulary(3, 4, K, J)
    cls = TransformerPrior if kind == "transformer" else MaskGITPrior
    prior = cls(K + 513, 3, 4, num_classes=2, dim=8, depth=1, heads=2, rngs=nnx.Rngs(0))
    labels = np.array([0, 1] * 8)
    codes = np.asarray(
        sample(prior, 16, jax.random.key(0), labels=labels, guidance=3.0, allowed=allowed)
    )
    assert fits(allowed, codes)
    free = np.asarray(sample(prior, 16, jax.random.key(0), labels=labels, guidance=3.0))
    assert not fits(allowed, free)  # the mask does something


def test_sample_refuses_an_allowed_of_another_shape_or_an_empty_position():
    prior = TransformerPrior(K + 513, 3, 4, dim=8, depth=1, heads=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"allowed must be bools of shape \(3, 4, 521\)"):
        sample(prior, 2, jax.random.key(0), allowed=np.ones((3, 4, 8), bool))
    empty = palette.vocabulary(3, 4, K, J)
    empty[1, 2] = False
    with pytest.raises(ValueError, match="leaves a position no code"):
        sample(prior, 2, jax.random.key(0), allowed=empty)


def test_config_checks_the_slots_and_old_configs_have_none():
    for slots in (1, 9):
        with pytest.raises(ValueError, match=r"--palette-slots must be 0 \(off\) or in \[2, 8\]"):
            VQVAEConfig(palette_slots=slots).validate()
    with pytest.raises(ValueError, match="does not combine with --disc-weight"):
        VQVAEConfig(palette_slots=5, disc_weight=0.5).validate()
    old = json.loads(VQVAEConfig().to_json())
    del old["palette_slots"]
    assert VQVAEConfig.from_json(json.dumps(old)).palette_slots == 0
    c = preset("shapes-palette")
    assert (c.palette_slots, c.num_embeddings, c.num_codes) == (5, 125, 638)
    vq = preset("shapes-palette", quantizer="vq").validate()  # the preset's levels dropped
    assert (vq.fsq_levels, vq.num_embeddings, vq.num_codes) == ("8,8,8", 1024, 1537)


@pytest.fixture(scope="module")
def palette_run(tmp_path_factory):
    """A finished tiny palette VQ-VAE run and a tiny transformer prior over its codes."""
    sizes = dict(num_hiddens=16, num_residual_hiddens=4, num_residual_layers=1)
    config = preset("shapes-palette", **sizes, **RUN, fsq_levels="2,2,2", palette_slots=J)
    vq, prior = tmp_path_factory.mktemp("palette_vq"), tmp_path_factory.mktemp("palette_prior")
    fit(config, vq)
    fit(prior_config(vq), prior)
    return vq, prior


def test_a_palette_run_trains_a_prior_whose_samples_decode(palette_run, tmp_path):
    vq, prior_dir = palette_run
    cached = np.load(prior_dir / "prior_codes.npz")
    assert int(cached["num_codes"]) == K + 513 and cached["train_codes"].shape[1:] == (9, 8)
    loaded, _ = vqvae_of(vq, prior_dir)
    prior = load_prior(prior_dir).prior
    rows, titles = sample_rows(prior, loaded.model, [str(i) for i in range(10)], seed=0)
    assert len(rows) == 10 and rows[0].shape == (8, 32, 32, 3)
    codes = np.asarray(
        sample(
            prior,
            4,
            jax.random.key(1),
            labels=np.arange(4),
            allowed=loaded.model.allowed_codes(9, 8),
        )
    )
    path = write_codes(tmp_path / "c.npz", list("abcd"), list(codes), loaded.model, loaded.config)
    back = read_codes(path)
    check_codes_fit(back, loaded.model, loaded.config, path)
    decoded = np.asarray(model_fns(loaded.model).decode(np.stack(back.maps)))
    assert decoded.shape == (4, 32, 32, 3) and np.isfinite(decoded).all()
    crafted = Codes(back.names, [m.copy() for m in back.maps], back.config, back.codebook_sha256)
    crafted.maps[2][3, 3] = K + 1  # a colour code among the structure codes
    with pytest.raises(ValueError, match=r"c.npz: a palette code map holds code 9 at row 3"):
        check_codes_fit(crafted, loaded.model, loaded.config, path)


def test_encode_refuses_images_narrower_than_the_palette_in_one_line(palette_run, tmp_path, capsys):
    Image.fromarray(np.zeros((32, 8, 3), np.uint8)).save(tmp_path / "narrow.png")  # 2 codes wide
    try:
        code = encode_script.main(
            [
                str(tmp_path / "narrow.png"),
                "--model",
                str(palette_run[0]),
                "--out",
                str(tmp_path / "c.npz"),
            ]
        )
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "narrow.png is narrower than 12 pixels" in err and "--center-crop S" in err
    assert not (tmp_path / "c.npz").exists()
