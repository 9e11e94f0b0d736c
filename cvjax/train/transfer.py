"""Transfer learning: a run that starts from pretrained weights, and classifier re-balancing.

`--config.init_from=DIR` loads the params and BatchNorm statistics of a converted-weights
directory (`python -m cvjax.convert`: meta.json + variables/) or of a cvjax training workdir (its
checkpoint `init_from_checkpoint`: "latest", "best" or a step). Optimizer state, step and RNG
start fresh. Every leaf whose path and shape match is copied; the classifier ("head", auxiliary
heads "aux*") is initialized anew where its shape differs (another number of classes) or with
`reinit_head`; any other difference is an error naming the paths. A run that already has
checkpoints resumes from them and never re-reads `init_from`.

For long-tailed data (Kang et al. 2020): `tau_normalize` (and `tau_norm_evaluate`, which picks
tau on held-out training images) and the cRT recipe `crt_config`.
"""

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from jax.sharding import Mesh

from cvjax.errors import UserError
from cvjax.models import scan
from cvjax.optim import BACKBONE, ParamGroups, path_str
from cvjax.train import steps as steps_lib
from cvjax.train.state import TrainState

COLLECTIONS = ("params", "batch_stats")


def is_classifier(path: str) -> bool:
    """True for the paths of the classifier: "head/..." and auxiliary heads "aux*/..."."""
    first = path.split("/", 1)[0]
    return first == "head" or first.startswith("aux")


def read_pretrained(source: str, checkpoint: str = "latest") -> tuple[dict, dict]:
    """(info, variables) of a converted-weights dir or a training workdir.

    `info` has "model" and "model_kwargs" (what the weights were made for) and "source";
    `variables` is {"params", "batch_stats"} of host arrays.
    """
    source = os.path.abspath(os.path.expanduser(source))
    if os.path.isfile(os.path.join(source, "meta.json")):
        from cvjax.weights.io import load_converted

        meta, variables = load_converted(source)
        info = {"model": meta.get("model"), "model_kwargs": meta.get("model_kwargs", {})}
    elif os.path.isdir(os.path.join(source, "checkpoints")):
        info, variables = _read_workdir(source, str(checkpoint))
    else:
        raise UserError(
            f"init_from={source!r} is neither converted weights (meta.json) nor a training "
            "workdir (checkpoints/); fix --config.init_from"
        )
    variables = {c: jax.tree.map(np.asarray, dict(variables.get(c, {}))) for c in COLLECTIONS}
    return {**info, "source": source}, variables


def _read_workdir(workdir: str, checkpoint: str) -> tuple[dict, dict]:
    """The params and BatchNorm statistics of one checkpoint of a training workdir, read only."""
    import orbax.checkpoint as ocp

    from cvjax.train.checkpoint import BEST_METRIC

    info: dict[str, Any] = {"model": None, "model_kwargs": {}}
    config_path = os.path.join(workdir, "config.json")
    if os.path.isfile(config_path):
        with open(config_path) as f:
            saved = json.load(f)
        info = {"model": saved.get("model"), "model_kwargs": saved.get("model_kwargs") or {}}
    options = ocp.CheckpointManagerOptions(
        create=False, best_fn=lambda metrics: metrics[BEST_METRIC], best_mode="max"
    )
    manager = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        item_handlers=ocp.PyTreeCheckpointHandler(),
        options=options,
    )
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise UserError(f"{workdir} has no checkpoint yet; train it first or fix init_from")
        if checkpoint == "latest":
            step = steps[-1]
        elif checkpoint == "best":
            step = manager.best_step()
            if step is None:
                raise UserError(
                    f"no checkpoint in {workdir} has {BEST_METRIC}; set "
                    "--config.init_from_checkpoint=latest"
                )
        elif checkpoint.isdigit() and int(checkpoint) in steps:
            step = int(checkpoint)
        else:
            raise UserError(
                f"init_from_checkpoint={checkpoint!r} is not among the checkpoints of {workdir} "
                f"(saved steps: {steps}); use latest, best or a saved step"
            )
        try:
            tree = manager.item_metadata(step)
            tree = getattr(tree, "tree", tree)
            wanted = {c: tree[c] for c in COLLECTIONS if c in tree}
            as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
            variables = manager.restore(
                step,
                args=ocp.args.PyTreeRestore(wanted, restore_args=as_numpy, partial_restore=True),
            )
        except Exception as e:  # noqa: BLE001 - any read failure means a damaged checkpoint.
            raise UserError(
                f"cannot read checkpoint {step} of {workdir} ({type(e).__name__}); set "
                "--config.init_from_checkpoint to another saved step"
            ) from None
    finally:
        manager.close()
    logging.info("init_from: checkpoint %d of %s", step, workdir)
    return info, variables


def merge_pretrained(
    target: dict, source: dict, reinit_head: bool = False, hint: str = ""
) -> tuple[dict, dict[str, int]]:
    """`target` variables with every leaf of `source` whose path and shape match copied in.

    Classifier leaves (`is_classifier`) keep `target`'s fresh values where their shape differs,
    where `source` lacks them, or always with `reinit_head`. Any other mismatch raises a
    `UserError` naming the first paths, with `hint` (what the weights were made for) appended.
    Returns the merged variables and the counts {"loaded", "reinitialized"} of leaves.
    """
    merged, problems = {}, []
    counts = {"loaded": 0, "reinitialized": 0}
    for collection in COLLECTIONS:
        mine = traverse_util.flatten_dict(dict(target.get(collection, {})), sep="/")
        # Either layout of identical blocks (scanned or not, models/scan.py) fits either model.
        theirs = scan.stack_like(source.get(collection, {}), target.get(collection, {}))
        theirs = traverse_util.flatten_dict(theirs, sep="/") if theirs else {}
        out = {}
        for path, value in mine.items():
            other = theirs.get(path)
            shape = tuple(np.shape(value))
            if is_classifier(path) and (
                reinit_head or other is None or tuple(np.shape(other)) != shape
            ):
                out[path] = value
                counts["reinitialized"] += 1
            elif other is None:
                problems.append(f"{collection}/{path} missing")
            elif tuple(np.shape(other)) != shape:
                problems.append(f"{collection}/{path} is {np.shape(other)}, not {shape}")
            else:
                out[path] = np.asarray(other).astype(np.asarray(value).dtype)
                counts["loaded"] += 1
        extra = [p for p in theirs if p not in mine and not is_classifier(p)]
        problems += [f"{collection}/{p} unexpected" for p in extra]
        merged[collection] = traverse_util.unflatten_dict(out, sep="/") if out else {}
    if problems:
        listed = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise UserError(f"{len(problems)} pretrained weights do not fit the model ({listed}){hint}")
    return {**target, **merged}, counts


def init_from(
    config: ml_collections.ConfigDict,
    state: TrainState,
    tx: optax.GradientTransformation,
    mesh: Mesh,
) -> TrainState:
    """`state` with the params and BatchNorm statistics of `config.init_from` loaded (see the
    module docstring); its optimizer state is initialized anew for them, and the EMA copied."""
    info, source = read_pretrained(config.init_from, config.get("init_from_checkpoint", "latest"))
    hint = ""
    if info.get("model"):
        kwargs = {k: v for k, v in dict(info.get("model_kwargs") or {}).items() if k != "dtype"}
        hint = (
            f"; they are for model={info['model']} with model_kwargs={kwargs}: set "
            "--config.model and --config.model_kwargs to match"
        )
    target = jax.tree.map(np.asarray, jax.device_get(state.variables()))
    variables, counts = merge_pretrained(
        target, source, bool(config.get("reinit_head", False)), hint
    )
    logging.info(
        "init_from %s: loaded %d leaves, re-initialized %d (classifier)",
        info["source"],
        counts["loaded"],
        counts["reinitialized"],
    )
    put = jax.tree.map(lambda a: steps_lib.put_replicated(a, mesh), variables)
    opt_state = jax.jit(tx.init, out_shardings=steps_lib.replicated(mesh))(put["params"])
    ema = None if state.ema_params is None else jax.tree.map(jnp.copy, put["params"])
    return state.replace(
        params=put["params"],
        batch_stats=put.get("batch_stats", {}),
        opt_state=opt_state,
        ema_params=ema,
    )


def keep_batch_stats(old: Any, new: Any, linear_probe: bool) -> Any:
    """The BatchNorm statistics after a linear-probe step: the backbone's stay `old`.

    Flax's BatchNorm cannot run in eval mode for part of the model without model changes, so a
    linear probe still normalizes with the batch's statistics during training and discards the
    running-average update of the backbone instead: its loaded statistics stay in place.
    Statistics inside the classifier (if any) follow `new`. Jit-friendly (a static selection).
    """
    if not linear_probe:
        return new
    return jax.tree_util.tree_map_with_path(
        lambda path, o, n: n if is_classifier(path_str(path)) else o, old, new
    )


def tau_normalize(params: dict, tau: float) -> dict:
    """The classifier w_k / ||w_k||^tau for each class k (Kang et al. 2020, Sec. 4, "tau-normalized
    classifier"), bias set to zero.

    Kang et al. discard the bias of the tau-normalized classifier (its effect on the logits is
    negligible), so its logits are w_k^T f / ||w_k||^tau; tau = 1 gives unit-norm class vectors,
    tau = 0 the unchanged weights (without bias).
    """
    head = params["head"]["fc"]
    kernel = jnp.asarray(head["kernel"])  # (features, classes)
    norms = jnp.linalg.norm(kernel.astype(jnp.float32), axis=0, keepdims=True)
    scaled = (kernel / jnp.maximum(norms, 1e-12) ** tau).astype(kernel.dtype)
    fc = {**head, "kernel": scaled}
    if "bias" in head:
        fc["bias"] = jnp.zeros_like(head["bias"])
    return {**params, "head": {**params["head"], "fc": fc}}


def crt_config(
    config: ml_collections.ConfigDict, stage1_workdir: str, epochs: float
) -> ml_collections.ConfigDict:
    """Stage 2 of classifier re-training (cRT, Kang et al. 2020, Sec. 4): from the final model of
    `stage1_workdir`, the classifier re-initialized and trained alone, for `epochs`, with
    class-balanced sampling; the representation (backbone weights and BatchNorm statistics)
    stays fixed (`linear_probe`). As in Kang et al.'s Sec. 5.1, the learning rate restarts at
    `config.learning_rate` and decays to 0 by a cosine, without warmup; the optimizer is
    `config`'s. Train it in a workdir of its own.
    """
    if not stage1_workdir:
        raise UserError("cRT needs the workdir of a finished stage-1 run; give stage1_workdir")
    c = copy.deepcopy(config)
    c.init_from = stage1_workdir
    c.init_from_checkpoint = "latest"
    c.reinit_head = True
    c.linear_probe = True
    c.freeze = ""
    c.unfreeze = ()
    c.sampling = "class_balanced"
    c.num_epochs = float(epochs)
    c.schedule.name = "cosine"
    c.schedule.end_lr_factor = 0.0
    c.schedule.warmup_epochs = 0.0
    return c


TAUS = tuple(float(t) for t in np.linspace(0.0, 2.0, 9))  # tau = 1: unit-norm class vectors.
GROUPS = ("many", "medium", "few")


def tau_norm_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    taus: Sequence[float] = TAUS,
    checkpoint: str = "latest",
) -> dict:
    """tau-normalizes the classifier of the run in `workdir` (trained with `config`), with tau
    chosen on held-out training images, and evaluates it on the test split.

    Kang et al. 2020 (Sec. 4) pick tau on a validation set. Here it is the run's `holdout` split
    when it has one, else the training images that `imbalance_ratio` left out (never trained on),
    the same number from every class. The criterion is the mean per-class accuracy. Returns
    "tau", "taus", "val_accuracies", and for the test split "accuracy", "per_class_accuracy",
    "many" / "medium" / "few" (mean accuracy over the thirds of the classes by training count),
    and "train_counts".
    """
    from cvjax import data
    from cvjax.data import augment, sources
    from cvjax.train import loop

    exp = loop.Experiment(config, workdir)
    state = exp.checkpoints.restore(exp.initial_state(), checkpoint)
    exp.checkpoints.close()
    if state is None:
        raise UserError(f"no checkpoint in {workdir}; train the run first")
    image_size = config.get("image_size", 0) or None
    full = data.load(config.dataset, "train", config.data_dir or None, image_size)
    val = _held_out(config, full)
    test = data.load(config.dataset, "test", config.data_dir or None, image_size)
    cfg = exp.step_config
    apply = jax.jit(
        lambda v, x: exp.model.apply(
            v, augment.normalize(x, cfg.mean, cfg.std, cfg.dtype), train=False
        )
    )

    def per_class(params, ds) -> np.ndarray:
        variables = {"params": params, "batch_stats": state.batch_stats}
        size = config.batch_size
        images = steps_lib.pad_for_eval(ds.images, ds.labels, size)[0]  # One shape: one compile.
        preds = [
            np.asarray(jnp.argmax(apply(variables, images[i : i + size]), -1))
            for i in range(0, len(images), size)
        ]
        correct = np.concatenate(preds)[: len(ds)] == ds.labels
        totals = np.bincount(ds.labels, minlength=ds.num_classes)
        hits = np.bincount(ds.labels, weights=correct, minlength=ds.num_classes)
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)

    taus = [float(t) for t in taus]
    val_acc = [float(np.nanmean(per_class(tau_normalize(state.params, t), val))) for t in taus]
    best = taus[int(np.argmax(val_acc))]
    test_acc = per_class(tau_normalize(state.params, best), test)
    counts = np.bincount(sources.long_tailed(full, config.get("imbalance_ratio", 0)).labels)
    thirds = np.array_split(np.argsort(-counts, kind="stable"), 3)
    correct = np.nansum(test_acc * np.bincount(test.labels, minlength=test.num_classes))
    return {
        "tau": best,
        "taus": taus,
        "val_accuracies": val_acc,
        "val_examples": len(val),
        "accuracy": float(correct / len(test)),
        "per_class_accuracy": test_acc.tolist(),
        **{g: float(np.nanmean(test_acc[t])) for g, t in zip(GROUPS, thirds, strict=True)},
        "train_counts": counts.tolist(),
    }


def _held_out(config: ml_collections.ConfigDict, full):
    """Training images the run never trained on, for choosing tau (see `tau_norm_evaluate`)."""
    from cvjax.data import sources

    holdout, examples = config.get("holdout", 0), config.get("train_examples", 0)
    if holdout:
        return sources.train_split(full, holdout, examples, seed=config.seed)[1]
    ratio = config.get("imbalance_ratio", 0)
    if examples or not ratio:
        raise UserError(
            "tau selection needs held-out training images: set --config.holdout for the run "
            "(or train it with imbalance_ratio and no train_examples)"
        )
    kept = sources.long_tailed_indices(full.labels, full.num_classes, ratio, config.seed)
    rest = np.setdiff1d(np.arange(len(full)), kept)
    per_class = [rest[full.labels[rest] == c] for c in range(full.num_classes)]
    n = min(len(p) for p in per_class)
    if n == 0:
        raise UserError(
            "imbalance_ratio left no training image of some class out, for choosing tau; set "
            "--config.holdout for the run"
        )
    idx = np.sort(np.concatenate([p[:n] for p in per_class]))
    return dataclasses.replace(full, images=full.images[idx], labels=full.labels[idx])


def trainable_summary(config: ml_collections.ConfigDict, params: Any, steps_per_epoch: int) -> str:
    """A log line saying which parameters the optimizer trains ("" when all of them)."""
    groups = ParamGroups.from_config(config, steps_per_epoch)
    return "" if groups is None else groups.describe(params)


__all__ = [
    "BACKBONE",
    "tau_norm_evaluate",
    "crt_config",
    "init_from",
    "is_classifier",
    "keep_batch_stats",
    "merge_pretrained",
    "read_pretrained",
    "tau_normalize",
    "trainable_summary",
]
