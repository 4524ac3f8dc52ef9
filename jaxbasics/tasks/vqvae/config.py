"""``VQVAEConfig``: every knob of a VQ-VAE run, and the FSQ settings that follow from its levels.

Field names are the notes' hyperparameter names where the notes have one. Every field is a
flag of ``experiments/train_vqvae.py`` (``batch_size`` -> ``--batch-size``), and the
docstring under each field is that flag's ``--help``. What every run has (optimisation,
randomness, bookkeeping, the JSON form) comes from :class:`~jaxbasics.train.config.RunConfig`.

The named presets (``quickstart``, ``cifar10``, ``cifar10-sharp``, ``notes``) are in
:mod:`jaxbasics.tasks.vqvae.presets`; the dataclass defaults are the notes' setting with the
codebook remedies on (the ``notes`` preset turns those off, the ``cifar10`` preset adds a tuned
schedule, ``cifar10-sharp`` VQGAN-style training). ``docs/codebook.md`` lists which defaults
differ from the notes, and why.

>>> VQVAEConfig().batch_size, VQVAEConfig().learning_rate, VQVAEConfig().decay
(32, 0.0003, 0.99)
>>> import json
>>> older = json.loads(VQVAEConfig().to_json())  # as an early version wrote it:
>>> for new in VQVAEConfig.LEGACY_VALUES:
...     del older[new]
>>> older["debug_nan_step"] = None
>>> VQVAEConfig.from_json(json.dumps(older)).ema_init  # what that version did
'notes'
"""

# No ``from __future__ import annotations`` here: the CLI (simple_parsing) resolves the field
# types of every class in the hierarchy with the globals of the module of the field it parses,
# and RunConfig's module knows nothing of Dataset, ConvForm or QuantizerKind. Evaluated now,
# these annotations need no resolving.
import dataclasses
import math
from typing import Any, ClassVar, Literal

from jaxbasics.data.sources import Dataset
from jaxbasics.tasks.vqvae.levels import LEVELS_PATTERN, VQ_ONLY, fsq_settings, parse_levels
from jaxbasics.train.config import RunConfig
from jaxbasics.vqvae import palette
from jaxbasics.vqvae.layers import ConvForm
from jaxbasics.vqvae.model import QuantizerKind
from jaxbasics.vqvae.perceptual import MIN_SIDE, PerceptualNet


@dataclasses.dataclass(frozen=True)
class VQVAEConfig(RunConfig):
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
        "disc_weight": 0.0,
        "disc_start": 0,
        "disc_channels": 32,
        "disc_learning_rate": 1e-4,
        "lecam_weight": 0.0,
        "perceptual_weight": 0.0,
        "perceptual_net": "alexnet",
        "palette_slots": 0,
    }
    REMOVED_FIELDS: ClassVar[frozenset[str]] = frozenset({"debug_nan_step"})
    POSITIVE: ClassVar[tuple[str, ...]] = (
        *RunConfig.POSITIVE,
        "num_hiddens",
        "num_residual_hiddens",
        "embedding_dim",
        "num_embeddings",
        "image_size",
        "disc_channels",
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
    palette_slots: int = 0
    """A palette tokenizer of this many colours per image (0 = off; docs/prior.md): the codes
    hold only where each colour goes (the encoder sees colour distances, not colours), and
    each code map gains a first row of the image's colours, 512 codes of their own. Made for
    generation: a prior learns each shape once, not once per colour. At most the code map's
    width, --image-size / 4."""

    # --- codebook health (jaxbasics.vqvae.codebook)
    dead_code_threshold: float = 0.25
    """VQ only. Restart codes whose usage EMA (1 = a fair share N/K of each batch) falls below
    this, from random encoder outputs of the batch; 0 turns restarts off."""
    kmeans_init_steps: int = 4
    """VQ only. Initialise the codebook by k-means on the encoder outputs of the first N batches
    of a fresh run; 0 keeps the random init."""

    # --- VQGAN-style training (jaxbasics.vqvae.adversarial, docs/vqgan.md); off unless set
    disc_weight: float = 0.0
    """Weight of a PatchGAN discriminator's hinge loss in the VQ-VAE's loss, times taming's
    adaptive weight (reconstruction / adversarial gradient norm at the decoder's last layer);
    0 = no discriminator. The discriminator is for training only: exports hold none."""
    disc_start: int = 0
    """Steps before the discriminator starts: until then it neither learns nor steers the
    VQ-VAE (taming's disc_start)."""
    disc_channels: int = 32
    """Width of the discriminator's first convolution (then 2x and 4x). On a CPU the
    discriminator alone made a CIFAR-10 step 2.3x slower at taming's 64, 1.4x at 32."""
    disc_learning_rate: float = 1e-4
    """The discriminator's learning rate: Adam with betas 0.5, 0.9 (taming's), constant."""
    lecam_weight: float = 0.0
    """LeCam regularisation of the discriminator (Tseng et al. 2021): keeps its logits near
    running means of the other kind's; 0 = off."""
    perceptual_weight: float = 0.0
    """Weight of the LPIPS perceptual distance between images and reconstructions, added to the
    reconstruction error; needs the lpips extra (pip install 'jaxbasics[lpips]'). 0 = off."""
    perceptual_net: PerceptualNet = "alexnet"
    """The network LPIPS compares features of: alexnet (fast) or vgg16."""

    def __post_init__(self) -> None:
        # One spelling of each level set ("8, 5,5,5" is "8,5,5,5"), so that a resume, a
        # codes.npz and an export compare levels, not how they were typed.
        if isinstance(self.fsq_levels, str) and LEVELS_PATTERN.fullmatch(self.fsq_levels):
            canonical = ",".join(str(int(part)) for part in self.fsq_levels.split(","))
            object.__setattr__(self, "fsq_levels", canonical)

    def validate(self) -> "VQVAEConfig":
        """:meth:`RunConfig.validate`, then the VQ-VAE's own fields.

        >>> VQVAEConfig(num_hiddens=3).validate()
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
            smallest = MIN_SIDE if self.perceptual_weight > 0 else 4  # LPIPS needs 32
            raise ValueError(
                f"--image-size must be a multiple of 4 (two stride-2 convolutions), got "
                f"{self.image_size}; try {max(smallest, self.image_size // 4 * 4)}."
            )
        if self.dataset != "folder" and self.image_size != 32:
            raise ValueError(
                f"--image-size {self.image_size} applies to --dataset folder only; {self.dataset} "
                "images are 32x32."
            )
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}.")
        self._validate_quantizer()
        self._validate_adversarial()
        self._validate_palette()
        return self

    def _validate_palette(self) -> None:
        """Between 0 and the code map's width, and not with VQGAN-style training (its
        gradient splits the decoder's last layer off, where the palette is painted)."""
        width = self.image_size // 4
        if not (self.palette_slots == 0 or 2 <= self.palette_slots <= width):
            raise ValueError(
                f"--palette-slots must be 0 (off) or in [2, {width}] (the code map's width, "
                f"--image-size / 4), got {self.palette_slots}."
            )
        if self.palette_slots and (self.adversarial or self.perceptual_weight > 0):
            raise ValueError(
                "--palette-slots does not combine with --disc-weight or --perceptual-weight; "
                "set them to 0, or --palette-slots 0."
            )

    def check_given(self, given: set[str]) -> None:
        """Refuse ``--fsq-levels`` for a VQ run, even at the default levels: they would do
        nothing. A resumed FSQ run may repeat its levels without ``--quantizer fsq``.

        >>> VQVAEConfig(quantizer="fsq").check_given({"fsq_levels"})
        >>> VQVAEConfig().check_given({"fsq_levels"})
        Traceback (most recent call last):
        ...
        ValueError: --fsq-levels 8,8,8 applies to --quantizer fsq only; add --quantizer fsq, ...
        """
        if "fsq_levels" in given and self.quantizer != "fsq":
            raise ValueError(
                f"--fsq-levels {self.fsq_levels} applies to --quantizer fsq only; add "
                "--quantizer fsq, or leave --fsq-levels out."
            )
        for owner, fields in OWNED.items():
            if getattr(self, owner) == 0 and (idle := sorted(given & set(fields))):
                flag = "--" + idle[0].replace("_", "-")
                raise ValueError(
                    f"{flag} applies only with --{owner.replace('_', '-')} > 0, which is 0 "
                    f"here; set it, or leave {flag} out."
                )

    def model_kwargs(self) -> dict[str, Any]:
        """The :class:`~jaxbasics.vqvae.model.VQVAE` constructor arguments this config selects.

        >>> VQVAEConfig().model_kwargs()["num_embeddings"]
        512
        """
        return dict(
            num_hiddens=self.num_hiddens,
            num_residual_hiddens=self.num_residual_hiddens,
            num_residual_layers=self.num_residual_layers,
            embedding_dim=self.embedding_dim,
            num_embeddings=self.num_embeddings,
            commitment_cost=self.commitment_cost,
            decay=self.decay,
            estimator=self.estimator,
            ema_init=self.ema_init,
            quantizer=self.quantizer,
            fsq_levels=self.levels,
            conv_form=self.conv_form,
            compute_dtype=self.compute_dtype,
            palette_slots=self.palette_slots,
        )

    @property
    def num_codes(self) -> int:
        """The codes a code map of this model may hold: K, plus a palette's 512 colour codes
        and its padding code (:mod:`jaxbasics.vqvae.palette`).

        >>> VQVAEConfig().num_codes, VQVAEConfig(palette_slots=5).num_codes
        (512, 1025)
        """
        extra = palette.CODES + 1 if self.palette_slots else 0
        return self.num_embeddings + extra

    @property
    def levels(self) -> tuple[int, ...]:
        """``fsq_levels`` as integers.

        >>> VQVAEConfig(fsq_levels="8,5,5,5").levels
        (8, 5, 5, 5)
        """
        return parse_levels(self.fsq_levels)

    @property
    def adversarial(self) -> bool:
        """Whether the run trains a discriminator (``disc_weight > 0``)."""
        return self.disc_weight > 0

    def _validate_adversarial(self) -> None:
        """The VQGAN settings: weights finite and >= 0, a positive discriminator rate, and
        images LPIPS can compare."""
        for name in ("disc_weight", "lecam_weight", "perceptual_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(
                    f"{name} must be a finite number >= 0 (0 = off), got {getattr(self, name)}."
                )
        if not (math.isfinite(self.disc_learning_rate) and self.disc_learning_rate > 0):
            raise ValueError(
                f"disc_learning_rate must be a finite number > 0, got {self.disc_learning_rate}."
            )
        if self.disc_start < 0:
            raise ValueError(f"disc_start must be >= 0, got {self.disc_start}.")
        if self.adversarial and self.disc_start >= self.num_training_updates:
            raise ValueError(
                f"disc_start ({self.disc_start}) must be below num_training_updates "
                f"({self.num_training_updates}), or the discriminator never trains; lower "
                "--disc-start, or set --disc-weight 0."
            )
        if self.perceptual_weight > 0 and self.image_size < MIN_SIDE:
            raise ValueError(
                f"the perceptual loss (LPIPS) needs images of at least {MIN_SIDE}x{MIN_SIDE}, "
                f"got --image-size {self.image_size}; raise it or set --perceptual-weight 0."
            )

    def _validate_quantizer(self) -> None:
        """FSQ: levels that work, and no VQ-only setting or code count that it would ignore."""
        if self.quantizer == "vq":
            if self.fsq_levels != VQVAEConfig.fsq_levels:
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


# Settings that do something only when another is on (> 0): the owner, and what it owns.
OWNED: dict[str, tuple[str, ...]] = {
    "disc_weight": ("disc_start", "disc_channels", "disc_learning_rate", "lecam_weight"),
    "perceptual_weight": ("perceptual_net",),
}
