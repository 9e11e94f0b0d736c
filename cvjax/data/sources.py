"""In-memory image-classification datasets: uint8 NHWC images and int32 labels.

Original files under `<data_dir>/<name>/` (MNIST IDX, CIFAR binary or python) are read directly,
with no network and no TensorFlow; otherwise TFDS prepares and serves the data (`tfds:<name>` for
any TFDS dataset); `folder:<path>` reads a `<path>/{train,test}/<class>/*.png|jpg` tree.
"""

import concurrent.futures
import dataclasses
import functools
import gzip
import os
import pickle
import re
import tarfile
import zlib
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging
from PIL import Image

from cvjax.errors import UserError, unknown_name

SPLITS = ("train", "test")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_PIL_FORMATS = ("PNG", "JPEG")  # Skips probing every other PIL plugin per file.
_THREADS = min(32, 2 * (os.cpu_count() or 1))
# Datasets are held in host and device memory; past this size a split is refused with a clear
# message instead of exhausting memory part-way through reading it.
MAX_IN_MEMORY_GB = float(os.environ.get("CVJAX_MAX_IN_MEMORY_GB", "16"))
_CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CIFAR100_NAMES = tuple(
    """
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
    crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)
_MNIST_NAMES = tuple(str(i) for i in range(10))
_FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Per-channel (mean, std) in 0..255 units from the literature; `channel_stats` computes exact ones.
STANDARD_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((33.32,), (78.57,)),
    "fashion_mnist": ((72.94,), (90.02,)),
    "cifar10": ((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    "cifar100": ((129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
    "imagenet2012": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """One split held in memory: `images` (N, H, W, C) uint8 and `labels` (N,) int32."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def dataset_names() -> list[str]:
    """Names `load` knows besides the `tfds:<name>` and `folder:<path>` prefixes."""
    return sorted(["digits", *_IDX_NAMES, *_CIFAR])


def load(
    name: str,
    split: str,
    data_dir: str | None = None,
    image_size: int | None = None,
    *,
    max_unreadable: float = 0.01,
) -> ArrayDataset:
    """Loads `split` ("train" or "test") of dataset `name` into memory.

    `digits` is scikit-learn's 8x8 digits with a fixed stratified 80/20 split
    (`train_test_split(test_size=0.2, stratify=y, random_state=0)`: 1,437 train / 360 test),
    pixels 0..16 scaled to 0..255. For `folder:<path>`, up to `max_unreadable` (a fraction) of the
    images may be unreadable; they are skipped and counted. When `image_size` is set, images of
    another size are resized (bilinear, antialiased) to `image_size` x `image_size`.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use 'train' or 'test'")
    if image_size is not None and image_size <= 0:
        raise UserError(f"image_size={image_size} must be positive; fix --config.image_size")
    if data_dir and "://" not in data_dir and not os.path.isdir(data_dir):
        raise UserError(f"data_dir {data_dir!r} does not exist; fix --config.data_dir")
    if name.startswith("folder:"):
        return _load_folder(name[len("folder:") :], split, image_size, max_unreadable)
    if name.startswith("tfds:"):
        return _load_tfds(name[len("tfds:") :], split, data_dir, image_size)
    if name == "digits":
        ds = _load_digits(split)
    elif name in _IDX_NAMES or name in _CIFAR:
        ds = _load_original(name, split, data_dir)
        if ds is None:
            return _load_tfds(name, split, data_dir, image_size)
    else:
        raise unknown_name("dataset", name, dataset_names() + ["tfds:<name>", "folder:<path>"])
    return _resized(ds, image_size)


def train_split(
    ds: ArrayDataset, holdout: int = 0, examples: int = 0, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset | None]:
    """Splits a training set into (train, validation) by a seeded permutation.

    The validation set is `holdout` examples (None when 0), so that model selection (NAS,
    tuning) never looks at the test split; `examples` > 0 keeps only that many of the remaining
    training examples (a proxy subset). The same seed gives the same split on every run.
    """
    if holdout < 0 or examples < 0 or holdout + max(examples, 1) > len(ds):
        raise UserError(
            f"holdout={holdout} and train_examples={examples} do not fit in {len(ds)} training "
            "examples; lower --config.holdout or --config.train_examples"
        )
    order = np.random.default_rng(seed).permutation(len(ds))
    val_idx, train_idx = order[:holdout], order[holdout:]
    if examples:
        train_idx = train_idx[:examples]

    def take(idx: np.ndarray) -> ArrayDataset:
        idx = np.sort(idx)  # Keep the source order; the training loop shuffles anyway.
        return dataclasses.replace(ds, images=ds.images[idx], labels=ds.labels[idx])

    return take(train_idx), (take(val_idx) if holdout else None)


def long_tailed(ds: ArrayDataset, ratio: float, seed: int = 0) -> ArrayDataset:
    """A long-tailed subset: n_k = floor(n_max * ratio^(-k / (K - 1))) examples of class k.

    The exponential profile of CIFAR-10/100-LT (Cui et al. 2019, Sec. 6; Cao et al. 2019,
    Sec. 4.1): class 0 keeps n_max, class K-1 n_max / ratio. n_max is the smallest class count
    (on a balanced set, Cao et al.'s N / K), so every class can supply its quota; each class
    keeps at least one example. A class keeps its first n_k examples in a seeded order, and the
    subset keeps the source order. `ratio` 0 returns `ds` unchanged; meant for the training split
    only (the test split stays balanced).
    """
    if not ratio:
        return ds
    if not isinstance(ds, ArrayDataset):
        raise UserError("imbalance_ratio needs in-memory data; set --config.stream=False")
    keep = long_tailed_indices(ds.labels, ds.num_classes, ratio, seed)
    return dataclasses.replace(ds, images=ds.images[keep], labels=ds.labels[keep])


def long_tailed_indices(
    labels: np.ndarray, num_classes: int, ratio: float, seed: int = 0
) -> np.ndarray:
    """The sorted indices of the examples `long_tailed` keeps (the others were never trained on:
    a source of held-out training images)."""
    if ratio < 1:
        raise UserError(f"imbalance_ratio={ratio} must be >= 1 (0 for off); fix it")
    k = num_classes
    counts = np.bincount(labels, minlength=k)
    n_max = counts[counts > 0].min() if counts.any() else 0
    quota = [max(1, int(n_max * ratio ** (-c / max(k - 1, 1)))) for c in range(k)]
    order = np.random.default_rng(seed).permutation(len(labels))
    keep = [order[labels[order] == c][: quota[c]] for c in range(k)]
    return np.sort(np.concatenate([*keep, np.zeros(0, np.int64)]))


def channel_stats(ds: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of `ds.images` in 0..255 units (population std)."""
    if len(ds) == 0:
        raise UserError("the training split is empty; check the dataset files")
    # Exact 256-bin histograms per channel: faster than float64 sums over the whole array.
    values = np.arange(256, dtype=np.float64)
    hists = [
        np.bincount(ds.images[..., c].ravel(), minlength=256).astype(np.float64)
        for c in range(ds.images.shape[-1])
    ]
    mean = np.array([h @ values / h.sum() for h in hists])
    std = np.sqrt(
        np.array([h @ np.square(values - m) / h.sum() for h, m in zip(hists, mean, strict=True)])
    )
    # A constant channel would divide by zero when normalizing.
    return mean, np.where(std > 0, std, 1.0)


def _dataset(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], source: str
) -> ArrayDataset:
    labels = np.asarray(labels, np.int32)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise UserError(f"{source} has labels outside 0..{len(class_names) - 1}; re-download it")
    return ArrayDataset(
        np.ascontiguousarray(images, np.uint8), labels, len(class_names), tuple(class_names)
    )


def _parallel_map(fn: Callable, items: Sequence, threads: int = _THREADS) -> list:
    chunks = [items[i : i + 256] for i in range(0, len(items), 256)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return [out for chunk in pool.map(lambda c: [fn(x) for x in c], chunks) for out in chunk]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    mono = image.ndim == 3 and image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if mono else image)
    out = np.asarray(pil.resize((size, size), Image.BILINEAR))
    return out[..., None] if mono else out


def _resized(ds: ArrayDataset, size: int | None) -> ArrayDataset:
    if size is None or ds.images.shape[1:3] == (size, size):
        return ds
    images = np.stack(_parallel_map(lambda im: _resize(im, size), list(ds.images)))
    return dataclasses.replace(ds, images=images)


# --- scikit-learn digits ---------------------------------------------------------------------


def _load_digits(split: str) -> ArrayDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    if split == "train":
        return _dataset(x_train, y_train, _MNIST_NAMES, "digits")
    return _dataset(x_test, y_test, _MNIST_NAMES, "digits")


# --- original files: MNIST IDX, CIFAR binary and python ----------------------------------------

_IDX_NAMES = {"mnist": _MNIST_NAMES, "fashion_mnist": _FASHION_NAMES}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass(frozen=True)
class _CifarFormat:
    archive: str  # the official download, e.g. cifar-10-binary.tar.gz
    folder: str  # the folder it extracts to
    files: dict[str, tuple[str, ...]]  # split -> batch files
    meta: str  # class-name file
    binary: bool


_CIFAR = {
    "cifar10": (
        _CifarFormat(
            "cifar-10-binary.tar.gz",
            "cifar-10-batches-bin",
            {
                "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                "test": ("test_batch.bin",),
            },
            "batches.meta.txt",
            True,
        ),
        _CifarFormat(
            "cifar-10-python.tar.gz",
            "cifar-10-batches-py",
            {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
            "batches.meta",
            False,
        ),
    ),
    "cifar100": (
        _CifarFormat(
            "cifar-100-binary.tar.gz",
            "cifar-100-binary",
            {"train": ("train.bin",), "test": ("test.bin",)},
            "fine_label_names.txt",
            True,
        ),
        _CifarFormat(
            "cifar-100-python.tar.gz",
            "cifar-100-python",
            {"train": ("train",), "test": ("test",)},
            "meta",
            False,
        ),
    ),
}


def _load_original(name: str, split: str, data_dir: str | None) -> ArrayDataset | None:
    """The split from original files in `<data_dir>/<name>/`, or None to fall back to TFDS."""
    if not data_dir:
        return None
    root = os.path.join(data_dir, name)
    if not os.path.isdir(root):
        return None
    if name in _IDX_NAMES:
        found = [_find_idx(root, base) for base in _IDX_FILES[split]]
        if all(found):
            images, labels = _read_idx(found[0], 3), _read_idx(found[1], 1)
            if len(images) != len(labels):
                raise UserError(f"{found[0]} and {found[1]} hold different counts; re-download")
            return _dataset(images[..., None], labels, _IDX_NAMES[name], found[1])
        expected = ", ".join(f"{b}.gz" for b in _IDX_FILES[split])
    else:
        for fmt in _CIFAR[name]:
            blobs = _read_bundle(root, fmt, split)
            if blobs is not None:
                return _decode_cifar(name, fmt, split, blobs, root)
        expected = " or ".join(f"{f.archive} (or extracted {f.folder}/)" for f in _CIFAR[name])
    if any(re.fullmatch(r"\d+\.\d+\.\d+", entry) for entry in os.listdir(root)):
        return None  # A TFDS-prepared folder, not original files.
    raise UserError(f"{root} lacks the original {name} files; put {expected} there")


def _find_idx(root: str, base: str) -> str | None:
    dotted = base.replace("-idx", ".idx")  # Some mirrors name them train-images.idx3-ubyte.
    for candidate in (base + ".gz", base, dotted + ".gz", dotted):
        if os.path.isfile(os.path.join(root, candidate)):
            return os.path.join(root, candidate)
    return None


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """An IDX file of uint8 values with `ndim` dimensions, validated against its header."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path} ({e}); re-download it") from None
    header = 4 + 4 * ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != 0x800 + ndim or len(data) < header:
        raise UserError(f"{path} is not an IDX file with {ndim} dimensions; re-download it")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise UserError(
            f"{path} is truncated or corrupt (size does not match its header "
            f"{shape}); re-download it"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _read_bundle(root: str, fmt: _CifarFormat, split: str) -> dict[str, bytes] | None:
    """File name -> bytes for the split's batches (+ meta), from a folder or the archive."""
    wanted = fmt.files[split]
    for folder in (os.path.join(root, fmt.folder), root):
        if all(os.path.isfile(os.path.join(folder, f)) for f in wanted):
            blobs = {}
            for f in (*wanted, fmt.meta):
                if os.path.isfile(os.path.join(folder, f)):
                    with open(os.path.join(folder, f), "rb") as fh:
                        blobs[f] = fh.read()
            return blobs
    archive = os.path.join(root, fmt.archive)
    if not os.path.isfile(archive):
        return None
    blobs = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if member.isfile() and (base in wanted or base == fmt.meta):
                    blobs[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {archive} ({e}); re-download it") from None
    missing = [f for f in wanted if f not in blobs]
    if missing:
        raise UserError(f"{archive} lacks {', '.join(missing)}; re-download it")
    return blobs


def _decode_cifar(
    name: str, fmt: _CifarFormat, split: str, blobs: dict[str, bytes], root: str
) -> ArrayDataset:
    fine = name == "cifar100"
    images, labels = [], []
    for f in fmt.files[split]:
        source = os.path.join(root, f)
        if fmt.binary:
            # Record: label byte (CIFAR-100: coarse, fine) then 1024 R, 1024 G, 1024 B bytes.
            record = 3072 + (2 if fine else 1)
            if not blobs[f] or len(blobs[f]) % record:
                raise UserError(
                    f"{source} is truncated or corrupt (size {len(blobs[f])} is not "
                    f"a multiple of {record}); re-download it"
                )
            rows = np.frombuffer(blobs[f], np.uint8).reshape(-1, record)
            labels.append(rows[:, record - 3073])
            pixels = rows[:, record - 3072 :]
        else:
            try:
                batch = pickle.loads(blobs[f], encoding="bytes")
                pixels = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3072)
                labels.append(np.asarray(batch[b"fine_labels" if fine else b"labels"]))
            except Exception as e:  # Unpickling raises many types on a corrupt file.
                raise UserError(
                    f"{source} is not a CIFAR python batch ({e!r}); re-download it"
                ) from None
        images.append(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    names = _CIFAR100_NAMES if fine else _CIFAR10_NAMES
    meta = blobs.get(fmt.meta)
    if meta and fmt.binary:
        names = tuple(line.strip() for line in meta.decode().splitlines() if line.strip())
    elif meta:
        try:
            key = b"fine_label_names" if fine else b"label_names"
            names = tuple(n.decode() for n in pickle.loads(meta, encoding="bytes")[key])
        except Exception:  # A broken meta file only costs the class names.
            logging.warning("cannot read class names from %s; using the standard ones", fmt.meta)
    return _dataset(np.concatenate(images), np.concatenate(labels), names, root)


# --- image folders -----------------------------------------------------------------------------


def list_folder(path: str, split: str) -> tuple[list[str], list[int], list[str], str]:
    """Files, labels, class names and split folder of a `<path>/{train,test}/<class>/` tree."""
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise UserError(f"image folder {path!r} does not exist; fix the folder:<path> dataset")
    aliases = ("test", "val", "validation") if split == "test" else ("train",)
    split_dir = next(
        (os.path.join(path, a) for a in aliases if os.path.isdir(os.path.join(path, a))), None
    )
    if split_dir is None:
        raise UserError(
            f"missing split folder {os.path.join(path, split)}; expected "
            f"{path}/{{train,test}}/<class>/*.png|jpg"
        )

    def class_dirs(folder: str) -> list[str]:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir())

    # Classes come from train/ so that every split maps names to the same labels.
    class_root = os.path.join(path, "train")
    if not os.path.isdir(class_root) or not class_dirs(class_root):
        class_root = split_dir
    classes = class_dirs(class_root)
    files, labels = [], []
    for entry in class_dirs(split_dir):
        if entry not in classes:
            raise UserError(
                f"class folder {os.path.join(split_dir, entry)} has no match in "
                f"{class_root}; use the same class folders in every split"
            )
        for file in sorted(os.listdir(os.path.join(split_dir, entry))):
            if file.lower().endswith(_IMAGE_EXTENSIONS):
                files.append(os.path.join(split_dir, entry, file))
                labels.append(classes.index(entry))
    if not files:
        raise UserError(f"no .png/.jpg/.jpeg images in {split_dir}/<class>/; check the folder")
    return files, labels, classes, split_dir


def decode_image(file: str, image_size: int | None) -> np.ndarray | None:
    """A file as uint8 HxW (grayscale) or HxWx3, resized to `image_size`; None if unreadable."""
    try:
        with Image.open(file, formats=_PIL_FORMATS) as im:
            mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            im = im if im.mode == mode else im.convert(mode)
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(im)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _load_folder(
    path: str, split: str, image_size: int | None, max_unreadable: float
) -> ArrayDataset:
    files, labels, classes, split_dir = list_folder(path, split)

    decode = functools.partial(decode_image, image_size=image_size)
    # PIL holds the GIL for most of a tiny image's decode, so threads only pay off for large ones.
    first = next((im for im in map(decode, files[:8]) if im is not None), None)
    threads = _THREADS if first is not None and first.size >= 128 * 128 else 1
    decoded = _parallel_map(decode, files, threads)
    bad = [f for f, im in zip(files, decoded, strict=True) if im is None]
    if bad:
        logging.warning(
            "skipped %d unreadable of %d images in %s (first: %s)",
            len(bad),
            len(files),
            split_dir,
            bad[0],
        )
        if len(bad) > max_unreadable * len(files):
            raise UserError(
                f"{len(bad)} of {len(files)} images in {split_dir} are unreadable "
                f"(e.g. {bad[0]}); remove or fix them"
            )
    kept = [(im, y) for im, y in zip(decoded, labels, strict=True) if im is not None]
    if any(im.ndim == 3 for im, _ in kept):
        kept = [(np.stack([im] * 3, -1) if im.ndim == 2 else im, y) for im, y in kept]
    sizes = {im.shape[:2] for im, _ in kept}
    if len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise UserError(
            f"images in {split_dir} differ in size ({a[0]}x{a[1]}, {b[0]}x{b[1]}, "
            "...); set --config.image_size"
        )
    images = np.stack([im for im, _ in kept])
    images = images[..., None] if images.ndim == 3 else images
    return _dataset(images, np.array([y for _, y in kept]), classes, split_dir)


# --- TFDS --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
    """A prepared TFDS split opened for random access (no TensorFlow needed)."""

    name: str
    split: str
    source: Sequence
    image_key: str
    label_key: str
    image_shape: tuple
    class_names: tuple[str, ...]


def open_tfds(name: str, split: str, data_dir: str | None) -> TfdsSplit:
    """Prepares TFDS `name` in array_record format if needed and opens `split` for reading."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError as e:
        # tfds.list_builders() imports every builder, which needs TensorFlow; the error lists them.
        known = {line.strip()[2:] for line in str(e).splitlines() if line.startswith("\t- ")}
        known |= set(tfds.core.registered.list_imported_builders())
        raise unknown_name("TFDS dataset", name, known) from None
    where = data_dir or "<data_dir>"
    if not builder.is_prepared():
        try:
            builder.download_and_prepare(file_format="array_record")
        except Exception as e:  # Network, disk, manual-download and TensorFlow errors alike.
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            if name in _IDX_NAMES or name in _CIFAR:
                fix = (
                    f"without network, put the original files under {where}/{name}/ or "
                    f"prepare the TFDS data (file_format=array_record) into {where}"
                )
            else:
                fix = (
                    f"prepare the TFDS data (file_format=array_record, see the TFDS catalog "
                    f"for manual downloads) into {where}"
                )
            if isinstance(e, ModuleNotFoundError) and e.name:
                fix = f"pip install {e.name.split('.')[0]}, or {fix}"
            raise UserError(
                f"cannot download or prepare TFDS {name!r} ({type(e).__name__}: {reason}); {fix}"
            ) from None
    splits = builder.info.splits
    tfds_split = "validation" if split == "test" and "test" not in splits else split
    if tfds_split not in splits:
        raise UserError(
            f"TFDS {name!r} has no {split!r} split (it has {', '.join(splits)}); "
            "choose another dataset"
        )
    image_key, label_key = builder.info.supervised_keys or ("image", "label")
    try:
        source = builder.as_data_source(split=tfds_split)
    except Exception as e:  # Data prepared as tfrecord needs TensorFlow to read.
        raise UserError(
            f"cannot read TFDS {name!r} in {builder.data_dir} without TensorFlow "
            f"({type(e).__name__}); re-prepare it with file_format=array_record"
        ) from None
    labels_feature = builder.info.features[label_key]
    names = getattr(labels_feature, "names", None) or [
        str(i) for i in range(labels_feature.num_classes)
    ]
    return TfdsSplit(
        name, tfds_split, source, image_key, label_key,
        tuple(builder.info.features[image_key].shape), tuple(names),
    )  # fmt: skip


def read_tfds(opened: TfdsSplit, indices, image_size: int | None):
    """Rows `indices` of an opened TFDS split: lists of uint8 images and of int labels."""
    rows = opened.source.__getitems__([int(i) for i in indices])
    images = [np.asarray(r[opened.image_key], np.uint8) for r in rows]
    if image_size is not None:
        images = [_resize(im, image_size) for im in images]
    return images, [int(r[opened.label_key]) for r in rows]


def _load_tfds(name: str, split: str, data_dir: str | None, image_size: int | None) -> ArrayDataset:
    """Reads a TFDS split into memory."""
    opened = open_tfds(name, split, data_dir)
    count, shape = len(opened.source), opened.image_shape
    if image_size is None and None in shape:
        raise UserError(f"TFDS {name!r} images differ in size; set --config.image_size")
    height, width = (image_size, image_size) if image_size else shape[:2]
    gigabytes = count * height * width * (shape[-1] or 3) / 1e9
    if gigabytes > MAX_IN_MEMORY_GB:
        raise UserError(
            f"TFDS {name!r} {opened.split} would take {gigabytes:.0f} GB in memory, over the "
            f"{MAX_IN_MEMORY_GB} GB limit of in-memory datasets; set --config.stream=True, lower "
            "--config.image_size or set CVJAX_MAX_IN_MEMORY_GB"
        )
    chunks = [range(i, min(i + 512, count)) for i in range(0, count, 512)]
    images, labels = [], []
    with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
        for chunk_images, chunk_labels in pool.map(
            lambda c: read_tfds(opened, c, image_size), chunks
        ):
            images += chunk_images
            labels += chunk_labels
    if not images:
        raise UserError(f"TFDS {name!r} split {opened.split!r} is empty; choose another split")
    if len({im.shape for im in images}) > 1:
        raise UserError(f"TFDS {name!r} images differ in size; set --config.image_size")
    return _dataset(np.stack(images), np.array(labels), opened.class_names, f"TFDS {name!r}")
