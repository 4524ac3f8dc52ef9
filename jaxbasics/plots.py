"""Matplotlib figures: training curves, image grids, codebook usage.

matplotlib is imported inside each function (Agg backend), so importing this
module is cheap and works without a display. Figures are written, whole or not at all, by
:func:`jaxbasics.train.files.save_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def smooth(values: Sequence[float], window: int = 0) -> np.ndarray:
    """Centred moving average (window ~ len/20 by default) with edge-shrinking windows.

    The notes smooth their curves with ``savgol_filter(values, 201, 7)``; a moving
    average is steadier on short runs and needs no window larger than the run.

    >>> smooth([0.0, 3.0, 0.0, 3.0], window=3).round(2).tolist()
    [1.5, 1.0, 2.0, 1.5]
    """
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return v
    window = window or max(1, v.size // 20)
    kernel = np.ones(window)
    num = np.convolve(v, kernel, mode="same")
    den = np.convolve(np.ones_like(v), kernel, mode="same")
    return num / den


def training_curves(recon_errors: Sequence[float], perplexities: Sequence[float]) -> Figure:
    """The notes' two panels: smoothed NMSE (log scale) and smoothed perplexity per step.

    Returns:
      A matplotlib Figure.

    >>> fig = training_curves([1.0, 0.5, 0.25], [1.0, 2.0, 3.0])
    >>> [ax.get_title() for ax in fig.axes]
    ['Smoothed NMSE', 'Smoothed average codebook usage (perplexity)']
    """
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    steps = np.arange(1, len(recon_errors) + 1)
    ax1.plot(steps, recon_errors, alpha=0.25, color="C0")
    ax1.plot(steps, smooth(recon_errors), color="C0")
    ax1.set_yscale("log")
    ax1.set_title("Smoothed NMSE")
    ax1.set_xlabel("iteration")
    ax2.plot(steps, perplexities, alpha=0.25, color="C1")
    ax2.plot(steps, smooth(perplexities), color="C1")
    ax2.set_title("Smoothed average codebook usage (perplexity)")
    ax2.set_xlabel("iteration")
    fig.tight_layout()
    return fig


def training_curve(values: Sequence[float], title: str) -> Figure:
    """One smoothed per-step curve (a prior's training bits per code).

    >>> training_curve([3.0, 2.0, 1.5], "bits per code").axes[0].get_title()
    'bits per code'
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = np.arange(1, len(values) + 1)
    ax.plot(steps, values, alpha=0.25, color="C0")
    ax.plot(steps, smooth(values), color="C0")
    ax.set_title(title)
    ax.set_xlabel("iteration")
    fig.tight_layout()
    return fig


def image_grid(rows: Sequence[np.ndarray], titles: Sequence[str] = ()) -> Figure:
    """One row of images per entry of ``rows`` (each (N, H, W, 3) in [-0.5, 0.5]).

    Returns:
      A matplotlib Figure.

    >>> fig = image_grid([np.zeros((4, 8, 8, 3)), np.ones((4, 8, 8, 3))], ["a", "b"])
    >>> len(fig.axes)
    2
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.6 * len(rows)), squeeze=False)
    for i, imgs in enumerate(rows):
        imgs = np.clip(np.asarray(imgs, np.float32) + 0.5, 0.0, 1.0)
        n, h, w, c = imgs.shape
        pad = np.ones((n, h + 2, w + 2, c), np.float32)
        pad[:, 1:-1, 1:-1] = imgs
        strip = pad.transpose(1, 0, 2, 3).reshape(h + 2, n * (w + 2), c)
        ax = axes[i, 0]
        ax.imshow(strip, interpolation="nearest")
        ax.set_axis_off()
        if i < len(titles):
            ax.set_title(titles[i])
    fig.tight_layout()
    return fig


def codebook_figure(codebook: np.ndarray, counts: np.ndarray) -> Figure:
    """Codebook health: usage sorted by frequency, and a PCA map of the codes by usage.

    Left: each code's share of the assignments, most used first (log scale; unused
    codes are counted in the title). Right: the codes projected on their first two
    principal components, coloured by log10(1 + count); dead codes are grey crosses.
    A healthy codebook has a flat-ish curve and used codes spread over the data.

    Args:
      codebook: (K, D) code vectors.
      counts: (K,) how often each code was chosen.

    Returns:
      A matplotlib Figure.

    >>> fig = codebook_figure(np.eye(4, 3), np.array([5, 0, 2, 1]))
    >>> [ax.get_title() for ax in fig.axes[:2]]
    ['Code usage, sorted (3/4 used)', 'Codebook PCA, coloured by usage']
    """
    plt = _pyplot()
    codebook = np.asarray(codebook, np.float64)
    counts = np.asarray(counts, np.float64)
    k = counts.shape[0]
    used = counts > 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    share = np.sort(counts)[::-1] / max(counts.sum(), 1.0)
    ax1.bar(np.arange(k), share, width=1.0, color="C0")
    ax1.axhline(1.0 / k, color="C3", linestyle="--", label="uniform 1/K")
    if used.any():
        ax1.set_yscale("log")
    ax1.set_title(f"Code usage, sorted ({int(used.sum())}/{k} used)")
    ax1.set_xlabel("code rank")
    ax1.set_ylabel("share of assignments")
    ax1.legend()
    centred = codebook - codebook.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    ax2.scatter(xy[~used, 0], xy[~used, 1], c="0.6", marker="x", label="unused")
    sc = ax2.scatter(xy[used, 0], xy[used, 1], c=np.log10(1 + counts[used]), cmap="viridis")
    fig.colorbar(sc, ax=ax2, label="log10(1 + count)")
    ax2.set_title("Codebook PCA, coloured by usage")
    ax2.set_xlabel("PC 1")
    ax2.set_ylabel("PC 2")
    ax2.legend()
    fig.tight_layout()
    return fig
