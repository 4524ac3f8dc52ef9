"""Stage one: training and using a VQ-VAE.

Train with ``experiments/train_vqvae.py`` or :func:`jaxbasics.train.fit` on a
:class:`VQVAEConfig` (:func:`preset` gives the named ones); use what was trained with
:func:`load` (a workdir or an export) and :func:`export`.

* :mod:`~jaxbasics.tasks.vqvae.config`, :mod:`~jaxbasics.tasks.vqvae.presets`: the config;
* :mod:`~jaxbasics.tasks.vqvae.train`: the state, ``train_step``, ``eval_step``, the Task;
* :mod:`~jaxbasics.tasks.vqvae.data`, :mod:`~jaxbasics.tasks.vqvae.evaluate`: its images, its
  evaluations and figures;
* :mod:`~jaxbasics.tasks.vqvae.trained`, :mod:`~jaxbasics.tasks.vqvae.export_file`: a trained
  model, and its export file;
* :mod:`~jaxbasics.tasks.vqvae.apply`, :mod:`~jaxbasics.tasks.vqvae.codes`: a model on image
  files, and ``codes.npz``.

>>> preset("quickstart").dataset, VQVAEConfig.KIND
('shapes', 'VQ-VAE')
"""

from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.export_file import IncompatibleModelError
from jaxbasics.tasks.vqvae.presets import FAITHFUL, PRESETS, preset
from jaxbasics.tasks.vqvae.train import VQVAEState, VQVAETask, codebook_of, init_state, to_model
from jaxbasics.tasks.vqvae.trained import Loaded, export, load

__all__ = [
    "FAITHFUL",
    "PRESETS",
    "IncompatibleModelError",
    "Loaded",
    "VQVAEConfig",
    "VQVAEState",
    "VQVAETask",
    "codebook_of",
    "export",
    "init_state",
    "load",
    "preset",
    "to_model",
]
