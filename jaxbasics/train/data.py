"""A run's data: its train and test splits, read into memory once, and the data variance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from jaxbasics.train.config import TrainConfig


class Sources(NamedTuple):
    """A run's data: the (train, test) splits in memory and the train variance."""

    train: Any
    test: Any
    variance: float


def sources(config: TrainConfig, workdir: Path | None = None) -> Sources:
    """The run's train and test splits, read into memory once, and the data variance.

    The variance (the notes' ``np.var(train_images / 255)``) is read from
    ``workdir/data_stats.json`` when a run already wrote it, else computed.
    """
    from jaxbasics.data.sources import data_variance, get_source, in_memory

    kw = dict(data_dir=config.data_dir, seed=config.data_seed)
    train = in_memory(
        get_source(config.dataset, "train", num_examples=config.num_train_examples, **kw)
    )
    test = in_memory(
        get_source(config.dataset, "test", num_examples=config.num_eval_examples, **kw)
    )
    stats = workdir / "data_stats.json" if workdir is not None else None
    if stats is not None and stats.exists():
        variance = float(json.loads(stats.read_text())["data_variance"])
    else:
        variance = float(data_variance(train))
    return Sources(train, test, variance)
