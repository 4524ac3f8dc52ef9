"""jaxbasics.train.files: everything is written whole or not at all, nothing over a stranger's
file; figures and PNGs go through the one atomic writer. (The --out policy is tested with the
scripts that use it, in test_hostile_files.py and test_tasks_vqvae_codes.py.)"""

import errno

import numpy as np
import pytest
from PIL import Image

from jaxbasics import plots
from jaxbasics.train.files import save_figure, save_png, write_atomic


def test_save_figure_writes_the_picture(tmp_path):
    fig = plots.training_curves([0.5, 0.25], [3.0, 4.0])
    path = save_figure(fig, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_a_failed_figure_leaves_the_old_picture_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    fig = plots.training_curves(np.ones(3), np.ones(3))

    def full_disk(target, **kwargs):
        target.write(b"half")  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fig, "savefig", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_figure(fig, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_save_png_is_lossless(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save_png(tmp_path / "a" / "x.png", pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels)


def test_unchanged_text_leaves_the_file_untouched(tmp_path):
    path = write_atomic(tmp_path / "config.json", "{}")
    before = path.stat().st_mtime_ns
    write_atomic(path, "{}")
    assert path.stat().st_mtime_ns == before
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_atomic(tmp_path, "{}")
