"""The export format: one self-describing file of a VQ-VAE's weights, for using the model.

:func:`save_model` writes a msgpack (``flax.serialization``) of the config, the data variance,
the step, the parameters and the codebook. It holds what encoding and decoding need, and no
training state: no optimiser moments, no history, and of the EMA quantiser's statistics only
the codebook itself (its running sums ``ema_w`` and cluster sizes are training state, like
Adam's moments; :func:`read_export` sets them consistently, ``ema_w = codebook`` and sizes 1,
as the ``consistent`` init does). That makes an export about 2.9x smaller than a checkpoint of
the same run (quickstart: 801 kB against 2.3 MB). :func:`read_export` checks the whole file
before it builds anything from it. Load a model with :func:`jaxbasics.tasks.vqvae.trained.load`.

>>> import tempfile
>>> from jaxbasics.tasks.vqvae.presets import preset
>>> from jaxbasics.tasks.vqvae.train import init_state
>>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
...              num_embeddings=8)
>>> path = tempfile.mkdtemp() + "/model.msgpack"
>>> state = init_state(cfg)
>>> _ = save_model(path, Weights(cfg, state.params, state.ema, data_variance=0.06, step=0))
>>> read_export(Path(path)).data_variance
0.06
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import numpy as np
from flax import nnx

from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.train import structure
from jaxbasics.train.files import shorten, write_atomic
from jaxbasics.train.layout import layout, layout_differences
from jaxbasics.vqvae.codebook import QUANTIZER

FORMAT = "jaxbasics-vqvae"
VERSION = 1
# The config fields that shape the parameters: two models can share weights iff these agree.
MODEL_FIELDS = (
    "num_hiddens",
    "num_residual_hiddens",
    "num_residual_layers",
    "embedding_dim",
    "num_embeddings",
    "decay",
    "quantizer",
    "fsq_levels",
    "palette_slots",
)


def model_differences(a: Any, b: Any, names: tuple[str, str]) -> str:
    """The :data:`MODEL_FIELDS` in which configs ``a`` and ``b`` differ, on one line, each
    value labelled by ``names``; empty if they agree.

    >>> from jaxbasics.tasks.vqvae.config import VQVAEConfig
    >>> model_differences(VQVAEConfig(), VQVAEConfig(embedding_dim=8), ("codes", "model"))
    'embedding_dim: codes 64, model 8'
    """
    return "; ".join(
        f"{k}: {names[0]} {getattr(a, k)!r}, {names[1]} {getattr(b, k)!r}"
        for k in MODEL_FIELDS
        if getattr(a, k) != getattr(b, k)
    )


class IncompatibleModelError(ValueError):
    """A checkpoint or export does not fit the model it is loaded into."""


class Weights(NamedTuple):
    """A model's weights and what goes with them: what a checkpoint or an export holds of it."""

    config: VQVAEConfig
    params: Any
    ema: Any
    data_variance: float
    step: int


def save_model(path: str | Path, weights: Weights) -> Path:
    """Write a model's params and codebook, with its config, as one export file.

    Of ``weights.ema`` (the EMA quantiser's statistics; empty for plain VQ) only the codebook
    is kept. The file is written atomically (:func:`~jaxbasics.train.files.write_atomic`).

    Raises:
      IsADirectoryError: ``path`` is a folder.
    """
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.loads(weights.config.to_json()),
        "data_variance": float(weights.data_variance),
        "step": int(weights.step),
        "params": jax.tree.map(np.asarray, nnx.to_pure_dict(weights.params)),
        "ema": jax.tree.map(np.asarray, _codebook_only(nnx.to_pure_dict(weights.ema))),
    }
    return write_atomic(path, flax.serialization.msgpack_serialize(payload))


def _codebook_only(ema: dict) -> dict:
    """The EMA statistics an export keeps: the quantiser's codebook, by name."""
    if not ema:
        return {}
    return {QUANTIZER: {"codebook": ema[QUANTIZER]["codebook"]}}


def _with_statistics(ema: dict) -> dict:
    """Running sums for a loaded codebook: ``ema_w = codebook``, cluster sizes 1."""
    if not ema:
        return {}
    book = ema[QUANTIZER]["codebook"]
    stats = {"codebook": book, "ema_w": book, "ema_cluster_size": np.ones(len(book), book.dtype)}
    return {QUANTIZER: stats}


# What an export holds besides its format: each field's type (bool is no int, though Python
# says it is).
_EXPORT_FIELDS = {
    "version": int,
    "step": int,
    "data_variance": (int, float),
    "config": dict,
    "params": dict,
    "ema": dict,
}


def read_export(path: Path) -> Weights:
    """The weights of an export file, checked whole before anything is built from them.

    Raises:
      IncompatibleModelError: not an export, another format or a newer version; a field
        missing or of another type; a config that describes no model, or other sizes than
        the stored arrays; weights holding NaN or infinity (one line each).
    """
    payload = _payload(path)
    config = _export_config(payload["config"], path)
    for name in ("params", "ema"):
        _check_arrays(payload[name], f"{path}: the '{name}' field")
    # Before anything is built from the config: sizes it declares (a million channels, ten
    # million residual layers) cost memory or time the stored arrays never did.
    for field, stored in _stored_sizes(payload["params"], payload["ema"]).items():
        if getattr(config, field) != stored:
            raise IncompatibleModelError(
                f"{path}: its config says {field} = {getattr(config, field)!r}, the stored "
                f"weights {stored}; export the run again."
            )
    try:
        abstract = structure(config).abstract
    except (TypeError, ValueError) as e:
        raise IncompatibleModelError(
            f"{path}: the 'config' field describes no model ({type(e).__name__}: {e})."
        ) from e
    for name in ("params", "ema"):
        expected = nnx.to_pure_dict(getattr(abstract, name))  # shapes and dtypes, no arrays
        kept = expected if name == "params" else _codebook_only(expected)
        diff = layout_differences(layout(payload[name]), layout(kept))
        if diff:
            raise IncompatibleModelError(
                f"{path}: the stored {name} do not fit the stored config:\n  " + "\n  ".join(diff)
            )
    bad = first_non_finite({k: payload[k] for k in ("params", "ema")})
    if bad is not None:
        raise IncompatibleModelError(
            f"{path}: {bad} holds NaN or infinity, and so would every output (the run diverged, "
            "or the file is damaged); export an earlier checkpoint (export.py --step)."
        )
    trees = {}
    for name in ("params", "ema"):
        state = jax.tree.map(lambda a: a, getattr(abstract, name))  # a copy: abstract is cached
        stored = payload[name]
        nnx.replace_by_pure_dict(state, stored if name == "params" else _with_statistics(stored))
        trees[name] = jax.tree.map(jax.numpy.asarray, state)
    variance = float(payload["data_variance"])
    return Weights(config, trees["params"], trees["ema"], variance, payload["step"])


def _payload(path: Path) -> dict:
    """The decoded export at ``path``, its format and fields checked."""
    try:
        payload = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoding failure means "not an export"
        raise IncompatibleModelError(
            f"{path} is not a model file written by jaxbasics' export ({type(e).__name__}: {e})."
        ) from e
    if not isinstance(payload, dict) or "format" not in payload:
        raise IncompatibleModelError(f"{path} is not a {FORMAT} export (no 'format' field).")
    if payload["format"] != FORMAT:
        raise IncompatibleModelError(
            f"{path} is not a {FORMAT} export: its format is {shorten(repr(payload['format']))}. "
            "Pass a file written by experiments/export.py."
        )
    _check_fields(payload, path)
    return payload


def _stored_sizes(params: dict, ema: dict) -> dict[str, int]:
    """The model sizes an export's arrays imply, those they tell: widths from the arrays that
    have them, the residual layers from their count (a model of none has no residual width).

    >>> k = np.zeros((4, 4, 8, 16))
    >>> _stored_sizes({"encoder": {"conv_2": {"kernel": k}}}, {"vq": {"codebook": k[0, 0]}})
    {'num_hiddens': 16, 'num_embeddings': 8, 'num_residual_layers': 0}
    """
    layers = _get(params, "encoder", "residual_stack", "layers")
    layers = layers if isinstance(layers, dict) else {}
    codebook = _get(ema, QUANTIZER, "codebook")
    if codebook is None:  # plain VQ: the codebook is a parameter
        codebook = _get(params, QUANTIZER, "codebook")
    where = {
        "num_hiddens": (_get(params, "encoder", "conv_2", "kernel"), -1),
        "num_residual_hiddens": (_get(next(iter(layers.values()), {}), "conv_3x3", "kernel"), -1),
        "embedding_dim": (_get(params, "pre_vq_conv", "kernel"), -1),
        "num_embeddings": (codebook, 0),
    }
    sizes = {
        field: array.shape[axis]
        for field, (array, axis) in where.items()
        if isinstance(array, np.ndarray) and array.ndim
    }
    return {**sizes, "num_residual_layers": len(layers)}


def _get(tree: Any, *keys: Any) -> Any:
    """``tree[k1][k2]...``, or None where a level is missing or no dict."""
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def first_non_finite(tree: Any) -> str | None:
    """The path of the first array in ``tree`` holding NaN or infinity, or None.

    >>> first_non_finite({"a": np.ones(2), "b": {"c": np.array([1.0, np.nan])}})
    'b/c'
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not np.isfinite(np.asarray(leaf)).all():
            return "/".join(str(getattr(k, "key", k)) for k in path)
    return None


def _check_fields(payload: dict, path: Path) -> None:
    """Refuse an export missing a field, holding one of another type, or a value out of range."""
    for field, kind in _EXPORT_FIELDS.items():
        value = payload.get(field)
        if isinstance(value, bool) or not isinstance(value, kind):
            found = "is missing" if field not in payload else f"is a {type(value).__name__}"
            raise IncompatibleModelError(
                f"{path}: the export's '{field}' field {found}; export the run again."
            )
    if payload["version"] > VERSION:
        raise IncompatibleModelError(
            f"{path} is a version-{payload['version']} export; this jaxbasics reads up to "
            f"version {VERSION}. Upgrade jaxbasics."
        )
    if (
        payload["step"] < 0
        or not math.isfinite(payload["data_variance"])
        or payload["data_variance"] <= 0
    ):
        raise IncompatibleModelError(
            f"{path}: the export's 'step' ({payload['step']}) or 'data_variance' "
            f"({payload['data_variance']}) is out of range (step >= 0, variance > 0)."
        )


def _export_config(stored: dict, path: Path) -> VQVAEConfig:
    """An export's config, or an error naming what is wrong with it (validated: an FSQ code
    count its levels do not give is refused here, as no array would tell)."""
    try:
        return VQVAEConfig.from_json(json.dumps(stored)).validate()
    except (TypeError, ValueError) as e:  # TypeError: something JSON cannot hold (an array)
        raise IncompatibleModelError(f"{path}: the 'config' field is no config ({e})") from e


def _check_arrays(tree: Any, where: str) -> None:
    """Refuse a stored tree with anything but nested dicts of arrays (a string, a list...)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            _check_arrays(value, f"{where}/{key}")
        elif not isinstance(value, np.ndarray):
            raise IncompatibleModelError(
                f"{where}/{key} is a {type(value).__name__}, not an array; export the run again."
            )
