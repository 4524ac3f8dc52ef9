"""The VQ-VAE (core): the model, its quantisers and the codebook's tools, in Flax NNX.

Pure and jit-able: nothing here reads files or imports the training shell
(:mod:`jaxbasics.tasks.vqvae` trains, loads and exports the model). The modules:
:mod:`~jaxbasics.vqvae.model` (``VQVAE``: encoder, quantiser, decoder; the loss),
:mod:`~jaxbasics.vqvae.quantizer` (the VQ math and the plain quantiser),
:mod:`~jaxbasics.vqvae.ema` (the EMA quantiser), :mod:`~jaxbasics.vqvae.fsq` (finite scalar
quantisation), :mod:`~jaxbasics.vqvae.codebook` (usage, dead-code restarts, k-means),
:mod:`~jaxbasics.vqvae.layers` and :mod:`~jaxbasics.vqvae.wgrad` (convolution forms), and
:mod:`~jaxbasics.vqvae.convert` (PyTorch ``state_dict`` <-> Flax).

>>> import jax.numpy as jnp
>>> flat = jnp.array([[0.0, 0.9], [2.0, 0.0]])  # two encoder outputs, D = 2
>>> codebook = jnp.array([[0.0, 0.0], [0.0, 1.0], [2.0, 0.0]])  # K = 3 codes
>>> nearest_code(distances(flat, codebook)).tolist()  # torch.argmin(distances, dim=1)
[1, 2]
"""

from jaxbasics.vqvae.convert import from_torch_state_dict, to_torch_state_dict
from jaxbasics.vqvae.ema import VectorQuantizerEMA
from jaxbasics.vqvae.fsq import FSQuantizer
from jaxbasics.vqvae.model import VQVAE, recon_error, vqvae_loss
from jaxbasics.vqvae.quantizer import (
    Quantizer,
    QuantizerOutput,
    VectorQuantizer,
    VQVAEOutput,
    distances,
    lookup,
    nearest_code,
    perplexity,
)

__all__ = [
    "FSQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "VQVAE",
    "VQVAEOutput",
    "VectorQuantizer",
    "VectorQuantizerEMA",
    "distances",
    "from_torch_state_dict",
    "lookup",
    "nearest_code",
    "perplexity",
    "recon_error",
    "to_torch_state_dict",
    "vqvae_loss",
]
