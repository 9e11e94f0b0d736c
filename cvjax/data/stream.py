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

from cvjax.data.sources import (
    ArrayDataset,
    channel_stats,
    decode_image,
    list_folder,
    open_tfds,
    read_tfds,
)
from cvjax.errors import UserError

_THREADS = 8


def _stack(images: list[np.ndarray], shape: tuple | None, where: str) -> np.ndarray:
    images = [im[..., None] if im.ndim == 2 else im for im in images]
    if len({im.shape for im in images}) > 1 or (shape is not None and images[0].shape != shape):
        raise UserError(f"images in {where} differ in size; set --config.image_size")
    return np.stack(images)


class FolderSource:
    """A `<path>/{train,test}/<class>/*.jpg|png` tree, decoded on demand."""

    def __init__(self, path: str, split: str, image_size: int | None):
        files, labels, classes, self.split_dir = list_folder(path, split)
        self.files = files
        self.labels = np.asarray(labels, np.int32)
        self.class_names = tuple(classes)
        self.num_classes = len(classes)
        self.image_size = image_size
        self.image_shape = None
        self._pool = concurrent.futures.ThreadPoolExecutor(_THREADS)
        self.image_shape = self.read(np.array([0]))[0].shape[1:]

    def __len__(self) -> int:
        return len(self.files)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (N, H, W, C) and int32 labels of `indices`."""
        images = list(
            self._pool.map(lambda i: decode_image(self.files[i], self.image_size), indices)
        )
        for i, image in zip(indices, images, strict=True):
            if image is None:
                raise UserError(f"unreadable image {self.files[i]}; remove or replace it")
        return _stack(images, self.image_shape, self.split_dir), self.labels[indices]


class TfdsSource:
    """A prepared TFDS split (array_record), read row by row without TensorFlow."""

    def __init__(self, name: str, split: str, data_dir: str | None, image_size: int | None):
        self.opened = open_tfds(name, split, data_dir)
        shape = self.opened.image_shape
        if image_size is None and None in shape:
            raise UserError(f"TFDS {name!r} images differ in size; set --config.image_size")
        self.image_size = image_size
        self.image_shape = (image_size, image_size, shape[-1]) if image_size else shape
        self.class_names = self.opened.class_names
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self.opened.source)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images, labels = read_tfds(self.opened, indices, self.image_size)
        where = f"TFDS {self.opened.name!r}"
        return _stack(images, self.image_shape, where), np.asarray(labels, np.int32)


def open_source(
    name: str, split: str, data_dir: str | None, image_size: int | None
) -> FolderSource | TfdsSource:
    """The streaming source of dataset `name`: a `folder:<path>` tree or a `tfds:<name>` split."""
    if name.startswith("folder:"):
        return FolderSource(name[len("folder:") :], split, image_size)
    if name.startswith("tfds:"):
        return TfdsSource(name[len("tfds:") :], split, data_dir, image_size)
    raise UserError(
        f"streaming reads folder:<path> and tfds:<name> datasets, not {name!r}; set "
        "--config.stream=False to hold it in memory"
    )


def sample_stats(source: FolderSource | TfdsSource, max_images: int = 4096, seed: int = 0):
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
