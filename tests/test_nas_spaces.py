"""The DARTS cell, MBConv block and compound-scaling search spaces: string round trips, mutation,
sampling, canonical keys, bad strings, the models they build and what those cost."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cvjax.nas.cell_space  # noqa: F401  (registers "darts")
import cvjax.nas.mbconv  # noqa: F401  (registers "mbconv" and "compound")
from cvjax import models
from cvjax.errors import UserError
from cvjax.models import __main__ as table
from cvjax.nas.cell_space import OPS
from cvjax.nas.genotypes import DARTS_V1, DARTS_V2, NASNET_A, Genotype
from cvjax.nas.mbconv import B0_ARCH, PAPER_ARCH
from cvjax.nas.spaces import get_space, space_names

# Proxies small enough to build in about a second each.
SPACES = {
    "darts": dict(filters=8, num_cells=1),
    "mbconv": dict(width_mult=0.25),
    "compound": dict(base_width=0.25, base_depth=0.5),
}


@pytest.fixture(params=sorted(SPACES))
def space(request):
    return get_space(request.param, **SPACES[request.param])


def test_spaces_are_registered():
    assert {"darts", "mbconv", "compound"} <= set(space_names())


def test_random_choices_round_trip_through_strings(space):
    rng = np.random.default_rng(0)
    for _ in range(50):
        choices = tuple(int(rng.integers(n)) for n in space.cardinalities())
        arch = space.from_choices(choices)
        assert space.to_choices(arch) == choices
        assert space.from_choices(space.to_choices(arch)) == arch


def test_samples_are_valid_and_deterministic_per_seed(space):
    first = [space.sample(np.random.default_rng(seed)) for seed in range(100)]
    assert first == [space.sample(np.random.default_rng(seed)) for seed in range(100)]
    assert all(space.validate(arch) == arch for arch in first)
    assert len(set(first)) > 60  # Compound has 109 valid archs, the others far more.


@pytest.mark.parametrize("name", ["darts", "mbconv"])
def test_samples_take_every_option_of_every_decision(name):
    space = get_space(name)
    seen = np.array([space.to_choices(space.sample(np.random.default_rng(s))) for s in range(300)])
    for i, n in enumerate(space.cardinalities()):
        assert len(set(seen[:, i])) == n, f"decision {i} never took some of its {n} options"


def test_every_mutation_changes_exactly_one_decision_and_is_valid(space):
    rng = np.random.default_rng(1)
    arch = space.sample(rng)
    for _ in range(60):
        child = space.mutate(arch, rng)
        before, after = np.array(space.to_choices(arch)), np.array(space.to_choices(child))
        assert (before != after).sum() == 1 and space.is_valid(child)
        arch = child


@pytest.mark.parametrize(
    "name, bad",
    [
        ("darts", "garbage"),
        ("darts", "Genotype(normal=[('sep_conv_3x3', 0)"),
        ("darts", "{not json"),
        ("darts", str(NASNET_A)),  # 5 nodes, sep_conv_7x7, input 0 in the concat.
        ("darts", str(DARTS_V2).replace("('skip_connect', 0)", "('none', 0)", 1)),
        ("darts", str(DARTS_V2).replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[3, 4, 5]")),
        ("mbconv", "k3e6se1d2"),
        ("mbconv", B0_ARCH),  # Expansion 1 is not in the default space.
        ("mbconv", B0_ARCH.replace("k3e1", "k4e3")),
        ("mbconv", B0_ARCH.replace("e1se1d1", "e3se1d3")),  # Stage 1 depth is 1 or 2.
        ("mbconv", B0_ARCH.replace("se1", "se2", 1)),
        ("compound", "alpha=1.23,beta=1.10,gamma=1.15"),
        ("compound", "alpha=1.20,beta=1.10"),
        ("compound", "alpha=1.20,beta=1.10,gamma=1.15,phi=1"),
        ("compound", "alpha=big,beta=1.10,gamma=1.15"),
        ("compound", "alpha=2.50,beta=1.10,gamma=1.15"),
    ],
)
def test_bad_strings_are_user_errors(name, bad):
    with pytest.raises(UserError):
        get_space(name).to_choices(bad)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_bad_choices_are_user_errors(name):
    space = get_space(name)
    with pytest.raises(UserError):
        space.from_choices([0] * (len(space.cardinalities()) - 1))
    with pytest.raises(UserError):
        space.from_choices(list(space.cardinalities()))


# --- DARTS ------------------------------------------------------------------------------------


def test_darts_cells_map_to_choices_and_back_exactly():
    space = get_space("darts")
    assert len(space.cardinalities()) == 32 and space.size() == 7**16 * 14_400**2
    for genotype in (DARTS_V1, DARTS_V2):
        arch = str(genotype)
        choices = space.to_choices(arch)
        assert space.from_choices(choices) == arch and space.validate(arch) == arch
        assert Genotype.from_string(arch) == genotype
    # DARTS V2's first normal node: sep_conv_3x3 on input 0, sep_conv_3x3 on input 1.
    sep3 = OPS.index("sep_conv_3x3")
    assert space.to_choices(str(DARTS_V2))[:4] == (sep3, 0, sep3, 1)
    assert space.to_choices("darts_v2") == space.to_choices(str(DARTS_V2))


def test_darts_nodes_read_two_distinct_states():
    space = get_space("darts")
    same_input = str(DARTS_V2).replace(
        "[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)", "[('sep_conv_3x3', 0), ('max_pool_3x3', 0)"
    )
    assert same_input != str(DARTS_V2) and not space.is_valid(same_input)
    with pytest.raises(UserError):
        space.validate(same_input)
    # Uniform over ordered pairs of distinct inputs: node 3 (5 states) reads each about 2/5.
    inputs = collections.Counter()
    for seed in range(500):
        choices = space.to_choices(space.sample(np.random.default_rng(seed)))
        inputs.update(choices[13:16:2])
    assert set(inputs) == set(range(5)) and all(150 < n < 250 for n in inputs.values())


def test_darts_canonical_ignores_the_order_of_a_nodes_two_edges():
    space = get_space("darts")
    arch = str(DARTS_V2)
    swapped = arch.replace(
        "('skip_connect', 0), ('dil_conv_3x3', 2)", "('dil_conv_3x3', 2), ('skip_connect', 0)"
    )
    assert swapped != arch and space.is_valid(swapped)
    assert space.canonical(swapped) == space.canonical(arch)
    assert space.canonical(str(DARTS_V1)) != space.canonical(arch)
    assert space.canonical(space.canonical(arch)) == space.canonical(arch)


def test_darts_cifar_has_dartss_count_and_the_space_builds_any_genotype():
    # DARTS' train.py: "param size = 3.349342MB" for DARTS V2, auxiliary head excluded.
    assert table.count_params("darts_cifar") == 3_349_342
    name, kwargs = get_space("darts").model(str(DARTS_V2))
    assert name == "darts_cifar" and table.count_params(name, **kwargs) == 3_349_342
    with_aux = table.count_params(name, aux_logits=True, **kwargs)
    assert with_aux == 3_825_768  # The auxiliary head adds 476,426.

    proxy = get_space("darts", **SPACES["darts"])
    name, kwargs = proxy.model(proxy.sample(np.random.default_rng(3)))
    model = models.create(name, num_classes=7, **kwargs)
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    logits = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert logits.shape == (2, 7)


def test_darts_cost_is_cached_positive_and_grows_with_heavier_operations():
    space = get_space("darts", **SPACES["darts"])

    def uniform(op):
        return space.from_choices([OPS.index(op) if i % 2 == 0 else 0 for i in range(32)])

    # Every node reads input 0 twice: not a valid cell, but cost is still defined.
    light, heavy = space.cost(uniform("max_pool_3x3")), space.cost(uniform("sep_conv_5x5"))
    assert 0 < light["params"] < heavy["params"] and 0 < light["gmacs"] < heavy["gmacs"]
    arch = str(DARTS_V2)
    swapped = arch.replace(
        "('sep_conv_3x3', 0), ('sep_conv_3x3', 1)", "('sep_conv_3x3', 1), ('sep_conv_3x3', 0)", 1
    )
    assert swapped != arch
    assert space.cost(swapped) == space.cost(arch) and len(space._costs) == 3


# --- MBConv -----------------------------------------------------------------------------------


def test_mbconv_b0_is_representable_and_builds_efficientnet_b0():
    space = get_space("mbconv", expansions=(1, 3, 4, 6), cifar_stem=False, bn_momentum=0.9)
    assert space.validate(B0_ARCH) == B0_ARCH
    name, kwargs = space.model(B0_ARCH)
    assert name == "efficientnet" and kwargs["stage_se"] == (True,) * 7
    assert table.count_params(name, **kwargs) == 5_288_548  # efficientnet_b0, torchvision.


def test_mbconv_string_format_and_options():
    space = get_space("mbconv")
    arch = "k3e6se1d2-k5e3se0d3-k7e4se1d1-k3e6se0d4-k5e6se1d2-k7e3se0d5-k3e4se1d2"
    assert space.validate(arch) == arch
    assert space.cardinalities()[:4] == (3, 3, 2, 2)  # Stage 1 (1 block in B0): depth 1 or 2.
    assert space.depths == ((1, 2), (1, 2, 3), (1, 2, 3), (2, 3, 4), (2, 3, 4), (3, 4, 5), (1, 2))
    assert space.size() == 3**7 * 3**7 * 2**7 * 2**2 * 3**5


def test_mbconv_model_runs_and_se_off_removes_the_se_blocks():
    space = get_space("mbconv", **SPACES["mbconv"])
    on = "k3e6se1d2-k5e3se1d3-k7e4se1d1-k3e6se1d4-k5e6se1d2-k7e3se1d5-k3e4se1d2"
    off = on.replace("se1", "se0")
    x = jnp.zeros((2, 32, 32, 3))
    counts = []
    for arch in (on, off):
        name, kwargs = space.model(arch)
        model = models.create(name, num_classes=10, **kwargs)
        variables = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), x))
        assert jax.eval_shape(lambda v, m=model: m.apply(v, x), variables).shape == (2, 10)
        params = variables["params"]
        assert len([k for k in params if k.startswith("blocks_")]) == 2 + 3 + 1 + 4 + 2 + 5 + 2
        assert ("se" in params["blocks_0"]) == (arch == on)
        counts.append(table.count_params(name, 32, **kwargs))
    assert counts[1] < counts[0]
    with pytest.raises(UserError, match="stage_se"):
        model = models.create("efficientnet", stage_se=(True,) * 3)
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))


def test_mbconv_cost_grows_with_kernel_expansion_and_depth_and_is_cached():
    space = get_space("mbconv", **SPACES["mbconv"])
    base = "k3e3se1d1-k3e3se1d2-k3e3se1d2-k3e3se1d3-k3e3se1d3-k3e3se1d4-k3e3se1d1"
    bigger = [
        base.replace("k3", "k7"),
        base.replace("e3", "e6"),
        base.replace("d2-", "d3-"),  # Stages 2 and 3.
    ]
    assert all(space.is_valid(arch) for arch in [base, *bigger])
    small = space.cost(base)
    assert small["params"] > 0 and small["gmacs"] > 0
    for arch in bigger:
        cost = space.cost(arch)
        assert cost["params"] > small["params"] and cost["gmacs"] > small["gmacs"], arch
    assert space.cost(base) == small and len(space._costs) == 4


# --- Compound scaling -------------------------------------------------------------------------


def test_compound_contains_the_papers_coefficients():
    space = get_space("compound")
    assert space.validate(PAPER_ARCH) == PAPER_ARCH
    assert space.from_choices(space.to_choices(PAPER_ARCH)) == PAPER_ARCH
    assert space.to_choices("alpha=1.2, beta=1.1 ,gamma=1.15") == space.to_choices(PAPER_ARCH)
    assert not space.is_valid("alpha=1.00,beta=1.00,gamma=1.00")
    assert not get_space("compound", tolerance=0.05).is_valid(PAPER_ARCH)  # 1.92 is 0.08 off.
    valid = [
        space.from_choices((a, b, g))
        for a in range(21)
        for b in range(11)
        for g in range(11)
        if space.is_valid(space.from_choices((a, b, g)))
    ]
    assert PAPER_ARCH in valid and len(valid) == 109
    for arch in valid:
        alpha, beta, gamma = cvjax.nas.mbconv.coefficients(arch)
        assert abs(alpha * beta**2 * gamma**2 - 2) <= 0.1 + 1e-9
    # Sampling is uniform over the valid triples: 2,000 draws, about 18 of each.
    counts = collections.Counter(space.sample(np.random.default_rng(s)) for s in range(2000))
    assert set(counts) == set(valid) and max(counts.values()) < 40


def test_compound_model_and_resolution():
    space = get_space("compound")
    assert space.model(PAPER_ARCH) == (
        "efficientnet",
        {"depth_mult": 1.2, "width_mult": 1.1, "cifar_stem": True, "bn_momentum": 0.9},
    )
    assert space.resolution(PAPER_ARCH) == 36  # 32 x 1.15 = 36.8, to a multiple of 4.
    imagenet = get_space(
        "compound", base_resolution=224, resolution_multiple=8, cifar_stem=False, base_width=0.5
    )
    assert imagenet.resolution(PAPER_ARCH) == 256  # 257.6, to a multiple of 8.
    assert imagenet.model(PAPER_ARCH)[1]["width_mult"] == 0.55

    proxy = get_space("compound", **SPACES["compound"])
    name, kwargs = proxy.model(PAPER_ARCH)
    model = models.create(name, num_classes=10, **kwargs)
    x = jnp.zeros((2, 36, 36, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).shape == (2, 10)


def test_compound_cost_grows_with_depth_width_and_resolution():
    space = get_space("compound", **SPACES["compound"])
    base = space.cost("alpha=1.00,beta=1.00,gamma=1.00")
    for arch in (
        "alpha=1.60,beta=1.00,gamma=1.00",  # Deeper.
        "alpha=1.00,beta=1.40,gamma=1.00",  # Wider.
        "alpha=1.00,beta=1.00,gamma=1.50",  # 48 px: same parameters, more MACs.
        PAPER_ARCH,
    ):
        cost = space.cost(arch)
        assert cost["gmacs"] > base["gmacs"] > 0, arch
        assert cost["params"] >= base["params"] > 0, arch
    assert space.cost("alpha=1.00,beta=1.00,gamma=1.50")["params"] == base["params"]
