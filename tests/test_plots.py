"""jaxbasics.plots: figures are written whole or not at all."""

import errno

import numpy as np
import pytest

from jaxbasics import plots


def test_save_writes_the_picture(tmp_path):
    path = plots.save(plots.training_curves([0.5, 0.25], [3.0, 4.0]), tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_a_failed_save_leaves_the_old_picture_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    fig = plots.training_curves(np.ones(3), np.ones(3))

    def full_disk(target, **kwargs):
        open(target, "wb").write(b"half")  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fig, "savefig", full_disk)
    with pytest.raises(OSError, match="No space"):
        plots.save(fig, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
