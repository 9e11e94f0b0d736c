"""DARTS (Liu et al. 2019) at first order on the NAS-Bench-201 supernet (cvjax/nas/supernet.py).

Op weights are softmax(alpha) per edge, alpha a (6, 5) array (rows `EDGES`, columns `OPS`).
Each step first moves alpha down the gradient of a held-out batch's loss at the current weights
(Sec. 2.3 with xi = 0), then the weights down a training batch's loss at the new alpha, the order
of Algorithm 1. Weights: `config.darts` (SGD momentum 0.9, lr 0.025 cosine to 0.001, weight decay
3e-4, batch 64, 50 epochs, as DARTS searched); alpha: Adam lr 3e-4, betas (0.5, 0.999), weight
decay 1e-3 (DARTS Sec. 3.1.1). DARTS' search network has BN without affine parameters; this one
keeps NB201's affine BN.

Data and scores are the supernet's (held-out training examples; batch-statistics BN). Each epoch
ends with the derived cell scored and recorded in W/trials.jsonl, then a checkpoint of weights,
alpha, both optimizer states, step and RNG in W/darts/: a rerun continues from the last
checkpoint and computes what an uninterrupted run computes.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from cvjax import losses, optim
from cvjax.configs import base_config
from cvjax.data import augment, sampling
from cvjax.errors import UserError
from cvjax.nas import search as search_lib
from cvjax.nas.nb201 import EDGES, OPS, NB201Space
from cvjax.nas.spaces import SearchSpace, get_space
from cvjax.nas.supernet import (
    METRIC,
    Supernet,
    WithWeights,
    arch_weights,
    merge_settings,
    resume,
    supernet_defaults,
)
from cvjax.train import steps as steps_lib
from cvjax.train.state import TrainState

_VAL_TAG, _ALPHA_TAG = 0x7A1, 0xA1F  # fold_in tags of alpha's batches and initialization.


def darts_defaults() -> ml_collections.ConfigDict:
    """`config.darts`: the supernet keys plus alpha's optimizer (Adam, DARTS Sec. 3.1.1)."""
    d = supernet_defaults()
    d.arch_learning_rate = 3e-4
    d.arch_b1 = 0.5
    d.arch_b2 = 0.999
    d.arch_weight_decay = 1e-3  # L2 added to alpha's gradient, as PyTorch's Adam in DARTS.
    d.alpha_init_std = 1e-3
    # DARTS derives each edge's op as the argmax over all but "none" (Sec. 2.4); NB201's own
    # DARTS baseline (the numbers usually compared with) takes the argmax over all five ops.
    d.derive_exclude_none = False
    return d


def derive(alpha, exclude_none: bool = False) -> str:
    """The NB201 cell of the strongest op per edge (Liu et al. 2019, Sec. 2.4)."""
    alpha = np.array(alpha, np.float64)
    if exclude_none:
        alpha[:, OPS.index("none")] = -np.inf
    return NB201Space().from_choices([int(i) for i in alpha.argmax(axis=1)])


def _alpha_optimizer(d: ml_collections.ConfigDict):
    c = base_config()
    c.optimizer.name, c.optimizer.b1, c.optimizer.b2 = "adam", d.arch_b1, d.arch_b2
    c.learning_rate, c.weight_decay = d.arch_learning_rate, d.arch_weight_decay
    c.schedule.name = "constant"
    return optim.create_optimizer(c, 1)[0]


def _darts_step(net: Supernet, alpha_tx: optax.GradientTransformation):
    """One first-order DARTS step on the state layout of `run_darts`."""
    n_val = net.val[1].shape[0]
    val_steps = n_val // net.s.batch_size

    def step(state: TrainState, images, labels, perm, val_images, val_labels):
        alpha = state.params["alpha"]
        w = state.replace(params=state.params["net"], opt_state=state.opt_state["net"])
        key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), _VAL_TAG)
        val_perm = sampling.shuffle(
            jax.random.fold_in(state.rng, _VAL_TAG), state.step // val_steps, n_val
        )
        x, y = net.batch(val_images, val_labels, val_perm, state.step, val_steps)
        # DARTS applies the training transform to its held-out half too.
        x = augment.random_crop_flip(key, x, net.cfg.crop_padding, net.cfg.flip)
        x = augment.normalize(x, net.cfg.mean, net.cfg.std, net.cfg.dtype)

        def val_loss(a):
            logits, _ = net.model.apply(
                w.variables(),
                x,
                train=True,
                arch_weights=jax.nn.softmax(a),
                mutable=["batch_stats"],
            )  # This pass's BN statistics are dropped: the running ones follow training batches.
            return losses.softmax_cross_entropy(logits, y).mean()

        arch_loss, grad = jax.value_and_grad(val_loss)(alpha)
        updates, alpha_opt = alpha_tx.update(grad, state.opt_state["alpha"], alpha)
        alpha = optax.apply_updates(alpha, updates)
        model = WithWeights(net.model, jax.nn.softmax(alpha))
        x, y = net.batch(images, labels, perm, state.step)
        w, sums = steps_lib.train_on_batch(model, net.tx, net.cfg, w, x, y)
        sums["arch_loss"] = arch_loss * sums["count"]
        state = w.replace(
            params={"net": w.params, "alpha": alpha},
            opt_state={"net": w.opt_state, "alpha": alpha_opt},
        )
        return state, sums

    return step


def initial_alpha(seed: int, std: float) -> np.ndarray:
    """DARTS' initial architecture parameters: std * N(0, 1), per (edge, op)."""
    return np.asarray(_initial_alpha(jax.random.PRNGKey(seed), std))


def _initial_alpha(key: jax.Array, std: float) -> jax.Array:
    return std * jax.random.normal(jax.random.fold_in(key, _ALPHA_TAG), (len(EDGES), len(OPS)))


def _darts_init(net: Supernet, alpha_tx, std: float) -> TrainState:
    state = net.init_state()  # The same compiled function as the SPOS supernet's.

    def init_alpha(key):
        alpha = _initial_alpha(key, std)
        return alpha, alpha_tx.init(alpha)

    # Replicated like every step's output, so that the first step's input matches the rest.
    init_alpha = jax.jit(init_alpha, out_shardings=steps_lib.replicated(net.mesh))
    alpha, alpha_opt = init_alpha(jax.random.PRNGKey(net.seed))
    return state.replace(
        params={"net": state.params, "alpha": alpha},
        opt_state={"net": state.opt_state, "alpha": alpha_opt},
    )


def _nb201_space(config: ml_collections.ConfigDict) -> SearchSpace:
    search = config.get("search")
    space = get_space(search.space, **search.space_kwargs) if search else NB201Space()
    if space.name != "nb201":
        raise UserError(f"DARTS here searches the nb201 space, not {space.name!r}")
    return space


def run_darts(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """First-order DARTS on the NB201 supernet (see the module docstring); resumable.

    After each epoch the derived cell (argmax op per edge, `darts.derive_exclude_none`) is scored
    with the supernet and appended to W/trials.jsonl as {"trial": epoch index, "arch", "score",
    "metrics", "cost", "wall_s", "alpha"}; the metrics include the epoch's training means, the
    alpha steps' held-out loss ("val/arch_loss") and the accuracy of the mixed supernet,
    softmax(alpha) ("val/mixed_accuracy"). W/best.json holds DARTS' result, the last epoch's cell
    (not the best-scored one: supernet scores rank cells poorly), with its alpha.
    """
    d = merge_settings(config, "darts", darts_defaults())
    space = _nb201_space(config)
    os.makedirs(workdir, exist_ok=True)
    net = Supernet(config, d)
    alpha_tx = _alpha_optimizer(d)
    checkpoints = net.open_checkpoints(os.path.join(workdir, "darts"))
    state = resume(checkpoints, _darts_init(net, alpha_tx, d.alpha_init_std))
    spe = net.steps_per_epoch
    done = int(jax.device_get(state.step)) // spe

    trials_path = os.path.join(workdir, "trials.jsonl")
    trials = search_lib.read_trials(trials_path)
    if len(trials) > done:  # Written after the last checkpoint: those epochs run again.
        trials = trials[:done]
        with open(trials_path + ".tmp", "w") as f:
            f.writelines(json.dumps(t) + "\n" for t in trials)
        os.replace(trials_path + ".tmp", trials_path)

    jitted = jax.jit(_darts_step(net, alpha_tx), donate_argnums=(0,))

    def step_fn(state, perm):
        return jitted(state, *net.train, perm, *net.val)

    for epoch in range(done, d.epochs):
        start = time.perf_counter()
        state, train = net.run_epoch(step_fn, state)
        alpha = np.asarray(jax.device_get(state.params["alpha"]))
        arch = derive(alpha, d.derive_exclude_none)
        variables = {"params": state.params["net"], "batch_stats": state.batch_stats}
        result = net.evaluate(variables, arch_weights(arch))
        # The mixed supernet itself, for the gap between it and its discretized cell.
        mixed = net.evaluate(variables, jax.nn.softmax(jnp.asarray(alpha)))
        result["val/mixed_accuracy"] = mixed["val/accuracy"]
        train["val/arch_loss"] = train.pop("train/arch_loss")
        trial = {
            "trial": epoch,
            "arch": arch,
            "score": result.pop("score"),
            "metrics": {"epoch": epoch + 1, **train, **result},
            "cost": space.cost(arch),
            "wall_s": time.perf_counter() - start,
            "alpha": alpha.tolist(),
        }
        search_lib.append_record(trials_path, trial)  # Before the checkpoint: see the resume above.
        logging.info("darts epoch %d: %.2f%% %s", epoch + 1, trial["score"], arch)
        trials.append(trial)
        checkpoints.save(state)
    checkpoints.wait()
    checkpoints.close()
    if not trials:
        raise UserError(f"darts.epochs={d.epochs}: nothing was searched; set it to at least 1")
    last = trials[-1]
    summary = {
        "arch": last["arch"],
        "score": last["score"],
        "trial": last["trial"],
        "space": "nb201",
        "space_kwargs": config.search.space_kwargs.to_dict() if config.get("search") else {},
        "strategy": "darts",
        "estimator": "supernet",
        "metric": METRIC,
        "cost": last["cost"],
        "alpha": last["alpha"],
        "derive_exclude_none": d.derive_exclude_none,
        "epochs": len(trials),
        "seed": config.seed,
    }
    search_lib.write_json(os.path.join(workdir, "best.json"), summary)
    _draw(last["arch"], os.path.join(workdir, "best_cell.png"))
    return summary


def _draw(arch: str, path: str) -> None:
    from cvjax.nas import plot

    try:
        plot.draw_cell("nb201", arch, path)
    except UserError as error:  # A picture is a convenience; the results are already written.
        logging.warning("no picture: %s", error)
