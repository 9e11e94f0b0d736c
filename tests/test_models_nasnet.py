"""NASNet-A and the genotype cell machinery: counts, shapes, genotype formats, tiny training."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvjax import models
from cvjax.errors import UserError
from cvjax.models import __main__ as table
from cvjax.models import fastconv, nasnet
from cvjax.nas import genotypes
from cvjax.nas.cells import CellNetwork
from cvjax.nas.genotypes import DARTS_V2, NASNET_A, Genotype, get_genotype
from tests.model_checks import check_count_and_output_shape, check_train_step

# timm nasnetalarge (Cadene's port of TF-slim) and Cadene's pretrainedmodels nasnetamobile; both
# numbers are also asserted by osmr's imgclsmob (nasnet_6a4032, nasnet_4a1056).
REFERENCE_PARAMS = {
    "nasnet_a_mobile": 5_289_978,
    "nasnet_a_large": 88_753_150,
    # DARTS V2 on CIFAR-10: DARTS' train.py logs "param size = 3.349342MB"
    # (utils.count_parameters_in_MB, which leaves the auxiliary head out).
    "darts_cifar": 3_349_342,
    # NAS-Bench-201's network (C=16, N=5) with its best CIFAR-10 cell, the default `arch`; by the
    # benchmark's arithmetic (the all-3x3 cell gives 1,531,546 = the paper's "1.53 MB", tested
    # in tests/test_nas_search.py).
    "nb201": 1_288_506,
}

# DARTS' CIFAR-10 network for its second-order cell (Liu et al. 2019, Table 1: 3.3M); DARTS'
# train.py logs 3.349342 MB parameters.
DARTS_CIFAR = {**nasnet.DARTS_CIFAR, "num_classes": 10}


@pytest.fixture(autouse=True)
def _lax_convolutions():
    """This module checks the cells' wiring, shapes and counts. Its 5x5 and 7x7 separable
    convolutions trace and compile several times faster as lax's convolutions than in fastconv's
    per-tap CPU formulation, which is the same function (tests/test_fastconv.py)."""
    with fastconv.xla_only():
        yield


def _init(model, x):
    """Variables of the model's shapes with He-normal kernels, unit scales, zero biases.

    `model.init` costs ~20 s of CPU on a tiny cell network (hundreds of small random kernels,
    each dispatched or compiled on its own); the values only need to be reasonable here.
    """
    rng = np.random.default_rng(0)

    def value(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), jnp.float32)
        return (jnp.ones if name in ("scale", "var") else jnp.zeros)(leaf.shape, jnp.float32)

    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    return jax.tree_util.tree_map_with_path(value, shapes)


def _abstract_init(model, size):
    x = jnp.zeros((2, size, size, 3))
    return x, jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_and_output_shape(name):
    check_count_and_output_shape(name, REFERENCE_PARAMS[name])  # Logits: (2, num_classes).


def test_darts_v2_network_has_the_published_count():
    model = CellNetwork(genotype="DARTS_V2", **DARTS_CIFAR)
    _, variables = _abstract_init(model, 32)
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])) == 3_349_342


def test_nasnet_a_genotype_is_tf_slims_cell_tables():
    """TF-slim's NasNetA{Normal,Reduction}Cell tables: hidden state 0 is the previous cell and
    1 the one before (swapped in the DARTS order); 'none' is the identity there."""
    swap = {0: 1, 1: 0}
    rename = {"separable_3x3_2": "sep_conv_3x3", "separable_5x5_2": "sep_conv_5x5"}
    rename |= {"separable_7x7_2": "sep_conv_7x7", "none": "skip_connect"}
    normal_ops = ["separable_5x5_2", "separable_3x3_2", "separable_5x5_2", "separable_3x3_2"]
    normal_ops += ["avg_pool_3x3", "none", "avg_pool_3x3", "avg_pool_3x3"]
    normal_ops += ["separable_3x3_2", "none"]
    reduce_ops = ["separable_5x5_2", "separable_7x7_2", "max_pool_3x3", "separable_7x7_2"]
    reduce_ops += ["avg_pool_3x3", "separable_5x5_2", "none", "avg_pool_3x3"]
    reduce_ops += ["separable_3x3_2", "max_pool_3x3"]
    for ops, indices, used, edges, concat in [
        (normal_ops, [0, 1, 1, 1, 0, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0], *NASNET_A.cell(False)),
        (reduce_ops, [0, 1, 0, 1, 0, 1, 3, 2, 2, 0], [1, 1, 1, 0, 0, 0, 0], *NASNET_A.cell(True)),
    ]:
        assert edges == tuple(
            (rename.get(o, o), swap.get(i, i)) for o, i in zip(ops, indices, strict=True)
        )
        assert sorted(concat) == sorted(swap.get(i, i) for i, u in enumerate(used) if not u)


@pytest.mark.parametrize("genotype", list(genotypes.GENOTYPES.values()))
def test_genotype_round_trips_through_repr_and_json(genotype):
    assert Genotype.from_string(str(genotype)) == genotype
    text = json.dumps(genotype.to_dict())
    assert Genotype.from_dict(json.loads(text)) == genotype
    assert get_genotype(text) == genotype
    assert hash(Genotype.from_string(str(genotype))) == hash(genotype)


def test_genotype_reads_darts_repr_with_ranges_and_names():
    darts = (
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
        "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
        "('dil_conv_3x3', 2)], normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), "
        "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
        "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
        "reduce_concat=range(2, 6))"
    )
    assert get_genotype(darts) == DARTS_V2
    assert get_genotype("darts_v2") is DARTS_V2 and get_genotype(NASNET_A) is NASNET_A
    assert len(genotypes.PRIMITIVES) == 8


@pytest.mark.parametrize(
    "edit, message",
    [
        (dict(normal=[("sep_conv_9x9", 0), ("skip_connect", 1)]), "unknown operation"),
        (dict(normal=[("sep_conv_3x3", 2), ("skip_connect", 1)]), "can only read states 0..1"),
        (dict(normal=[("sep_conv_3x3", 0)]), "two \\(op, input\\) pairs"),
        (dict(reduce_concat=[2, 2]), "distinct states"),
    ],
)
def test_invalid_genotypes_are_user_errors(edit, message):
    fields = {**DARTS_V2.to_dict(), "normal_concat": [2], "reduce_concat": [2, 3, 4, 5]}
    fields["normal"] = [("sep_conv_3x3", 0), ("skip_connect", 1)]
    with pytest.raises(UserError, match=message):
        Genotype.from_dict({**fields, **edit})
    with pytest.raises(UserError, match="unknown genotype"):
        get_genotype("DARTS_V3")


@pytest.mark.parametrize(
    "genotype, kwargs, size",
    [
        (NASNET_A, dict(cifar_stem=True), 32),  # Raw stem input to the first cell.
        (DARTS_V2, {**DARTS_CIFAR, "num_cells": 1, "filters": 6, "stem_size": 9}, 24),
    ],
    ids=["nasnet_a", "darts_v2"],
)
def test_tiny_forward_backward_with_drop_path_and_aux_head(genotype, kwargs, size):
    kwargs = {"num_cells": 1, "filters": 8, "stem_size": 12, "num_classes": 5, **kwargs}
    model = CellNetwork(
        genotype=genotype, aux_logits=True, drop_rate=0.1, drop_path_rate=0.5, **kwargs
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (4, size, size, 3))
    variables = _init(model, x)
    assert "aux" in variables["params"]

    def loss(logits, updates):
        aux = updates["aux"]["logits"][0]
        return jnp.mean(logits**2) + 0.4 * jnp.mean(aux**2)

    _, out, step = check_train_step(
        model, x, variables, mutable_extra=["aux"], loss_fn=loss, all_grads_nonzero=False
    )
    assert float(jnp.abs(out.grads["aux"]["fc"]["kernel"]).sum()) > 0
    assert float(jnp.abs(out.grads["cell_0"]["conv_1x1"]["conv"]["kernel"]).sum()) > 0
    # Drop path draws per sample and per operation: another key, other training logits.
    other = step(variables, jax.random.PRNGKey(3)).logits
    assert not np.allclose(out.logits, other)
    assert not out.eval_state  # The auxiliary head is built and sown only in training.


def test_cifar_stem_runs_both_models_at_32():
    for name, width in [("nasnet_a_mobile", 1056), ("nasnet_a_large", 4032)]:
        model = models.create(name, num_classes=10, cifar_stem=True)
        x, variables = _abstract_init(model, 32)
        maps = jax.eval_shape(lambda v, m=model, x=x: models.feature_maps(m, v, x), variables)
        assert [m.shape for m in maps.values()] == [
            (2, 32, 32, width // 4),
            (2, 16, 16, width // 2),
            (2, 8, 8, width),
        ]


def test_without_global_pool_a_larger_input_gives_a_map_of_logits():
    model = models.create("nasnet_a_mobile", num_classes=7, global_pool=False)
    _, variables = _abstract_init(model, 224)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 448, 448, 3))), variables)
    assert out.shape == (1, 14, 14, 7)


def test_feature_maps_are_timms_feature_info():
    """timm's nasnetalarge feature_info: 96/2, 168/4, 1008/8, 2016/16, 4032/32 at 331."""
    model = models.create("nasnet_a_mobile")
    x, variables = _abstract_init(model, 224)
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), variables)
    assert list(maps) == ["stage1", "stage2", "stage3", "stage4", "stage5"]
    assert [m.shape for m in maps.values()] == [
        (2, 111, 111, 32),
        (2, 56, 56, 44),
        (2, 28, 28, 264),
        (2, 14, 14, 528),
        (2, 7, 7, 1056),
    ]
    embedding = jax.eval_shape(lambda v: models.forward_features(model, v, x), variables)
    assert embedding.shape == (2, 1056)
    large, variables, _ = table.abstract_variables("nasnet_a_large")
    x = jnp.zeros((1, 331, 331, 3))
    maps = jax.eval_shape(lambda v: models.feature_maps(large, v, x), variables)
    assert [m.shape[1:] for m in maps.values()] == [
        (165, 165, 96),
        (83, 83, 168),
        (42, 42, 1008),
        (21, 21, 2016),
        (11, 11, 4032),
    ]
