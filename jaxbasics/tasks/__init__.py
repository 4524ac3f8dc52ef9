"""Each model's training, one package each, plugged into the run machinery
(:mod:`jaxbasics.train`) through its registry.

* :mod:`jaxbasics.tasks.vqvae`: stage one, the VQ-VAE: its config and presets, state and steps,
  evaluation, the export format, and its model on image files and ``codes.npz``.
* :mod:`jaxbasics.tasks.prior`: stage two, a prior over a VQ-VAE's code maps: its config and
  presets, its code data, state and steps, and loading it.

Importing this package registers both kinds of run, so ``jaxbasics.train.fit`` trains either
and a workdir of one kind given as the other is named as such.

>>> from jaxbasics.train import kinds
>>> {"VQ-VAE", "prior"} <= {kind.KIND for kind in kinds()}
True
"""

from jaxbasics.tasks import prior, vqvae

__all__ = ["prior", "vqvae"]
