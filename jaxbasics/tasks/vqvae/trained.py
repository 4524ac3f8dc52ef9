"""Use a trained VQ-VAE: ``load`` a model from a run or an export, ``export`` a run's model.

``load(path)`` takes either a training workdir or a file written by :func:`export`, and
returns the :class:`~jaxbasics.vqvae.model.VQVAE` in eval mode together with its config and the
data variance. From a workdir it reads what training would resume from, through the one reader
of a saved run (:func:`jaxbasics.train.saved.read_run`): checkpoint ``step``, or else the
newest readable one (a warning names the newer ones skipped, and why; a checkpoint an older
version wrote loads too). It moves nothing and never reads the optimiser state.

>>> import tempfile
>>> from jaxbasics.tasks.vqvae.export_file import Weights, save_model
>>> from jaxbasics.tasks.vqvae.presets import preset
>>> from jaxbasics.tasks.vqvae.train import init_state
>>> cfg = preset("quickstart", num_hiddens=8, num_residual_hiddens=2, embedding_dim=4,
...              num_embeddings=8)
>>> path = tempfile.mkdtemp() + "/model.msgpack"
>>> state = init_state(cfg)
>>> _ = save_model(path, Weights(cfg, state.params, state.ema, data_variance=0.06, step=0))
>>> model, config, variance, step = load(path)
>>> import jax.numpy as jnp
>>> model.encode(jnp.zeros((1, 32, 32, 3))).shape, variance
((1, 8, 8), 0.06)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from flax import nnx

from jaxbasics.tasks.vqvae.config import VQVAEConfig
from jaxbasics.tasks.vqvae.export_file import (
    IncompatibleModelError,
    Weights,
    first_non_finite,
    model_differences,
    read_export,
    save_model,
)
from jaxbasics.tasks.vqvae.train import VQVAETask, structure, to_model
from jaxbasics.train.saved import read_run
from jaxbasics.train.sharding import placed
from jaxbasics.vqvae.model import VQVAE


class Loaded(NamedTuple):
    """What :func:`load` returns.

    Attributes:
      model: the ``VQVAE`` in eval mode (``model.eval()``: the EMA statistics are only read).
      config: the run's :class:`~jaxbasics.tasks.vqvae.config.VQVAEConfig`.
      data_variance: the variance of its training images scaled to [0, 1] (the recon
        error's denominator).
      step: the training step the weights come from.
    """

    model: VQVAE
    config: VQVAEConfig
    data_variance: float
    step: int


def _check_expected(saved: VQVAEConfig, expect: VQVAEConfig | None, where: Path) -> None:
    if expect is None:
        return
    diff = model_differences(saved, expect, ("saved", "expected"))
    if diff:
        raise IncompatibleModelError(
            f"{where} holds a model of other sizes than expected ({diff}). Load it without "
            "`expect` to get its own config, or use a model trained with these sizes."
        )


def load(path: str | Path, step: int | None = None, *, expect: VQVAEConfig | None = None) -> Loaded:
    """Load a trained model from a workdir or an export, like ``model.load_state_dict``.

    Args:
      path: a training workdir (``config.json`` + ``checkpoints/``) or a file written by
        :func:`export`.
      step: for a workdir, the checkpoint to load; None = the newest readable one, as
        training resumes (a warning names the newer ones skipped, and why).
      expect: if given, a config the model must match in every field that shapes the
        parameters (:data:`~jaxbasics.tasks.vqvae.export_file.MODEL_FIELDS`); otherwise
        :class:`IncompatibleModelError` names the differing fields.

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
        weights = read_export(path)
    elif (path / "config.json").is_file() or (path / "checkpoints").is_dir():
        weights = _restore(path, step)
        _check_finite(weights, path)
    else:
        raise FileNotFoundError(
            f"{path} is neither a training workdir (with config.json and checkpoints/) nor a "
            "model file written by `jaxbasics.tasks.vqvae.export` / experiments/export.py."
        )
    _check_expected(weights.config, expect, path)
    model = to_model(weights.config, weights.params, weights.ema)
    return Loaded(model, weights.config, weights.data_variance, weights.step)


def _restore(workdir: Path, step: int | None) -> Weights:
    """The params and EMA statistics of a workdir's checkpoint ``step`` (None: its newest
    readable one), read as training reads them; the optimiser state stays on disk."""
    run = read_run(
        workdir,
        VQVAEConfig,
        lambda config, meta: placed(structure(config).abstract),
        step=step,
        fields=("params", "ema"),
        migratable=VQVAETask.migratable,
    )
    variance = float(run.meta["data_variance"])
    return Weights(run.config, run.state.params, run.state.ema, variance, run.step)


def _check_finite(weights: Weights, workdir: Path) -> None:
    """Refuse weights holding NaN or infinity (:class:`IncompatibleModelError`)."""
    trees = {"params": weights.params, "ema": weights.ema}
    bad = first_non_finite({k: nnx.to_pure_dict(v) for k, v in trees.items()})
    if bad is not None:
        raise IncompatibleModelError(
            f"{workdir}: checkpoint {weights.step}'s {bad} holds NaN or infinity, and so would "
            "every output (the run diverged, or the checkpoint is damaged); load an earlier "
            "step (--step, step=)."
        )


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
    return save_model(path, _restore(Path(workdir), step))
