"""The named starting points of a run: ``quickstart``, ``cifar10`` and ``notes``.

* ``quickstart``: the embedded ``shapes`` data at small model sizes; about 90 s on 2 CPU
  cores. What the CLI runs with no flags.
* ``cifar10``: the notes' model and batch on real CIFAR-10 (the reference model, batch 32,
  Adam, EMA decay 0.99), with the codebook remedies on (the dataclass defaults) and the
  learning-rate schedule tuned on real CIFAR-10 (:data:`TUNED`).
* ``notes``: the notes' notebook exactly (the dataclass defaults with :data:`FAITHFUL`
  applied): Adam lr 3e-4 at a constant rate, the reference EMA initialisation,
  straight-through, no remedies.

Each preset is a set of :class:`~jaxbasics.tasks.vqvae.config.VQVAEConfig` values; flags given
on the command line override them. :data:`FAITHFUL` is what the notes' notebook does and the
defaults change (``--faithful`` applies it to any preset); ``docs/codebook.md`` measures each
change.

>>> VQVAEConfig(**TUNED).replace(batch_size=64) == preset("cifar10", batch_size=64)
True
"""

from __future__ import annotations

from typing import Any

from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.levels import fsq_settings
from jaxbasics.train.config import Presets

# What the notes' notebook does and our defaults change (docs/codebook.md measures each).
FAITHFUL: dict[str, Any] = dict(
    ema_init="notes",
    estimator="ste",
    lr_schedule="constant",
    warmup_steps=0,
    dead_code_threshold=0.0,
    kmeans_init_steps=0,
)

# What the cifar10 preset changes from the notes' training beyond the codebook remedies:
# chosen on a validation split of real CIFAR-10 (docs/codebook.md, "Tuning on real CIFAR-10").
TUNED: dict[str, Any] = dict(
    learning_rate=2e-3, lr_schedule="cosine", warmup_steps=100, dead_code_threshold=0.5
)

# What the cifar10-sharp preset adds: VQGAN-style training, measured in docs/vqgan.md.
SHARP: dict[str, Any] = dict(disc_weight=0.5, disc_start=1_000, perceptual_weight=1.0)

# Embedded data, small model: a newcomer's first run, about 90 s on 2 CPU cores. Measured
# in docs/codebook.md: on a CPU batch 16 trains as many images per second as 32 and makes
# twice the updates; the codebook size bounds the error (128 -> 1024 codes: 0.186 ->
# 0.146 at 1000 steps), so the codes get the budget, not the convolutions; warm-up and
# cosine decay beat a constant rate in every seed (0.111 vs 0.118 at 5000 steps).
QUICKSTART: dict[str, Any] = dict(
    dataset="shapes",
    num_train_examples=10_000,
    num_eval_examples=1_000,
    batch_size=16,
    num_training_updates=4_500,
    learning_rate=2e-3,
    lr_schedule="cosine",
    warmup_steps=100,
    num_hiddens=64,
    num_residual_hiddens=16,
    embedding_dim=32,
    num_embeddings=1024,
    log_every=50,
    eval_every=1_000,
    checkpoint_every=1_000,
)

VALUES: dict[str, dict[str, Any]] = {
    "quickstart": QUICKSTART,
    # The quickstart as a palette tokenizer (docs/prior.md): 125 colour-blind structure codes
    # and 5 colours per image; reconstructs a little worse (noise is not coded), generates
    # far better. For the shapes prior's chain.
    "shapes-palette": dict(QUICKSTART, quantizer="fsq", fsq_levels="5,5,5", palette_slots=5),
    # The notes' model and batch on real CIFAR-10: the remedies (the dataclass defaults) and
    # the tuned schedule.
    "cifar10": dict(TUNED),
    # The notes' notebook exactly.
    "notes": dict(FAITHFUL),
    # cifar10 trained VQGAN-style: against a PatchGAN discriminator and LPIPS (docs/vqgan.md).
    "cifar10-sharp": dict(TUNED, **SHARP),
}


def adjust(config: VQVAEConfig, name: str, given: set[str]) -> VQVAEConfig:
    """Preset ``name``'s values that do not apply to what was asked for (``given``: the fields
    set explicitly) dropped: :func:`whole_splits_on_other_data`, :func:`fsq_turns_vq_off`.

    >>> adjust(VQVAEConfig(quantizer="fsq"), "cifar10", {"quantizer"}).num_embeddings
    512
    """
    return fsq_turns_vq_off(whole_splits_on_other_data(config, name, given), given)


def fsq_turns_vq_off(config: VQVAEConfig, given: set[str]) -> VQVAEConfig:
    """Under ``quantizer="fsq"``, the VQ-only settings off and the code count and size those
    of the levels (:func:`~jaxbasics.tasks.vqvae.levels.fsq_settings`), except the fields in
    ``given``: a preset's EMA decay or restarts would silently do nothing, while a value set
    explicitly is left for validation to refuse if FSQ cannot honour it. Under ``"vq"``, a
    preset's FSQ levels are dropped instead (``--preset shapes-palette --quantizer vq``).

    >>> c = fsq_turns_vq_off(VQVAEConfig(quantizer="fsq", fsq_levels="8,5,5,5"), {"decay"})
    >>> c.num_embeddings, c.dead_code_threshold, c.decay
    (1000, 0.0, 0.99)
    """
    if config.quantizer != "fsq":  # a preset's FSQ levels, with --quantizer vq: not used
        keep = "fsq_levels" in given
        return config if keep else config.replace(fsq_levels=VQVAEConfig.fsq_levels)
    return config.replace(**{k: v for k, v in fsq_settings(config).items() if k not in given})


def whole_splits_on_other_data(config: VQVAEConfig, name: str, given: set[str]) -> VQVAEConfig:
    """Drop preset ``name``'s example counts when the dataset is not the preset's own.

    The quickstart's 10,000 / 1,000 are sizes of the generated ``shapes`` splits; on CIFAR-10
    or a folder they would silently keep only the first files (in a sorted ImageFolder: the
    first classes). Counts in ``given`` (set explicitly) are kept.
    """
    own = VALUES[name].get("dataset", VQVAEConfig.dataset)
    if config.dataset == own:
        return config
    counts = ("num_train_examples", "num_eval_examples")
    return config.replace(**{k: None for k in counts if k not in given and k in VALUES[name]})


PRESETS = Presets(VQVAEConfig, VALUES, adjust)


def preset(name: str, *, faithful: bool = False, **overrides: Any) -> VQVAEConfig:
    """A named preset, with :data:`FAITHFUL` (if ``faithful``) and then ``overrides`` applied.

    >>> preset("quickstart").dataset
    'shapes'
    >>> preset("quickstart", faithful=True).ema_init
    'notes'
    >>> preset("quickstart", dataset="folder", data_dir="photos").num_train_examples is None
    True
    >>> preset("nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown preset 'nope'; choose one of ['cifar10', 'cifar10-sharp', 'notes', ...].
    """
    return PRESETS(name, under=FAITHFUL if faithful else None, **overrides)
