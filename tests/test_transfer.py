"""Freezing, per-group learning rates, gradual unfreezing, init_from, tau-norm and cRT."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from cvjax import models, optim
from cvjax.errors import UserError
from cvjax.train.state import TrainState
from tests.conftest import tiny_config

PARAMS = {
    "stem": {"kernel": jnp.full((3, 4), 0.5)},
    "stage1": {"kernel": jnp.full((4, 4), -0.3), "bias": jnp.full((4,), 0.2)},
    "head": {"fc": {"kernel": jnp.full((4, 5), 0.1), "bias": jnp.zeros((5,))}},
}


def grads(step: int):
    keys = jax.random.split(jax.random.PRNGKey(step), 5)
    leaves, tree = jax.tree.flatten(PARAMS)
    return jax.tree.unflatten(
        tree, [jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=False)]
    )


def opt_config(name="momentum", **overrides):
    base = {
        "optimizer.name": name,
        "learning_rate": 0.1,
        "schedule.name": "constant",
        "weight_decay": 0.0,
    }
    return tiny_config(**{**base, **overrides})


def run(tx, steps, params=PARAMS, state=None, first=0):
    """Applies `tx` for `steps` steps; returns the params, state and every step's updates."""
    state = tx.init(params) if state is None else state
    update = jax.jit(tx.update)
    history = []
    for step in range(first, first + steps):
        updates, state = update(grads(step), state, params)
        params = optax.apply_updates(params, updates)
        history.append(updates)
    return params, state, history


def leaves(tree, prefix):
    return [v for p, v in jax.tree_util.tree_leaves_with_path(tree) if optim.path_str(p) == prefix]


@pytest.mark.parametrize("name", ["momentum", "adamw"])
def test_frozen_params_get_no_update_decay_or_momentum(name):
    overrides = {"weight_decay": 0.01, "optimizer.grad_clip_norm": 1.0}
    frozen_tx, _ = optim.create_optimizer(opt_config(name, freeze="^(?!head/)", **overrides), 10)
    params, _, _ = run(frozen_tx, 4)
    for path in ("stem/kernel", "stage1/kernel", "stage1/bias"):
        np.testing.assert_array_equal(leaves(params, path)[0], leaves(PARAMS, path)[0])
    # The head trains exactly as an optimizer over the head alone (clipping ignores frozen grads).
    head_tx, _ = optim.create_optimizer(opt_config(name, **overrides), 10)
    state, head = head_tx.init(PARAMS["head"]), PARAMS["head"]
    for step in range(4):
        updates, state = head_tx.update(grads(step)["head"], state, head)
        head = optax.apply_updates(head, updates)
    assert not np.allclose(params["head"]["fc"]["kernel"], PARAMS["head"]["fc"]["kernel"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), params["head"], head)


def test_lr_group_multipliers_scale_the_update_exactly():
    groups = (("^head/", 1.0), ("^stage1/", 0.5), (".*", 0.1))
    plain_tx, _ = optim.create_optimizer(opt_config("momentum"), 10)
    grouped_tx, _ = optim.create_optimizer(opt_config("momentum", lr_groups=groups), 10)
    _, _, plain = run(plain_tx, 3)
    _, _, grouped = run(grouped_tx, 3)
    # With params fed back, plain SGD's update does not depend on them: compare step by step.
    for p, g in zip(plain, grouped, strict=True):
        np.testing.assert_array_equal(g["head"]["fc"]["kernel"], p["head"]["fc"]["kernel"])
        np.testing.assert_allclose(g["stage1"]["kernel"], 0.5 * p["stage1"]["kernel"], rtol=1e-6)
        np.testing.assert_allclose(g["stem"]["kernel"], 0.1 * p["stem"]["kernel"], rtol=1e-6)


def unfreeze_config():
    return opt_config(
        "adam",
        freeze="^(?!head/)",
        unfreeze=((1, "^stage1/"), (2, ".*")),
        **{"schedule.name": "cosine", "num_epochs": 4},
    )


def test_gradual_unfreezing_starts_each_group_at_its_epoch_with_fresh_moments():
    spe = 3
    tx, schedule = optim.create_optimizer(unfreeze_config(), spe)
    _, _, history = run(tx, 8)
    moved = [
        [bool(np.any(np.asarray(leaves(u, p)[0]))) for p in ("stage1/kernel", "stem/kernel")]
        for u in history
    ]
    assert [m[0] for m in moved] == [False] * 3 + [True] * 5  # stage1 from epoch 1 (step 3).
    assert [m[1] for m in moved] == [False] * 6 + [True] * 2  # The rest from epoch 2 (step 6).
    # stage1's first update is a fresh Adam's first step at the global learning rate of step 3.
    fresh = optax.adam(float(schedule(3)))
    expected, _ = fresh.update(grads(3)["stage1"], fresh.init(PARAMS["stage1"]))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), history[3]["stage1"], expected
    )


def test_gradual_unfreezing_is_exact_across_a_checkpoint_resume(tmp_path):
    from cvjax.train.checkpoint import Checkpoints

    tx, _ = optim.create_optimizer(unfreeze_config(), 3)

    def state_at(step, params, opt_state):
        return TrainState(jnp.int32(step), params, {}, opt_state, jax.random.PRNGKey(0))

    straight, straight_state, _ = run(tx, 8)
    half, half_state, _ = run(tx, 4)  # Stopped mid-epoch 1, before the step-6 release.
    ckpts = Checkpoints(str(tmp_path / "ckpt"), async_save=False)
    ckpts.save(state_at(4, half, half_state))
    ckpts.close()
    target = state_at(0, PARAMS, tx.init(PARAMS))
    restored = Checkpoints(str(tmp_path / "ckpt")).restore(target)
    assert int(restored.step) == 4
    resumed, resumed_state, _ = run(tx, 4, restored.params, restored.opt_state, first=4)
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)
    jax.tree.map(np.testing.assert_array_equal, resumed_state, straight_state)


def test_bad_patterns_are_one_line_errors():
    cases = [
        ({"freeze": "^nothing/"}, "matches no parameter"),
        ({"freeze": "(["}, "not a regular expression"),
        ({"unfreeze": ((1, "stem"),)}, "set --config.freeze"),
        ({"freeze": "^stem/", "unfreeze": ((1, "head"),)}, "matches no frozen parameter"),
        ({"freeze": "^stem/", "linear_probe": True}, "drop --config.freeze"),
        ({"lr_groups": ((0.1, "head"),)}, "malformed"),
    ]
    for overrides, message in cases:
        with pytest.raises(UserError, match=message) as error:
            tx, _ = optim.create_optimizer(opt_config(**overrides), 10)
            tx.init(PARAMS)
        assert "\n" not in str(error.value)


def test_tau_normalize_gives_unit_norm_class_vectors():
    from cvjax.train.transfer import tau_normalize

    kernel = jax.random.normal(jax.random.PRNGKey(0), (4, 5)) * jnp.arange(1.0, 6.0)
    params = {**PARAMS, "head": {"fc": {"kernel": kernel, "bias": jnp.ones((5,))}}}
    unit = tau_normalize(params, 1.0)["head"]["fc"]
    np.testing.assert_allclose(jnp.linalg.norm(unit["kernel"], axis=0), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(unit["bias"], 0.0)  # Kang et al. drop the bias.
    half = tau_normalize(params, 0.5)["head"]["fc"]["kernel"]
    np.testing.assert_allclose(half, kernel / jnp.linalg.norm(kernel, axis=0) ** 0.5, rtol=1e-6)
    np.testing.assert_array_equal(tau_normalize(params, 0.0)["head"]["fc"]["kernel"], kernel)
    assert tau_normalize(params, 1.0)["stem"] is params["stem"]


# --- init_from, end to end on the digits engine ----------------------------------------------


def zeros_like_init(name: str) -> dict:
    """Variables of `name` on 8x8 digits, as zeros (shapes only: nothing compiled)."""
    model = models.create(name, num_classes=10, in_channels=1)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)
    )
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def numpy_tree(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A training workdir whose checkpoint holds a ResNet-8 initialized with another seed."""
    from cvjax.train import loop

    workdir = str(tmp_path_factory.mktemp("stage1"))
    config = tiny_config(seed=1)
    exp = loop.Experiment(config, workdir)
    state = exp.initial_state()
    exp.checkpoints.save(state, {"eval/accuracy": 0.5})
    exp.checkpoints.wait()
    exp.checkpoints.close()
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    return workdir, numpy_tree(state.variables())


def backbone_equal(variables, reference):
    flat = lambda t: {optim.path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(t)}  # noqa: E731
    mine, theirs = flat(numpy_tree(variables)), flat(reference)
    backbone = [p for p in theirs if "head/" not in p]
    assert len(backbone) > 10
    return all(np.array_equal(mine[p], theirs[p]) for p in backbone)


def test_init_from_converted_weights_and_a_clear_mismatch_error(stage1, tmp_path):
    from cvjax.train import transfer
    from cvjax.weights.io import FORMAT_VERSION

    _, reference = stage1
    converted = str(tmp_path / "converted")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(converted, "variables"), reference)
    meta = {"model": "resnet8", "source": "test", "model_kwargs": {"in_channels": 1}}
    with open(os.path.join(converted, "meta.json"), "w") as f:
        json.dump({**meta, "num_classes": 10, "format_version": FORMAT_VERSION}, f)
    info, variables = transfer.read_pretrained(converted)
    assert info["model"] == "resnet8"
    target = zeros_like_init("resnet8")
    merged, counts = transfer.merge_pretrained(target, variables)
    assert counts["reinitialized"] == 0  # Same classes: the head is loaded too.
    jax.tree.map(np.testing.assert_array_equal, merged, reference)
    _, counts = transfer.merge_pretrained(target, variables, reinit_head=True)
    assert counts["reinitialized"] == 2
    # Weights of ResNet-8 do not fit a ResNet-20: one line that names the paths and the fix.
    config = tiny_config(init_from=converted, model="resnet20")
    state = zeros_like_init("resnet20")
    state = TrainState(jnp.int32(0), state["params"], state["batch_stats"], None, None)
    tx = optax.sgd(0.1)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    with pytest.raises(UserError, match=r"ResidualBlock_1/.* is \(32,\), not \(16,\)") as error:
        transfer.init_from(config, state, tx, mesh)
    message = str(error.value)
    assert "\n" not in message and "model=resnet8" in message and "--config.model" in message


def test_crt_from_a_workdir_loads_the_backbone_and_trains_only_a_new_head(stage1, tmp_path):
    from cvjax.train import loop, transfer

    workdir, reference = stage1
    base = tiny_config()
    base.model_kwargs.num_classes = 12  # A new head shape: re-initialized, not loaded.
    config = transfer.crt_config(base, workdir, epochs=1)
    assert (config.init_from, config.sampling, config.num_epochs) == (workdir, "class_balanced", 1)
    assert config.reinit_head and config.linear_probe and base.init_from == ""
    exp = loop.Experiment(config, str(tmp_path))
    state = exp.initial_state()
    assert backbone_equal(state.variables(), reference)
    head = np.asarray(state.params["head"]["fc"]["kernel"])
    assert head.shape == (64, 12) and int(state.step) == 0
    assert all(not np.any(x) for x in jax.tree.leaves(state.opt_state))  # Fresh optimizer.
    perm = exp.permutation(exp.data_rng(), 0)
    assert len(np.unique(np.asarray(perm))) < len(perm)  # Class-balanced draws repeat examples.
    for _ in range(3):
        state, _ = exp.train_on(state, perm, None)
    assert backbone_equal(state.variables(), reference)  # Weights and BatchNorm statistics.
    assert not np.array_equal(np.asarray(state.params["head"]["fc"]["kernel"]), head)


def test_a_resumed_run_never_reads_init_from_again(tmp_path):
    from cvjax.train import loop, transfer

    gone = str(tmp_path / "gone")
    with pytest.raises(UserError, match="neither converted weights"):
        transfer.read_pretrained(gone)
    first = loop.Experiment(tiny_config(), str(tmp_path / "run"))
    first.checkpoints.save(first.initial_state())
    first.checkpoints.wait()
    first.checkpoints.close()
    resumed = loop.Experiment(tiny_config(init_from=gone), str(tmp_path / "run"))
    assert int(resumed.checkpoints.restore(resumed.initial_state()).step) == 0
    resumed.checkpoints.close()


def test_tau_norm_evaluate_picks_tau_on_held_out_training_images(stage1):
    from cvjax.train import transfer

    workdir, _ = stage1
    config = tiny_config(seed=1, imbalance_ratio=10.0)
    result = transfer.tau_norm_evaluate(config, workdir, taus=(0.0, 1.0, 2.0))
    assert result["tau"] == (0.0, 1.0, 2.0)[int(np.argmax(result["val_accuracies"]))]
    # digits-LT at ratio 10 leaves 142 - 139 = 3 images of class 0 out: 3 per class.
    assert result["val_examples"] == 30
    assert result["train_counts"][0] == 139 and result["train_counts"][-1] == 13
    per_class = np.asarray(result["per_class_accuracy"])
    assert per_class.shape == (10,) and 0.0 <= result["accuracy"] <= 1.0
    assert result["few"] == pytest.approx(per_class[-3:].mean())
    with pytest.raises(UserError, match="set --config.holdout"):
        transfer.tau_norm_evaluate(tiny_config(seed=1), workdir)
