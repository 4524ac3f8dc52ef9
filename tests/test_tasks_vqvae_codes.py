"""Your own images through a trained model: reconstruct.py, encode.py, decode.py, export.py.

One real run (in-process, tiny) is shared; the scripts' `main` runs in-process (sharing its
compiled programs) for the many input cases, and once as a subprocess, as a user runs it.
"""

import json
import sys

import numpy as np
import pytest
from PIL import Image

import decode as decode_script
import encode as encode_script
import export as export_script
import reconstruct as reconstruct_script
from conftest import EXPERIMENTS, TRAINED_STEPS, run, small_config
from jaxbasics.tasks.vqvae.codes import code_dtype, read_codes
from jaxbasics.train import fit

CONFIG = small_config(num_training_updates=TRAINED_STEPS)  # the workdir fixture's run


def _rgb(size, seed):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def photos(tmp_path):
    """PNG and JPEG, grey, palette and RGBA images, in a folder with a subfolder."""
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(_rgb(32, 0)).save(d / "rgb.png")
    Image.fromarray(_rgb(32, 1)).save(d / "photo.jpg", quality=90)
    Image.fromarray(_rgb(32, 2)[..., 0]).save(d / "sub" / "grey.png")  # mode L
    Image.fromarray(_rgb(32, 3)).convert("P").save(d / "sub" / "palette.png")
    rgba = np.dstack([_rgb(32, 4), np.full((32, 32), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "sub" / "alpha.png")
    Image.fromarray(_rgb(64, 5)).save(d / "big.png")  # 64x64: a 16x16 code map
    return d


def _main(script, capsys, *args):
    """Run a script's main in-process: its exit status (returned or sys.exit), summary, stderr."""
    try:
        code = script.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, (json.loads(out.strip().splitlines()[-1]) if code == 0 else None), err


def _pixels(path):
    return np.asarray(Image.open(path))


def test_reconstruct_encode_decode_agree_bitwise(workdir, photos, tmp_path, capsys):
    code, summary, _ = _main(
        reconstruct_script, capsys, photos, "--model", workdir, "--out", tmp_path / "recon"
    )
    assert code == 0 and summary["images"] == 6 and summary["mean_recon_error"] > 0
    lines = [
        json.loads(x) for x in (tmp_path / "recon/recon_errors.jsonl").read_text().splitlines()
    ]
    assert sorted(r["name"] for r in lines) == sorted(
        ["big.png", "photo.jpg", "rgb.png", "sub/alpha.png", "sub/grey.png", "sub/palette.png"]
    )
    assert summary["mean_recon_error"] == pytest.approx(np.mean([r["recon_error"] for r in lines]))
    # grids by size, in order of first appearance: big.png (64x64) first, then five 32x32 pairs
    assert _pixels(tmp_path / "recon/grids/grid_000.png").shape == (128, 64, 3)
    assert _pixels(tmp_path / "recon/grids/grid_001.png").shape == (64, 5 * 32, 3)

    code, summary, _ = _main(
        encode_script, capsys, photos, "--model", workdir, "--out", tmp_path / "codes.npz"
    )
    assert code == 0 and summary["code_shapes"] == [[8, 8], [16, 16]]
    with np.load(tmp_path / "codes.npz") as f:
        assert f["codes"].dtype == code_dtype(16) == np.uint8
    codes = read_codes(tmp_path / "codes.npz")
    assert codes.config == CONFIG and dict(
        zip(codes.names, [m.shape for m in codes.maps], strict=True)
    )["big.png"] == (16, 16)

    code, summary, _ = _main(
        decode_script,
        capsys,
        tmp_path / "codes.npz",
        "--model",
        workdir,
        "--out",
        tmp_path / "decoded",
    )
    assert code == 0 and summary["images"] == 6
    for r in lines:
        name = r["name"].rsplit(".", 1)[0] + ".png"
        np.testing.assert_array_equal(
            _pixels(tmp_path / "decoded" / name), _pixels(tmp_path / "recon" / name)
        )


def test_grey_palette_and_rgba_inputs_become_rgb(workdir, photos, tmp_path, capsys):
    code, _, _ = _main(
        reconstruct_script, capsys, photos / "sub", "--model", workdir, "--out", tmp_path / "r"
    )
    assert code == 0
    assert all(_pixels(p).shape == (32, 32, 3) for p in (tmp_path / "r").glob("*.png"))


def test_a_side_not_a_multiple_of_4_names_the_file_and_the_fix(workdir, tmp_path, capsys):
    Image.fromarray(_rgb(30, 6)).save(tmp_path / "odd.png")
    code, _, err = _main(
        encode_script, capsys, tmp_path / "odd.png", "--model", workdir, "--out", tmp_path / "c.npz"
    )
    assert code == 1 and "odd.png is 30x30 pixels" in err and "--center-crop" in err
    code, summary, _ = _main(
        encode_script,
        capsys,
        tmp_path / "odd.png",
        "--model",
        workdir,
        "--out",
        tmp_path / "c.npz",
        "--center-crop",
        "28",
    )
    assert code == 0 and summary["code_shapes"] == [[7, 7]]
    (tmp_path / "c.npz").unlink()  # the next run may not write over it
    code, summary, _ = _main(
        encode_script,
        capsys,
        tmp_path / "odd.png",
        "--model",
        workdir,
        "--out",
        tmp_path / "c.npz",
        "--resize",
        "64",
    )
    assert code == 0 and summary["code_shapes"] == [[16, 16]]


def test_bad_inputs_fail_with_a_message(workdir, tmp_path, capsys):
    jpeg = tmp_path / "broken.jpg"
    Image.fromarray(_rgb(32, 7)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:300])  # truncated
    code, _, err = _main(
        reconstruct_script, capsys, jpeg, "--model", workdir, "--out", tmp_path / "o"
    )
    assert code == 1 and "cannot read" in err and "broken.jpg" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = _main(
        reconstruct_script, capsys, tmp_path / "empty", "--model", workdir, "--out", tmp_path / "o"
    )
    assert code == 1 and "holds no image files" in err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    code, _, err = _main(
        encode_script, capsys, tmp_path / "notes", "--model", workdir, "--out", tmp_path / "c.npz"
    )
    assert code == 1 and "holds no image files" in err


def test_codes_from_another_model_are_refused(workdir, tmp_path, capsys):
    Image.fromarray(_rgb(32, 8)).save(tmp_path / "a.png")
    _main(
        encode_script,
        capsys,
        tmp_path / "a.png",
        "--model",
        workdir,
        "--out",
        tmp_path / "codes.npz",
    )
    other = tmp_path / "other"  # other K
    fit(CONFIG.replace(num_embeddings=32, num_training_updates=2), other)
    code, _, err = _main(
        decode_script, capsys, tmp_path / "codes.npz", "--model", other, "--out", tmp_path / "d"
    )
    assert code == 1 and "num_embeddings: codes 16, model 32" in err and err.count("\n") == 1
    retrained = tmp_path / "retrained"  # same sizes, other weights
    fit(CONFIG.replace(seed=1, num_training_updates=2), retrained)
    code, _, err = _main(
        decode_script, capsys, tmp_path / "codes.npz", "--model", retrained, "--out", tmp_path / "d"
    )
    assert code == 1 and "the codebooks differ" in err


def test_export_then_use_the_export_as_a_user_would(workdir, tmp_path, capsys):
    code, summary, _ = _main(export_script, capsys, workdir, tmp_path / "model.msgpack")
    assert code == 0 and summary["checkpoint_bytes"] / summary["bytes"] >= 2.5
    Image.fromarray(_rgb(32, 9)).save(tmp_path / "x.png")
    r = run(
        [
            sys.executable,
            str(EXPERIMENTS / "reconstruct.py"),
            str(tmp_path / "x.png"),
            "--model",
            str(tmp_path / "model.msgpack"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["images"] == 1 and (tmp_path / "out" / "x.png").exists()


def _tree(d):
    return {
        p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
    }


def test_outputs_never_overwrite_inputs_or_each_other(workdir, photos, tmp_path, capsys):
    Image.fromarray(_rgb(32, 10)).save(photos / "rgb.jpg", quality=90)  # next to rgb.png
    before = _tree(photos)
    code, _, err = _main(reconstruct_script, capsys, photos, "--model", workdir, "--out", photos)
    assert code == 1 and "holds the input" in err and _tree(photos) == before
    # A subfolder of the inputs is fine; a second run into it is refused: it would write over
    # the first's files (nothing is ever written over), and it reads none of them as inputs.
    args = [photos, "--model", workdir, "--out", photos / "recon"]
    code, summary, _ = _main(reconstruct_script, capsys, *args)
    assert code == 0 and summary["images"] == len(before)
    first = _tree(photos / "recon")
    code, _, err = _main(reconstruct_script, capsys, *args)
    assert code == 1 and "exists" in err and "no script writes over" in err
    assert _tree(photos / "recon") == first
    written = {n for n in _tree(photos / "recon") if not n.startswith("grids/")}
    assert {"rgb.jpg.png", "rgb.png.png", "photo.png", "sub/grey.png"} <= written
    assert len(written) == len(before) + 1  # one PNG per image, plus recon_errors.jsonl
    assert {k: v for k, v in _tree(photos).items() if not k.startswith("recon/")} == before
    # The same name in two input folders: named by their paths under the common folder.
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(_rgb(32, 11)).save(tmp_path / name / "x.png")
    code, summary, _ = _main(
        encode_script,
        capsys,
        tmp_path / "a",
        tmp_path / "b",
        "--model",
        workdir,
        "--out",
        tmp_path / "c.npz",
    )
    assert code == 0 and read_codes(tmp_path / "c.npz").names == ["a/x.png", "b/x.png"]


def test_wrong_output_paths_fail_cleanly(workdir, tmp_path, capsys):
    Image.fromarray(_rgb(32, 12)).save(tmp_path / "x.png")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    for script, args in [
        (export_script, [workdir, tmp_path / "dir"]),
        (encode_script, [tmp_path / "x.png", "--model", workdir, "--out", tmp_path / "dir"]),
        (reconstruct_script, [tmp_path / "x.png", "--model", workdir, "--out", tmp_path / "file"]),
        (decode_script, [tmp_path / "x.png", "--model", workdir, "--out", tmp_path / "d"]),
    ]:
        code, _, err = _main(script, capsys, *args)
        assert code == 1 and "Traceback" not in err, err
    assert "not a codes.npz" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file", "x.png"]  # no leftovers
    assert not any((tmp_path / "dir").iterdir())
