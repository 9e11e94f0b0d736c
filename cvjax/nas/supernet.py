"""Weight-sharing NAS on the NAS-Bench-201 space: the one-shot supernet, trained by uniform
single-path sampling, as an estimator.

The supernet is cvjax/models/nb201.py's network with `arch=""`: its (6, 5) op weights (rows
`EDGES`, columns `OPS`) are a traced input, so one compiled train step and one compiled
evaluation serve every architecture. `Supernet` holds it with its data and compiled evaluation;
`SupernetEstimator` and DARTS (cvjax/nas/darts.py, `run_darts`) train it.

- `SupernetEstimator`: single-path one-shot training (Guo et al. 2020, SPOS; the random-sampling
  weight sharing of Li & Talwalkar 2019): each step trains the path of one uniformly random cell,
  sampled inside the jitted step. Trained once in `prepare`; `evaluate(arch)` scores an
  architecture with the shared weights and its one-hot op weights.

Data: the training split of `config.dataset` only. `config.holdout` examples are the validation
set (every score, and DARTS' alpha batches); `config.train_examples` (0: all) of the rest are
trained on, with `config.augment`. The test split is never read.

Scores: top-1 accuracy in percent on fixed validation batches (the first `eval_batches` whole
batches of the holdout). BatchNorm normalizes with the batch's own statistics (train-mode BN, its
updates discarded), as NAS-Bench-201's weight-sharing baselines evaluate: running statistics
gathered over many random paths fit no single path. No dropout runs, so scores are deterministic.

Resume: checkpoints (Orbax, cvjax/train/checkpoint.py) at every epoch's end, in W/supernet/; a
step's randomness is a function of (seed, step) and an epoch's example order of (seed, epoch), so
a rerun continues exactly where the last checkpoint left off, and a rerun of a finished run trains
nothing. Raising the epochs of a finished run continues it (a cosine schedule then changes with
the new length).
"""

import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from cvjax import data, losses, metrics, models, optim
from cvjax.configs import base_config
from cvjax.data import augment, sampling
from cvjax.errors import UserError
from cvjax.nas import search as search_lib
from cvjax.nas.estimators import Estimator
from cvjax.nas.nb201 import EDGES, OPS, NB201Space
from cvjax.nas.spaces import SearchSpace
from cvjax.train import steps as steps_lib
from cvjax.train.checkpoint import Checkpoints
from cvjax.train.state import TrainState, create_train_state
from cvjax.train.writers import MetricWriter

METRIC = "val/accuracy (supernet, %)"
# fold_in tags: streams of a step's key independent of its augmentation and dropout.
_ARCH_TAG, _DATA_TAG = 0xA5C, 0x0DA7A
# Settings that decide what a checkpoint holds; a workdir keeps them fixed.
_FINGERPRINT = ("dataset", "image_size", "holdout", "train_examples", "seed")
_SHAPE_KEYS = ("width", "cells", "batch_size")


def supernet_defaults() -> ml_collections.ConfigDict:
    """`config.supernet`: the supernet and its weight training, by default DARTS' search
    settings (Liu et al. 2019, Sec. 3.1.1 and its code) on NB201's C=16, N=5 network."""
    s = ml_collections.ConfigDict()
    s.epochs = 50
    s.width = 16  # NB201's C.
    s.cells = 5  # NB201's N: cells per stage.
    s.batch_size = 64
    s.optimizer = "momentum"  # Any of cvjax/optim.py's.
    s.momentum = 0.9
    s.learning_rate = 0.025
    s.schedule = "cosine"  # Any of cvjax/optim.py's.
    s.end_lr_factor = 0.04  # Cosine down to 0.001 (DARTS' eta_min).
    s.weight_decay = 3e-4
    s.grad_clip_norm = 5.0
    s.eval_batches = 0  # Validation batches per score; 0: every whole batch of the holdout.
    return s


def sample_architecture(rng: jax.Array) -> jax.Array:
    """A uniformly random NB201 cell as (6, 5) one-hot op weights (SPOS's uniform sampling)."""
    return jax.nn.one_hot(jax.random.randint(rng, (len(EDGES),), 0, len(OPS)), len(OPS))


def arch_weights(arch: str) -> jax.Array:
    """The (6, 5) one-hot op weights of an NB201 cell string."""
    return jax.nn.one_hot(jnp.asarray(NB201Space().to_choices(arch)), len(OPS))


class WithWeights:
    """`model` with its op weights bound, for the engine's steps (which call `model.apply`);
    built inside a jitted step, `weights` may be traced."""

    def __init__(self, model: nn.Module, weights: jax.Array):
        self.model, self.weights = model, weights

    def apply(self, variables, x, **kwargs):
        return self.model.apply(variables, x, arch_weights=self.weights, **kwargs)


def merge_settings(
    config: ml_collections.ConfigDict, key: str, defaults: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
    """`defaults` updated with `config.<key>`; a key `defaults` lacks is a UserError."""
    given = config.get(key) or {}
    given = given.to_dict() if isinstance(given, ml_collections.ConfigDict) else dict(given)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(
            f"config.{key} has no key {', '.join(unknown)}; valid: {', '.join(sorted(defaults))}"
        )
    defaults.update(given)
    return defaults


def _weight_optimizer(s: ml_collections.ConfigDict, steps_per_epoch: int):
    c = base_config()
    c.num_epochs, c.learning_rate, c.weight_decay = s.epochs, s.learning_rate, s.weight_decay
    c.optimizer.name, c.optimizer.momentum = s.optimizer, s.momentum
    c.optimizer.grad_clip_norm = s.grad_clip_norm
    c.schedule.name, c.schedule.end_lr_factor = s.schedule, s.end_lr_factor
    return optim.create_optimizer(c, steps_per_epoch)[0]


class Supernet:
    """The supernet built from a config and its `supernet`/`darts` settings `s`: its data on
    device, weight optimizer, batching, initial state and compiled evaluation."""

    def __init__(self, config: ml_collections.ConfigDict, s: ml_collections.ConfigDict):
        self.s = s
        holdout, examples = config.get("holdout", 0), config.get("train_examples", 0)
        if holdout < s.batch_size:
            raise UserError(
                f"weight-sharing search scores on held-out training examples; set "
                f"--config.holdout to at least batch_size={s.batch_size} (it is {holdout})"
            )
        image_size = config.get("image_size", 0) or None
        full = data.load(
            config.dataset, "train", data_dir=config.get("data_dir") or None, image_size=image_size
        )
        train, val = data.train_split(full, holdout, examples, seed=config.seed)
        self.steps_per_epoch = spe = len(train) // s.batch_size
        if not spe:
            raise UserError(
                f"supernet batch_size={s.batch_size} exceeds the {len(train)} training examples"
            )
        mean, std = data.channel_stats(train)
        self.cfg = steps_lib.StepConfig(
            batch_size=s.batch_size,
            steps_per_epoch=spe,
            mean=tuple(float(m) for m in mean),
            std=tuple(float(v) for v in std),
            crop_padding=config.augment.crop_padding,
            flip=config.augment.flip,
        )
        self.image_shape = full.images.shape[1:]
        self.model = models.create(
            "nb201",
            arch="",
            width=s.width,
            cells=s.cells,
            num_classes=full.num_classes,
            in_channels=self.image_shape[-1],
        )
        self.tx = _weight_optimizer(s, spe)
        self.mesh = steps_lib.create_mesh()
        steps_lib.check_batch_size(s.batch_size, self.mesh)
        self.sharding = steps_lib.batch_sharded(self.mesh)

        def put(array):
            return steps_lib.put_replicated(array, self.mesh)

        self.train = (put(train.images), put(train.labels))
        self.val = (put(val.images), put(val.labels))
        batches = len(val) // s.batch_size
        if s.eval_batches > batches:
            raise UserError(
                f"eval_batches={s.eval_batches} needs {s.eval_batches * s.batch_size} held-out "
                f"examples, there are {len(val)}; raise --config.holdout or lower eval_batches"
            )
        batches = s.eval_batches or batches
        n = batches * s.batch_size
        self.eval_data = (
            put(val.images[:n].reshape(batches, s.batch_size, *self.image_shape)),
            put(val.labels[:n].reshape(batches, s.batch_size)),
        )
        self.permutation = sampling.make_epoch_fn(self.mesh, len(train))
        self.data_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), _DATA_TAG)
        self.seed = config.seed
        self.eval_fn = jax.jit(self._eval_sums)
        self.fingerprint = {k: config.get(k) for k in _FINGERPRINT}
        self.fingerprint.update({k: s[k] for k in _SHAPE_KEYS})

    def init_state(self) -> TrainState:
        init = jax.jit(
            lambda key: create_train_state(self.model, self.tx, key, (1, *self.image_shape)),
            out_shardings=steps_lib.replicated(self.mesh),
        )
        return init(jax.random.PRNGKey(self.seed))

    def batch(self, images, labels, perm, step, steps_per_epoch: int = 0):
        """Step `step`'s batch of `images`, `labels` in the epoch order `perm`."""
        spe = steps_per_epoch or self.steps_per_epoch
        index = steps_lib.batch_index(perm, step, self.s.batch_size, spe, self.sharding)
        return images[index], labels[index]

    def run_epoch(self, step_fn, state: TrainState) -> tuple[TrainState, dict[str, float]]:
        """Trains from `state.step` to the end of its epoch with `step_fn(state, perm)`;
        returns the epoch's train means."""
        step = int(jax.device_get(state.step))
        perm = self.permutation(self.data_rng, step // self.steps_per_epoch)
        sums = None
        for _ in range(self.steps_per_epoch - step % self.steps_per_epoch):
            state, batch_sums = step_fn(state, perm)
            sums = metrics.add(sums, batch_sums)
        return state, metrics.means(sums, "train")

    def _eval_sums(self, variables, images, labels, weights):
        def one(batch):
            x, y = batch
            x = augment.normalize(x, self.cfg.mean, self.cfg.std, self.cfg.dtype)
            logits, _ = self.model.apply(
                variables, x, train=True, arch_weights=weights, mutable=["batch_stats"]
            )
            return metrics.classification_sums(logits, y, losses.softmax_cross_entropy(logits, y))

        return jax.tree.map(lambda v: v.sum(0), jax.lax.map(one, (images, labels)))

    def evaluate(self, variables, weights: jax.Array) -> dict[str, float]:
        """{"score": accuracy in %, "val/loss", "val/accuracy", ...} of op weights `weights`."""
        result = metrics.means(self.eval_fn(variables, *self.eval_data, weights), "val")
        return {"score": 100.0 * result["val/accuracy"], **result}

    def open_checkpoints(self, directory: str) -> Checkpoints:
        """Checkpoints in `directory`, refusing one written with other shapes or data."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "supernet_config.json")
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            changed = [k for k in self.fingerprint if saved.get(k) != self.fingerprint[k]]
            if changed:
                k = changed[0]
                raise UserError(
                    f"{directory} holds a supernet with {k}={saved.get(k)!r}, not "
                    f"{self.fingerprint[k]!r}; use a new --workdir (or the same {k})"
                )
        else:
            search_lib.write_json(path, self.fingerprint)
        return Checkpoints(os.path.join(directory, "checkpoints"), keep=2)


def resume(checkpoints: Checkpoints, state: TrainState) -> TrainState:
    """The newest checkpointed state, or `state` when there is none."""
    restored = checkpoints.restore(state)
    if restored is None:
        return state
    logging.info("resumed %s at step %d", checkpoints.directory, int(restored.step))
    return restored


class SupernetEstimator(Estimator):
    """Scores NB201 cells with one weight-sharing supernet trained by uniform single-path
    sampling (Guo et al. 2020; Li & Talwalkar 2019); see the module docstring.

    `prepare(workdir)` trains the supernet for `config.supernet.epochs` in W/supernet/ (or
    restores the finished one); `evaluate(arch)` returns {"score": validation accuracy in % of the
    supernet with `arch`'s one-hot op weights, "val/loss", "val/accuracy", ...}. BatchNorm uses
    batch statistics at evaluation (train-mode BN, updates discarded), as NAS-Bench-201's
    weight-sharing baselines do.
    """

    metric = METRIC

    def __init__(self, config: ml_collections.ConfigDict, space: SearchSpace):
        if space.name != "nb201":
            raise UserError(
                f"the supernet estimator covers the nb201 space, not {space.name!r}; "
                "set --config.search.space=nb201"
            )
        self.config, self.space = config, space
        self.settings = merge_settings(config, "supernet", supernet_defaults())
        self.net: Supernet | None = None
        self.variables = None

    def prepare(self, workdir: str) -> None:
        net = Supernet(self.config, self.settings)
        directory = os.path.join(workdir, "supernet")
        checkpoints = net.open_checkpoints(directory)
        state = resume(checkpoints, net.init_state())
        total = self.settings.epochs * net.steps_per_epoch
        jitted = jax.jit(self._spos_step(net), donate_argnums=(0,))

        def step_fn(state, perm):
            return jitted(state, *net.train, perm)

        writer = MetricWriter(directory, tensorboard=False)
        while int(jax.device_get(state.step)) < total:
            start = time.perf_counter()
            state, record = net.run_epoch(step_fn, state)
            step = int(jax.device_get(state.step))
            record.update(epoch=step // net.steps_per_epoch, wall_s=time.perf_counter() - start)
            writer.write(step, record)
            logging.info("supernet epoch %d: %s", record["epoch"], record)
            checkpoints.save(state)
        checkpoints.wait()
        checkpoints.close()
        writer.close()
        self.net, self.variables = net, state.variables()

    @staticmethod
    def _spos_step(net: Supernet):
        def step(state: TrainState, images, labels, perm):
            key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), _ARCH_TAG)
            model = WithWeights(net.model, sample_architecture(key))
            x, y = net.batch(images, labels, perm, state.step)
            return steps_lib.train_on_batch(model, net.tx, net.cfg, state, x, y)

        return step

    def evaluate(self, arch: str, trial_dir: str) -> dict[str, float]:
        if self.net is None:
            raise RuntimeError("SupernetEstimator.evaluate before prepare(workdir)")
        return self.net.evaluate(self.variables, arch_weights(self.space.validate(arch)))


def run_darts(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """First-order DARTS on this supernet: `cvjax.nas.darts.run_darts`."""
    from cvjax.nas import darts  # It builds on this module.

    return darts.run_darts(config, workdir)
