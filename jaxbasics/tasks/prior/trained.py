"""Use a trained prior: :func:`load_prior` reads it back from its run's workdir.

Its samples are decoded by the VQ-VAE it was trained on
(:func:`~jaxbasics.tasks.prior.data.vqvae_of` finds that model and refuses another codebook's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from flax import nnx

from jaxbasics.tasks.prior.config import PriorConfig
from jaxbasics.tasks.prior.train import PriorShape, structure
from jaxbasics.train.saved import read_run
from jaxbasics.train.sharding import placed


class LoadedPrior(NamedTuple):
    """What :func:`load_prior` returns.

    Attributes:
      prior: the trained prior (a Flax NNX module).
      config: its :class:`~jaxbasics.tasks.prior.config.PriorConfig`.
      codes: what its run kept of its codes (K, map size, class names, codebook fingerprint,
        the floors; :meth:`~jaxbasics.tasks.prior.data.CodeData.stats`).
      step: the training step the weights come from.
    """

    prior: Any
    config: PriorConfig
    codes: dict[str, Any]
    step: int


def load_prior(workdir: str | Path, step: int | None = None) -> LoadedPrior:
    """Load a trained prior from its run's workdir: the newest readable checkpoint, or ``step``.

    Each checkpoint is read with the shapes its own meta names (they follow the codes the run
    modelled), so that an unreadable newest one falls back to the one before.

    Raises:
      FileNotFoundError: ``workdir`` holds no prior run.
      UnreadableCheckpointError, IncompatibleCheckpointError: as
        :func:`jaxbasics.train.saved.read` (one line each).
    """
    workdir = Path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(
            f"{workdir} is not a prior's training workdir (no checkpoints/); train one with "
            "experiments/train_prior.py --workdir DIR."
        )

    def shape(config: PriorConfig, meta: dict) -> PriorShape:
        return PriorShape.of(meta["codes"], config)

    run = read_run(
        workdir,
        PriorConfig,
        lambda config, meta: placed(structure(config, shape(config, meta)).abstract),
        step=step,
        fields=("params",),
    )
    graphdef = structure(run.config, shape(run.config, run.meta)).graphdef
    prior = nnx.merge(graphdef, run.state.params)
    return LoadedPrior(prior, run.config, run.meta["codes"], run.step)
