"""Files from elsewhere (codes.npz, exports, images) and --out paths that try to do harm.

Every case is refused with a one-line message before anything is written: names read from a
file never lead outside --out, no script writes over what it was given or into a training
workdir, damaged or crafted files never decode into garbage, and a tiny file that would
decode to gigabytes is refused from its header.
"""

import json
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import decode as decode_script
import encode as encode_script
import export as export_script
import reconstruct as reconstruct_script
from jaxbasics.data.folder import folder
from jaxbasics.data.images import ImageReadError, InputImage, read_image
from jaxbasics.tasks.vqvae import codes as codes_module
from jaxbasics.tasks.vqvae.codes import read_codes, write_codes
from jaxbasics.tasks.vqvae.trained import load
from jaxbasics.train.files import check_out, output_names
from test_tasks_vqvae_codes import _main, _rgb, _tree

NAMES = ["a.png", "b.png", "sub/c.png"]


@pytest.fixture(scope="module")
def arrays(workdir, tmp_path_factory):
    """The arrays of a real codes.npz of the trained run: three 8x8 maps, named NAMES."""
    loaded = load(workdir)
    maps = list(np.random.default_rng(0).integers(0, 16, (3, 8, 8)))
    path = write_codes(
        tmp_path_factory.mktemp("codes") / "codes.npz", NAMES, maps, loaded.model, loaded.config
    )
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _craft(path, arrays, **changes):
    with open(path, "wb") as f:  # a file object: np.savez adds .npz to other names
        np.savez(f, **{**arrays, **changes})
    return path


def _codes(arrays, *, dtype=None, first=None):
    codes = arrays["codes"].astype(dtype or arrays["codes"].dtype)
    if first is not None:
        codes[0] = first
    return codes


HOSTILE = {
    "parent": lambda a: dict(names=np.array(["../victim", *NAMES[1:]])),
    "grandparent": lambda a: dict(names=np.array(["../../escape.png", *NAMES[1:]])),
    "absolute": lambda a: dict(names=np.array(["/tmp/escape.png", *NAMES[1:]])),
    "inner parent": lambda a: dict(names=np.array(["sub/../../x.png", *NAMES[1:]])),
    "backslash parent": lambda a: dict(names=np.array(["..\\x.png", *NAMES[1:]])),
    "repeated": lambda a: dict(names=np.array(["a.png", "a.png", "b.png"])),
    "numbers for names": lambda a: dict(names=np.arange(3)),
    "2 names, 3 maps": lambda a: dict(names=np.array(NAMES[:2])),
    "minus one": lambda a: dict(codes=_codes(a, dtype=np.int8, first=-1)),
    "minus 2**40": lambda a: dict(codes=_codes(a, dtype=np.int64, first=-(2**40))),
    "K": lambda a: dict(codes=_codes(a, first=16)),
    "float": lambda a: dict(codes=_codes(a, dtype=np.float32)),
    "nan": lambda a: dict(codes=_codes(a, dtype=np.float32, first=np.nan)),
    "bool": lambda a: dict(codes=_codes(a, dtype=bool)),
    "complex": lambda a: dict(codes=_codes(a, dtype=np.complex64)),
    "rank 0": lambda a: dict(codes=np.array(3, np.uint8)),
    "shapes misfit": lambda a: dict(shapes=a["shapes"] * 2),
    "zero side": lambda a: dict(shapes=np.array([[0, 64], [8, 8], [8, 8]], np.int32)),
    "no maps": lambda a: dict(codes=a["codes"][:0], shapes=a["shapes"][:0], names=a["names"][:0]),
    "config not json": lambda a: dict(config=np.array("{not json")),
    "K a string": lambda a: dict(config=np.array('{"num_embeddings": "16"}')),
    "config lacking K": lambda a: dict(config=np.array(_without(a["config"], "num_embeddings"))),
    # Each last, after names that would be written: nothing may be written before the refusal.
    "a part of 300 bytes": lambda a: dict(names=np.array([*NAMES[:2], "a" * 296 + ".png"])),
    "2000 folders deep": lambda a: dict(names=np.array([*NAMES[:2], "d/" * 2000 + "x"])),
    "a lone surrogate": lambda a: dict(names=np.array([*NAMES[:2], "\ud800.png"])),
}


def _without(config, field):
    return json.dumps({k: v for k, v in json.loads(str(config)).items() if k != field})


@pytest.mark.parametrize("case", HOSTILE)
def test_a_crafted_codes_file_is_refused_before_anything_is_written(
    case, arrays, workdir, tmp_path, capsys
):
    (tmp_path / "victim.png").write_bytes(b"keep me")
    (tmp_path / "deep").mkdir()
    crafted = _craft(tmp_path / "crafted.npz", arrays, **HOSTILE[case](arrays))
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="crafted.npz is not a valid codes.npz"):
        read_codes(crafted)
    out = tmp_path / "deep" / "out"
    code, _, err = _main(decode_script, capsys, crafted, "--model", workdir, "--out", out)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "crafted.npz" in err, err
    assert _tree(tmp_path) == before and not out.exists()


def test_a_codes_file_that_unpacks_past_memory_is_refused_before_it_is_read(
    arrays, tmp_path, monkeypatch
):
    """A zip bomb (a member whose unpacked size is past the budget) is refused from the
    archive's directory; a member whose .npy header declares 2**45 codes over a few bytes of
    data is one line too, not a MemoryError."""

    real = _craft(tmp_path / "real.npz", arrays)
    with np.load(real) as f:
        unpacked = sum(info.file_size for info in f.zip.infolist())
    monkeypatch.setattr(codes_module, "memory_budget", lambda: unpacked - 1)
    with pytest.raises(ValueError, match=r"real.npz unpacks to 0.0 GiB, more than this machine"):
        read_codes(real)
    monkeypatch.setattr(codes_module, "memory_budget", lambda: unpacked)
    assert len(read_codes(real).maps) == 3

    header = {"descr": "<i8", "fortran_order": False, "shape": (2**45,)}
    lying = tmp_path / "lying.npz"
    with zipfile.ZipFile(lying, "w") as z:
        for key, value in arrays.items():
            with z.open(f"{key}.npy", "w") as member:
                if key == "codes":
                    np.lib.format.write_array_header_1_0(member, header)
                    member.write(b"\0" * 64)
                else:
                    np.lib.format.write_array(member, value)
    with pytest.raises(ValueError) as e:
        read_codes(lying)
    assert "lying.npz is not a valid codes.npz: its codes cannot be read" in str(e.value)


def test_the_real_codes_file_decodes(arrays, workdir, tmp_path, capsys):
    """The crafted files above differ from this one, which works, in their one change only."""
    crafted = _craft(tmp_path / "crafted.npz", arrays)
    code, summary, _ = _main(
        decode_script, capsys, crafted, "--model", workdir, "--out", tmp_path / "out"
    )
    assert code == 0 and summary["images"] == 3
    assert sorted(_tree(tmp_path / "out")) == NAMES


def test_decode_never_writes_over_its_codes_its_model_or_into_a_run(
    arrays, workdir, tmp_path, capsys
):
    # Names that are legal, but would land on the codes file or in a training workdir.
    _craft(tmp_path / "a.png", arrays)  # the codes file itself named like an output
    home = tmp_path / "home"
    run = home / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "figures").mkdir()
    (run / "figures" / "b.png").write_bytes(b"a figure")
    into_run = _craft(
        tmp_path / "into_run.npz", arrays, names=np.array(["x.png", "run/figures/b.png", "y.png"])
    )
    before = _tree(tmp_path)
    for codes, out, message in [
        (tmp_path / "a.png", tmp_path, "holds the input"),
        (into_run, home, "inside the training workdir"),
        (into_run, run / "decoded", "inside the training workdir"),
        (into_run, workdir / "decoded", "inside the training workdir"),
    ]:
        code, _, err = _main(decode_script, capsys, codes, "--model", workdir, "--out", out)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert _tree(tmp_path) == before and not (workdir / "decoded").exists()


def test_encode_and_export_never_write_over_what_they_were_given(workdir, tmp_path, capsys):
    Image.fromarray(_rgb(32, 20)).save(tmp_path / "in.png")
    code, _, _ = _main(export_script, capsys, workdir, tmp_path / "model.msgpack")
    assert code == 0
    config = (workdir / "config.json").read_bytes()
    os.symlink("nowhere", tmp_path / "dangling.msgpack")
    before = _tree(tmp_path)
    for script, args in [
        (encode_script, [tmp_path / "in.png", "--model", workdir, "--out", tmp_path / "in.png"]),
        (
            encode_script,
            [
                tmp_path / "in.png",
                "--model",
                tmp_path / "model.msgpack",
                "--out",
                tmp_path / "model.msgpack",
            ],
        ),
        (encode_script, [tmp_path / "in.png", "--model", workdir, "--out", workdir / "c.npz"]),
        (export_script, [workdir, workdir / "config.json"]),
        (export_script, [workdir, workdir / "checkpoints" / "model.msgpack"]),
        (export_script, [workdir, workdir]),
        (export_script, [workdir, tmp_path / "dangling.msgpack"]),  # a link leading nowhere
        (
            encode_script,
            [tmp_path / "in.png", "--model", workdir, "--out", tmp_path / "dangling.msgpack"],
        ),
        (
            encode_script,
            [tmp_path / "in.png", "--model", workdir, "--out", tmp_path / "in.png" / "c.npz"],
        ),
    ]:
        code, _, err = _main(script, capsys, *args)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "--out" in err, err
    assert _tree(tmp_path) == before and (workdir / "config.json").read_bytes() == config
    assert not (workdir / "c.npz").exists() and load(workdir).step > 0


def test_a_code_map_too_large_to_decode_is_refused_from_its_shape(
    arrays, workdir, tmp_path, capsys
):
    """A 20000x20000 map of zeros is a few hundred kB compressed and 6.4 G pixels decoded: its
    shape is refused first, before the codes are even looked at."""
    huge = _craft(
        tmp_path / "huge.npz",
        arrays,
        shapes=np.array([[20000, 20000]] * 3, np.int32),
        codes=np.zeros(3, np.float32),
    )
    with pytest.raises(ValueError, match="huge.npz: code map 0 is 20000x20000 codes, which dec"):
        read_codes(huge)
    real = _craft(tmp_path / "real.npz", arrays)  # 8x8 codes: 32x32 = 1,024 pixels
    args = [real, "--model", workdir, "--out", tmp_path / "out"]
    code, _, err = _main(decode_script, capsys, *args, "--max-pixels", "1023")
    assert code == 1 and "real.npz: code map 0" in err and "--max-pixels 1024" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    code, summary, _ = _main(decode_script, capsys, *args, "--max-pixels", "1024")
    assert code == 0 and summary["images"] == 3


def test_decode_writes_each_batch_before_decoding_the_next(
    arrays, workdir, tmp_path, capsys, monkeypatch
):
    """40 maps go in two batches; the first batch's PNGs are written before the second batch
    is decoded, so memory holds one batch of images, never all of them."""

    many = _craft(
        tmp_path / "many.npz",
        arrays,
        codes=np.tile(arrays["codes"][:64], 40),
        shapes=np.full((40, 2), 8, np.int32),
        names=np.array([f"{i}.png" for i in range(40)]),
    )
    decoded, written = [], []
    model_fns = decode_script.model_fns

    def counting(model):
        fns = model_fns(model)
        return fns._replace(decode=lambda c: decoded.append(len(c)) or fns.decode(c))

    def save(path, pixels):
        written.append(len(decoded))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")

    monkeypatch.setattr(decode_script, "model_fns", counting)
    monkeypatch.setattr(decode_script, "save_png", save)
    args = [many, "--model", workdir, "--out", tmp_path / "out"]
    code, summary, _ = _main(decode_script, capsys, *args)
    assert code == 0 and summary["images"] == 40 and decoded == [32, 32]
    assert written == [1] * 32 + [2] * 8


def test_out_never_leads_through_a_link(arrays, workdir, tmp_path, capsys):
    """A link where a file goes is never written through; a linked folder never takes a file
    outside --out. Both are refused before anything is written."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "elsewhere").mkdir()
    codes = _craft(tmp_path / "codes.npz", arrays)  # names a.png, b.png, sub/c.png
    Image.fromarray(_rgb(32, 23)).save(tmp_path / "in.png")
    for link, target, script, args, message in [
        ("b.png", victim, decode_script, [codes], "is a link, which would be written through"),
        ("sub", tmp_path / "elsewhere", decode_script, [codes], "outside it, through a linked"),
        ("in.png", victim, reconstruct_script, [tmp_path / "in.png"], "is a link, which would"),
    ]:
        out = tmp_path / f"out_{link}"
        out.mkdir()
        os.symlink(target, out / link)
        before = _tree(tmp_path)
        code, _, err = _main(script, capsys, *args, "--model", workdir, "--out", out)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
        assert _tree(tmp_path) == before and victim.read_text() == "keep me"
    assert not any((tmp_path / "elsewhere").iterdir())


def test_out_refuses_names_no_file_system_takes(tmp_path):
    """What reconstruct.py and decode.py add to a name (.png, ~1.png) can take a part over the
    limit, and a deep folder's path over PATH_MAX: refused before anything is written."""
    for names, message in [
        (output_names(["a" * 250 + ".jpg", "a" * 250 + ".png"]), "has a part of 258 bytes"),
        (["/".join(["d" * 250] * 20)], "bytes a path may have"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_out(tmp_path / "out", [], names)
    assert list(tmp_path.iterdir()) == []


def test_a_link_inside_out_cannot_lead_onto_an_input(tmp_path):
    Image.fromarray(_rgb(8, 21)).save(tmp_path / "in.png")
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path / "in.png", tmp_path / "out" / "x.png")
    with pytest.raises(ValueError, match="is one of the inputs, reached through a link"):
        check_out(tmp_path / "out", [tmp_path / "in.png"], ["x.png"])
    os.symlink(tmp_path / "in.png", tmp_path / "link.png")
    with pytest.raises(ValueError, match="is one of the inputs"):
        check_out(tmp_path / "link.png", [tmp_path / "in.png"])
    with pytest.raises(ValueError, match="both a file and a folder"):
        check_out(tmp_path / "o2", [], ["x.png", "x.png/y.png"])
    with pytest.raises(ValueError, match="in.png is a file, so nothing can be written inside"):
        check_out(tmp_path / "in.png" / "sub", [], ["x.png"])


def test_reconstruct_outputs_never_meet_its_grids_or_errors_file(tmp_path):
    names = ["grids/grid_000.png", "recon_errors.jsonl.png", "y.jpg", "y.png", "y.jpg.png"]
    images = [InputImage(tmp_path / n, n) for n in names]
    written = reconstruct_script.outputs(images)
    assert len(set(written)) == len(written) and "grids/grid_000.png" not in written[: len(names)]


def _huge_png(path, side=12000):
    """A valid 1-bit greyscale PNG of side x side pixels, written row by row: tiny on disk."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    z = zlib.compressobj(9)
    row = bytes(1 + side // 8)  # filter byte 0, then all-black pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_is_refused_from_its_header(workdir, tmp_path, capsys, monkeypatch):
    bomb = _huge_png(tmp_path / "bomb.png")
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow only warns: under its limit
        assert bomb.stat().st_size < 100_000 and Image.open(bomb).size == (12000, 12000)

    def no_decoding(self):
        raise AssertionError("the huge image was decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    code, _, err = _main(
        encode_script, capsys, bomb, "--model", workdir, "--out", tmp_path / "c.npz"
    )
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "bomb.png is 12000x12000" in err and "--max-pixels" in err
    assert not (tmp_path / "c.npz").exists()
    # Training on a folder reads through the same function, under the same default limit.
    (tmp_path / "data").mkdir()
    bomb.rename(tmp_path / "data" / "bomb.png")
    with pytest.raises(ImageReadError, match="bomb.png is 12000x12000"):
        folder(tmp_path / "data", "train", eval_fraction=0.01)[0]


def test_max_pixels_lowers_and_raises_the_limit(workdir, tmp_path, capsys):
    Image.fromarray(_rgb(32, 22)).save(tmp_path / "x.png")
    with pytest.raises(ImageReadError, match="x.png is 32x32 = 1,024 pixels"):
        read_image(tmp_path / "x.png", max_pixels=1023)
    args = [tmp_path / "x.png", "--model", workdir, "--out", tmp_path / "c.npz"]
    code, _, err = _main(encode_script, capsys, *args, "--max-pixels", "1023")
    assert code == 1 and "--max-pixels 1024" in err
    code, summary, _ = _main(encode_script, capsys, *args, "--max-pixels", "1024")
    assert code == 0 and summary["images"] == 1


def test_an_empty_codes_file_is_one_line(workdir, tmp_path, capsys):
    (tmp_path / "codes.npz").write_bytes(b"")
    args = [tmp_path / "codes.npz", "--model", workdir, "--out", tmp_path / "out"]
    code, _, err = _main(decode_script, capsys, *args)
    assert code == 1 and "is not a codes.npz written by encode.py" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()
