"""``PriorConfig``: every knob of a prior run (stage two), and its presets.

A prior is trained on the code maps of a trained VQ-VAE (``model``): the codes of that
model's own train and test images, or a user's ``codes.npz`` from ``experiments/encode.py``
(``codes``). Every field is a flag of ``experiments/train_prior.py``; what every run has
(optimisation, randomness, bookkeeping) comes from
:class:`~jaxbasics.train.config.RunConfig`.

* ``quickstart``: a small transformer on ``runs/quickstart``'s codes (the VQ-VAE quickstart's
  run), about 2.5 minutes on 2 CPU cores; what ``train_prior.py`` runs with no flags.
* ``cifar10``: the priors' setting for the ``cifar10`` VQ-VAE preset (``runs/cifar10``).

>>> PRESETS("quickstart").model
'runs/quickstart'
>>> PRESETS("cifar10", prior="pixelcnn").prior
'pixelcnn'
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from jaxbasics.train.config import Presets, RunConfig


@dataclasses.dataclass(frozen=True)
class PriorConfig(RunConfig):
    """Every knob of a prior's training run."""

    KIND: ClassVar[str] = "prior"

    # The codes' sources may move: the cached codes' codebook fingerprint is what must match.
    # The judge only scores samples: another one may judge a resumed run.
    RESUMABLE: ClassVar[frozenset[str]] = RunConfig.RESUMABLE | {"model", "codes", "judge"}
    RUN_ONLY: ClassVar[frozenset[str]] = RunConfig.RUN_ONLY | {"model", "codes", "judge"}
    # Fields added since the first prior runs were written, and what those runs did.
    LEGACY_VALUES: ClassVar[dict[str, Any]] = {
        **RunConfig.LEGACY_VALUES,
        "train_maps": None,
        "judge": None,
    }
    POSITIVE: ClassVar[tuple[str, ...]] = (
        *RunConfig.POSITIVE,
        "dim",
        "depth",
        "heads",
        "channels",
        "num_layers",
        "kernel_size",
    )

    # --- what is modelled
    model: str = "runs/cifar10"
    """The VQ-VAE whose codes the prior models: a training workdir or a file from export.py.
    Its train and test images are encoded once and cached in the prior's workdir."""
    codes: str | None = None
    """Instead, model these code maps: a codes.npz written by encode.py with --model's VQ-VAE
    (all maps of one size; no class labels). Its last tenth is the held-out split."""
    prior: Literal["transformer", "pixelcnn", "maskgit"] = "transformer"
    """transformer (causal, over raster-ordered codes, a key/value cache when sampling),
    pixelcnn (the VQ-VAE paper's gated PixelCNN) or maskgit (bidirectional, trained to fill in
    hidden codes; samples in a few parallel steps, sample.py --steps)."""
    conditional: bool = True
    """Condition on the images' class labels when the data has them (shapes, cifar10, an
    ImageFolder); each is replaced by 'no class' with probability --label-dropout, so one
    model samples with and without a class, and with classifier-free guidance."""
    label_dropout: float = 0.1
    """Probability of training a step's label as 'no class' (conditional priors only)."""
    train_maps: int | None = None
    """Encode this many of --model's dataset's training images for the prior (default: the
    VQ-VAE run's own train split). The embedded shapes data is generated: up to 50,000."""
    judge: str | None = None
    """A judge folder from experiments/judge.py, trained on --model's dataset: every
    evaluation also reports class_accuracy, the share of samples.png's samples (8 per class)
    it recognises as the class they were drawn for."""

    # --- transformer and maskgit sizes
    dim: int = 256
    """transformer, maskgit: width of the token embeddings and of every block."""
    depth: int = 6
    """transformer, maskgit: number of blocks."""
    heads: int = 8
    """transformer, maskgit: attention heads per block (dim must be a multiple)."""

    # --- PixelCNN sizes
    channels: int = 128
    """pixelcnn: channels of the vertical and horizontal stacks."""
    num_layers: int = 12
    """pixelcnn: gated layers (their receptive field must cover the code map)."""
    kernel_size: int = 3
    """pixelcnn: odd kernel size of the masked convolutions."""

    def validate(self) -> PriorConfig:
        """:meth:`RunConfig.validate`, then the prior's own fields.

        >>> PriorConfig(dim=100, heads=8).validate()
        Traceback (most recent call last):
        ...
        ValueError: dim (100) must be a multiple of heads (8), e.g. --dim 104.
        """
        super().validate()
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}.")
        if self.dim % self.heads:
            fits = -(-self.dim // self.heads) * self.heads
            raise ValueError(
                f"dim ({self.dim}) must be a multiple of heads ({self.heads}), e.g. --dim {fits}."
            )
        if self.train_maps is not None and self.train_maps < 1:
            raise ValueError(f"train_maps must be >= 1, got {self.train_maps}.")
        if self.codes is not None and self.train_maps is not None:
            raise ValueError(
                "train_maps picks how many of --model's images are encoded; with --codes the "
                "maps are the file's: leave --train-maps out."
            )
        if self.judge is not None and not self.judge.strip():
            raise ValueError("--judge '' names no folder: pass judge.py's folder, or leave it out.")
        if self.judge is not None and (self.codes is not None or not self.conditional):
            raise ValueError(
                "--judge scores class-conditional samples: it needs a conditional prior on "
                "--model's labelled images (no --codes, no --conditional false)."
            )
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}.")
        return self

    def check_given(self, given: set[str]) -> None:
        """Refuse another kind of prior's size flags: ``--channels`` for a transformer, or
        ``--dim`` for a PixelCNN, would do nothing.

        >>> PriorConfig(prior="pixelcnn").check_given({"channels", "num_layers"})
        >>> PriorConfig(prior="maskgit").check_given({"dim", "kernel_size"})
        Traceback (most recent call last):
        ...
        ValueError: --kernel-size sets a pixelcnn prior's size, not a maskgit's; leave it out.
        """
        other = "pixelcnn" if self.prior != "pixelcnn" else "transformer"
        given = sorted(SIZE_FIELDS[other] & given)
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            whose = "pixelcnn" if other == "pixelcnn" else "transformer or maskgit"
            many = len(given) > 1
            raise ValueError(
                f"{flags} {'set' if many else 'sets'} a {whose} prior's size, not a "
                f"{self.prior}'s; leave {'them' if many else 'it'} out."
            )


# The size fields of each kind of prior (maskgit's are the transformer's).
SIZE_FIELDS = {
    "transformer": frozenset({"dim", "depth", "heads"}),
    "pixelcnn": frozenset({"channels", "num_layers", "kernel_size"}),
}


# On the VQ-VAE quickstart's codes (8x8 maps of 1,024 codes, 10,000 + 1,000 shapes images).
QUICKSTART: dict[str, Any] = dict(
    model="runs/quickstart",
    dim=128,
    depth=2,
    heads=4,
    channels=64,
    num_layers=6,
    batch_size=64,
    num_training_updates=500,
    learning_rate=2e-3,
    lr_schedule="cosine",
    warmup_steps=50,
    log_every=25,
    eval_every=250,
    checkpoint_every=250,
)

VALUES: dict[str, dict[str, Any]] = {
    "quickstart": QUICKSTART,
    # The same on the shapes-palette VQ-VAE's codes (9x8 maps: a row of 5 colours, then 8x8
    # of 125 structure codes; 638 codes in all).
    "shapes-palette": dict(QUICKSTART, model="runs/shapes-palette"),
    # On the cifar10 VQ-VAE's codes (8x8 maps of 512 codes, 50,000 + 10,000 images).
    "cifar10": dict(
        model="runs/cifar10",
        batch_size=64,
        num_training_updates=20_000,
        learning_rate=5e-4,
        lr_schedule="cosine",
        warmup_steps=500,
    ),
}

PRESETS = Presets(PriorConfig, VALUES)
