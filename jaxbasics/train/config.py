"""``TrainConfig``: every knob of a run, its validation and the rules for resuming.

Field names are the notes' hyperparameter names where the notes have one. Every field is a
flag of ``experiments/train_vqvae.py`` (``batch_size`` -> ``--batch-size``), and the
docstring under each field is that flag's ``--help``. The config is saved as ``config.json``
in the run's workdir; resuming with a config that differs in a field outside
:data:`RESUMABLE_FIELDS` is refused.

The named presets (``quickstart``, ``cifar10``, ``notes``) are in
:mod:`jaxbasics.train.presets`; the dataclass defaults are the notes' setting with the
codebook remedies on (the ``notes`` preset turns those off, the ``cifar10`` preset adds a tuned
schedule). ``docs/codebook.md`` lists which defaults differ from the notes, and why.

>>> TrainConfig().batch_size, TrainConfig().learning_rate, TrainConfig().decay
(32, 0.0003, 0.99)
>>> from jaxbasics.train.presets import TUNED, preset
>>> TrainConfig(**TUNED).replace(batch_size=64) == preset("cifar10", batch_size=64)
True
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from jaxbasics.data.sources import Dataset
from jaxbasics.vqvae.fsq import check_levels
from jaxbasics.vqvae.layers import ConvForm
from jaxbasics.vqvae.model import QuantizerKind

C = TypeVar("C", bound="RunConfig")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What every training run has, whatever it trains: optimisation, randomness, bookkeeping.

    A model's config subclasses it, adds its fields and extends the class variables below.
    """

    # Fields that may change between a run and its resumption: they change neither the model,
    # the optimiser nor the batches, only how long we go and what we record.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset(
        {
            "num_training_updates",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "keep_checkpoints",
            "eval_batches",
            "progress",
        }
    )
    # Fields that never reach a compiled program as a constant: they steer the loop and the
    # data, or (seed) enter as an argument: the initial key is passed to the compiled init.
    RUN_ONLY: ClassVar[frozenset[str]] = RESUMABLE | {"seed", "data_seed"}
    # The value a field had, in effect, before it existed: a config.json written by an older
    # version lacks the field, and the run it describes behaved like this.
    LEGACY_VALUES: ClassVar[dict[str, Any]] = {"lr_schedule": "constant", "warmup_steps": 0}
    # Fields older versions wrote that no longer exist; they are dropped when read.
    REMOVED_FIELDS: ClassVar[frozenset[str]] = frozenset()
    # What the run trains, in messages.
    KIND: ClassVar[str] = "training"
    # Fields that must be >= 1.
    POSITIVE: ClassVar[tuple[str, ...]] = (
        "batch_size",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
    )

    # --- optimisation
    batch_size: int = 32
    """Global batch size, over all devices and processes."""
    num_training_updates: int = 25_000
    """Number of training steps (may be raised when resuming a constant-rate run)."""
    learning_rate: float = 3e-4
    """Adam's learning rate (the peak rate under a schedule)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """constant, or cosine: linear warm-up over --warmup-steps, then cosine decay to 0 at
    --num-training-updates (optax.warmup_cosine_decay_schedule)."""
    warmup_steps: int = 0
    """Warm-up steps of the cosine schedule."""

    # --- randomness: model init, data order and the step RNG all follow from these
    seed: int = 0
    """Seed of the model init and of every random draw of the training steps."""
    data_seed: int = 0
    """Seed of the data order (and of the shapes dataset's images)."""

    # --- bookkeeping
    log_every: int = 100
    """Write metrics.jsonl (and fetch metrics from the device) every N steps."""
    eval_every: int = 1000
    """Evaluate on the test split every N steps."""
    eval_batches: int = 0
    """Test batches per periodic evaluation; 0 = the whole split."""
    checkpoint_every: int = 500
    """Save a checkpoint every N steps (and at the end, and on SIGINT/SIGTERM)."""
    keep_checkpoints: int = 3
    """How many recent checkpoints to keep."""
    progress: bool = True
    """Show a progress bar."""

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def validate(self: C) -> C:
        """Raise ValueError with a fix for values that cannot work; return self.

        >>> TrainConfig(batch_size=0).validate()
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be >= 1, got 0.
        """
        for f in dataclasses.fields(self):
            _check_type(type(self), f.name, getattr(self, f.name))
        for name in self.POSITIVE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.num_training_updates < 0 or self.warmup_steps < 0:
            raise ValueError(
                "num_training_updates and warmup_steps must be >= 0, got "
                f"{self.num_training_updates} and {self.warmup_steps}."
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate}."
            )
        if (fits := warmup_that_fits(self)) != self.warmup_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be fewer than num_training_updates "
                f"({self.num_training_updates}) under the cosine schedule, or the rate never "
                f"leaves the warm-up; e.g. --warmup-steps {fits}, or --lr-schedule constant."
            )
        return self

    def check_given(self, given: set[str]) -> None:
        """Refuse fields set on the command line (``given``) that this run, as resolved against
        a saved one, would ignore; none here (a model's config adds its own)."""

    def compile_key(self: C) -> C:
        """This config with every field that cannot change a compiled program reset.

        Compiled init/train/eval programs are cached under this key, so runs that
        differ only in length, logging or data location share them. Under a cosine
        schedule the run length shapes the learning rate, so it stays in the key.

        >>> TrainConfig(num_training_updates=5).compile_key() == TrainConfig().compile_key()
        True
        >>> TrainConfig(seed=1).compile_key() == TrainConfig().compile_key()  # key: an argument
        True
        """
        kept = {"num_training_updates"} if self.lr_schedule != "constant" else set()
        reset = self.RUN_ONLY - kept
        return dataclasses.replace(
            self, **{f.name: f.default for f in dataclasses.fields(self) if f.name in reset}
        )

    def to_json(self) -> str:
        """The config as JSON text (what ``config.json`` holds)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        """Inverse of :meth:`to_json`. Unknown, missing or mistyped fields are an error.

        A config written by an older version lacks the fields added since: they take the
        value that reproduces what that version did (``LEGACY_VALUES``), not today's default.
        Any other missing field is an error (a hand-edited or damaged file: a default would
        silently change the run). Fields that no longer exist (``REMOVED_FIELDS``) are
        dropped. Each value must have its field's type (a float field takes an int too);
        values are not validated.

        >>> c = TrainConfig(decay=0.99)
        >>> TrainConfig.from_json(c.to_json()) == c
        True
        >>> older = json.loads(c.to_json())  # as an early version wrote it:
        >>> for new in TrainConfig.LEGACY_VALUES:
        ...     del older[new]
        >>> older["debug_nan_step"] = None
        >>> TrainConfig.from_json(json.dumps(older)).ema_init
        'notes'
        >>> TrainConfig.from_json('{"batch_size": "16"}')
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an int, got '16'.
        >>> del older["learning_rate"], older["seed"]
        >>> TrainConfig.from_json(json.dumps(older))
        Traceback (most recent call last):
        ...
        ValueError: the config lacks the fields ['learning_rate', 'seed']; ...

        Raises:
          ValueError: the text is not a JSON object of known fields of the right types, or
            lacks a field older versions wrote too (``json.JSONDecodeError`` is one).
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a config is a JSON object of fields, got {type(data).__name__}.")
        data = {k: v for k, v in data.items() if k not in cls.REMOVED_FIELDS}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown config fields {unknown}: this config.json was written by a newer "
                f"version of jaxbasics, or edited by hand. Known fields: {sorted(names)}"
            )
        for name, value in data.items():
            _check_type(cls, name, value)
        missing = sorted(names - set(data) - set(cls.LEGACY_VALUES))
        if missing:
            raise ValueError(
                f"the config lacks the fields {missing}; only fields that older versions did "
                "not write may be missing"
            )
        legacy = {k: v for k, v in cls.LEGACY_VALUES.items() if k not in data}
        return cls(**{**legacy, **data})


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Every knob of a VQ-VAE training run."""

    KIND: ClassVar[str] = "VQ-VAE"

    RESUMABLE: ClassVar[frozenset[str]] = RunConfig.RESUMABLE | {"data_dir", "conv_form"}
    RUN_ONLY: ClassVar[frozenset[str]] = RunConfig.RUN_ONLY | {
        "data_dir",
        "dataset",
        "num_train_examples",
        "num_eval_examples",
        "image_size",
        "eval_fraction",
    }
    LEGACY_VALUES: ClassVar[dict[str, Any]] = {
        **RunConfig.LEGACY_VALUES,
        "estimator": "ste",
        "ema_init": "notes",
        "conv_form": "auto",
        "compute_dtype": "float32",
        "image_size": 32,
        "eval_fraction": 0.1,
        "quantizer": "vq",
        "fsq_levels": "8,8,8",
    }
    REMOVED_FIELDS: ClassVar[frozenset[str]] = frozenset({"debug_nan_step"})
    POSITIVE: ClassVar[tuple[str, ...]] = (
        *RunConfig.POSITIVE,
        "num_hiddens",
        "num_residual_hiddens",
        "embedding_dim",
        "num_embeddings",
        "image_size",
    )

    # --- data
    dataset: Dataset = "cifar10"
    """Training data: shapes (embedded, no download), cifar10 (--data-dir: a TFDS data dir or
    a torchvision cifar-10-batches-py folder) or folder (--data-dir: a folder of images)."""
    data_dir: str | None = None
    """Where cifar10 or folder data lives. cifar10 without it: TFDS's default data dir."""
    num_train_examples: int | None = None
    """shapes: train split size (default 50,000; a preset's value applies to shapes only).
    cifar10/folder: every image, or if given only the first N in file order."""
    num_eval_examples: int | None = None
    """shapes: test split size (default 10,000; a preset's value applies to shapes only).
    cifar10/folder: every image, or if given only the first N in file order."""
    image_size: int = 32
    """folder only: images are centre-cropped to a square and resized to this side."""
    eval_fraction: float = 0.1
    """folder only, flat layout: share of the files (chosen by a hash of the relative path)
    that form the test split."""

    # --- model (the notes' hyperparameters)
    num_hiddens: int = 128
    """Encoder/decoder width."""
    num_residual_hiddens: int = 32
    """Bottleneck width of the residual blocks."""
    num_residual_layers: int = 2
    """Residual blocks per stack."""
    embedding_dim: int = 64
    """Size D of each code vector (VQ; under fsq, the number of levels)."""
    num_embeddings: int = 512
    """Number K of codes in the codebook (VQ; under fsq, the product of the levels)."""
    commitment_cost: float = 0.25
    """VQ only. beta: weight of the commitment loss that keeps encoder outputs near their codes."""
    decay: float = 0.99
    """VQ only. 0 selects the plain VQ quantiser (codebook learnt by the VQ loss); > 0 the EMA
    quantiser with this decay (the notes' notebook: 0.99)."""
    estimator: Literal["ste", "rotation"] = "ste"
    """VQ only. How gradients cross the quantiser: ste (straight-through, the notes') or rotation
    (the rotation trick of Fifty et al., 2024)."""
    ema_init: Literal["notes", "consistent"] = "consistent"
    """VQ only. EMA quantiser's initial statistics: notes (ema_w drawn apart from the codebook,
    zero cluster sizes: unused codes jump to norms of ~1e5 after step 1) or consistent
    (ema_w = codebook, cluster sizes 1: unused codes stay where they are)."""
    quantizer: QuantizerKind = "vq"
    """vq (a learned codebook of --num-embeddings codes of --embedding-dim) or fsq (finite
    scalar quantisation, Mentzer et al. 2023: each latent channel rounded to a few levels; no
    codebook loss, EMA, restarts or k-means; the code count and size follow from
    --fsq-levels, and the settings marked VQ only are off)."""
    fsq_levels: str = "8,8,8"
    """fsq only: levels per latent channel, comma-separated: 8,8,8 gives 8*8*8 = 512 codes of
    3 dimensions, 8,5,5,5 gives 1,000 of 4. Each level >= 2, at most 65,536 codes."""
    conv_form: ConvForm = "auto"
    """How convolutions are evaluated: xla (XLA's own), im2col (matmul forms, measured fastest on
    CPU and GPU) or auto (im2col, but xla on TPU). Parameters are the same in every form."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the encoder's and decoder's activations and matmuls. Parameters, Adam state,
    the quantiser and the loss stay float32."""

    # --- codebook health (jaxbasics.vqvae.codebook)
    dead_code_threshold: float = 0.25
    """VQ only. Restart codes whose usage EMA (1 = a fair share N/K of each batch) falls below
    this, from random encoder outputs of the batch; 0 turns restarts off."""
    kmeans_init_steps: int = 4
    """VQ only. Initialise the codebook by k-means on the encoder outputs of the first N batches
    of a fresh run; 0 keeps the random init."""

    def __post_init__(self) -> None:
        # One spelling of each level set ("8, 5,5,5" is "8,5,5,5"), so that a resume, a
        # codes.npz and an export compare levels, not how they were typed.
        if isinstance(self.fsq_levels, str) and _LEVELS.fullmatch(self.fsq_levels):
            canonical = ",".join(str(int(part)) for part in self.fsq_levels.split(","))
            object.__setattr__(self, "fsq_levels", canonical)

    def validate(self) -> TrainConfig:
        """:meth:`RunConfig.validate`, then the VQ-VAE's own fields.

        >>> TrainConfig(num_hiddens=3).validate()
        Traceback (most recent call last):
        ...
        ValueError: num_hiddens must be even (the encoder halves it), got 3.
        """
        super().validate()
        if self.num_residual_layers < 0:
            raise ValueError(f"num_residual_layers must be >= 0, got {self.num_residual_layers}.")
        if self.num_hiddens % 2:
            raise ValueError(
                f"num_hiddens must be even (the encoder halves it), got {self.num_hiddens}."
            )
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1) (0 = plain VQ), got {self.decay}.")
        if self.dead_code_threshold < 0 or self.kmeans_init_steps < 0:
            raise ValueError(
                "dead_code_threshold and kmeans_init_steps must be >= 0 (0 = off), "
                f"got {self.dead_code_threshold}, {self.kmeans_init_steps}."
            )
        if not (math.isfinite(self.commitment_cost) and self.commitment_cost >= 0):
            raise ValueError(
                f"commitment_cost must be a finite number >= 0, got {self.commitment_cost}."
            )
        for name in ("num_train_examples", "num_eval_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be >= 1 (or left out: every example), got {getattr(self, name)}."
                )
        if self.image_size % 4:
            raise ValueError(
                f"image_size must be a multiple of 4 (two stride-2 convolutions), got "
                f"{self.image_size}; try {max(4, self.image_size // 4 * 4)}."
            )
        if self.dataset != "folder" and self.image_size != 32:
            raise ValueError(
                f"--image-size {self.image_size} applies to --dataset folder only; {self.dataset} "
                "images are 32x32."
            )
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}.")
        self._validate_quantizer()
        return self

    def check_given(self, given: set[str]) -> None:
        """Refuse ``--fsq-levels`` for a VQ run, even at the default levels: they would do
        nothing. A resumed FSQ run may repeat its levels without ``--quantizer fsq``.

        >>> TrainConfig(quantizer="fsq").check_given({"fsq_levels"})
        >>> TrainConfig().check_given({"fsq_levels"})
        Traceback (most recent call last):
        ...
        ValueError: --fsq-levels 8,8,8 applies to --quantizer fsq only; add --quantizer fsq, ...
        """
        if "fsq_levels" in given and self.quantizer != "fsq":
            raise ValueError(
                f"--fsq-levels {self.fsq_levels} applies to --quantizer fsq only; add "
                "--quantizer fsq, or leave --fsq-levels out."
            )

    @property
    def levels(self) -> tuple[int, ...]:
        """``fsq_levels`` as integers.

        >>> TrainConfig(fsq_levels="8,5,5,5").levels
        (8, 5, 5, 5)
        """
        return parse_levels(self.fsq_levels)

    def _validate_quantizer(self) -> None:
        """FSQ: levels that work, and no VQ-only setting or code count that it would ignore."""
        if self.quantizer == "vq":
            if self.fsq_levels != TrainConfig.fsq_levels:
                raise ValueError(
                    f"--fsq-levels {self.fsq_levels} applies to --quantizer fsq only; add "
                    "--quantizer fsq, or leave --fsq-levels out."
                )
            return
        self.levels  # noqa: B018 - raises on levels that cannot work
        for name, value in fsq_settings(self).items():
            if getattr(self, name) == value:
                continue
            flag = "--" + name.replace("_", "-")
            if name in VQ_ONLY:
                raise ValueError(
                    f"{flag} {getattr(self, name)} is a VQ setting, and FSQ has nothing it "
                    f"applies to (no codebook loss, EMA, restarts or k-means); leave {flag} out "
                    f"with --quantizer fsq (or give {value})."
                )
            raise ValueError(
                f"with --quantizer fsq, {name} follows from --fsq-levels {self.fsq_levels}: "
                f"{value}, not {getattr(self, name)}; leave {flag} out."
            )


# The VQ-only settings and the value each has under FSQ, which has no codebook to learn.
VQ_ONLY: dict[str, Any] = {
    "commitment_cost": 0.0,
    "decay": 0.0,
    "estimator": "ste",
    "ema_init": TrainConfig.ema_init,
    "dead_code_threshold": 0.0,
    "kmeans_init_steps": 0,
}


# Levels as typed: ASCII digits and commas, spaces allowed around the commas. Python's int()
# alone would also read "8_8" as 88, "+8" and non-ASCII digits.
_LEVELS = re.compile(r"\s*[0-9]+(\s*,\s*[0-9]+)*\s*")


def parse_levels(text: str) -> tuple[int, ...]:
    """``--fsq-levels`` text, ``"8,5,5,5"``, as integers; a one-line ValueError if it cannot
    work (:func:`jaxbasics.vqvae.fsq.check_levels`).

    >>> parse_levels("8, 8,8")
    (8, 8, 8)
    >>> parse_levels("8_8")
    Traceback (most recent call last):
    ...
    ValueError: fsq_levels must be integers separated by commas, e.g. 8,8,8 or 8,5,5,5; got '8_8'.
    """
    if not _LEVELS.fullmatch(text):
        raise ValueError(
            f"fsq_levels must be integers separated by commas, e.g. 8,8,8 or 8,5,5,5; got {text!r}."
        )
    return check_levels(tuple(int(part) for part in text.split(",")))


def fsq_settings(config: TrainConfig) -> dict[str, Any]:
    """The values an FSQ run has in every field FSQ decides: the VQ-only settings off
    (:data:`VQ_ONLY`), ``num_embeddings`` and ``embedding_dim`` from the levels (left out
    when the levels cannot work: validation says why).

    >>> s = fsq_settings(TrainConfig(quantizer="fsq", fsq_levels="8,5,5,5"))
    >>> s["num_embeddings"], s["embedding_dim"], s["decay"]
    (1000, 4, 0.0)
    """
    try:
        levels = config.levels
    except ValueError:
        return dict(VQ_ONLY)
    return {**VQ_ONLY, "num_embeddings": math.prod(levels), "embedding_dim": len(levels)}


def _check_type(cls: type, name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` has field ``name``'s type (a float field takes ints).

    >>> _check_type(TrainConfig, "progress", 1)
    Traceback (most recent call last):
    ...
    ValueError: progress must be true or false, got 1.
    >>> _check_type(TrainConfig, "num_train_examples", None)
    >>> _check_type(TrainConfig, "learning_rate", 1)
    """
    hint = typing.get_type_hints(cls)[name]
    if not _fits(value, hint):
        raise ValueError(f"{name} must be {_describe(hint)}, got {value!r}.")


def _fits(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is Literal:
        return isinstance(value, str) and value in typing.get_args(hint)
    if typing.get_origin(hint) is types.UnionType:
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is float:
        return type(value) in (int, float)
    return type(value) is hint  # exact: a bool is no int, None no str


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return f"one of {list(typing.get_args(hint))}"
    if typing.get_origin(hint) is types.UnionType:
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    names = {int: "an int", float: "a number", bool: "true or false", str: "a string"}
    return names.get(hint, "null")


def warmup_that_fits(c: RunConfig) -> int:
    """``c.warmup_steps``, or a tenth of the run if the cosine warm-up would never end in it.

    >>> cosine = TrainConfig(lr_schedule="cosine", warmup_steps=100)
    >>> warmup_that_fits(cosine.replace(num_training_updates=50)), warmup_that_fits(cosine)
    (5, 100)
    """
    too_long = c.lr_schedule == "cosine" and 0 < c.num_training_updates <= c.warmup_steps
    return c.num_training_updates // 10 if too_long else c.warmup_steps


class ConfigMismatchError(ValueError):
    """The workdir holds a run whose config is incompatible with the requested one."""


class ConfigFileError(ValueError):
    """A run's saved config cannot be read (damaged JSON, a wrong type, an invalid value)."""


def check_resumable(config: RunConfig, old: RunConfig | None, workdir: Path) -> None:
    """Refuse to resume the run in ``workdir``, saved with ``old``, with an incompatible
    ``config``; None (no saved run) passes.

    >>> check_resumable(TrainConfig(batch_size=8), TrainConfig(), Path("run"))
    Traceback (most recent call last):
    ...
    jaxbasics.train.config.ConfigMismatchError: run holds a run with a different config; ...
    """
    diff = incompatible_fields(old, config) if old is not None else {}
    if diff:
        lines = "\n".join(
            f"  {k}: saved {a!r}, requested {b!r}" for k, (a, b) in sorted(diff.items())
        )
        why = ""
        if "num_training_updates" in diff and old.lr_schedule != "constant":
            why = (
                f"(num_training_updates cannot change under the {old.lr_schedule} learning-rate "
                "schedule: its decay ends at the saved step count. A run meant to be extended "
                "uses --lr-schedule constant.)\n"
            )
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config; resuming would mix two "
            f"experiments. Differing fields:\n{lines}\n{why}"
            "Rerun with the saved values to resume, or pass a new --workdir to start fresh."
        )


def incompatible_fields(old: RunConfig, new: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Fields that differ between ``old`` and ``new`` and forbid resuming.

    Under a cosine schedule the run length is part of the schedule, so it may not change.
    Configs of two kinds of run (a VQ-VAE's and a prior's) differ in their kind.

    >>> incompatible_fields(TrainConfig(), TrainConfig(num_training_updates=5, batch_size=8))
    {'batch_size': (32, 8)}
    >>> cosine = TrainConfig(lr_schedule="cosine")
    >>> incompatible_fields(cosine, cosine.replace(num_training_updates=5))
    {'num_training_updates': (25000, 5)}
    """
    if type(old) is not type(new):
        return {"kind of run": (type(old).__name__, type(new).__name__)}
    resumable = old.RESUMABLE
    if old.lr_schedule != "constant":
        resumable = resumable - {"num_training_updates"}
    out = {}
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b and f.name not in resumable:
            out[f.name] = (a, b)
    return out


def other_kind(text: bytes, cls: type[RunConfig]) -> type[RunConfig] | None:
    """The kind of run (another :class:`RunConfig` class than ``cls``) whose config ``text``
    is, if it is a readable one; None otherwise.

    >>> from jaxbasics.train.prior_config import PriorConfig
    >>> other_kind(PriorConfig().to_json().encode(), TrainConfig).KIND
    'prior'
    >>> other_kind(b"{", TrainConfig) is None
    True
    """
    import jaxbasics.train.prior_config  # noqa: F401 - registers the prior's config class

    for kind in RunConfig.__subclasses__():
        if kind is cls:
            continue
        try:
            kind.from_json(text.decode("utf-8"))
        except ValueError:
            continue
        return kind
    return None


def kind_mismatch(workdir: str | Path, other: type[RunConfig], cls: type[RunConfig]) -> Exception:
    """The refusal of a workdir that holds ``other``'s kind of run where ``cls``'s was asked for.

    >>> from jaxbasics.train.prior_config import PriorConfig
    >>> print(kind_mismatch("runs/prior", PriorConfig, TrainConfig))
    runs/prior holds a prior run, not a VQ-VAE's; name a VQ-VAE's run (or a new folder, to
    start one).
    """
    return ConfigMismatchError(
        f"{workdir} holds a {other.KIND} run, not a {cls.KIND}'s; name a {cls.KIND}'s run (or a "
        "new folder, to start one)."
    )


def load_config(workdir: str | Path, cls: type[C] = TrainConfig) -> C | None:
    """The ``cls`` config saved in ``workdir/config.json``, or None if there is none.

    Raises:
      ConfigFileError: the file is damaged (not JSON, unknown or missing fields, wrong types
        or invalid values) or is a folder; the one-line message names it and the way out.
    """
    path = Path(workdir) / "config.json"
    if not path.exists():
        return None
    if path.is_dir():
        raise ConfigFileError(
            f"{path} is a folder, not the run's config file; move it away: training then takes "
            "the run's config from its newest checkpoint."
        )
    try:
        return cls.from_json(path.read_text()).validate()
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        if (other := other_kind(path.read_bytes(), cls)) is not None:
            raise kind_mismatch(workdir, other, cls) from e
        raise ConfigFileError(
            f"{path} is damaged: {str(e).rstrip('.')}. Fix it, or delete it: training then "
            "takes the run's config from its newest checkpoint."
        ) from e
