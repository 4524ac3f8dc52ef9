"""``TrainConfig``: every knob of a run, with the reference CIFAR-10 setting as defaults.

Field names are the notes' hyperparameter names. Every field is a flag of
``experiments/train_vqvae.py`` (``batch_size`` -> ``--batch-size``). The config is
saved as ``config.json`` in the run's workdir; resuming with a config that differs
in a field outside :data:`RESUMABLE_FIELDS` is refused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

# Fields that may change between a run and its resumption: they don't change the
# model, the optimiser or the batches, only how long we go and what we record.
RESUMABLE_FIELDS = frozenset(
    {
        "num_training_updates",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "eval_batches",
        "debug_nan_step",
        "progress",
    }
)


# Fields that never reach a compiled program (they only steer the loop and the data).
_RUN_ONLY = RESUMABLE_FIELDS | {
    "dataset",
    "data_dir",
    "num_train_examples",
    "num_eval_examples",
    "data_seed",
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every knob of a VQ-VAE training run. Defaults: the reference CIFAR-10 setting.

    >>> TrainConfig().batch_size, TrainConfig().num_training_updates, TrainConfig().learning_rate
    (256, 15000, 0.001)
    >>> TrainConfig(decay=0.99).replace(batch_size=32).batch_size
    32
    """

    # data
    dataset: str = "shapes"  # "shapes" (embedded, no network) or "cifar10"
    data_dir: str | None = None  # TFDS data dir or a torchvision cifar-10-batches-py folder
    num_train_examples: int | None = None  # shapes only: train split size (default 50,000)
    num_eval_examples: int | None = None  # shapes only: test split size (default 10,000)
    # the notes' hyperparameters
    batch_size: int = 256
    num_training_updates: int = 15_000
    learning_rate: float = 1e-3
    num_hiddens: int = 128
    num_residual_hiddens: int = 32
    num_residual_layers: int = 2
    embedding_dim: int = 64
    num_embeddings: int = 512
    commitment_cost: float = 0.25
    decay: float = 0.0  # 0: plain VQ; > 0: EMA codebook with this decay (notebook: 0.99)
    # codebook health (jaxbasics.vqvae.codebook); both off by default
    dead_code_threshold: float = 0.0  # restart codes whose EMA usage (1 = fair share) is below
    kmeans_init_steps: int = 0  # k-means init of the codebook from this many first batches
    # randomness: model init, data order and the step RNG all follow from these
    seed: int = 0
    data_seed: int = 0
    # bookkeeping
    log_every: int = 100
    eval_every: int = 1000
    eval_batches: int = 0  # batches of the test split per periodic eval; 0 = whole split
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    progress: bool = True  # tqdm progress bar
    # testing aid: feed a NaN batch at this step to exercise the non-finite-loss guard
    debug_nan_step: int = -1

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> TrainConfig:
        """Raise ValueError with a fix for values that cannot work; return self.

        >>> TrainConfig(batch_size=0).validate()
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be >= 1, got 0.
        """
        positive = (
            "batch_size",
            "num_hiddens",
            "num_residual_hiddens",
            "embedding_dim",
            "num_embeddings",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "keep_checkpoints",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.num_training_updates < 0 or self.num_residual_layers < 0:
            raise ValueError("num_training_updates and num_residual_layers must be >= 0.")
        if self.num_hiddens % 2:
            raise ValueError(
                f"num_hiddens must be even (the encoder halves it), got {self.num_hiddens}."
            )
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1) (0 = plain VQ), got {self.decay}.")
        if self.dead_code_threshold < 0 or self.kmeans_init_steps < 0:
            raise ValueError(
                "dead_code_threshold and kmeans_init_steps must be >= 0 (0 = off), got "
                f"{self.dead_code_threshold} and {self.kmeans_init_steps}."
            )
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if self.dataset not in ("shapes", "cifar10"):
            raise ValueError(f"dataset must be 'shapes' or 'cifar10', got {self.dataset!r}.")
        return self

    def compile_key(self) -> TrainConfig:
        """This config with every field that cannot change a compiled program reset.

        Compiled init/train/eval programs are cached under this key, so runs that
        differ only in length, logging or data location share them.

        >>> TrainConfig(num_training_updates=5).compile_key() == TrainConfig().compile_key()
        True
        """
        return dataclasses.replace(
            self, **{f.name: f.default for f in dataclasses.fields(self) if f.name in _RUN_ONLY}
        )

    def to_json(self) -> str:
        """The config as JSON text (what ``config.json`` holds)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Inverse of :meth:`to_json`; unknown keys are an error.

        >>> c = TrainConfig(decay=0.99)
        >>> TrainConfig.from_json(c.to_json()) == c
        True
        """
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; known fields: {sorted(names)}")
        return cls(**data)


def incompatible_fields(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields that differ between ``old`` and ``new`` and forbid resuming.

    >>> incompatible_fields(TrainConfig(), TrainConfig(num_training_updates=5, batch_size=8))
    {'batch_size': (256, 8)}
    """
    out = {}
    for f in dataclasses.fields(TrainConfig):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b and f.name not in RESUMABLE_FIELDS:
            out[f.name] = (a, b)
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # The reference CIFAR-10 setting (the defaults).
    "reference": {},
    # Embedded data, a 3-minute CPU run that visibly learns.
    "quickstart": dict(
        dataset="shapes",
        num_train_examples=10_000,
        num_eval_examples=1_000,
        batch_size=32,
        num_training_updates=800,
        learning_rate=1e-3,
        decay=0.0,
        num_hiddens=64,
        num_residual_hiddens=16,
        embedding_dim=32,
        num_embeddings=128,
        log_every=25,
        eval_every=200,
        checkpoint_every=200,
    ),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A named preset, with ``overrides`` applied.

    >>> preset("quickstart").dataset
    'shapes'
    >>> preset("nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown preset 'nope'; choose one of ['quickstart', 'reference'].
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return TrainConfig(**{**PRESETS[name], **overrides})


def load_config(workdir: str | Path) -> TrainConfig | None:
    """The config saved in ``workdir/config.json``, or None if there is none."""
    path = Path(workdir) / "config.json"
    return TrainConfig.from_json(path.read_text()) if path.exists() else None
