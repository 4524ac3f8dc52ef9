"""``RunConfig``: what every run's config has, its checks and JSON form; and named presets.

A model's config is a frozen dataclass that subclasses :class:`RunConfig`, adds its own fields
(each with a docstring under it: the flag's ``--help``) and extends the class variables that
say which fields a resume may change, which never reach a compiled program, and what older
versions wrote. The config is saved as ``config.json`` in the run's workdir
(:meth:`RunConfig.to_json`); :mod:`jaxbasics.train.resume` holds the rules for resuming with it.
:class:`Presets` names a config class's starting points (``--preset``).

>>> RunConfig().batch_size, RunConfig(learning_rate=1e-3).replace(seed=2).seed
(32, 2)
>>> RunConfig.from_json(RunConfig().to_json()) == RunConfig()
True
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, Literal, TypeVar

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
    """Seed of the data order (and of any data a task generates, such as the shapes dataset)."""

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

        >>> RunConfig(batch_size=0).validate()
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

        >>> RunConfig(num_training_updates=5).compile_key() == RunConfig().compile_key()
        True
        >>> RunConfig(seed=1).compile_key() == RunConfig().compile_key()  # key: an argument
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

        >>> c = RunConfig(learning_rate=1e-3)
        >>> RunConfig.from_json(c.to_json()) == c
        True
        >>> older = json.loads(c.to_json())  # as a version before the schedule wrote it:
        >>> del older["lr_schedule"], older["warmup_steps"]
        >>> RunConfig.from_json(json.dumps(older)).lr_schedule
        'constant'
        >>> RunConfig.from_json('{"batch_size": "16"}')
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an int, got '16'.
        >>> del older["learning_rate"], older["seed"]
        >>> RunConfig.from_json(json.dumps(older))
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


def _check_type(cls: type, name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` has field ``name``'s type (a float field takes ints).

    >>> _check_type(RunConfig, "progress", 1)
    Traceback (most recent call last):
    ...
    ValueError: progress must be true or false, got 1.
    >>> _check_type(RunConfig, "learning_rate", 1)
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

    >>> cosine = RunConfig(lr_schedule="cosine", warmup_steps=100)
    >>> warmup_that_fits(cosine.replace(num_training_updates=50)), warmup_that_fits(cosine)
    (5, 100)
    """
    too_long = c.lr_schedule == "cosine" and 0 < c.num_training_updates <= c.warmup_steps
    return c.num_training_updates // 10 if too_long else c.warmup_steps


def warmup_within_run(config: C, given: set[str]) -> C:
    """Shorten a preset's cosine warm-up to a tenth of a run too short for it
    (:func:`warmup_that_fits`).

    ``--preset quickstart --num-training-updates 50`` would otherwise be refused (its 100
    warm-up steps never end). A warm-up set explicitly (in ``given``) is left for validation
    to refuse.

    >>> cosine = RunConfig(lr_schedule="cosine", warmup_steps=100, num_training_updates=50)
    >>> warmup_within_run(cosine, set()).warmup_steps
    5
    >>> warmup_within_run(cosine, {"warmup_steps"}).warmup_steps  # given: validation refuses it
    100
    """
    if "warmup_steps" in given:
        return config
    return config.replace(warmup_steps=warmup_that_fits(config))


@dataclasses.dataclass(frozen=True)
class Presets(Generic[C]):
    """The named starting points of a config class: ``presets(name, **overrides)`` is a config.

    Attributes:
      config: the config class.
      values: each preset's field values, by name (``--preset``'s choices).
      adjust: ``adjust(config, name, given)``: preset ``name``'s values that do not apply to
        what was asked for dropped (``given``: the fields set explicitly); None keeps them.

    >>> presets = Presets(RunConfig, {"long": {"num_training_updates": 10**6}})
    >>> presets("long", seed=3).num_training_updates, presets.names
    (1000000, ['long'])
    >>> presets("short")
    Traceback (most recent call last):
    ...
    ValueError: unknown preset 'short'; choose one of ['long'].
    """

    config: type[C]
    values: Mapping[str, Mapping[str, Any]]
    adjust: Callable[[C, str, set[str]], C] | None = None

    @property
    def names(self) -> list[str]:
        return sorted(self.values)

    def __call__(self, name: str, *, under: Mapping[str, Any] | None = None, **overrides: Any) -> C:
        """Preset ``name`` with ``under`` (values below the flags: a mode such as the VQ-VAE's
        ``--faithful``) and then ``overrides`` (the flags given) applied."""
        if name not in self.values:
            raise ValueError(f"unknown preset {name!r}; choose one of {self.names}.")
        config = self.config(**{**self.values[name], **(under or {}), **overrides})
        return self.adjust_given(config, name, set(overrides))

    def adjust_given(self, config: C, name: str, given: set[str]) -> C:
        """``config`` (from preset ``name``) through :attr:`adjust`, ``given`` the fields set
        explicitly; unchanged without one."""
        return config if self.adjust is None else self.adjust(config, name, given)
