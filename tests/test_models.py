"""The registry and the ResNet family: exact parameter counts, shapes, training behaviour."""

import glob
import importlib
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvjax import models
from cvjax.errors import UserError
from cvjax.models import __main__ as table
from tests.model_checks import check_count_and_output_shape, check_train_step

# torchvision, timm (resnet200, resnetv2_*, seresnet*), and He et al. 2016 / Zagoruyko &
# Komodakis 2016 for the CIFAR models (10 classes).
REFERENCE_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet200": 64_673_832,
    "resnetv2_50": 25_549_352,
    "resnetv2_101": 44_541_480,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "seresnet50": 28_088_024,
    "seresnext50_32x4d": 27_559_896,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "wrn28_10": 36_479_194,
    # Jordan 2024's airbench94.py less its 1,152 BatchNorm weights frozen at 1 (no scale here);
    # the arithmetic is in tests/test_airbench.py.
    "airbench94": 1_971_640,
}


def all_reference_counts() -> dict[str, int]:
    """REFERENCE_PARAMS of this file and of every family's tests/test_models_<family>.py."""
    counts = dict(REFERENCE_PARAMS)
    for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "test_models_*.py"))):
        module = importlib.import_module(f"tests.{os.path.basename(path)[:-3]}")
        counts.update(module.REFERENCE_PARAMS)
    return counts


def test_every_registered_model_has_a_reference_count():
    missing = set(models.list_models()) - {"resnet8"} - set(all_reference_counts())
    assert not missing, f"registered without a reference parameter count: {sorted(missing)}"


def test_readme_model_table_matches_the_reference_counts():
    """The README table is `python -m cvjax.models` output: its counts are the checked ones."""
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")) as f:
        rows = [line.split("|") for line in f if line.startswith("| ") and "|---" not in line]
    listed = {
        cells[1].strip(): int(cells[4].strip().replace(",", ""))
        for cells in rows
        if len(cells) == 7 and cells[1].strip() in models.list_models()
    }
    assert set(listed) == set(models.list_models()), "run python -m cvjax.models --update README.md"
    counts = all_reference_counts()
    assert {n: c for n, c in listed.items() if n in counts} == {
        n: counts[n] for n in listed if n in counts
    }


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_and_output_shape(name):
    check_count_and_output_shape(name, REFERENCE_PARAMS[name])


def test_cifar_stem_runs_imagenet_models_at_32():
    model = models.create("resnet50", num_classes=10, cifar_stem=True)
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    out = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert out.shape == (2, 10)


def test_without_global_pool_a_larger_input_gives_a_map_of_logits():
    model = models.create("resnet18", num_classes=7, global_pool=False)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))
    )
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 448, 448, 3))), variables)
    assert out.shape == (1, 14, 14, 7)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(bottleneck=False, shortcut="zero_pad"),
        dict(bottleneck=True),
        dict(bottleneck=True, groups=4, width_per_group=16),
        dict(bottleneck=True, se_ratio=0.25),
        dict(bottleneck=False, preact=True, block_dropout=0.1),
    ],
    ids=["basic_option_a", "bottleneck", "grouped", "squeeze_excite", "preact_wide"],
)
def test_tiny_forward_backward_per_block_kind(kwargs):
    model = models.resnet.ResNet(
        stage_sizes=(1, 1),
        widths=(8, 16),
        stem_width=8,
        cifar_stem=True,
        num_classes=5,
        drop_rate=0.1,
        drop_path_rate=0.2,
        **kwargs,
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
    check_train_step(model, x, all_grads_nonzero=False)


def test_half_precision_computes_in_bfloat16_with_float32_params():
    model = models.create("resnet8", dtype=jnp.bfloat16)
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).dtype == jnp.float32


def test_unknown_names_and_kwargs_are_user_errors():
    with pytest.raises(UserError, match="did you mean resnet50"):
        models.create("resnet_50")
    with pytest.raises(UserError, match="takes no argument widthh"):
        models.create("resnet50", widthh=3)
    assert models.list_models("resnext5*") == ["resnext50_32x4d"]
    assert models.list_models("resnext101*") == ["resnext101_32x8d", "resnext101_64x4d"]


def test_model_table_json(capsys):
    table.main(["resnet2*", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["resnet20", "resnet200"]
    assert set(rows[0]) == {"name", "input_size", "params", "gmacs"}
    assert rows[0]["params"] == 269_722 and rows[0]["input_size"] == 32
    # ResNet-20 at 32x32 is about 40M multiply-adds, almost all in its 19 3x3 convolutions.
    assert 0.03 < rows[0]["gmacs"] < 0.045


def test_model_table_update_rewrites_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- models:begin -->\nold\n<!-- models:end -->\noutro\n")
    table.main(["resnet20", "--update", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n<!-- models:begin -->\n| model | family |")
    assert "| resnet20 | resnet | 32 | 269,722 |" in text and "old" not in text
    assert text.endswith("<!-- models:end -->\noutro\n")
    (tmp_path / "plain.md").write_text("no markers")
    with pytest.raises(SystemExit, match="has no <!-- models:begin -->"):
        table.main(["resnet20", "--update", str(tmp_path / "plain.md")])


def test_feature_maps_give_each_stage_in_order():
    model = models.create("resnet50")
    x = jnp.zeros((2, 224, 224, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), variables)
    assert list(maps) == ["stage1", "stage2", "stage3", "stage4"]
    assert [m.shape for m in maps.values()] == [
        (2, 56, 56, 256),
        (2, 28, 28, 512),
        (2, 14, 14, 1024),
        (2, 7, 7, 2048),
    ]
    embedding = jax.eval_shape(lambda v: models.forward_features(model, v, x), variables)
    assert embedding.shape == (2, 2048)


def test_forward_features_is_the_pooled_last_stage_and_feeds_the_head():
    model = models.create("resnet8", num_classes=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(1), x)
    maps = models.feature_maps(model, variables, x)
    embedding = models.forward_features(model, variables, x)
    np.testing.assert_allclose(embedding, maps["stage3"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    head = variables["params"]["head"]["fc"]
    logits = embedding @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(logits, model.apply(variables, x), rtol=1e-5, atol=1e-5)


def test_reset_classifier_keeps_the_backbone_and_replaces_the_head():
    model = models.create("resnet8")
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(1), x)
    new_model, new_variables = models.reset_classifier(
        model, variables, 3, jax.random.PRNGKey(2), input_shape=(1, 32, 32, 3)
    )
    assert new_model.num_classes == 3
    assert new_variables["params"]["head"]["fc"]["kernel"].shape == (64, 3)
    for name, value in variables["params"].items():
        if name != "head":
            chex.assert_trees_all_equal(new_variables["params"][name], value)
    chex.assert_trees_all_equal(new_variables["batch_stats"], variables["batch_stats"])
    np.testing.assert_allclose(
        models.forward_features(new_model, new_variables, x),
        models.forward_features(model, variables, x),
    )
    assert new_model.apply(new_variables, x).shape == (2, 3)


def test_in_channels_is_checked_against_the_input():
    model = models.create("resnet8", in_channels=1)
    x = jnp.zeros((2, 32, 32, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    assert variables["params"]["ConvBN_0"]["Conv_0"]["kernel"].shape == (3, 3, 1, 16)
    with pytest.raises(UserError, match="create it with in_channels=3"):
        jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3))), variables)


@pytest.mark.parametrize(
    "window, strides, padding",
    [((3, 3), (1, 1), ((1, 1), (1, 1))), ((3, 3), (2, 2), "SAME"), ((2, 3), (1, 2), "SAME")],
)
def test_avg_pool_exclude_pad_is_flaxs_without_a_batch_sized_divisor(window, strides, padding):
    import flax.linen as nn

    from cvjax.models.layers import avg_pool_exclude_pad

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 7, 3))
    chex.assert_trees_all_close(
        avg_pool_exclude_pad(x, window, strides, padding),
        nn.avg_pool(x, window, strides, padding, count_include_pad=False),
        atol=1e-6,
    )
    # Flax pools a divisor of ones shaped like the batch, which XLA constant-folds at compile time
    # (44 s a layer for a 256x28x28x16 batch); here the divisor is a literal and only `x` itself
    # is pooled.
    jaxpr = jax.make_jaxpr(lambda v: avg_pool_exclude_pad(v, window, strides, padding))(x)
    pooled = [e.invars[0].aval.shape for e in jaxpr.eqns if "reduce_window" in e.primitive.name]
    assert pooled == [x.shape]
