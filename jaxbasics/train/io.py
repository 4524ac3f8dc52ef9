"""Use what was trained: load a model from a run or an export, and export a run's model.

``load(path)`` takes either a training workdir or a file written by :func:`export`, and
returns the :class:`~jaxbasics.vqvae.model.VQVAE` in eval mode together with its config and the
data variance. From a workdir it reads what training would resume from, through
:func:`jaxbasics.train.checkpoint.read`: checkpoint ``step``, or else the newest readable one
(a warning names the newer ones skipped, and why; a checkpoint an older version wrote loads
too). It moves nothing and never reads the optimiser state.

``export(workdir, path)`` writes one self-describing file: a msgpack
(``flax.serialization``) of the config, the data variance, the step, the parameters and the
codebook. It holds what encoding and decoding need, and no training state: no optimiser
moments, no history, and of the EMA quantiser's statistics only the codebook itself (its
running sums ``ema_w`` and cluster sizes are training state, like Adam's moments; :func:`load`
sets them consistently, ``ema_w = codebook`` and sizes 1, as the ``consistent`` init does).
That makes an export about 2.9x smaller than a checkpoint of the same run (quickstart:
801 kB against 2.3 MB).

>>> import tempfile
>>> from jaxbasics.train.presets import preset
>>> from jaxbasics.train.state import init_state
>>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
...              num_embeddings=8)
>>> path = tempfile.mkdtemp() + "/model.msgpack"
>>> state = init_state(cfg)
>>> _ = save_model(path, cfg, state.params, state.ema, data_variance=0.06, step=0)
>>> model, config, variance, step = load(path)
>>> model.encode(jax.numpy.zeros((1, 32, 32, 3))).shape, variance
((1, 8, 8), 0.06)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxbasics.train.config import TrainConfig
from jaxbasics.vqvae.model import VQVAE

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
)


class IncompatibleModelError(ValueError):
    """A checkpoint or export does not fit the model it is loaded into."""


class Loaded(NamedTuple):
    """What :func:`load` returns.

    Attributes:
      model: the ``VQVAE`` in eval mode (``model.eval()``: the EMA statistics are only read).
      config: the run's :class:`~jaxbasics.train.config.TrainConfig`.
      data_variance: the variance of its training images scaled to [0, 1] (the recon
        error's denominator).
      step: the training step the weights come from.
    """

    model: VQVAE
    config: TrainConfig
    data_variance: float
    step: int


def _model_diff(saved: TrainConfig, expected: TrainConfig) -> list[str]:
    return [
        f"{k}: saved {getattr(saved, k)!r}, expected {getattr(expected, k)!r}"
        for k in MODEL_FIELDS
        if getattr(saved, k) != getattr(expected, k)
    ]


def _check_expected(saved: TrainConfig, expect: TrainConfig | None, where: Path) -> None:
    if expect is None:
        return
    diff = _model_diff(saved, expect)
    if diff:
        raise IncompatibleModelError(
            f"{where} holds a model of other sizes than expected; differing fields:\n  "
            + "\n  ".join(diff)
            + "\nLoad it without `expect` to get its own config, or use a model trained with "
            "these sizes."
        )


def load(path: str | Path, step: int | None = None, *, expect: TrainConfig | None = None) -> Loaded:
    """Load a trained model from a workdir or an export, like ``model.load_state_dict``.

    Args:
      path: a training workdir (``config.json`` + ``checkpoints/``) or a file written by
        :func:`export`.
      step: for a workdir, the checkpoint to load; None = the newest readable one, as
        training resumes (a warning names the newer ones skipped, and why).
      expect: if given, a config the model must match in every field that shapes the
        parameters (:data:`MODEL_FIELDS`); otherwise :class:`IncompatibleModelError` names the
        differing fields.

    Returns:
      A :class:`Loaded` ``(model, config, data_variance, step)``.

    Raises:
      FileNotFoundError: ``path`` is neither, or holds no checkpoint (at ``step``); the
        message says what was looked for.
      UnreadableCheckpointError: checkpoint ``step``, or every checkpoint, cannot be read
        (an ``OSError``; the message names the readable ones).
      IncompatibleCheckpointError: the checkpoint's arrays do not fit the run's config.
      IncompatibleModelError: the export's arrays do not fit its config, the weights hold
        NaN or infinity, or the model does not fit ``expect``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass a training workdir or an export.")
    if path.is_file():
        if step is not None:
            raise ValueError(
                f"{path} is an exported model, which holds one step ({step} was asked for); "
                "pass the training workdir to choose a checkpoint."
            )
        loaded = _load_export(path)
    elif (path / "config.json").is_file() or (path / "checkpoints").is_dir():
        loaded = _load_workdir(path, step)
    else:
        raise FileNotFoundError(
            f"{path} is neither a training workdir (with config.json and checkpoints/) nor a "
            "model file written by `jaxbasics.train.io.export` / experiments/export.py."
        )
    _check_expected(loaded.config, expect, path)
    return loaded


def _load_workdir(workdir: Path, step: int | None) -> Loaded:
    from flax import nnx

    from jaxbasics.train.state import to_model

    weights = _restore(workdir, step)
    trees = {"params": weights.params, "ema": weights.ema}
    bad = _first_non_finite({k: nnx.to_pure_dict(v) for k, v in trees.items()})
    if bad is not None:
        raise IncompatibleModelError(
            f"{workdir}: checkpoint {weights.step}'s {bad} holds NaN or infinity, and so would "
            "every output (the run diverged, or the checkpoint is damaged); load an earlier "
            "step (--step, step=)."
        )
    model = to_model(weights.config, weights.params, weights.ema)
    return Loaded(model, weights.config, weights.data_variance, weights.step)


class _Weights(NamedTuple):
    """A workdir's model as a checkpoint holds it: what :func:`load` and :func:`export` read."""

    config: TrainConfig
    params: Any
    ema: Any
    data_variance: float
    step: int


def _restore(workdir: Path, step: int | None) -> _Weights:
    """The params and EMA statistics of a workdir's checkpoint ``step`` (None: its newest
    readable one), read as training reads them; the optimiser state stays on disk."""
    from jaxbasics.train.checkpoint import read
    from jaxbasics.train.sharding import abstract_state
    from jaxbasics.train.workdir import saved_config, written_with

    config = saved_config(workdir).config  # config.json, or if it is lost the checkpoint's
    if config is None:
        raise FileNotFoundError(f"{workdir} is not a training workdir (it has no config.json).")
    restored = read(
        workdir,
        written_with(config, abstract_state(config), workdir),
        step=step,
        keep=config.keep_checkpoints,
        items=("state", "meta"),
        fields=("params", "ema"),
    )
    variance = float(restored.meta["data_variance"])
    return _Weights(config, restored.state.params, restored.state.ema, variance, restored.step)


def save_model(
    path: str | Path,
    config: TrainConfig,
    params: Any,
    ema: Any,
    *,
    data_variance: float,
    step: int,
) -> Path:
    """Write a model's params and codebook, with ``config``, as one export file.

    Of ``ema`` (the EMA quantiser's statistics; empty for plain VQ) only the codebook is kept.
    The file is written next to ``path`` and renamed into place, so it is never half-written.

    Raises:
      IsADirectoryError: ``path`` is a folder.
    """
    import flax.serialization
    from flax import nnx

    from jaxbasics.train.codes import write_atomically

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.loads(config.to_json()),
        "data_variance": float(data_variance),
        "step": int(step),
        "params": jax.tree.map(np.asarray, nnx.to_pure_dict(params)),
        "ema": jax.tree.map(np.asarray, _codebook_only(nnx.to_pure_dict(ema))),
    }
    data = flax.serialization.msgpack_serialize(payload)
    return write_atomically(path, lambda file: file.write(data), "model.msgpack")


def _codebook_only(ema: dict) -> dict:
    """The EMA statistics an export keeps: the quantiser's codebook, by name."""
    from jaxbasics.vqvae.codebook import QUANTIZER

    if not ema:
        return {}
    return {QUANTIZER: {"codebook": ema[QUANTIZER]["codebook"]}}


def _with_statistics(ema: dict) -> dict:
    """Running sums for a loaded codebook: ``ema_w = codebook``, cluster sizes 1."""
    from jaxbasics.vqvae.codebook import QUANTIZER

    if not ema:
        return {}
    book = ema[QUANTIZER]["codebook"]
    stats = {"codebook": book, "ema_w": book, "ema_cluster_size": np.ones(len(book), book.dtype)}
    return {QUANTIZER: stats}


def export(workdir: str | Path, path: str | Path, step: int | None = None) -> Path:
    """Export the model of a training run (newest readable checkpoint, or ``step``) to one file.

    Args:
      workdir: a training workdir.
      path: the file to write (conventionally ``*.msgpack``).
      step: the checkpoint to export; None = the newest readable one.

    Returns:
      ``path``. Read it back with :func:`load`.

    Raises:
      FileNotFoundError, UnreadableCheckpointError, IncompatibleCheckpointError: as
        :func:`load` from a workdir.
    """
    weights = _restore(Path(workdir), step)
    return save_model(
        path,
        weights.config,
        weights.params,
        weights.ema,
        data_variance=weights.data_variance,
        step=weights.step,
    )


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


def _load_export(path: Path) -> Loaded:
    import flax.serialization
    from flax import nnx

    from jaxbasics.train.checkpoint import layout, layout_differences
    from jaxbasics.train.codes import shorten
    from jaxbasics.train.state import structure, to_model

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
    bad = _first_non_finite({k: payload[k] for k in ("params", "ema")})
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
    model = to_model(config, trees["params"], trees["ema"])
    return Loaded(model, config, float(payload["data_variance"]), payload["step"])


def _stored_sizes(params: dict, ema: dict) -> dict[str, int]:
    """The model sizes an export's arrays imply, those they tell: widths from the arrays that
    have them, the residual layers from their count (a model of none has no residual width).

    >>> k = np.zeros((4, 4, 8, 16))
    >>> _stored_sizes({"encoder": {"conv_2": {"kernel": k}}}, {"vq": {"codebook": k[0, 0]}})
    {'num_hiddens': 16, 'num_embeddings': 8, 'num_residual_layers': 0}
    """
    from jaxbasics.vqvae.codebook import QUANTIZER

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


def _first_non_finite(tree: Any) -> str | None:
    """The path of the first array in ``tree`` holding NaN or infinity, or None.

    >>> _first_non_finite({"a": np.ones(2), "b": {"c": np.array([1.0, np.nan])}})
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


def _export_config(stored: dict, path: Path) -> TrainConfig:
    """An export's config, or an error naming what is wrong with it (validated: an FSQ code
    count its levels do not give is refused here, as no array would tell)."""
    try:
        return TrainConfig.from_json(json.dumps(stored)).validate()
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
