"""The training loop: config -> data -> device-resident batches -> jitted steps -> outputs.

`train_and_evaluate` resumes from the newest readable checkpoint in `workdir/checkpoints`. Because
the example order of an epoch is a function of (seed, epoch) and a step's randomness a function of
(seed, step), a resumed run computes exactly what the uninterrupted run would have.
"""

import functools
import json
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from cvjax import data, metrics, models, optim, tasks
from cvjax.data import augment, pipeline, sampling, stream
from cvjax.errors import UserError
from cvjax.models import airbench
from cvjax.train import lookahead, transfer
from cvjax.train import steps as steps_lib
from cvjax.train.checkpoint import Checkpoints
from cvjax.train.state import TrainState, create_train_state
from cvjax.train.writers import MetricWriter, log

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ep|epoch|epochs|st|step|steps)?\s*$")


def parse_interval(value, steps_per_epoch: int, key: str) -> int:
    """An interval in steps from "2ep", "500steps", or a bare number of epochs (0 = never)."""
    match = _INTERVAL.match(str(value))
    if not match:
        raise UserError(f"{key}={value!r} is not an interval; write e.g. '1ep' or '500steps'")
    amount, unit = float(match.group(1)), match.group(2) or "ep"
    if amount == 0:
        return 0
    steps = amount if unit.startswith("st") else amount * steps_per_epoch
    return max(1, int(round(steps)))


class Experiment:
    """Everything built from a config: data on device, model, optimizer, steps, checkpoints."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.workdir = workdir
        self.mesh = steps_lib.create_mesh()
        steps_lib.check_batch_size(config.batch_size, self.mesh)
        image_size = config.get("image_size", 0) or None
        self.streaming = bool(config.get("stream", False))
        if self.streaming:
            if config.get("holdout", 0) or config.get("train_examples", 0):
                raise UserError(
                    "holdout and train_examples need in-memory data; set --config.stream=False"
                )
            data_dir = config.data_dir or None
            train = stream.open_source(config.dataset, "train", data_dir, image_size)
            test = stream.open_source(config.dataset, "test", data_dir, image_size)
            mean, std = stream.sample_stats(train)
            image_shape = train.image_shape
        else:
            data_dir = config.data_dir or None
            train = data.load(config.dataset, "train", data_dir=data_dir, image_size=image_size)
            holdout, examples = config.get("holdout", 0), config.get("train_examples", 0)
            if holdout or examples:
                train, val = data.train_split(train, holdout, examples, seed=config.seed)
            if holdout:
                test = val
            else:
                test = data.load(config.dataset, "test", data_dir=data_dir, image_size=image_size)
            mean, std = data.channel_stats(train)
            image_shape = train.images.shape[1:]
        train = data.sources.long_tailed(train, config.get("imbalance_ratio", 0), config.seed)
        norm = config.get("normalization", "dataset")
        if norm != "dataset":
            if norm not in data.STANDARD_STATS:
                raise UserError(
                    f"unknown normalization {norm!r}; set --config.normalization to 'dataset' or "
                    f"one of {', '.join(sorted(data.STANDARD_STATS))}"
                )
            mean, std = data.STANDARD_STATS[norm]
        self.num_train, self.num_test = len(train), len(test)
        self.steps_per_epoch = self.num_train // config.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(
                f"batch_size={config.batch_size} exceeds the {self.num_train} training "
                "examples; lower --config.batch_size"
            )
        self.total_steps = int(config.num_epochs * self.steps_per_epoch)
        dtype = jnp.bfloat16 if config.half_precision else jnp.float32
        self.class_names = tuple(train.class_names)
        self.train_counts = (
            None if self.streaming else np.bincount(train.labels, minlength=train.num_classes)
        )
        self.task = tasks.create_task(config, train.num_classes, self.train_counts)
        self.step_config = steps_lib.StepConfig(
            batch_size=config.batch_size,
            steps_per_epoch=self.steps_per_epoch,
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            crop_padding=config.augment.crop_padding,
            flip=config.augment.flip,
            aux_loss_weight=config.get("aux_loss_weight", 0.0),
            ema_decay=config.get("ema_decay", 0.0),
            dtype=dtype,
            task=self.task,
            augment=pipeline.augment_config(config.augment, self.task.mixes),
            tta=pipeline.tta_config(config.get("tta", None), self.task.kind == "classification"),
            keep_batch_stats=bool(config.get("linear_probe", False)),
            lookahead=lookahead.lookahead_config(config, self.steps_per_epoch, self.total_steps),
        )
        model_kwargs = {
            "num_classes": self.task.num_outputs,
            "in_channels": image_shape[-1],
            "dtype": dtype,
            **config.get("model_kwargs", {}),
        }
        self.model = models.create(config.model, **model_kwargs)
        self.tx, self.schedule = optim.create_optimizer(config, self.steps_per_epoch)
        self.input_shape = (1, *image_shape)
        self.permutation = sampling.make_epoch_fn(
            self.mesh,
            self.num_train,
            getattr(train, "labels", None),
            config.get("sampling", "uniform"),
            train.num_classes,
        )
        cfg = self.step_config
        # Training images for a data-dependent initialization (the first N, in dataset order).
        self.whitening_images = None
        if config.get("init_whitening", False):
            if self.streaming:
                raise UserError("init_whitening needs in-memory data; set --config.stream=False")
            count = int(config.get("whitening_images", 5000)) or self.num_train
            self.whitening_images = train.images[:count]
        if self.streaming:
            self.train_source, self.test_source = train, test
            self.train_step = steps_lib.make_batch_train_step(self.model, self.tx, cfg)
            self.eval_step = steps_lib.make_batch_eval_step(self.model, cfg)
            self.eval_batches = -(-self.num_test // config.batch_size)
        else:
            put = lambda a: steps_lib.put_replicated(a, self.mesh)  # noqa: E731
            self.train_images, self.train_labels = put(train.images), put(train.labels)
            eval_images, eval_labels, eval_mask, self.eval_batches = steps_lib.pad_for_eval(
                test.images, test.labels, config.batch_size
            )
            self.eval_arrays = (put(eval_images), put(eval_labels), put(eval_mask))
            self.train_step = steps_lib.make_train_step(self.model, self.tx, cfg, self.mesh)
            self.eval_step = steps_lib.make_eval_step(self.model, cfg, self.mesh)
        self.checkpoints = Checkpoints(
            os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 3)
        )
        self.last_eval_sums: dict[str, dict] = {}

    def initial_state(self) -> TrainState:
        rng = jax.random.PRNGKey(self.config.seed)
        init = jax.jit(
            lambda key: create_train_state(
                self.model,
                self.tx,
                key,
                self.input_shape,
                ema=bool(self.config.get("ema_decay", 0.0)),
                lookahead=bool(self.step_config.lookahead.every),
            ),
            out_shardings=steps_lib.replicated(self.mesh),
        )
        state = init(rng)
        # A resumed run restores the whitening from its checkpoint: computed for fresh runs only.
        if self.whitening_images is not None and not self.checkpoints.steps():
            state = self.init_whitening(state)
        summary = transfer.trainable_summary(self.config, state.params, self.steps_per_epoch)
        if summary:
            logging.info("%s", summary)
        # A run with checkpoints resumes from them: init_from only seeds a fresh run.
        if self.config.get("init_from", "") and not self.checkpoints.steps():
            state = transfer.init_from(self.config, state, self.tx, self.mesh)
        return state

    def init_whitening(self, state: TrainState) -> TrainState:
        """The state with its whitening layer computed from normalized training images, in
        params and in their EMA and lookahead copies (Jordan 2024; cvjax/models/airbench.py)."""
        cfg = self.step_config
        eps = float(self.config.get("whitening_eps", 5e-4))

        def whiten(params, images):
            images = augment.normalize(images, cfg.mean, cfg.std)
            return airbench.init_whitening(params, images, eps)

        whiten = jax.jit(whiten, out_shardings=steps_lib.replicated(self.mesh))
        params = whiten(state.params, self.whitening_images)
        slow = state.lookahead
        if slow is not None:
            slow = {**slow, "params": jax.tree.map(jnp.copy, params)}
        ema = None if state.ema_params is None else jax.tree.map(jnp.copy, params)
        return state.replace(params=params, ema_params=ema, lookahead=slow)

    def data_rng(self) -> jax.Array:
        # A key of its own, so the example order does not depend on the model's initialization.
        return jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 0x0DA7A)

    def evaluate(self, state: TrainState, use_ema: bool = False, desc: str = "eval") -> dict:
        variables = state.variables(use_ema)
        sums = None
        progress = functools.partial(tqdm, desc=desc, leave=False, disable=not _tty())
        if self.streaming:
            batch_size, n = self.config.batch_size, self.num_test
            order = np.arange(self.eval_batches * batch_size)
            mask = (order < n).astype(np.float32)
            order = np.where(order < n, order, 0)  # Padding rows repeat example 0, masked out.
            batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
            masks = [mask[i : i + batch_size] for i in range(0, len(order), batch_size)]
            sharding = steps_lib.batch_sharded(self.mesh)
            stream_ = stream.device_batches(self.test_source, batches, sharding)
            for (x, y), m in progress(zip(stream_, masks, strict=True), total=len(batches)):
                m = jax.make_array_from_process_local_data(
                    sharding, np.array_split(m, jax.process_count())[jax.process_index()]
                )
                sums = metrics.add(sums, self.eval_step(variables, x, y, m))
        else:
            for b in progress(range(self.eval_batches)):
                sums = metrics.add(sums, self.eval_step(variables, *self.eval_arrays, b))
        prefix = "eval_ema" if use_ema else "eval"
        self.last_eval_sums[prefix] = jax.device_get(sums)
        # Many/medium/few-shot accuracy, for long-tailed training splits.
        long_tailed = self.config.get("imbalance_ratio", 0) > 0
        counts = self.train_counts if long_tailed else None
        result = metrics.summarize(sums, prefix, train_counts=counts)
        if len(self.class_names) > _MAX_PER_CLASS_SCALARS:  # They stay in eval_report.json.
            result = {k: v for k, v in result.items() if "/per_class_" not in k}
        return result

    def epoch_batches(self, perm: jax.Array, first: int):
        """For streaming: the device batches of this epoch from step `first` (within it) on."""
        if not self.streaming:
            return None
        order = np.asarray(jax.device_get(perm))
        size = self.config.batch_size
        batches = (order[i * size : (i + 1) * size] for i in range(first, self.steps_per_epoch))
        return stream.device_batches(self.train_source, batches, steps_lib.batch_sharded(self.mesh))

    def train_on(self, state: TrainState, perm: jax.Array, batches) -> tuple:
        """One train step on the next batch: gathered on device, or the next streamed one."""
        if self.streaming:
            return self.train_step(state, *next(batches))
        return self.train_step(state, self.train_images, self.train_labels, perm)

    def write_report(self, step: int) -> None:
        """The last evaluation's confusion matrix and per-class metrics, as
        `eval_report.json` and `confusion.png` in the workdir (classification only)."""
        sums = self.last_eval_sums.get("eval")
        if jax.process_index() != 0 or sums is None or "confusion" not in sums:
            return
        confusion = np.asarray(sums["confusion"])
        report = {
            "step": step,
            "class_names": list(self.class_names),
            "confusion": confusion.astype(np.int64).tolist(),
            **metrics.classification_report(confusion),
        }
        if self.train_counts is not None:
            report["train_counts"] = self.train_counts.tolist()
        with open(os.path.join(self.workdir, "eval_report.json"), "w") as f:
            json.dump(report, f, indent=1)
        metrics.plot_confusion(
            confusion, os.path.join(self.workdir, "confusion.png"), class_names=self.class_names
        )

    def evaluate_all(self, state: TrainState) -> dict:
        result = self.evaluate(state)
        if state.ema_params is not None:
            result.update(self.evaluate(state, use_ema=True, desc="eval (EMA)"))
        return result


_SHOWN = ("train/loss", "train/accuracy")  # On the progress bar.
_MAX_PER_CLASS_SCALARS = 100  # Classes beyond which per-class accuracies are not logged.

# Keys that decide the shapes of what a checkpoint holds; a workdir's run keeps them fixed.
_STATE_KEYS = (
    "model",
    "model_kwargs",
    "dataset",
    "image_size",
    "optimizer.name",
    "ema_decay",
    "lookahead.every",
    "task",
    "loss.targets",
    "loss.embedding_dim",
    "freeze",
    "unfreeze",
    "linear_probe",
    "lr_groups",
    "imbalance_ratio",
    "sampling",
)


def check_workdir_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses a config whose checkpoints could not be those already in `workdir`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    current = json.loads(config.to_json_best_effort())
    for key in _STATE_KEYS:
        old, new = saved, current
        for part in key.split("."):
            old, new = (old or {}).get(part), (new or {}).get(part)
        if old != new and (bool(old) or bool(new)):
            raise UserError(
                f"{workdir} holds a run with {key}={old!r}, not {new!r}; use a new --workdir "
                f"(or the same {key}) so its checkpoints stay intact"
            )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its checkpoints; returns final eval metrics."""
    os.makedirs(workdir, exist_ok=True)
    check_workdir_config(config, workdir)
    exp = Experiment(config, workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    spe = exp.steps_per_epoch
    log_every = config.log_every_steps
    eval_every = parse_interval(config.eval_every, spe, "eval_every")
    ckpt_every = parse_interval(config.checkpoint_every, spe, "checkpoint_every")

    state = exp.initial_state()
    restored = exp.checkpoints.restore(state)
    if restored is not None:
        state = restored
        logging.info("resumed from step %d", int(state.step))
    step = int(jax.device_get(state.step))
    logging.info(
        "%s on %s: %d train / %d test examples, %d steps/epoch, %d steps, %d devices",
        config.model,
        config.dataset,
        exp.num_train,
        exp.num_test,
        spe,
        exp.total_steps,
        exp.mesh.size,
    )

    writer = MetricWriter(workdir)
    eval_metrics: dict[str, float] = {}
    sums, perm, perm_epoch, batches = None, None, -1, None
    window_start, window_steps = time.perf_counter(), 0
    bar = tqdm(
        total=exp.total_steps, initial=step, desc="train", disable=not _tty(), dynamic_ncols=True
    )
    data_rng = exp.data_rng()
    first_step = step + 1
    while step < exp.total_steps:
        epoch = step // spe
        if epoch != perm_epoch:
            perm, perm_epoch = exp.permutation(data_rng, epoch), epoch
            batches = exp.epoch_batches(perm, step % spe)
        state, batch_sums = exp.train_on(state, perm, batches)
        sums = metrics.add(sums, batch_sums)
        step += 1
        window_steps += 1
        if step == first_step:
            # The first step compiles; keep that out of images_per_sec (one sync, once).
            jax.block_until_ready(state.step)
            window_start, window_steps = time.perf_counter(), 0
        bar.update(1)
        last = step == exp.total_steps
        if step % log_every == 0 or last:
            scalars = metrics.means(sums, "train")  # Host sync, once per log interval.
            elapsed = time.perf_counter() - window_start
            scalars["train/images_per_sec"] = window_steps * config.batch_size / elapsed
            scalars["train/learning_rate"] = float(exp.schedule(step - 1))
            scalars["train/epoch"] = step / spe
            writer.write(step, scalars)
            bar.set_postfix(
                {k.split("/")[-1]: f"{v:.3f}" for k, v in scalars.items() if k in _SHOWN}
            )
            if not _tty():
                log(step, scalars)
            sums, window_start, window_steps = None, time.perf_counter(), 0
        if (eval_every and step % eval_every == 0) or last:
            eval_metrics = exp.evaluate_all(state)
            writer.write(step, eval_metrics)
            log(step, eval_metrics)
            # Eval time is not training throughput: restart the window.
            window_start, window_steps = time.perf_counter(), 0
        if (ckpt_every and step % ckpt_every == 0) or last:
            exp.checkpoints.save(
                state, eval_metrics if step % max(eval_every, 1) == 0 or last else None
            )
    bar.close()
    if not eval_metrics:  # Nothing left to train: the run had already finished.
        eval_metrics = exp.evaluate_all(state)
    exp.write_report(step)
    exp.checkpoints.wait()
    exp.checkpoints.close()
    writer.close()
    return eval_metrics


def restore_experiment(
    config: ml_collections.ConfigDict, workdir: str, checkpoint: str = "latest"
) -> tuple[Experiment, TrainState]:
    """The experiment of `config` and the state of `workdir`'s checkpoint ("latest", "best", N).

    The caller closes `experiment.checkpoints`.
    """
    check_workdir_config(config, workdir)
    exp = Experiment(config, workdir)
    # Shapes and shardings suffice as the target: no initialization to compile and run.
    state = None
    if exp.checkpoints.steps():
        state = exp.checkpoints.restore(jax.eval_shape(exp.initial_state), checkpoint)
    if state is None:
        exp.checkpoints.close()
        raise UserError(
            f"no checkpoint in {exp.checkpoints.directory}; train first or point --workdir at a "
            "training run"
        )
    return exp, state


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, checkpoint: str = "latest"
) -> dict[str, float]:
    """Eval-only mode: evaluates the latest, best, or a numbered checkpoint of `workdir`."""
    exp, state = restore_experiment(config, workdir, checkpoint)
    step = int(jax.device_get(state.step))
    result = exp.evaluate_all(state)
    exp.write_report(step)
    log(step, result)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, f"eval_step{step}.json"), "w") as f:
            json.dump({"step": step, "checkpoint": checkpoint, **result}, f, indent=2)
    exp.checkpoints.close()
    return {"step": step, **result}


def _tty() -> bool:
    return sys.stderr.isatty()
