"""jaxbasics.data.folder: real image files in both layouts, exact pixels, errors that name files."""

import json
import re
import runpy

import jax
import numpy as np
import pytest
from PIL import Image

import decode_benchmark
from conftest import EVALUATE, small_config
from jaxbasics.data.folder import FolderSource, folder, split_fraction
from jaxbasics.data.images import ImageReadError, read_image
from jaxbasics.data.pipeline import train_dataset
from jaxbasics.data.sources import DATASETS, ArraySource, DatasetNotFoundError, get_source
from jaxbasics.tasks.vqvae import data as train_data
from jaxbasics.train import fit


def _noise(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _save(path, array_or_image, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = (
        array_or_image
        if isinstance(array_or_image, Image.Image)
        else Image.fromarray(array_or_image)
    )
    im.save(path, **kw)
    return path


def _flat(root, n, start=0):
    """n small PNG and JPEG files in a nested tree: name -> the array written."""
    written = {}
    for i in range(start, start + n):
        rel = f"{'ab'[i % 2]}/{i % 3}/img{i:03}.{'png' if i % 4 else 'JPG'}"
        written[rel] = _save(root / rel, _noise((36, 44, 3), i))
    return written


def _image_folder(root, counts):
    """ImageFolder layout: counts = {split: {class: n}}; each image a flat class colour."""
    for split, classes in counts.items():
        for c, (name, n) in enumerate(sorted(classes.items())):
            for i in range(n):
                _save(
                    root / split / name / f"{i:03}.png", np.full((40, 40, 3), 40 * c + i, np.uint8)
                )


# --- read_image ------------------------------------------------------------------------------


def test_image_size_crops_the_central_square_exactly(tmp_path):
    wide = _noise((32, 49, 3), 0)  # (H, W): 17 columns to cut, 8 on the left
    tall = _noise((48, 32, 3), 1)
    np.testing.assert_array_equal(
        read_image(_save(tmp_path / "w.png", wide), image_size=32), wide[:, 8:40]
    )
    np.testing.assert_array_equal(
        read_image(_save(tmp_path / "t.png", tall), image_size=32), tall[8:40]
    )


def test_image_size_resizes_the_crop_only(tmp_path):
    # A 64x64 linear ramp inside a 64x96 image whose margins are white: halving the ramp gives
    # the mean of each 2x2 block (any symmetric filter keeps a linear function), and a filter that
    # reached past the crop would pull the edge columns towards 255.
    y, x = np.mgrid[:64, :64]
    ramp = np.stack([x, y, x + y], -1).astype(np.uint8) + 20
    img = np.full((64, 96, 3), 255, np.uint8)
    img[:, 16:80] = ramp
    out = read_image(_save(tmp_path / "r.png", img), image_size=32).astype(float)
    expected = ramp.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    # Rounding only; resizing with Pillow's box= instead of cropping first is off by 13 here.
    assert np.abs(out - expected).max() <= 1


def test_resize_and_center_crop_primitives(tmp_path):
    img = _noise((64, 96, 3), 2)
    path = _save(tmp_path / "p.png", img)
    np.testing.assert_array_equal(read_image(path, center_crop=20), img[22:42, 38:58])
    assert read_image(path, resize=16).shape == (16, 24, 3)  # shorter side to 16, aspect kept
    assert read_image(path, resize=16, center_crop=16).shape == (16, 16, 3)
    with pytest.raises(ValueError, match="cannot crop the central 80x80 pixels of .*: it is 96x64"):
        read_image(path, center_crop=80)
    with pytest.raises(ValueError, match="image_size .* replaces center_crop"):
        read_image(path, image_size=16, resize=16)


def test_resize_then_center_crop_is_torchvisions_pipeline(tmp_path):
    # torchvision's Compose([Resize(20), CenterCrop(20)]) on a PIL image, spelled out from its
    # source: shorter side to 20 with PIL's bilinear filter, long side int(20 * long / short),
    # then a crop at int(round((size - 20) / 2.0)); 50 -> 27 columns, offset round(3.5) = 4
    # (Python rounds halves to even), where (27 - 20) // 2 would give 3.
    img = _noise((37, 50, 3), 7)
    path = _save(tmp_path / "odd.png", img)
    resized = Image.fromarray(img).resize((27, 20), Image.Resampling.BILINEAR)
    expected = np.asarray(resized)[0:20, 4:24]
    np.testing.assert_array_equal(read_image(path, resize=20, center_crop=20), expected)


def test_every_mode_comes_out_rgb(tmp_path):
    grey = _noise((8, 8), 3)
    out = read_image(_save(tmp_path / "l.png", grey))
    assert out.shape == (8, 8, 3) and all((out[..., c] == grey).all() for c in range(3))
    palette = Image.fromarray(_noise((8, 8, 3), 4)).quantize(16)
    np.testing.assert_array_equal(
        read_image(_save(tmp_path / "p.png", palette)), np.asarray(palette.convert("RGB"))
    )
    rgba = _noise((8, 8, 4), 5)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    out = read_image(_save(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(out, rgba[..., :3])  # alpha dropped, as convert("RGB") does
    la = Image.fromarray(np.stack([grey, np.full_like(grey, 128)], -1), "LA")
    np.testing.assert_array_equal(read_image(_save(tmp_path / "la.png", la))[..., 1], grey)
    sixteen = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    out = read_image(_save(tmp_path / "i16.png", Image.fromarray(sixteen)))
    np.testing.assert_array_equal(out[..., 0], sixteen >> 8)  # scaled, not clipped at 255
    cmyk = read_image(_save(tmp_path / "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0))))
    assert cmyk.shape == (8, 8, 3) and cmyk[..., 0].min() > 200 and cmyk[..., 1:].max() < 60


def test_jpeg_draft_decoding_stays_close_to_a_full_decode(tmp_path):
    y, x = np.mgrid[:512, :640] / 512
    photo = np.stack([np.sin(7 * x), np.cos(5 * y), np.sin(9 * x * y)], -1) * 100 + 128
    path = _save(tmp_path / "big.jpg", photo.astype(np.uint8), quality=95)
    full = Image.open(path).convert("RGB").crop((64, 0, 576, 512))
    for size in (32, 64):
        expected = np.asarray(full.resize((size, size), Image.Resampling.BILINEAR), float)
        assert np.abs(read_image(path, image_size=size) - expected).mean() < 1.0


def test_unreadable_files_raise_an_error_naming_them(tmp_path):
    good = _save(tmp_path / "good.jpg", _noise((64, 64, 3), 6), quality=90).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.png").write_text("not an image")
    for name in ("cut.jpg", "notes.png", "gone.png"):
        with pytest.raises(ImageReadError, match=re.escape(str(tmp_path / name))):
            read_image(tmp_path / name, image_size=32)
    assert issubclass(ImageReadError, ValueError)  # the CLI reports it and exits 1


# --- folder: layouts, labels and splits ------------------------------------------------------


def test_flat_layout_splits_by_path_hash_and_ignores_the_rest(tmp_path):
    written = _flat(tmp_path, 40)
    (tmp_path / "a" / "readme.txt").write_text("x")
    _save(tmp_path / ".hidden" / "x.png", _noise((4, 4, 3), 0))
    _save(tmp_path / "a" / ".dot.png", _noise((4, 4, 3), 0))
    train, test = folder(tmp_path, "train"), folder(tmp_path, "test", eval_fraction=0.1)
    assert sorted(train.files + test.files) == sorted(written)  # upper-case .JPG included
    assert list(train.files) == sorted(train.files)
    assert all(split_fraction(f) < 0.1 for f in test.files)
    assert all(split_fraction(f) >= 0.1 for f in train.files)
    assert set(train.labels) == {0} and train.image_size == 32
    np.testing.assert_array_equal(
        train[3]["image"], read_image(written[train.files[3]], image_size=32)
    )
    # The same files give the same split; new files never move existing ones across it.
    assert folder(tmp_path, "test").files == test.files
    _flat(tmp_path, 40, start=40)
    bigger = folder(tmp_path, "test")
    assert set(test.files) == set(bigger.files) & set(written)
    half = folder(tmp_path, "test", eval_fraction=0.5)
    assert 20 < len(half) < 60 and set(test.files) <= set(half.files)


def test_image_folder_layout_labels_by_sorted_class_names(tmp_path):
    _image_folder(tmp_path, {"train": {"dog": 3, "cat": 2}, "test": {"cat": 1, "emu": 1}})
    train, test = folder(tmp_path, "train"), folder(tmp_path, "test", image_size=8)
    assert train.classes == test.classes == ("cat", "dog", "emu")
    assert train.files[0] == "train/cat/000.png" and list(train.labels) == [0, 0, 1, 1, 1]
    assert list(test.labels) == [0, 2]
    batch = train.read_batch([1, 4])
    assert batch["image"].shape == (2, 32, 32, 3) and list(batch["label"]) == [0, 1]
    assert (batch["image"][0] == 1).all() and (batch["image"][1] == 42).all()
    assert test[1]["image"].shape == (8, 8, 3)
    (tmp_path / "test").rename(tmp_path / "val")  # torchvision's other name for it
    assert folder(tmp_path, "test").files == ("val/cat/000.png", "val/emu/000.png")


def test_get_source_dispatches_folder(tmp_path):
    _flat(tmp_path, 20)
    assert "folder" in DATASETS
    src = get_source("folder", "train", data_dir=tmp_path, num_examples=3, image_size=16)
    assert len(src) == 3 and src.read_batch([0, 2])["image"].shape == (2, 16, 16, 3)
    assert len(get_source("folder", "test", data_dir=tmp_path, eval_fraction=0.5)) > 2
    with pytest.raises(DatasetNotFoundError, match="needs --data-dir"):
        get_source("folder", "train")


def _phone_photos(root):
    root.mkdir()
    for i in range(3):
        (root / f"IMG_{i}.heic").write_bytes(b"")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda r: None, r"missing does not exist"),
        (lambda r: r.mkdir(), r"missing is empty"),
        (
            _phone_photos,
            r"holds 3 files but none is an image: 3 \.heic\. Image files are those ending in "
            r"\.bmp, \.jpeg",
        ),
        (
            lambda r: _image_folder(r, {"train": {"a": 2}}),
            r"read as torchvision's ImageFolder layout, but it has no test/ \(or val/\)",
        ),
        (
            lambda r: (
                _image_folder(r, {"train": {"a": 2}}) or (r / "test" / "a").mkdir(parents=True)
            ),
            r"missing/test is empty",
        ),
        (lambda r: _image_folder(r, {"test": {"a": 2}}), r"has a test/ folder but no train/"),
        (lambda r: _flat(r, 1), r"none of the 1 images under .* falls in the 'test' split"),
    ],
    ids=["missing", "empty", "no-images", "no-test", "empty-test", "no-train", "tiny"],
)
def test_folder_errors_name_the_folder_and_the_fix(tmp_path, make, match):
    root = tmp_path / "missing"
    make(root)
    with pytest.raises(DatasetNotFoundError, match=match):
        folder(root, "test", eval_fraction=1e-9)


def test_loose_files_in_train_are_pointed_out(tmp_path):
    _image_folder(tmp_path, {"test": {"a": 1}})
    _save(tmp_path / "train" / "x.png", _noise((4, 4, 3), 0))
    with pytest.raises(DatasetNotFoundError, match=r"1 images lie directly in .*train"):
        folder(tmp_path, "train")


def test_an_unreadable_file_stops_the_pipeline_naming_it(tmp_path):
    _image_folder(tmp_path, {"train": {"a": 8}, "test": {"a": 1}})
    (tmp_path / "train" / "a" / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    it = iter(train_dataset(folder(tmp_path), batch_size=8, seed=0))
    with pytest.raises(ImageReadError, match=r"train/a/005\.png"):
        next(it)


def test_decode_benchmark_prints_one_line_per_size(capsys):
    argv = ["--count", "24", "--source-size", "40", "--image-size", "8,16"]
    decode_benchmark.main([*argv, "--batch", "4", "--batches", "2"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image_size"] for r in lines] == [8, 16]
    assert all(r["in_memory"] > 0 and r["pipeline_2_threads"] > 0 for r in lines)


# --- training on a folder --------------------------------------------------------------------


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """An ImageFolder of 72 train and 12 test noise images of mixed sizes, PNG and JPEG."""
    root = tmp_path_factory.mktemp("photos")
    for split, n, seed in (("train", 72, 0), ("test", 12, 100)):
        for i in range(n):
            ext = "jpg" if i % 3 == 0 else "png"
            image = _noise((40 + i % 5, 48, 3), seed + i)
            _save(root / split / f"c{i % 2}" / f"{i:03}.{ext}", image)
    return root


def test_fit_at_image_size_64_and_evaluate_it(photos, tmp_path, capsys):
    config = small_config(
        dataset="folder", data_dir=str(photos), image_size=64, num_training_updates=2
    )
    result = fit(config, tmp_path)
    assert result.step == 2 and np.isfinite(result.eval_metrics["recon_error"])
    assert runpy.run_path(EVALUATE)["main"](["--workdir", str(tmp_path)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["step"] == 2 and line["num_examples"] == 12
    assert line["recon_error"] == pytest.approx(result.eval_metrics["recon_error"], rel=1e-5)


def test_folder_resume_is_exact_when_decoding_per_batch(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(train_data, "IN_MEMORY_BYTES", 0)  # every split decoded per batch
    config = small_config(dataset="folder", data_dir=str(photos))
    data = train_data.sources(config)
    assert not isinstance(data.train, ArraySource) and isinstance(data.test, FolderSource)
    straight = fit(config, tmp_path / "a")
    fit(config.replace(num_training_updates=5), tmp_path / "b")
    resumed = fit(config, tmp_path / "b")
    for x, y in zip(_leaves(straight.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)
    # Decoded in memory (the default for data this small), the run is the same run.
    monkeypatch.undo()
    assert isinstance(train_data.sources(config).train, ArraySource)
    in_memory = fit(config, tmp_path / "c")
    for x, y in zip(_leaves(straight.state), _leaves(in_memory.state), strict=True):
        np.testing.assert_array_equal(x, y)


def test_fit_refuses_a_train_split_smaller_than_a_batch(photos, tmp_path):
    config = small_config(dataset="folder", data_dir=str(photos), num_train_examples=5)
    with pytest.raises(ValueError, match=r"has 5 images, fewer than one batch of 8"):
        fit(config, tmp_path)


def test_resume_refuses_changed_images_and_skips_its_own_workdir(tmp_path):
    root = tmp_path / "flat"
    for i in range(40):
        _save(root / f"{i:03}.png", _noise((36, 36, 3), 200 + i))
    config = small_config(dataset="folder", data_dir=str(root), num_training_updates=2)
    workdir = root / "run"  # kept inside the data folder: its PNGs must not become data
    fit(config, workdir)
    assert (workdir / "reconstructions.png").exists()
    assert fit(config.replace(num_training_updates=3), workdir).step == 3
    _save(root / "new.png", _noise((36, 36, 3), 300))
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="the training data changed since this run started"):
        fit(config.replace(num_training_updates=4), workdir)
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before
