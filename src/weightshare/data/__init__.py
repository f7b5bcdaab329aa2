"""Dataset readers (MNIST, CIFAR-10, digits, synthetic) and train/validation splits.

``load_dataset(name, root, ...)`` returns an :class:`ArrayDataset` (uint8 images, official
train rows first); ``make_split(...)`` picks the training and validation rows. The
Lightning data module lives in :mod:`weightshare.data.datamodule` (not imported here, so
the readers load without Lightning).
"""

from weightshare.data.dataset import ArrayDataset, DataInfo
from weightshare.data.registry import DATASETS, load_dataset
from weightshare.data.splits import Split, make_split

__all__ = ["DATASETS", "ArrayDataset", "DataInfo", "Split", "load_dataset", "make_split"]
