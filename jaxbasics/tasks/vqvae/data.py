"""A VQ-VAE run's data: its train and test image splits, in memory when they fit, and the data
variance.

>>> from jaxbasics.tasks.vqvae.presets import preset
>>> data = sources(preset("quickstart", num_train_examples=64, num_eval_examples=8))
>>> len(data.train), len(data.test), round(data.variance, 3)
(64, 8, 0.074)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

from jaxbasics.data.sources import data_variance, get_source, in_memory
from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.train.saved import data_stats

# A split whose decoded images take at most this many bytes is decoded once, into memory; a
# larger one is decoded batch by batch in the Grain pipeline's reader threads, every epoch.
# Every CIFAR-10 or shapes split fits (the 50,000 training images take 150 MB), as does a
# folder of up to 350,000 images at 32x32 or 87,000 at 64x64. Decoding once costs about what
# one epoch of per-batch decoding does, and per-batch decoding takes CPU from the training
# step: on 2 cores the quickstart model at batch 32, fed 256x256 JPEGs, trained at 976 images/s
# from memory against 667 decoding per batch (264 against 147 at --image-size 64).
IN_MEMORY_BYTES = 1 << 30


class Sources(NamedTuple):
    """A run's data: the (train, test) splits, the train variance, and for a folder of images
    a fingerprint of its file list (None for the other datasets)."""

    train: Any
    test: Any
    variance: float
    files_sha256: str | None = None


def sources(
    config: VQVAEConfig, workdir: Path | None = None, *, load_train: bool = True
) -> Sources:
    """The run's train and test splits and the data variance.

    Each split is read into memory once (:func:`~jaxbasics.data.sources.in_memory`) when its
    decoded images fit in :data:`IN_MEMORY_BYTES`, so later epochs cost array gathers only;
    otherwise it stays a source that decodes on read. The variance (the notes'
    ``np.var(train_images / 255)``) is read from ``workdir/data_stats.json`` when a run already
    wrote it, else computed: for a split left on disk that is one pass over its files.

    Args:
      config: the run's config (dataset, data dir, sizes, seeds).
      workdir: the run's directory, where ``data_stats.json`` may hold the variance.
      load_train: read the train split into memory; evaluation passes False, as it needs
        the variance only, which it then reads from ``data_stats.json`` when it can.

    Raises:
      ValueError: the train split has fewer images than one batch.
    """
    kw = dict(
        data_dir=config.data_dir,
        seed=config.data_seed,
        image_size=config.image_size,
        eval_fraction=config.eval_fraction,
    )
    train = get_source(config.dataset, "train", num_examples=config.num_train_examples, **kw)
    if len(train) < config.batch_size:
        where = f" in {config.data_dir}" if config.data_dir else ""
        raise ValueError(
            f"the {config.dataset} train split{where} has {len(train)} images, fewer than one "
            f"batch of {config.batch_size}. Use more images (more files, or a larger "
            "--num-train-examples) or a smaller --batch-size."
        )
    test = get_source(config.dataset, "test", num_examples=config.num_eval_examples, **kw)
    files = files_sha256(train, test)
    test = _load(test, config.image_size)
    saved = data_stats(workdir) if workdir is not None else None
    if saved is not None and "data_variance" in saved:
        if load_train:
            _check_same_data(saved, len(train), files, config)
        variance = float(saved["data_variance"])
        train = _load(train, config.image_size) if load_train else train
    else:
        train = _load(train, config.image_size)
        variance = float(data_variance(train))
    return Sources(train, test, variance, files)


def files_sha256(train: Any, test: Any) -> str | None:
    """SHA-256 of a folder dataset's file lists (train, then test); None for other sources."""
    if not hasattr(train, "files"):
        return None
    text = "\n".join(train.files) + "\0" + "\n".join(test.files)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_same_data(saved: dict, num_train: int, files: str | None, config: VQVAEConfig) -> None:
    """Refuse to resume on other data than the run started with (exact resume needs it)."""
    then = saved.get("num_examples", num_train)
    if then == num_train and saved.get("files_sha256", files) == files:
        return
    where = config.data_dir or config.dataset
    raise ValueError(
        f"the training data changed since this run started: it had {then} train images, "
        f"{where} now gives {num_train}"
        + ("" if then != num_train else " with other file names")
        + ". Resuming needs the same images for the same batches: put the data back as it "
        "was, or train on the new data in a new --workdir."
    )


def _load(source: Any, image_size: int) -> Any:
    return in_memory(source) if len(source) * image_size**2 * 3 <= IN_MEMORY_BYTES else source
