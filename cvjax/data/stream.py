"""Streaming input for datasets larger than memory: random-access sources read batch by batch.

A batch is the same function of (indices) as in memory, so a streamed run sees exactly the
examples, order and augmentation of an in-memory run; only where the pixels come from differs.
A background thread reads and transfers `depth` batches ahead of the step that needs them.
"""

import concurrent.futures
import queue
import threading
from collections.abc import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding

from cvjax.data.sources import ArrayDataset, channel_stats, decode_image, list_folder
from cvjax.errors import UserError

_THREADS = 8


class FolderSource:
    """A `<path>/{train,test}/<class>/*.jpg|png` tree, decoded on demand."""

    def __init__(self, path: str, split: str, image_size: int | None):
        files, labels, classes, self.split_dir = list_folder(path, split)
        self.files = files
        self.labels = np.asarray(labels, np.int32)
        self.class_names = tuple(classes)
        self.num_classes = len(classes)
        self.image_size = image_size
        self.image_shape = self.read(np.array([0]))[0].shape[1:]
        self._pool = concurrent.futures.ThreadPoolExecutor(_THREADS)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (N, H, W, C) and int32 labels of `indices`."""
        pool = getattr(self, "_pool", None)
        decode = lambda i: decode_image(self.files[i], self.image_size)  # noqa: E731
        images = list(pool.map(decode, indices)) if pool else [decode(i) for i in indices]
        for i, image in zip(indices, images, strict=True):
            if image is None:
                raise UserError(f"unreadable image {self.files[i]}; remove or replace it")
        images = [im[..., None] if im.ndim == 2 else im for im in images]
        if len({im.shape for im in images}) > 1 or (
            hasattr(self, "image_shape") and images[0].shape != self.image_shape
        ):
            raise UserError(f"images in {self.split_dir} differ in size; set --config.image_size")
        return np.stack(images), self.labels[indices]


def open_source(name: str, split: str, image_size: int | None) -> FolderSource:
    """The streaming source of dataset `name` (`folder:<path>` datasets)."""
    if not name.startswith("folder:"):
        raise UserError(
            f"streaming reads folder:<path> datasets, not {name!r}; set --config.stream=False "
            "to hold it in memory"
        )
    return FolderSource(name[len("folder:") :], split, image_size)


def sample_stats(source: FolderSource, max_images: int = 4096, seed: int = 0):
    """Channel mean and std from up to `max_images` random training images (all if fewer)."""
    n = len(source)
    indices = (
        np.arange(n)
        if n <= max_images
        else np.sort(np.random.default_rng(seed).choice(n, max_images, replace=False))
    )
    images, labels = source.read(indices)
    return channel_stats(ArrayDataset(images, labels, source.num_classes, source.class_names))


def device_batches(
    source: FolderSource,
    index_batches: Iterable[np.ndarray],
    sharding: NamedSharding,
    depth: int = 2,
) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Yields global (images, labels) arrays, sharded by `sharding`, for each index batch.

    Each process reads only its own slice of every global batch (multi-host input).
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    count, index = jax.process_count(), jax.process_index()

    def produce():
        try:
            for batch in index_batches:
                local = np.array_split(batch, count)[index]
                images, labels = source.read(local)
                slots.put(
                    (
                        jax.make_array_from_process_local_data(sharding, images),
                        jax.make_array_from_process_local_data(sharding, labels),
                    )
                )
        except BaseException as error:  # noqa: BLE001 - re-raised in the consuming thread.
            slots.put(error)
            return
        slots.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (item := slots.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
