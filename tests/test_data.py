"""Tests for cvjax.data.sources: every source format, on real and synthetic files, no network."""

import gzip
import io
import os
import pickle
import tarfile
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from cvjax import data
from cvjax.data import sources
from cvjax.errors import UserError

# The official label order, written independently of cvjax.data.sources.
CIFAR_CLASSES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())


def user_error(fn, *args, **kwargs) -> str:
    """The one-line message of the UserError that `fn(*args, **kwargs)` raises."""
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- digits ------------------------------------------------------------------------------------


def test_digits_split_is_fixed_and_stratified():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert train.images.shape == (1437, 8, 8, 1) and test.images.shape == (360, 8, 8, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    assert train.images.max() == 255 and train.num_classes == 10 and len(train.class_names) == 10
    assert np.all(np.bincount(test.labels) >= 35)
    again = data.load("digits", "train")
    np.testing.assert_array_equal(train.images, again.images)
    np.testing.assert_array_equal(train.labels, again.labels)
    assert set(data.dataset_names()) >= {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100"}


def test_channel_stats_and_resize():
    train = data.load("digits", "train")
    mean, std = data.channel_stats(train)
    pixels = train.images.astype(np.float64)
    np.testing.assert_allclose(mean, [pixels.mean()])
    np.testing.assert_allclose(std, [pixels.std()])
    big = data.load("digits", "test", image_size=16)
    assert big.images.shape == (360, 16, 16, 1) and big.images.dtype == np.uint8
    constant = data.ArrayDataset(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int32), 1, ("a",))
    np.testing.assert_array_equal(data.channel_stats(constant)[1], [1, 1, 1])


def test_bad_names_and_paths(tmp_path):
    assert "did you mean cifar10" in user_error(data.load, "cifar-10", "train")
    assert "'train' or 'test'" in user_error(data.load, "digits", "validation")
    assert "--config.data_dir" in user_error(data.load, "mnist", "train", str(tmp_path / "nope"))
    assert "image_size" in user_error(data.load, "digits", "train", image_size=0)


# --- MNIST (IDX) -------------------------------------------------------------------------------


def test_mnist_from_shared_files(shared_datasets):
    train = data.load("mnist", "train", data_dir=shared_datasets)
    test = data.load("mnist", "test", data_dir=shared_datasets)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert train.num_classes == 10 and train.images.max() == 255


def write_idx(path, array, compress=True):
    header = (0x800 + array.ndim).to_bytes(4, "big")
    header += b"".join(n.to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def make_idx_dir(root, n=5, compress=True):
    root.mkdir(parents=True)
    images = np.arange(n * 28 * 28).reshape(n, 28, 28) % 251
    labels = np.arange(n) % 10
    suffix = ".gz" if compress else ""
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_idx_synthetic(tmp_path, compress):
    images, labels = make_idx_dir(tmp_path / "fashion_mnist", compress=compress)
    ds = data.load("fashion_mnist", "test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(ds.images[..., 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.class_names[0] == "T-shirt/top"


def test_idx_corrupt_and_incomplete(tmp_path):
    make_idx_dir(tmp_path / "mnist")
    bad = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-20])
    assert str(bad) in user_error(data.load, "mnist", "train", str(tmp_path))
    write_idx(bad, np.zeros((4, 28, 28)))  # Valid file, but 4 images for 5 labels.
    assert "different counts" in user_error(data.load, "mnist", "train", str(tmp_path))
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(8)))  # A labels magic number.
    assert "not an IDX file with 3 dimensions" in user_error(
        data.load, "mnist", "train", str(tmp_path)
    )
    bad.unlink()
    message = user_error(data.load, "mnist", "train", str(tmp_path))
    assert "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz there" in message


def test_tfds_prepared_folder_falls_through(tmp_path, monkeypatch):
    (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
    monkeypatch.setattr(sources, "_load_tfds", lambda name, *args: f"tfds {name}")
    assert data.load("mnist", "train", data_dir=str(tmp_path)) == "tfds mnist"
    assert data.load("cifar10", "train", data_dir=str(tmp_path)) == "tfds cifar10"


# --- CIFAR (binary and python) -----------------------------------------------------------------


def cifar_pixels(n, offset):
    """n images whose R plane is a ramp, G plane is offset+i and B plane is 200."""
    ramp = np.arange(1024) % 256
    planes = [
        np.stack([ramp] * n),
        (offset + np.arange(n))[:, None] * np.ones(1024, int),
        np.full((n, 1024), 200),
    ]
    return np.concatenate(planes, axis=1).astype(np.uint8)


def check_cifar(ds, n, offset, labels):
    assert ds.images.shape == (n, 32, 32, 3) and ds.images.dtype == np.uint8
    ramp = (np.arange(1024) % 256).reshape(32, 32)
    np.testing.assert_array_equal(ds.images[1, :, :, 0], ramp)
    np.testing.assert_array_equal(ds.images[:, 5, 7, 1], offset + np.arange(n))
    assert np.all(ds.images[..., 2] == 200)
    np.testing.assert_array_equal(ds.labels, labels)


def write_tar(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cifar10_binary_folder_and_archive(tmp_path):
    files = {}
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        labels = (np.arange(3) + i) % 10
        records = np.concatenate([labels[:, None], cifar_pixels(3, 10 * i)], 1)
        files[name] = records.astype(np.uint8).tobytes()
    files["batches.meta.txt"] = "\n".join(CIFAR_CLASSES).encode() + b"\n\n"
    folder = tmp_path / "a" / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    test = data.load("cifar10", "test", data_dir=str(tmp_path / "a"))
    check_cifar(test, 3, 50, [5, 6, 7])
    assert test.class_names == CIFAR_CLASSES and test.num_classes == 10
    (tmp_path / "b" / "cifar10").mkdir(parents=True)
    write_tar(
        tmp_path / "b" / "cifar10" / "cifar-10-binary.tar.gz",
        {f"cifar-10-batches-bin/{k}": v for k, v in files.items()},
    )
    train = data.load("cifar10", "train", data_dir=str(tmp_path / "b"))
    assert train.images.shape == (15, 32, 32, 3)
    np.testing.assert_array_equal(train.images[3:6, 5, 7, 1], [10, 11, 12])
    (folder / "test_batch.bin").write_bytes(files["test_batch.bin"][:-1])
    assert "truncated" in user_error(data.load, "cifar10", "test", str(tmp_path / "a"))


def test_cifar10_python_archive(tmp_path):
    def batch(i):
        return pickle.dumps({b"data": cifar_pixels(4, 20 * i), b"labels": [i, 1, 2, 3]})

    files = {f"cifar-10-batches-py/data_batch_{k}": batch(k) for k in range(1, 6)}
    files["cifar-10-batches-py/test_batch"] = batch(9)
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [c.encode() for c in CIFAR_CLASSES]}
    )
    (tmp_path / "cifar10").mkdir()
    write_tar(tmp_path / "cifar10" / "cifar-10-python.tar.gz", files)
    check_cifar(data.load("cifar10", "test", data_dir=str(tmp_path)), 4, 180, [9, 1, 2, 3])
    train = data.load("cifar10", "train", data_dir=str(tmp_path))
    assert len(train) == 20 and train.labels[::4].tolist() == [1, 2, 3, 4, 5]


def test_cifar100_binary_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-binary"
    folder.mkdir(parents=True)
    for name, n in (("train.bin", 5), ("test.bin", 2)):
        coarse, fine = np.arange(n) + 1, np.arange(n) + 90
        records = np.concatenate([coarse[:, None], fine[:, None], cifar_pixels(n, 0)], 1)
        (folder / name).write_bytes(records.astype(np.uint8).tobytes())
    ds = data.load("cifar100", "train", data_dir=str(tmp_path))
    check_cifar(ds, 5, 0, [90, 91, 92, 93, 94])
    assert ds.num_classes == 100 and ds.class_names[90] == "train"
    assert len(set(sources._CIFAR100_NAMES)) == 100


def test_cifar_incomplete_folder(tmp_path):
    (tmp_path / "cifar100").mkdir()
    message = user_error(data.load, "cifar100", "test", str(tmp_path))
    assert "put cifar-100-binary.tar.gz" in message and "cifar-100-python.tar.gz" in message


# --- image folders -----------------------------------------------------------------------------


def save(path, array, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def make_tree(root, size=(6, 6), mode="RGB"):
    shape = (*size, 3) if mode == "RGB" else size
    for split, n in (("train", 4), ("test", 2)):
        for c, cls in enumerate(("cat", "ant")):
            for i in range(n):
                ext, fmt = ("PNG", "PNG") if i % 2 else ("jpeg", "JPEG")
                save(root / split / cls / f"{i}.{ext}", np.full(shape, 40 * c + 10, np.uint8), fmt)


def test_folder_tree(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG garbage")
    ds = data.load(f"folder:{tmp_path}", "train", max_unreadable=0.2)
    assert ds.class_names == ("ant", "cat") and ds.images.shape == (8, 6, 6, 3)
    assert ds.labels.tolist() == [0] * 4 + [1] * 4
    assert abs(int(ds.images[0, 0, 0, 0]) - 50) <= 2 and abs(int(ds.images[-1, 0, 0, 1]) - 10) <= 2
    message = user_error(data.load, f"folder:{tmp_path}", "train")
    assert "1 of 9 images" in message and "broken.png" in message
    resized = data.load(f"folder:{tmp_path}", "test", image_size=4)
    assert resized.images.shape == (4, 4, 4, 3)


def test_folder_grayscale_and_errors(tmp_path):
    make_tree(tmp_path / "gray", mode="L")
    assert data.load(f"folder:{tmp_path / 'gray'}", "test").images.shape == (4, 6, 6, 1)
    make_tree(tmp_path / "mixed")
    save(tmp_path / "mixed" / "test" / "ant" / "big.png", np.zeros((9, 7, 3), np.uint8), "PNG")
    assert "--config.image_size" in user_error(data.load, f"folder:{tmp_path / 'mixed'}", "test")
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    message = user_error(data.load, f"folder:{tmp_path / 'only_train'}", "test")
    assert f"missing split folder {tmp_path / 'only_train' / 'test'}" in message
    assert "does not exist" in user_error(data.load, f"folder:{tmp_path / 'none'}", "train")
    assert "no .png/.jpg/.jpeg images" in user_error(
        data.load, f"folder:{tmp_path / 'only_train'}", "train"
    )


def test_folder_from_shared_cifar10_jpegs(shared_datasets, tmp_path):
    archive = os.path.join(shared_datasets, "cifar10_jpeg_q75", "CIFAR-10-images-jpeg.tar.gz")
    counts = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and parts[0] == "test" and counts.get(parts[1], 0) < 20:
                counts[parts[1]] = counts.get(parts[1], 0) + 1
                tar.extract(member, tmp_path, filter="data")
    ds = data.load(f"folder:{tmp_path}", "test")
    assert ds.class_names == CIFAR_CLASSES and ds.images.shape == (200, 32, 32, 3)
    assert np.bincount(ds.labels).tolist() == [20] * 10
    first = sorted((tmp_path / "test" / "airplane").iterdir())[0]
    np.testing.assert_array_equal(ds.images[0], np.asarray(Image.open(first).convert("RGB")))


# --- TFDS, on a tiny dataset built locally ---------------------------------------------------


class CvjaxTinyShapes(tfds.core.GeneratorBasedBuilder):
    """Six train and three validation images of two sizes; no test split, like imagenet2012."""

    VERSION = tfds.core.Version("1.0.0")
    # No checksums file: TFDS would look for one beside this module through importlib_resources,
    # which a builder defined inside a test package cannot provide.
    code_path = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(6), "validation": self._generate_examples(3)}

    def _generate_examples(self, n):
        for i in range(n):
            image = np.zeros((8 + 4 * (i % 2), 8, 3), np.uint8)
            image[..., i % 3] = 255
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")  # Encoded bytes: no TensorFlow.
            yield i, {"image": buffer.getvalue(), "label": i % 3}


def test_tfds_local_builder(tmp_path):
    ds = data.load("tfds:cvjax_tiny_shapes", "test", data_dir=str(tmp_path), image_size=8)
    assert ds.images.shape == (3, 8, 8, 3) and ds.class_names == ("red", "green", "blue")
    assert sorted(ds.labels.tolist()) == [0, 1, 2]
    for image, label in zip(ds.images, ds.labels, strict=True):
        assert image[..., label].min() == 255 and image.sum() == 255 * 64
    train = data.load("tfds:cvjax_tiny_shapes", "train", data_dir=str(tmp_path), image_size=8)
    assert len(train) == 6 and train.num_classes == 3
    message = user_error(data.load, "tfds:cvjax_tiny_shapes", "train", str(tmp_path))
    assert "differ in size" in message
    # A split too large to hold in memory is refused before any image is read.
    with mock.patch.object(sources, "MAX_IN_MEMORY_GB", 1e-6):
        message = user_error(data.load, "tfds:cvjax_tiny_shapes", "train", str(tmp_path), 8)
    assert "over the 1e-06 GB limit of in-memory datasets" in message


def test_tfds_errors_without_network(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    message = user_error(data.load, "cifar100", "train", str(tmp_path))
    assert "ConnectionError: no route to host" in message
    assert f"put the original files under {tmp_path}/cifar100/" in message
    message = user_error(data.load, "tfds:cvjax_tiny_shapes", "train", str(tmp_path))
    assert "see the TFDS catalog for manual downloads" in message
    assert "did you mean" in user_error(data.load, "tfds:cvjax_tiny_shape", "train", str(tmp_path))


def test_train_split_holds_out_a_fixed_disjoint_validation_set():
    train = data.load("digits", "train")
    fit, val = data.train_split(train, holdout=300, examples=500, seed=3)
    assert len(fit) == 500 and len(val) == 300
    # Rows are whole examples of the source; validation and training never share one.
    rows = {r.tobytes(): i for i, r in enumerate(train.images.reshape(len(train), -1))}
    fit_rows = [rows[r.tobytes()] for r in fit.images.reshape(len(fit), -1)]
    val_rows = [rows[r.tobytes()] for r in val.images.reshape(len(val), -1)]
    assert not set(fit_rows) & set(val_rows)
    assert np.array_equal(fit.labels, train.labels[fit_rows])
    again, val_again = data.train_split(train, holdout=300, examples=500, seed=3)
    assert np.array_equal(again.images, fit.images) and np.array_equal(val_again.labels, val.labels)
    other, _ = data.train_split(train, holdout=300, examples=500, seed=4)
    assert not np.array_equal(other.images, fit.images)
    everything, none = data.train_split(train, examples=0, holdout=0)
    assert none is None and len(everything) == len(train)
    with pytest.raises(UserError, match="holdout"):
        data.train_split(train, holdout=len(train))
