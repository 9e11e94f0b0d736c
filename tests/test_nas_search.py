"""The NAS-Bench-201 space and network, the search strategies, and the resumable search job."""

import csv
import itertools
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import nas_bench201, nas_train
from cvjax import models
from cvjax.errors import UserError
from cvjax.models.__main__ import count_params, gmacs
from cvjax.nas import estimators, get_space, nb201, search
from cvjax.nas.strategies import RegularizedEvolution, Reinforce, create_strategy
from tests.conftest import REPO, tiny_config

SPACE = get_space("nb201")
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+" + (
    "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)


def table_path(shared_datasets):
    return os.path.join(shared_datasets, "nas_bench_201", "nas_bench_201_cifar10.csv")


# --- the space -------------------------------------------------------------------------------


def test_every_cell_round_trips_and_the_table_uses_the_same_strings(shared_datasets):
    archs = [SPACE.from_choices(c) for c in itertools.product(range(5), repeat=6)]
    assert len(set(archs)) == 15_625
    assert all(
        SPACE.to_choices(a) == c
        for a, c in zip(archs, itertools.product(range(5), repeat=6), strict=True)
    )
    assert all(nb201.encode(nb201.decode(a)) == a for a in archs)
    with open(table_path(shared_datasets)) as f:
        table = {row["arch"] for row in csv.DictReader(f)}
    assert table == set(archs)


def test_canonical_identifies_equivalent_cells_only():
    def cell(*ops):
        return SPACE.from_choices([nb201.OPS.index(o) for o in ops])

    a = cell("nor_conv_3x3", "none", "skip_connect", "none", "none", "nor_conv_1x1")
    # Node 1 feeds node 3 only through node 2; sum order and dead `none` edges do not matter.
    same = cell("nor_conv_3x3", "none", "skip_connect", "none", "none", "nor_conv_1x1")
    # Everything from a zero node is zero: node 2 is dead here, so its out-edge does not count.
    dead_a = cell("none", "none", "none", "skip_connect", "none", "nor_conv_3x3")
    dead_b = cell("none", "none", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1")
    assert SPACE.canonical(a) == SPACE.canonical(same)
    assert SPACE.canonical(dead_a) == SPACE.canonical(dead_b)
    assert SPACE.canonical(a) != SPACE.canonical(
        cell("nor_conv_1x1", "none", "skip_connect", "none", "none", "nor_conv_1x1")
    )
    # Skip into node 3 from 0 and from 1 (= conv(x)) differ; two skips sum to 2x, not x.
    assert SPACE.canonical(cell(*["skip_connect"] * 6)) != SPACE.canonical(
        cell("skip_connect", "none", "none", "none", "none", "skip_connect")
    )
    classes = {
        SPACE.canonical(SPACE.from_choices(c)) for c in itertools.product(range(5), repeat=6)
    }
    assert len(classes) == 5_773


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "|nor_conv_3x3~0|",
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
    ],
)
def test_bad_cell_strings_name_the_format(bad):
    with pytest.raises(UserError, match="op~"):
        nb201.decode(bad)


def test_mutation_changes_exactly_one_edge():
    rng = np.random.default_rng(0)
    for _ in range(200):
        parent = SPACE.sample(rng)
        child = SPACE.mutate(parent, rng)
        diff = np.array(SPACE.to_choices(parent)) != np.array(SPACE.to_choices(child))
        assert diff.sum() == 1


def test_network_matches_the_benchmark_size_and_the_analytic_cost():
    # NB201 (Sec. 2.1): the largest cell gives 1.53 MB of parameters at C=16, N=5.
    assert count_params("nb201", 32, arch=ALL_CONV) == 1_531_546
    rng = np.random.default_rng(1)
    for arch in [ALL_CONV, *(SPACE.sample(rng) for _ in range(3))]:
        assert SPACE.cost(arch)["params"] == count_params("nb201", 32, arch=arch)
    # XLA leaves out multiplications by padding zeros (up to 9% at 8x8 maps) and adds pooling;
    # node 1 and 2 lead nowhere here, so their convolutions are compiled away and not counted.
    dead = "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|none~1|none~2|"
    mixed = (
        "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    )
    for arch in (ALL_CONV, dead, mixed):
        analytic = SPACE.cost(arch)["gmacs"]
        assert 0.88 * analytic <= gmacs("nb201", 32, arch=arch) <= 1.0001 * analytic
    assert SPACE.cost(dead)["gmacs"] < SPACE.cost(mixed)["gmacs"]


def test_supernet_with_one_hot_weights_is_the_chosen_network():
    arch = "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    supernet = models.create("nb201", arch="", width=4, cells=1)
    single = models.create("nb201", arch=arch, width=4, cells=1)
    sv = supernet.init(jax.random.PRNGKey(1), x)
    target = jax.eval_shape(lambda: single.init(jax.random.PRNGKey(1), x))

    def pick(path, leaf):  # A cell edge's params come from the supernet's chosen op.
        keys = [p.key for p in path]
        for i, k in enumerate(keys):
            if k.startswith("edge"):
                op = nb201.edge_ops(arch)[nb201.EDGES.index((int(k[4]), int(k[5])))]
                keys[i] = f"{k}_{op}"
        value = sv
        for k in keys:
            value = value[k]
        assert value.shape == leaf.shape
        return value

    variables = jax.tree_util.tree_map_with_path(pick, target)
    weights = jax.nn.one_hot(jnp.array(SPACE.to_choices(arch)), 5)
    chex.assert_trees_all_close(
        supernet.apply(sv, x, arch_weights=weights), single.apply(variables, x), atol=1e-5
    )


# --- strategies ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["random", "evolution", "reinforce"])
def test_strategies_are_deterministic_per_seed(name):
    def proposals(seed):
        strategy, out = create_strategy(name, SPACE, seed), []
        for i in range(40):
            arch = strategy.ask()
            out.append(arch)
            strategy.tell(arch, float(sum(SPACE.to_choices(arch)) + i % 3))
        return out

    assert proposals(3) == proposals(3)
    assert proposals(3) != proposals(4)


def test_regularized_evolution_ages_out_and_mutates_the_tournament_winner():
    evo = RegularizedEvolution(SPACE, np.random.default_rng(0), population=4, sample_size=4)
    for score in range(4):
        evo.tell(evo.ask(), float(score))
    best = evo.population[-1][0]
    child = evo.ask()  # S = P: the winner is the best member.
    assert (np.array(SPACE.to_choices(child)) != np.array(SPACE.to_choices(best))).sum() == 1
    evo.tell(child, -1.0)
    assert len(evo.population) == 4 and evo.population[0][1] == 1.0  # The oldest (0.0) left.


def test_reinforce_learns_the_rewarded_choice():
    policy = Reinforce(SPACE, np.random.default_rng(0), learning_rate=0.1)
    for _ in range(300):
        arch = policy.ask()
        # Reward: how many edges are 3x3 convolutions.
        policy.tell(arch, float(SPACE.to_choices(arch).count(3)))
    assert all(p.argmax() == 3 and p[3] > 0.5 for p in policy.probabilities())


# --- the search job --------------------------------------------------------------------------


def tabular_config(csv_path, strategy="evolution", budget=30, seed=0, **search):
    config = nas_bench201.get_config(f"strategy={strategy},budget={budget}")
    config.seed = seed
    config.benchmark.csv = csv_path
    config.benchmark.metric = "cifar10_test_acc_200ep"
    config.search.pictures = False
    for k, v in search.items():
        config.search[k] = v
    return config


def read_trials(workdir):
    with open(os.path.join(workdir, "trials.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_search_command_writes_trials_best_and_pictures(tmp_path, shared_datasets):
    workdir = tmp_path / "w"
    cmd = [
        sys.executable,
        "-m",
        "cvjax.main",
        "--config=configs/nas_bench201.py",
        f"--workdir={workdir}",
        "--config.search.strategy=random",
        "--config.search.budget=20",
        "--config.seed=5",
        f"--config.benchmark.csv={table_path(shared_datasets)}",
        "--config.benchmark.metric=cifar10_test_acc_200ep",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    trials = read_trials(workdir)
    assert len(trials) == 20 and len({t["arch"] for t in trials}) == 20
    assert set(trials[0]) >= {"trial", "arch", "score", "cost", "wall_s", "elapsed_s"}
    with open(workdir / "best.json") as f:
        best = json.load(f)
    assert best["score"] == max(t["score"] for t in trials)
    assert best["arch"] in {t["arch"] for t in trials} and SPACE.validate(best["arch"])
    for png in ("best_cell.png", "pareto.png"):
        assert (workdir / png).stat().st_size > 1000


@pytest.mark.parametrize("strategy", ["random", "evolution", "reinforce"])
def test_a_shorter_budget_is_a_prefix_and_a_rerun_resumes(tmp_path, shared_datasets, strategy):
    csv_path = table_path(shared_datasets)
    full = tmp_path / "full"
    search.run(tabular_config(csv_path, strategy, budget=40), str(full))
    short = tmp_path / "short"
    search.run(tabular_config(csv_path, strategy, budget=15), str(short))
    arch_of = lambda ts: [t["arch"] for t in ts]  # noqa: E731
    assert arch_of(read_trials(short)) == arch_of(read_trials(full))[:15]

    # Kill mid-write: keep 15 trials and half of the 16th line, then rerun the 40-trial command.
    path = short / "trials.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines) + '{"trial": 15, "arch": "|nor_co')
    calls = []
    original = estimators.TabularEstimator.evaluate

    def counting(self, arch, trial_dir):
        calls.append(arch)
        return original(self, arch, trial_dir)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(estimators.TabularEstimator, "evaluate", counting)
        best = search.run(tabular_config(csv_path, strategy, budget=40), str(short))
    assert len(calls) == 25  # Only the trials not on record.
    assert arch_of(read_trials(short)) == arch_of(read_trials(full))
    with open(full / "best.json") as f:
        assert best["arch"] == json.load(f)["arch"]


def test_workdir_of_another_search_is_refused(tmp_path, shared_datasets):
    csv_path = table_path(shared_datasets)
    search.run(tabular_config(csv_path, budget=5, seed=0), str(tmp_path))
    with pytest.raises(UserError, match="seed"):
        search.run(tabular_config(csv_path, budget=5, seed=1), str(tmp_path))


def test_any_table_and_metric_column(tmp_path):
    # A table of the whole space with two metric columns; the score is the chosen one.
    path = tmp_path / "table.csv"
    archs = [SPACE.from_choices(c) for c in itertools.product(range(5), repeat=6)]
    with open(path, "w") as f:
        f.write("index,arch,convs,neg\n")
        for i, a in enumerate(archs):
            convs = SPACE.to_choices(a).count(3)
            f.write(f"{i},{a},{convs},{-convs}\n")
    config = tabular_config(str(path), "evolution", budget=150)
    config.benchmark.metric = "convs"
    best = search.run(config, str(tmp_path / "w"))
    assert best["score"] == 6 and best["arch"] == ALL_CONV
    assert read_trials(tmp_path / "w")[0]["metrics"].keys() == {"convs", "neg"}
    config.benchmark.metric = ""
    with pytest.raises(UserError, match="metric columns"):
        search.run(config, str(tmp_path / "w2"))
    config.benchmark.metric = "accuracy"
    with pytest.raises(UserError, match="unknown metric column"):
        search.run(config, str(tmp_path / "w3"))


def test_constraints_and_repeats(tmp_path, shared_datasets):
    csv_path = table_path(shared_datasets)
    config = tabular_config(csv_path, "evolution", budget=60, max_params=4e5)
    best = search.run(config, str(tmp_path / "small"))
    assert all(t["cost"]["params"] <= 4e5 for t in read_trials(tmp_path / "small"))
    assert best["queries"] > best["evaluated"] == 60  # Evolution re-proposes some cells: free.
    config = tabular_config(csv_path, "evolution", budget=60, count_repeats=True)
    search.run(config, str(tmp_path / "repeats"))
    trials = read_trials(tmp_path / "repeats")
    repeats = [t for t in trials if t.get("repeat")]
    assert len(trials) == 60 and repeats
    first = {t["arch"]: t["score"] for t in reversed(trials)}
    assert all(t["score"] == first[t["arch"]] for t in repeats)


# --- real training ---------------------------------------------------------------------------


def test_tiny_real_training_search_and_training_its_best(tmp_path):
    config = tiny_config(num_epochs=1, batch_size=64, holdout=200)
    config.search = search.search_defaults()
    config.search.update(strategy="random", budget=2, estimator="train", pictures=False)
    config.search.space_kwargs = {"width": 4, "cells": 1}
    workdir = tmp_path / "search"
    best = search.run(config, str(workdir))
    trials = read_trials(workdir)
    assert len(trials) == 2 and 0.0 <= best["score"] <= 100.0
    assert trials[0]["score"] == 100 * trials[0]["metrics"]["eval/accuracy"]
    assert all(os.listdir(workdir / "trials" / f"{i:05d}" / "checkpoints") for i in range(2))
    assert best["score"] == max(t["score"] for t in trials) > 15  # Above chance (10%).

    train = nas_train.get_config(f"arch={workdir / 'best.json'},dataset=digits,proxy=True")
    assert train.model == "nb201" and train.model_kwargs.arch == best["arch"]
    assert train.model_kwargs.width == 4
    full = nas_train.get_config(f"arch={workdir / 'best.json'}")
    assert full.model_kwargs.width == 16 and full.num_epochs == 200
    with pytest.raises(UserError, match="best.json"):
        nas_train.get_config(f"arch={tmp_path / 'missing.json'}")


@pytest.mark.parametrize("name", ["nas_mnist", "nas_cifar10", "nas_mbconv", "nas_compound"])
def test_real_training_configs_build_their_candidates(name):
    import importlib

    config = importlib.import_module(f"configs.{name}").get_config()
    assert config.search.estimator == "train" and config.holdout > 0
    space = get_space(config.search.space, **config.search.space_kwargs)
    arch = space.sample(np.random.default_rng(0))
    trial = estimators.TrainEstimator(config, space).trial_config(arch)
    assert "search" not in trial and trial.model == space.model(arch)[0]
    model = models.create(trial.model, num_classes=10, **trial.model_kwargs)
    size = trial.image_size or 32
    logits = jax.eval_shape(
        lambda: model.init_with_output(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))[0]
    )
    assert logits.shape == (1, 10)


def test_compound_search_result_scales_efficientnet(tmp_path):
    from configs import efficientnet

    best = tmp_path / "best.json"
    best.write_text(json.dumps({"arch": "alpha=1.40,beta=1.05,gamma=1.10", "space": "compound"}))
    config = efficientnet.get_config(f"phi=2,coefficients={best}")
    assert config.model_kwargs.depth_mult == pytest.approx(1.4**2)
    assert config.model_kwargs.width_mult == pytest.approx(1.05**2)
    assert config.image_size == 40  # 32 * 1.1^2 = 38.7, to a multiple of 8.
    best.write_text(json.dumps({"arch": ALL_CONV, "space": "nb201"}))
    with pytest.raises(UserError, match="not compound"):
        efficientnet.get_config(f"phi=2,coefficients={best}")


@pytest.mark.parametrize("name", ["nas_supernet", "nas_darts"])
def test_weight_sharing_configs_are_complete(name):
    import importlib

    from cvjax.nas.darts import darts_defaults
    from cvjax.nas.supernet import merge_settings, supernet_defaults

    config = importlib.import_module(f"configs.{name}").get_config()
    assert config.search.estimator == "supernet" and config.holdout >= config.supernet.batch_size
    # Every key is one the supernet knows (an unknown one would be a UserError there).
    merge_settings(config, "supernet", supernet_defaults())
    settings = merge_settings(config, "darts", darts_defaults())
    assert (settings.width, settings.cells) == (8, 1)  # CPU smoke size by default.
    full = importlib.import_module(f"configs.{name}").get_config("full=True")
    assert (full.supernet.width, full.supernet.cells) == (16, 5) and full.holdout == 30_000
    assert config.search.strategy == ("darts" if name == "nas_darts" else "evolution")
