"""Data: image sources (the embedded ``shapes``, CIFAR-10, any folder of images), transforms,
and Grain pipelines.

Sources are random access (:class:`~jaxbasics.data.base.Source`) and return the same uint8
NHWC images for an index every time; :func:`get_source` picks one by name, and
:func:`train_dataset` / :func:`eval_dataset` batch them for training and evaluation.

>>> src = get_source("shapes", "test", num_examples=4)
>>> read_batch(src, [0, 1])["image"].shape
(2, 32, 32, 3)
"""

from jaxbasics.data.base import (
    ArraySource,
    Batch,
    DatasetNotFoundError,
    Example,
    Source,
    read_batch,
)
from jaxbasics.data.images import ImageReadError, find_images, read_image
from jaxbasics.data.pipeline import eval_dataset, train_dataset
from jaxbasics.data.sources import DATASETS, data_variance, get_source, in_memory
from jaxbasics.data.transforms import cifar_transform, to_model_input, to_pixels

__all__ = [
    "DATASETS",
    "ArraySource",
    "Batch",
    "DatasetNotFoundError",
    "Example",
    "ImageReadError",
    "Source",
    "cifar_transform",
    "data_variance",
    "eval_dataset",
    "find_images",
    "get_source",
    "in_memory",
    "read_batch",
    "read_image",
    "to_model_input",
    "to_pixels",
    "train_dataset",
]
