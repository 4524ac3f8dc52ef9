"""Matplotlib figures: training curves, image grids.

matplotlib is imported inside each function (Agg backend), so importing this
module is cheap and works without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


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


def training_curves(recon_errors: Sequence[float], perplexities: Sequence[float]):
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


def image_grid(rows: Sequence[np.ndarray], titles: Sequence[str] = ()):
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


def save(fig, path: str | Path) -> Path:
    """Save ``fig`` (format from the suffix) atomically and close it."""
    plt = _pyplot()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
