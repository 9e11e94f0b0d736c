"""Datasets held in memory as uint8 NHWC arrays, plus on-device augmentation (`augment`)."""

from cvjax.data.sources import (
    STANDARD_STATS,
    ArrayDataset,
    channel_stats,
    dataset_names,
    load,
    train_split,
)

__all__ = [
    "STANDARD_STATS",
    "ArrayDataset",
    "channel_stats",
    "dataset_names",
    "load",
    "train_split",
]
