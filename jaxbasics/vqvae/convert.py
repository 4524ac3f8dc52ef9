"""PyTorch reference ``state_dict`` <-> Flax NNX state of :class:`~jaxbasics.vqvae.model.VQVAE`.

Layouts:
  * ``nn.Conv2d.weight`` is OIHW; ``nnx.Conv.kernel`` is HWIO: a transpose.
  * ``nn.ConvTranspose2d.weight`` is (in, out, kH, kW). Our transposed convs keep
    ``nnx.ConvTranspose``'s kernel, (kH, kW, in, out) applied as a correlation over
    the stride-dilated input, which is PyTorch's kernel spatially flipped: a
    transpose plus ``[::-1, ::-1]``.
  * Codebook, ``_ema_w`` and ``_ema_cluster_size`` keep their shapes.

Nothing converts silently: a missing, extra or wrongly-shaped entry raises, and so does an
FSQ model (``quantizer="fsq"``): the notes' PyTorch VQ-VAE has no FSQ quantiser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import nnx

from jaxbasics.vqvae.model import VQVAE

_TOP = {
    "_encoder": "encoder",
    "_decoder": "decoder",
    "_pre_vq_conv": "pre_vq_conv",
    "_vq_vae": "vq",
}
_VQ = {"_embedding.weight": "codebook", "_ema_w": "ema_w", "_ema_cluster_size": "ema_cluster_size"}
_BLOCK = {"1": "conv_3x3", "3": "conv_1x1"}


def _refuse_fsq(has_codebook: bool) -> None:
    if not has_codebook:
        raise ValueError(
            "the PyTorch converter handles VQ models only (a learned codebook, plain or EMA), "
            "and this state holds no codebook: an FSQ model's (quantizer='fsq'; the notes' "
            "PyTorch VQ-VAE has no FSQ quantiser), or a filtered one: pass nnx.state(model)."
        )


def _refuse_palette(palette: bool) -> None:
    if palette:
        raise ValueError(
            "the PyTorch converter handles the notes' VQ-VAE only, and this is a palette "
            "tokenizer's (palette_slots > 0: its encoder reads colour distances, its decoder "
            "paints masks), which the notes' PyTorch model has no layers for."
        )


def _to_flax(name: str, value: np.ndarray) -> np.ndarray:
    if name.endswith(".weight") and value.ndim == 4:
        if "_conv_trans_" in name:  # (in, out, kH, kW) -> flipped (kH, kW, in, out)
            return value.transpose(2, 3, 0, 1)[::-1, ::-1]
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    return value


def _to_torch(name: str, value: np.ndarray) -> np.ndarray:
    if name.endswith(".weight") and value.ndim == 4:
        if "_conv_trans_" in name:
            return value[::-1, ::-1].transpose(2, 3, 0, 1)
        return value.transpose(3, 2, 0, 1)
    return value


def _torch_name(path: tuple) -> str:
    inverse_top = {v: k for k, v in _TOP.items()}
    if path[0] == "vq":
        return "_vq_vae." + {v: k for k, v in _VQ.items()}[path[1]]
    field = "weight" if path[-1] == "kernel" else "bias"
    if "residual_stack" in path:
        i, conv = path[3], path[4]
        block = {v: k for k, v in _BLOCK.items()}[conv]
        return f"{inverse_top[path[0]]}._residual_stack._layers.{i}._block.{block}.weight"
    if path[0] == "pre_vq_conv":
        return f"_pre_vq_conv.{field}"
    return f"{inverse_top[path[0]]}._{path[1]}.{field}"


def _flat(state: nnx.State) -> dict[tuple, Any]:
    """Path -> leaf (an array, or a ShapeDtypeStruct for an ``nnx.eval_shape`` model)."""
    out = {}

    def walk(prefix, node):
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk((*prefix, k), v)
        else:
            out[prefix] = node

    walk((), nnx.to_pure_dict(state))
    return out


def to_torch_state_dict(state: nnx.State) -> dict[str, np.ndarray]:
    """Flax state of a :class:`VQVAE` -> the notes' ``model.state_dict()`` names (numpy).

    Load it into the reference with
    ``model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})``.

    Args:
      state: ``nnx.state(model)``.

    Returns:
      A dict from reference parameter names to numpy arrays in PyTorch layouts.

    >>> from flax import nnx
    >>> sd = to_torch_state_dict(nnx.state(VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))))
    >>> sd["_encoder._conv_1.weight"].shape, sd["_decoder._conv_trans_1.weight"].shape
    ((8, 3, 4, 4), (16, 8, 4, 4))

    Raises:
      ValueError: ``state`` is an FSQ model's (it holds no codebook) or a palette
        tokenizer's.
    """
    flat = _flat(state)
    _refuse_fsq(any(path[0] == "vq" for path in flat))
    first = flat.get(("encoder", "conv_1", "kernel"))
    _refuse_palette(first is not None and first.shape[2] != 3)
    sd = {}
    for path, value in flat.items():
        name = _torch_name(path)
        sd[name] = np.ascontiguousarray(_to_torch(name, np.asarray(value)))
    return sd


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray], model: VQVAE) -> nnx.State:
    """The notes' ``model.state_dict()`` -> Flax state for ``model``'s structure.

    ``model`` supplies the expected names and shapes (build it with the same sizes
    and ``decay`` as the PyTorch model). It may be abstract,
    ``nnx.eval_shape(lambda: VQVAE(..., rngs=nnx.Rngs(0)))``, which skips the random
    init. Apply the result with ``nnx.update(model, state)``.

    Args:
      state_dict: reference parameter names -> arrays (numpy, or CPU torch tensors).
      model: a :class:`VQVAE` of the matching configuration.

    Returns:
      An ``nnx.State`` holding the converted arrays.

    Raises:
      KeyError: names missing from, or unexpected in, ``state_dict`` (all listed).
      ValueError: entries whose shapes differ from the model's (all listed), or ``model`` is
        an FSQ model.

    >>> from flax import nnx
    >>> model = VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0))
    >>> sd = to_torch_state_dict(nnx.state(model))
    >>> blank = nnx.eval_shape(lambda: VQVAE(16, 4, 1, 8, 16, rngs=nnx.Rngs(0)))
    >>> state = from_torch_state_dict(sd, blank)
    >>> nnx.update(blank, state)
    >>> bool((state["encoder"]["conv_1"]["kernel"][...]
    ...       == model.encoder.conv_1.kernel[...]).all())
    True
    >>> from_torch_state_dict({}, model)
    Traceback (most recent call last):
    ...
    KeyError: "state_dict is missing 19 entries: ['_decoder._conv_1.bias', ...
    """
    _refuse_fsq(model.vq.learned)
    _refuse_palette(model.palette_slots > 0)
    state = nnx.state(model)
    expected = {_torch_name(p): (p, v.shape) for p, v in _flat(state).items()}
    given = {k: np.asarray(v) for k, v in state_dict.items()}
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"state_dict is missing {len(missing)} entries: {missing}")
        if extra:
            parts.append(f"state_dict has {len(extra)} unexpected entries: {extra}")
        hint = (
            " An EMA checkpoint (_vq_vae._ema_w) needs VQVAE(decay>0); a plain one needs "
            "decay=0. num_residual_layers must match the _layers.N entries."
        )
        raise KeyError("; ".join(parts) + "." + hint)
    pure = nnx.to_pure_dict(state)
    wrong = []
    for name, (path, shape) in expected.items():
        value = _to_flax(name, given[name])
        if value.shape != shape:
            want = _to_torch(name, np.zeros(shape)).shape
            wrong.append(f"{name}: got {given[name].shape}, model expects {want}")
            continue
        node = pure
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = np.ascontiguousarray(value, dtype=np.float32)
    if wrong:
        raise ValueError(
            "state_dict shapes do not match the model (check num_hiddens, "
            f"num_residual_hiddens, embedding_dim, num_embeddings): {wrong}"
        )
    nnx.replace_by_pure_dict(state, pure)
    return state
