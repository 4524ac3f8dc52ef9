"""jaxbasics: PyTorch basics, done the JAX way.

The top level only imports jax and numpy: the notes' basics are here, while the
VQ-VAE (``jaxbasics.vqvae``), data (``jaxbasics.data``) and training
(``jaxbasics.train``) packages import flax, optax, orbax, grain or tfds when used.

>>> import jaxbasics
>>> jaxbasics.__version__
'0.1.0'
>>> jaxbasics.tensors.arange(3).tolist()
[0.0, 1.0, 2.0]
"""

from jaxbasics import autodiff, calculus, debug, docs, tensors

__version__ = "0.1.0"
__all__ = ["autodiff", "calculus", "debug", "docs", "tensors", "__version__"]
