"""A prior's data: the code maps of a trained VQ-VAE's images, encoded once and cached, and the
VQ-VAE they belong to.

Stage two models the codes stage one gives its images. A prior run finds them:

* in its workdir's cache ``prior_codes.npz`` (written when the run starts; :func:`read_cache`),
  whose codebook fingerprint must be the VQ-VAE's (:func:`vqvae_of`): a prior is never
  trained on, or decoded by, another codebook;
* else (:func:`code_data`) the VQ-VAE's own train and test images (its run's dataset, sizes
  and data dir), encoded in batches by one compiled program, with their class labels and names;
* else, with ``--codes``, a ``codes.npz`` written by ``experiments/encode.py`` with the same
  VQ-VAE: its maps (all of one size) without labels, the last tenth held out.

A :class:`CodeSource` serves them to the Grain pipeline as ``{"codes", "label"}`` batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxbasics.data.base import read_batch
from jaxbasics.data.cifar10 import CIFAR10_CLASSES
from jaxbasics.data.shapes import SHAPES_CLASSES
from jaxbasics.data.sources import get_source
from jaxbasics.data.transforms import to_model_input
from jaxbasics.tasks.prior.config import PriorConfig
from jaxbasics.tasks.vqvae.apply import model_fns
from jaxbasics.tasks.vqvae.codes import check_codes_fit, codebook_fingerprint, read_codes
from jaxbasics.tasks.vqvae.data import sources
from jaxbasics.tasks.vqvae.trained import Loaded, load
from jaxbasics.train.files import write_atomic

CACHE = "prior_codes.npz"
# Images per encoding batch (one compiled program; the last batch is padded).
ENCODE_BATCH = 256


@dataclass(frozen=True)
class CodeSource:
    """In-memory code maps, a random-access source of ``{"codes": (h, w), "label": int}``.

    >>> src = CodeSource(np.arange(8, dtype=np.int32).reshape(2, 2, 2), np.array([0, 1]))
    >>> src.read_batch([1])["codes"].tolist(), len(src)
    ([[[4, 5], [6, 7]]], 2)
    """

    codes: np.ndarray = field(repr=False)  # (N, h, w) int32
    labels: np.ndarray = field(repr=False)  # (N,) int32; zeros when the codes have none

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"codes": self.codes[index], "label": int(self.labels[index])}

    def read_batch(self, indices: Any) -> dict[str, np.ndarray]:
        idx = np.asarray(indices, np.int64)
        return {"codes": self.codes[idx], "label": self.labels[idx].astype(np.int32)}


class CodeData(NamedTuple):
    """The code maps a prior trains and is evaluated on.

    Attributes:
      train, test: :class:`CodeSource` splits.
      num_codes: the codes a map may hold: K, the VQ-VAE's codebook size (a palette
        tokenizer's: K + 513, :attr:`~jaxbasics.tasks.vqvae.config.VQVAEConfig.num_codes`).
      class_names: the labels' names; () when the codes carry no labels.
      codebook_sha256: the fingerprint of the codebook that made them
        (:func:`~jaxbasics.tasks.vqvae.codes.codebook_fingerprint`).
    """

    train: CodeSource
    test: CodeSource
    num_codes: int
    class_names: tuple[str, ...]
    codebook_sha256: str

    def stats(self) -> dict[str, Any]:
        """What a run keeps of its codes (``data_stats.json``, checkpoint meta): enough to
        rebuild the prior without them, and the floors its NLL is measured against.

        >>> src = CodeSource(np.array([[[0, 1]], [[1, 1]]], np.int32), np.zeros(2, np.int32))
        >>> CodeData(src, src, 4, (), "ab").stats()["entropy_bits"]
        0.811...
        """
        h, w = self.train.codes.shape[1:]
        counts = np.bincount(self.train.codes.reshape(-1), minlength=self.num_codes)
        p = counts[counts > 0] / counts.sum()
        return {
            "num_codes": self.num_codes,
            "height": int(h),
            "width": int(w),
            "class_names": list(self.class_names),
            "codebook_sha256": self.codebook_sha256,
            "num_examples": len(self.train),
            "uniform_bits": math.log2(self.num_codes),
            "entropy_bits": float(-np.sum(p * np.log2(p))),
        }

    def save(self, path: Path) -> None:
        """Write the cache (atomically; see :func:`read_cache`)."""

        def write(file: Any) -> None:
            np.savez_compressed(
                file,
                train_codes=self.train.codes,
                train_labels=self.train.labels,
                test_codes=self.test.codes,
                test_labels=self.test.labels,
                num_codes=np.array(self.num_codes),
                class_names=np.array(self.class_names, dtype=str),
                codebook_sha256=np.array(self.codebook_sha256),
            )

        write_atomic(path, write)


def read_cache(path: Path) -> CodeData:
    """Read a prior workdir's code cache, written by :meth:`CodeData.save`.

    Raises:
      ValueError: the file is damaged (one line naming it).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("train_codes", "train_labels", "test_codes", "test_labels")}
            bad = next((k for k, v in arrays.items() if v.dtype.kind not in "iu"), None)
            if bad is not None:
                raise ValueError(f"{bad} holds {arrays[bad].dtype} values, not integers")
            train = CodeSource(arrays["train_codes"].astype(np.int32), arrays["train_labels"])
            test = CodeSource(arrays["test_codes"].astype(np.int32), arrays["test_labels"])
            data = CodeData(
                train,
                test,
                int(z["num_codes"]),
                tuple(str(n) for n in z["class_names"]),
                str(z["codebook_sha256"]),
            )
    except Exception as e:  # noqa: BLE001 - whatever numpy raises, the cache is unusable
        raise ValueError(
            f"{path} (the prior's cached codes) is damaged ({type(e).__name__}: {e}); delete "
            "it to encode the VQ-VAE's images again."
        ) from e
    classes = max(1, len(data.class_names))  # codes without classes carry zeros
    for split in (data.train, data.test):
        if split.codes.size and not 0 <= split.codes.min() <= split.codes.max() < data.num_codes:
            raise ValueError(f"{path} holds codes outside [0, {data.num_codes}); delete it.")
        if split.labels.shape != split.codes.shape[:1] or (
            split.labels.size and not 0 <= split.labels.min() <= split.labels.max() < classes
        ):
            raise ValueError(
                f"{path} holds labels outside [0, {classes}), or not one per map; delete it."
            )
    return data


def check_same_stats(
    saved: dict[str, Any] | None, data: CodeData, source: str, workdir: Path
) -> None:
    """Refuse code maps whose statistics differ from what the run saved of the maps it started
    on (``saved``: its ``data_stats.json``): another ``--codes`` after the cache was deleted, or
    an edited cache. ``source`` names where ``data`` came from.

    >>> src = CodeSource(np.array([[[0, 1]], [[1, 1]]], np.int32), np.zeros(2, np.int32))
    >>> data = CodeData(src, src, 4, (), "ab")
    >>> check_same_stats(data.stats() | {"num_codes": 8}, data, "--codes c.npz", Path("runs/p"))
    Traceback (most recent call last):
    ...
    ValueError: --codes c.npz holds other code maps than runs/p was trained on (num_codes: 8
    then, 4 now); resume with the codes it started from, or start a new --workdir.
    """
    now = data.stats()
    differ = [k for k in sorted((saved or {}).keys() & now.keys()) if saved[k] != now[k]]
    if differ:
        what = ", ".join(f"{k}: {saved[k]} then, {now[k]} now" for k in differ[:2])
        raise ValueError(
            f"{source} holds other code maps than {workdir} was trained on ({what}); resume with "
            "the codes it started from, or start a new --workdir."
        )


def same_maps(a: CodeData, b: CodeData) -> bool:
    """Whether two :class:`CodeData` hold the same maps and labels in the same splits.

    >>> src = CodeSource(np.zeros((2, 1, 1), np.int32), np.zeros(2, np.int32))
    >>> same_maps(CodeData(src, src, 4, (), "ab"), CodeData(src, src, 4, (), "cd"))
    True
    """
    return all(
        np.array_equal(getattr(x, f), getattr(y, f))
        for x, y in ((a.train, b.train), (a.test, b.test))
        for f in ("codes", "labels")
    )


def same_codebook(prior: Any, model: Any, fingerprint: str, *trained_on: str) -> None:
    """Refuse a prior that models another codebook's codes than the VQ-VAE ``model``'s.

    ``fingerprint`` is the VQ-VAE's (:func:`~jaxbasics.tasks.vqvae.codes.codebook_fingerprint`),
    ``trained_on`` the fingerprints the prior ``prior`` (a workdir) was trained on or is about
    to be. Sizes can agree while the weights differ: such a prior's samples decode to nonsense.

    >>> same_codebook("prior", "vq", "ab12", "ab12")
    >>> same_codebook("prior", "vq", "ab12", "ab12", "cd34")
    Traceback (most recent call last):
    ValueError: the prior prior models the codes of another codebook than vq's: ...
    """
    if any(f != fingerprint for f in trained_on):
        raise ValueError(
            f"the prior {prior} models the codes of another codebook than {model}'s: its samples "
            "would decode to nonsense. Pass the --model it was trained on."
        )


def vqvae_of(model: str | Path, prior: Any, trained_on: Any = ()) -> tuple[Loaded, str]:
    """The VQ-VAE ``model`` (a workdir or an export) that the prior ``prior`` (a workdir, in
    messages) belongs to, and its codebook's fingerprint; refused unless every fingerprint of
    ``trained_on`` (what the prior was trained on) is that one (:func:`same_codebook`).

    Raises:
      ValueError: another codebook.
      OSError, ValueError: as :func:`jaxbasics.tasks.vqvae.load`.
    """
    loaded = load(model)
    fingerprint = codebook_fingerprint(loaded.model)
    same_codebook(prior, model, fingerprint, *trained_on)
    return loaded, fingerprint


def code_data(config: PriorConfig, loaded: Loaded, fingerprint: str) -> CodeData:
    """The codes a new prior run models, for the VQ-VAE ``loaded`` whose codebook's fingerprint
    is ``fingerprint``: its images encoded, or ``config.codes`` (see the module docstring).
    Reads only; the run caches them with :meth:`CodeData.save`.

    Raises:
      ValueError: a ``codes.npz`` from another model, or holding maps of several sizes or
        too few maps (one line each).
    """
    if config.codes is not None:
        return _from_codes_file(Path(config.codes), loaded, fingerprint)
    return _encode_dataset(loaded, fingerprint, config.progress, config.train_maps)


def _from_codes_file(path: Path, loaded: Loaded, fingerprint: str) -> CodeData:
    codes = read_codes(path, limit_flag=None)  # train_prior.py has no --max-pixels
    check_codes_fit(
        codes, loaded.model, loaded.config, path, fix="Pass the --model that encoded it."
    )
    shapes = sorted({m.shape for m in codes.maps})
    if len(shapes) > 1:
        raise ValueError(
            f"{path} holds code maps of {len(shapes)} sizes ({shapes[:3]}...); a prior models "
            "maps of one size: encode images of one size (e.g. --resize S --center-crop S)."
        )
    if len(codes.maps) < 2:
        raise ValueError(f"{path} holds {len(codes.maps)} code map; a prior needs at least 2.")
    maps = np.stack(codes.maps).astype(np.int32)
    held_out = max(1, len(maps) // 10)
    labels = np.zeros(len(maps), np.int32)
    train = CodeSource(maps[:-held_out], labels[:-held_out])
    test = CodeSource(maps[-held_out:], labels[-held_out:])
    return CodeData(train, test, loaded.config.num_codes, (), fingerprint)


def _encode_dataset(
    loaded: Loaded, fingerprint: str, progress: bool, train_maps: int | None
) -> CodeData:
    """Encode the VQ-VAE run's train and test images (its own dataset and sizes; the first
    ``train_maps`` training images of its dataset when given)."""
    vq = loaded.config
    data = sources(vq if train_maps is None else vq.replace(num_train_examples=train_maps))
    encode = model_fns(loaded.model).encode
    train = _encode_split(encode, data.train, "train", progress)
    test = _encode_split(encode, data.test, "test", progress)
    names = class_names(loaded.config)
    return CodeData(train, test, loaded.config.num_codes, names, fingerprint)


def _encode_split(encode: Any, source: Any, name: str, progress: bool) -> CodeSource:
    from tqdm.auto import tqdm

    codes, labels = [], []
    starts = range(0, len(source), ENCODE_BATCH)
    for start in tqdm(starts, desc=f"encode {name}", unit="batch", disable=not progress):
        idx = np.arange(start, min(start + ENCODE_BATCH, len(source)))
        batch = read_batch(source, np.pad(idx, (0, ENCODE_BATCH - len(idx)), mode="edge"))
        codes.append(np.asarray(encode(to_model_input(batch["image"])))[: len(idx)])
        labels.append(batch["label"][: len(idx)])
    return CodeSource(np.concatenate(codes).astype(np.int32), np.concatenate(labels))


def class_names(vq_config: Any) -> tuple[str, ...]:
    """The names of a VQ-VAE run's image labels: shapes', CIFAR-10's or an ImageFolder's
    classes; () for a folder without class folders.

    >>> from jaxbasics.tasks.vqvae.config import VQVAEConfig
    >>> class_names(VQVAEConfig(dataset="shapes"))[:2]
    ('ellipse', 'rectangle')
    """
    if vq_config.dataset == "shapes":
        return SHAPES_CLASSES
    if vq_config.dataset == "cifar10":
        return CIFAR10_CLASSES
    source = get_source(
        "folder",
        "train",
        data_dir=vq_config.data_dir,
        image_size=vq_config.image_size,
        eval_fraction=vq_config.eval_fraction,
    )
    return tuple(source.classes)
