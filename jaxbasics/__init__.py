"""jaxbasics: PyTorch basics, done the JAX way.

The top level only imports jax and numpy. Heavy or optional packages (flax, optax,
orbax, grain, tensorflow_datasets, matplotlib, tqdm, torch) are imported by the
submodules that need them, so ``import jaxbasics`` stays quick.

>>> import jaxbasics
>>> jaxbasics.__version__
'0.1.0'
"""

__version__ = "0.1.0"
