"""Embeddings of a trained checkpoint, and their k-nearest-neighbour accuracy.

    python -m cvjax.features --config=configs/resnet.py:model=resnet20 --workdir=DIR \
        [--checkpoint=latest|best|STEP] [--split=train,test] [--pool=avg|gem|max] \
        [--output=DIR/features.npz] [--knn=1,5,20] [--center] [--pca=D] [--ema]

writes each split's embeddings to an .npz (`<split>_features` (N, C) float32 and `<split>_labels`
(N,) int32; plain arrays, loadable with `allow_pickle=False`) and, with both splits, the k-NN
accuracy of the test split against the train split to DIR/knn.json and one log line. The config
must be the one the workdir was trained with; "test" is the split the run evaluates on (its
holdout when `holdout` > 0). It runs in one process, on all of its devices.
"""

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from cvjax.data import augment
from cvjax.errors import UserError, unknown_name
from cvjax.models.features import POOLS, pooled_features
from cvjax.train import loop
from cvjax.train import steps as steps_lib
from cvjax.train.writers import log

SPLITS = ("train", "test")
# Similarities of one chunk of queries against all references: at most this many floats at once.
_CHUNK_FLOATS = 1 << 26


# The experiment and checkpointed state of a workdir (shared with `--mode=eval`).
restore = loop.restore_experiment


def split_reader(exp: loop.Experiment, split: str) -> tuple[int, Callable]:
    """(size, read) of `split`: `read(indices)` gives host uint8 images and int32 labels."""
    if split not in SPLITS:
        raise unknown_name("split", split, SPLITS)
    if exp.streaming:
        source = exp.train_source if split == "train" else exp.test_source
        return len(source), source.read
    if split == "train":
        images, labels, size = exp.train_images, exp.train_labels, exp.num_train
    else:
        (images, labels, _), size = exp.eval_arrays, exp.num_test
    # The arrays are replicated: any local copy is the whole split (eval_arrays are padded).
    images = np.asarray(images.addressable_data(0))[:size]
    labels = np.asarray(labels.addressable_data(0))[:size]
    return size, lambda indices: (images[indices], labels[indices])


def make_embedder(
    experiment_or_model, variables, batch_size: int, pool: str = "avg"
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from up to `batch_size` images to their embeddings (N, C), float32, on host.

    Given a `loop.Experiment`, images are uint8 and normalized as in training, and the batch is
    sharded over the experiment's devices; given a model, they go in as they are.
    """
    if pool not in POOLS:
        raise unknown_name("pooling", pool, POOLS)
    if isinstance(experiment_or_model, loop.Experiment):
        exp = experiment_or_model
        steps_lib.check_batch_size(batch_size, exp.mesh)
        cfg, model = exp.step_config, exp.model
        sharding = steps_lib.batch_sharded(exp.mesh)

        def forward(variables, images):
            x = augment.normalize(images, cfg.mean, cfg.std, cfg.dtype)
            return pooled_features(model, variables, x, pool)
    else:
        model, sharding = experiment_or_model, None
        forward = functools.partial(pooled_features, model, pool=pool)
    forward = jax.jit(forward)

    def embed(images: np.ndarray) -> np.ndarray:
        n = len(images)
        if n > batch_size:
            raise ValueError(f"{n} images exceed batch_size={batch_size}")
        # One shape for every batch, so the last, smaller one does not compile again.
        padded = np.concatenate(
            [images, np.zeros((batch_size - n, *images.shape[1:]), images.dtype)]
        )
        if sharding is not None:
            padded = jax.device_put(padded, sharding)
        return np.asarray(jax.device_get(forward(variables, padded)))[:n]

    return embed


def extract(
    experiment_or_model, variables, images: np.ndarray, batch_size: int = 256, pool: str = "avg"
) -> np.ndarray:
    """Embeddings (N, C), float32, of `images` in batches; see `make_embedder` for the inputs.

    `pool` is "avg" (the classifier's pre-logits), "gem" (generalized mean, p = 3) or "max" of
    the pre-logits map (`cvjax.models.features.pooled_features`).
    """
    if len(images) == 0:
        raise UserError("no images to embed")
    batch_size = min(batch_size, len(images))
    if isinstance(experiment_or_model, loop.Experiment):
        batch_size = -(-batch_size // experiment_or_model.mesh.size) * experiment_or_model.mesh.size
    embed = make_embedder(experiment_or_model, variables, batch_size, pool)
    return np.concatenate(
        [embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def prepare(
    train_x: np.ndarray, test_x: np.ndarray, center: bool = False, pca: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Features for cosine k-NN: L2-normalized, optionally centered or PCA-whitened on train.

    Plain: x / |x| (SimpleShot's L2N, Wang et al. 2019, Sec. 3). `center`: subtract the train
    mean, then normalize (their CL2N). `pca=D`: normalize, subtract the train mean, project on
    the top D principal directions of train, divide each by the square root of its eigenvalue,
    and normalize again (PCA-whitening as in Jegou & Chum 2012, Sec. 2; it includes centering).
    """
    train, test = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    if pca:
        limit = min(train.shape[1], len(train) - 1)
        if not 0 < pca <= limit:
            raise UserError(
                f"pca={pca} must be between 1 and {limit} (the feature size and the train "
                "examples - 1 bound it); lower --pca"
            )
        train, test = _l2_normalize(train), _l2_normalize(test)
    if center or pca:
        mean = train.mean(axis=0)
        train, test = train - mean, test - mean
    if pca:
        eigenvalues, eigenvectors = np.linalg.eigh(train.T @ train / len(train))
        eigenvalues, eigenvectors = eigenvalues[::-1][:pca], eigenvectors[:, ::-1][:, :pca]
        # A floor far below the leading eigenvalue only keeps a null direction finite.
        scale = np.sqrt(np.maximum(eigenvalues, 1e-12 * eigenvalues[0]))
        train, test = train @ eigenvectors / scale, test @ eigenvectors / scale
    return _l2_normalize(train).astype(np.float32), _l2_normalize(test).astype(np.float32)


def _vote(similarity: jax.Array, neighbour_labels: jax.Array, num_classes: int) -> jax.Array:
    """Majority vote of the neighbours; a tie goes to the class of larger summed similarity."""
    one_hot = jax.nn.one_hot(neighbour_labels, num_classes, dtype=jnp.float32)
    votes = one_hot.sum(axis=1)
    mass = jnp.einsum("qkc,qk->qc", one_hot, similarity)
    mass = jnp.where(votes == votes.max(axis=1, keepdims=True), mass, -jnp.inf)
    return jnp.argmax(mass, axis=1)


@functools.partial(jax.jit, static_argnames=("ks", "num_classes"))
def _knn_chunk(references, reference_labels, queries, ks: tuple[int, ...], num_classes: int):
    similarity = jnp.dot(queries, references.T, precision=jax.lax.Precision.HIGHEST)
    top, index = jax.lax.top_k(similarity, max(ks))
    labels = reference_labels[index]
    return jnp.stack([_vote(top[:, :k], labels[:, :k], num_classes) for k in ks])


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    ks: Sequence[int] = (1, 5, 20),
    center: bool = False,
    pca: int = 0,
) -> dict[str, float]:
    """k-NN classification accuracy of test against train: {"knn/accuracy@<k>": ...}.

    Cosine similarity on the features of `prepare` (L2-normalized, optionally centered or
    PCA-whitened on train). Each test example takes the majority label of its k most similar
    train examples; a tie between classes goes to the one whose tied neighbours have the larger
    summed similarity (then the smaller class index). Similarities are computed for a chunk of
    test examples at a time, at most 2^26 of them (256 MiB), so 60,000 x 10,000 fits easily.
    """
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise UserError("features and labels differ in length; pass one label per example")
    if len(train_x) == 0 or len(test_x) == 0:
        raise UserError("k-NN needs train and test features; embed both splits")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) > len(train_x):
        raise UserError(f"k must be between 1 and {len(train_x)} (train examples), got {ks}")
    train, test = prepare(train_x, test_x, center, pca)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    references, reference_labels = jnp.asarray(train), jnp.asarray(train_y, jnp.int32)
    chunk = max(1, min(len(test), _CHUNK_FLOATS // len(train)))
    correct = np.zeros(len(ks), np.int64)
    for start in range(0, len(test), chunk):
        queries = test[start : start + chunk]
        n = len(queries)
        queries = np.concatenate([queries, np.zeros((chunk - n, queries.shape[1]), np.float32)])
        predicted = np.asarray(_knn_chunk(references, reference_labels, queries, ks, num_classes))
        correct += (predicted[:, :n] == test_y[start : start + n]).sum(axis=1)
    return {f"knn/accuracy@{k}": float(c) / len(test) for k, c in zip(ks, correct, strict=True)}


def export(
    config: ml_collections.ConfigDict,
    workdir: str,
    checkpoint: str = "latest",
    splits: Sequence[str] = SPLITS,
    pool: str = "avg",
    output: str | None = None,
    ks: Sequence[int] = (1, 5, 20),
    center: bool = False,
    pca: int = 0,
    use_ema: bool = False,
    batch_size: int = 0,
) -> dict:
    """What the CLI does: embeds `splits` of a checkpoint, writes `output` (default
    workdir/features.npz) and, with `ks`, workdir/knn.json; returns the step and accuracies."""
    splits = list(dict.fromkeys(splits))
    for split in splits:
        if split not in SPLITS:
            raise unknown_name("split", split, SPLITS)
    if ks and set(splits) != set(SPLITS):
        raise UserError("k-NN needs both splits; use --split=train,test, or --knn= for none")
    if pool not in POOLS:
        raise unknown_name("pooling", pool, POOLS)
    batch_size = batch_size or config.batch_size
    exp, state = restore(config, workdir, checkpoint)
    try:
        if use_ema and state.ema_params is None:
            raise UserError("this run keeps no EMA parameters (ema_decay=0); drop --ema")
        step = int(jax.device_get(state.step))
        embed = make_embedder(exp, state.variables(use_ema), batch_size, pool)
        arrays = {}
        for split in splits:
            features, labels = [], []
            for images, batch_labels in _batches(*split_reader(exp, split), batch_size):
                features.append(embed(images))
                labels.append(batch_labels)
            arrays[f"{split}_features"] = np.concatenate(features)
            arrays[f"{split}_labels"] = np.concatenate(labels).astype(np.int32)
    finally:
        exp.checkpoints.close()
    result: dict = {"step": step}
    if ks:
        train = arrays["train_features"], arrays["train_labels"]
        test = arrays["test_features"], arrays["test_labels"]
        result.update(knn_accuracy(*train, *test, ks, center, pca))
        log(step, {k: v for k, v in result.items() if k != "step"})
    output = output or os.path.join(workdir, "features.npz")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    np.savez(output, **arrays, step=np.int64(step), pool=np.str_(pool))
    if ks:
        settings = dict(checkpoint=checkpoint, pool=pool, center=center, pca=pca, ema=use_ema)
        with open(os.path.join(workdir, "knn.json"), "w") as f:
            json.dump({**settings, **result}, f, indent=2)
    return result


def _batches(size: int, read: Callable, batch_size: int) -> Iterator[tuple[np.ndarray, ...]]:
    for start in range(0, size, batch_size):
        yield read(np.arange(start, min(start + batch_size, size)))


# The command line. Flags are defined only when a module runs as a program, so that importing
# these functions (cvjax.explain does) defines none.


def define_common_flags() -> None:
    """--config, --workdir, --checkpoint, --ema and --compilation_cache, as cvjax.main has them."""
    from ml_collections import config_flags

    from cvjax.configs import COMPILATION_CACHE

    config_flags.DEFINE_config_file(
        "config",
        None,
        "The config the workdir was trained with (as for cvjax.main).",
        lock_config=True,
    )
    flags.DEFINE_string("workdir", None, "The training run's workdir.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' (by eval/accuracy) or a step.")
    flags.DEFINE_bool("ema", False, "Use the EMA parameters (runs with ema_decay > 0).")
    flags.DEFINE_string(
        "compilation_cache", COMPILATION_CACHE, "Persistent XLA compilation cache; '' disables it."
    )


def run_command(work: Callable[[ml_collections.ConfigDict, str], dict]) -> None:
    """Runs `work(config, workdir)` as cvjax.main runs a mode: a UserError ends in one line."""
    import logging as std_logging

    flag_values = flags.FLAGS

    class ConciseLog(std_logging.Filter):
        def filter(self, record: std_logging.LogRecord) -> bool:
            return (
                record.levelno >= std_logging.WARNING or f"{os.sep}cvjax{os.sep}" in record.pathname
            )

    logging.get_absl_handler().addFilter(ConciseLog())
    if flag_values.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", flag_values.compilation_cache)
    try:
        if flag_values.config is None:
            raise UserError("--config is required: the config the workdir was trained with")
        if flag_values.workdir is None:
            raise UserError("--workdir is required: the training run's workdir")
        result = work(flag_values.config, flag_values.workdir)
    except UserError as error:
        logging.flush()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(
        " | ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
        )
    )


def parse_ks(values: Sequence[str]) -> list[int]:
    """The k values of --knn=1,5,20."""
    try:
        return [int(k) for k in values]
    except ValueError:
        raise UserError(f"--knn={','.join(values)} must list integers, e.g. --knn=1,5,20") from None


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS

    def work(config: ml_collections.ConfigDict, workdir: str) -> dict:
        ks = parse_ks(f.knn)
        return export(
            config,
            workdir,
            f.checkpoint,
            f.split,
            f.pool,
            f.output,
            ks,
            f.center,
            f.pca,
            f.ema,
            f.batch_size,
        )

    run_command(work)


if __name__ == "__main__":
    define_common_flags()
    flags.DEFINE_list("split", list(SPLITS), "Splits to embed: train, test or both.")
    flags.DEFINE_enum("pool", "avg", list(POOLS), "avg (pre-logits), gem (p=3) or max.")
    flags.DEFINE_string("output", None, "The .npz to write; default <workdir>/features.npz.")
    flags.DEFINE_list("knn", ["1", "5", "20"], "k values of the k-NN accuracy; empty: no k-NN.")
    flags.DEFINE_bool("center", False, "Subtract the train mean, then L2-normalize (CL2N).")
    flags.DEFINE_integer("pca", 0, "PCA-whiten to this many dimensions (fitted on train); 0: no.")
    flags.DEFINE_integer("batch_size", 0, "Images per forward pass; 0: the config's batch_size.")
    app.run(_main)
