"""Streaming sources read exactly what the in-memory loaders read, and deliver it in order."""

import jax
import numpy as np
import pytest
from PIL import Image

from cvjax import data
from cvjax.data import stream
from cvjax.errors import UserError
from cvjax.train import loop
from cvjax.train import steps as steps_lib
from tests.conftest import tiny_config
from tests.test_data import CvjaxTinyShapes  # noqa: F401  (registers tfds:cvjax_tiny_shapes)


def test_tfds_source_reads_what_load_reads(tmp_path):
    source = stream.open_source("tfds:cvjax_tiny_shapes", "train", str(tmp_path), 8)
    in_memory = data.load("tfds:cvjax_tiny_shapes", "train", data_dir=str(tmp_path), image_size=8)
    assert len(source) == len(in_memory) == 6 and source.class_names == in_memory.class_names
    images, labels = source.read(np.array([4, 1, 1]))
    np.testing.assert_array_equal(images, in_memory.images[[4, 1, 1]])
    np.testing.assert_array_equal(labels, in_memory.labels[[4, 1, 1]])
    with pytest.raises(UserError, match="set --config.image_size"):
        stream.open_source("tfds:cvjax_tiny_shapes", "train", str(tmp_path), None)


def test_folder_source_and_device_batches_keep_the_order(tmp_path):
    for i in range(10):
        folder = tmp_path / "train" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
    source = stream.open_source(f"folder:{tmp_path}", "train", None, None)
    in_memory = data.load(f"folder:{tmp_path}", "train")
    order = [np.array([3, 1]), np.array([0, 9]), np.array([5, 5])]
    mesh = steps_lib.create_mesh()
    got = list(stream.device_batches(source, order, steps_lib.batch_sharded(mesh)))
    assert len(got) == 3
    for index, (x, y) in zip(order, got, strict=True):
        np.testing.assert_array_equal(jax.device_get(x), in_memory.images[index])
        np.testing.assert_array_equal(jax.device_get(y), in_memory.labels[index])


def test_streamed_tfds_run_matches_the_in_memory_run(tmp_path):
    overrides = {
        "dataset": "tfds:cvjax_tiny_shapes", "data_dir": str(tmp_path), "image_size": 8,
        "batch_size": 2, "num_epochs": 2, "eval_every": "0", "augment.crop_padding": 0,
    }  # fmt: skip
    memory = loop.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "memory"))
    streamed = loop.train_and_evaluate(
        tiny_config(stream=True, **overrides), str(tmp_path / "stream")
    )
    for key, value in memory.items():
        np.testing.assert_allclose(streamed[key], value, rtol=1e-5, err_msg=key)
