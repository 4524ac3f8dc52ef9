"""Stage two: training a prior over a VQ-VAE's code maps, and loading it to sample.

Train with ``experiments/train_prior.py`` or :func:`jaxbasics.train.fit` on a
:class:`PriorConfig` (``PRESETS(name)`` gives the named ones); sample a trained one with
:func:`load_prior` and :func:`jaxbasics.prior.sample`, decoding with the VQ-VAE it belongs to
(:func:`vqvae_of`).

>>> PRESETS("quickstart").prior, PriorConfig.KIND
('transformer', 'prior')
"""

from jaxbasics.tasks.prior.config import PRESETS, PriorConfig
from jaxbasics.tasks.prior.data import CodeData, vqvae_of
from jaxbasics.tasks.prior.train import PriorState, PriorTask, make_prior
from jaxbasics.tasks.prior.trained import LoadedPrior, load_prior

__all__ = [
    "PRESETS",
    "CodeData",
    "LoadedPrior",
    "PriorConfig",
    "PriorState",
    "PriorTask",
    "load_prior",
    "make_prior",
    "vqvae_of",
]
